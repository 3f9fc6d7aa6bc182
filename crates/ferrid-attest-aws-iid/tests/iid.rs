//! The aws_iid attestor against real EC2 instance identity documents (tests/data, see
//! its README) with all three proofs, at each document's own time; and every negative
//! case, each with its own error: tampered, swapped, wrong region, too old, replayed,
//! account or region not allowed, malformed and oversized payloads, and PKCS#7s made
//! here with a self-made certificate (forged signer, signed-attribute digest mismatch,
//! no signed attributes). No network.
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use ferrid_attest::testkit;
use ferrid_attest::{AttestError, Attested, MAX_PAYLOAD, NoChallenges, NodeAttestor};
use ferrid_attest_aws_iid::lookup::{InstanceDetails, StaticInstances};
use ferrid_attest_aws_iid::{
    AwsIidAttestor, AwsIidConfig, CertConfig, MAX_DOCUMENT_BYTES, MAX_PROOF_BYTES, Proof, REPLAY_KEPT_UNTIL,
    payload,
};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

fn data(p: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(p)
}

fn read(p: &str) -> String {
    std::fs::read_to_string(data(p)).unwrap()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn unb64(text: &str) -> Vec<u8> {
    let clean: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD.decode(clean).unwrap()
}

fn rfc3339(s: &str) -> OffsetDateTime {
    OffsetDateTime::parse(s, &Rfc3339).unwrap()
}

/// 2026-11-23, the day these tests were written.
fn today() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_795_392_000).unwrap()
}

/// A real document with one of its proofs.
#[derive(Clone)]
struct Fixture {
    name: &'static str,
    document: String,
    proof: Proof,
    value: String,
    account: &'static str,
    region: &'static str,
    instance: &'static str,
    pending: &'static str,
}

impl Fixture {
    fn payload(&self) -> Vec<u8> {
        payload(&self.document, self.proof, &self.value)
    }

    /// One minute after the instance entered the pending state.
    fn when(&self) -> OffsetDateTime {
        rfc3339(self.pending) + time::Duration::minutes(1)
    }
}

/// Strips the PEM armour around base64 (the fullsailor fixture is PEM; IMDS serves
/// bare base64).
fn unarmour(pem: &str) -> String {
    pem.lines().filter(|l| !l.starts_with("-----")).collect::<Vec<_>>().join("\n")
}

fn all_variants(proof: Proof) -> Fixture {
    let file = match proof {
        Proof::Rsa2048 => "rsa2048.b64",
        Proof::Pkcs7 => "pkcs7.b64",
        Proof::Signature => "signature.b64",
    };
    Fixture {
        name: "all-variants",
        document: read("all-variants-ap-northeast-2/document.json"),
        proof,
        value: read(&format!("all-variants-ap-northeast-2/{file}")),
        account: "707811555388",
        region: "ap-northeast-2",
        instance: "i-0140f65cf5b9ba76a",
        pending: "2022-03-27T02:35:30Z",
    }
}

fn teleport1() -> Fixture {
    Fixture {
        name: "teleport instance1",
        document: read("rsa2048-teleport/instance1-us-west-2.document.json"),
        proof: Proof::Rsa2048,
        value: read("rsa2048-teleport/instance1-us-west-2.rsa2048.b64"),
        account: "278576220453",
        region: "us-west-2",
        instance: "i-078517ca8a70a1dde",
        pending: "2021-09-03T21:25:44Z",
    }
}

fn teleport2() -> Fixture {
    Fixture {
        name: "teleport instance2",
        document: read("rsa2048-teleport/instance2-us-west-1.document.json"),
        proof: Proof::Rsa2048,
        value: read("rsa2048-teleport/instance2-us-west-1.rsa2048.b64"),
        account: "883474662888",
        region: "us-west-1",
        instance: "i-01b940c45fd11fe74",
        pending: "2021-09-11T00:14:18Z",
    }
}

fn fullsailor() -> Fixture {
    Fixture {
        name: "fullsailor",
        document: read("pkcs7-dsa-fullsailor/document.json"),
        proof: Proof::Pkcs7,
        value: unarmour(&read("pkcs7-dsa-fullsailor/iid.pkcs7.pem")),
        account: "121659014334",
        region: "us-east-1",
        instance: "i-f79fe56c",
        pending: "2016-04-08T03:01:38Z",
    }
}

fn vault() -> Fixture {
    Fixture {
        name: "vault",
        document: read("pkcs7-dsa-vault/document.json"),
        proof: Proof::Pkcs7,
        value: read("pkcs7-dsa-vault/pkcs7.b64"),
        account: "241656615859",
        region: "us-east-1",
        instance: "i-de0f1344",
        pending: "2016-04-05T16:26:55Z",
    }
}

fn istio() -> Fixture {
    Fixture {
        name: "istio",
        document: read("rsa1024-signature-istio/document.json"),
        proof: Proof::Signature,
        value: read("rsa1024-signature-istio/signature.b64"),
        account: "977777657611",
        region: "us-west-2",
        instance: "i-0646c9efe2e62dc63",
        pending: "2017-08-27T17:18:20Z",
    }
}

