//! The Ferrid server: one trust domain's CA, the node API (TLS, then mutual TLS with
//! agent SVIDs) and the admin API (a local Unix socket), on an embedded SQLite
//! datastore.
//!
//! [`start`] brings everything up and returns a [`ServerHandle`]; the `ferrid` binary
//! only parses configuration and calls it.
#![forbid(unsafe_code)]

mod admin;
pub mod audit;
mod changes;
pub mod config;
pub mod datastore;
pub mod delegation;
mod error;
mod exchange;
mod follower;
mod health;
pub mod k8s_bundle;
mod metrics;
mod node;
pub mod policy;
pub mod revocation;
mod ssf;
mod state;

/// TLS helpers (re-exported from `ferrid-tls`).
pub use ferrid_tls as tls;

/// Connecting to a node API (re-exported from `ferrid-tls`).
pub mod client {
    pub use ferrid_tls::node_channel;
}

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ferrid_attest::{AttestError, Registry};
use ferrid_attest_join_token::{JoinTokenAttestor, JoinTokenSource};
use ferrid_ca::{Authority, CaConfig, DiskKeyStore, KeyStore, MemoryKeyStore, UpstreamCa, X509SvidRequest};
use ferrid_proto::admin::v1::admin_server::AdminServer;
use ferrid_proto::exchange::v1::exchange_server::ExchangeServer;
use ferrid_proto::node::v1::node_server::NodeServer;
use ferrid_store::Store;
use ferrid_types::config::ConfigError;
use ferrid_types::{Clock, JoinTokenRecord};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_stream::wrappers::ReceiverStream;

pub use config::{ServerConfig, ValidatedConfig};

use crate::state::Shared;
use crate::tls::TlsConn;

