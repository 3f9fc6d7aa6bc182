//! Test helpers: local HTTP(S) servers that stand in for third-party APIs in tests.
//!
//! There is no Kubernetes API server, kubelet or public OIDC issuer on a test machine;
//! tests serve the documented API shapes from an [`axum::Router`] on loopback instead,
//! over plain HTTP or over TLS with a throwaway CA ([`TestTls`]). [`oidc::Issuer`] is
//! such a server for an OIDC issuer (discovery and JWKS), signing tokens with a
//! [`jwt::Signer`]. [`postgres::Server`] is a real PostgreSQL server on a private socket.
#![forbid(unsafe_code)]

pub mod jwt;
pub mod oidc;
pub mod postgres;

use std::net::SocketAddr;
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;

/// A throwaway CA and a server certificate it issued.
pub struct TestTls {
    /// The CA certificate, PEM: what clients should trust.
    pub ca_pem: String,
    /// The server configuration presenting the issued certificate.
    pub server_config: Arc<rustls::ServerConfig>,
}

impl TestTls {
    /// A new CA and a certificate for `names` (DNS names or IP addresses).
    pub fn new(names: &[&str]) -> Self {
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, "ferrid test CA");
        let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
        let ca_issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().expect("server key");
        let params = rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("server params");
        let cert = params.signed_by(&key, &ca_issuer).expect("server certificate");
        let server_config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .expect("server config");
        Self { ca_pem: ca.pem(), server_config: Arc::new(server_config) }
    }
}

/// Serves `router` on a fresh loopback port, over TLS when `tls` is given, until the
/// runtime stops. Returns the bound address.
pub async fn serve(router: axum::Router, tls: Option<Arc<rustls::ServerConfig>>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let addr = listener.local_addr().expect("local address");
    serve_on(listener, router, tls);
    addr
}

/// Serves `router` on `listener` (see [`serve`]), from a spawned task.
pub(crate) fn serve_on(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            let service = TowerToHyperService::new(router.clone());
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let builder = hyper::server::conn::http1::Builder::new();
                match acceptor {
                    Some(a) => {
                        if let Ok(stream) = a.accept(tcp).await {
                            let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                        }
                    }
                    None => {
                        let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
                    }
                }
            });
        }
    });
}

/// An upstream CA for servers that share one (`ca.upstream_cert_file` /
/// `ca.upstream_key_file`): a self-signed EC P-256 root with rcgen's default validity,
/// written as `upstream.pem` and `upstream.key` (PKCS#8) into `dir`. Returns both paths.
pub fn write_upstream_ca(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let key = rcgen::KeyPair::generate().expect("generate upstream key");
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    p.distinguished_name.push(rcgen::DnType::CommonName, "Ferrid test upstream CA");
    let cert = p.self_signed(&key).expect("self-sign upstream CA");
    let (c, k) = (dir.join("upstream.pem"), dir.join("upstream.key"));
    std::fs::write(&c, cert.pem()).expect("write upstream.pem");
    std::fs::write(&k, key.serialize_pem()).expect("write upstream.key");
    (c, k)
}