fn every_fixture() -> Vec<Fixture> {
    vec![
        all_variants(Proof::Rsa2048),
        all_variants(Proof::Pkcs7),
        all_variants(Proof::Signature),
        teleport1(),
        teleport2(),
        fullsailor(),
        vault(),
        istio(),
    ]
}

const ALL_ACCOUNTS: [&str; 7] = [
    "707811555388",
    "278576220453",
    "883474662888",
    "121659014334",
    "241656615859",
    "977777657611",
    "123456789012",
];

fn config() -> AwsIidConfig {
    AwsIidConfig {
        accounts: ALL_ACCOUNTS.iter().map(|s| (*s).to_owned()).collect(),
        ..AwsIidConfig::default()
    }
}

fn attestor(cfg: &AwsIidConfig) -> AwsIidAttestor {
    AwsIidAttestor::from_config(cfg).unwrap()
}

async fn attest(a: &AwsIidAttestor, p: &[u8], now: OffsetDateTime) -> Result<Attested, AttestError> {
    a.attest(p, &mut NoChallenges, now).await
}

#[track_caller]
fn rejected_with(r: Result<Attested, AttestError>, needle: &str) {
    match r {
        Err(AttestError::Rejected(m)) if m.contains(needle) => {}
        other => panic!("expected a rejection mentioning {needle:?}, got {other:?}"),
    }
}

#[track_caller]
fn malformed_with(r: Result<Attested, AttestError>, needle: &str) {
    match r {
        Err(AttestError::Malformed(m)) if m.contains(needle) => {}
        other => panic!("expected malformed data mentioning {needle:?}, got {other:?}"),
    }
}

// --- Real documents ------------------------------------------------------------------

#[tokio::test]
async fn every_real_document_attests_at_its_time_with_the_built_in_certificates() {
    let mut cfg = config();
    cfg.max_instance_age = Some(Duration::from_secs(300));
    let a = attestor(&cfg);
    for f in every_fixture() {
        let got = attest(&a, &f.payload(), f.when())
            .await
            .unwrap_or_else(|e| panic!("{} ({}) refused: {e}", f.name, f.proof));
        assert_eq!(got.agent_path, [f.account, f.region, f.instance], "{}", f.name);
        for s in [
            format!("account:{}", f.account),
            format!("region:{}", f.region),
            format!("instance_id:{}", f.instance),
        ] {
            assert!(got.selectors.contains(&s), "{}: {s} in {:?}", f.name, got.selectors);
        }
        for prefix in ["az:", "image_id:", "instance_type:"] {
            assert!(got.selectors.iter().any(|s| s.starts_with(prefix)), "{}: {prefix}", f.name);
        }
        assert!(!got.can_reattest, "{}", f.name);
        assert_eq!(got.replay_key, Some(format!("aws_iid:{}:{}", f.account, f.instance)), "{}", f.name);
        assert_eq!(got.replay_expires_at, REPLAY_KEPT_UNTIL);
    }
}

#[tokio::test]
async fn selectors_of_one_document_in_full() {
    let a = attestor(&config());
    let f = teleport1();
    let got = attest(&a, &f.payload(), f.when()).await.unwrap();
    assert_eq!(
        got.selectors,
        [
            "account:278576220453",
            "region:us-west-2",
            "az:us-west-2a",
            "instance_id:i-078517ca8a70a1dde",
            "image_id:ami-0fa9e1f64142cde17",
            "instance_type:t2.medium",
        ]
    );
    let id = a.verify(&f.payload(), f.when()).unwrap();
    assert_eq!(id.pending_time, Some(rfc3339(f.pending)));
    assert_eq!(id.proof, Proof::Rsa2048);
}

#[tokio::test]
async fn without_an_age_limit_real_documents_attest_today() {
    let a = attestor(&config());
    for f in every_fixture() {
        attest(&a, &f.payload(), today()).await.unwrap_or_else(|e| panic!("{}: {e}", f.name));
    }
}

#[tokio::test]
async fn certificate_validity_dates_are_not_enforced() {
    // AWS's 2014 RSA certificate for the `signature` proof expired on 2024-06-05; its
    // key still signs (the 2029 re-issues carry the same key). Trusting only the
    // expired certificate, the istio document verifies today.
    let mut cfg = config();
    cfg.builtin_certs = false;
    cfg.proofs = vec![Proof::Signature];
    cfg.extra_certs = vec![CertConfig {
        proof: Proof::Signature,
        region: "us-west-2".into(),
        pem_file: Some(data("rsa1024-signature-istio/aws-rsa1024-global-cert.pem")),
        pem: None,
    }];
    let a = attestor(&cfg);
    attest(&a, &istio().payload(), today()).await.unwrap();
}

#[tokio::test]
async fn contract_checks() {
    let a = attestor(&config());
    testkit::assert_name_is_valid(&a);
    testkit::assert_rejects_garbage(&a, today()).await;
    assert_eq!(a.name(), "aws_iid");
}

// --- Tampering and substitution -------------------------------------------------------

