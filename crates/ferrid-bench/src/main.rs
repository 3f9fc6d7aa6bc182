//! `ferrid-bench`: measures Ferrid by driving the real `ferrid server` and `ferrid agent`
//! binaries over their real sockets, the way workloads and operators use them.
//!
//! ```sh
//! bash scripts/bench.sh            # builds in release mode, runs everything
//! bash scripts/bench.sh --quick    # seconds, for CI: proves the harness works
//! ```
//!
//! Reports, as a Markdown table on stdout:
//! - Workload API latency from the agent's cache (FetchX509SVID: open the stream and
//!   take the first message; FetchJWTSVID: unary, served from the JWT cache) with 1,
//!   100 and 1,000 concurrent clients, each on its own connection;
//! - entry propagation: from the admin `CreateEntry` call returning to the new SVID
//!   arriving on an already open FetchX509SVID stream;
//! - agent memory per cached X.509-SVID (resident-set growth of an agent process
//!   that receives N entries, divided by N);
//! - issuance throughput with the audit log on and off (`--audit-only` runs just this):
//!   two servers, one with `[audit] enabled = false`, each minting JWT- and X.509-SVIDs
//!   through the admin API from concurrent clients, back to back.
//!
//! - server memory with 100,000 registration entries (`--scale-only`), the rate
//!   `BatchCreateEntry` stores them at, and a restart on them ([`scale`]);
//! - revocation propagation: from the admin `Revoke` call (what `ferrid revoke --jti`
//!   sends) to a ferrid-validate relying party on the gRPC watch refusing the token
//!   (`--revocation-only` runs just this).
//! - issuance (issue 9, [`issuance`]): the raw ECDSA P-256 and in-process minting
//!   limit, X.509-SVID and JWT-SVID issuance through the server's node API over mutual
//!   TLS at several concurrencies, and the same X.509 workload against OpenBao's PKI
//!   engine (skipped under `--quick` or when no `bao` binary is found).
//!
//! Timing lives here, never in tests.
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use clap::Parser;
use ferrid_proto::admin::v1::{self as apb, admin_client::AdminClient};
use ferrid_proto::types::v1 as tpb;
use ferrid_proto::workload::{self as wpb, spiffe_workload_api_client::SpiffeWorkloadApiClient};
use tokio_stream::StreamExt;
use tonic::transport::Channel;

mod issuance;
mod scale;

/// Command-line options.
#[derive(Debug, Parser)]
#[command(about = "Benchmarks the real ferrid binaries")]
struct Opts {
    /// A few seconds in total: smaller runs, same code paths (for CI).
    #[arg(long)]
    quick: bool,
    /// Seconds each latency level runs.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Entries for the agent-memory measurement.
    #[arg(long, default_value_t = 10_000)]
    memory_entries: usize,
    /// Total calls per second of the open-loop latency runs.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Seconds the agent idles before its memory is read.
    #[arg(long, default_value_t = 15)]
    settle: u64,
    /// Entry propagation samples.
    #[arg(long, default_value_t = 200)]
    propagation_samples: usize,
    /// Revocation propagation samples.
    #[arg(long, default_value_t = 200)]
    revocation_samples: usize,
    /// The `ferrid` binary (default: next to this one).
    #[arg(long)]
    ferrid: Option<PathBuf>,
    /// Only the issuance throughput with the audit log on and off.
    #[arg(long)]
    audit_only: bool,
    /// Only the revocation propagation.
    #[arg(long)]
    revocation_only: bool,
    /// Concurrent clients of the issuance runs.
    #[arg(long, default_value_t = 16)]
    issuance_clients: usize,
    /// Only the issuance measurements (raw limit, Ferrid, OpenBao).
    #[arg(long)]
    issuance_only: bool,
    /// Seconds of each raw-limit measurement (per thread count).
    #[arg(long, default_value_t = 3)]
    raw_seconds: u64,
    /// CSRs per call in the batched X.509 runs.
    #[arg(long, default_value_t = 50)]
    batch: usize,
    /// The OpenBao binary (default: the one in target/bench-venv, else `bao` on PATH).
    #[arg(long)]
    bao: Option<PathBuf>,
    /// Skip OpenBao.
    #[arg(long)]
    no_bao: bool,
    /// Registration entries for the server-memory and restart measurement.
    #[arg(long, default_value_t = 100_000)]
    server_entries: usize,
    /// Only the server-memory and restart measurement.
    #[arg(long)]
    scale_only: bool,
}

