//! The CI and OIDC attestors against real GitHub Actions and GitLab CI tokens
//! (tests/data, see the READMEs there) at their own time and at today's, and against
//! tokens signed here for every negative case. GitHub's and GitLab's key endpoints are
//! not reachable from a test machine: the fetched-key tests serve OIDC discovery and a
//! JWKS from loopback, in the shape those endpoints answer.
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::routing::get;
use ferrid_attest::testkit;
use ferrid_attest::{AttestError, Attested, NoChallenges, NodeAttestor};
use ferrid_attest_oidc::{CiAttestor, GITHUB_ISSUER, GitHubConfig, GitLabConfig, OidcProviderConfig};
use ferrid_jwt::KeySet;
use ferrid_test_util::jwt::{Signer, b64url};
use ferrid_test_util::oidc::Issuer;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

fn data(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(p)
}

fn read(p: &str) -> String {
    std::fs::read_to_string(data(p)).unwrap().trim().to_owned()
}

fn at(unix: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(unix).unwrap()
}

/// 2026-11-23, the day these tests were written: "today" for the fixtures.
const TODAY: i64 = 1_795_392_000;
/// Time of the self-signed tokens.
const NOW: i64 = 1_800_000_000;
const AUD: &str = "https://ferrid.example";

async fn attest(a: &CiAttestor, token: &str, now: i64) -> Result<Attested, AttestError> {
    a.attest(token.as_bytes(), &mut NoChallenges, at(now)).await
}

#[track_caller]
fn rejected_with(r: Result<Attested, AttestError>, needle: &str) {
    match r {
        Err(AttestError::Rejected(m)) if m.contains(needle) => {}
        other => panic!("expected a rejection mentioning {needle:?}, got {other:?}"),
    }
}

#[track_caller]
fn has(got: &Attested, selectors: &[&str]) {
    for s in selectors {
        assert!(got.selectors.contains(&(*s).to_owned()), "{s} in {:?}", got.selectors);
    }
}

fn github_cfg(audience: &str, owners: &[&str]) -> GitHubConfig {
    toml::from_str::<GitHubConfig>(&format!(
        "audience = {audience:?}\nallowed_owners = {owners:?}\njwks_url = \"\"\njwks_file = {:?}",
        data("github-actions-oidc/github-actions-jwks-partial.json")
    ))
    .unwrap()
}

fn gitlab_cfg(legacy: bool) -> GitLabConfig {
    toml::from_str::<GitLabConfig>(&format!(
        "issuer = \"gitlab.com\"\nallowed_namespaces = [\"andcope1995\", \"cgrotz\"]\naccept_legacy_job_jwt = {legacy}\njwks_url = \"\"\njwks_file = {:?}",
        data("gitlab-ci-job-jwt-v1/gitlab.com-jwks.json")
    ))
    .unwrap()
}

// --- Real tokens -------------------------------------------------------------------

#[tokio::test]
async fn real_github_tokens_verify_at_their_time_and_expire_by_today() {
    for (file, aud, owner, iat) in [
        ("token-marchenko1985.jwt", "demo", "marchenko1985", 1_776_844_493),
        ("token-n-e.jwt", "https://github.com/n-e", "n-e", 1_772_541_850),
    ] {
        let a = CiAttestor::github(&github_cfg(aud, &[owner]), None).unwrap();
        let token = read(&format!("github-actions-oidc/{file}"));
        let got = attest(&a, &token, iat + 60).await.unwrap_or_else(|e| panic!("{file}: {e}"));
        has(
            &got,
            &[
                &format!("repository_owner:{owner}"),
                "ref:refs/heads/main",
                "ref_type:branch",
                "event_name:workflow_dispatch",
                "runner_environment:github-hosted",
                &format!("actor:{owner}"),
                "ref_protected:false",
            ],
        );
        assert!(got.selectors.iter().any(|s| s.starts_with("job_workflow_ref:")), "{:?}", got.selectors);
        assert!(!got.selectors.iter().any(|s| s.starts_with("environment:")), "no environment claim");
        assert_eq!(got.evidence_expires_at, Some(iat + 300));
        assert!(
            got.replay_key.as_deref().unwrap().starts_with(&format!("github_actions:{GITHUB_ISSUER}:jti:"))
        );
        assert_eq!(got.agent_path.len(), 3, "{:?}", got.agent_path);
        assert_eq!(got.agent_path[0], owner);
        match attest(&a, &token, TODAY).await {
            Err(AttestError::Expired(m)) => assert!(m.contains("GitHub Actions token"), "{m}"),
            other => panic!("{file} at today's time: {other:?}"),
        }
        // Before it was issued (nbf is iat - 300).
        assert!(matches!(attest(&a, &token, iat - 400).await, Err(AttestError::Rejected(_))));
    }
}

