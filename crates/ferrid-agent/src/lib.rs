//! The Ferrid node agent.
//!
//! - Attests its node to the server (join token for now) and keeps its agent SVID
//!   renewed; the SVID and its key are the only secrets it writes (mode 0600), so a
//!   restarted agent does not need a new token.
//! - Holds the server's entry watch open: created, changed and deleted entries are
//!   pushed to it; it reconnects with exponential backoff when the server goes away.
//! - Generates every workload key in memory, mints SVIDs for all authorized entries in
//!   batches and rotates each at half-life with ±10 % jitter; while the server is
//!   unreachable it keeps serving cached SVIDs until they expire.
//! - Serves the SPIFFE Workload API on a Unix socket ([`workload`]).
#![forbid(unsafe_code)]

pub mod config;
mod node_attest;
mod revoke;
mod workload;

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use ferrid_attest::WorkloadAttestor;
use ferrid_attest_k8s::K8sAttestor;
use ferrid_attest_unix::{UnixAttestor, UnixConfig};
use ferrid_ca::TrustBundle;
use ferrid_proto::node::v1::{self as npb, node_client::NodeClient};
use ferrid_types::{Clock, EntryId, KeyAlgorithm, RegistrationEntry, SpiffeId, TrustDomain};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tonic::transport::Channel;
use zeroize::Zeroizing;

pub use config::AgentConfig;

/// Most CSRs sent in one batch.
const BATCH: usize = 500;
/// How often the rotation loop looks at the cache when nothing wakes it.
const SYNC_TICK: Duration = Duration::from_secs(1);

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// A file or socket failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: std::io::Error,
    },
    /// Anything else, with a message that says what.
    #[error("{0}")]
    Other(String),
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> AgentError {
    let context = context.into();
    move |source| AgentError::Io { context, source }
}

/// An X.509-SVID held in memory with its key.
#[derive(Clone)]
pub(crate) struct CachedSvid {
    pub(crate) entry_revision: i64,
    pub(crate) spiffe_id: SpiffeId,
    pub(crate) hint: String,
    pub(crate) chain: Vec<Vec<u8>>,
    pub(crate) key: Arc<Zeroizing<Vec<u8>>>,
    pub(crate) not_after: i64,
    pub(crate) rotate_at: i64,
    /// The leaf's serial and notBefore, matched against revocations.
    pub(crate) serial: ferrid_types::Serial,
    pub(crate) not_before: i64,
    /// Covered by a revocation: replaced at the next sync, or dropped if it cannot be.
    pub(crate) revoked: bool,
}

/// The agent's own identity toward the server.
#[derive(Clone)]
struct AgentSvid {
    chain: Vec<Vec<u8>>,
    key: Arc<Zeroizing<Vec<u8>>>,
    not_before: i64,
    not_after: i64,
}

/// State shared by the agent's tasks and the Workload API.
pub(crate) struct Shared {
    cfg: AgentConfig,
    pub(crate) td: TrustDomain,
    server_id: SpiffeId,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) bundle: ArcSwap<Option<TrustBundle>>,
    pub(crate) entries: ArcSwap<Vec<RegistrationEntry>>,
    pub(crate) svids: ArcSwap<HashMap<EntryId, CachedSvid>>,
    agent_svid: ArcSwap<Option<AgentSvid>>,
    pub(crate) node: ArcSwap<Option<NodeClient<Channel>>>,
    /// The server's exchange API on the same mutual-TLS channel (token exchange for
    /// workloads).
    pub(crate) exchange:
        ArcSwap<Option<ferrid_proto::exchange::v1::exchange_client::ExchangeClient<Channel>>>,
    /// Bumped whenever what a workload sees may have changed.
    pub(crate) changes: watch::Sender<u64>,
    sync_now: Notify,
    /// The workload attestors: `unix` always, `k8s` with a `[k8s]` section.
    pub(crate) attestors: Vec<Arc<dyn WorkloadAttestor>>,
    /// JWT-SVIDs already minted, reused until half their life is gone.
    pub(crate) jwt_cache: workload::JwtCache,
    /// WIT-SVIDs and their keys, per entry revision, reused until half their life is gone.
    pub(crate) wit_cache: workload::WitCache,
}