/// Changes one byte of the document: the digit in `"privateIp" : "10.…"`.
fn tamper(doc: &str) -> String {
    let at = doc.find("\"privateIp\"").unwrap() + "\"privateIp\" : \"".len();
    let mut bytes = doc.as_bytes().to_vec();
    bytes[at] = if bytes[at] == b'9' { b'8' } else { bytes[at] + 1 };
    String::from_utf8(bytes).unwrap()
}

#[tokio::test]
async fn one_changed_byte_of_the_document_is_refused_under_every_proof() {
    let a = attestor(&config());
    for f in every_fixture() {
        let doc = tamper(&f.document);
        assert_ne!(doc, f.document);
        let r = attest(&a, &payload(&doc, f.proof, &f.value), f.when()).await;
        match f.proof {
            Proof::Rsa2048 | Proof::Pkcs7 => rejected_with(r, "signs a different document"),
            Proof::Signature => rejected_with(r, "signature does not verify"),
        }
    }
}

/// Replaces `from` with `to` inside the PKCS#7's DER (the document is in it verbatim).
fn patch_der(der: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let at = der.windows(from.len()).position(|w| w == from).expect("bytes in the PKCS#7");
    let mut out = der.to_vec();
    out[at..at + to.len()].copy_from_slice(to);
    out
}

#[tokio::test]
async fn a_document_changed_inside_the_pkcs7_too_fails_the_message_digest() {
    // The same one-byte change, made to the presented document and to the content
    // inside the PKCS#7 alike: the content matches, the signed digest does not.
    let a = attestor(&config());
    for f in every_fixture().into_iter().filter(|f| f.proof != Proof::Signature) {
        let doc = tamper(&f.document);
        let der = patch_der(&unb64(&f.value), f.document.as_bytes(), doc.as_bytes());
        let r = attest(&a, &payload(&doc, f.proof, &b64(&der)), f.when()).await;
        rejected_with(r, "message-digest attribute does not match");
    }
}

#[tokio::test]
async fn a_changed_signed_attribute_fails_the_signature() {
    // The signing time (UTCTime 210903212547Z) is a signed attribute: one digit changed
    // leaves the content and its digest intact, and breaks the RSA signature.
    let a = attestor(&config());
    let f = teleport1();
    let der = patch_der(&unb64(&f.value), b"210903212547Z", b"210903212548Z");
    let r = attest(&a, &payload(&f.document, f.proof, &b64(&der)), f.when()).await;
    rejected_with(r, "signature does not verify under built-in rsa2048/us-west-2");
    // DSA too (vault: signing time 160405162700Z).
    let v = vault();
    let der = patch_der(&unb64(&v.value), b"160405162700Z", b"160405162701Z");
    let r = attest(&a, &payload(&v.document, v.proof, &b64(&der)), v.when()).await;
    rejected_with(r, "signature does not verify under built-in dsa/aws-dsa-global");
}

#[tokio::test]
async fn a_document_under_another_documents_signature_is_refused() {
    let a = attestor(&config());
    let (one, two) = (teleport1(), teleport2());
    rejected_with(
        attest(&a, &payload(&one.document, Proof::Rsa2048, &two.value), one.when()).await,
        "signs a different document",
    );
    let (v, s) = (vault(), fullsailor());
    rejected_with(
        attest(&a, &payload(&v.document, Proof::Pkcs7, &s.value), v.when()).await,
        "signs a different document",
    );
    // The `signature` proof carries no document: the RSA check itself refuses.
    let (i, av) = (istio(), all_variants(Proof::Signature));
    rejected_with(
        attest(&a, &payload(&i.document, Proof::Signature, &av.value), i.when()).await,
        "signature does not verify",
    );
}

// --- Regions and certificates -----------------------------------------------------------

fn only_certs(proof: Proof, certs: &[(&str, &str)]) -> AwsIidConfig {
    let mut cfg = config();
    cfg.builtin_certs = false;
    cfg.proofs = vec![proof];
    cfg.extra_certs = certs
        .iter()
        .map(|(region, file)| CertConfig {
            proof,
            region: (*region).into(),
            pem_file: Some(data(file)),
            pem: None,
        })
        .collect();
    cfg
}

#[tokio::test]
async fn a_document_verifies_only_under_its_own_regions_certificate() {
    let f = teleport1(); // us-west-2
    // Only us-west-1's certificate is configured: there is none for us-west-2.
    let a =
        attestor(&only_certs(Proof::Rsa2048, &[("us-west-1", "rsa2048-teleport/aws-rsa2048-us-west-1.pem")]));
    rejected_with(attest(&a, &f.payload(), f.when()).await, "no rsa2048 certificate for region us-west-2");
    // us-west-1's certificate wrongly filed under us-west-2: it is not the signer.
    let a =
        attestor(&only_certs(Proof::Rsa2048, &[("us-west-2", "rsa2048-teleport/aws-rsa2048-us-west-1.pem")]));
    rejected_with(attest(&a, &f.payload(), f.when()).await, "serial B64BDE5AD00924CC");
    rejected_with(attest(&a, &f.payload(), f.when()).await, "not a trusted AWS certificate");
    // Its own certificate alone is enough.
    let a =
        attestor(&only_certs(Proof::Rsa2048, &[("us-west-2", "rsa2048-teleport/aws-rsa2048-us-west-2.pem")]));
    attest(&a, &f.payload(), f.when()).await.unwrap();
    // `signature`: af-south-1's RSA key (not the one shared by the older regions) filed
    // under us-west-2 does not verify the istio document.
    let mut cfg = only_certs(Proof::Signature, &[]);
    cfg.extra_certs = vec![CertConfig {
        proof: Proof::Signature,
        region: "us-west-2".into(),
        pem_file: Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("certs/rsa/af-south-1.pem")),
        pem: None,
    }];
    let a = attestor(&cfg);
    rejected_with(attest(&a, &istio().payload(), today()).await, "signature does not verify");
}