#[tokio::test]
async fn real_github_token_is_refused_for_another_owner_or_audience() {
    let token = read("github-actions-oidc/token-marchenko1985.jwt");
    let t = 1_776_844_493 + 60;
    let a = CiAttestor::github(&github_cfg("demo", &["acme"]), None).unwrap();
    rejected_with(attest(&a, &token, t).await, "repository owner \"marchenko1985\" is not in allowed_owners");
    let a = CiAttestor::github(&github_cfg("ferrid-server", &["marchenko1985"]), None).unwrap();
    rejected_with(attest(&a, &token, t).await, "audience");
    // Owners compare without regard to case.
    let a = CiAttestor::github(&github_cfg("demo", &["Marchenko1985"]), None).unwrap();
    attest(&a, &token, t).await.unwrap();
}

#[tokio::test]
async fn real_github_token_tampered_by_one_byte_fails_its_signature() {
    let token = read("github-actions-oidc/token-marchenko1985.jwt");
    let a = CiAttestor::github(&github_cfg("demo", &["marchenko1985"]), None).unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    let mut claims: Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, parts[1]).unwrap(),
    )
    .unwrap();
    claims["ref"] = json!("refs/heads/mainx");
    let forged = format!("{}.{}.{}", parts[0], b64url(claims.to_string().as_bytes()), parts[2]);
    rejected_with(attest(&a, &forged, 1_776_844_553).await, "signature does not verify");
    // A flipped signature byte.
    let mut sig = parts[2].as_bytes().to_vec();
    sig[10] = if sig[10] == b'A' { b'B' } else { b'A' };
    let forged = format!("{}.{}.{}", parts[0], parts[1], String::from_utf8(sig).unwrap());
    rejected_with(attest(&a, &forged, 1_776_844_553).await, "signature does not verify");
}

#[tokio::test]
async fn real_gitlab_legacy_tokens_need_the_opt_in() {
    for (file, ns, iat) in [
        ("token-andcope1995.jwt", "andcope1995", 1_600_105_774),
        ("token-cgrotz.jwt", "cgrotz", 1_626_701_104),
    ] {
        let token = read(&format!("gitlab-ci-job-jwt-v1/{file}"));
        let strict = CiAttestor::gitlab(&gitlab_cfg(false), None).unwrap();
        rejected_with(attest(&strict, &token, iat + 60).await, "no aud claim");
        let legacy = CiAttestor::gitlab(&gitlab_cfg(true), None).unwrap();
        let got = attest(&legacy, &token, iat + 60).await.unwrap_or_else(|e| panic!("{file}: {e}"));
        has(
            &got,
            &[
                &format!("namespace_path:{ns}"),
                "ref_type:branch",
                "ref_protected:true",
                &format!("user_login:{ns}"),
            ],
        );
        assert!(got.selectors.iter().any(|s| s.starts_with("project_path:")));
        assert_eq!(got.evidence_expires_at, Some(iat + 3600));
        assert!(matches!(attest(&legacy, &token, TODAY).await, Err(AttestError::Expired(_))));
    }
    let token = read("gitlab-ci-job-jwt-v1/token-cgrotz.jwt");
    let got =
        attest(&CiAttestor::gitlab(&gitlab_cfg(true), None).unwrap(), &token, 1_626_701_164).await.unwrap();
    has(&got, &["pipeline_source:web", "project_path:cgrotz/test", "ref:main"]);
    assert_eq!(got.agent_path, ["cgrotz", "test", "1435082056"]);
}

