//! `ferrid-bench`: measures Ferrid by driving the real `ferrid server` and `ferrid agent`
//! binaries over their real sockets, the way workloads and operators use them.
//!
//! ```sh
//! bash scripts/bench.sh            # builds in release mode, runs everything
//! bash scripts/bench.sh --quick    # seconds, for CI: proves the harness works
//! ```
//!
//! Measures, in this order:
//! - the issuance limit (issue 9, [`issuance`]): raw ECDSA P-256 sign and verify and
//!   in-process minting, before any process of ours starts;
//! - server cold start to ready ([`startup`]): spawning `ferrid server` on a fresh data
//!   directory, and restarting it on the existing one, until `GET /ready` answers 200
//!   (`--cold-start-only` runs just this);
//! - issuance through the server ([`issuance`]; `--issuance-only` runs just this and
//!   the limit): X.509-SVID and JWT-SVID issuance, one a call and batched, over the
//!   node API's mutual TLS at several concurrencies, against the default server and one
//!   without its audit log; and the same X.509 workload against OpenBao's PKI engine
//!   (skipped under `--quick` or when no `bao` binary is found);
//! - Workload API latency from the agent's cache (FetchX509SVID: open the stream and
//!   take the first message; FetchJWTSVID: unary, served from the JWT cache) with 1,
//!   100 and 1,000 concurrent clients, each on its own connection;
//! - entry propagation: from the admin `CreateEntry` call returning to the new SVID
//!   arriving on an already open FetchX509SVID stream;
//! - revocation propagation: from the admin `Revoke` call (what `ferrid revoke --jti`
//!   sends) to a ferrid-validate relying party on the gRPC watch refusing the token
//!   (`--revocation-only` runs just this);
//! - agent memory per cached X.509-SVID (resident-set growth of an agent process
//!   that receives N entries, divided by N);
//! - server memory with 100,000 registration entries (`--scale-only`), the rate
//!   `BatchCreateEntry` stores them at, and a restart on them ([`scale`]);
//! - issuance throughput with the audit log on and off (`--audit-only` runs just this):
//!   two servers, one with `[audit] enabled = false`, each minting JWT- and X.509-SVIDs
//!   through the admin API from concurrent clients, back to back.
//!
//! Every result is a [`report::Section`] (a named Markdown table), printed to stdout as
//! it is ready. A full run then writes them into `docs/benchmarks.md` between the
//! `<!-- bench:begin -->` and `<!-- bench:end -->` markers, with the date, machine, load
//! average at the start and the end, git commit and command line, and draws the
//! issuance chart ([`chart`]) to `docs/bench/issuance.svg`. `--quick` writes the same to
//! `target/bench-report/` instead, so CI exercises the writer without touching the
//! repository; `--report <path>` writes elsewhere (also for the `--*-only` modes, which
//! otherwise write nothing).
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

mod chart;
mod ha;
mod issuance;
mod report;
mod scale;
mod startup;

use report::{Report, Section};

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
    /// Server start-up samples (each a cold start and a warm restart).
    #[arg(long, default_value_t = 5)]
    start_samples: usize,
    /// Only the server cold start and warm restart.
    #[arg(long)]
    cold_start_only: bool,
    /// Only the PostgreSQL measurements: propagation across two servers on one
    /// database, issuance against SQLite, restart with `--server-entries` entries.
    #[arg(long)]
    ha_only: bool,
    /// Write the report (Markdown, with the chart at `bench/issuance.svg` beside it)
    /// here. Default: `docs/benchmarks.md` for a full run, `target/bench-report/
    /// benchmarks.md` under `--quick`, nowhere for the `--*-only` modes. The file's text
    /// outside the generated block comes from `docs/benchmarks.md`.
    #[arg(long, value_name = "PATH")]
    report: Option<PathBuf>,
}