impl Shared {
    pub(crate) fn notify(&self) {
        self.changes.send_modify(|v| *v += 1);
    }

    /// Ready once the agent has a bundle and has received its entries at least once.
    pub(crate) fn is_ready(&self) -> bool {
        self.bundle.load().is_some() && self.agent_svid.load().is_some()
    }
}

/// How long a graceful shutdown waits for in-flight requests before closing connections.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// A running agent.
pub struct AgentHandle {
    /// The Workload API socket.
    pub socket_path: PathBuf,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl std::fmt::Debug for AgentHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentHandle").field("socket_path", &self.socket_path).finish_non_exhaustive()
    }
}

impl AgentHandle {
    /// Stops the agent and removes its socket.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        ferrid_tls::serving::drain(&mut self.tasks, SHUTDOWN_GRACE).await;
        let _ = std::fs::remove_file(&self.socket_path);
    }

    /// Runs until `signal`, then shuts down.
    pub async fn run_until(self, signal: impl std::future::Future<Output = ()>) {
        signal.await;
        tracing::info!("agent shutting down");
        self.shutdown().await;
    }
}

const AGENT_SVID_FILE: &str = "agent_svid.pem";
const AGENT_KEY_FILE: &str = "agent_key.der";
const BUNDLE_FILE: &str = "bundle.json";

fn write_private(path: &Path, data: &[u8]) -> Result<(), AgentError> {
    ferrid_ca::write_atomic(path, data, 0o600).map_err(io_err(format!("writing {}", path.display())))
}

fn validity(der: &[u8]) -> Option<(i64, i64)> {
    let (_, c) = x509_parser::parse_x509_certificate(der).ok()?;
    Some((c.validity().not_before.timestamp(), c.validity().not_after.timestamp()))
}

fn load_saved_svid(dir: &Path, now: i64) -> Option<AgentSvid> {
    let pem_text = std::fs::read_to_string(dir.join(AGENT_SVID_FILE)).ok()?;
    let chain: Vec<Vec<u8>> =
        pem::parse_many(pem_text).ok()?.into_iter().map(pem::Pem::into_contents).collect();
    let key = std::fs::read(dir.join(AGENT_KEY_FILE)).ok()?;
    let (not_before, not_after) = validity(chain.first()?)?;
    (not_after > now).then(|| AgentSvid { chain, key: Arc::new(Zeroizing::new(key)), not_before, not_after })
}

fn save_svid(dir: &Path, s: &AgentSvid) -> Result<(), AgentError> {
    let pem_text: String =
        s.chain.iter().map(|c| pem::encode(&pem::Pem::new("CERTIFICATE", c.clone()))).collect();
    write_private(&dir.join(AGENT_KEY_FILE), &s.key)?;
    write_private(&dir.join(AGENT_SVID_FILE), pem_text.as_bytes())
}

fn bundle_from_proto(td: &TrustDomain, b: &ferrid_proto::types::v1::Bundle) -> Option<TrustBundle> {
    TrustBundle::from_spiffe_json(td.clone(), &b.spiffe_bundle_json)
        .map_err(|e| tracing::warn!(error = %e, "server sent an unreadable bundle"))
        .ok()
}