const TD: &str = "bench.ferrid.local";

fn main() -> Result<()> {
    let mut opts = Opts::parse();
    if opts.quick {
        opts.seconds = 1;
        opts.memory_entries = 200;
        opts.propagation_samples = 10;
        opts.revocation_samples = 10;
        opts.settle = 1;
        opts.rate = 100;
        opts.raw_seconds = 1;
        opts.batch = 10;
        opts.server_entries = 2_000;
    }
    raise_fd_limit();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(run(opts))
}

/// 1,000 clients need 1,000 connections; lift the soft descriptor limit to the hard one.
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

async fn run(opts: Opts) -> Result<()> {
    let ferrid = match &opts.ferrid {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("ferrid"),
    };
    ensure!(
        ferrid.exists(),
        "{} not found: build it first (`cargo build --release -p ferrid`) or pass --ferrid",
        ferrid.display()
    );
    let tmp = tempfile::tempdir()?;
    if opts.audit_only {
        return audit_comparison(&ferrid, tmp.path(), &opts).await;
    }
    let uid = nix::unistd::getuid().as_raw();
    if opts.scale_only {
        return server_scale(&ferrid, tmp.path(), &opts).await;
    }
    if opts.revocation_only {
        eprintln!("starting ferrid server …");
        let server = Proc::server(&ferrid, tmp.path())?;
        let mut admin = admin_client(&server.admin_socket).await?;
        eprintln!("revocation propagation, {} samples …", opts.revocation_samples);
        let r = revocation(&mut admin, &server.node, opts.revocation_samples).await?;
        println!("| measurement | samples | p50 | p99 | max |");
        println!("| --- | --- | --- | --- | --- |");
        println!(
            "| revocation propagation (`ferrid revoke --jti` → refused by a ferrid-validate relying party) | {} | {} | {} | {} |",
            r.n,
            fmt_us(r.p50),
            fmt_us(r.p99),
            fmt_us(r.max)
        );
        return Ok(());
    }
    // The raw limit first, while nothing else of ours runs.
    let raw = issuance::raw_limits(Duration::from_secs(opts.raw_seconds)).await?;
    eprintln!("starting ferrid server …");
    let server = Proc::server(&ferrid, tmp.path())?;
    let mut admin = admin_client(&server.admin_socket).await?;

    let bao = issuance::find_bao(opts.bao.as_deref(), &std::env::current_dir()?);
    let iopts = issuance::Opts {
        seconds: opts.seconds,
        raw_seconds: opts.raw_seconds,
        levels: if opts.quick { vec![1, 4] } else { vec![1, 4, 16, 64] },
        batch: opts.batch,
        bao,
        skip_bao: if opts.quick {
            Some("not run under --quick (CI does not download OpenBao)".into())
        } else if opts.no_bao {
            Some("--no-bao".into())
        } else {
            None
        },
    };
    // The same runs against a second server without the audit log: OpenBao's dev
    // server has no audit device, so that is the like-for-like comparison, and the
    // difference is what durable auditing costs (see docs/audit.md).
    let quiet_dir = tmp.path().join("no-audit");
    std::fs::create_dir_all(&quiet_dir)?;
    let quiet = Proc::server_with(&ferrid, &quiet_dir, "[audit]\nenabled = false\n")?;
    let mut quiet_admin = admin_client(&quiet.admin_socket).await?;
    let issued = issuance::run(
        &iopts,
        &mut [(issuance::AUDITED, &server, &mut admin), (issuance::UNAUDITED, &quiet, &mut quiet_admin)],
        tmp.path(),
        Some(raw),
    )
    .await?;
    drop(quiet);
    if opts.issuance_only {
        println!("{}", issued.report());
        return Ok(());
    }

    // Agent A serves the latency and propagation clients: one entry for this uid.
    let agent_a = Proc::agent(&ferrid, &server, &mut admin, &tmp.path().join("a")).await?;
    create_entry(&mut admin, &agent_a.agent_id, "bench/client", &format!("uid:{uid}")).await?;
    let socket = agent_a.socket.clone();
    wait_for_svids(&socket, 1).await?;

    let mut report = Vec::new();
    let levels: &[usize] = if opts.quick { &[1, 10] } else { &[1, 100, 1000] };
    // Open loop: every client connected, together calling `rate` times a second at
    // random phases — how workloads behave (they fetch at start and on rotation), and
    // what latency one call sees when the agent is not saturated.
    for &clients in levels {
        for (call, name) in [(Call::X509, "FetchX509SVID"), (Call::Jwt, "FetchJWTSVID")] {
            eprintln!("{name}, {clients} clients, {} calls/s in total, for {}s …", opts.rate, opts.seconds);
            let r = open_loop(&socket, clients, opts.rate, Duration::from_secs(opts.seconds), call).await?;
            report.push(r.row(&format!("{name} (open loop, {}/s)", opts.rate), clients));
        }
    }
    // Closed loop: every client calls back to back — the saturation throughput, where
    // latency is simply clients ÷ throughput.
    for &clients in levels {
        eprintln!("FetchX509SVID with {clients} clients for {}s …", opts.seconds);
        let r = latency(&socket, clients, Duration::from_secs(opts.seconds), Call::X509).await?;
        report.push(r.row("FetchX509SVID (closed loop)", clients));
        eprintln!("FetchJWTSVID with {clients} clients for {}s …", opts.seconds);
        let r = latency(&socket, clients, Duration::from_secs(opts.seconds), Call::Jwt).await?;
        report.push(r.row("FetchJWTSVID (closed loop)", clients));
    }

    eprintln!("entry propagation, {} samples …", opts.propagation_samples);
    let prop = propagation(&mut admin, &agent_a.agent_id, &socket, uid, opts.propagation_samples).await?;

    eprintln!("revocation propagation, {} samples …", opts.revocation_samples);
    let revo = revocation(&mut admin, &server.node, opts.revocation_samples).await?;

    // Agent B: a fresh agent process that receives N entries, for its memory per SVID.
    eprintln!("agent memory with {} entries …", opts.memory_entries);
    let mut agent_b = Proc::agent(&ferrid, &server, &mut admin, &tmp.path().join("b")).await?;
    let mem =
        memory(&mut admin, &mut agent_b, &ferrid, opts.memory_entries, Duration::from_secs(opts.settle))
            .await?;

    println!("| measurement | clients | calls | throughput (/s) | p50 | p99 | max |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for r in &report {
        println!("{r}");
    }
    println!(
        "| entry propagation (CreateEntry → SVID on open stream) | 1 | {} | — | {} | {} | {} |",
        prop.n,
        fmt_us(prop.p50),
        fmt_us(prop.p99),
        fmt_us(prop.max)
    );
    println!(
        "| revocation propagation (`ferrid revoke --jti` → refused by a ferrid-validate relying party) | 1 | {} | — | {} | {} | {} |",
        revo.n,
        fmt_us(revo.p50),
        fmt_us(revo.p99),
        fmt_us(revo.max)
    );
    println!();
    println!(
        "Agent memory: {:.0} KiB RSS with its own SVID, {:.0} KiB with {} cached X.509-SVIDs: {:.2} KiB per SVID (entry included).",
        mem.base_kib, mem.loaded_kib, mem.n, mem.per_svid_kib
    );
    println!(
        "Same agent restarted with the {} entries already there: {:.0} KiB, {:.2} KiB per SVID over the baseline.",
        mem.n, mem.restarted_kib, mem.restarted_per_svid_kib
    );
    println!();
    println!("{}", issued.report());
    drop(agent_b);
    drop(agent_a);
    drop(server);
    println!();
    server_scale(&ferrid, tmp.path(), &opts).await?;
    println!();
    audit_comparison(&ferrid, &tmp.path().join("audit"), &opts).await
}

