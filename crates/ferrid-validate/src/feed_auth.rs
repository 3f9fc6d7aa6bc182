//! How a feed client proves who it is to Ferrid's server: the SSF poll endpoint and
//! the gRPC `Revocations/Watch` serve only callers holding an SVID of the trust domain
//! (docs/revocation.md, "Who may poll and watch").
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rustls::client::ResolvesClientCert;
use rustls::sign::CertifiedKey;
use rustls::{SignatureScheme, pki_types};

use crate::feeds::FeedError;
use crate::tls::SvidResolver;

type TokenFuture<'a> = Pin<Box<dyn Future<Output = Result<String, FeedError>> + Send + 'a>>;

/// Where bearer JWT-SVIDs come from, asked before every request.
trait BearerSource: Send + Sync {
    fn token<'a>(&'a self, audience: &'a str) -> TokenFuture<'a>;
}

#[derive(Clone)]
enum Credential {
    X509(Arc<dyn ResolvesClientCert>),
    Bearer(Arc<dyn BearerSource>),
}

/// A feed client's credential: an X.509-SVID presented in the TLS handshake, or a
/// JWT-SVID sent as `Authorization: Bearer` with the server's SPIFFE ID as audience.
/// Every source follows rotation: the Workload API sources ask the agent, the file
/// sources re-read their files when they change.
#[derive(Clone)]
pub struct FeedAuth(Credential);

impl fmt::Debug for FeedAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.0 {
            Credential::X509(_) => "FeedAuth::X509",
            Credential::Bearer(_) => "FeedAuth::Bearer",
        })
    }
}

impl FeedAuth {
    /// Mutual TLS presenting the SVID `resolver` holds (update it at rotation).
    pub fn x509(resolver: Arc<SvidResolver>) -> Self {
        Self(Credential::X509(resolver))
    }

    /// Mutual TLS presenting the X.509-SVID in `cert_pem` (the chain, leaf first) with
    /// the PKCS#8 key in `key_pem`, re-read whenever either file changes (the files
    /// spiffe-helper or a scheduled `ferrid agent fetch x509 --write` keeps current). Fails now if
    /// they cannot be read.
    pub fn x509_files(cert_pem: impl Into<PathBuf>, key_pem: impl Into<PathBuf>) -> Result<Self, FeedError> {
        let files = X509Files { cert: cert_pem.into(), key: key_pem.into(), loaded: Mutex::new(None) };
        files.current()?;
        Ok(Self(Credential::X509(Arc::new(files))))
    }

    /// A bearer JWT-SVID read from `path` before every request (a file something else
    /// keeps fresh, e.g. a scheduled `ferrid agent fetch jwt`).
    pub fn jwt_file(path: impl Into<PathBuf>) -> Self {
        Self(Credential::Bearer(Arc::new(JwtFile(path.into()))))
    }

    /// Mutual TLS presenting the X.509-SVID the Workload API gives this workload (the
    /// `spiffe` crate's source, following rotation).
    #[cfg(feature = "workload-api")]
    pub fn x509_source(source: spiffe::X509Source) -> Self {
        Self(Credential::X509(Arc::new(SourceSvid { source, last: Mutex::new(None) })))
    }

    /// A bearer JWT-SVID for the server's SPIFFE ID fetched from the Workload API before
    /// every request; `spiffe_id` picks one of the workload's identities (`None`: the
    /// agent's default).
    #[cfg(feature = "workload-api")]
    pub fn jwt_source(source: spiffe::JwtSource, spiffe_id: Option<ferrid_types::SpiffeId>) -> Self {
        Self(Credential::Bearer(Arc::new(SourceJwt { source, spiffe_id })))
    }

    /// The client certificate resolver, for mutual TLS.
    pub(crate) fn client_cert(&self) -> Option<Arc<dyn ResolvesClientCert>> {
        match &self.0 {
            Credential::X509(r) => Some(r.clone()),
            Credential::Bearer(_) => None,
        }
    }

    /// The `Authorization` value for a request to the server `audience`, if this is a
    /// bearer credential.
    pub(crate) async fn authorization(&self, audience: &str) -> Result<Option<String>, FeedError> {
        match &self.0 {
            Credential::X509(_) => Ok(None),
            Credential::Bearer(b) => Ok(Some(format!("Bearer {}", b.token(audience).await?))),
        }
    }
}

fn credential_err(what: &str, e: impl fmt::Display) -> FeedError {
    FeedError::Credential(format!("{what}: {e}"))
}

/// An X.509-SVID in two PEM files, reloaded when either's modification time changes.
#[derive(Debug)]
struct X509Files {
    cert: PathBuf,
    key: PathBuf,
    loaded: Mutex<Option<Loaded>>,
}

/// The files' modification times when last read, and what they held.
#[derive(Debug)]
struct Loaded {
    stamps: (Option<SystemTime>, Option<SystemTime>),
    key: Arc<CertifiedKey>,
}