#[tokio::test]
async fn the_built_in_certificate_of_another_region_does_not_verify() {
    // A us-west-2 document verifies under us-west-2's key only, even when the
    // certificate filed for its region claims to be the signer.
    let f = teleport1();
    let signed = unb64(&f.value);
    // us-west-1's certificate with its serial number replaced by us-west-2's (the
    // issuer names are the same): the PKCS#7 names it as its signer, but its key is
    // us-west-1's. (Its own signature no longer verifies; the attestor never checks
    // it: the certificates are trust anchors, only their names and keys matter.)
    let west1 = ::pem::parse(read("rsa2048-teleport/aws-rsa2048-us-west-1.pem")).unwrap();
    let der = patch_der(
        west1.contents(),
        &[0x02, 0x09, 0x00, 0xD3, 0x4F, 0x90, 0x8A, 0x5C, 0xC8, 0x4B, 0x48],
        &[0x02, 0x09, 0x00, 0xB6, 0x4B, 0xDE, 0x5A, 0xD0, 0x09, 0x24, 0xCC],
    );
    let forged = ::pem::encode(&::pem::Pem::new("CERTIFICATE", der));
    let mut cfg = only_certs(Proof::Rsa2048, &[]);
    cfg.extra_certs = vec![CertConfig {
        proof: Proof::Rsa2048,
        region: "us-west-2".into(),
        pem_file: None,
        pem: Some(forged),
    }];
    let a = attestor(&cfg);
    rejected_with(
        attest(&a, &payload(&f.document, f.proof, &b64(&signed)), f.when()).await,
        "signature does not verify",
    );
}

#[tokio::test]
async fn proofs_can_be_restricted() {
    let mut cfg = config();
    cfg.proofs = vec![Proof::Rsa2048];
    let a = attestor(&cfg);
    rejected_with(attest(&a, &vault().payload(), today()).await, "proof pkcs7 is not accepted");
    rejected_with(attest(&a, &istio().payload(), today()).await, "proof signature is not accepted");
    attest(&a, &teleport1().payload(), today()).await.unwrap();
}

// --- Policy ------------------------------------------------------------------------

#[tokio::test]
async fn an_instance_older_than_max_instance_age_is_refused() {
    let mut cfg = config();
    cfg.max_instance_age = Some(Duration::from_secs(300));
    let a = attestor(&cfg);
    for f in every_fixture() {
        let pending = rfc3339(f.pending);
        attest(&a, &f.payload(), pending + time::Duration::seconds(299)).await.unwrap();
        match attest(&a, &f.payload(), pending + time::Duration::seconds(301)).await {
            Err(AttestError::Expired(m)) => {
                assert!(m.contains("max_instance_age") && m.contains(f.instance), "{m}")
            }
            other => panic!("{}: expected Expired, got {other:?}", f.name),
        }
        assert!(matches!(attest(&a, &f.payload(), today()).await, Err(AttestError::Expired(_))));
    }
}

#[tokio::test]
async fn accounts_and_regions_must_be_allowed() {
    let f = teleport1();
    let mut cfg = config();
    cfg.accounts = vec!["123456789012".into()];
    rejected_with(
        attest(&attestor(&cfg), &f.payload(), f.when()).await,
        "account 278576220453 is not allowed",
    );
    let mut cfg = config();
    cfg.regions = vec!["us-east-1".into(), "eu-west-1".into()];
    rejected_with(attest(&attestor(&cfg), &f.payload(), f.when()).await, "region us-west-2 is not allowed");
    cfg.regions.push("us-west-2".into());
    attest(&attestor(&cfg), &f.payload(), f.when()).await.unwrap();
}

/// The host's replay table, as `ferrid-store` keeps it: a key is refused while an
/// unexpired record of it exists.
#[derive(Default)]
struct ReplayRecorder(BTreeMap<String, i64>);

impl ReplayRecorder {
    fn record(&mut self, a: &Attested, now: i64) -> Result<(), AttestError> {
        let Some(key) = &a.replay_key else { return Ok(()) };
        match self.0.get(key) {
            Some(&until) if until > now => Err(AttestError::Replayed(format!("{key} already used"))),
            _ => {
                self.0.insert(key.clone(), a.replay_expires_at.max(now + 1));
                Ok(())
            }
        }
    }
}

