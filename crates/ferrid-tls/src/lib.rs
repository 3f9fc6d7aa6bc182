//! TLS for Ferrid's node API: the server's certificate (its own SVID, renewed by the
//! server), client-certificate verification against the current trust bundle (optional
//! at the TLS layer, because node attestation runs before the agent has an SVID, and
//! required by every later RPC), and the client side used by agents and the CLI:
//! the server is authenticated by its SPIFFE ID, not by a host name.
#![forbid(unsafe_code)]
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use ferrid_types::{SpiffeId, TrustDomain};
use ferrid_validate::tls::{SpiffeClientVerifier, SpiffeServerVerifier, VerifierConfig};
use ferrid_validate::{BundleSet, JwtKeySet, TrustBundle, X509Bundle, authorize};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tonic::transport::server::Connected;

pub mod authority;
mod client;
pub mod serving;
pub use client::node_channel;
pub use rustls;

/// The crypto provider used everywhere in Ferrid (aws-lc-rs).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// What a node-API handler knows about its caller's connection.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// Remote address.
    pub remote: Option<std::net::SocketAddr>,
    /// The client's leaf certificate, parsed once when the connection is accepted (so
    /// handlers do not parse it on every call); `None` without a client certificate,
    /// `Some(Err)` when it is not a usable X.509-SVID.
    pub leaf: Option<Arc<Result<PeerLeaf, String>>>,
}

/// What handlers need from a caller's X.509-SVID (its SPIFFE ID, serial and
/// validity), read once per connection; the TLS verifier has validated it already.
pub type PeerLeaf = ferrid_validate::x509::LeafFacts;

/// A server-side TLS connection that exposes [`PeerInfo`] to tonic handlers.
#[derive(Debug)]
pub struct TlsConn(pub tokio_rustls::server::TlsStream<TcpStream>);

impl Connected for TlsConn {
    type ConnectInfo = PeerInfo;
    fn connect_info(&self) -> PeerInfo {
        let (tcp, session) = self.0.get_ref();
        PeerInfo { remote: tcp.peer_addr().ok(), leaf: peer_leaf(session) }
    }
}

/// The client's leaf certificate on an accepted connection, read once: `None` without
/// a client certificate, `Some(Err)` when it is not a usable X.509-SVID. The TLS
/// verifier has validated the chain already; callers still check revocation and, on
/// long-lived connections, expiry.
pub fn peer_leaf(session: &rustls::ServerConnection) -> Option<Arc<Result<PeerLeaf, String>>> {
    session.peer_certificates().map(|c| {
        Arc::new(match c.first() {
            Some(leaf) => ferrid_validate::x509::read_leaf(leaf.as_ref()).map_err(|e| e.to_string()),
            None => Err("empty client certificate chain".into()),
        })
    })
}

/// The admin socket caller's credentials (SO_PEERCRED).
#[derive(Debug, Clone, Copy)]
pub struct UdsPeer {
    /// The caller's user ID.
    pub uid: Option<u32>,
    /// The caller's group ID.
    pub gid: Option<u32>,
    /// The caller's process ID.
    pub pid: Option<i32>,
}

/// A Unix-socket connection that exposes [`UdsPeer`] to tonic handlers and repairs the
/// `:authority` that gRPC C-core, Java and Swift clients send over Unix sockets (see
/// [`authority`]), so py-spiffe and friends work against tonic.
#[derive(Debug)]
pub struct UdsConn {
    io: UnixStream,
    rewriter: authority::AuthorityRewriter,
    out: Vec<u8>,
    out_pos: usize,
}

impl UdsConn {
    /// Wraps an accepted connection.
    pub fn new(io: UnixStream) -> Self {
        Self { io, rewriter: authority::AuthorityRewriter::new(), out: Vec::new(), out_pos: 0 }
    }
}

impl Connected for UdsConn {
    type ConnectInfo = UdsPeer;
    fn connect_info(&self) -> UdsPeer {
        let cred = self.io.peer_cred().ok();
        UdsPeer { uid: cred.map(|c| c.uid()), gid: cred.map(|c| c.gid()), pid: cred.and_then(|c| c.pid()) }
    }
}

impl AsyncRead for UdsConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.out_pos < this.out.len() {
                let n = buf.remaining().min(this.out.len() - this.out_pos);
                buf.put_slice(&this.out[this.out_pos..this.out_pos + n]);
                this.out_pos += n;
                if this.out_pos == this.out.len() {
                    this.out.clear();
                    this.out_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            let mut raw = [0u8; 8192];
            let mut rb = ReadBuf::new(&mut raw);
            std::task::ready!(Pin::new(&mut this.io).poll_read(cx, &mut rb))?;
            if rb.filled().is_empty() {
                return Poll::Ready(Ok(()));
            }
            this.rewriter
                .feed(rb.filled(), &mut this.out)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        }
    }
}

impl AsyncWrite for UdsConn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

