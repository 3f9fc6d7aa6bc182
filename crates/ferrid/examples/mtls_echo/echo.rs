//! The logic of `mtls_echo`, shared with `tests/mtls_echo_e2e.rs` (which includes this
//! file with `#[path]`, so the end-to-end test drives exactly this code).
//!
//! - [`Identity`]: this process's X.509-SVID and trust bundle from the agent's Workload
//!   API (`ferrid_validate::workload_api`, over the `spiffe` crate's reconnecting
//!   sources), kept in a [`SvidResolver`] and a [`BundleSet`], and the revocation feed followed with
//!   `ferrid_validate::feeds::watch` into a fail-closed [`RevocationSet`].
//! - [`serve`]: the echo server, requiring a client SVID accepted by
//!   [`SpiffeClientVerifier`] (exact SPIFFE ID, not revoked).
//! - [`run_client`]: one long-lived connection verified by [`SpiffeServerVerifier`],
//!   reconnecting (a new full handshake) when it is lost.
//!
//! Rotation swaps the SVID in the resolver: new handshakes present the new SVID while
//! established TLS sessions stay up. Revocation is checked at the handshake only; an
//! established session is not cut when its peer's certificate is revoked.
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use ferrid_types::{Clock, SpiffeId, SystemClock, TrustDomain};
use ferrid_validate::feeds::{Feed, FeedAuth, watch};
use ferrid_validate::tls::{
    PeerError, SpiffeClientVerifier, SpiffeServerVerifier, SvidResolver, VerifierConfig, client_config,
    server_config,
};
use ferrid_validate::workload_api::WorkloadApiBundles;
use ferrid_validate::{Authorizer, BundleSet, RevocationError, RevocationSet, authorize};
use rustls::client::ResolvesClientCert;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::UnboundedSender;

/// What happened, for a test to observe (everything is also logged).
#[derive(Debug, Clone)]
pub(crate) enum Event {
    /// The server accepted a client's handshake.
    Accepted { peer: SocketAddr, client_id: String, client_serial: String },
    /// The server refused a client's handshake (`revoked`: because of a revocation).
    Refused { peer: SocketAddr, revoked: bool, reason: String },
    /// The client completed handshake number `handshake`.
    Connected { handshake: u64, presented: String, server_serial: String },
    /// An echo came back on the connection of handshake number `handshake`.
    Echo { handshake: u64, line: String },
    /// Handshake number `handshake` failed.
    HandshakeFailed { handshake: u64, reason: String },
    /// The connection of handshake number `handshake` was lost after it was established.
    Lost { handshake: u64, reason: String },
}

/// Where events go: nowhere (the example) or a channel (the test).
#[derive(Debug, Clone, Default)]
pub(crate) struct Events(Option<UnboundedSender<Event>>);

impl Events {
    pub(crate) fn to(tx: UnboundedSender<Event>) -> Self {
        Self(Some(tx))
    }

    fn emit(&self, e: Event) {
        if let Some(tx) = &self.0 {
            let _ = tx.send(e);
        }
    }
}

/// How an [`Identity`] is obtained.
#[derive(Debug, Clone)]
pub(crate) struct IdentityOptions {
    /// The Workload API (`unix:///…`); `None`: `SPIFFE_ENDPOINT_SOCKET`.
    pub(crate) endpoint: Option<String>,
    /// The server's node API, `https://host:port`, serving the revocation watch.
    pub(crate) feed: String,
    /// Refuse every peer when the feed has been silent this long.
    pub(crate) max_staleness: Duration,
    /// Keep presenting the first SVID, ignoring rotation (plays a stolen certificate).
    pub(crate) pin_svid: bool,
}

/// A certificate's serial in the revocation feed's form (even-length lowercase hex).
pub(crate) fn serial_of(der: &[u8]) -> String {
    ferrid_validate::x509::peek_leaf(der).map_or_else(|_| "<unparsable>".into(), |(_, s)| s.to_string())
}

/// Delegates to the [`SvidResolver`] and remembers the serial it handed out last, so the
/// log can say which SVID a handshake presented. (The server may run handshakes
/// concurrently; then "last" is the most recent of them.)
#[derive(Debug)]
struct Presenting {
    svid: Arc<SvidResolver>,
    last: Mutex<String>,
}

impl Presenting {
    fn note(&self, k: &CertifiedKey) {
        let serial = k.cert.first().map(|c| serial_of(c.as_ref())).unwrap_or_default();
        *self.last.lock().unwrap() = serial;
    }

    fn last(&self) -> String {
        self.last.lock().unwrap().clone()
    }
}

