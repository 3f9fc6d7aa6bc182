//! Missing intermediates fetched through the signer certificate's Authority Information
//! Access URL. No internet: a throwaway PKI made here (root → issuing CA → RSA leaf
//! `metadata.azure.com` whose caIssuers URI points at a stand-in CA download server on
//! loopback), documents signed here with the leaf, the server configured with the root
//! and no intermediates.
mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use cms::cert::x509::Certificate;
use cms::cert::x509::ext::pkix::name::GeneralName;
use cms::cert::x509::ext::pkix::{AccessDescription, AuthorityInfoAccessSyntax};
use cms::cert::x509::spki::AlgorithmIdentifierOwned;
use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
use cms::content_info::{CmsVersion, ContentInfo};
use cms::signed_data::{
    CertificateSet, EncapsulatedContentInfo, SignedData, SignerIdentifier, SignerInfo, SignerInfos,
};
use common::{answer, attest_with, rejected_with};
use der::asn1::{Ia5String, ObjectIdentifier, OctetString, SetOfVec};
use der::{Any, Decode, Encode};
use ferrid_attest::{AttestError, Attested};
use ferrid_attest_azure::aia::{CACHE_TTL, MAX_FETCHES_PER_MINUTE, RETRY_INTERVAL};
use ferrid_attest_azure::{AzureAttestor, AzureConfig};
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, SigningKey,
};

const SUBSCRIPTION: &str = "8d3f2a51-7c1e-4e0b-9a6f-2b5c0d9e1f37";
const VM_ID: &str = "0c7d5b9e-3a41-4f2c-8e6d-91b0a2c4d5e6";
const NONCE: &str = "1123581321";
/// The documents' `createdOn` (2026-11-23); attestations happen a few seconds later.
const NOW: i64 = common::TODAY;

fn oid(s: &str) -> ObjectIdentifier {
    ObjectIdentifier::new_unwrap(s)
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, cn);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.not_before = rcgen::date_time_ymd(2020, 1, 1);
    p.not_after = rcgen::date_time_ymd(2040, 1, 1);
    p
}

/// A CA and the means to issue under it.
struct Ca {
    der: Vec<u8>,
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn root(cn: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let params = ca_params(cn);
        let cert = params.self_signed(&key).unwrap();
        Self { der: cert.der().to_vec(), pem: cert.pem(), issuer: Issuer::new(params, key) }
    }

    fn intermediate(&self, cn: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let params = ca_params(cn);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Self { der: cert.der().to_vec(), pem: cert.pem(), issuer: Issuer::new(params, key) }
    }
}

/// The AIA extension: `ca_issuers` URIs, and an OCSP URI (to be ignored).
fn aia_extension(ca_issuers: &[&str]) -> CustomExtension {
    let mut ads: Vec<AccessDescription> = ca_issuers
        .iter()
        .map(|u| AccessDescription {
            access_method: oid("1.3.6.1.5.5.7.48.2"),
            access_location: GeneralName::UniformResourceIdentifier(Ia5String::new(u).unwrap()),
        })
        .collect();
    ads.insert(
        0,
        AccessDescription {
            access_method: oid("1.3.6.1.5.5.7.48.1"),
            access_location: GeneralName::UniformResourceIdentifier(
                Ia5String::new("http://ocsp.example.invalid").unwrap(),
            ),
        },
    );
    let der = AuthorityInfoAccessSyntax(ads).to_der().unwrap();
    CustomExtension::from_oid_content(&[1, 3, 6, 1, 5, 5, 7, 1, 1], der)
}

/// An RSA key (IMDS signs with RSA) for the leaves.
fn leaf_key() -> KeyPair {
    KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap()
}

