//! `ferrid server`.
use std::sync::Arc;

use anyhow::{Context, Result};
use ferrid_server::ServerConfig;
use ferrid_types::SystemClock;

use crate::cli::ServerArgs;

/// Installs the tracing subscriber for `level` (a filter directive) and `format`.
pub(crate) fn init_logging(level: &str, format: &str) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .with_context(|| format!("log.level {level:?} is not a valid filter"))?;
    // Colours only on a terminal: logs captured by systemd, kubectl or a file stay plain.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    let r = if format == "json" { builder.json().try_init() } else { builder.try_init() };
    r.map_err(|e| anyhow::anyhow!("installing the logger: {e}"))
}

/// Resolves on Ctrl-C or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Runs the server until a signal.
pub(crate) async fn run(args: ServerArgs) -> Result<()> {
    let cfg = ServerConfig::load(&args.config)?;
    if args.check {
        println!("{}: configuration OK (trust domain {})", args.config.display(), cfg.trust_domain);
        return Ok(());
    }
    init_logging(&cfg.raw.log.level, &cfg.raw.log.format)?;
    let handle = ferrid_server::start(cfg, Arc::new(SystemClock)).await.context("starting the server")?;
    handle.run_until(shutdown_signal()).await;
    Ok(())
}