/// Server memory with `--server-entries` entries, and a restart on them.
async fn server_scale(ferrid: &Path, dir: &Path, opts: &Opts) -> Result<()> {
    eprintln!("server memory with {} entries …", opts.server_entries);
    let settle = Duration::from_secs(opts.settle);
    let s = scale::run(ferrid, &dir.join("scale"), opts.server_entries, settle).await?;
    println!("{}", s.report());
    Ok(())
}

/// Issuance throughput through the admin API with the audit log on and off: the same
/// clients against two fresh servers, alternating twice so drift on a shared machine
/// hits both alike.
async fn audit_comparison(ferrid: &Path, dir: &Path, opts: &Opts) -> Result<()> {
    let dur = Duration::from_secs(opts.seconds);
    let clients = opts.issuance_clients;
    let mut rows = Vec::new();
    let mut best: std::collections::BTreeMap<(&str, bool), f64> = Default::default();
    for round in 0..2 {
        for audit in [true, false] {
            let d = dir.join(format!("{round}-{audit}"));
            std::fs::create_dir_all(&d)?;
            let extra = if audit { "" } else { "[audit]\nenabled = false\n" };
            let server = Proc::server_with(ferrid, &d, extra)?;
            for kind in ["MintJwtSvid", "MintX509Svid"] {
                eprintln!(
                    "{kind} via the admin API, audit {}, {clients} clients, {}s …",
                    if audit { "on" } else { "off" },
                    opts.seconds
                );
                let r = issuance(&server.admin_socket, clients, dur, kind == "MintJwtSvid").await?;
                let tput = r.calls as f64 / r.elapsed.as_secs_f64();
                let e = best.entry((kind, audit)).or_default();
                *e = e.max(tput);
                rows.push(r.row(
                    &format!(
                        "{kind} (admin API), audit {}, round {}",
                        if audit { "on" } else { "off" },
                        round + 1
                    ),
                    clients,
                ));
            }
            drop(server);
        }
    }
    println!("| measurement | clients | calls | throughput (/s) | p50 | p99 | max |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for r in &rows {
        println!("{r}");
    }
    println!();
    for kind in ["MintJwtSvid", "MintX509Svid"] {
        let (on, off) = (best[&(kind, true)], best[&(kind, false)]);
        println!(
            "{kind}: best of two rounds {on:.0}/s with the audit log, {off:.0}/s without: {:+.1} %.",
            (on / off - 1.0) * 100.0
        );
    }
    Ok(())
}