#[tokio::test]
async fn real_gitlab_token_is_refused_outside_allowed_namespaces() {
    let mut cfg = gitlab_cfg(true);
    cfg.allowed_namespaces = vec!["cgrotz-evil".into(), "cg".into()];
    let a = CiAttestor::gitlab(&cfg, None).unwrap();
    let token = read("gitlab-ci-job-jwt-v1/token-cgrotz.jwt");
    rejected_with(
        attest(&a, &token, 1_626_701_164).await,
        "namespace \"cgrotz\" is not in allowed_namespaces",
    );
}

#[tokio::test]
async fn garbage_never_attests() {
    let a = CiAttestor::github(&github_cfg("demo", &["marchenko1985"]), None).unwrap();
    testkit::assert_name_is_valid(&a);
    testkit::assert_rejects_garbage(&a, at(NOW)).await;
}

// --- Tokens signed here ------------------------------------------------------------

fn gh_claims() -> Value {
    json!({
        "iss": GITHUB_ISSUER, "aud": AUD, "sub": "repo:acme/app:environment:production",
        "iat": NOW, "nbf": NOW - 5, "exp": NOW + 300, "jti": "11111111-2222-3333-4444-555555555555",
        "repository": "acme/app", "repository_id": "42", "repository_owner": "acme", "repository_owner_id": "7",
        "repository_visibility": "private", "ref": "refs/heads/main", "ref_type": "branch", "ref_protected": "true",
        "environment": "production", "workflow_ref": "acme/app/.github/workflows/deploy.yml@refs/heads/main",
        "job_workflow_ref": "acme/app/.github/workflows/deploy.yml@refs/heads/main", "event_name": "push",
        "runner_environment": "github-hosted", "actor": "alice", "actor_id": "99", "run_id": "1234",
    })
}

fn gh(signer: &Signer) -> CiAttestor {
    let cfg: GitHubConfig =
        toml::from_str(&format!("audience = {AUD:?}\nallowed_owners = [\"acme\"]")).unwrap();
    CiAttestor::github(&cfg, Some(signer.keys())).unwrap()
}

trait Keys {
    fn keys(&self) -> KeySet;
}
impl Keys for Signer {
    fn keys(&self) -> KeySet {
        KeySet::from_jwks(&self.jwks()).unwrap()
    }
}

#[tokio::test]
async fn github_selectors_cover_the_documented_claims() {
    let s = Signer::rs256("k1");
    let got = attest(&gh(&s), &s.sign(&gh_claims()), NOW).await.unwrap();
    has(
        &got,
        &[
            "repository:acme/app",
            "repository_id:42",
            "repository_owner:acme",
            "repository_owner_id:7",
            "ref:refs/heads/main",
            "ref_type:branch",
            "ref_protected:true",
            "environment:production",
            "workflow_ref:acme/app/.github/workflows/deploy.yml@refs/heads/main",
            "job_workflow_ref:acme/app/.github/workflows/deploy.yml@refs/heads/main",
            "event_name:push",
            "runner_environment:github-hosted",
            "actor:alice",
            "sub:repo:acme/app:environment:production",
        ],
    );
    assert_eq!(got.agent_path, ["acme", "app", "1234"]);
    assert_eq!(got.replay_expires_at, NOW + 300 + 30);
}

