//! Missing intermediates fetched through the signer certificate's Authority Information
//! Access extension (RFC 5280 §4.2.2.1: `id-ad-caIssuers`, an HTTP URI of the issuing
//! CA's certificate), as browsers do when a server sends its leaf only. IMDS documents
//! carry the leaf only, and Microsoft changes issuing CAs more often than operators change
//! `intermediates_file`.
//!
//! The URI comes from a certificate nobody has verified yet: whoever sends a document
//! chooses it. So:
//!
//! - only `http`/`https` URIs whose host (and port) is in `aia_allowed_hosts` are
//!   fetched, at most [`MAX_URIS_PER_CERTIFICATE`] per certificate; redirects are
//!   followed only to allowed hosts, at most [`MAX_REDIRECTS`];
//! - each request has a [`FETCH_TIMEOUT`], each response at most [`MAX_RESPONSE_BYTES`],
//!   and must be one to [`MAX_CERTS_PER_RESPONSE`] certificates (DER, PEM or PKCS#7
//!   certs-only, the `.crt`, `.pem` and `.p7c` forms CAs publish);
//! - a fetched certificate is only a candidate intermediate: trust still comes from the
//!   roots alone, and the chain is verified again with it;
//! - a URL is fetched at most once per [`RETRY_INTERVAL`] (its outcome, certificates or
//!   error, is reused meanwhile), and at most [`MAX_FETCHES_PER_MINUTE`] fetches are made
//!   per minute in all, so a flood of documents with made-up URIs is not a flood of
//!   outbound requests;
//! - certificates that completed a verified chain are kept for [`CACHE_TTL`], at most
//!   [`CACHE_ENTRIES`] URLs (entries never confirmed are evicted first, so made-up URIs
//!   cannot push out a real intermediate).
//!
//! Times are the `now` (Unix seconds) the caller passes, the attestation's clock.
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cms::cert::x509::Certificate;
use cms::cert::x509::ext::pkix::AuthorityInfoAccessSyntax;
use cms::cert::x509::ext::pkix::name::GeneralName;
use der::oid::ObjectIdentifier;
use der::{Decode, Encode};
use ferrid_attest::AttestError;
use rustls_pki_types::CertificateDer;

/// The hosts AIA URIs may point to by default: those Microsoft lists for certificate
/// downloads of Azure's CAs ("Azure Certificate Authority details", the AIA firewall
/// allow list).
pub const DEFAULT_AIA_ALLOWED_HOSTS: [&str; 5] = [
    "www.microsoft.com",
    "caissuers.microsoft.com",
    "cacerts.digicert.com",
    "cacerts.digicert.cn",
    "cacerts.geotrust.com",
];
/// Timeout of each fetch (connection and whole response).
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest response accepted.
pub const MAX_RESPONSE_BYTES: usize = 16 * 1024;
/// caIssuers URIs considered per certificate (the rest are ignored).
pub const MAX_URIS_PER_CERTIFICATE: usize = 4;
/// Certificates accepted in one response.
pub const MAX_CERTS_PER_RESPONSE: usize = 4;
/// Redirects followed (each to an allowed host).
pub const MAX_REDIRECTS: usize = 3;
/// URLs remembered.
pub const CACHE_ENTRIES: usize = 32;
/// How long certificates that completed a verified chain are reused, in seconds.
pub const CACHE_TTL: i64 = 24 * 3600;
/// Shortest time between two fetches of one URL, in seconds.
pub const RETRY_INTERVAL: i64 = 60;
/// Fetches per minute, all URLs together.
pub const MAX_FETCHES_PER_MINUTE: usize = 10;

const AUTHORITY_INFO_ACCESS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.1.1");
const CA_ISSUERS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.2");
const SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");