fn modified(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, FeedError> {
    std::fs::read(path).map_err(|e| credential_err(&format!("reading the {what} {}", path.display()), e))
}

/// The certificate chain (leaf first, DER) in the PEM file `path`.
fn pem_chain(path: &Path) -> Result<Vec<Vec<u8>>, FeedError> {
    use pki_types::pem::PemObject;
    let bytes = read(path, "certificate file")?;
    let chain = pki_types::CertificateDer::pem_slice_iter(&bytes)
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| credential_err(&format!("the certificate file {}", path.display()), format!("{e:?}")))?;
    if chain.is_empty() {
        return Err(credential_err(
            &format!("the certificate file {}", path.display()),
            "holds no CERTIFICATE",
        ));
    }
    Ok(chain)
}

/// The PKCS#8 private key (`BEGIN PRIVATE KEY`) in the PEM file `path`.
fn pem_key(path: &Path) -> Result<Vec<u8>, FeedError> {
    use pki_types::pem::PemObject;
    let bytes = read(path, "key file")?;
    pki_types::PrivatePkcs8KeyDer::from_pem_slice(&bytes).map(|k| k.secret_pkcs8_der().to_vec()).map_err(
        |e| {
            credential_err(
                &format!("the key file {}", path.display()),
                format!("no PKCS#8 PRIVATE KEY ({e:?})"),
            )
        },
    )
}

impl X509Files {
    fn current(&self) -> Result<Arc<CertifiedKey>, FeedError> {
        let stamps = (modified(&self.cert), modified(&self.key));
        let mut loaded = self.loaded.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(l) = loaded.as_ref()
            && l.stamps == stamps
        {
            return Ok(l.key.clone());
        }
        let chain = pem_chain(&self.cert)?;
        let key = pem_key(&self.key)?;
        let ck = Arc::new(crate::tls::certified(chain, key).map_err(|e| {
            credential_err(&format!("{} with {}", self.cert.display(), self.key.display()), e)
        })?);
        *loaded = Some(Loaded { stamps, key: ck.clone() });
        Ok(ck)
    }
}

impl ResolvesClientCert for X509Files {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        match self.current() {
            Ok(k) => Some(k),
            Err(e) => {
                tracing::warn!(error = %e, "cannot load the feed client's X.509-SVID");
                // The last good one, if any: the server refuses it if it has expired.
                self.loaded.lock().ok().and_then(|l| l.as_ref().map(|l| l.key.clone()))
            }
        }
    }

    fn has_certs(&self) -> bool {
        true
    }
}

struct JwtFile(PathBuf);

impl BearerSource for JwtFile {
    fn token<'a>(&'a self, _: &'a str) -> TokenFuture<'a> {
        Box::pin(async move {
            let t = tokio::fs::read_to_string(&self.0)
                .await
                .map_err(|e| credential_err(&format!("reading the JWT-SVID file {}", self.0.display()), e))?;
            let t = t.trim();
            if t.is_empty() {
                return Err(credential_err(&format!("the JWT-SVID file {}", self.0.display()), "is empty"));
            }
            Ok(t.to_owned())
        })
    }
}

#[cfg(feature = "workload-api")]
struct SourceSvid {
    source: spiffe::X509Source,
    last: Mutex<Option<(Arc<spiffe::X509Svid>, Arc<CertifiedKey>)>>,
}

#[cfg(feature = "workload-api")]
impl fmt::Debug for SourceSvid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SourceSvid")
    }
}

#[cfg(feature = "workload-api")]
impl ResolvesClientCert for SourceSvid {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        let svid = self.source.try_svid()?;
        let mut last = self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((s, k)) = last.as_ref()
            && Arc::ptr_eq(s, &svid)
        {
            return Some(k.clone());
        }
        let chain = svid.cert_chain().iter().map(|c| c.as_bytes().to_vec()).collect();
        match crate::tls::certified(chain, svid.private_key().as_bytes().to_vec()) {
            Ok(k) => {
                let k = Arc::new(k);
                *last = Some((svid, k.clone()));
                Some(k)
            }
            Err(e) => {
                tracing::warn!(error = %e, "the Workload API's X.509-SVID is not usable for TLS");
                None
            }
        }
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[cfg(feature = "workload-api")]
struct SourceJwt {
    source: spiffe::JwtSource,
    spiffe_id: Option<ferrid_types::SpiffeId>,
}

#[cfg(feature = "workload-api")]
impl BearerSource for SourceJwt {
    fn token<'a>(&'a self, audience: &'a str) -> TokenFuture<'a> {
        Box::pin(async move {
            let svid = self
                .source
                .fetch_jwt_svid_with_id([audience], self.spiffe_id.as_ref())
                .await
                .map_err(|e| credential_err("fetching a JWT-SVID from the Workload API", e))?;
            Ok(svid.token().to_owned())
        })
    }
}