/// A `metadata.azure.com` leaf under `ca` with these caIssuers URIs.
fn leaf(ca: &Ca, key: &KeyPair, ca_issuers: &[&str]) -> Vec<u8> {
    let mut p = CertificateParams::new(vec!["metadata.azure.com".to_owned()]).unwrap();
    p.distinguished_name.push(DnType::CommonName, "metadata.azure.com");
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.not_before = rcgen::date_time_ymd(2021, 1, 1);
    p.not_after = rcgen::date_time_ymd(2039, 1, 1);
    if !ca_issuers.is_empty() {
        p.custom_extensions.push(aia_extension(ca_issuers));
    }
    p.signed_by(key, &ca.issuer).unwrap().der().to_vec()
}

/// IMDS's `MM/DD/YY hh:mm:ss -0000`.
fn imds_time(t: i64) -> String {
    let d = time::OffsetDateTime::from_unix_timestamp(t).unwrap();
    format!(
        "{:02}/{:02}/{:02} {:02}:{:02}:{:02} -0000",
        u8::from(d.month()),
        d.day(),
        d.year() % 100,
        d.hour(),
        d.minute(),
        d.second()
    )
}

/// An attested document as IMDS makes one: DER SignedData, no signed attributes, the
/// leaf embedded, RSA PKCS#1 v1.5 SHA-256 over the content.
fn document(leaf_der: &[u8], key: &KeyPair, created: i64) -> Vec<u8> {
    let content = serde_json::json!({
        "nonce": NONCE,
        "vmId": VM_ID,
        "subscriptionId": SUBSCRIPTION,
        "timeStamp": {"createdOn": imds_time(created), "expiresOn": imds_time(created + 6 * 3600)},
    })
    .to_string();
    let leaf = Certificate::from_der(leaf_der).unwrap();
    let sha256 = AlgorithmIdentifierOwned { oid: oid("2.16.840.1.101.3.4.2.1"), parameters: None };
    let signer = SignerInfo {
        version: CmsVersion::V1,
        sid: SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
            issuer: leaf.tbs_certificate().issuer().clone(),
            serial_number: leaf.tbs_certificate().serial_number().clone(),
        }),
        digest_alg: sha256.clone(),
        signed_attrs: None,
        signature_algorithm: AlgorithmIdentifierOwned {
            oid: oid("1.2.840.113549.1.1.1"),
            parameters: Some(Any::null()),
        },
        signature: OctetString::new(key.sign(content.as_bytes()).unwrap()).unwrap(),
        unsigned_attrs: None,
    };
    let sd = SignedData {
        version: CmsVersion::V1,
        digest_algorithms: SetOfVec::try_from(vec![sha256]).unwrap(),
        encap_content_info: EncapsulatedContentInfo {
            econtent_type: oid("1.2.840.113549.1.7.1"),
            econtent: Some(Any::encode_from(&OctetString::new(content.into_bytes()).unwrap()).unwrap()),
        },
        certificates: Some(CertificateSet::try_from(vec![CertificateChoices::Certificate(leaf)]).unwrap()),
        crls: None,
        signer_infos: SignerInfos::try_from(vec![signer]).unwrap(),
    };
    ContentInfo { content_type: oid("1.2.840.113549.1.7.2"), content: Any::encode_from(&sd).unwrap() }
        .to_der()
        .unwrap()
}

/// A stand-in for a CA's certificate download site, counting requests per path.
struct Site {
    issuing: Ca,
    /// Another CA under the same root, with the same name as `issuing`.
    impostor: Ca,
    /// The issuing CA of a PKI whose root nobody trusts.
    foreign: Ca,
    hits: Mutex<HashMap<String, usize>>,
}

impl Site {
    fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    fn total(&self) -> usize {
        self.hits.lock().unwrap().values().sum()
    }
}