/// `clients` admin connections minting back to back for `dur`.
async fn issuance(socket: &Path, clients: usize, dur: Duration, jwt: bool) -> Result<Latency> {
    let mut conns = Vec::with_capacity(clients);
    for i in 0..clients {
        let mut c = admin_client(socket).await?;
        mint(&mut c, jwt, i, 0).await?;
        conns.push(c);
    }
    let start = Arc::new(tokio::sync::Barrier::new(clients + 1));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, mut c) in conns.into_iter().enumerate() {
        let start = start.clone();
        tasks.spawn(async move {
            start.wait().await;
            let until = Instant::now() + dur;
            let mut lat = Vec::new();
            let mut n = 0;
            while Instant::now() < until {
                n += 1;
                let t = Instant::now();
                mint(&mut c, jwt, i, n).await?;
                lat.push(t.elapsed());
            }
            anyhow::Ok(lat)
        });
    }
    start.wait().await;
    let began = Instant::now();
    collect(tasks, began).await
}

async fn mint(c: &mut AdminClient<Channel>, jwt: bool, client: usize, n: usize) -> Result<()> {
    let spiffe_id = format!("spiffe://{TD}/issue/{client}/{n}");
    if jwt {
        let r = c
            .mint_jwt_svid(apb::MintJwtSvidRequest { spiffe_id, audience: vec!["bench".into()], ttl: 0 })
            .await?
            .into_inner();
        ensure!(!r.token.is_empty(), "empty JWT-SVID");
    } else {
        // A CSR-less request: the server generates the key too, as `ferrid x509 mint` does.
        let r = c
            .mint_x509_svid(apb::MintX509SvidRequest { spiffe_id, ..Default::default() })
            .await?
            .into_inner();
        ensure!(r.svid.is_some(), "no X.509-SVID");
    }
    Ok(())
}