/// The `id-ad-caIssuers` URIs of a DER certificate's Authority Information Access
/// extension, in the certificate's order (OCSP and other access methods skipped). Empty
/// when the certificate has no such extension.
pub fn ca_issuer_uris(cert_der: &[u8]) -> Result<Vec<String>, String> {
    let cert = Certificate::from_der(cert_der).map_err(|e| format!("not a DER certificate: {e}"))?;
    let Some(exts) = cert.tbs_certificate().extensions() else { return Ok(Vec::new()) };
    let mut uris = Vec::new();
    for ext in exts.iter().filter(|e| e.extn_id == AUTHORITY_INFO_ACCESS) {
        let aia = AuthorityInfoAccessSyntax::from_der(ext.extn_value.as_bytes())
            .map_err(|e| format!("authorityInfoAccess extension: {e}"))?;
        for ad in aia.0.iter().filter(|ad| ad.access_method == CA_ISSUERS) {
            if let GeneralName::UniformResourceIdentifier(uri) = &ad.access_location {
                uris.push(uri.as_str().to_owned());
            }
        }
    }
    Ok(uris)
}

/// One entry of `aia_allowed_hosts`: a host name or IP address, optionally with a port.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AllowedHost {
    /// As the `url` crate serialises it (lower case; IPv6 in brackets).
    host: String,
    /// `None`: the scheme's default port only.
    port: Option<u16>,
}

impl AllowedHost {
    fn parse(entry: &str) -> Result<Self, String> {
        let bad = || format!("aia_allowed_hosts: {entry:?} is not a host name or host:port");
        if entry.is_empty()
            || entry.contains(['/', '@', '?', '#', '\\'])
            || entry.contains(char::is_whitespace)
        {
            return Err(bad());
        }
        let u = url::Url::parse(&format!("http://{entry}/")).map_err(|_| bad())?;
        let host = u.host_str().filter(|h| !h.is_empty()).ok_or_else(bad)?.to_owned();
        // An explicit :80 is kept as a port (Url drops the scheme's default).
        let port = match entry.rsplit_once(':') {
            Some((_, p)) if !entry.ends_with(']') => Some(p.parse::<u16>().map_err(|_| bad())?),
            _ => None,
        };
        Ok(Self { host, port })
    }

    fn matches(&self, u: &url::Url) -> bool {
        let default = if u.scheme() == "https" { 443 } else { 80 };
        u.host_str() == Some(self.host.as_str())
            && u.port_or_known_default() == Some(self.port.unwrap_or(default))
    }
}

/// `host`, or `host:port` when the port is not the scheme's default.
fn shown_host(u: &url::Url) -> String {
    let host = u.host_str().unwrap_or_default();
    match u.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    }
}

/// Whether `u` may be fetched: `Err` says why not.
fn check_url(allowed: &[AllowedHost], u: &url::Url) -> Result<(), String> {
    if u.scheme() != "http" && u.scheme() != "https" {
        return Err(format!("scheme {} is not http or https", u.scheme()));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err("the URL carries credentials".into());
    }
    if !allowed.iter().any(|a| a.matches(u)) {
        return Err(format!("AIA host {} is not in aia_allowed_hosts", shown_host(u)));
    }
    Ok(())
}

/// Why a fetch gave no certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    /// The network or the server failed (connection, timeout, HTTP 5xx, 408, 429): retry
    /// later.
    Unavailable(String),
    /// The answer is not what a CA publishes (other HTTP status, a redirect elsewhere,
    /// not certificates, too large).
    Invalid(String),
    /// Not fetched: the URI is not allowed (host not in `aia_allowed_hosts`, scheme).
    Refused(String),
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unavailable(m) | Self::Invalid(m) | Self::Refused(m) => f.write_str(m),
        }
    }
}

/// An error and its sources, `a: b: c` (reqwest's own message omits the cause).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let c = cause.to_string();
        if !s.contains(&c) {
            s.push_str(": ");
            s.push_str(&c);
        }
        next = cause.source();
    }
    s
}

