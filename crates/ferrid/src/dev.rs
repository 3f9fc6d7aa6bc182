//! `ferrid dev`: a server on a throwaway data directory with loopback listeners, and
//! the `export` lines that make every later CLI command find it.
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use ferrid_server::ServerConfig;
use ferrid_types::SystemClock;

use crate::server_cmd::{init_logging, shutdown_signal};

/// Options for `ferrid dev`.
#[derive(Debug, Args)]
pub(crate) struct DevArgs {
    /// Trust domain.
    #[arg(long, default_value = "example.org")]
    trust_domain: String,
    /// Data directory (default: a new temporary directory, removed on exit).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Node API address.
    #[arg(long, default_value = "127.0.0.1:8081")]
    bind_address: String,
    /// Health and metrics address.
    #[arg(long, default_value = "127.0.0.1:8082")]
    health_address: String,
    /// Log level.
    #[arg(long, default_value = "info")]
    log_level: String,
}

/// Runs the dev server until Ctrl-C.
pub(crate) async fn run(args: DevArgs) -> Result<()> {
    init_logging(&args.log_level, "text")?;
    let (dir, _guard) = match args.data_dir {
        Some(d) => (d, None),
        None => {
            let t = tempfile::Builder::new()
                .prefix("ferrid-dev-")
                .tempdir()
                .context("creating a temporary directory")?;
            (t.path().to_owned(), Some(t))
        }
    };
    let admin_socket = dir.join("admin.sock");
    let toml = format!(
        "trust_domain = {td:?}\ndata_dir = {dd:?}\nbind_address = {ba:?}\nhealth_address = {ha:?}\nadmin_socket = {sock:?}\n",
        td = args.trust_domain,
        dd = dir.display().to_string(),
        ba = args.bind_address,
        ha = args.health_address,
        sock = admin_socket.display().to_string(),
    );
    let cfg = ServerConfig::parse(&toml)?;
    let handle = ferrid_server::start(cfg, Arc::new(SystemClock)).await.context("starting the dev server")?;
    println!();
    println!("Ferrid dev server is running (trust domain {}). Data: {}", args.trust_domain, dir.display());
    println!("Paste these into another shell to point the CLI at it:");
    println!();
    println!("    export FERRID_ADMIN_SOCKET={}", handle.admin_socket.display());
    println!(
        "    export FERRID_HEALTH_ADDRESS={}",
        handle.health_addr.map(|a| a.to_string()).unwrap_or_default()
    );
    println!();
    println!(
        "Then try: ferrid token generate; ferrid entry list; ferrid bundle show; ferrid x509 mint --spiffe-id spiffe://{}/demo --out-dir /tmp/demo",
        args.trust_domain
    );
    println!("Press Ctrl-C to stop.");
    handle.run_until(shutdown_signal()).await;
    Ok(())
}