#[tokio::test]
async fn each_broken_claim_gets_its_own_error() {
    let s = Signer::rs256("k1");
    let a = gh(&s);
    let with = |k: &str, v: Value| {
        let mut c = gh_claims();
        c[k] = v;
        s.sign(&c)
    };
    rejected_with(attest(&a, &with("iss", json!("https://evil.example")), NOW).await, "issuer");
    rejected_with(attest(&a, &with("aud", json!("someone-else")), NOW).await, "audience");
    match attest(&a, &with("exp", json!(NOW - 100)), NOW).await {
        Err(AttestError::Expired(m)) => assert!(m.contains("expired"), "{m}"),
        other => panic!("{other:?}"),
    }
    rejected_with(attest(&a, &with("nbf", json!(NOW + 600)), NOW).await, "not valid before");
    rejected_with(attest(&a, &with("iat", json!(NOW + 600)), NOW).await, "not valid before");
    rejected_with(attest(&a, &with("repository_owner", json!("other")), NOW).await, "not in allowed_owners");
    rejected_with(attest(&a, &with("repository", json!("other/app")), NOW).await, "does not belong");
    let mut no_jti = gh_claims();
    no_jti.as_object_mut().unwrap().remove("jti");
    rejected_with(attest(&a, &s.sign(&no_jti), NOW).await, "no jti");
    let mut no_exp = gh_claims();
    no_exp.as_object_mut().unwrap().remove("exp");
    rejected_with(attest(&a, &s.sign(&no_exp), NOW).await, "exp");
    // A leeway's worth of skew is tolerated.
    attest(&a, &with("exp", json!(NOW - 20)), NOW).await.unwrap();
}

#[tokio::test]
async fn none_hmac_and_foreign_keys_are_refused() {
    let s = Signer::rs256("k1");
    let a = gh(&s);
    // alg: none, no signature.
    let none = Signer::forge(&json!({"alg": "none", "typ": "JWT", "kid": "k1"}), &gh_claims(), "");
    rejected_with(attest(&a, &none, NOW).await, "algorithm none is not allowed");
    // Key confusion: HS256 with the issuer's public key as the HMAC secret.
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some("k1".into());
    let hs =
        jsonwebtoken::encode(&h, &gh_claims(), &EncodingKey::from_secret(s.public_pem.as_bytes())).unwrap();
    rejected_with(attest(&a, &hs, NOW).await, "algorithm HS256 is not allowed");
    // ES256 is a real asymmetric algorithm, but GitHub signs with RS256 only.
    let ec = Signer::es256("k1");
    rejected_with(attest(&a, &ec.sign(&gh_claims()), NOW).await, "algorithm ES256 is not allowed");
    // Another RSA key with the same kid.
    let other = Signer::rs256("k1");
    rejected_with(attest(&a, &other.sign(&gh_claims()), NOW).await, "signature does not verify");
    // A kid nobody published.
    let stranger = Signer::rs256("k9");
    rejected_with(attest(&a, &stranger.sign(&gh_claims()), NOW).await, "no trusted key");
}

#[tokio::test]
async fn the_same_token_always_has_the_same_replay_key() {
    let s = Signer::rs256("k1");
    let a = gh(&s);
    let t1 = s.sign(&gh_claims());
    let k1 = attest(&a, &t1, NOW).await.unwrap().replay_key;
    assert_eq!(attest(&a, &t1, NOW + 1).await.unwrap().replay_key, k1);
    let mut c = gh_claims();
    c["jti"] = json!("another");
    assert_ne!(attest(&a, &s.sign(&c), NOW).await.unwrap().replay_key, k1);
}