impl Opts {
    /// Whether only part of the benchmarks runs (a `--*-only` mode).
    fn partial(&self) -> bool {
        self.audit_only
            || self.revocation_only
            || self.issuance_only
            || self.scale_only
            || self.cold_start_only
            || self.ha_only
    }
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
        opts.start_samples = 2;
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
    let root = report::workspace_root();
    let dest = report::destination(&root, opts.report.as_deref(), opts.quick, opts.partial());
    // Date, machine, load average and commit, before anything runs.
    let mut report = Report::start(&root, opts.quick);
    let tmp = tempfile::tempdir()?;
    if opts.audit_only {
        report.extend(audit_comparison(&ferrid, tmp.path(), &opts).await?);
        return finish(&report, dest.as_deref(), &root, None);
    }
    if opts.cold_start_only {
        report.add(startup::run(&ferrid, tmp.path(), opts.start_samples).await?.section());
        return finish(&report, dest.as_deref(), &root, None);
    }
    let uid = nix::unistd::getuid().as_raw();
    if opts.ha_only {
        report.extend(ha_run(&ferrid, tmp.path(), &opts).await?);
        return finish(&report, dest.as_deref(), &root, None);
    }
    if opts.scale_only {
        report.add(server_scale(&ferrid, tmp.path(), &opts).await?);
        return finish(&report, dest.as_deref(), &root, None);
    }
    if opts.revocation_only {
        eprintln!("starting ferrid server …");
        let server = Proc::server(&ferrid, tmp.path())?;
        let mut admin = admin_client(&server.admin_socket).await?;
        eprintln!("revocation propagation, {} samples …", opts.revocation_samples);
        let r = revocation(&mut admin, &server.node, opts.revocation_samples).await?;
        let mut s = Section::new("Revocation propagation", PROPAGATION_HEADERS);
        s.row(r.row(REVOCATION));
        report.add(s);
        return finish(&report, dest.as_deref(), &root, None);
    }
    // The raw limit first, while nothing else of ours runs.
    let raw = issuance::raw_limits(Duration::from_secs(opts.raw_seconds)).await?;
    // Then server start-up, before any long-lived server of ours exists.
    if !opts.issuance_only {
        let started = startup::run(&ferrid, &tmp.path().join("startup"), opts.start_samples).await?;
        report.add(started.section());
    }
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
    report.extend(issued.sections());
    let chart = issued.chart();
    if opts.issuance_only {
        return finish(&report, dest.as_deref(), &root, Some(chart));
    }

    // Agent A serves the latency and propagation clients: one entry for this uid.
    let agent_a = Proc::agent(&ferrid, &server, &mut admin, &tmp.path().join("a")).await?;
    create_entry(&mut admin, &agent_a.agent_id, "bench/client", &format!("uid:{uid}")).await?;
    let socket = agent_a.socket.clone();
    wait_for_svids(&socket, 1).await?;

    let mut workload = Section::new("Workload API from the agent's cache", LATENCY_HEADERS);
    let levels: &[usize] = if opts.quick { &[1, 10] } else { &[1, 100, 1000] };
    // Open loop: every client connected, together calling `rate` times a second at
    // random phases — how workloads behave (they fetch at start and on rotation), and
    // what latency one call sees when the agent is not saturated.
    for &clients in levels {
        for (call, name) in [(Call::X509, "FetchX509SVID"), (Call::Jwt, "FetchJWTSVID")] {
            eprintln!("{name}, {clients} clients, {} calls/s in total, for {}s …", opts.rate, opts.seconds);
            let r = open_loop(&socket, clients, opts.rate, Duration::from_secs(opts.seconds), call).await?;
            workload.row(r.row(&format!("{name} (open loop, {}/s)", opts.rate), clients));
        }
    }
    // Closed loop: every client calls back to back — the saturation throughput, where
    // latency is simply clients ÷ throughput.
    for &clients in levels {
        eprintln!("FetchX509SVID with {clients} clients for {}s …", opts.seconds);
        let r = latency(&socket, clients, Duration::from_secs(opts.seconds), Call::X509).await?;
        workload.row(r.row("FetchX509SVID (closed loop)", clients));
        eprintln!("FetchJWTSVID with {clients} clients for {}s …", opts.seconds);
        let r = latency(&socket, clients, Duration::from_secs(opts.seconds), Call::Jwt).await?;
        workload.row(r.row("FetchJWTSVID (closed loop)", clients));
    }
    report.add(workload);

