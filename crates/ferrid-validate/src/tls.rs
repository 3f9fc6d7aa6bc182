//! rustls verifiers and certificate resolvers for SPIFFE mutual TLS.
//!
//! - [`SpiffeServerVerifier`] (for clients) and [`SpiffeClientVerifier`] (for servers)
//!   validate the peer's X.509-SVID with [`crate::x509::validate_x509_svid`] against the
//!   bundle a [`BundleSource`] holds *at the time of the handshake* (so bundle rotation
//!   needs no new config), run an [`Authorizer`] on the peer's SPIFFE ID and, when given
//!   a [`RevocationSet`], refuse a revoked peer (and fail closed on a stale feed). No
//!   host name is checked: SPIFFE identifies peers by their URI SAN. Handshake
//!   signatures are verified by the aws-lc-rs provider.
//! - [`SvidResolver`] presents the current SVID (chain and key) and can be swapped at
//!   rotation; it implements both `ResolvesServerCert` and `ResolvesClientCert`.
//! - [`client_config`] and [`server_config`] put them together.
use std::sync::Arc;

use arc_swap::ArcSwap;
use ferrid_types::{Clock, TrustDomain};
use rustls::client::ResolvesClientCert;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};

use crate::authorize::Authorizer;
use crate::bundle::{BundleError, BundleSource};
use crate::revocation::RevocationSet;
use crate::x509::{SvidUsage, VerifiedX509Svid, validate_x509_svid};

/// The aws-lc-rs crypto provider.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Why a peer was refused in the handshake (wrapped in a rustls `OtherError`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PeerError {
    /// No bundle for the trust domain.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// The SVID is invalid.
    #[error(transparent)]
    Svid(#[from] crate::x509::X509Error),
    /// The authorizer refused the peer.
    #[error(transparent)]
    Unauthorized(#[from] crate::authorize::AuthorizeError),
    /// Revoked, or the revocation feed is stale.
    #[error(transparent)]
    Revocation(#[from] crate::revocation::RevocationError),
}

fn reject(e: PeerError) -> rustls::Error {
    rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(Arc::new(e))))
}

/// What both verifiers share.
struct Peer {
    td: TrustDomain,
    bundles: Arc<dyn BundleSource>,
    authorizer: Arc<dyn Authorizer>,
    revocations: Option<Arc<RevocationSet>>,
    clock: Arc<dyn Clock>,
    provider: Arc<CryptoProvider>,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("td", &self.td)
            .field("revocations", &self.revocations.is_some())
            .finish()
    }
}

impl Peer {
    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        usage: SvidUsage,
    ) -> Result<VerifiedX509Svid, PeerError> {
        let bundle =
            self.bundles.bundle(&self.td).ok_or_else(|| BundleError::Unknown(self.td.to_string()))?;
        let now = self.clock.unix();
        let mut chain: Vec<&[u8]> = Vec::with_capacity(1 + intermediates.len());
        chain.push(end_entity.as_ref());
        chain.extend(intermediates.iter().map(|c| c.as_ref()));
        let svid = validate_x509_svid(&chain, &bundle.x509, now, usage)?;
        self.authorizer.authorize(&svid.spiffe_id)?;
        if let Some(r) = &self.revocations {
            r.check_x509(&svid, now)?;
        }
        Ok(svid)
    }

    fn tls12(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.provider.signature_verification_algorithms)
    }

    fn tls13(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.provider.signature_verification_algorithms)
    }

    fn schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// Builder input shared by both verifiers.
pub struct VerifierConfig {
    /// The trust domain peers must belong to.
    pub trust_domain: TrustDomain,
    /// Where the current bundle comes from.
    pub bundles: Arc<dyn BundleSource>,
    /// Which peer IDs are accepted.
    pub authorizer: Arc<dyn Authorizer>,
    /// Revocations to consult (fail closed when stale), if any.
    pub revocations: Option<Arc<RevocationSet>>,
    /// The clock validation runs on.
    pub clock: Arc<dyn Clock>,
}

impl VerifierConfig {
    fn into_peer(self) -> Peer {
        Peer {
            td: self.trust_domain,
            bundles: self.bundles,
            authorizer: self.authorizer,
            revocations: self.revocations,
            clock: self.clock,
            provider: provider(),
        }
    }
}

/// Verifies a TLS server's X.509-SVID (for clients).
#[derive(Debug)]
pub struct SpiffeServerVerifier(Peer);

impl SpiffeServerVerifier {
    /// A verifier from `cfg`.
    pub fn new(cfg: VerifierConfig) -> Self {
        Self(cfg.into_peer())
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.0.check(end_entity, intermediates, SvidUsage::ServerAuth).map_err(reject)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.tls12(m, c, d)
    }

    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.tls13(m, c, d)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.schemes()
    }
}

