//! Command-line interface.
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use ferrid_proto::admin::v1 as pb;
use ferrid_proto::types::v1 as tpb;

use crate::admin_client::{connect, status_err};
use crate::output::{self, Output};

/// Ferrid: attestation-backed issuer of short-lived SPIFFE credentials.
#[derive(Debug, Parser)]
#[command(name = "ferrid", version, about, propagate_version = true)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (CA, node API, admin API).
    Server(ServerArgs),
    /// Run a server with a throwaway data directory, for trying Ferrid out.
    Dev(crate::dev::DevArgs),
    /// Manage registration entries.
    #[command(subcommand)]
    Entry(EntryCmd),
    /// Manage join tokens.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Run the node agent (`--config`), use its Workload API, or manage agents.
    Agent(AgentArgs),
    /// Show the trust bundle.
    #[command(subcommand)]
    Bundle(BundleCmd),
    /// Mint an X.509-SVID for any SPIFFE ID (operators only).
    #[command(subcommand)]
    X509(X509Cmd),
    /// Mint a JWT-SVID for any SPIFFE ID (operators only).
    #[command(subcommand)]
    Jwt(JwtCmd),
    /// Get SVIDs without an agent: `svid exchange` trades a CI job's OIDC token.
    #[command(subcommand)]
    Svid(crate::exchange_cmd::SvidCmd),
    /// Check that a server is live and ready.
    Healthcheck(HealthArgs),
    /// Validate Cedar policies and run their golden cases, offline.
    #[command(subcommand)]
    Policy(crate::policy_cmd::PolicyCmd),
    /// Revoke credentials, a task, an agent, an entry, a SPIFFE ID or a delegation;
    /// `revoke list` shows what is in force.
    Revoke(crate::revoke_cmd::RevokeArgs),
    /// Verify and query the server's tamper-evident audit log, offline.
    #[command(subcommand)]
    Audit(crate::audit_cmd::AuditCmd),
}

#[derive(Debug, Args)]
pub(crate) struct ServerArgs {
    /// Path to the server's TOML configuration.
    #[arg(long, short, env = "FERRID_SERVER_CONFIG")]
    pub(crate) config: PathBuf,
    /// Check the configuration (syntax, keys and values) and exit without starting.
    /// Key files, kubeconfigs and API credentials are checked at start-up.
    #[arg(long)]
    pub(crate) check: bool,
}

/// How to reach the admin API, and how to print.
#[derive(Debug, Args, Clone)]
pub(crate) struct AdminArgs {
    /// The server's admin socket.
    #[arg(long, env = "FERRID_ADMIN_SOCKET", default_value = ferrid_server::config::DEFAULT_ADMIN_SOCKET)]
    pub(crate) admin_socket: PathBuf,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Output::Text)]
    pub(crate) output: Output,
}

#[derive(Debug, Args, Clone, Default)]
struct EntryFields {
    /// The SPIFFE ID to issue, e.g. spiffe://example.org/web.
    #[arg(long)]
    spiffe_id: Option<String>,
    /// The agent (or node alias) through which it is issued.
    #[arg(long)]
    parent_id: Option<String>,
    /// A selector `type:value`; repeat for several (all must match).
    #[arg(long = "selector", short = 's')]
    selectors: Vec<String>,
    /// X.509-SVID lifetime, e.g. 10m (default: the server's).
    #[arg(long, value_parser = parse_duration)]
    x509_ttl: Option<Duration>,
    /// JWT-SVID lifetime, e.g. 5m (default: the server's).
    #[arg(long, value_parser = parse_duration)]
    jwt_ttl: Option<Duration>,
    /// A DNS name to put in X.509-SVIDs; repeat for several.
    #[arg(long = "dns-name")]
    dns_names: Vec<String>,
    /// A hint for workloads holding several identities.
    #[arg(long)]
    hint: Option<String>,
    /// Whether the holder may call the admin API.
    #[arg(long)]
    admin: Option<bool>,
    /// When the entry stops issuing (RFC 3339, e.g. 2027-01-01T00:00:00Z).
    #[arg(long)]
    expires_at: Option<String>,
    /// Metadata `key=value`; repeat for several.
    #[arg(long = "metadata")]
    metadata: Vec<String>,
}