#[tokio::test]
async fn gitlab_id_tokens_need_the_audience_and_give_every_selector() {
    let s = Signer::rs256("g1");
    let cfg: GitLabConfig =
        toml::from_str(&format!("audience = {AUD:?}\nallowed_namespaces = [\"acme\"]\njwks_url = \"\""))
            .unwrap();
    let a = CiAttestor::gitlab(&cfg, Some(s.keys())).unwrap();
    let claims = json!({
        "iss": "https://gitlab.com", "aud": AUD, "sub": "project_path:acme/platform/app:ref_type:branch:ref:main",
        "iat": NOW, "nbf": NOW, "exp": NOW + 300, "jti": "j-1",
        "namespace_id": "10", "namespace_path": "acme/platform", "project_id": "20", "project_path": "acme/platform/app",
        "user_id": "30", "user_login": "bob", "pipeline_id": "40", "pipeline_source": "push", "job_id": "50",
        "ref": "main", "ref_type": "branch", "ref_protected": "true", "environment": "production",
        "environment_protected": "true", "deployment_tier": "production",
        "job_project_id": "20", "job_project_path": "acme/platform/app",
    });
    let got = attest(&a, &s.sign(&claims), NOW).await.unwrap();
    has(
        &got,
        &[
            "project_path:acme/platform/app",
            "project_id:20",
            "namespace_path:acme/platform",
            "ref:main",
            "ref_type:branch",
            "ref_protected:true",
            "pipeline_source:push",
            "environment:production",
            "environment_protected:true",
            "user_login:bob",
            "job_project_path:acme/platform/app",
        ],
    );
    assert_eq!(got.agent_path, ["acme", "platform", "app", "50"]);
    let mut wrong = claims.clone();
    wrong["aud"] = json!("https://vault.example");
    rejected_with(attest(&a, &s.sign(&wrong), NOW).await, "audience");
    let mut legacy = claims.clone();
    legacy.as_object_mut().unwrap().remove("aud");
    rejected_with(attest(&a, &s.sign(&legacy), NOW).await, "no aud claim");
    // A namespace that merely starts with an allowed name is not under it.
    let mut lookalike = claims;
    lookalike["namespace_path"] = json!("acme-evil");
    rejected_with(attest(&a, &s.sign(&lookalike), NOW).await, "not in allowed_namespaces");
}

fn oidc_cfg(extra: &str) -> OidcProviderConfig {
    toml::from_str(&format!(
        "name = \"buildkite\"\nissuer = \"https://agent.buildkite.com\"\naudience = {AUD:?}\njwks_url = \"\"\nallow_any_tenant = true\n{extra}"
    ))
    .unwrap()
}

fn bk_claims() -> Value {
    json!({
        "iss": "https://agent.buildkite.com", "aud": AUD, "sub": "organization:acme:pipeline:deploy:ref:refs/heads/main",
        "iat": NOW, "exp": NOW + 600, "organization_slug": "acme", "pipeline_slug": "deploy",
        "build_branch": "main", "groups": ["ops", "release"], "agent": {"queue": "prod"},
    })
}

#[tokio::test]
async fn oidc_maps_claims_to_selectors_and_renders_the_template() {
    let s = Signer::es256("b1");
    let cfg = oidc_cfg(
        "id_template = \"{organization_slug}/{pipeline_slug}\"\nrequired_claims = { organization_slug = \"acme\" }\n[selectors]\npipeline = \"pipeline_slug\"\nbranch = \"build_branch\"\ngroup = \"groups\"\nqueue = \"agent.queue\"",
    );
    let a = CiAttestor::oidc(&cfg, Some(s.keys())).unwrap();
    assert_eq!(a.provider(), Some("buildkite"));
    let token = s.sign(&bk_claims());
    let got = attest(&a, &token, NOW).await.unwrap();
    has(
        &got,
        &[
            "buildkite:sub:organization:acme:pipeline:deploy:ref:refs/heads/main",
            "buildkite:pipeline:deploy",
            "buildkite:branch:main",
            "buildkite:group:ops",
            "buildkite:group:release",
            "buildkite:queue:prod",
        ],
    );
    assert_eq!(got.agent_path, ["buildkite", "acme", "deploy"]);
    // No jti: the replay key is the token's digest.
    assert!(got.replay_key.as_deref().unwrap().contains(":sha256:"), "{:?}", got.replay_key);
    let mut other_org = bk_claims();
    other_org["organization_slug"] = json!("evil");
    rejected_with(attest(&a, &s.sign(&other_org), NOW).await, "required_claims wants \"acme\"");
    // The attested ID is recorded, not issued: odd bytes are replaced, not refused.
    let mut slashy = bk_claims();
    slashy["pipeline_slug"] = json!("../../ad min@x");
    let got = attest(&a, &s.sign(&slashy), NOW).await.unwrap();
    assert_eq!(got.agent_path, ["buildkite", "acme", "_", "_", "ad_min_x"]);
    // A claim value that cannot be a selector is refused, naming the claim.
    let mut ctl = bk_claims();
    ctl["build_branch"] = json!("main\nevil");
    rejected_with(
        attest(&a, &s.sign(&ctl), NOW).await,
        "claim buildkite:branch has a value that cannot be a selector",
    );
    // No jti: the replay key covers header and claims, so a re-encoded signature
    // (ECDSA's s -> n - s) is still the same token.
    let a2 =
        CiAttestor::oidc(&oidc_cfg("[selectors]\npipeline = \"pipeline_slug\""), Some(s.keys())).unwrap();
    let t = s.sign(&bk_claims());
    let k = attest(&a2, &t, NOW).await.unwrap().replay_key.unwrap();
    let (input, _) = t.rsplit_once('.').unwrap();
    let resigned = s.sign(&bk_claims());
    if resigned.rsplit_once('.').unwrap().0 == input {
        assert_eq!(
            attest(&a2, &resigned, NOW).await.unwrap().replay_key.unwrap(),
            k,
            "same content, same key"
        );
    }
    assert!(k.ends_with(&{
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(input))
    }));
}

