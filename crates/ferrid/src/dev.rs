//! `ferrid dev`: a server and an agent on a throwaway data directory, loopback only,
//! with a join token, a bootstrap bundle and an entry for the calling user already in
//! place, and the `export` lines that make every later command find them.
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use ferrid_proto::admin::v1 as pb;
use ferrid_proto::types::v1 as tpb;
use ferrid_server::ServerConfig;
use ferrid_types::SystemClock;

use crate::admin_client::{connect, status_err};
use crate::server_cmd::{init_logging, shutdown_signal};

/// Options for `ferrid dev`.
#[derive(Debug, Args)]
pub(crate) struct DevArgs {
    /// Trust domain.
    #[arg(long, default_value = "dev.ferrid.local")]
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
    /// The revocation feed's HTTPS address (SSF poll and SPIFFE bundle endpoints).
    #[arg(long, default_value = "127.0.0.1:8083")]
    revocation_address: String,
    /// Log level.
    #[arg(long, default_value = "info")]
    log_level: String,
}

/// The path segment naming `uid`'s user: the login name when it is a valid SPIFFE ID
/// segment, else `uid-<n>`.
fn user_segment(uid: u32) -> String {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)))
        .filter(|n| n != "." && n != "..")
        .unwrap_or_else(|| format!("uid-{uid}"))
}

/// Runs the dev server and agent until Ctrl-C.
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
        "trust_domain = {td:?}\ndata_dir = {dd:?}\nbind_address = {ba:?}\nhealth_address = {ha:?}\nadmin_socket = {sock:?}\n[revocation]\naddress = {ra:?}\n",
        td = args.trust_domain,
        dd = dir.join("server").display().to_string(),
        ba = args.bind_address,
        ha = args.health_address,
        sock = admin_socket.display().to_string(),
        ra = args.revocation_address,
    );
    let cfg = ServerConfig::parse(&toml)?;
    let td = cfg.trust_domain.clone();
    let server = ferrid_server::start(cfg, Arc::new(SystemClock)).await.context("starting the dev server")?;

    // Enrol an agent: a join token, the bundle to trust the server with, and an entry
    // that gives processes of the calling user an identity.
    let mut admin = connect(&server.admin_socket).await?;
    let token = admin
        .create_join_token(pb::CreateJoinTokenRequest { ttl: 0 })
        .await
        .map_err(status_err)?
        .into_inner();
    let bundle = admin.get_bundle(pb::GetBundleRequest {}).await.map_err(status_err)?.into_inner();
    let bundle_file = dir.join("bootstrap-bundle.pem");
    std::fs::write(&bundle_file, crate::output::bundle_pem(&bundle))?;
    let uid = nix::unistd::getuid().as_raw();
    let workload_id = format!("spiffe://{td}/user/{}", user_segment(uid));
    let entry = tpb::Entry {
        spiffe_id: workload_id.clone(),
        parent_id: token.agent_id.clone(),
        selectors: vec![tpb::Selector { r#type: "unix".into(), value: format!("uid:{uid}") }],
        hint: "dev".into(),
        ..Default::default()
    };
    admin.create_entry(pb::CreateEntryRequest { entry: Some(entry) }).await.map_err(status_err)?;

    let socket = dir.join("api.sock");
    let agent_toml = format!(
        "trust_domain = {td:?}\nserver_address = {sa:?}\ndata_dir = {dd:?}\nsocket_path = {sp:?}\njoin_token = {jt:?}\ntrust_bundle_file = {bf:?}\n",
        td = td.to_string(),
        sa = server.node_addr.to_string(),
        dd = dir.join("agent").display().to_string(),
        sp = socket.display().to_string(),
        jt = token.token,
        bf = bundle_file.display().to_string(),
    );
    let (agent_cfg, agent_td) = ferrid_agent::AgentConfig::parse(&agent_toml)?;
    let agent = ferrid_agent::start(agent_cfg, agent_td, Arc::new(SystemClock))
        .await
        .context("starting the dev agent")?;

    println!();
    println!("Ferrid dev server and agent are running (trust domain {td}). Data: {}", dir.display());
    println!("Processes of uid {uid} get {workload_id}.");
    println!("Paste these into another shell:");
    println!();
    println!("    export FERRID_ADMIN_SOCKET={}", server.admin_socket.display());
    println!("    export SPIFFE_ENDPOINT_SOCKET=unix://{}", agent.socket_path.display());
    println!(
        "    export FERRID_HEALTH_ADDRESS={}",
        server.health_addr.map(|a| a.to_string()).unwrap_or_default()
    );
    println!();
    let exe = std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_else(|_| "ferrid".into());
    println!("Then fetch and inspect an SVID, and look around:");
    println!();
    println!("    {exe} agent fetch x509                  # the X.509-SVID this shell's user gets");
    println!(
        "    {exe} agent fetch x509 --write /tmp/svid && openssl x509 -in /tmp/svid/svid.pem -noout -text"
    );
    println!("    {exe} agent fetch jwt --audience demo   # a JWT-SVID for audience 'demo'");
    println!("    {exe} entry list");
    println!("    {exe} revoke --spiffe-id {workload_id}   # the agent mints a replacement at once");
    if let Some(a) = server.revocation_addr {
        println!();
        println!(
            "Relying parties follow revocations at https://{a}/ssf/poll (RFC 8936; they present an SVID:"
        );
        println!("mutual TLS, or a bearer JWT-SVID with the server's SPIFFE ID as audience),");
        println!(
            "or on the node API's ferrid.revocation.v1.Revocations/Watch; the bundle is at https://{a}/bundle."
        );
    }
    println!();
    println!("Any SPIFFE client works too (go-spiffe, py-spiffe, the Rust spiffe crate).");
    println!("Press Ctrl-C to stop.");
    shutdown_signal().await;
    agent.shutdown().await;
    server.shutdown().await;
    Ok(())
}