async fn handle(State(site): State<Arc<Site>>, uri: Uri) -> Response {
    let path = uri.path().to_owned();
    *site.hits.lock().unwrap().entry(path.clone()).or_default() += 1;
    let cert = |der: &[u8]| ([(header::CONTENT_TYPE, "application/pkix-cert")], der.to_vec()).into_response();
    match path.as_str() {
        "/int.crt" | "/int-again.crt" => cert(&site.issuing.der),
        "/int.pem" => site.issuing.pem.clone().into_response(),
        "/int.p7c" => {
            let c = Certificate::from_der(&site.issuing.der).unwrap();
            cert(&ContentInfo::try_from(c).unwrap().to_der().unwrap())
        }
        "/slow.crt" => {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            cert(&site.issuing.der)
        }
        "/impostor.crt" => cert(&site.impostor.der),
        "/foreign.crt" => cert(&site.foreign.der),
        "/big.crt" => cert(&vec![0x30; 20 * 1024]),
        "/fail.crt" => StatusCode::SERVICE_UNAVAILABLE.into_response(),
        "/redirect-here" => (StatusCode::FOUND, [(header::LOCATION, "/int.crt")]).into_response(),
        "/redirect-away" => {
            (StatusCode::FOUND, [(header::LOCATION, "http://evil.example/int.crt")]).into_response()
        }
        p if p.starts_with("/garbage") => "<html>no such certificate</html>".into_response(),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

/// The PKI, the site serving it and a temporary directory for the server's files.
struct Fixture {
    root: Ca,
    site: Arc<Site>,
    addr: SocketAddr,
    key: KeyPair,
    dir: tempfile::TempDir,
}

impl Fixture {
    async fn new() -> Self {
        let root = Ca::root("Ferrid AIA Test Root");
        let issuing = root.intermediate("Ferrid AIA Test Issuing CA");
        let impostor = root.intermediate("Ferrid AIA Test Issuing CA");
        let foreign = Ca::root("Someone Else's Root").intermediate("Ferrid AIA Test Issuing CA");
        let site = Arc::new(Site { issuing, impostor, foreign, hits: Mutex::default() });
        let router = axum::Router::new().fallback(handle).with_state(site.clone());
        let addr = ferrid_test_util::serve(router, None).await;
        Self { root, site, addr, key: leaf_key(), dir: tempfile::tempdir().unwrap() }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Our loopback address as an `aia_allowed_hosts` entry.
    fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Trusting the test root only, no intermediates, fetching from `allowed`.
    fn config(&self, allowed: &[String]) -> AzureConfig {
        let roots = self.dir.path().join("roots.pem");
        let none = self.dir.path().join("intermediates.pem");
        std::fs::write(&roots, &self.root.pem).unwrap();
        std::fs::write(&none, "").unwrap();
        AzureConfig {
            allowed_subscriptions: vec![SUBSCRIPTION.into()],
            roots_file: Some(roots),
            intermediates_file: Some(none),
            aia_allowed_hosts: allowed.to_vec(),
            ..AzureConfig::default()
        }
    }

    fn attestor(&self) -> AzureAttestor {
        common::attestor(&self.config(&[self.host()]), NONCE)
    }

    /// A document signed by a leaf of the issuing CA with these caIssuers paths.
    fn document(&self, paths: &[&str], created: i64) -> Vec<u8> {
        let urls: Vec<String> = paths.iter().map(|p| self.url(p)).collect();
        let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
        document(&leaf(&self.site.issuing, &self.key, &urls), &self.key, created)
    }
}

async fn attest(a: &AzureAttestor, doc: &[u8], now: i64) -> Result<Attested, AttestError> {
    attest_with(a, b"{}", NONCE, answer(doc), now).await
}

fn unavailable_with(r: Result<Attested, AttestError>, needle: &str) {
    match r {
        Err(AttestError::Unavailable(m)) if m.contains(needle) => {}
        other => panic!("expected Unavailable mentioning {needle:?}, got {other:?}"),
    }
}

#[tokio::test]
async fn a_missing_intermediate_is_fetched_once_and_then_served_from_the_cache() {
    let f = Fixture::new().await;
    let a = f.attestor();
    let doc = f.document(&["/int.crt"], NOW);
    let got = attest(&a, &doc, NOW + 5).await.unwrap();
    assert_eq!(got.agent_path, [SUBSCRIPTION, VM_ID]);
    assert_eq!(f.site.hits("/int.crt"), 1);
    // Again, a minute and an hour later: from the cache, no request.
    attest(&a, &doc, NOW + 6).await.unwrap();
    let later = f.document(&["/int.crt"], NOW + 3600);
    attest(&a, &later, NOW + 3605).await.unwrap();
    assert_eq!(f.site.hits("/int.crt"), 1);
    assert_eq!(a.aia().unwrap().fetches(), 1);
    // After CACHE_TTL it is fetched again.
    let next_day = f.document(&["/int.crt"], NOW + CACHE_TTL + 10);
    attest(&a, &next_day, NOW + CACHE_TTL + 15).await.unwrap();
    assert_eq!(f.site.hits("/int.crt"), 2);
    // The same document without fetching: the issuer is unknown.
    let mut off = f.config(&[f.host()]);
    off.fetch_intermediates = false;
    rejected_with(attest(&common::attestor(&off, NONCE), &doc, NOW + 5).await, "UnknownIssuer");
}

#[tokio::test]
async fn pem_pkcs7_and_a_redirect_to_an_allowed_host_work_too() {
    let f = Fixture::new().await;
    for path in ["/int.pem", "/int.p7c", "/redirect-here"] {
        let a = f.attestor();
        attest(&a, &f.document(&[path], NOW), NOW + 5).await.unwrap_or_else(|e| panic!("{path}: {e}"));
    }
    assert_eq!(f.site.hits("/int.crt"), 1, "the redirect was followed");
    // URIs that fail are skipped when another gives the issuer.
    let a = f.attestor();
    attest(&a, &f.document(&["/garbage", "/int.crt"], NOW), NOW + 5).await.unwrap();
}

#[tokio::test]
async fn concurrent_attestations_share_one_fetch() {
    let f = Fixture::new().await;
    let a = f.attestor();
    let doc = f.document(&["/slow.crt"], NOW);
    let (x, y, z) =
        tokio::join!(attest(&a, &doc, NOW + 5), attest(&a, &doc, NOW + 5), attest(&a, &doc, NOW + 5));
    x.unwrap();
    y.unwrap();
    z.unwrap();
    assert_eq!(f.site.hits("/slow.crt"), 1);
}

#[tokio::test]
async fn hosts_outside_the_allow_list_are_never_contacted() {
    let f = Fixture::new().await;
    // The default allow list (Microsoft's and DigiCert's download hosts).
    let a =
        common::attestor(&f.config(&ferrid_attest_azure::AzureConfig::default().aia_allowed_hosts), NONCE);
    rejected_with(
        attest(&a, &f.document(&["/int.crt"], NOW), NOW + 5).await,
        &format!("{} not fetched: AIA host {} is not in aia_allowed_hosts", f.url("/int.crt"), f.addr),
    );
    // The right host on another port, or with another scheme.
    let other_port = format!("127.0.0.1:{}", f.addr.port() + 1);
    let a = common::attestor(&f.config(&[other_port]), NONCE);
    rejected_with(attest(&a, &f.document(&["/int.crt"], NOW), NOW + 5).await, "is not in aia_allowed_hosts");
    let key = &f.key;
    let ftp = leaf(&f.site.issuing, key, &[&format!("ftp://{}/int.crt", f.addr)]);
    rejected_with(
        attest(&f.attestor(), &document(&ftp, key, NOW), NOW + 5).await,
        "scheme ftp is not http or https",
    );
    // A redirect off the allowed hosts is not followed.
    rejected_with(
        attest(&f.attestor(), &f.document(&["/redirect-away"], NOW), NOW + 5).await,
        "redirect to http://evil.example/int.crt not followed: AIA host evil.example is not in aia_allowed_hosts",
    );
    assert_eq!(f.site.total(), 1, "only the redirect itself was requested");
    assert_eq!(f.site.hits("/redirect-away"), 1);

    // A real IMDS leaf (public cloud, 2022) with its issuer removed: its caIssuers URI
    // is on www.microsoft.com, which this server does not allow.
    let r = &common::REGULAR;
    let dir = tempfile::tempdir().unwrap();
    let only_gov = dir.path().join("i.pem");
    std::fs::write(&only_gov, common::read("coder/ms_azure_tls_issuing_ca_05.pem")).unwrap();
    let mut c = common::config(&[r.subscription]);
    c.intermediates_file = Some(only_gov);
    c.aia_allowed_hosts = vec![f.host()];
    rejected_with(
        common::attest(&common::attestor(&c, r.nonce), r, &common::der(r.file), r.created + 10).await,
        "http://www.microsoft.com/pki/mscorp/Microsoft%20RSA%20TLS%20CA%2001.crt not fetched: AIA host www.microsoft.com is not in aia_allowed_hosts",
    );
    // A leaf without an AIA extension.
    let bare = leaf(&f.site.issuing, key, &[]);
    rejected_with(attest(&f.attestor(), &document(&bare, key, NOW), NOW + 5).await, "names no caIssuers URI");
    assert_eq!(f.site.total(), 1);
}

#[tokio::test]
async fn answers_that_are_not_certificates_are_refused_and_not_refetched_for_a_minute() {
    let f = Fixture::new().await;
    let a = f.attestor();
    for (path, why) in [
        ("/garbage", "not a certificate (DER, PEM or PKCS#7 certs-only)"),
        ("/big.crt", "response over 16384 bytes"),
        ("/missing.crt", "HTTP 404 Not Found"),
    ] {
        let msg = format!("fetching the intermediate from {} failed: {why}", f.url(path));
        rejected_with(attest(&a, &f.document(&[path], NOW), NOW + 5).await, &msg);
        assert_eq!(f.site.hits(path), 1, "{path}");
        // Within RETRY_INTERVAL: the same answer, no request.
        let doc = f.document(&[path], NOW + 30);
        rejected_with(attest(&a, &doc, NOW + 35).await, &msg);
        assert_eq!(f.site.hits(path), 1, "{path}");
        // Then it is asked again.
        let doc = f.document(&[path], NOW + RETRY_INTERVAL + 5);
        rejected_with(attest(&a, &doc, NOW + RETRY_INTERVAL + 5).await, &msg);
        assert_eq!(f.site.hits(path), 2, "{path}");
    }
}

#[tokio::test]
async fn an_unreachable_or_failing_server_is_unavailable() {
    let f = Fixture::new().await;
    // A loopback port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let url = format!("http://{closed}/int.crt");
    let a = common::attestor(&f.config(&[closed.to_string()]), NONCE);
    let key = &f.key;
    let doc = document(&leaf(&f.site.issuing, key, &[&url]), key, NOW);
    unavailable_with(
        attest(&a, &doc, NOW + 5).await,
        &format!("fetching the intermediate from {url} failed: "),
    );
    // HTTP 503: the server is there but cannot answer now.
    unavailable_with(attest(&f.attestor(), &f.document(&["/fail.crt"], NOW), NOW + 5).await, "HTTP 503");
}

#[tokio::test]
async fn a_fetched_certificate_that_is_not_the_issuer_does_not_help() {
    let f = Fixture::new().await;
    let a = f.attestor();
    // Another CA of the same root, under the same name as the real issuer: its key did
    // not sign the leaf.
    let doc = f.document(&["/impostor.crt"], NOW);
    rejected_with(
        attest(&a, &doc, NOW + 5).await,
        &format!(
            "signer certificate chain: InvalidSignatureForPublicKey, also with the certificate fetched from {}",
            f.url("/impostor.crt")
        ),
    );
    // Not confirmed, so not kept past RETRY_INTERVAL.
    let doc = f.document(&["/impostor.crt"], NOW + RETRY_INTERVAL + 5);
    rejected_with(attest(&a, &doc, NOW + RETRY_INTERVAL + 5).await, "also with the certificate fetched");
    assert_eq!(f.site.hits("/impostor.crt"), 2);

    // The real issuer of a leaf from a PKI nobody here trusts: fetching it completes
    // that chain up to the foreign root only.
    let key = &f.key;
    let foreign_leaf = leaf(&f.site.foreign, key, &[&f.url("/foreign.crt")]);
    rejected_with(attest(&a, &document(&foreign_leaf, key, NOW), NOW + 5).await, "UnknownIssuer, also with");
    assert_eq!(f.site.hits("/foreign.crt"), 1);
    // Fetched certificates never become roots: the issuing CA does not vouch for itself.
    let a = f.attestor();
    attest(&a, &f.document(&["/int.crt"], NOW), NOW + 5).await.unwrap();
    rejected_with(attest(&a, &document(&foreign_leaf, key, NOW), NOW + 6).await, "UnknownIssuer");
}

#[tokio::test]
async fn a_flood_of_made_up_uris_is_capped_per_minute() {
    let f = Fixture::new().await;
    let a = f.attestor();
    for i in 0..MAX_FETCHES_PER_MINUTE {
        let path = format!("/garbage/{i}");
        rejected_with(attest(&a, &f.document(&[&path], NOW), NOW + 5).await, "not a certificate");
    }
    unavailable_with(
        attest(&a, &f.document(&["/garbage/extra"], NOW), NOW + 5).await,
        "AIA fetches in the last minute already",
    );
    // The real issuer's URI too, until the minute has passed.
    unavailable_with(attest(&a, &f.document(&["/int.crt"], NOW), NOW + 5).await, "retry later");
    assert_eq!(f.site.total(), MAX_FETCHES_PER_MINUTE);
    attest(&a, &f.document(&["/int.crt"], NOW + 70), NOW + 70).await.unwrap();
    // Made-up URIs evict each other, not a confirmed intermediate.
    for i in 0..40 {
        let t = NOW + 200 + 60 * i;
        let path = format!("/garbage/later/{i}");
        rejected_with(attest(&a, &f.document(&[&path], t), t).await, "not a certificate");
    }
    let t = NOW + 200 + 60 * 40;
    attest(&a, &f.document(&["/int.crt"], t), t).await.unwrap();
    assert_eq!(f.site.hits("/int.crt"), 1);
}

#[test]
fn configuration_of_fetching() {
    let cfg: AzureConfig = toml::from_str(&format!("allowed_subscriptions = [\"{SUBSCRIPTION}\"]")).unwrap();
    assert!(cfg.fetch_intermediates);
    assert_eq!(
        cfg.aia_allowed_hosts,
        [
            "www.microsoft.com",
            "caissuers.microsoft.com",
            "cacerts.digicert.com",
            "cacerts.digicert.cn",
            "cacerts.geotrust.com"
        ]
    );
    let cfg: AzureConfig = toml::from_str(&format!(
        "allowed_subscriptions = [\"{SUBSCRIPTION}\"]\nfetch_intermediates = false\naia_allowed_hosts = [\"pki.example.com:8080\"]"
    ))
    .unwrap();
    assert!(!cfg.fetch_intermediates);
    let a = AzureAttestor::from_config(&cfg).unwrap();
    assert!(a.aia().is_none());

    let err = |c: &AzureConfig| AzureAttestor::from_config(c).unwrap_err();
    let mut c = common::config(&[SUBSCRIPTION]);
    c.aia_allowed_hosts = vec![];
    assert!(err(&c).starts_with("aia_allowed_hosts: empty"), "{}", err(&c));
    c.fetch_intermediates = false;
    assert!(AzureAttestor::from_config(&c).is_ok(), "nothing to check when fetching is off");
    let mut c = common::config(&[SUBSCRIPTION]);
    c.aia_allowed_hosts = vec!["http://www.microsoft.com/pkiops".into()];
    assert!(err(&c).starts_with("aia_allowed_hosts: \"http://www.microsoft.com/pkiops\""), "{}", err(&c));
}