/// A child `ferrid` process, killed on drop.
struct Proc {
    child: Child,
    admin_socket: PathBuf,
    node: String,
    socket: PathBuf,
    agent_id: String,
    log: PathBuf,
    cfg: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Proc {
    /// SIGTERM and a graceful exit (so profilers wrapping the binary can write their
    /// output), then SIGKILL after 30 s.
    fn stop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Proc {
    fn server(ferrid: &Path, dir: &Path) -> Result<Proc> {
        Self::server_with(ferrid, dir, "")
    }

    /// A server whose configuration ends with `extra` (TOML sections).
    fn server_with(ferrid: &Path, dir: &Path, extra: &str) -> Result<Proc> {
        let node = format!("127.0.0.1:{}", free_port()?);
        let admin_socket = dir.join("admin.sock");
        let cfg = dir.join("server.toml");
        std::fs::write(
            &cfg,
            format!(
                "trust_domain = \"{TD}\"\ndata_dir = \"{d}/server\"\nbind_address = \"{node}\"\n\
                 health_address = \"\"\nadmin_socket = \"{s}\"\n[log]\nlevel = \"warn\"\n{extra}",
                d = dir.display(),
                s = admin_socket.display()
            ),
        )?;
        let log = dir.join("server.log");
        let child = Command::new(ferrid)
            .args(["server", "--config"])
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting ferrid server")?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::os::unix::net::UnixStream::connect(&admin_socket).is_err() {
            ensure!(Instant::now() < deadline, "server did not start; see {}", log.display());
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Proc { child, admin_socket, node, socket: PathBuf::new(), agent_id: String::new(), log, cfg })
    }

    async fn agent(
        ferrid: &Path,
        server: &Proc,
        admin: &mut AdminClient<Channel>,
        dir: &Path,
    ) -> Result<Proc> {
        std::fs::create_dir_all(dir)?;
        let tok = admin.create_join_token(apb::CreateJoinTokenRequest { ttl: 0 }).await?.into_inner();
        let bundle = admin.get_bundle(apb::GetBundleRequest {}).await?.into_inner();
        let pem = pem::encode_many(
            &bundle
                .x509_authorities
                .iter()
                .map(|der| pem::Pem::new("CERTIFICATE", der.clone()))
                .collect::<Vec<_>>(),
        );
        let bundle_file = dir.join("bundle.pem");
        std::fs::write(&bundle_file, pem)?;
        let socket = dir.join("api.sock");
        let cfg = dir.join("agent.toml");
        std::fs::write(
            &cfg,
            format!(
                "trust_domain = \"{TD}\"\nserver_address = \"{}\"\ndata_dir = \"{}\"\nsocket_path = \"{}\"\n\
                 join_token = \"{}\"\ntrust_bundle_file = \"{}\"\n[log]\nlevel = \"ferrid_agent=debug,warn\"\n",
                server.node,
                dir.join("data").display(),
                socket.display(),
                tok.token,
                bundle_file.display()
            ),
        )?;
        let log = dir.join("agent.log");
        let child = Command::new(ferrid)
            .args(["agent", "--config"])
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting ferrid agent")?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while !std::fs::read_to_string(&log).unwrap_or_default().contains("node attested") {
            ensure!(Instant::now() < deadline, "agent did not attest; see {}", log.display());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Proc {
            child,
            admin_socket: PathBuf::new(),
            node: String::new(),
            socket,
            agent_id: tok.agent_id,
            log,
            cfg,
        })
    }

    /// Stops this agent and starts it again on the same configuration and data
    /// directory (it resumes with its saved SVID).
    fn restart_agent(&mut self, ferrid: &Path) -> Result<()> {
        self.stop();
        self.child = Command::new(ferrid)
            .args(["agent", "--config"])
            .arg(&self.cfg)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&self.log)?)
            .spawn()
            .context("restarting ferrid agent")?;
        Ok(())
    }

    fn rss_kib(&self) -> Result<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).context("no VmRSS")?;
        let kib: f64 = line.split_whitespace().nth(1).context("VmRSS value")?.parse()?;
        Ok(kib)
    }
}

async fn uds_channel(path: &Path) -> Result<Channel> {
    let path = path.to_owned();
    Ok(tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let p = path.clone();
            async move { tokio::net::UnixStream::connect(p).await.map(hyper_util::rt::TokioIo::new) }
        }))
        .await?)
}

async fn admin_client(socket: &Path) -> Result<AdminClient<Channel>> {
    Ok(AdminClient::new(uds_channel(socket).await?))
}

fn workload_client(ch: Channel) -> SpiffeWorkloadApiClient<Channel> {
    SpiffeWorkloadApiClient::new(ch).max_decoding_message_size(256 << 20)
}