/// The certificates of a CA's certificate download: one DER certificate, PEM
/// `CERTIFICATE` blocks, or a DER PKCS#7 certs-only SignedData. Each must parse as an
/// X.509 certificate.
pub fn parse_certificates(body: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let trimmed = body.trim_ascii_start();
    let certs: Vec<Vec<u8>> = if trimmed.starts_with(b"-----BEGIN") {
        let blocks = pem::parse_many(trimmed).map_err(|e| format!("PEM: {e}"))?;
        blocks.into_iter().filter(|b| b.tag() == "CERTIFICATE").map(|b| b.into_contents()).collect()
    } else if Certificate::from_der(body).is_ok() {
        vec![body.to_vec()]
    } else if let Ok(ci) = cms::content_info::ContentInfo::from_der(body)
        && ci.content_type == SIGNED_DATA
    {
        let sd: cms::signed_data::SignedData =
            ci.content.decode_as().map_err(|e| format!("PKCS#7: not a SignedData: {e}"))?;
        let mut certs = Vec::new();
        for choice in sd.certificates.iter().flat_map(|set| set.0.iter()) {
            if let cms::cert::CertificateChoices::Certificate(c) = choice {
                certs.push(c.to_der().map_err(|e| format!("PKCS#7: re-encoding a certificate: {e}"))?);
            }
        }
        certs
    } else {
        return Err("not a certificate (DER, PEM or PKCS#7 certs-only)".into());
    };
    if certs.is_empty() {
        return Err("no certificates in the response".into());
    }
    if certs.len() > MAX_CERTS_PER_RESPONSE {
        return Err(format!("{} certificates; at most {MAX_CERTS_PER_RESPONSE} are accepted", certs.len()));
    }
    certs
        .into_iter()
        .map(|der| {
            let c = CertificateDer::from(der);
            webpki::EndEntityCert::try_from(&c).map_err(|e| format!("not a usable certificate: {e}"))?;
            Ok(c)
        })
        .collect()
}

fn subject(cert: &CertificateDer<'_>) -> String {
    Certificate::from_der(cert.as_ref())
        .map(|c| c.tbs_certificate().subject().to_string())
        .unwrap_or_default()
}

#[derive(Debug, Clone)]
struct Entry {
    /// `now` of the fetch.
    at: i64,
    outcome: Result<Vec<CertificateDer<'static>>, FetchError>,
    /// Its certificates completed a verified chain.
    confirmed: bool,
}

impl Entry {
    fn usable(&self, now: i64) -> bool {
        let age = now - self.at;
        age >= 0 && (age < RETRY_INTERVAL || (self.confirmed && age < CACHE_TTL))
    }
}

#[derive(Debug, Default)]
struct State {
    entries: HashMap<String, Entry>,
    /// `now` of each fetch in the last minute.
    recent: VecDeque<i64>,
    /// Fetches made (requests sent), for tests and metrics.
    fetches: u64,
}

/// What the caIssuers URIs of a certificate gave.
#[derive(Debug, Default)]
pub struct Fetched {
    /// Per URL that gave certificates, its certificates.
    pub certs: Vec<(String, Vec<CertificateDer<'static>>)>,
    /// Per URL that failed or was refused, why.
    pub failures: Vec<(String, FetchError)>,
}

impl Fetched {
    /// All fetched certificates.
    pub fn all(&self) -> Vec<CertificateDer<'static>> {
        self.certs.iter().flat_map(|(_, c)| c.iter().cloned()).collect()
    }

    /// The URLs whose certificates are among `used` (DER).
    pub fn sources_of(&self, used: &[Vec<u8>]) -> Vec<String> {
        self.certs
            .iter()
            .filter(|(_, certs)| certs.iter().any(|c| used.iter().any(|u| u.as_slice() == c.as_ref())))
            .map(|(url, _)| url.clone())
            .collect()
    }

    /// `http://a not fetched: <why>; fetching http://b failed: <error>`.
    pub fn describe_failures(&self) -> String {
        let one = |(u, e): &(String, FetchError)| match e {
            FetchError::Refused(why) => format!("{u} not fetched: {why}"),
            _ => format!("fetching the intermediate from {u} failed: {e}"),
        };
        self.failures.iter().map(one).collect::<Vec<_>>().join("; ")
    }
}

/// A caller's hold on the lock of one URL; the last one out removes the lock from the
/// map, also when the caller is cancelled mid-fetch.
struct InFlight<'a> {
    map: &'a Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    key: String,
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut map = self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Only the map and this caller hold the lock (clones are made under the map's
        // mutex): nobody waits for it.
        if Arc::strong_count(&self.lock) == 2
            && map.get(&self.key).is_some_and(|l| Arc::ptr_eq(l, &self.lock))
        {
            map.remove(&self.key);
        }
    }
}