    let mut propagations = Section::new("Entry and revocation propagation", PROPAGATION_HEADERS);
    eprintln!("entry propagation, {} samples …", opts.propagation_samples);
    let prop = propagation(&mut admin, &agent_a.agent_id, &socket, uid, opts.propagation_samples).await?;
    propagations.row(prop.row("entry propagation (CreateEntry → SVID on open stream)"));
    eprintln!("revocation propagation, {} samples …", opts.revocation_samples);
    let revo = revocation(&mut admin, &server.node, opts.revocation_samples).await?;
    propagations.row(revo.row(REVOCATION));
    report.add(propagations);

    // Agent B: a fresh agent process that receives N entries, for its memory per SVID.
    eprintln!("agent memory with {} entries …", opts.memory_entries);
    let mut agent_b = Proc::agent(&ferrid, &server, &mut admin, &tmp.path().join("b")).await?;
    let mem =
        memory(&mut admin, &mut agent_b, &ferrid, opts.memory_entries, Duration::from_secs(opts.settle))
            .await?;
    report.add(mem.section());
    drop(agent_b);
    drop(agent_a);
    drop(server);
    report.add(server_scale(&ferrid, tmp.path(), &opts).await?);
    report.extend(ha_run(&ferrid, tmp.path(), &opts).await?);
    report.extend(audit_comparison(&ferrid, &tmp.path().join("audit"), &opts).await?);
    finish(&report, dest.as_deref(), &root, Some(chart))
}

/// Writes the report to `dest` (if any), with `chart` drawn beside it.
fn finish(report: &Report, dest: Option<&Path>, root: &Path, chart: Option<chart::Chart>) -> Result<()> {
    let Some(dest) = dest else { return Ok(()) };
    let svg = chart.map(|c| c.svg()).transpose()?.flatten();
    report.write(dest, &root.join("docs/benchmarks.md"), svg.as_deref())
}

const LATENCY_HEADERS: &[&str] = &["measurement", "clients", "calls", "throughput (/s)", "p50", "p99", "max"];
const PROPAGATION_HEADERS: &[&str] = &["measurement", "samples", "p50", "p99", "max"];
const REVOCATION: &str =
    "revocation propagation (`ferrid revoke --jti` → refused by a ferrid-validate relying party)";

/// The PostgreSQL measurements ([`ha`]).
async fn ha_run(ferrid: &Path, dir: &Path, opts: &Opts) -> Result<Vec<Section>> {
    let settle = Duration::from_secs(opts.settle);
    let ha =
        ha::run(ferrid, &dir.join("ha"), opts.propagation_samples, opts.seconds, opts.server_entries, settle)
            .await?;
    Ok(ha.sections())
}

/// Server memory with `--server-entries` entries, and a restart on them.
async fn server_scale(ferrid: &Path, dir: &Path, opts: &Opts) -> Result<Section> {
    eprintln!("server memory with {} entries …", opts.server_entries);
    let settle = Duration::from_secs(opts.settle);
    let s = scale::run(ferrid, &dir.join("scale"), opts.server_entries, settle).await?;
    Ok(s.section())
}