#[tokio::test]
async fn a_second_attestation_of_an_instance_is_a_replay() {
    let a = attestor(&config());
    let mut host = ReplayRecorder::default();
    let f = teleport1();
    let first = attest(&a, &f.payload(), f.when()).await.unwrap();
    host.record(&first, f.when().unix_timestamp()).unwrap();
    // The same document again, years later: verifies, with the same replay key, which
    // the host refuses.
    let second = attest(&a, &f.payload(), today()).await.unwrap();
    assert_eq!(second.replay_key, first.replay_key);
    assert!(matches!(host.record(&second, today().unix_timestamp()), Err(AttestError::Replayed(_))));
    // Another proof of the same instance is the same instance: refused too.
    let p7 = attest(&a, &all_variants(Proof::Pkcs7).payload(), today()).await.unwrap();
    host.record(&p7, today().unix_timestamp()).unwrap();
    let rsa = attest(&a, &all_variants(Proof::Rsa2048).payload(), today()).await.unwrap();
    assert_eq!(rsa.replay_key, p7.replay_key);
    assert!(host.record(&rsa, today().unix_timestamp()).is_err());
    // Another instance is not.
    let other = attest(&a, &teleport2().payload(), today()).await.unwrap();
    host.record(&other, today().unix_timestamp()).unwrap();
}

#[tokio::test]
async fn allow_reattestation_drops_the_replay_key() {
    let mut cfg = config();
    cfg.allow_reattestation = true;
    let a = attestor(&cfg);
    let mut host = ReplayRecorder::default();
    for _ in 0..2 {
        let got = attest(&a, &teleport1().payload(), today()).await.unwrap();
        assert!(got.can_reattest);
        assert_eq!(got.replay_key, None);
        host.record(&got, today().unix_timestamp()).unwrap();
    }
}

#[tokio::test]
async fn the_instance_lookup_adds_tag_and_role_selectors_and_refuses_unknown_instances() {
    let f = teleport1();
    let mut table = StaticInstances::new();
    table.insert(
        f.account,
        f.instance,
        InstanceDetails {
            tags: vec![("Name".into(), "web-1".into()), ("team".into(), "a:b".into())],
            iam_roles: vec!["arn:aws:iam::278576220453:role/web".into()],
        },
    );
    let a = attestor(&config()).with_instance_lookup(Arc::new(table));
    let got = attest(&a, &f.payload(), f.when()).await.unwrap();
    for s in ["tag:Name:web-1", "tag:team:a:b", "iam_role:arn:aws:iam::278576220453:role/web"] {
        assert!(got.selectors.contains(&s.to_owned()), "{s} in {:?}", got.selectors);
    }
    rejected_with(attest(&a, &teleport2().payload(), today()).await, "not found by the EC2 API");
}

// --- Malformed and oversized -----------------------------------------------------------

