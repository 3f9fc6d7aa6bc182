//! The azure attestor against real IMDS attested documents (tests/data, see its README)
//! at their own time with the nonce they carry, and every way a document can be wrong.
//! Documents under a throwaway CA (tests/data/generated) cover what no recorded
//! document shows: signed attributes, a self-signed look-alike, another name.
mod common;

use common::*;
use ferrid_attest::testkit::{self, ScriptedChallenger};
use ferrid_attest::{AttestError, MAX_PAYLOAD, NoChallenges, NodeAttestor};
use ferrid_attest_azure::{AzureAttestor, TOFU_EXPIRES_AT, Trust, parse_response, verify_document};

#[tokio::test]
async fn real_documents_attest_at_their_time_with_their_nonce() {
    for r in [&REGULAR, &GOVCLOUD] {
        let a = attestor(&config(&[r.subscription]), r.nonce);
        let got =
            attest(&a, r, &der(r.file), r.created + 10).await.unwrap_or_else(|e| panic!("{}: {e}", r.file));
        assert_eq!(got.agent_path, [r.subscription, r.vm_id]);
        assert_eq!(got.selectors, [format!("subscription:{}", r.subscription), format!("vm_id:{}", r.vm_id)]);
        assert_eq!(got.replay_key, Some(format!("azure:{}:{}", r.subscription, r.vm_id)));
        assert_eq!(got.replay_expires_at, TOFU_EXPIRES_AT);
        assert!(!got.can_reattest);
    }
    let doc = verify_document(&der(REGULAR.file), &Trust::builtin(), None).unwrap();
    assert_eq!(doc.signer_names, ["metadata.azure.com", "southcentralus.metadata.azure.com"]);
    assert_eq!(doc.expires_on - doc.created_on, 6 * 3600);
    let doc = verify_document(&der(GOVCLOUD.file), &Trust::builtin(), None).unwrap();
    assert!(doc.signer_names.contains(&"metadata.azure.us".to_owned()));
}

#[tokio::test]
async fn the_2021_document_verifies_but_lacks_a_subscription() {
    // subscription-manager's document: the full IMDS answer, from an api-version
    // before subscriptionId existed.
    let answer = read("subscription-manager/attested-response.json").into_bytes();
    let doc = verify_document(&parse_response(&answer).unwrap(), &Trust::builtin(), None).unwrap();
    assert_eq!(doc.nonce.as_deref(), Some("20210104-195534"));
    assert_eq!(doc.vm_id, "f904ece8-c6c1-4b5c-881f-309b50f25e56");
    assert_eq!(doc.created_on, 1_609_768_534);
    assert_eq!(doc.subscription_id, None);
    let a = attestor(&config(&["f904ece8-c6c1-4b5c-881f-309b50f25e56"]), "20210104-195534");
    rejected_with(
        attest_with(&a, b"{}", "20210104-195534", answer, 1_609_768_534 + 10).await,
        "no subscriptionId",
    );
}

#[tokio::test]
async fn one_changed_byte_breaks_the_signature_or_the_digest() {
    let flip = |mut der: Vec<u8>, needle: &[u8]| {
        let i = der.windows(needle.len()).position(|w| w == needle).expect("needle in document");
        der[i + needle.len() - 1] ^= 0x01;
        der
    };
    let a = attestor(&config(&[REGULAR.subscription]), REGULAR.nonce);
    let changed = flip(der(REGULAR.file), b"\"vmId\":\"bd8e7443");
    rejected_with(attest(&a, &REGULAR, &changed, REGULAR.created + 10).await, "signature does not verify");
    // With signed attributes, the message digest no longer matches.
    let a = attestor(&generated_config(&[GENERATED.subscription]), GENERATED.nonce);
    let changed = flip(der("generated/attrs.pkcs7.b64"), b"\"vmId\":\"0c7d5b9e");
    rejected_with(attest(&a, &GENERATED, &changed, GENERATED.created + 10).await, "message-digest");
    // A changed signature byte.
    let mut d = der(REGULAR.file);
    let n = d.len();
    d[n - 10] ^= 0x40;
    let a = attestor(&config(&[REGULAR.subscription]), REGULAR.nonce);
    rejected_with(attest(&a, &REGULAR, &d, REGULAR.created + 10).await, "signature does not verify");
}