/// Starts the agent: binds the Workload API socket at once (callers get `Unavailable`
/// until the agent is ready), then attests and syncs in the background.
pub async fn start(
    cfg: AgentConfig,
    td: TrustDomain,
    clock: Arc<dyn Clock>,
) -> Result<AgentHandle, AgentError> {
    std::fs::create_dir_all(&cfg.data_dir).map_err(io_err(format!("creating {}", cfg.data_dir.display())))?;
    std::fs::set_permissions(&cfg.data_dir, std::fs::Permissions::from_mode(0o700))
        .map_err(io_err("restricting the data directory"))?;
    let now = clock.unix();
    // Trust: the last bundle the server sent, else the bootstrap bundle, else (only
    // when configured) nothing at all.
    let bundle = match std::fs::read(cfg.data_dir.join(BUNDLE_FILE)) {
        Ok(json) => Some(
            TrustBundle::from_spiffe_json(td.clone(), &json)
                .map_err(|e| AgentError::Other(format!("saved bundle {BUNDLE_FILE} is unreadable: {e}")))?,
        ),
        Err(_) => match &cfg.trust_bundle_file {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(io_err(format!("reading trust_bundle_file {}", p.display())))?;
                let roots: Vec<Vec<u8>> = pem::parse_many(text)
                    .map_err(|e| AgentError::Other(format!("trust_bundle_file {}: {e}", p.display())))?
                    .into_iter()
                    .filter(|p| p.tag() == "CERTIFICATE")
                    .map(pem::Pem::into_contents)
                    .collect();
                if roots.is_empty() {
                    return Err(AgentError::Other(format!(
                        "trust_bundle_file {} holds no certificate",
                        p.display()
                    )));
                }
                Some(TrustBundle {
                    trust_domain: td.clone(),
                    x509_authorities: roots,
                    jwt_authorities: vec![],
                    sequence: 0,
                    refresh_hint_secs: 0,
                })
            }
            None => {
                tracing::warn!("insecure_bootstrap: the server will be trusted blindly on first contact");
                None
            }
        },
    };
    let saved = load_saved_svid(&cfg.data_dir, now);
    let attestors = workload_attestors(&cfg)?;
    let (changes, _) = watch::channel(0);
    let shared = Arc::new(Shared {
        server_id: ferrid_types::server_id(&td),
        td,
        clock,
        bundle: ArcSwap::from_pointee(bundle),
        entries: ArcSwap::from_pointee(Vec::new()),
        svids: ArcSwap::from_pointee(HashMap::new()),
        agent_svid: ArcSwap::from_pointee(saved),
        node: ArcSwap::from_pointee(None),
        exchange: ArcSwap::from_pointee(None),
        changes,
        sync_now: Notify::new(),
        jwt_cache: workload::JwtCache::default(),
        wit_cache: workload::WitCache::default(),
        attestors,
        cfg,
    });

    let (shutdown, stop) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let socket_path = shared.cfg.socket_path.clone();
    workload::serve(shared.clone(), &socket_path, stop.clone(), &mut tasks).await?;
    {
        let shared = shared.clone();
        let stop = stop.clone();
        tasks.spawn(async move { node_loop(shared, stop).await });
    }
    {
        let shared = shared.clone();
        tasks.spawn(async move { sync_loop(shared, stop).await });
    }
    tracing::info!(socket = %socket_path.display(), server = %shared.cfg.server_address, "ferrid agent started");
    Ok(AgentHandle { socket_path, shutdown, tasks })
}

/// The workload attestors `cfg` enables.
fn workload_attestors(cfg: &AgentConfig) -> Result<Vec<Arc<dyn WorkloadAttestor>>, AgentError> {
    let mut out: Vec<Arc<dyn WorkloadAttestor>> = vec![Arc::new(UnixAttestor::new(UnixConfig {
        binary_digest: cfg.unix.binary_digest,
        ..UnixConfig::default()
    }))];
    if let Some(k8s) = &cfg.k8s {
        let attestor = K8sAttestor::new(k8s.attestor_config(|name| std::env::var(name).ok()))
            .map_err(|e| AgentError::Other(format!("invalid config: {e}")))?;
        out.push(Arc::new(attestor));
    }
    Ok(out)
}

fn jittered(base: Duration) -> Duration {
    let ms = u64::try_from(base.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(ms / 2 + rand::random_range(0..=ms / 2 + 1))
}

/// Keeps a session with the server alive, reconnecting with exponential backoff.
async fn node_loop(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut backoff = Duration::from_millis(500);
    loop {
        let result = tokio::select! {
            r = session(&shared) => r,
            _ = stop.changed() => return,
        };
        shared.node.store(Arc::new(None));
        shared.exchange.store(Arc::new(None));
        match result {
            Ok(()) => backoff = Duration::from_millis(500),
            Err(e) => {
                let wait = jittered(backoff);
                tracing::warn!(error = %e, retry_in = ?wait, "lost the server; serving cached SVIDs meanwhile");
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => return,
                }
                backoff = (backoff * 2).min(shared.cfg.max_backoff);
            }
        }
    }
}

fn tls_roots(shared: &Shared) -> Option<Vec<Vec<u8>>> {
    shared.bundle.load().as_ref().as_ref().map(|b| b.x509_authorities.clone())
}

