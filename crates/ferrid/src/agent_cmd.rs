//! `ferrid agent …`: running the agent, and the Workload API client commands (built on
//! the `spiffe` crate's client, the same one workloads use).
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use ferrid_types::SystemClock;
use futures::StreamExt;
use serde_json::json;
use spiffe::WorkloadApiClient;

use crate::output::Output;
use crate::server_cmd::{init_logging, shutdown_signal};

/// Default Workload API endpoint.
pub(crate) const DEFAULT_ENDPOINT: &str = "unix:///tmp/ferrid/agent/public/api.sock";

/// Where the Workload API is and how to print.
#[derive(Debug, Args, Clone)]
pub(crate) struct WorkloadArgs {
    /// The agent's Workload API endpoint (unix:///path or a bare path).
    #[arg(long, env = "SPIFFE_ENDPOINT_SOCKET", default_value = DEFAULT_ENDPOINT)]
    socket: String,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Output::Text)]
    output: Output,
}

/// Fetch commands.
#[derive(Debug, Subcommand)]
pub(crate) enum FetchCmd {
    /// Fetch this process's X.509-SVIDs and bundle.
    X509 {
        /// Write svid.pem, key.pem (0600) and bundle.pem here.
        #[arg(long)]
        write: Option<PathBuf>,
        /// Keep the files current: rewrite them on every rotation (needs --write).
        #[arg(long, requires = "write")]
        watch: bool,
        #[command(flatten)]
        wl: WorkloadArgs,
    },
    /// Fetch a JWT-SVID for an audience.
    Jwt {
        /// The audience; repeat for several.
        #[arg(long = "audience", short = 'a', required = true)]
        audience: Vec<String>,
        /// Only this identity (when the process has several).
        #[arg(long)]
        spiffe_id: Option<String>,
        #[command(flatten)]
        wl: WorkloadArgs,
    },
}

/// Validate commands.
#[derive(Debug, Subcommand)]
pub(crate) enum ValidateCmd {
    /// Validate a JWT-SVID through the agent.
    Jwt {
        /// The audience the token must carry.
        #[arg(long, short = 'a')]
        audience: String,
        /// The token.
        #[arg(long)]
        token: String,
        #[command(flatten)]
        wl: WorkloadArgs,
    },
}

fn endpoint(s: &str) -> String {
    if s.starts_with("unix:") || s.starts_with("tcp:") { s.to_owned() } else { format!("unix://{s}") }
}

async fn client(wl: &WorkloadArgs) -> Result<WorkloadApiClient> {
    WorkloadApiClient::connect_to(endpoint(&wl.socket)).await.with_context(|| {
        format!("cannot reach the Workload API at {} (is `ferrid agent` running? set --socket or SPIFFE_ENDPOINT_SOCKET)", wl.socket)
    })
}

/// Runs the agent until a signal.
pub(crate) async fn run(config: &Path) -> Result<()> {
    let (cfg, td) = ferrid_agent::AgentConfig::load(config)?;
    init_logging(&cfg.log.level, &cfg.log.format)?;
    let handle = ferrid_agent::start(cfg, td, Arc::new(SystemClock)).await.context("starting the agent")?;
    handle.run_until(shutdown_signal()).await;
    Ok(())
}

fn pem_chain(certs: &[spiffe::cert::Certificate]) -> String {
    certs.iter().map(|c| pem::encode(&pem::Pem::new("CERTIFICATE", c.as_bytes().to_vec()))).collect()
}

fn write_context(dir: &Path, ctx: &spiffe::X509Context) -> Result<String> {
    let svid = ctx.default_svid().context("the Workload API returned no X.509-SVID")?;
    let bundle: String = ctx
        .bundle_set()
        .get(svid.spiffe_id().trust_domain())
        .map(|b| pem_chain(b.authorities()))
        .unwrap_or_default();
    let chain: Vec<&[u8]> = svid.cert_chain().iter().map(|c| c.as_bytes()).collect();
    crate::output::write_svid_files(dir, &chain, Some(svid.private_key().as_ref()), &bundle)?;
    Ok(svid.spiffe_id().to_string())
}

fn leaf_expiry(der: &[u8]) -> String {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, c)| c.validity().not_after.to_string())
        .unwrap_or_else(|_| "?".into())
}