fn with_header<T>(msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert("workload.spiffe.io", tonic::metadata::MetadataValue::from_static("true"));
    r
}

async fn create_entry(
    admin: &mut AdminClient<Channel>,
    parent: &str,
    path: &str,
    unix_selector: &str,
) -> Result<String> {
    let e = tpb::Entry {
        spiffe_id: format!("spiffe://{TD}/{path}"),
        parent_id: parent.to_owned(),
        selectors: vec![tpb::Selector { r#type: "unix".into(), value: unix_selector.to_owned() }],
        ..Default::default()
    };
    Ok(admin.create_entry(apb::CreateEntryRequest { entry: Some(e) }).await?.into_inner().id)
}

/// Waits until this process is served `n` X.509-SVIDs.
async fn wait_for_svids(socket: &Path, n: usize) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(ch) = uds_channel(socket).await {
            let mut c = workload_client(ch);
            if let Ok(resp) = c.fetch_x509svid(with_header(wpb::X509svidRequest {})).await {
                let mut s = resp.into_inner();
                if let Some(Ok(m)) = s.next().await
                    && m.svids.len() >= n
                {
                    return Ok(());
                }
            }
        }
        ensure!(Instant::now() < deadline, "the agent never served {n} SVIDs");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[derive(Debug, Clone, Copy)]
enum Call {
    X509,
    Jwt,
}

struct Latency {
    calls: usize,
    elapsed: Duration,
    p50: Duration,
    p99: Duration,
    max: Duration,
}

impl Latency {
    fn row(&self, what: &str, clients: usize) -> String {
        format!(
            "| {what} | {clients} | {} | {:.0} | {} | {} | {} |",
            self.calls,
            self.calls as f64 / self.elapsed.as_secs_f64(),
            fmt_us(self.p50),
            fmt_us(self.p99),
            fmt_us(self.max)
        )
    }
}

fn fmt_us(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us >= 10_000.0 { format!("{:.1} ms", us / 1000.0) } else { format!("{us:.0} µs") }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// `clients` tasks, each on its own connection, calling back to back for `dur`.
async fn latency(socket: &Path, clients: usize, dur: Duration, call: Call) -> Result<Latency> {
    let mut conns = Vec::with_capacity(clients);
    for _ in 0..clients {
        conns.push(workload_client(uds_channel(socket).await?));
    }
    // Warm every connection once (HTTP/2 handshake, the agent's digest cache).
    for c in &mut conns {
        one_call(c, call).await?;
    }
    let start = Arc::new(tokio::sync::Barrier::new(clients + 1));
    let mut tasks = tokio::task::JoinSet::new();
    for mut c in conns {
        let start = start.clone();
        tasks.spawn(async move {
            start.wait().await;
            let until = Instant::now() + dur;
            let mut lat = Vec::new();
            while Instant::now() < until {
                let t = Instant::now();
                one_call(&mut c, call).await?;
                lat.push(t.elapsed());
            }
            anyhow::Ok(lat)
        });
    }
    start.wait().await;
    let began = Instant::now();
    collect(tasks, began).await
}

/// Joins the client tasks and summarises every latency they recorded.
async fn collect(mut tasks: tokio::task::JoinSet<Result<Vec<Duration>>>, began: Instant) -> Result<Latency> {
    let mut all = Vec::new();
    while let Some(r) = tasks.join_next().await {
        all.extend(r??);
    }
    let elapsed = began.elapsed();
    all.sort_unstable();
    Ok(Latency {
        calls: all.len(),
        elapsed,
        p50: percentile(&all, 0.50),
        p99: percentile(&all, 0.99),
        max: all.last().copied().unwrap_or_default(),
    })
}

/// `clients` connections, together making `rate` calls a second, each client on its own
/// fixed period with a random phase; records every call's latency.
async fn open_loop(socket: &Path, clients: usize, rate: u64, dur: Duration, call: Call) -> Result<Latency> {
    let mut conns = Vec::with_capacity(clients);
    for _ in 0..clients {
        let mut c = workload_client(uds_channel(socket).await?);
        one_call(&mut c, call).await?;
        conns.push(c);
    }
    let period = Duration::from_secs_f64(clients as f64 / rate.max(1) as f64);
    let began = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, mut c) in conns.into_iter().enumerate() {
        // Spread the phases evenly: client i starts at i/clients of a period.
        let phase = period.mul_f64(i as f64 / clients as f64);
        tasks.spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + phase, period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let until = Instant::now() + dur;
            let mut lat = Vec::new();
            loop {
                tick.tick().await;
                if Instant::now() >= until {
                    break;
                }
                let t = Instant::now();
                one_call(&mut c, call).await?;
                lat.push(t.elapsed());
            }
            anyhow::Ok(lat)
        });
    }
    collect(tasks, began).await
}