impl ResolvesClientCert for Presenting {
    fn resolve(&self, hints: &[&[u8]], schemes: &[rustls::SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        let k = ResolvesClientCert::resolve(&*self.svid, hints, schemes)?;
        self.note(&k);
        Some(k)
    }

    fn has_certs(&self) -> bool {
        true
    }
}

impl ResolvesServerCert for Presenting {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let k = ResolvesServerCert::resolve(&*self.svid, hello)?;
        self.note(&k);
        Some(k)
    }
}

/// This process's SVID, trust bundle and revocation set, kept current.
pub(crate) struct Identity {
    /// Our SPIFFE ID.
    pub(crate) id: SpiffeId,
    /// Our trust domain (peers must be in it).
    pub(crate) td: TrustDomain,
    /// What handshakes present; swapped at rotation unless pinned.
    pub(crate) svid: Arc<SvidResolver>,
    presenting: Arc<Presenting>,
    /// The serial the resolver holds now.
    current: Arc<Mutex<String>>,
    /// X.509 authorities and JWT keys (to verify the feed's SETs) from the Workload API.
    pub(crate) bundles: Arc<BundleSet>,
    /// Followed from the server's revocation watch.
    pub(crate) revocations: Arc<RevocationSet>,
    clock: Arc<dyn Clock>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Keeps `bundles` current from the Workload API while the identity lives.
    _wl: WorkloadApiBundles,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity").field("id", &self.id).field("serial", &self.serial()).finish()
    }
}

impl Drop for Identity {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Identity {
    /// Connects to the Workload API, takes the SVID and bundles, follows rotation and
    /// the revocation feed, and returns once the feed has been heard from.
    pub(crate) async fn start(opts: IdentityOptions) -> Result<Arc<Identity>> {
        // The Workload API keeps `bundles` current (X.509 authorities, and the JWT keys
        // that verify the revocation feed's SETs); its X.509 source gives our SVID.
        let bundles = Arc::new(BundleSet::new());
        let wl = WorkloadApiBundles::start(opts.endpoint.as_deref(), bundles.clone()).await?;
        let x509 = wl.x509_source().clone();
        let svid = x509.svid()?;
        let id = svid.spiffe_id().clone();
        let td = id.trust_domain().clone();
        let chain: Vec<Vec<u8>> = svid.cert_chain().iter().map(|c| c.as_bytes().to_vec()).collect();
        let serial = serial_of(&chain[0]);
        let resolver = Arc::new(SvidResolver::new(chain, svid.private_key().as_bytes().to_vec())?);
        let presenting = Arc::new(Presenting { svid: resolver.clone(), last: Mutex::new(String::new()) });
        let revocations = Arc::new(RevocationSet::new(opts.max_staleness));
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        tracing::info!(
            "X.509-SVID from the Workload API: {id} serial {serial}{}",
            if opts.pin_svid { " (pinned: rotation will be ignored)" } else { "" }
        );
        let current = Arc::new(Mutex::new(serial));

        let mut tasks = Vec::new();
        // Rotation.
        tasks.push(tokio::spawn({
            let (x509, resolver, current) = (x509.clone(), resolver.clone(), current.clone());
            let pin = opts.pin_svid;
            async move {
                let mut updates = x509.updated();
                while updates.changed().await.is_ok() {
                    let Ok(svid) = x509.svid() else { continue };
                    let chain: Vec<Vec<u8>> = svid.cert_chain().iter().map(|c| c.as_bytes().to_vec()).collect();
                    let new = serial_of(&chain[0]);
                    let old = current.lock().unwrap().clone();
                    if new == old {
                        continue;
                    }
                    if pin {
                        tracing::info!(
                            "the agent rotated our SVID to serial {new}; pinned: still presenting serial {old}"
                        );
                        continue;
                    }
                    match resolver.update(chain, svid.private_key().as_bytes().to_vec()) {
                        Ok(()) => {
                            *current.lock().unwrap() = new.clone();
                            tracing::info!(
                                "rotated: new handshakes present serial {new} (was {old}); \
                                 established connections keep their session"
                            );
                        }
                        Err(e) => tracing::warn!("cannot use the rotated SVID {new}: {e}"),
                    }
                }
            }
        }));
        // The revocation feed.
        let feed = Feed {
            trust_domain: td.clone(),
            bundles: bundles.clone(),
            revocations: revocations.clone(),
            clock: clock.clone(),
        };
        // Followed with the Workload API's current SVID (not a pinned one): the server
        // serves the feed only to holders of a valid SVID.
        let feed_auth = FeedAuth::x509_source(x509.clone());
        tasks.push(tokio::spawn(watch::run(feed, opts.feed.clone(), feed_auth)));

        let me = Identity {
            id,
            td,
            svid: resolver,
            presenting,
            current,
            bundles,
            revocations,
            clock,
            tasks,
            _wl: wl,
        };
        let mut waited = 0u64;
        while me.revocations.last_heard().is_none() {
            tokio::time::sleep(Duration::from_millis(100)).await;
            waited += 1;
            if waited.is_multiple_of(50) {
                tracing::warn!(
                    "still waiting for the revocation feed at {} (every peer is refused until it is heard)",
                    opts.feed
                );
            }
        }
        tracing::info!(
            "following the revocation feed at {} (staleness bound {:?})",
            opts.feed,
            opts.max_staleness
        );
        Ok(Arc::new(me))
    }