/// Fetches and caches intermediates named by certificates' caIssuers URIs. Cheap to
/// share; concurrent callers asking for one URL wait for a single fetch.
pub struct Fetcher {
    client: reqwest::Client,
    allowed: Arc<Vec<AllowedHost>>,
    state: Mutex<State>,
    /// One lock per URL being fetched.
    in_flight: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetcher").field("allowed", &self.allowed).finish_non_exhaustive()
    }
}

impl Fetcher {
    /// A fetcher for URIs on `allowed_hosts` (`host` for the scheme's default port, or
    /// `host:port`). Errors begin with `aia_allowed_hosts`. Nothing is fetched yet.
    pub fn new(allowed_hosts: &[String]) -> Result<Self, String> {
        if allowed_hosts.is_empty() {
            return Err(
                "aia_allowed_hosts: empty; no intermediate could be fetched (set fetch_intermediates = false instead)"
                    .into(),
            );
        }
        let allowed =
            Arc::new(allowed_hosts.iter().map(|h| AllowedHost::parse(h)).collect::<Result<Vec<_>, _>>()?);
        let for_redirects = allowed.clone();
        let policy = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() > MAX_REDIRECTS || check_url(&for_redirects, attempt.url()).is_err() {
                attempt.stop()
            } else {
                attempt.follow()
            }
        });
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(FETCH_TIMEOUT)
            .redirect(policy)
            .user_agent(concat!("ferrid/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("fetch_intermediates: HTTP client: {e}"))?;
        Ok(Self { client, allowed, state: Mutex::default(), in_flight: Mutex::default() })
    }

    /// Requests sent so far (each fetch, not each cache hit).
    pub fn fetches(&self) -> u64 {
        self.state.lock().unwrap().fetches
    }

    /// The certificates named by the caIssuers URIs of `cert_der` (the first
    /// [`MAX_URIS_PER_CERTIFICATE`]), fetched or from the cache. A URI that is not
    /// allowed is a failure, not fetched. `Err` when the certificate has no caIssuers URI
    /// (or it cannot be read).
    pub async fn issuers_of(&self, cert_der: &[u8], now: i64) -> Result<Fetched, String> {
        let uris = ca_issuer_uris(cert_der)?;
        if uris.is_empty() {
            return Err("the signer certificate names no caIssuers URI (Authority Information Access) to fetch its issuer from".into());
        }
        let mut out = Fetched::default();
        for uri in uris.iter().take(MAX_URIS_PER_CERTIFICATE) {
            let u = match url::Url::parse(uri) {
                Ok(u) => u,
                Err(e) => {
                    out.failures.push((uri.clone(), FetchError::Refused(format!("not a URL: {e}"))));
                    continue;
                }
            };
            if let Err(why) = check_url(&self.allowed, &u) {
                out.failures.push((uri.clone(), FetchError::Refused(why)));
                continue;
            }
            match self.get(u, now).await {
                Ok(certs) => out.certs.push((uri.clone(), certs)),
                Err(e) => out.failures.push((uri.clone(), e)),
            }
        }
        Ok(out)
    }

    /// Marks the certificates of `urls` as having completed a verified chain: they are
    /// then reused for [`CACHE_TTL`] from their fetch.
    pub fn confirm(&self, urls: &[String]) {
        let mut s = self.state.lock().unwrap();
        for u in urls {
            if let Some(e) = s.entries.get_mut(u) {
                e.confirmed = true;
            }
        }
    }

    fn cached(&self, key: &str, now: i64) -> Option<Result<Vec<CertificateDer<'static>>, FetchError>> {
        let s = self.state.lock().unwrap();
        s.entries.get(key).filter(|e| e.usable(now)).map(|e| e.outcome.clone())
    }

    async fn get(&self, u: url::Url, now: i64) -> Result<Vec<CertificateDer<'static>>, FetchError> {
        let key = u.as_str().to_owned();
        if let Some(o) = self.cached(&key, now) {
            return o;
        }
        let lock = self.in_flight.lock().unwrap().entry(key.clone()).or_default().clone();
        let flight = InFlight { map: &self.in_flight, key: key.clone(), lock };
        {
            let _one = flight.lock.lock().await;
            match self.cached(&key, now) {
                Some(o) => o,
                None => match self.take_budget(now) {
                    Err(e) => Err(e),
                    Ok(()) => {
                        let o = self.fetch(&u).await;
                        match &o {
                            Ok(certs) => {
                                let subjects: Vec<String> = certs.iter().map(subject).collect();
                                tracing::info!(url = %key, subject = ?subjects, "azure: fetched intermediate certificate via AIA");
                            }
                            Err(e) => tracing::debug!(url = %key, error = %e, "azure: AIA fetch failed"),
                        }
                        self.record(&key, o.clone(), now);
                        o
                    }
                },
            }
        }
    }

    fn take_budget(&self, now: i64) -> Result<(), FetchError> {
        let mut s = self.state.lock().unwrap();
        s.recent.retain(|&t| t <= now && now - t < 60);
        if s.recent.len() >= MAX_FETCHES_PER_MINUTE {
            return Err(FetchError::Unavailable(format!(
                "{MAX_FETCHES_PER_MINUTE} AIA fetches in the last minute already, the most allowed; retry later"
            )));
        }
        s.recent.push_back(now);
        s.fetches += 1;
        Ok(())
    }

    fn record(&self, key: &str, outcome: Result<Vec<CertificateDer<'static>>, FetchError>, now: i64) {
        let mut s = self.state.lock().unwrap();
        if !s.entries.contains_key(key) && s.entries.len() >= CACHE_ENTRIES {
            s.entries.retain(|_, e| e.usable(now));
        }
        if !s.entries.contains_key(key) && s.entries.len() >= CACHE_ENTRIES {
            // The oldest entry never confirmed, else the oldest.
            let victim = s
                .entries
                .iter()
                .min_by_key(|(_, e)| (e.confirmed, e.at))
                .map(|(k, _)| k.clone())
                .expect("the cache is full");
            s.entries.remove(&victim);
        }
        s.entries.insert(key.to_owned(), Entry { at: now, outcome, confirmed: false });
    }

    async fn fetch(&self, u: &url::Url) -> Result<Vec<CertificateDer<'static>>, FetchError> {
        // The URL is in the caller's message already.
        let network = |e: reqwest::Error| FetchError::Unavailable(error_chain(&e.without_url()));
        let mut resp = self.client.get(u.clone()).send().await.map_err(network)?;
        let status = resp.status();
        if status.is_redirection() {
            let location = resp.headers().get(reqwest::header::LOCATION).and_then(|l| l.to_str().ok());
            let why = match location.map(|l| resp.url().join(l)) {
                Some(Ok(target)) => match check_url(&self.allowed, &target) {
                    Err(why) => format!("redirect to {target} not followed: {why}"),
                    Ok(()) => {
                        format!("redirect to {target} not followed: more than {MAX_REDIRECTS} redirects")
                    }
                },
                _ => "redirect without a usable Location".to_owned(),
            };
            return Err(FetchError::Invalid(format!("HTTP {status}: {why}")));
        }
        if !status.is_success() {
            let msg = format!("HTTP {status}");
            let transient = status.is_server_error()
                || status == reqwest::StatusCode::REQUEST_TIMEOUT
                || status == reqwest::StatusCode::TOO_MANY_REQUESTS;
            return Err(if transient { FetchError::Unavailable(msg) } else { FetchError::Invalid(msg) });
        }
        let too_large = || FetchError::Invalid(format!("response over {MAX_RESPONSE_BYTES} bytes"));
        if resp.content_length().is_some_and(|n| n > MAX_RESPONSE_BYTES as u64) {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(network)? {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        parse_certificates(&body).map_err(FetchError::Invalid)
    }
}