async fn one_call(c: &mut SpiffeWorkloadApiClient<Channel>, call: Call) -> Result<()> {
    match call {
        Call::X509 => {
            let mut s = c.fetch_x509svid(with_header(wpb::X509svidRequest {})).await?.into_inner();
            match s.next().await {
                Some(Ok(m)) if !m.svids.is_empty() => Ok(()),
                other => bail!("unexpected FetchX509SVID answer: {other:?}"),
            }
        }
        Call::Jwt => {
            let r = c
                .fetch_jwtsvid(with_header(wpb::JwtsvidRequest {
                    audience: vec!["bench".into()],
                    spiffe_id: String::new(),
                }))
                .await?
                .into_inner();
            ensure!(!r.svids.is_empty(), "empty FetchJWTSVID answer");
            Ok(())
        }
    }
}

struct Propagation {
    n: usize,
    p50: Duration,
    p99: Duration,
    max: Duration,
}

/// Creates an entry for this uid and times its SVID's arrival on an open stream; then
/// deletes it and waits for it to leave, so every sample starts from the same state.
async fn propagation(
    admin: &mut AdminClient<Channel>,
    parent: &str,
    socket: &Path,
    uid: u32,
    samples: usize,
) -> Result<Propagation> {
    let mut c = workload_client(uds_channel(socket).await?);
    let mut stream = c.fetch_x509svid(with_header(wpb::X509svidRequest {})).await?.into_inner();
    let first = stream.next().await.context("stream closed")??;
    let base = first.svids.len();
    let mut lat = Vec::with_capacity(samples);
    for i in 0..samples {
        let id = format!("spiffe://{TD}/bench/propagation/{i}");
        let sent = Instant::now();
        let entry_id =
            create_entry(admin, parent, &format!("bench/propagation/{i}"), &format!("uid:{uid}")).await?;
        loop {
            let m = tokio::time::timeout(Duration::from_secs(30), stream.next())
                .await
                .context("no update within 30 s")?
                .context("stream closed")??;
            if m.svids.iter().any(|s| s.spiffe_id == id) {
                break;
            }
        }
        // From issuing CreateEntry (so the datastore commit is included) to the SVID
        // arriving on the workload's stream.
        lat.push(sent.elapsed());
        admin.delete_entry(apb::DeleteEntryRequest { id: entry_id }).await?;
        loop {
            let m = tokio::time::timeout(Duration::from_secs(30), stream.next())
                .await
                .context("no update within 30 s")?
                .context("stream closed")??;
            if m.svids.len() == base {
                break;
            }
        }
    }
    lat.sort_unstable();
    Ok(Propagation {
        n: lat.len(),
        p50: percentile(&lat, 0.5),
        p99: percentile(&lat, 0.99),
        max: lat.last().copied().unwrap_or_default(),
    })
}