fn client_tls(
    shared: &Shared,
    client: Option<(&[Vec<u8>], &[u8])>,
) -> Result<rustls_config::ClientConfig, String> {
    match tls_roots(shared) {
        Some(roots) => {
            ferrid_tls::client_config(&roots, shared.server_id.clone(), client).map_err(|e| e.to_string())
        }
        None => ferrid_tls::insecure_client_config(client).map_err(|e| e.to_string()),
    }
}

mod rustls_config {
    pub(crate) use ferrid_tls::rustls::ClientConfig;
}

/// Attests the node and returns the agent SVID and bundle. The attestation stream stays
/// open for the attestor's challenges (for example a nonce to put into a cloud-signed
/// document) until the server sends the result.
async fn attest(shared: &Shared) -> Result<(AgentSvid, Option<TrustBundle>), String> {
    let evidence = node_attest::evidence(&shared.cfg)?;
    let attestor = evidence.name();
    let payload = evidence.payload().await?;
    let (key, csr) =
        ferrid_ca::generate_key_and_csr(KeyAlgorithm::EcP256, None).map_err(|e| e.to_string())?;
    let channel = ferrid_tls::node_channel(&shared.cfg.server_address, client_tls(shared, None)?)
        .await
        .map_err(|e| format!("connecting to {}: {e}", shared.cfg.server_address))?;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let first = npb::AttestAgentRequest {
        step: Some(npb::attest_agent_request::Step::Params(npb::AttestParams {
            data: Some(npb::AttestationData { r#type: attestor.into(), payload }),
            csr,
        })),
    };
    tx.send(first).await.map_err(|_| "attestation stream closed")?;
    let mut stream = NodeClient::new(channel)
        .attest_agent(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(|s| format!("node attestation refused: {}", s.message()))?
        .into_inner();
    let result = loop {
        match stream.message().await.map_err(|s| format!("node attestation refused: {}", s.message()))? {
            Some(npb::AttestAgentResponse { step: Some(npb::attest_agent_response::Step::Result(r)) }) => {
                break r;
            }
            Some(npb::AttestAgentResponse { step: Some(npb::attest_agent_response::Step::Challenge(c)) }) => {
                let answer = evidence.respond(&c).await?;
                let step = npb::AttestAgentRequest {
                    step: Some(npb::attest_agent_request::Step::ChallengeResponse(answer)),
                };
                tx.send(step).await.map_err(|_| "the server closed the attestation stream")?;
            }
            _ => return Err(format!("the {attestor} attestation ended without a result")),
        }
    };
    drop(tx);
    let svid = result.svid.ok_or("server returned no agent SVID")?;
    let (not_before, not_after) =
        svid.cert_chain.first().and_then(|c| validity(c)).ok_or("unparsable agent SVID")?;
    tracing::info!(agent = %svid.spiffe_id, attestor, "node attested");
    let bundle = result.bundle.as_ref().and_then(|b| bundle_from_proto(&shared.td, b));
    Ok((AgentSvid { chain: svid.cert_chain, key: Arc::new(key), not_before, not_after }, bundle))
}

fn store_bundle(shared: &Shared, b: TrustBundle) {
    let changed = shared.bundle.load().as_ref().as_ref() != Some(&b);
    if changed {
        if let Err(e) = write_private(&shared.cfg.data_dir.join(BUNDLE_FILE), b.to_spiffe_json().as_bytes()) {
            tracing::warn!(error = %e, "could not save the bundle");
        }
        tracing::info!(sequence = b.sequence, "trust bundle updated");
        shared.bundle.store(Arc::new(Some(b)));
        shared.notify();
    }
}

/// One session: (attest if needed,) connect with mutual TLS, follow the watch, renew
/// the agent SVID at half-life (then reconnect with it).
async fn session(shared: &Shared) -> Result<(), String> {
    let now = shared.clock.unix();
    let current = shared.agent_svid.load_full();
    let agent = match current.as_ref() {
        Some(a) if a.not_after > now => a.clone(),
        _ => {
            let (a, bundle) = attest(shared).await?;
            save_svid(&shared.cfg.data_dir, &a).map_err(|e| e.to_string())?;
            if let Some(b) = bundle {
                store_bundle(shared, b);
            }
            shared.agent_svid.store(Arc::new(Some(a.clone())));
            a
        }
    };
    let tls = client_tls(shared, Some((&agent.chain, &agent.key)))?;
    let channel = ferrid_tls::node_channel(&shared.cfg.server_address, tls)
        .await
        .map_err(|e| format!("connecting to {}: {e}", shared.cfg.server_address))?;
    shared.exchange.store(Arc::new(Some(ferrid_proto::exchange::v1::exchange_client::ExchangeClient::new(
        channel.clone(),
    ))));
    let mut client = NodeClient::new(channel);
    let mut watch = client
        .watch_authorized(npb::WatchAuthorizedRequest {})
        .await
        .map_err(|s| format!("entry watch refused: {}", s.message()))?
        .into_inner();
    shared.node.store(Arc::new(Some(client.clone())));
    shared.sync_now.notify_one();
    let renew_at = agent.not_before + (agent.not_after - agent.not_before) / 2;
    let until_renew = Duration::from_secs(u64::try_from(renew_at - shared.clock.unix()).unwrap_or(0));
    let renew = tokio::time::sleep(until_renew);
    tokio::pin!(renew);
    loop {
        tokio::select! {
            msg = watch.message() => match msg {
                Ok(Some(m)) => apply_watch(shared, m),
                Ok(None) => return Err("the server closed the entry watch".into()),
                Err(s) if s.code() == tonic::Code::PermissionDenied => {
                    tracing::error!(reason = s.message(), "the server refuses this agent");
                    return Err(format!("refused: {}", s.message()));
                }
                Err(s) => return Err(format!("entry watch: {}", s.message())),
            },
            () = &mut renew => {
                let (key, csr) = ferrid_ca::generate_key_and_csr(KeyAlgorithm::EcP256, None).map_err(|e| e.to_string())?;
                let svid = client
                    .renew_agent(npb::RenewAgentRequest { csr })
                    .await
                    .map_err(|s| format!("renewing the agent SVID: {}", s.message()))?
                    .into_inner()
                    .svid
                    .ok_or("server returned no SVID")?;
                let (not_before, not_after) = svid.cert_chain.first().and_then(|c| validity(c)).ok_or("unparsable agent SVID")?;
                let a = AgentSvid { chain: svid.cert_chain, key: Arc::new(key), not_before, not_after };
                save_svid(&shared.cfg.data_dir, &a).map_err(|e| e.to_string())?;
                shared.agent_svid.store(Arc::new(Some(a)));
                tracing::info!(not_after, "agent SVID renewed");
                return Ok(());
            }
        }
    }
}

fn apply_watch(shared: &Shared, m: npb::WatchAuthorizedResponse) {
    let revoked = revoke::apply(shared, &revoke::index(&m.revocations), shared.clock.unix());
    if revoked > 0 {
        tracing::info!(credentials = revoked, "revocations applied");
        shared.sync_now.notify_one();
        shared.notify();
    }
    if let Some(b) = m.bundle.as_ref().and_then(|b| bundle_from_proto(&shared.td, b)) {
        store_bundle(shared, b);
    }
    let entries: Vec<RegistrationEntry> = m
        .entries
        .iter()
        .filter_map(|e| {
            ferrid_proto::entry_from_proto(e)
                .map_err(|err| tracing::warn!(entry = %e.id, error = %err, "ignoring an invalid entry from the server"))
                .ok()
        })
        .collect();
    if **shared.entries.load() != entries {
        tracing::info!(entries = entries.len(), "authorized entries updated");
        shared.entries.store(Arc::new(entries));
        shared.sync_now.notify_one();
        shared.notify();
    }
}

/// When to rotate an SVID valid from `nb` to `na`, received at `now`: at half of the
/// life left when it arrived, ±10 % of that half. The server backdates `nb` for clock
/// skew; counting from it would rotate a short-lived SVID (TTL under twice the backdate)
/// the moment it arrives, and then on every tick.
fn rotation_time(nb: i64, na: i64, now: i64) -> i64 {
    let nb = nb.max(now);
    let half = (na - nb) / 2;
    let spread = half / 10;
    nb + half + if spread > 0 { rand::random_range(-spread..=spread) } else { 0 }
}

/// Keeps one fresh SVID per authorized entry.
async fn sync_loop(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            () = shared.sync_now.notified() => {}
            () = tokio::time::sleep(SYNC_TICK) => {}
            _ = stop.changed() => return,
        }
        sync_once(&shared).await;
    }
}

async fn sync_once(shared: &Shared) {
    let now = shared.clock.unix();
    let entries = shared.entries.load_full();
    let mut svids = (**shared.svids.load()).clone();
    let before = svids.len();
    let by_id: HashMap<&EntryId, &RegistrationEntry> = entries.iter().map(|e| (&e.id, e)).collect();
    // Drop SVIDs of entries that are gone or changed, and expired ones.
    svids.retain(|id, s| s.not_after > now && by_id.get(id).is_some_and(|e| e.revision == s.entry_revision));
    let mut changed = svids.len() != before;
    let due: Vec<&RegistrationEntry> =
        entries.iter().filter(|e| svids.get(&e.id).is_none_or(|s| now >= s.rotate_at)).collect();
    let client = shared.node.load_full();
    if let (false, Some(client)) = (due.is_empty(), client.as_ref().as_ref()) {
        for chunk in due.chunks(BATCH) {
            let mut keys = Vec::with_capacity(chunk.len());
            let mut params = Vec::with_capacity(chunk.len());
            for e in chunk {
                match ferrid_ca::generate_key_and_csr(KeyAlgorithm::EcP256, Some(&e.spiffe_id)) {
                    Ok((key, csr)) => {
                        keys.push(Arc::new(key));
                        params.push(npb::X509SvidParams { entry_id: e.id.0.clone(), csr });
                    }
                    Err(err) => tracing::error!(error = %err, "key generation failed"),
                }
            }
            let resp =
                match client.clone().batch_mint_x509_svids(npb::BatchMintX509SvidsRequest { params }).await {
                    Ok(r) => r.into_inner(),
                    Err(s) => {
                        tracing::debug!(error = %s.message(), "minting failed; will retry");
                        break;
                    }
                };
            for ((r, key), e) in resp.results.into_iter().zip(keys).zip(chunk) {
                match r.svid {
                    Some(svid) if !svid.cert_chain.is_empty() => {
                        let leaf = match ferrid_validate::x509::read_leaf(&svid.cert_chain[0]) {
                            Ok(l) => l,
                            Err(err) => {
                                tracing::warn!(entry = %e.id, error = %err, "the server minted an unreadable X.509-SVID; dropped");
                                continue;
                            }
                        };
                        let (nb, na, serial) = (leaf.not_before, leaf.not_after, leaf.serial);
                        svids.insert(
                            e.id.clone(),
                            CachedSvid {
                                entry_revision: e.revision,
                                spiffe_id: e.spiffe_id.clone(),
                                hint: e.hint.clone(),
                                chain: svid.cert_chain,
                                key,
                                not_after: na,
                                rotate_at: rotation_time(nb, na, now),
                                serial,
                                not_before: nb,
                                revoked: false,
                            },
                        );
                        changed = true;
                    }
                    _ => {
                        tracing::warn!(entry = %e.id, code = r.error_code, error = %r.error_message, "server refused to mint")
                    }
                }
            }
        }
    }
    // Revoked SVIDs that could not be replaced are not served any longer.
    let before_drop = svids.len();
    svids.retain(|id, s| {
        if s.revoked {
            tracing::warn!(entry = %id, spiffe_id = %s.spiffe_id, "dropping a revoked X.509-SVID that could not be replaced");
        }
        !s.revoked
    });
    changed |= svids.len() != before_drop;
    if changed {
        tracing::debug!(svids = svids.len(), "SVID cache updated");
        shared.svids.store(Arc::new(svids));
        shared.notify();
    }
}

#[cfg(test)]
mod tests {
    use super::rotation_time;

    #[test]
    fn rotation_is_at_half_life_within_ten_percent() {
        for _ in 0..1000 {
            let t = rotation_time(1000, 1600, 900);
            assert!((1270..=1330).contains(&t), "{t}");
        }
        assert_eq!(rotation_time(0, 1, 0), 0);
    }

    #[test]
    fn a_backdated_not_before_does_not_rotate_at_once() {
        // A 6 s SVID backdated 10 s, received at 1000: rotate about 3 s later, not now.
        for _ in 0..1000 {
            let t = rotation_time(990, 1006, 1000);
            assert!((1003..=1003).contains(&t), "{t}");
        }
    }
}