/// Verifies a TLS client's X.509-SVID (for servers). A client certificate is
/// required, unless the verifier was built with [`SpiffeClientVerifier::optional`].
#[derive(Debug)]
pub struct SpiffeClientVerifier {
    peer: Peer,
    mandatory: bool,
}

impl SpiffeClientVerifier {
    /// A verifier from `cfg` that requires a client certificate.
    pub fn new(cfg: VerifierConfig) -> Self {
        Self { peer: cfg.into_peer(), mandatory: true }
    }

    /// A verifier from `cfg` that asks for a client certificate but also admits
    /// clients without one (the server then decides per request, e.g. Ferrid's node
    /// API, where node attestation runs before the agent has an SVID). A certificate
    /// that is presented is verified exactly as by [`SpiffeClientVerifier::new`].
    pub fn optional(cfg: VerifierConfig) -> Self {
        Self { peer: cfg.into_peer(), mandatory: false }
    }
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.peer.check(end_entity, intermediates, SvidUsage::ClientAuth).map_err(reject)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.peer.tls12(m, c, d)
    }

    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.peer.tls13(m, c, d)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.peer.schemes()
    }
}

/// The SVID this side presents, swappable at rotation.
#[derive(Debug)]
pub struct SvidResolver {
    current: ArcSwap<CertifiedKey>,
}

impl SvidResolver {
    /// Presents `chain` (leaf first, DER) with `key_pkcs8` (PKCS#8 DER).
    pub fn new(chain: Vec<Vec<u8>>, key_pkcs8: Vec<u8>) -> Result<Self, rustls::Error> {
        Ok(Self { current: ArcSwap::from_pointee(certified(chain, key_pkcs8)?) })
    }

    /// Presents a new SVID from the next handshake on.
    pub fn update(&self, chain: Vec<Vec<u8>>, key_pkcs8: Vec<u8>) -> Result<(), rustls::Error> {
        self.current.store(Arc::new(certified(chain, key_pkcs8)?));
        Ok(())
    }
}

/// A rustls certified key for `chain` (leaf first, DER) and its PKCS#8 `key`.
pub(crate) fn certified(chain: Vec<Vec<u8>>, key: Vec<u8>) -> Result<CertifiedKey, rustls::Error> {
    if chain.is_empty() {
        return Err(rustls::Error::General("empty SVID chain".into()));
    }
    CertifiedKey::from_der(
        chain.into_iter().map(CertificateDer::from).collect(),
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
        &rustls::crypto::aws_lc_rs::default_provider(),
    )
}

impl ResolvesServerCert for SvidResolver {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

impl ResolvesClientCert for SvidResolver {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// A TLS 1.3/1.2 client config presenting `svid` and verifying the server with
/// `verifier`. Session resumption is off: every connection is a full handshake, so a
/// revoked or rotated-out peer is refused on its next connection.
pub fn client_config(svid: Arc<SvidResolver>, verifier: Arc<SpiffeServerVerifier>) -> rustls::ClientConfig {
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("the aws-lc-rs provider supports the default versions")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(svid);
    cfg.resumption = rustls::client::Resumption::disabled();
    cfg
}

/// A TLS 1.3/1.2 server config presenting `svid` and requiring a client SVID accepted
/// by `verifier`. No session tickets or session cache: a resumed session would skip
/// the client's verification, and with it revocation.
pub fn server_config(svid: Arc<SvidResolver>, verifier: Arc<SpiffeClientVerifier>) -> rustls::ServerConfig {
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("the aws-lc-rs provider supports the default versions")
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(svid);
    cfg.send_tls13_tickets = 0;
    cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    cfg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authorize;
    use crate::bundle::{BundleSet, TrustBundle};
    use crate::keys::JwtKeySet;
    use crate::set::{Revocation, SetEvent};
    use crate::testing::*;
    use ferrid_types::{ManualClock, SpiffeId};
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    struct Side {
        svid: Arc<SvidResolver>,
    }

    fn side(ca: &TestCa, id: &str) -> (Side, ferrid_types::Serial) {
        let leaf = ca.leaf(id, LeafOpts { window: Some((NOW - 60, NOW + 3600)), ..Default::default() });
        let serial = leaf.serial.clone();
        (Side { svid: Arc::new(SvidResolver::new(leaf.chain, leaf.key_der).unwrap()) }, serial)
    }

    /// One mutual-TLS exchange over loopback: the client writes "ping", the server
    /// answers "pong". Returns the client's and the server's results.
    async fn handshake(
        client: rustls::ClientConfig,
        server: rustls::ServerConfig,
    ) -> (Result<(), String>, Result<(), String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let srv = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut tls = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
            let mut buf = [0u8; 4];
            tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
            tls.write_all(b"pong").await.map_err(|e| e.to_string())?;
            tls.shutdown().await.ok();
            Ok::<(), String>(())
        });
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let cli = async {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let mut tls = connector
                .connect(ServerName::try_from("ignored.invalid").unwrap(), tcp)
                .await
                .map_err(|e| e.to_string())?;
            tls.write_all(b"ping").await.map_err(|e| e.to_string())?;
            let mut buf = [0u8; 4];
            tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
            Ok::<(), String>(())
        }
        .await;
        let srv = tokio::time::timeout(Duration::from_secs(5), srv).await.unwrap().unwrap();
        (cli, srv)
    }