/// Time from the admin API's Revoke call (what `ferrid revoke --jti` sends) to a relying
/// party built on ferrid-validate refusing the token: the server signs the SET, commits
/// it to SQLite and publishes it; the relying party's gRPC watch receives it, verifies
/// it against the JWT bundle and applies it. The relying party checks the token every
/// 200 µs, so that is the resolution.
async fn revocation(admin: &mut AdminClient<Channel>, node: &str, samples: usize) -> Result<Propagation> {
    let td = ferrid_types::TrustDomain::new(TD)?;
    let b = admin.get_bundle(apb::GetBundleRequest {}).await?.into_inner();
    let bundle = ferrid_validate::TrustBundle::from_spiffe_json(td.clone(), &b.spiffe_bundle_json)?;
    let revocations = Arc::new(ferrid_validate::RevocationSet::new(Duration::from_secs(60)));
    let feed = ferrid_validate::feeds::Feed {
        trust_domain: td.clone(),
        bundles: Arc::new(ferrid_validate::BundleSet::of([bundle.clone()])),
        revocations: revocations.clone(),
        clock: Arc::new(ferrid_types::SystemClock),
    };
    let watch = tokio::spawn(ferrid_validate::feeds::watch::run(feed, format!("https://{node}")));
    let opts = ferrid_validate::JwtOptions::new("bench");
    let now = || ferrid_types::Clock::unix(&ferrid_types::SystemClock);
    let deadline = Instant::now() + Duration::from_secs(30);
    while revocations.last_heard().is_none() {
        ensure!(Instant::now() < deadline, "the revocation watch did not connect");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut lat = Vec::with_capacity(samples);
    for i in 0..samples {
        let t = admin
            .mint_jwt_svid(apb::MintJwtSvidRequest {
                spiffe_id: format!("spiffe://{TD}/bench/revoked/{i}"),
                audience: vec!["bench".into()],
                ttl: 300,
            })
            .await?
            .into_inner();
        let v = ferrid_validate::validate_jwt_svid(&t.token, &bundle.jwt, &td, &opts, now())?;
        revocations.check_jwt(&v, now())?;
        let sent = Instant::now();
        admin
            .revoke(apb::RevokeRequest {
                target: Some(apb::revoke_request::Target::Jti(t.jti.clone())),
                reason: "benchmark".into(),
            })
            .await?;
        while revocations.check_jwt(&v, now()).is_ok() {
            ensure!(sent.elapsed() < Duration::from_secs(30), "token {} still accepted after 30 s", t.jti);
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        lat.push(sent.elapsed());
    }
    watch.abort();
    lat.sort_unstable();
    Ok(Propagation {
        n: lat.len(),
        p50: percentile(&lat, 0.5),
        p99: percentile(&lat, 0.99),
        max: lat.last().copied().unwrap_or_default(),
    })
}

struct Memory {
    n: usize,
    base_kib: f64,
    loaded_kib: f64,
    per_svid_kib: f64,
    restarted_kib: f64,
    restarted_per_svid_kib: f64,
}

/// Gives `agent` `n` entries (selectors no process here matches, so only the cache is
/// measured, not responses), waits until it has minted them all, and compares RSS.
async fn memory(
    admin: &mut AdminClient<Channel>,
    agent: &mut Proc,
    ferrid: &Path,
    n: usize,
    settle: Duration,
) -> Result<Memory> {
    let log = agent.log.clone();
    let wait_for_cache = |want: usize| {
        let log = log.clone();
        async move {
            let needle = format!("SVID cache updated svids={want}");
            let deadline = Instant::now() + Duration::from_secs(600);
            while !std::fs::read_to_string(&log).unwrap_or_default().contains(&needle) {
                ensure!(
                    Instant::now() < deadline,
                    "the agent never cached {want} SVIDs; see {}",
                    log.display()
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            // Idle long enough for the allocator to hand freed pages back (jemalloc's
            // default decay is 10 s): resident memory, not transient peaks.
            tokio::time::sleep(settle).await;
            anyhow::Ok(())
        }
    };
    // One entry first, so the baseline includes a working cache and connection.
    create_entry(admin, &agent.agent_id, "bench/mem/base", "uid:4000000000").await?;
    wait_for_cache(1).await?;
    let base_kib = agent.rss_kib()?;
    for i in 0..n {
        create_entry(
            admin,
            &agent.agent_id,
            &format!("bench/mem/{i}"),
            &format!("uid:{}", 3_000_000_000u64 + i as u64),
        )
        .await?;
    }
    wait_for_cache(n + 1).await?;
    let loaded_kib = agent.rss_kib()?;
    // The same agent restarted: all N entries arrive in one sync, without the history
    // of N growing full-state pushes behind it.
    agent.restart_agent(ferrid)?;
    wait_for_cache(n + 1).await?;
    let restarted_kib = agent.rss_kib()?;
    Ok(Memory {
        n,
        base_kib,
        loaded_kib,
        per_svid_kib: (loaded_kib - base_kib) / n as f64,
        restarted_kib,
        restarted_per_svid_kib: (restarted_kib - base_kib) / n as f64,
    })
}