macro_rules! delegate_io {
    ($t:ty) => {
        impl AsyncRead for $t {
            fn poll_read(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<std::io::Result<()>> {
                Pin::new(&mut self.0).poll_read(cx, buf)
            }
        }
        impl AsyncWrite for $t {
            fn poll_write(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<std::io::Result<usize>> {
                Pin::new(&mut self.0).poll_write(cx, buf)
            }
            fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
                Pin::new(&mut self.0).poll_flush(cx)
            }
            fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
                Pin::new(&mut self.0).poll_shutdown(cx)
            }
            fn poll_write_vectored(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[std::io::IoSlice<'_>],
            ) -> Poll<std::io::Result<usize>> {
                Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
            }
            fn is_write_vectored(&self) -> bool {
                self.0.is_write_vectored()
            }
        }
    };
}
delegate_io!(TlsConn);

/// Errors building TLS configurations.
#[derive(Debug, thiserror::Error)]
#[error("tls: {0}")]
pub struct TlsError(pub String);

fn tls_err(e: impl std::fmt::Display) -> TlsError {
    TlsError(e.to_string())
}

/// The verifiers' view of one trust domain's X.509 authorities.
fn bundle_of(td: &TrustDomain, authorities: &[Vec<u8>]) -> Result<Arc<BundleSet>, TlsError> {
    if authorities.is_empty() {
        return Err(TlsError("the trust bundle has no X.509 authorities".into()));
    }
    let x509 = X509Bundle::new(td.clone(), authorities.to_vec()).map_err(tls_err)?;
    Ok(Arc::new(BundleSet::of([TrustBundle::new(x509, JwtKeySet::default())])))
}

fn verifier_config(
    td: &TrustDomain,
    authorities: &[Vec<u8>],
    authorizer: Arc<dyn ferrid_validate::Authorizer>,
) -> Result<VerifierConfig, TlsError> {
    Ok(VerifierConfig {
        trust_domain: td.clone(),
        bundles: bundle_of(td, authorities)?,
        authorizer,
        revocations: None,
        clock: Arc::new(ferrid_types::SystemClock),
    })
}

/// Builds the node API's rustls server configuration: presents `chain`/`key`, asks
/// for (but does not require) a client certificate, and verifies one that is
/// presented as an X.509-SVID of `trust_domain` chaining to `authorities` (the same
/// verifier relying services use, `ferrid_validate::tls::SpiffeClientVerifier`).
/// Handlers require the certificate for every call but node attestation, and check
/// revocation per call.
pub fn server_config(
    trust_domain: &TrustDomain,
    chain: &[Vec<u8>],
    key_pkcs8: &[u8],
    authorities: &[Vec<u8>],
) -> Result<rustls::ServerConfig, TlsError> {
    let provider = provider();
    let verifier = SpiffeClientVerifier::optional(verifier_config(
        trust_domain,
        authorities,
        Arc::new(authorize::any()),
    )?);
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(tls_err)?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_single_cert(
            chain.iter().map(|c| CertificateDer::from(c.clone())).collect(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pkcs8.to_vec())),
        )
        .map_err(tls_err)?;
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(cfg)
}

/// Builds a client configuration that authenticates the server as an X.509-SVID for
/// `expected_server` chaining to `authorities` (the verifier relying services use,
/// `ferrid_validate::tls::SpiffeServerVerifier`), optionally presenting a client
/// certificate (an agent SVID).
pub fn client_config(
    authorities: &[Vec<u8>],
    expected_server: SpiffeId,
    client: Option<(&[Vec<u8>], &[u8])>,
) -> Result<rustls::ClientConfig, TlsError> {
    let td = expected_server.trust_domain().clone();
    let verifier = SpiffeServerVerifier::new(verifier_config(
        &td,
        authorities,
        Arc::new(authorize::exact(expected_server)),
    )?);
    client_config_with(Arc::new(verifier), provider(), client)
}

/// A client configuration that trusts any server certificate: only for an agent's first
/// contact with `insecure_bootstrap = true`, in a lab. The handshake signature is still
/// checked, so the peer holds the key of the certificate it shows.
pub fn insecure_client_config(client: Option<(&[Vec<u8>], &[u8])>) -> Result<rustls::ClientConfig, TlsError> {
    let provider = provider();
    client_config_with(Arc::new(AnyServer(provider.clone())), provider, client)
}

fn client_config_with(
    verifier: Arc<dyn ServerCertVerifier>,
    provider: Arc<rustls::crypto::CryptoProvider>,
    client: Option<(&[Vec<u8>], &[u8])>,
) -> Result<rustls::ClientConfig, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(tls_err)?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut cfg = match client {
        Some((chain, key)) => builder
            .with_client_auth_cert(
                chain.iter().map(|c| CertificateDer::from(c.clone())).collect(),
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.to_vec())),
            )
            .map_err(tls_err)?,
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(cfg)
}

#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