#[tokio::test]
async fn signed_attributes_are_verified_over_their_der_set() {
    let a = attestor(&generated_config(&[GENERATED.subscription]), GENERATED.nonce);
    for file in ["generated/attrs.pkcs7.b64", "generated/noattr.pkcs7.b64"] {
        let got = attest(&a, &GENERATED, &der(file), GENERATED.created + 10).await.unwrap();
        assert_eq!(got.agent_path, [GENERATED.subscription, GENERATED.vm_id]);
    }
}

#[tokio::test]
async fn a_nonce_the_server_did_not_choose_is_refused() {
    let a = attestor(&config(&[REGULAR.subscription]), "0123456789");
    rejected_with(
        attest_with(&a, b"{}", "0123456789", answer(&der(REGULAR.file)), REGULAR.created + 10).await,
        "not the one this server chose",
    );
    // The real nonce source: ten random digits, different each time.
    let (x, y) = (ferrid_attest_azure::random_nonce(), ferrid_attest_azure::random_nonce());
    assert!(x.len() == 10 && x.bytes().all(|b| b.is_ascii_digit()) && x != y, "{x} {y}");
}

fn pem_file(dir: &tempfile::TempDir, name: &str, parts: &[&str]) -> std::path::PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, parts.iter().map(|f| read(f)).collect::<String>()).unwrap();
    p
}

#[tokio::test]
async fn a_broken_chain_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // The public-cloud document's intermediate removed (only the government one known),
    // and not fetched (its AIA URL is on www.microsoft.com; tests/aia.rs fetches).
    let mut c = config(&[REGULAR.subscription]);
    c.intermediates_file = Some(pem_file(&dir, "i.pem", &["coder/ms_azure_tls_issuing_ca_05.pem"]));
    c.fetch_intermediates = false;
    rejected_with(
        attest(&attestor(&c, REGULAR.nonce), &REGULAR, &der(REGULAR.file), REGULAR.created + 10).await,
        "UnknownIssuer",
    );
    // A different root.
    let mut c = config(&[REGULAR.subscription]);
    c.roots_file = Some(pem_file(&dir, "r.pem", &["coder/digicert_g2_root.pem"]));
    c.fetch_intermediates = false;
    rejected_with(
        attest(&attestor(&c, REGULAR.nonce), &REGULAR, &der(REGULAR.file), REGULAR.created + 10).await,
        "UnknownIssuer",
    );
    // The throwaway CA's documents under Microsoft's roots (the leaf names no caIssuers
    // URI, so there is nothing to fetch).
    let a = attestor(&config(&[GENERATED.subscription]), GENERATED.nonce);
    rejected_with(
        attest(&a, &GENERATED, &der(GENERATED.file), GENERATED.created + 10).await,
        "UnknownIssuer",
    );
}

#[tokio::test]
async fn at_todays_time_the_document_and_its_chain_have_expired() {
    let a = attestor(&config(&[REGULAR.subscription]), REGULAR.nonce);
    assert!(matches!(attest(&a, &REGULAR, &der(REGULAR.file), TODAY).await, Err(AttestError::Expired(_))));
    // The chain itself, checked today instead of at createdOn.
    for r in [&REGULAR, &GOVCLOUD] {
        match verify_document(&der(r.file), &Trust::builtin(), Some(TODAY)) {
            Err(AttestError::Expired(m)) => assert!(m.contains("chain"), "{m}"),
            other => panic!("{}: {other:?}", r.file),
        }
    }
    // A document older than MAX_DOCUMENT_AGE, or from the future, is refused.
    let a = attestor(&generated_config(&[GENERATED.subscription]), GENERATED.nonce);
    rejected_with(
        attest(&a, &GENERATED, &der(GENERATED.file), GENERATED.created + 301).await,
        "more than 300 s",
    );
    rejected_with(
        attest(&a, &GENERATED, &der(GENERATED.file), GENERATED.created - 301).await,
        "more than 300 s",
    );
}

#[tokio::test]
async fn a_self_signed_look_alike_is_refused() {
    // CN and SAN metadata.azure.com, signed by its own key, not by a trusted CA.
    let d = der("generated/selfsigned.pkcs7.b64");
    let doc_claims = (GENERATED.nonce, GENERATED.created);
    for cfg in [generated_config(&[GENERATED.subscription]), config(&[GENERATED.subscription])] {
        let a = attestor(&cfg, doc_claims.0);
        rejected_with(attest(&a, &GENERATED, &d, doc_claims.1 + 10).await, "signer certificate chain");
    }
}