    /// The serial of the SVID new handshakes present.
    pub(crate) fn serial(&self) -> String {
        self.current.lock().unwrap().clone()
    }

    fn verifier(&self, authorizer: Arc<dyn Authorizer>) -> VerifierConfig {
        VerifierConfig {
            trust_domain: self.td.clone(),
            bundles: self.bundles.clone(),
            authorizer,
            revocations: Some(self.revocations.clone()),
            clock: self.clock.clone(),
        }
    }
}

/// Why a handshake failed, and whether it was because the peer is revoked.
pub(crate) fn explain(e: &std::io::Error) -> (bool, String) {
    let inner = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
    match inner {
        Some(rustls::Error::InvalidCertificate(rustls::CertificateError::Other(o))) => {
            match o.0.downcast_ref::<PeerError>() {
                Some(p @ PeerError::Revocation(RevocationError::Revoked { .. })) => {
                    (true, format!("peer certificate REVOKED ({p})"))
                }
                Some(p) => (false, format!("peer certificate refused: {p}")),
                None => (false, format!("peer certificate refused: {}", o.0)),
            }
        }
        Some(rustls::Error::AlertReceived(alert)) => {
            (false, format!("the peer refused the handshake (TLS alert {alert:?})"))
        }
        Some(other) => (false, format!("TLS: {other}")),
        None => (false, e.to_string()),
    }
}

fn peer_svid(certs: Option<&[rustls::pki_types::CertificateDer<'_>]>) -> (String, String) {
    match certs.and_then(|c| c.first()) {
        Some(leaf) => (
            spiffe::cert::spiffe_id_from_der(leaf.as_ref()).map(|i| i.to_string()).unwrap_or_default(),
            serial_of(leaf.as_ref()),
        ),
        None => (String::new(), String::new()),
    }
}

/// Serves echo over mutual TLS on `listener` to clients whose SVID is exactly `allow`
/// and not revoked; runs until the listener fails.
pub(crate) async fn serve(
    listener: TcpListener,
    me: Arc<Identity>,
    allow: SpiffeId,
    events: Events,
) -> Result<()> {
    let verifier = SpiffeClientVerifier::new(me.verifier(Arc::new(authorize::exact(allow.clone()))));
    let mut cfg = server_config(me.svid.clone(), Arc::new(verifier));
    cfg.cert_resolver = me.presenting.clone();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    tracing::info!(
        "echo server {} on {} accepting {allow}",
        me.id,
        listener.local_addr().map(|a| a.to_string()).unwrap_or_default()
    );
    loop {
        let (tcp, peer) = listener.accept().await.context("accept")?;
        let (acceptor, me, events) = (acceptor.clone(), me.clone(), events.clone());
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(tls) => tls,
                Err(e) => {
                    let (revoked, reason) = explain(&e);
                    if revoked {
                        tracing::warn!("REFUSED client {peer}: its X.509-SVID is revoked: {reason}");
                    } else {
                        tracing::warn!("refused client {peer}: {reason}");
                    }
                    events.emit(Event::Refused { peer, revoked, reason });
                    return;
                }
            };
            let (client_id, client_serial) = peer_svid(tls.get_ref().1.peer_certificates());
            tracing::info!(
                "accepted {peer}: client {client_id} presented serial {client_serial}; \
                 we presented serial {}",
                me.presenting.last()
            );
            events.emit(Event::Accepted {
                peer,
                client_id: client_id.clone(),
                client_serial: client_serial.clone(),
            });
            let (rd, mut wr) = tokio::io::split(tls);
            let mut lines = BufReader::new(rd).lines();
            let greeting = format!("hello {client_id} serial {client_serial}\n");
            if let Err(e) = wr.write_all(greeting.as_bytes()).await {
                tracing::info!("{peer}: {e}");
                return;
            }
            loop {
                match lines.next_line().await {
                    Ok(Some(line)) => {
                        if wr.write_all(format!("{line}\n").as_bytes()).await.is_err() {
                            break;
                        }
                    }
                    Ok(None) => {
                        tracing::info!("{peer} closed the connection");
                        break;
                    }
                    Err(e) => {
                        tracing::info!("{peer}: connection lost: {e}");
                        break;
                    }
                }
            }
        });
    }
}