/// Issuance throughput through the admin API with the audit log on and off: the same
/// clients against two fresh servers, alternating twice so drift on a shared machine
/// hits both alike.
async fn audit_comparison(ferrid: &Path, dir: &Path, opts: &Opts) -> Result<Vec<Section>> {
    let dur = Duration::from_secs(opts.seconds);
    let clients = opts.issuance_clients;
    let mut section = Section::new("Issuance through the admin API, audit log on and off", LATENCY_HEADERS);
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
                section.row(r.row(
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
    for kind in ["MintJwtSvid", "MintX509Svid"] {
        let (on, off) = (best[&(kind, true)], best[&(kind, false)]);
        section.note(format!(
            "{kind}: best of two rounds {on:.0}/s with the audit log, {off:.0}/s without: {:+.1} %.",
            (on / off - 1.0) * 100.0
        ));
    }
    Ok(vec![section])
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

/// Writes `dir/server.toml` for a server with its data under `dir/server`, the node API
/// on `node`, the health endpoint on `health` (empty: off) and the admin socket
/// `dir/admin.sock`, followed by `extra` (TOML sections). Returns the two paths.
pub(crate) fn server_config(dir: &Path, node: &str, health: &str, extra: &str) -> Result<(PathBuf, PathBuf)> {
    let admin_socket = dir.join("admin.sock");
    let cfg = dir.join("server.toml");
    std::fs::write(
        &cfg,
        format!(
            "trust_domain = \"{TD}\"\ndata_dir = \"{d}/server\"\nbind_address = \"{node}\"\n\
             health_address = \"{health}\"\nadmin_socket = \"{s}\"\n[log]\nlevel = \"warn\"\n{extra}",
            d = dir.display(),
            s = admin_socket.display()
        ),
    )
    .with_context(|| format!("writing {}", cfg.display()))?;
    Ok((cfg, admin_socket))
}

impl Proc {
    fn server(ferrid: &Path, dir: &Path) -> Result<Proc> {
        Self::server_with(ferrid, dir, "")
    }

    /// A server whose configuration ends with `extra` (TOML sections).
    fn server_with(ferrid: &Path, dir: &Path, extra: &str) -> Result<Proc> {
        let node = format!("127.0.0.1:{}", free_port()?);
        let (cfg, admin_socket) = server_config(dir, &node, "", extra)?;
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
    /// Calls per second.
    fn throughput(&self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64()
    }

    /// The cells under [`LATENCY_HEADERS`].
    fn row(&self, what: &str, clients: usize) -> [String; 7] {
        [
            what.to_owned(),
            clients.to_string(),
            self.calls.to_string(),
            format!("{:.0}", self.throughput()),
            fmt_us(self.p50),
            fmt_us(self.p99),
            fmt_us(self.max),
        ]
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

impl Propagation {
    /// The cells under [`PROPAGATION_HEADERS`].
    fn row(&self, what: &str) -> [String; 5] {
        [what.to_owned(), self.n.to_string(), fmt_us(self.p50), fmt_us(self.p99), fmt_us(self.max)]
    }
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
    // The server serves its feed to SVID holders only: the relying party follows it
    // with an X.509-SVID of its own (key generated by the server, kept in memory).
    let rp = admin
        .mint_x509_svid(apb::MintX509SvidRequest {
            spiffe_id: format!("spiffe://{TD}/bench/relying-party"),
            ttl: 3600,
            ..Default::default()
        })
        .await?
        .into_inner();
    let rp_svid = rp.svid.context("the server minted no SVID")?;
    let auth = ferrid_validate::feeds::FeedAuth::x509(Arc::new(ferrid_validate::tls::SvidResolver::new(
        rp_svid.cert_chain,
        rp.private_key,
    )?));
    let watch = tokio::spawn(ferrid_validate::feeds::watch::run(feed, format!("https://{node}"), auth));
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

impl Memory {
    fn section(&self) -> Section {
        let mib = |kib: f64| format!("{:.1} MiB", kib / 1024.0);
        let mut s = Section::new(
            "Agent memory per cached X.509-SVID",
            &["state", "RSS", "per SVID (entry included)"],
        );
        s.row(["1 entry (baseline)".to_owned(), mib(self.base_kib), "—".to_owned()]);
        s.row([
            format!("{} entries, created one at a time while the agent ran", self.n),
            mib(self.loaded_kib),
            format!("{:.2} KiB", self.per_svid_kib),
        ]);
        s.row([
            format!("same agent restarted with the {} entries in place", self.n),
            mib(self.restarted_kib),
            format!("{:.2} KiB", self.restarted_per_svid_kib),
        ]);
        s.note("Resident memory from `/proc/<pid>/status` once the agent has cached every SVID and idled.");
        s
    }
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