#[tokio::test]
async fn a_trusted_certificate_for_another_name_is_refused() {
    // Under the throwaway CA: a valid leaf for login.example.com.
    let a = attestor(&generated_config(&[GENERATED.subscription]), GENERATED.nonce);
    rejected_with(
        attest(&a, &GENERATED, &der("generated/othername.pkcs7.b64"), GENERATED.created + 10).await,
        "match none of allowed_names",
    );
    // Real Microsoft leaves, each valid, for the cloud this server does not accept.
    let mut c = config(&[REGULAR.subscription]);
    c.allowed_names = vec!["metadata.azure.us".into(), "*.metadata.azure.us".into()];
    rejected_with(
        attest(&attestor(&c, REGULAR.nonce), &REGULAR, &der(REGULAR.file), REGULAR.created + 10).await,
        "match none of allowed_names",
    );
    let mut c = config(&[GOVCLOUD.subscription]);
    c.allowed_names = vec!["metadata.azure.com".into(), "*.metadata.azure.com".into()];
    rejected_with(
        attest(&attestor(&c, GOVCLOUD.nonce), &GOVCLOUD, &der(GOVCLOUD.file), GOVCLOUD.created + 10).await,
        "match none of allowed_names",
    );
}

#[tokio::test]
async fn policy_subscription_and_replay() {
    let a = attestor(&config(&["00000000-0000-0000-0000-000000000000"]), REGULAR.nonce);
    rejected_with(
        attest(&a, &REGULAR, &der(REGULAR.file), REGULAR.created + 10).await,
        "subscription 5f130ffc-0a3e-4795-b691-4f56a12a5547 is not in allowed_subscriptions",
    );
    // Subscription IDs compare case-insensitively.
    let a = attestor(&config(&[&REGULAR.subscription.to_uppercase()]), REGULAR.nonce);
    let first = attest(&a, &REGULAR, &der(REGULAR.file), REGULAR.created + 10).await.unwrap();
    // The same VM again: the same replay key, which the host refuses a second time.
    let again = attest(&a, &REGULAR, &der(REGULAR.file), REGULAR.created + 20).await.unwrap();
    assert_eq!(first.replay_key, again.replay_key);
    assert_eq!(
        again.replay_key.as_deref(),
        Some("azure:5f130ffc-0a3e-4795-b691-4f56a12a5547:bd8e7443-24a0-41f3-b949-8baf4fd1c573")
    );
    // With allow_reattestation the key names the nonce and ends with the document.
    let mut c = config(&[REGULAR.subscription]);
    c.allow_reattestation = true;
    let got = attest(&attestor(&c, REGULAR.nonce), &REGULAR, &der(REGULAR.file), REGULAR.created + 10)
        .await
        .unwrap();
    assert!(got.can_reattest);
    assert_eq!(
        got.replay_key.as_deref(),
        Some("azure:nonce:bd8e7443-24a0-41f3-b949-8baf4fd1c573:20220419-072721")
    );
    assert_eq!(got.replay_expires_at, REGULAR.created + 6 * 3600);
}

#[tokio::test]
async fn oversized_payloads_and_answers_are_refused() {
    let a = attestor(&config(&[REGULAR.subscription]), REGULAR.nonce);
    let big = vec![b' '; MAX_PAYLOAD + 1];
    assert!(matches!(
        a.attest(&big, &mut NoChallenges, at(REGULAR.created)).await,
        Err(AttestError::TooLarge { limit: MAX_PAYLOAD, .. })
    ));
    let mut huge = answer(&der(REGULAR.file));
    huge.extend(std::iter::repeat_n(b' ', MAX_PAYLOAD));
    assert!(matches!(
        attest_with(&a, b"{}", REGULAR.nonce, huge, REGULAR.created).await,
        Err(AttestError::TooLarge { limit: MAX_PAYLOAD, .. })
    ));
    // A document over 32 KiB inside an answer under 64 KiB.
    let bloated = answer(&vec![0x30; 40 * 1024]);
    assert!(matches!(
        attest_with(&a, b"{}", REGULAR.nonce, bloated, REGULAR.created).await,
        Err(AttestError::TooLarge { .. })
    ));
}