/// What the client does.
#[derive(Debug, Clone)]
pub(crate) struct ClientOptions {
    /// `host:port` of the echo server.
    pub(crate) connect: String,
    /// The server's SPIFFE ID (exactly).
    pub(crate) server_id: SpiffeId,
    /// Time between lines.
    pub(crate) interval: Duration,
    /// Close the connection and handshake again after this many echoes on it.
    pub(crate) reconnect_after: Option<u64>,
    /// Return after this many echoes in all.
    pub(crate) count: Option<u64>,
}

type Conn = tokio_rustls::client::TlsStream<TcpStream>;

/// Connects, handshakes, and reads the server's greeting (which is where a client
/// refused by the server learns of it: in TLS 1.3 the server's verdict on the client
/// certificate arrives after the client's side of the handshake is done).
async fn connect(
    connector: &tokio_rustls::TlsConnector,
    addr: &str,
) -> Result<
    (tokio::io::Lines<BufReader<tokio::io::ReadHalf<Conn>>>, tokio::io::WriteHalf<Conn>, String),
    String,
> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let name = rustls::pki_types::ServerName::try_from("mtls-echo.invalid").expect("a valid name");
    let tls = connector.connect(name, tcp).await.map_err(|e| explain(&e).1)?;
    let (_, server_serial) = peer_svid(tls.get_ref().1.peer_certificates());
    let (rd, wr) = tokio::io::split(tls);
    let mut lines = BufReader::new(rd).lines();
    match tokio::time::timeout(Duration::from_secs(10), lines.next_line()).await {
        Ok(Ok(Some(greeting))) if greeting.starts_with("hello ") => Ok((lines, wr, server_serial)),
        Ok(Ok(Some(other))) => Err(format!("unexpected greeting {other:?}")),
        Ok(Ok(None)) => Err("the server closed the connection during the handshake".into()),
        Ok(Err(e)) => Err(explain(&e).1),
        Err(_) => Err("no greeting from the server within 10s".into()),
    }
}

/// Sends a line every `interval` on one long-lived connection and prints each echo;
/// handshakes again when the connection is lost. Returns after `count` echoes, if set.
pub(crate) async fn run_client(me: Arc<Identity>, opts: ClientOptions, events: Events) -> Result<()> {
    let verifier = SpiffeServerVerifier::new(me.verifier(Arc::new(authorize::exact(opts.server_id.clone()))));
    let mut cfg = client_config(me.svid.clone(), Arc::new(verifier));
    cfg.client_auth_cert_resolver = me.presenting.clone();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let mut echoes = 0u64;
    for handshake in 1u64.. {
        let (mut lines, mut wr, server_serial) = match connect(&connector, &opts.connect).await {
            Ok(c) => c,
            Err(reason) => {
                tracing::warn!(
                    "handshake #{handshake} FAILED (we presented serial {}): {reason}",
                    me.presenting.last()
                );
                events.emit(Event::HandshakeFailed { handshake, reason });
                tokio::time::sleep(opts.interval.max(Duration::from_millis(200))).await;
                continue;
            }
        };
        let presented = me.presenting.last();
        tracing::info!(
            "handshake #{handshake} ok: we presented serial {presented}; server {} presented serial {server_serial}",
            opts.server_id
        );
        events.emit(Event::Connected { handshake, presented: presented.clone(), server_serial });
        let mut on_this = 0u64;
        let lost = loop {
            tokio::time::sleep(opts.interval).await;
            let line = format!("ping {} on handshake #{handshake} (serial {presented})", echoes + 1);
            if let Err(e) = wr.write_all(format!("{line}\n").as_bytes()).await {
                break Some(e.to_string());
            }
            match tokio::time::timeout(Duration::from_secs(10), lines.next_line()).await {
                Ok(Ok(Some(echo))) => {
                    echoes += 1;
                    on_this += 1;
                    println!("echo: {echo}");
                    events.emit(Event::Echo { handshake, line: echo });
                }
                Ok(Ok(None)) => break Some("the server closed the connection".into()),
                Ok(Err(e)) => break Some(explain(&e).1),
                Err(_) => break Some("no echo within 10s".into()),
            }
            if opts.count.is_some_and(|n| echoes >= n) {
                let _ = wr.shutdown().await;
                return Ok(());
            }
            if opts.reconnect_after.is_some_and(|n| on_this >= n) {
                let _ = wr.shutdown().await;
                tracing::info!("closing connection #{handshake} after {on_this} echoes, to handshake again");
                break None;
            }
        };
        if let Some(reason) = lost {
            tracing::warn!("connection #{handshake} lost: {reason}; reconnecting");
            events.emit(Event::Lost { handshake, reason });
            tokio::time::sleep(opts.interval).await;
        }
    }
    Ok(())
}