/// Keeps `dir` current with the default X.509-SVID, (re)connecting with capped backoff
/// while the agent is not there yet or goes away, the way spiffe-helper does for SPIRE.
async fn watch_x509(wl: &WorkloadArgs, dir: &Path) -> Result<()> {
    eprintln!("Watching for X.509-SVID updates; writing to {} (Ctrl-C to stop)", dir.display());
    let mut backoff = std::time::Duration::from_millis(200);
    loop {
        let stream = match client(wl).await {
            Ok(c) => c.stream_x509_contexts().await.map_err(anyhow::Error::from),
            Err(e) => Err(e),
        };
        match stream {
            Ok(mut stream) => {
                while let Some(next) = stream.next().await {
                    match next {
                        Ok(ctx) => {
                            let id = write_context(dir, &ctx)?;
                            eprintln!("Wrote SVID for {id} to {}", dir.display());
                            backoff = std::time::Duration::from_millis(200);
                        }
                        Err(e) => {
                            eprintln!("Workload API stream ended: {e}; reconnecting");
                            break;
                        }
                    }
                }
            }
            Err(e) => eprintln!("cannot subscribe to X.509-SVID updates: {e:#}; retrying in {backoff:?}"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(std::time::Duration::from_secs(10));
    }
}

/// `ferrid agent fetch …`
pub(crate) async fn fetch(cmd: FetchCmd) -> Result<()> {
    match cmd {
        FetchCmd::X509 { write, watch, wl } => {
            if watch {
                let dir = write.context("--watch needs --write DIR")?;
                tokio::select! {
                    r = watch_x509(&wl, &dir) => return r,
                    () = shutdown_signal() => return Ok(()),
                }
            }
            let c = client(&wl).await?;
            let ctx = c.fetch_x509_context().await.context("fetching X.509-SVIDs")?;
            if let Some(dir) = &write {
                write_context(dir, &ctx)?;
            }
            match wl.output {
                Output::Json => {
                    let svids: Vec<_> = ctx
                        .svids()
                        .iter()
                        .map(|s| json!({"spiffe_id": s.spiffe_id().to_string(), "hint": s.hint(), "expires": leaf_expiry(s.leaf().as_bytes())}))
                        .collect();
                    println!("{}", json!({ "svids": svids }));
                }
                Output::Text => {
                    for s in ctx.svids() {
                        println!("SPIFFE ID : {}", s.spiffe_id());
                        println!("Expires   : {}", leaf_expiry(s.leaf().as_bytes()));
                        if let Some(h) = s.hint() {
                            println!("Hint      : {h}");
                        }
                        println!();
                    }
                    if let Some(dir) = &write {
                        println!("Wrote {0}/svid.pem, {0}/key.pem, {0}/bundle.pem", dir.display());
                    }
                }
            }
        }
        FetchCmd::Jwt { audience, spiffe_id, wl } => {
            let c = client(&wl).await?;
            let id = spiffe_id.as_deref().map(spiffe::SpiffeId::new).transpose().context("--spiffe-id")?;
            let svid = c.fetch_jwt_svid(&audience, id.as_ref()).await.context("fetching a JWT-SVID")?;
            match wl.output {
                Output::Json => println!(
                    "{}",
                    json!({"spiffe_id": svid.spiffe_id().to_string(), "token": svid.token(), "expires": svid.expiry().to_string()})
                ),
                Output::Text => println!("{}", svid.token()),
            }
        }
    }
    Ok(())
}

/// `ferrid agent validate jwt`
pub(crate) async fn validate(cmd: ValidateCmd) -> Result<()> {
    let ValidateCmd::Jwt { audience, token, wl } = cmd;
    let c = client(&wl).await?;
    let svid = c.validate_jwt_token(&audience, &token).await.context("the agent rejected the token")?;
    match wl.output {
        Output::Json => println!("{}", json!({"valid": true, "spiffe_id": svid.spiffe_id().to_string()})),
        Output::Text => println!("Valid JWT-SVID for {}", svid.spiffe_id()),
    }
    Ok(())
}

/// `ferrid agent healthcheck`: the Workload API answers and serves bundles.
pub(crate) async fn healthcheck(wl: WorkloadArgs, wait: Option<std::time::Duration>) -> Result<()> {
    let deadline = std::time::Instant::now() + wait.unwrap_or_default();
    loop {
        match check_once(&wl).await {
            Ok(msg) => {
                println!("{msg}");
                return Ok(());
            }
            Err(e) if std::time::Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
        }
    }
}

async fn check_once(wl: &WorkloadArgs) -> Result<&'static str> {
    let c = client(wl).await?;
    match c.fetch_x509_bundles().await {
        Ok(_) => Ok("Agent is healthy."),
        // No identity for the caller still proves the agent is up and attesting.
        Err(e) if e.to_string().contains("no identity") || e.to_string().contains("PermissionDenied") => {
            Ok("Agent is healthy (this process has no identity).")
        }
        Err(e) => bail!("agent is not healthy: {e}"),
    }
}