#[derive(Debug, Subcommand)]
enum EntryCmd {
    /// Create an entry, or many at once with --data.
    Create {
        /// Create every entry in this JSON file (`-` reads standard input) instead:
        /// `{"entries": [...]}`, each in the shape `entry list --output json` prints
        /// (`id`, `revision` and `created_at` are ignored). Sent in batches, each one
        /// datastore transaction; the command fails if any entry is refused.
        #[arg(long, conflicts_with_all = ["spiffe_id", "parent_id", "selectors"])]
        data: Option<PathBuf>,
        #[command(flatten)]
        fields: EntryFields,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Change an entry: fields given replace the current ones.
    Update {
        /// The entry's ID.
        #[arg(long)]
        id: String,
        #[command(flatten)]
        fields: EntryFields,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Delete an entry.
    Delete {
        /// The entry's ID.
        #[arg(long)]
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List entries, optionally filtered.
    List {
        /// Only entries with this SPIFFE ID.
        #[arg(long)]
        spiffe_id: Option<String>,
        /// Only entries with this parent.
        #[arg(long)]
        parent_id: Option<String>,
        /// Only entries with this selector.
        #[arg(long)]
        selector: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Show one entry.
    Show {
        /// The entry's ID.
        #[arg(long)]
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCmd {
    /// Generate a one-time join token for an agent.
    Generate {
        /// Lifetime, e.g. 10m (default: the server's join_token.default_ttl).
        #[arg(long, value_parser = parse_duration)]
        ttl: Option<Duration>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Exchange a subject token for a delegation token (RFC 8693), as the workload
    /// whose X.509-SVID is given.
    Exchange(crate::exchange_cmd::TokenExchangeArgs),
    /// Get a task-scoped JWT-SVID, as the workload whose X.509-SVID is given.
    Task(crate::exchange_cmd::TaskTokenArgs),
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
struct AgentArgs {
    /// Run the agent with this configuration file.
    #[arg(long, short, env = "FERRID_AGENT_CONFIG")]
    config: Option<PathBuf>,
    /// With --config: check the configuration (syntax, keys and values) and exit
    /// without starting.
    #[arg(long, requires = "config")]
    check: bool,
    #[command(subcommand)]
    cmd: Option<AgentCmd>,
}

#[derive(Debug, Subcommand)]
enum AgentCmd {
    /// Fetch SVIDs from the local agent's Workload API.
    #[command(subcommand)]
    Fetch(crate::agent_cmd::FetchCmd),
    /// Validate credentials through the local agent.
    #[command(subcommand)]
    Validate(crate::agent_cmd::ValidateCmd),
    /// Check that the local agent's Workload API answers.
    Healthcheck {
        /// Keep retrying for up to this long (e.g. 30s) before reporting failure.
        #[arg(long, value_parser = humantime::parse_duration)]
        wait: Option<Duration>,
        #[command(flatten)]
        wl: crate::agent_cmd::WorkloadArgs,
    },
    /// List agents attested to the server.
    List {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Show one agent.
    Show {
        /// The agent's SPIFFE ID.
        #[arg(long)]
        spiffe_id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Evict an agent: its SVID is refused from now on.
    Evict {
        /// The agent's SPIFFE ID.
        #[arg(long)]
        spiffe_id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// Bundle output formats.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum BundleFormat {
    /// X.509 authorities as PEM certificates.
    Pem,
    /// The SPIFFE bundle document (JWKS).
    Jwks,
}

#[derive(Debug, Subcommand)]
enum BundleCmd {
    /// Print the trust bundle.
    Show {
        /// pem or jwks.
        #[arg(long, value_enum, default_value_t = BundleFormat::Pem)]
        format: BundleFormat,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Debug, Subcommand)]
enum X509Cmd {
    /// Mint an X.509-SVID; writes svid.pem, key.pem (mode 0600) and bundle.pem.
    Mint {
        /// The SPIFFE ID.
        #[arg(long)]
        spiffe_id: String,
        /// Lifetime, e.g. 1h (default: the server's).
        #[arg(long, value_parser = parse_duration)]
        ttl: Option<Duration>,
        /// DNS SANs; repeat for several.
        #[arg(long = "dns-name")]
        dns_names: Vec<String>,
        /// Directory to write the files to (created if missing).
        #[arg(long)]
        out_dir: PathBuf,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Debug, Subcommand)]
enum JwtCmd {
    /// Mint a JWT-SVID and print the token.
    Mint {
        /// The SPIFFE ID (the `sub` claim).
        #[arg(long)]
        spiffe_id: String,
        /// An audience; repeat for several.
        #[arg(long = "audience", short = 'a', required = true)]
        audience: Vec<String>,
        /// Lifetime, e.g. 5m (default: the server's).
        #[arg(long, value_parser = parse_duration)]
        ttl: Option<Duration>,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Debug, Args)]
struct HealthArgs {
    /// The server's health address (health_address in its config).
    #[arg(long, env = "FERRID_HEALTH_ADDRESS", default_value = ferrid_server::config::DEFAULT_HEALTH_ADDRESS)]
    address: String,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?} is not a duration like 90s, 10m or 1h: {e}"))
}

fn secs_i32(d: Option<Duration>, what: &str) -> Result<i32> {
    d.map_or(Ok(0), |d| i32::try_from(d.as_secs()).with_context(|| format!("{what} is too long")))
}

fn selector(s: &str) -> Result<tpb::Selector> {
    let (t, v) =
        s.split_once(':').with_context(|| format!("selector {s:?} must have the form type:value"))?;
    Ok(tpb::Selector { r#type: t.to_owned(), value: v.to_owned() })
}

/// One entry of `entry create --data`: the fields `entry list --output json` prints.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryData {
    spiffe_id: String,
    parent_id: String,
    selectors: Vec<String>,
    #[serde(default)]
    x509_svid_ttl: i32,
    #[serde(default)]
    jwt_svid_ttl: i32,
    #[serde(default)]
    dns_names: Vec<String>,
    #[serde(default)]
    hint: String,
    #[serde(default)]
    admin: bool,
    #[serde(default)]
    expires_at: i64,
    #[serde(default)]
    metadata: std::collections::BTreeMap<String, String>,
    // Assigned by the server; accepted so a listing can be fed back in.
    #[serde(default, rename = "id")]
    _id: serde::de::IgnoredAny,
    #[serde(default, rename = "revision")]
    _revision: serde::de::IgnoredAny,
    #[serde(default, rename = "created_at")]
    _created_at: serde::de::IgnoredAny,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct EntriesFile {
    entries: Vec<EntryData>,
}

/// Entries per `BatchCreateEntry` call (the server's default `limits.max_batch` is 1,000).
const CREATE_BATCH: usize = 500;

async fn create_from_file(path: &std::path::Path, admin: &AdminArgs) -> Result<()> {
    let text = if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading entries from standard input")?
    } else {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
    };
    let file: EntriesFile = serde_json::from_str(&text)
        .with_context(|| format!("{} is not an entries file ({{\"entries\": [...]}})", path.display()))?;
    let mut wire = Vec::with_capacity(file.entries.len());
    for (i, d) in file.entries.into_iter().enumerate() {
        let selectors = d
            .selectors
            .iter()
            .map(|s| selector(s))
            .collect::<Result<_>>()
            .with_context(|| format!("entry {i} ({})", d.spiffe_id))?;
        wire.push(tpb::Entry {
            spiffe_id: d.spiffe_id,
            parent_id: d.parent_id,
            selectors,
            x509_svid_ttl: d.x509_svid_ttl,
            jwt_svid_ttl: d.jwt_svid_ttl,
            dns_names: d.dns_names,
            hint: d.hint,
            admin: d.admin,
            expires_at: d.expires_at,
            metadata: d.metadata.into_iter().collect(),
            ..Default::default()
        });
    }
    let mut c = connect(&admin.admin_socket).await?;
    let (mut created, mut refused) = (Vec::new(), Vec::new());
    for (n, chunk) in wire.chunks(CREATE_BATCH).enumerate() {
        let r = c
            .batch_create_entry(pb::BatchCreateEntryRequest { entries: chunk.to_vec() })
            .await
            .map_err(status_err)?
            .into_inner();
        for (i, (res, sent)) in r.results.into_iter().zip(chunk).enumerate() {
            match res.entry {
                Some(e) => created.push(e),
                None => refused.push(format!(
                    "entry {} ({}): {}",
                    n * CREATE_BATCH + i,
                    sent.spiffe_id,
                    res.error_message
                )),
            }
        }
        if wire.len() > CREATE_BATCH {
            eprintln!("{} of {} entries sent", (n * CREATE_BATCH + chunk.len()), wire.len());
        }
    }
    output::entries(admin.output, &created);
    if !refused.is_empty() {
        bail!("{} of {} entries were refused:\n  {}", refused.len(), wire.len(), refused.join("\n  "));
    }
    Ok(())
}

impl EntryFields {
    /// Applies the given flags on top of `e`.
    fn apply(self, e: &mut tpb::Entry) -> Result<()> {
        if let Some(v) = self.spiffe_id {
            e.spiffe_id = v;
        }
        if let Some(v) = self.parent_id {
            e.parent_id = v;
        }
        if !self.selectors.is_empty() {
            e.selectors = self.selectors.iter().map(|s| selector(s)).collect::<Result<_>>()?;
        }
        if self.x509_ttl.is_some() {
            e.x509_svid_ttl = secs_i32(self.x509_ttl, "--x509-ttl")?;
        }
        if self.jwt_ttl.is_some() {
            e.jwt_svid_ttl = secs_i32(self.jwt_ttl, "--jwt-ttl")?;
        }
        if !self.dns_names.is_empty() {
            e.dns_names = self.dns_names;
        }
        if let Some(v) = self.hint {
            e.hint = v;
        }
        if let Some(v) = self.admin {
            e.admin = v;
        }
        if let Some(v) = self.expires_at {
            let t = time::OffsetDateTime::parse(&v, &time::format_description::well_known::Rfc3339)
                .with_context(|| format!("--expires-at {v:?} is not an RFC 3339 time"))?;
            e.expires_at = t.unix_timestamp();
        }
        for kv in self.metadata {
            let (k, v) =
                kv.split_once('=').with_context(|| format!("--metadata {kv:?} must be key=value"))?;
            e.metadata.insert(k.to_owned(), v.to_owned());
        }
        Ok(())
    }
}

/// Runs one command.
pub(crate) async fn dispatch(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Server(args) => crate::server_cmd::run(args).await,
        Command::Dev(args) => crate::dev::run(args).await,
        Command::Policy(cmd) => crate::policy_cmd::run(cmd),
        Command::Revoke(a) => crate::revoke_cmd::run(a).await,
        Command::Audit(cmd) => crate::audit_cmd::run(cmd),
        Command::Entry(cmd) => entry(cmd).await,
        Command::Token(TokenCmd::Exchange(a)) => crate::exchange_cmd::token_exchange(a).await,
        Command::Token(TokenCmd::Task(a)) => crate::exchange_cmd::task_token(a).await,
        Command::Token(TokenCmd::Generate { ttl, admin }) => {
            let mut c = connect(&admin.admin_socket).await?;
            let r = c
                .create_join_token(pb::CreateJoinTokenRequest { ttl: secs_i32(ttl, "--ttl")? })
                .await
                .map_err(status_err)?
                .into_inner();
            output::join_token(admin.output, &r);
            Ok(())
        }
        Command::Agent(AgentArgs { config: Some(config), check: true, cmd: None }) => {
            let (_, td) = ferrid_agent::config::AgentConfig::load(&config)?;
            println!("{}: configuration OK (trust domain {td})", config.display());
            Ok(())
        }
        Command::Agent(AgentArgs { config: Some(config), cmd: None, .. }) => {
            crate::agent_cmd::run(&config).await
        }
        Command::Agent(AgentArgs { cmd: Some(AgentCmd::Fetch(f)), .. }) => crate::agent_cmd::fetch(f).await,
        Command::Agent(AgentArgs { cmd: Some(AgentCmd::Validate(v)), .. }) => {
            crate::agent_cmd::validate(v).await
        }
        Command::Agent(AgentArgs { cmd: Some(AgentCmd::Healthcheck { wl, wait }), .. }) => {
            crate::agent_cmd::healthcheck(wl, wait).await
        }
        Command::Agent(AgentArgs { cmd: Some(cmd), .. }) => agent(cmd).await,
        Command::Agent(AgentArgs { config: None, cmd: None, .. }) => {
            bail!("`ferrid agent` needs --config FILE to run the agent, or a subcommand (see --help)")
        }
        Command::Bundle(BundleCmd::Show { format, admin }) => {
            let mut c = connect(&admin.admin_socket).await?;
            let b = c.get_bundle(pb::GetBundleRequest {}).await.map_err(status_err)?.into_inner();
            match format {
                BundleFormat::Pem => print!("{}", output::bundle_pem(&b)),
                BundleFormat::Jwks => println!("{}", String::from_utf8_lossy(&b.spiffe_bundle_json)),
            }
            Ok(())
        }
        Command::X509(X509Cmd::Mint { spiffe_id, ttl, dns_names, out_dir, admin }) => {
            let mut c = connect(&admin.admin_socket).await?;
            let r = c
                .mint_x509_svid(pb::MintX509SvidRequest {
                    spiffe_id,
                    csr: vec![],
                    ttl: secs_i32(ttl, "--ttl")?,
                    dns_names,
                })
                .await
                .map_err(status_err)?
                .into_inner();
            output::write_x509(&out_dir, &r)?;
            let svid = r.svid.unwrap_or_default();
            output::minted_x509(admin.output, &svid, &out_dir);
            Ok(())
        }
        Command::Jwt(JwtCmd::Mint { spiffe_id, audience, ttl, admin }) => {
            let mut c = connect(&admin.admin_socket).await?;
            let t = c
                .mint_jwt_svid(pb::MintJwtSvidRequest { spiffe_id, audience, ttl: secs_i32(ttl, "--ttl")? })
                .await
                .map_err(status_err)?
                .into_inner();
            output::jwt(admin.output, &t);
            Ok(())
        }
        Command::Svid(cmd) => crate::exchange_cmd::run(cmd).await,
        Command::Healthcheck(args) => healthcheck(&args.address).await,
    }
}

async fn entry(cmd: EntryCmd) -> Result<()> {
    match cmd {
        EntryCmd::Create { data: Some(path), admin, .. } => create_from_file(&path, &admin).await?,
        EntryCmd::Create { data: None, fields, admin } => {
            if fields.spiffe_id.is_none() || fields.parent_id.is_none() || fields.selectors.is_empty() {
                bail!("entry create needs --spiffe-id, --parent-id and at least one --selector");
            }
            let mut e = tpb::Entry::default();
            fields.apply(&mut e)?;
            let mut c = connect(&admin.admin_socket).await?;
            let saved = c
                .create_entry(pb::CreateEntryRequest { entry: Some(e) })
                .await
                .map_err(status_err)?
                .into_inner();
            output::entries(admin.output, &[saved]);
        }
        EntryCmd::Update { id, fields, admin } => {
            let mut c = connect(&admin.admin_socket).await?;
            let mut e = c.get_entry(pb::GetEntryRequest { id }).await.map_err(status_err)?.into_inner();
            fields.apply(&mut e)?;
            let saved = c
                .update_entry(pb::UpdateEntryRequest { entry: Some(e) })
                .await
                .map_err(status_err)?
                .into_inner();
            output::entries(admin.output, &[saved]);
        }
        EntryCmd::Delete { id, admin } => {
            let mut c = connect(&admin.admin_socket).await?;
            let gone = c.delete_entry(pb::DeleteEntryRequest { id }).await.map_err(status_err)?.into_inner();
            match admin.output {
                Output::Json => output::entries(Output::Json, &[gone]),
                Output::Text => println!("Deleted entry {}", gone.id),
            }
        }
        EntryCmd::List { spiffe_id, parent_id, selector: sel, admin } => {
            let mut c = connect(&admin.admin_socket).await?;
            let r = c
                .list_entries(pb::ListEntriesRequest {
                    spiffe_id: spiffe_id.unwrap_or_default(),
                    parent_id: parent_id.unwrap_or_default(),
                    selector: sel.as_deref().map(selector).transpose()?,
                })
                .await
                .map_err(status_err)?
                .into_inner();
            output::entries(admin.output, &r.entries);
        }
        EntryCmd::Show { id, admin } => {
            let mut c = connect(&admin.admin_socket).await?;
            let e = c.get_entry(pb::GetEntryRequest { id }).await.map_err(status_err)?.into_inner();
            output::entries(admin.output, &[e]);
        }
    }
    Ok(())
}

async fn agent(cmd: AgentCmd) -> Result<()> {
    match cmd {
        AgentCmd::List { admin } => {
            let mut c = connect(&admin.admin_socket).await?;
            let r = c.list_agents(pb::ListAgentsRequest {}).await.map_err(status_err)?.into_inner();
            output::agents(admin.output, &r.agents);
        }
        AgentCmd::Show { spiffe_id, admin } => {
            let mut c = connect(&admin.admin_socket).await?;
            let a = c.get_agent(pb::GetAgentRequest { spiffe_id }).await.map_err(status_err)?.into_inner();
            output::agents(admin.output, &[a]);
        }
        AgentCmd::Fetch(_) | AgentCmd::Validate(_) | AgentCmd::Healthcheck { .. } => {
            unreachable!("dispatched before")
        }
        AgentCmd::Evict { spiffe_id, admin } => {
            let mut c = connect(&admin.admin_socket).await?;
            let a =
                c.evict_agent(pb::EvictAgentRequest { spiffe_id }).await.map_err(status_err)?.into_inner();
            match admin.output {
                Output::Json => output::agents(Output::Json, &[a]),
                Output::Text => println!("Evicted agent {}", a.spiffe_id),
            }
        }
    }
    Ok(())
}

/// GET /ready on the health address; success only on HTTP 200.
async fn healthcheck(address: &str) -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(address))
        .await
        .with_context(|| format!("timed out connecting to {address}"))?
        .with_context(|| format!("server health endpoint {address} is not reachable"))?;
    s.write_all(format!("GET /ready HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n").as_bytes())
        .await?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .context("timed out reading")??;
    let text = String::from_utf8_lossy(&buf);
    let status = text.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) == Some("200") {
        println!("Server is healthy.");
        Ok(())
    } else {
        bail!("server is not ready: {status}")
    }
}