/// Name of the SQLite file inside the data directory.
pub use datastore::DATASTORE_FILE;
/// How often the background loop drives CA rotation and certificate renewal.
const TICK: Duration = Duration::from_secs(2);
/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// A file or socket operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A setting is wrong in a way only found at start (an unreadable `url_file`).
    #[error("invalid config: {0}")]
    Config(#[from] ConfigError),
    /// The datastore failed.
    #[error("datastore: {0}")]
    Store(#[from] ferrid_store::StoreError),
    /// The CA could not be loaded or created.
    #[error("CA: {0}")]
    Ca(#[from] ferrid_ca::CaError),
    /// TLS configuration failed.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ServerError {
    let context = context.into();
    move |source| ServerError::Io { context, source }
}

/// A running server.
#[derive(Debug)]
pub struct ServerHandle {
    /// Where the node API listens.
    pub node_addr: SocketAddr,
    /// The admin socket.
    pub admin_socket: PathBuf,
    /// Where health and metrics are served, if enabled.
    pub health_addr: Option<SocketAddr>,
    /// Where the SSF poll and bundle endpoints are served (HTTPS), if enabled.
    pub revocation_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl ServerHandle {
    /// Stops every listener and background task and waits for them.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        ferrid_tls::serving::drain(&mut self.tasks, SHUTDOWN_GRACE).await;
        let _ = std::fs::remove_file(&self.admin_socket);
    }

    /// Waits until `signal` resolves, then shuts down.
    pub async fn run_until(self, signal: impl std::future::Future<Output = ()>) {
        signal.await;
        tracing::info!("shutting down");
        self.shutdown().await;
    }
}

/// How long a graceful shutdown waits for in-flight requests before closing connections.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Join tokens looked up in the datastore.
#[derive(Debug)]
struct StoreTokens(Arc<dyn Store>);

#[async_trait::async_trait]
impl JoinTokenSource for StoreTokens {
    async fn get(&self, id: &str) -> Result<Option<JoinTokenRecord>, AttestError> {
        self.0.get_join_token(id).await.map_err(|e| AttestError::Unavailable(e.to_string()))
    }
}

fn create_private_dir(dir: &Path) -> Result<(), ServerError> {
    std::fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(io_err(format!("restricting {}", dir.display())))
}

async fn open_ca(
    cfg: &ValidatedConfig,
    store: &Arc<dyn Store>,
    clock: Arc<dyn Clock>,
) -> Result<Authority, ServerError> {
    let raw = &cfg.raw;
    let mut ca = CaConfig::new(cfg.trust_domain.clone());
    ca.key_algorithm = raw.ca.key_type;
    ca.ca_ttl = raw.ca.ttl;
    ca.x509_svid_ttl = raw.svid.x509_ttl;
    ca.jwt_svid_ttl = raw.svid.jwt_ttl;
    ca.max_svid_ttl = raw.svid.max_ttl;
    ca.jwt_issuer = raw.ca.jwt_issuer.clone();
    ca.refresh_hint = raw.ca.refresh_hint;
    if let (Some(cert), Some(key)) = (&raw.ca.upstream_cert_file, &raw.ca.upstream_key_file) {
        let cert_pem = std::fs::read_to_string(cert)
            .map_err(io_err(format!("reading ca.upstream_cert_file {}", cert.display())))?;
        let key_pem = std::fs::read_to_string(key)
            .map_err(io_err(format!("reading ca.upstream_key_file {}", key.display())))?;
        ca.upstream = Some(UpstreamCa::from_pem(&cert_pem, &key_pem)?);
    }
    let (keys, state): (Arc<dyn KeyStore>, _) = match raw.ca.key_manager {
        config::KeyManagerKind::Disk => {
            let dir = raw.data_dir.join("keys");
            let state = match store.get_ca_state().await? {
                Some(blob) => Some(
                    serde_json::from_slice(&blob)
                        .map_err(|e| ServerError::Other(format!("stored CA state is unreadable: {e}")))?,
                ),
                None => None,
            };
            (Arc::new(DiskKeyStore::open(dir)?), state)
        }
        config::KeyManagerKind::Memory => {
            tracing::warn!(
                "ca.key_manager = \"memory\": CA keys are lost on restart and a new CA is created"
            );
            (Arc::new(MemoryKeyStore::new()), None)
        }
    };
    let restored = state.is_some();
    let authority = Authority::open(ca, keys, state, clock)?;
    authority.tick()?;
    tracing::info!(
        trust_domain = %cfg.trust_domain,
        restored,
        sequence = authority.bundle().sequence,
        "certificate authority ready"
    );
    Ok(authority)
}

/// The server's own TLS certificate (an SVID for `spiffe://<td>/ferrid/server`) and key.
fn server_identity(
    shared_ca: &Authority,
    cfg: &ValidatedConfig,
) -> Result<(ferrid_ca::X509Svid, zeroize::Zeroizing<Vec<u8>>), ServerError> {
    let id = ferrid_types::server_id(&cfg.trust_domain);
    let (key, csr) = ferrid_ca::generate_key_and_csr(cfg.raw.ca.key_type, Some(&id))?;
    let svid = shared_ca.mint_x509_svid(&X509SvidRequest {
        csr_der: &csr,
        spiffe_id: &id,
        ttl: Some(cfg.raw.svid.agent_ttl),
        dns_names: &cfg.raw.server_dns_names,
    })?;
    Ok((svid, key))
}

fn build_tls(ca: &Authority, cfg: &ValidatedConfig) -> Result<(rustls::ServerConfig, i64, i64), ServerError> {
    let (svid, key) = server_identity(ca, cfg)?;
    let tls = tls::server_config(
        svid.spiffe_id.trust_domain(),
        &svid.cert_chain_der,
        &key,
        &ca.bundle().x509_authorities,
    )?;
    Ok((tls, svid.not_before, svid.not_after))
}

/// The direct-exchange attestors the configuration enables, one per issuer. Errors
/// name the section and key at fault.
pub(crate) fn exchange_attestors(
    cfg: &ValidatedConfig,
) -> Result<Vec<exchange::ExchangeAttestor>, ServerError> {
    use ferrid_attest_oidc::CiAttestor;
    let invalid = |section: &str, e: String| ServerError::Other(format!("invalid config: `{section}`: {e}"));
    let mut out: Vec<CiAttestor> = Vec::new();
    if let Some(c) = &cfg.raw.github_actions {
        out.push(CiAttestor::github(c, None).map_err(|e| invalid("github_actions", e))?);
    }
    if let Some(c) = &cfg.raw.gitlab_ci {
        out.push(CiAttestor::gitlab(c, None).map_err(|e| invalid("gitlab_ci", e))?);
    }
    for (i, c) in cfg.raw.oidc.iter().enumerate() {
        out.push(CiAttestor::oidc(c, None).map_err(|e| invalid(&format!("oidc[{i}]"), e))?);
    }
    let mut seen = std::collections::BTreeSet::new();
    for a in &out {
        if !seen.insert(a.issuer().to_owned()) {
            return Err(invalid(
                "oidc",
                format!("issuer {:?} is configured twice; tokens are routed by issuer", a.issuer()),
            ));
        }
        if let Some(p) = a.provider()
            && cfg.raw.oidc.iter().filter(|c| c.name == p).count() > 1
        {
            return Err(invalid("oidc", format!("name {p:?} is used by two providers")));
        }
        tracing::info!(
            attestor = ferrid_attest::NodeAttestor::name(a),
            issuer = a.issuer(),
            "direct exchange enabled"
        );
    }
    Ok(out
        .into_iter()
        .map(|a| exchange::ExchangeAttestor { issuer: a.issuer().to_owned(), attestor: Arc::new(a) })
        .collect())
}

/// Accepts TCP connections on `listener` until `stop` changes. Each TLS handshake runs
/// in its own task (bounded by [`HANDSHAKE_TIMEOUT`]) with the configuration `config`
/// returns at that moment, so a renewed server certificate applies to new connections;
/// each completed stream goes to `tx`, wrapped by `wrap`.
pub(crate) async fn accept_tls<T: Send + 'static>(
    listener: TcpListener,
    config: impl Fn() -> Arc<rustls::ServerConfig> + Send + 'static,
    tx: mpsc::Sender<T>,
    wrap: impl Fn(tokio_rustls::server::TlsStream<tokio::net::TcpStream>, SocketAddr) -> T
    + Send
    + Sync
    + Copy
    + 'static,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            accepted = listener.accept() => {
                let Ok((tcp, remote)) = accepted else { continue };
                // Small request/response messages: without this, Nagle and delayed ACKs
                // add ~40 ms to pushes such as entry updates.
                let _ = tcp.set_nodelay(true);
                let acceptor = tokio_rustls::TlsAcceptor::from(config());
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => { let _ = tx.send(wrap(tls, remote)).await; }
                        Ok(Err(e)) => tracing::debug!(%remote, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%remote, "TLS handshake timed out"),
                    }
                });
            }
        }
    }
}