#[tokio::test]
async fn malformed_and_oversized_payloads_are_refused_precisely() {
    let a = attestor(&config());
    let f = teleport1();
    let now = f.when();
    assert!(matches!(
        attest(&a, &vec![b' '; MAX_PAYLOAD + 1], now).await,
        Err(AttestError::TooLarge { limit: MAX_PAYLOAD, .. })
    ));
    let big_doc = " ".repeat(MAX_DOCUMENT_BYTES + 1);
    assert!(matches!(
        attest(&a, &payload(&big_doc, Proof::Rsa2048, &f.value), now).await,
        Err(AttestError::TooLarge { limit: MAX_DOCUMENT_BYTES, .. })
    ));
    let big_proof = "A".repeat(MAX_PROOF_BYTES + 1);
    assert!(matches!(
        attest(&a, &payload(&f.document, Proof::Rsa2048, &big_proof), now).await,
        Err(AttestError::TooLarge { limit: MAX_PROOF_BYTES, .. })
    ));
    malformed_with(attest(&a, b"not json", now).await, "expected {\"document\"");
    malformed_with(attest(&a, br#"{"document": "{}"}"#, now).await, "no proof");
    malformed_with(
        attest(&a, br#"{"document": "{}", "rsa2048": "AA==", "pkcs7": "AA=="}"#, now).await,
        "more than one proof",
    );
    malformed_with(
        attest(&a, br#"{"document": "{}", "rsa2048": "AA==", "extra": 1}"#, now).await,
        "unknown field",
    );
    malformed_with(attest(&a, &payload(&f.document, Proof::Rsa2048, "***"), now).await, "not base64");
    malformed_with(attest(&a, &payload("[]", Proof::Rsa2048, &f.value), now).await, "identity document");
    malformed_with(
        attest(
            &a,
            &payload(r#"{"accountId":"1","instanceId":"i-1","region":"../x"}"#, Proof::Rsa2048, &f.value),
            now,
        )
        .await,
        "not a region name",
    );
    // Garbage and a truncated PKCS#7.
    malformed_with(attest(&a, &payload(&f.document, Proof::Rsa2048, &b64(b"garbage")), now).await, "PKCS#7");
    let der = unb64(&f.value);
    for cut in [1, 16, der.len() / 2, der.len() - 1] {
        malformed_with(
            attest(&a, &payload(&f.document, Proof::Rsa2048, &b64(&der[..cut])), now).await,
            "PKCS#7",
        );
    }
    // Trailing bytes after the PKCS#7.
    let mut long = der.clone();
    long.extend_from_slice(b"\0\0");
    malformed_with(attest(&a, &payload(&f.document, Proof::Rsa2048, &b64(&long)), now).await, "PKCS#7");
    // A `signature` of the wrong size.
    rejected_with(
        attest(&a, &payload(&istio().document, Proof::Signature, &b64(&[1; 64])), now).await,
        "signature does not verify",
    );
}

// --- Configuration ---------------------------------------------------------------------

#[test]
fn configuration_errors_name_the_key() {
    let err = |cfg: AwsIidConfig| AwsIidAttestor::from_config(&cfg).unwrap_err();
    assert!(err(AwsIidConfig::default()).starts_with("aws_iid.accounts: list at least one"));
    let mut c = config();
    c.accounts = vec!["12345".into()];
    assert!(err(c).contains("aws_iid.accounts: \"12345\""));
    let mut c = config();
    c.regions = vec!["US East".into()];
    assert!(err(c).starts_with("aws_iid.regions: \"US East\""));
    let mut c = config();
    c.regions = vec!["us-east-7".into()];
    assert!(err(c).contains("no certificate for region \"us-east-7\""));
    let mut c = config();
    c.proofs = vec![];
    assert!(err(c).starts_with("aws_iid.proofs"));
    let mut c = config();
    c.max_instance_age = Some(Duration::ZERO);
    assert!(err(c).starts_with("aws_iid.max_instance_age"));
    let mut c = config();
    c.builtin_certs = false;
    assert!(err(c).contains("no certificate for any accepted proof"));
    let mut c = config();
    c.extra_certs = vec![CertConfig { proof: Proof::Pkcs7, region: "*".into(), pem_file: None, pem: None }];
    assert!(err(c).starts_with("aws_iid.extra_certs[0]: set exactly one of pem_file and pem"));
    let mut c = config();
    c.extra_certs = vec![CertConfig {
        proof: Proof::Pkcs7,
        region: "*".into(),
        pem_file: Some("/nonexistent.pem".into()),
        pem: None,
    }];
    assert!(err(c).starts_with("aws_iid.extra_certs[0].pem_file: reading /nonexistent.pem"));
    let mut c = config();
    c.extra_certs = vec![CertConfig {
        proof: Proof::Pkcs7,
        region: "*".into(),
        pem_file: None,
        pem: Some("not pem".into()),
    }];
    assert!(err(c).starts_with("aws_iid.extra_certs[0]"));
    let mut c = config();
    c.extra_certs =
        vec![CertConfig { proof: Proof::Pkcs7, region: "Mars".into(), pem_file: None, pem: None }];
    assert!(err(c).starts_with("aws_iid.extra_certs[0].region"));
}

#[test]
fn server_configuration_from_toml() {
    #[derive(serde::Deserialize)]
    struct Server {
        aws_iid: AwsIidConfig,
    }
    let text = r#"
        [aws_iid]
        accounts = ["123456789012"]
        regions = ["us-east-1", "eu-west-1"]
        proofs = ["rsa2048"]
        max_instance_age = "10m"
        allow_reattestation = false

        [[aws_iid.extra_certs]]
        proof = "rsa2048"
        region = "eu-west-1"
        pem_file = "/etc/ferrid/aws/eu-west-1.pem"
    "#;
    let s: Server = toml::from_str(text).unwrap();
    assert_eq!(s.aws_iid.max_instance_age, Some(Duration::from_secs(600)));
    assert_eq!(s.aws_iid.proofs, [Proof::Rsa2048]);
    assert!(s.aws_iid.builtin_certs);
    assert_eq!(s.aws_iid.extra_certs[0].region, "eu-west-1");
    let minimal: Server = toml::from_str("[aws_iid]\naccounts = [\"123456789012\"]\n").unwrap();
    assert_eq!(minimal.aws_iid.proofs, Proof::ALL);
    assert_eq!(minimal.aws_iid.max_instance_age, None);
    assert!(!minimal.aws_iid.allow_reattestation);
    AwsIidAttestor::from_config(&minimal.aws_iid).unwrap();
    assert!(toml::from_str::<Server>("[aws_iid]\naccounts = []\nacounts = []\n").is_err());
    assert!(toml::from_str::<Server>("[aws_iid]\naccounts = []\nproofs = [\"rsa4096\"]\n").is_err());
}

// --- PKCS#7s made here ---------------------------------------------------------------------

/// SignedData built with the `cms` types and signed with keys made here.
mod forge {
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
    use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
    use cms::content_info::{CmsVersion, ContentInfo};
    use cms::signed_data::{
        CertificateSet, EncapsulatedContentInfo, SignedData, SignerIdentifier, SignerInfo, SignerInfos,
    };
    use der::asn1::{ObjectIdentifier, OctetString, SetOfVec};
    use der::{Any, Decode, Encode};
    use spki::AlgorithmIdentifierOwned;
    use x509_cert::Certificate;
    use x509_cert::attr::Attribute;

    const SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
    const DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");
    const CONTENT_TYPE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.3");
    const MESSAGE_DIGEST: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.4");
    const SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
    const RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

    /// A self-made RSA-2048 key and certificate posing as AWS's.
    pub(crate) struct Signer {
        key: RsaKeyPair,
        pub(crate) cert: Certificate,
        pub(crate) pem: String,
    }

    pub(crate) fn signer() -> Signer {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(rcgen::DnType::OrganizationName, "Amazon Web Services LLC");
        let cert = params.self_signed(&kp).unwrap();
        Signer {
            key: RsaKeyPair::from_pkcs8(&kp.serialize_der()).unwrap(),
            cert: Certificate::from_der(cert.der()).unwrap(),
            pem: cert.pem(),
        }
    }

    /// What to sign.
    pub(crate) struct Spec<'a> {
        pub(crate) content: &'a [u8],
        /// `Some(digest)`: signed attributes with this message digest.
        pub(crate) attrs_digest: Option<Vec<u8>>,
        /// Who the PKCS#7 says signed it.
        pub(crate) sid: IssuerAndSerialNumber,
        /// Certificates embedded in the PKCS#7.
        pub(crate) embed: Vec<Certificate>,
    }

    pub(crate) fn sha256(data: &[u8]) -> Vec<u8> {
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data).as_ref().to_vec()
    }

    pub(crate) fn sid_of(cert: &Certificate) -> IssuerAndSerialNumber {
        IssuerAndSerialNumber {
            issuer: cert.tbs_certificate().issuer().clone(),
            serial_number: cert.tbs_certificate().serial_number().clone(),
        }
    }

    fn alg(oid: ObjectIdentifier) -> AlgorithmIdentifierOwned {
        AlgorithmIdentifierOwned { oid, parameters: Some(Any::null()) }
    }

    fn one(value: Any) -> SetOfVec<Any> {
        SetOfVec::try_from(vec![value]).unwrap()
    }

    pub(crate) fn sign(s: &Signer, spec: Spec<'_>) -> Vec<u8> {
        let signed_attrs = spec.attrs_digest.map(|digest| {
            SetOfVec::try_from(vec![
                Attribute { oid: CONTENT_TYPE, values: one(Any::encode_from(&DATA).unwrap()) },
                Attribute {
                    oid: MESSAGE_DIGEST,
                    values: one(Any::encode_from(&OctetString::new(digest).unwrap()).unwrap()),
                },
            ])
            .unwrap()
        });
        let message = match &signed_attrs {
            Some(a) => a.to_der().unwrap(),
            None => spec.content.to_vec(),
        };
        let mut sig = vec![0; s.key.public_modulus_len()];
        s.key.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), &message, &mut sig).unwrap();
        let signer = SignerInfo {
            version: CmsVersion::V1,
            sid: SignerIdentifier::IssuerAndSerialNumber(spec.sid),
            digest_alg: alg(SHA256),
            signed_attrs,
            signature_algorithm: alg(RSA),
            signature: OctetString::new(sig).unwrap(),
            unsigned_attrs: None,
        };
        let certificates = (!spec.embed.is_empty()).then(|| {
            CertificateSet::try_from(
                spec.embed.into_iter().map(CertificateChoices::Certificate).collect::<Vec<_>>(),
            )
            .unwrap()
        });
        let sd = SignedData {
            version: CmsVersion::V1,
            digest_algorithms: SetOfVec::try_from(vec![alg(SHA256)]).unwrap(),
            encap_content_info: EncapsulatedContentInfo {
                econtent_type: DATA,
                econtent: Some(Any::encode_from(&OctetString::new(spec.content).unwrap()).unwrap()),
            },
            certificates,
            crls: None,
            signer_infos: SignerInfos::try_from(vec![signer]).unwrap(),
        };
        ContentInfo { content_type: SIGNED_DATA, content: Any::encode_from(&sd).unwrap() }.to_der().unwrap()
    }
}

/// A self-made signer trusted for rsa2048 in us-west-2, and the us-west-2 document.
fn self_made_trusted() -> (forge::Signer, AwsIidAttestor, Fixture) {
    let s = forge::signer();
    let mut cfg = config();
    cfg.extra_certs = vec![CertConfig {
        proof: Proof::Rsa2048,
        region: "us-west-2".into(),
        pem_file: None,
        pem: Some(s.pem.clone()),
    }];
    (s, attestor(&cfg), teleport1())
}

#[tokio::test]
async fn a_pkcs7_signed_by_a_self_made_certificate_is_refused() {
    let a = attestor(&config());
    let f = teleport1();
    let s = forge::signer();
    // It names its own certificate and embeds it: embedded certificates are ignored.
    let der = forge::sign(
        &s,
        forge::Spec {
            content: f.document.as_bytes(),
            attrs_digest: Some(forge::sha256(f.document.as_bytes())),
            sid: forge::sid_of(&s.cert),
            embed: vec![s.cert.clone()],
        },
    );
    rejected_with(
        attest(&a, &payload(&f.document, Proof::Rsa2048, &b64(&der)), f.when()).await,
        "not a trusted AWS certificate",
    );
    // It names AWS's us-west-2 certificate: the signature does not verify under it.
    let aws = x509_cert::Certificate::from_der(
        ::pem::parse(read("rsa2048-teleport/aws-rsa2048-us-west-2.pem")).unwrap().contents(),
    )
    .unwrap();
    let der = forge::sign(
        &s,
        forge::Spec {
            content: f.document.as_bytes(),
            attrs_digest: Some(forge::sha256(f.document.as_bytes())),
            sid: forge::sid_of(&aws),
            embed: vec![],
        },
    );
    rejected_with(
        attest(&a, &payload(&f.document, Proof::Rsa2048, &b64(&der)), f.when()).await,
        "signature does not verify under built-in rsa2048/us-west-2",
    );
}

use der::Decode;

#[tokio::test]
async fn a_trusted_signer_verifies_with_and_without_signed_attributes() {
    let (s, a, f) = self_made_trusted();
    for attrs_digest in [Some(forge::sha256(f.document.as_bytes())), None] {
        let with = attrs_digest.is_some();
        let der = forge::sign(
            &s,
            forge::Spec {
                content: f.document.as_bytes(),
                attrs_digest,
                sid: forge::sid_of(&s.cert),
                embed: vec![],
            },
        );
        let got = attest(&a, &payload(&f.document, Proof::Rsa2048, &b64(&der)), f.when())
            .await
            .unwrap_or_else(|e| panic!("signed attributes {with}: {e}"));
        assert_eq!(got.agent_path, [f.account, f.region, f.instance]);
    }
    // Trusted for us-west-2 only: the same signer for a us-west-1 document is refused.
    let g = teleport2();
    let der = forge::sign(
        &s,
        forge::Spec {
            content: g.document.as_bytes(),
            attrs_digest: None,
            sid: forge::sid_of(&s.cert),
            embed: vec![],
        },
    );
    rejected_with(
        attest(&a, &payload(&g.document, Proof::Rsa2048, &b64(&der)), g.when()).await,
        "not a trusted AWS certificate",
    );
}

#[tokio::test]
async fn a_signed_message_digest_that_does_not_match_the_content_is_refused() {
    let (s, a, f) = self_made_trusted();
    // Validly signed attributes whose message digest is another document's.
    let der = forge::sign(
        &s,
        forge::Spec {
            content: f.document.as_bytes(),
            attrs_digest: Some(forge::sha256(teleport2().document.as_bytes())),
            sid: forge::sid_of(&s.cert),
            embed: vec![],
        },
    );
    rejected_with(
        attest(&a, &payload(&f.document, Proof::Rsa2048, &b64(&der)), f.when()).await,
        "message-digest attribute does not match the SHA-256 of the document",
    );
}

#[tokio::test]
async fn without_signed_attributes_a_changed_content_fails_the_signature() {
    let (s, a, f) = self_made_trusted();
    let der = forge::sign(
        &s,
        forge::Spec {
            content: f.document.as_bytes(),
            attrs_digest: None,
            sid: forge::sid_of(&s.cert),
            embed: vec![],
        },
    );
    let doc = tamper(&f.document);
    let der = patch_der(&der, f.document.as_bytes(), doc.as_bytes());
    rejected_with(
        attest(&a, &payload(&doc, Proof::Rsa2048, &b64(&der)), f.when()).await,
        "signature does not verify under aws_iid.extra_certs[0]",
    );
}

#[tokio::test]
async fn rsa2048_refuses_sha1_and_certificates_that_do_not_fit_the_proof() {
    // The legacy PKCS#7 (SHA-1 with DSA) presented as rsa2048: SHA-1 is refused before
    // any key is looked at.
    let a = attestor(&config());
    let v = vault();
    rejected_with(attest(&a, &payload(&v.document, Proof::Rsa2048, &v.value), v.when()).await, "SHA-1");
    // Certificates whose keys cannot verify a proof are refused at start.
    let cert =
        |proof, file: &str| CertConfig { proof, region: "*".into(), pem_file: Some(data(file)), pem: None };
    for (c, needle) in [
        (
            cert(Proof::Rsa2048, "pkcs7-dsa-vault/aws-dsa-cert.pem"),
            "DSA key; the rsa2048 proof is signed with RSA",
        ),
        (cert(Proof::Signature, "pkcs7-dsa-vault/aws-dsa-cert.pem"), "DSA key; the signature proof"),
        (
            cert(Proof::Rsa2048, "rsa1024-signature-istio/aws-rsa1024-global-cert.pem"),
            "RSA-1024 key; the rsa2048 proof needs at least 2048 bits",
        ),
    ] {
        let mut cfg = config();
        cfg.extra_certs = vec![c];
        let e = AwsIidAttestor::from_config(&cfg).unwrap_err();
        assert!(e.starts_with("aws_iid.extra_certs[0]") && e.contains(needle), "{e}");
    }
    // RSA and DSA both fit the legacy proof.
    let mut cfg = config();
    cfg.extra_certs = vec![
        cert(Proof::Pkcs7, "pkcs7-dsa-vault/aws-dsa-cert.pem"),
        cert(Proof::Pkcs7, "rsa2048-teleport/aws-rsa2048-us-west-2.pem"),
    ];
    AwsIidAttestor::from_config(&cfg).unwrap();
}
