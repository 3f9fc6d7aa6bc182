//! Two services that authenticate each other with X.509-SVIDs from the agent's Workload
//! API, through `ferrid-validate`'s rustls verifiers:
//!
//! ```text
//! mtls_echo server --listen 127.0.0.1:7000 --allow spiffe://td/echo-client --feed https://127.0.0.1:8081
//! mtls_echo client --connect 127.0.0.1:7000 --server-id spiffe://td/echo-server --feed https://127.0.0.1:8081
//! ```
//!
//! Both take `SPIFFE_ENDPOINT_SOCKET` (or `--endpoint`), follow SVID rotation (new
//! handshakes present the new SVID, established connections stay up) and the server's
//! revocation watch (`--feed`, the server's node API), and refuse a revoked peer at its
//! next handshake. Run through `examples/mtls-echo/run.sh`; see its README.
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use ferrid_types::SpiffeId;

// Some of the shared module (the event channel) is only used by tests/mtls_echo_e2e.rs.
#[allow(dead_code)]
mod echo;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args)]
struct Common {
    /// The agent's Workload API.
    #[arg(long, env = "SPIFFE_ENDPOINT_SOCKET")]
    endpoint: String,
    /// The Ferrid server's node API (`https://host:port`), serving the revocation watch.
    #[arg(long)]
    feed: String,
    /// Refuse every peer when the revocation feed has been silent this long (seconds);
    /// keep it at several of the server's `revocation.heartbeat_interval` (5 s by default).
    #[arg(long, default_value_t = 30)]
    max_staleness: u64,
}

#[derive(Subcommand)]
enum Cmd {
    /// Echo lines back to clients whose SVID is exactly `--allow`.
    Server {
        #[command(flatten)]
        common: Common,
        /// `host:port` to listen on.
        #[arg(long)]
        listen: String,
        /// The SPIFFE ID a client must present.
        #[arg(long)]
        allow: String,
    },
    /// Send a line every `--interval` ms on one long-lived connection; print each echo.
    Client {
        #[command(flatten)]
        common: Common,
        /// `host:port` of the echo server.
        #[arg(long)]
        connect: String,
        /// The SPIFFE ID the server must present.
        #[arg(long)]
        server_id: String,
        /// Milliseconds between lines.
        #[arg(long, default_value_t = 1000)]
        interval: u64,
        /// Keep presenting the first SVID, ignoring rotation: plays a stolen certificate.
        #[arg(long)]
        pin_svid: bool,
        /// Close the connection and handshake again after this many echoes on it.
        #[arg(long)]
        reconnect_after: Option<u64>,
        /// Exit after this many echoes.
        #[arg(long)]
        count: Option<u64>,
    },
}

fn identity_options(c: &Common, pin_svid: bool) -> echo::IdentityOptions {
    echo::IdentityOptions {
        endpoint: Some(c.endpoint.clone()),
        feed: c.feed.clone(),
        max_staleness: Duration::from_secs(c.max_staleness),
        pin_svid,
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,ferrid_validate=warn"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().cmd {
        Cmd::Server { common, listen, allow } => {
            let allow = SpiffeId::new(&allow).context("--allow")?;
            let me = echo::Identity::start(identity_options(&common, false)).await?;
            let listener =
                tokio::net::TcpListener::bind(&listen).await.with_context(|| format!("bind {listen}"))?;
            echo::serve(listener, me, allow, echo::Events::default()).await
        }
        Cmd::Client { common, connect, server_id, interval, pin_svid, reconnect_after, count } => {
            let server_id = SpiffeId::new(&server_id).context("--server-id")?;
            let me = echo::Identity::start(identity_options(&common, pin_svid)).await?;
            let opts = echo::ClientOptions {
                connect,
                server_id,
                interval: Duration::from_millis(interval),
                reconnect_after,
                count,
            };
            echo::run_client(me, opts, echo::Events::default()).await
        }
    }
}