#[tokio::test]
async fn an_agent_that_refuses_the_challenge_fails_attestation() {
    let a = attestor(&config(&[REGULAR.subscription]), REGULAR.nonce);
    assert!(matches!(
        a.attest(b"{}", &mut NoChallenges, at(REGULAR.created)).await,
        Err(AttestError::Malformed(_))
    ));
    let mut no =
        ScriptedChallenger::new(|_: &[u8]| Err(AttestError::Rejected("agent: IMDS unreachable".into())));
    rejected_with(a.attest(b"{}", &mut no, at(REGULAR.created)).await, "IMDS unreachable");
    assert_eq!(no.asked, 1);
    // Answers that are not IMDS documents.
    for bad in [
        &b"not json"[..],
        br#"{"encoding":"json","signature":""}"#,
        br#"{"encoding":"pkcs7","signature":"!!"}"#,
        br#"{"encoding":"pkcs7","signature":"MAA="}"#,
    ] {
        assert!(matches!(
            attest_with(&a, b"{}", REGULAR.nonce, bad.to_vec(), REGULAR.created).await,
            Err(AttestError::Malformed(_))
        ));
    }
    // Payloads that are not {} or {"token"}.
    for bad in [&b"[]"[..], br#"{"nonce":"x"}"#, b"\xff"] {
        assert!(matches!(
            a.attest(bad, &mut NoChallenges, at(REGULAR.created)).await,
            Err(AttestError::Malformed(_))
        ));
    }
    // A token when the server has no [azure.identity].
    rejected_with(
        a.attest(br#"{"token":"a.b.c"}"#, &mut NoChallenges, at(REGULAR.created)).await,
        "no [azure.identity]",
    );
}

#[tokio::test]
async fn passes_the_attestor_contract() {
    let a = attestor(&config(&[REGULAR.subscription]), REGULAR.nonce);
    testkit::assert_name_is_valid(&a);
    testkit::assert_rejects_garbage(&a, at(REGULAR.created)).await;
}

#[test]
fn configuration_is_strict_and_errors_name_the_key() {
    let cfg: ferrid_attest_azure::AzureConfig = toml::from_str(
        r#"
        allowed_subscriptions = ["5f130ffc-0a3e-4795-b691-4f56a12a5547"]
        [identity]
        resource = "api://ferrid"
        allowed_tenants = ["72f988bf-86f1-41af-91ab-2d7cd011db47"]
        "#,
    )
    .unwrap();
    assert_eq!(cfg.allowed_names.len(), 6);
    assert!(!cfg.allow_reattestation);
    assert!(AzureAttestor::from_config(&cfg).is_ok(), "keys by OIDC discovery by default");
    assert!(
        toml::from_str::<ferrid_attest_azure::AzureConfig>("allowed_subscriptions = []\nsubscriptions = []")
            .is_err()
    );
    assert!(toml::from_str::<ferrid_attest_azure::AzureConfig>("allow_reattestation = true").is_err());

    let err = |c: &ferrid_attest_azure::AzureConfig| AzureAttestor::from_config(c).unwrap_err();
    assert!(err(&config(&[])).starts_with("allowed_subscriptions"));
    assert!(err(&config(&["a/b"])).starts_with("allowed_subscriptions"));
    let mut c = config(&["s"]);
    c.roots_file = Some("/nonexistent/roots.pem".into());
    assert!(err(&c).starts_with("roots_file") && err(&c).contains("/nonexistent/roots.pem"), "{}", err(&c));
    let mut c = config(&["s"]);
    c.intermediates_file = Some(data("coder/regular-2022.content.json"));
    assert!(err(&c).starts_with("intermediates_file"), "{}", err(&c));
    let mut c = config(&["s"]);
    c.allowed_names = vec!["*.com.*".into()];
    assert!(err(&c).starts_with("allowed_names"), "{}", err(&c));
    let mut c = cfg.clone();
    c.identity.as_mut().unwrap().allowed_tenants = vec!["contoso".into()];
    assert!(err(&c).starts_with("identity.allowed_tenants"), "{}", err(&c));
    let mut c = cfg.clone();
    c.identity.as_mut().unwrap().jwks_url =
        Some("https://login.microsoftonline.com/common/discovery/v2.0/keys".into());
    c.identity.as_mut().unwrap().oidc_discovery = Some(true);
    assert!(err(&c).starts_with("identity.oidc_discovery"), "{}", err(&c));
    let mut c = cfg.clone();
    c.identity.as_mut().unwrap().jwks_url = Some("http://example.com/keys".into());
    assert!(err(&c).starts_with("identity.jwks_url"), "{}", err(&c));
}