#[test]
fn configuration_errors_name_the_key() {
    let err = |r: Result<CiAttestor, String>| r.unwrap_err();
    let s = Signer::rs256("k");
    let mut g = github_cfg("demo", &[]);
    assert!(err(CiAttestor::github(&g, Some(s.keys()))).starts_with("allowed_owners:"));
    g.allowed_owners = vec!["a".into()];
    g.audience = String::new();
    assert!(err(CiAttestor::github(&g, Some(s.keys()))).starts_with("audience:"));
    let mut l = gitlab_cfg(false);
    l.allowed_namespaces = vec!["acme/".into()];
    assert!(err(CiAttestor::gitlab(&l, None)).starts_with("allowed_namespaces:"));
    assert!(err(CiAttestor::oidc(&oidc_cfg("algorithms = [\"HS256\"]"), Some(s.keys()))).contains("HMAC"));
    assert!(
        err(CiAttestor::oidc(&oidc_cfg("algorithms = [\"none\"]"), Some(s.keys())))
            .starts_with("algorithms:")
    );
    assert!(
        err(CiAttestor::oidc(&oidc_cfg("id_template = \"{sub\""), Some(s.keys())))
            .starts_with("id_template:")
    );
    let mut named = oidc_cfg("");
    named.name = "Build Kite".into();
    assert!(err(CiAttestor::oidc(&named, Some(s.keys()))).starts_with("name:"));
    // Tenant fence: required_claims unless explicitly waived; GitHub and GitLab have their own attestors.
    let mut open: OidcProviderConfig = oidc_cfg("");
    open.allow_any_tenant = false;
    assert!(err(CiAttestor::oidc(&open, Some(s.keys()))).starts_with("required_claims:"));
    let mut gh_as_oidc = oidc_cfg("");
    gh_as_oidc.issuer = GITHUB_ISSUER.into();
    assert!(err(CiAttestor::oidc(&gh_as_oidc, Some(s.keys()))).starts_with("issuer:"));
    assert!(
        err(CiAttestor::oidc(&oidc_cfg("[selectors]\nsub = \"email\""), Some(s.keys()))).contains("reserved")
    );
    // Legacy GitLab issuers are not URLs: keys must come from jwks_url or jwks_file.
    let legacy: GitLabConfig =
        toml::from_str("issuer = \"gitlab.com\"\nallowed_namespaces = [\"a\"]\naccept_legacy_job_jwt = true")
            .unwrap();
    assert!(err(CiAttestor::gitlab(&legacy, None)).starts_with("jwks_url:"));
    // No jwks_file and fetching off: nothing to verify with.
    assert!(err(CiAttestor::oidc(&oidc_cfg(""), None)).starts_with("jwks_url:"));
    // Plain HTTP discovery is refused off loopback.
    let plain: OidcProviderConfig =
        toml::from_str("name = \"x\"\nissuer = \"http://idp.example\"\nallow_any_tenant = true").unwrap();
    assert!(
        err(CiAttestor::oidc(&plain, None)).contains("http only on loopback"),
        "{}",
        err(CiAttestor::oidc(&plain, None))
    );
    assert!(toml::from_str::<GitHubConfig>("allowed_owners = [\"a\"]\nbogus = 1").is_err());
}