    #[tokio::test]
    async fn mutual_tls_with_revocation_and_bundle_rotation() {
        let td = TrustDomain::new("example.org").unwrap();
        let ca = TestCa::new("example.org");
        let bundles = Arc::new(BundleSet::of([TrustBundle::new(ca.bundle(), JwtKeySet::new())]));
        let clock = Arc::new(ManualClock::at_unix(NOW));
        let revocations = Arc::new(RevocationSet::new(Duration::from_secs(60)));
        revocations.heard(NOW);
        let (server, _) = side(&ca, "spiffe://example.org/api");
        let (client, client_serial) = side(&ca, "spiffe://example.org/web");
        let cfg = |auth: Arc<dyn Authorizer>| VerifierConfig {
            trust_domain: td.clone(),
            bundles: bundles.clone(),
            authorizer: auth,
            revocations: Some(revocations.clone()),
            clock: clock.clone(),
        };
        let client_cfg = client_config(
            client.svid.clone(),
            Arc::new(SpiffeServerVerifier::new(cfg(Arc::new(authorize::exact(
                SpiffeId::new("spiffe://example.org/api").unwrap(),
            ))))),
        );
        let server_cfg = server_config(
            server.svid.clone(),
            Arc::new(SpiffeClientVerifier::new(cfg(Arc::new(authorize::path_prefix(td.clone(), "/web"))))),
        );
        let (c, s) = handshake(client_cfg.clone(), server_cfg.clone()).await;
        assert!(c.is_ok() && s.is_ok(), "{c:?} {s:?}");

        // The server's authorizer refuses another client ID.
        let (stranger, _) = side(&ca, "spiffe://example.org/db");
        let stranger_cfg = client_config(
            stranger.svid.clone(),
            Arc::new(SpiffeServerVerifier::new(cfg(Arc::new(authorize::any())))),
        );
        let (_, s) = handshake(stranger_cfg, server_cfg.clone()).await;
        let e = s.unwrap_err();
        assert!(e.contains("WrongPath"), "{e}");

        // Revoke the client's certificate: refused on the next handshake.
        revocations.apply(
            &SetEvent::new(
                Revocation::X509 { serial: client_serial, issuer: None, spiffe_id: None },
                Some(NOW),
            ),
            None,
            NOW,
        );
        let (_, s) = handshake(client_cfg.clone(), server_cfg.clone()).await;
        assert!(s.unwrap_err().contains("Revoked"));
        // A rotated client SVID is accepted again.
        let fresh = ca.leaf(
            "spiffe://example.org/web",
            LeafOpts { window: Some((NOW - 60, NOW + 3600)), ..Default::default() },
        );
        client.svid.update(fresh.chain, fresh.key_der).unwrap();
        let (c, s) = handshake(client_cfg.clone(), server_cfg.clone()).await;
        assert!(c.is_ok() && s.is_ok(), "{c:?} {s:?}");

        // A stale feed fails closed.
        clock.advance(time::Duration::seconds(61));
        let (c, _) = handshake(client_cfg.clone(), server_cfg.clone()).await;
        let e = c.unwrap_err();
        assert!(e.contains("Stale"), "{e}");
        revocations.heard(NOW + 61);

        // Bundle rotation: a new CA replaces the old one in the source; SVIDs of the
        // old CA are refused and the new CA's accepted, with the same configs.
        let ca2 = TestCa::new("example.org");
        bundles.set(TrustBundle::new(ca2.bundle(), JwtKeySet::new()));
        let (c, _) = handshake(client_cfg.clone(), server_cfg.clone()).await;
        assert!(c.is_err(), "the server's old-CA SVID is no longer trusted");
        let fresh = ca2.leaf(
            "spiffe://example.org/web",
            LeafOpts { window: Some((NOW - 60, NOW + 3600)), ..Default::default() },
        );
        client.svid.update(fresh.chain, fresh.key_der).unwrap();
        let fresh = ca2.leaf(
            "spiffe://example.org/api",
            LeafOpts { window: Some((NOW - 60, NOW + 3600)), ..Default::default() },
        );
        server.svid.update(fresh.chain, fresh.key_der).unwrap();
        let (c, s) = handshake(client_cfg, server_cfg).await;
        assert!(c.is_ok() && s.is_ok(), "{c:?} {s:?}");
    }
}