/// Maps what the fetch gave, when no certificate came of it, to the attestation error:
/// `Unavailable` when a fetch failed for network reasons (and no URI gave certificates),
/// `Rejected` otherwise.
pub(crate) fn nothing_fetched(f: &Fetched) -> AttestError {
    let msg =
        format!("attested document: signer certificate chain: UnknownIssuer; {}", f.describe_failures());
    if f.failures.iter().any(|(_, e)| matches!(e, FetchError::Unavailable(_))) {
        AttestError::Unavailable(msg)
    } else {
        AttestError::Rejected(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn leaf_of(b64: &str) -> Vec<u8> {
        let b64: String = b64.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        let der = base64::engine::general_purpose::STANDARD.decode(b64).unwrap();
        let ci = cms::content_info::ContentInfo::from_der(&der).unwrap();
        let sd: cms::signed_data::SignedData = ci.content.decode_as().unwrap();
        let certs = sd.certificates.unwrap();
        let Some(cms::cert::CertificateChoices::Certificate(c)) = certs.0.iter().next() else { panic!() };
        c.to_der().unwrap()
    }

    #[test]
    fn ca_issuers_of_real_imds_leaves() {
        // The public-cloud leaf of 2022 and the Azure Government leaf of 2023: caIssuers
        // only, the OCSP URIs next to them skipped.
        let regular = leaf_of(include_str!("../tests/data/coder/regular-2022.pkcs7.b64"));
        assert_eq!(
            ca_issuer_uris(&regular).unwrap(),
            ["http://www.microsoft.com/pki/mscorp/Microsoft%20RSA%20TLS%20CA%2001.crt"]
        );
        let gov = leaf_of(include_str!("../tests/data/coder/govcloud-2023.pkcs7.b64"));
        assert_eq!(
            ca_issuer_uris(&gov).unwrap(),
            [
                "http://www.microsoft.com/pkiops/certs/Microsoft%20Azure%20TLS%20Issuing%20CA%2005%20-%20xsign.crt"
            ]
        );
        // A root has no AIA extension.
        let root = pem::parse(include_str!("../certs/digicert_g2_root.pem")).unwrap();
        assert_eq!(ca_issuer_uris(root.contents()).unwrap(), Vec::<String>::new());
        assert!(ca_issuer_uris(b"\x30\x00").is_err());
    }

    #[test]
    fn allowed_hosts_match_host_and_port() {
        let allowed: Vec<AllowedHost> = ["www.microsoft.com", "127.0.0.1:8080", "[::1]", "Example.COM:443"]
            .iter()
            .map(|h| AllowedHost::parse(h).unwrap())
            .collect();
        let ok = |s: &str| check_url(&allowed, &url::Url::parse(s).unwrap());
        for good in [
            "http://www.microsoft.com/pkiops/certs/x.crt",
            "https://www.microsoft.com/x.crt",
            "http://WWW.Microsoft.com:80/x.crt",
            "http://127.0.0.1:8080/int.crt",
            "http://[::1]/x",
            "https://example.com/x",
        ] {
            assert_eq!(ok(good), Ok(()), "{good}");
        }
        for (bad, why) in [
            (
                "http://www.microsoft.com:8080/x",
                "AIA host www.microsoft.com:8080 is not in aia_allowed_hosts",
            ),
            ("http://127.0.0.1/x", "AIA host 127.0.0.1 is not in aia_allowed_hosts"),
            ("http://169.254.169.254/metadata", "AIA host 169.254.169.254 is not"),
            ("http://example.com/x", "AIA host example.com is not"),
            ("http://microsoft.com/x", "AIA host microsoft.com is not"),
            ("http://www.microsoft.com.evil/x", "AIA host www.microsoft.com.evil is not"),
            ("ftp://www.microsoft.com/x", "scheme ftp"),
            ("ldap://www.microsoft.com/x", "scheme ldap"),
            ("http://u:p@www.microsoft.com/x", "credentials"),
        ] {
            let e = ok(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        for bad in ["", "http://x", "a/b", "x y", "user@x", "x:port", "x:99999", "x?y"] {
            assert!(AllowedHost::parse(bad).unwrap_err().starts_with("aia_allowed_hosts"), "{bad}");
        }
        assert!(Fetcher::new(&[]).unwrap_err().starts_with("aia_allowed_hosts"));
    }

    #[test]
    fn responses_parse_as_der_pem_or_pkcs7() {
        let root = pem::parse(include_str!("../certs/digicert_g2_root.pem")).unwrap();
        let der = root.contents();
        assert_eq!(parse_certificates(der).unwrap()[0].as_ref(), der);
        let two =
            [include_str!("../certs/digicert_g2_root.pem"), include_str!("../certs/ms_rsa_tls_ca_01.pem")];
        assert_eq!(parse_certificates(two.concat().as_bytes()).unwrap().len(), 2);
        // The real IMDS document is a PKCS#7 SignedData holding one certificate.
        let doc = include_str!("../tests/data/coder/regular-2022.pkcs7.b64");
        let doc: String = doc.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        let doc = base64::engine::general_purpose::STANDARD.decode(doc).unwrap();
        let got = parse_certificates(&doc).unwrap();
        assert_eq!(got[0].as_ref(), leaf_of(include_str!("../tests/data/coder/regular-2022.pkcs7.b64")));
        for bad in [
            &b""[..],
            b"<html>not found</html>",
            b"\x30\x03\x02\x01\x00",
            b"-----BEGIN X-----\n-----END X-----\n",
        ] {
            assert!(parse_certificates(bad).is_err(), "{bad:?}");
        }
        let five = two.concat().repeat(3);
        assert!(parse_certificates(five.as_bytes()).unwrap_err().contains("at most 4"));
    }

    #[test]
    fn cache_entries_expire_and_failures_are_retried_after_the_interval() {
        let e = |at, confirmed| Entry { at, outcome: Ok(Vec::new()), confirmed };
        assert!(e(100, false).usable(100 + RETRY_INTERVAL - 1));
        assert!(!e(100, false).usable(100 + RETRY_INTERVAL));
        assert!(e(100, true).usable(100 + CACHE_TTL - 1));
        assert!(!e(100, true).usable(100 + CACHE_TTL));
        // A clock that went back: fetch again.
        assert!(!e(100, true).usable(99));
    }

    #[tokio::test]
    async fn a_cancelled_fetch_leaves_no_lock_behind() {
        // A server that accepts and never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((c, _)) = listener.accept().await {
                held.push(c);
            }
        });
        let f = Fetcher::new(&[addr.to_string()]).unwrap();
        let u = url::Url::parse(&format!("http://{addr}/slow.crt")).unwrap();
        let slow = || tokio::time::timeout(Duration::from_millis(200), f.get(u.clone(), 1000));
        let (a, b) = tokio::join!(slow(), slow());
        assert!(a.is_err() && b.is_err(), "both gave up waiting");
        assert!(f.in_flight.lock().unwrap().is_empty());
        assert_eq!(f.fetches(), 1, "the second caller waited for the first one's fetch");
    }

    #[test]
    fn a_full_cache_evicts_stale_then_unconfirmed_then_the_oldest() {
        let f = Fetcher::new(&["www.microsoft.com".to_owned()]).unwrap();
        let url = |i: usize| format!("http://www.microsoft.com/{i}.crt");
        for i in 0..CACHE_ENTRIES {
            f.record(&url(i), Ok(Vec::new()), 1000 + i as i64);
            f.confirm(&[url(i)]);
        }
        // An unconfirmed entry displaces the oldest confirmed one when all are usable...
        f.record("http://www.microsoft.com/new.crt", Err(FetchError::Invalid("x".into())), 1040);
        let has = |u: &str| f.state.lock().unwrap().entries.contains_key(u);
        assert!(!has(&url(0)) && has(&url(1)) && has("http://www.microsoft.com/new.crt"));
        // ...and is the first to go for the next one.
        f.record("http://www.microsoft.com/next.crt", Err(FetchError::Invalid("x".into())), 1041);
        assert!(!has("http://www.microsoft.com/new.crt") && has(&url(1)));
        // Entries no longer usable go before anything else.
        f.state.lock().unwrap().entries.get_mut(&url(5)).unwrap().at = 1042 - CACHE_TTL;
        f.record("http://www.microsoft.com/last.crt", Ok(Vec::new()), 1042);
        assert!(!has(&url(5)) && has(&url(1)) && has("http://www.microsoft.com/next.crt"));
        assert_eq!(f.state.lock().unwrap().entries.len(), CACHE_ENTRIES);
    }
}