// --- Keys fetched by OIDC discovery ------------------------------------------------

#[tokio::test]
async fn discovery_fetches_keys_and_refreshes_on_an_unknown_kid_at_most_every_30_s() {
    let local = Issuer::start(Signer::es256("v1")).await;
    let issuer = local.url();
    let cfg: OidcProviderConfig = toml::from_str(&format!(
        "name = \"local\"\nissuer = {issuer:?}\naudience = {AUD:?}\nallow_any_tenant = true"
    ))
    .unwrap();
    let a = CiAttestor::oidc(&cfg, None).unwrap();
    let claims = |jti: &str| json!({"iss": issuer, "aud": AUD, "sub": "job-1", "iat": NOW, "exp": NOW + 300, "jti": jti});
    attest(&a, &local.sign(&claims("a")), NOW).await.unwrap();
    assert_eq!(local.jwks_fetches(), 1);
    attest(&a, &local.sign(&claims("b")), NOW).await.unwrap();
    assert_eq!(local.jwks_fetches(), 1, "cached");

    // The issuer rotates: a token under the new kid triggers a refetch (30 s later).
    let second = Signer::es256("v2");
    local.publish(&[&second]);
    attest(&a, &second.sign(&claims("c")), NOW + 31).await.unwrap();
    assert_eq!(local.jwks_fetches(), 2);

    // Made-up kids: refused after one refresh, and no refetch storm within 30 s.
    let stranger = Signer::es256("zz");
    rejected_with(attest(&a, &stranger.sign(&claims("d")), NOW + 62).await, "no trusted key");
    assert_eq!(local.jwks_fetches(), 3);
    for i in 0..20 {
        rejected_with(
            attest(&a, &stranger.sign(&claims(&format!("e{i}"))), NOW + 63).await,
            "no trusted key",
        );
    }
    assert_eq!(local.jwks_fetches(), 3, "rate limited");
}

#[tokio::test]
async fn an_unreachable_issuer_is_unavailable_not_rejected() {
    let cfg: OidcProviderConfig = toml::from_str(&format!(
        "name = \"gone\"\nissuer = \"http://127.0.0.1:9\"\naudience = {AUD:?}\nallow_any_tenant = true"
    ))
    .unwrap();
    let a = CiAttestor::oidc(&cfg, None).unwrap();
    let s = Signer::es256("x");
    let token =
        s.sign(&json!({"iss": "http://127.0.0.1:9", "aud": AUD, "sub": "s", "iat": NOW, "exp": NOW + 60}));
    match attest(&a, &token, NOW).await {
        Err(AttestError::Unavailable(m)) => assert!(m.contains("127.0.0.1:9"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_tokens_against_a_failing_issuer_cost_one_request() {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let app = axum::Router::new().route(
        "/jwks",
        get(move || {
            h.fetch_add(1, Ordering::SeqCst);
            async {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "down")
            }
        }),
    );
    let addr = ferrid_test_util::serve(app, None).await;
    let cfg: OidcProviderConfig = toml::from_str(&format!(
        "name = \"down\"\nissuer = \"https://idp.example\"\njwks_url = \"http://{addr}/jwks\"\naudience = {AUD:?}\nallow_any_tenant = true"
    ))
    .unwrap();
    let a = Arc::new(CiAttestor::oidc(&cfg, None).unwrap());
    let s = Signer::es256("k");
    let token =
        s.sign(&json!({"iss": "https://idp.example", "aud": AUD, "sub": "s", "iat": NOW, "exp": NOW + 60}));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (a, t) = (a.clone(), token.clone());
        tasks.push(tokio::spawn(async move { attest(&a, &t, NOW).await }));
    }
    for t in tasks {
        assert!(matches!(t.await.unwrap(), Err(AttestError::Unavailable(_))));
    }
    assert_eq!(hits.load(Ordering::SeqCst), 1, "one request for eight tokens");
}