/// Starts the server with `clock` as its source of time.
pub async fn start(cfg: ValidatedConfig, clock: Arc<dyn Clock>) -> Result<ServerHandle, ServerError> {
    create_private_dir(&cfg.raw.data_dir)?;
    let store = datastore::open(&cfg.raw.datastore, &cfg.raw.data_dir).await?;
    start_with_store(cfg, clock, store).await
}

/// Starts the server on a datastore the caller opened (tests wrap one to interleave
/// requests deterministically; `start` opens the configured one).
pub async fn start_with_store(
    cfg: ValidatedConfig,
    clock: Arc<dyn Clock>,
    store: Arc<dyn Store>,
) -> Result<ServerHandle, ServerError> {
    create_private_dir(&cfg.raw.data_dir)?;

    let ca = open_ca(&cfg, &store, clock.clone()).await?;
    store
        .put_ca_state(&serde_json::to_vec(&ca.state()).map_err(|e| ServerError::Other(e.to_string()))?)
        .await?;

    let mut attestors = Registry::new();
    if cfg.raw.join_token.enabled {
        attestors
            .register(Arc::new(JoinTokenAttestor::new(Arc::new(StoreTokens(store.clone())))))
            .map_err(|e| ServerError::Other(e.to_string()))?;
    }
    if !cfg.raw.k8s_psat.clusters.is_empty() {
        let psat = ferrid_attest_k8s_psat::K8sPsatAttestor::from_config(&cfg.raw.k8s_psat)
            .await
            .map_err(|e| ServerError::Other(format!("invalid config: `k8s_psat`: {e}")))?;
        attestors.register(Arc::new(psat)).map_err(|e| ServerError::Other(e.to_string()))?;
        tracing::info!(clusters = cfg.raw.k8s_psat.clusters.len(), "k8s_psat node attestor enabled");
    }
    let invalid = |section: &str, e: String| ServerError::Other(format!("invalid config: `{section}`: {e}"));
    if let Some(c) = &cfg.raw.aws_iid {
        let a = ferrid_attest_aws_iid::AwsIidAttestor::from_config(c).map_err(|e| invalid("aws_iid", e))?;
        attestors.register(Arc::new(a)).map_err(|e| ServerError::Other(e.to_string()))?;
        tracing::info!(accounts = c.accounts.len(), "aws_iid node attestor enabled");
    }
    if let Some(c) = &cfg.raw.gcp_iit {
        let a = ferrid_attest_gcp_iit::GcpIitAttestor::from_config(c).map_err(|e| invalid("gcp_iit", e))?;
        attestors.register(Arc::new(a)).map_err(|e| ServerError::Other(e.to_string()))?;
        tracing::info!(projects = c.allowed_projects.len(), "gcp_iit node attestor enabled");
    }
    if let Some(c) = &cfg.raw.azure {
        let a = ferrid_attest_azure::AzureAttestor::from_config(c).map_err(|e| invalid("azure", e))?;
        attestors.register(Arc::new(a)).map_err(|e| ServerError::Other(e.to_string()))?;
        tracing::info!(subscriptions = c.allowed_subscriptions.len(), "azure node attestor enabled");
    }

    let exchange = exchange_attestors(&cfg)?;
    let idps = delegation::identity_providers(&cfg.raw.delegation)
        .map_err(|e| ServerError::Other(format!("invalid config: `delegation`: {e}")))?;
    let policy = policy::engine(cfg.raw.policy.as_ref())
        .map_err(|e| ServerError::Other(format!("invalid config: `policy`: {e}")))?;
    let _policy_watch = policy::watch(&policy.0, cfg.raw.policy.as_ref());

    let (tls_cfg, mut cert_from, mut cert_until) = build_tls(&ca, &cfg)?;
    let metrics = metrics::Metrics::new();
    let audit_log = audit::open(&cfg.raw, clock.clone())
        .await
        .map_err(|e| ServerError::Other(format!("audit log: {e}")))?;
    let shared = Arc::new(
        Shared::load(cfg.clone(), ca, store, attestors, exchange, idps, policy, clock, metrics, tls_cfg)
            .await?
            .with_audit(audit_log),
    );
    shared.metrics.entries.set(i64::try_from(shared.entries().by_id.len()).unwrap_or(i64::MAX));
    shared.metrics.bundle_sequence.set(i64::try_from(shared.bundle().sequence).unwrap_or(i64::MAX));

    let (shutdown, shutdown_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let limit = cfg.raw.limits.max_message_bytes;

    // Node API over TLS.
    let listener = TcpListener::bind(cfg.bind_address)
        .await
        .map_err(io_err(format!("binding bind_address {}", cfg.bind_address)))?;
    let node_addr = listener.local_addr().map_err(io_err("reading node address"))?;
    let (conn_tx, conn_rx) = mpsc::channel::<Result<TlsConn, std::io::Error>>(128);
    {
        let tls_of = shared.clone();
        tasks.spawn(accept_tls(
            listener,
            move || tls_of.tls.load_full(),
            conn_tx,
            |tls, _| Ok(TlsConn(tls)),
            shutdown_rx.clone(),
        ));
    }
    {
        let svc = NodeServer::new(node::NodeService { shared: shared.clone(), stop: shutdown_rx.clone() })
            .max_decoding_message_size(limit)
            .max_encoding_message_size(usize::MAX);
        let exchange_svc = ExchangeServer::new(exchange::ExchangeService { shared: shared.clone() })
            .max_decoding_message_size(limit);
        let revocations_svc = ferrid_proto::revocation::v1::revocations_server::RevocationsServer::new(
            revocation::WatchService { shared: shared.clone(), stop: shutdown_rx.clone() },
        )
        .max_decoding_message_size(4096);
        let mut stop = shutdown_rx.clone();
        tasks.spawn(async move {
            let r = tonic::transport::Server::builder()
                .http2_keepalive_interval(Some(Duration::from_secs(30)))
                .add_service(svc)
                .add_service(exchange_svc)
                .add_service(revocations_svc)
                .serve_with_incoming_shutdown(ReceiverStream::new(conn_rx), async move {
                    let _ = stop.changed().await;
                })
                .await;
            if let Err(e) = r {
                tracing::error!(error = %e, "node API stopped");
            }
        });
    }

    // Admin API on a Unix socket only the server's user can open.
    let admin_socket = cfg.admin_socket.clone();
    if let Some(dir) = admin_socket.parent() {
        create_private_dir(dir)?;
    }
    if admin_socket.exists() {
        if tokio::net::UnixStream::connect(&admin_socket).await.is_ok() {
            return Err(ServerError::Other(format!(
                "another server is already listening on the admin socket {}",
                admin_socket.display()
            )));
        }
        std::fs::remove_file(&admin_socket)
            .map_err(io_err(format!("removing stale {}", admin_socket.display())))?;
    }
    let uds = UnixListener::bind(&admin_socket)
        .map_err(io_err(format!("binding admin socket {}", admin_socket.display())))?;
    std::fs::set_permissions(&admin_socket, std::fs::Permissions::from_mode(0o600))
        .map_err(io_err("restricting the admin socket"))?;
    {
        let svc = AdminServer::new(admin::AdminService { shared: shared.clone() })
            .max_decoding_message_size(1 << 20);
        let router = tonic::transport::Server::builder().add_service(svc);
        tasks.spawn(ferrid_tls::serving::serve_unix(router, uds, shutdown_rx.clone(), "admin API"));
    }

    // Health and metrics.
    let health_addr = match cfg.health_address {
        Some(addr) => Some(health::serve(addr, shared.clone(), shutdown_rx.clone(), &mut tasks).await?),
        None => None,
    };

    // The revocation feed for relying parties: SSF poll and bundle endpoints, and push.
    let revocation_addr = match cfg.raw.revocation.address.trim() {
        "" => None,
        a => {
            let addr: SocketAddr = a.parse().map_err(|e| {
                ServerError::Other(format!(
                    "invalid config: `revocation.address`: {a:?} is not host:port: {e}"
                ))
            })?;
            Some(ssf::serve(addr, shared.clone(), shutdown_rx.clone(), &mut tasks).await?)
        }
    };
    for r in &cfg.raw.revocation.push {
        if !(r.url.starts_with("http://") || r.url.starts_with("https://")) {
            return Err(ServerError::Other(format!(
                "invalid config: `revocation.push`: url {:?} must be http:// or https://",
                r.url
            )));
        }
        tracing::info!(url = %r.url, "pushing revocations (RFC 8935)");
        tasks.spawn(ssf::push(shared.clone(), r.clone(), shutdown_rx.clone()));
    }

    // The trust bundle, published to a Kubernetes ConfigMap for agents and relying services.
    if let Some(kb) = &cfg.raw.k8s_bundle {
        let ns = kb.resolve_namespace().map_err(|e| ServerError::Other(format!("invalid config: {e}")))?;
        let client = ferrid_attest_k8s_psat::kube_client(kb.kubeconfig.as_deref())
            .await
            .map_err(|e| ServerError::Other(format!("invalid config: `k8s_bundle`: {e}")))?;
        let publisher = k8s_bundle::Publisher::new(client, &ns, &kb.config_map, &kb.key);
        let bundle_of = shared.clone();
        tasks.spawn(k8s_bundle::run(
            publisher,
            move || {
                let b = bundle_of.bundle();
                (b.sequence, b.to_pem())
            },
            shared.subscribe(),
            shutdown_rx.clone(),
        ));
        tracing::info!(namespace = %ns, config_map = %kb.config_map, "publishing the trust bundle to Kubernetes");
    }

    // Rotation, server certificate renewal, housekeeping.
    {
        let shared = shared.clone();
        let mut stop = shutdown_rx.clone();
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.changed() => return,
                    _ = tick.tick() => {}
                }
                let now = shared.now();
                let mut rebuild = now >= cert_from + (cert_until - cert_from) / 2;
                match shared.ca.tick() {
                    Ok(true) => {
                        let b = shared.bundle();
                        tracing::info!(sequence = b.sequence, "trust bundle changed");
                        shared.metrics.bundle_sequence.set(i64::try_from(b.sequence).unwrap_or(i64::MAX));
                        if let Err(e) = shared.persist_ca().await {
                            tracing::error!(error = %e, "persisting CA state failed");
                        }
                        shared.notify();
                        rebuild = true;
                    }
                    Ok(false) => {}
                    Err(e) => tracing::error!(error = %e, "CA rotation failed"),
                }
                if rebuild {
                    match build_tls(&shared.ca, &shared.cfg) {
                        Ok((tls, from, until)) => {
                            shared.tls.store(Arc::new(tls));
                            (cert_from, cert_until) = (from, until);
                            tracing::debug!(not_after = until, "server certificate renewed");
                        }
                        Err(e) => tracing::error!(error = %e, "renewing the server certificate failed"),
                    }
                }
                if let Err(e) = shared.store.prune_join_tokens(now).await {
                    tracing::warn!(error = %e, "pruning join tokens failed");
                }
                shared.revocations.prune(now);
                if let Err(e) = shared.store.prune_revocations(now).await {
                    tracing::warn!(error = %e, "pruning revocations failed");
                }
                if let Err(e) = shared.store.prune_delegations(now).await {
                    tracing::warn!(error = %e, "pruning delegation records failed");
                }
                if let Err(e) = shared.store.prune_changes(changes::KEEP).await {
                    tracing::warn!(error = %e, "pruning the change feed failed");
                }
            }
        });
    }

    // The datastore's change feed: other servers' writes (and this one's) reach the
    // index, the agent cache, the revocation feed and every watcher.
    tasks.spawn(changes::follow(shared.clone(), shutdown_rx.clone()));

    shared.ready.store(true, Ordering::Release);
    tracing::info!(
        trust_domain = %cfg.trust_domain,
        node_api = %node_addr,
        admin_socket = %admin_socket.display(),
        health = ?health_addr,
        revocation = ?revocation_addr,
        "ferrid server ready"
    );
    Ok(ServerHandle { node_addr, admin_socket, health_addr, revocation_addr, shutdown, tasks })
}
