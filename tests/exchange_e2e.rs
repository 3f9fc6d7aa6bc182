//! Direct exchange end to end: `ferrid svid exchange` (the real binary) against a real
//! `ferrid server`, with a CI job's OIDC token.
//!
//! There is no GitHub here. A local OIDC issuer on loopback stands in for
//! `https://token.actions.githubusercontent.com`: it serves
//! `/.well-known/openid-configuration` and the JWKS it names, as GitHub's issuer does,
//! and the test signs job tokens with GitHub's claim set under its key. The server is
//! configured with that issuer URL (`[github_actions] issuer = …`) and fetches its keys
//! by OIDC discovery. The credentials that come back are checked with the `spiffe`
//! crate, as a relying service would.
mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::*;
use ferrid_test_util::jwt::Signer;
use ferrid_test_util::oidc::Issuer;
use serde_json::{Value, json};

const AUD: &str = "ferrid-e2e";

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// A GitHub Actions job token's claims for `acme/app`, valid for two minutes.
fn job(iss: &str, jti: &str, environment: Option<&str>) -> Value {
    let t = now();
    let mut c = json!({
        "iss": iss, "aud": AUD, "iat": t, "nbf": t - 5, "exp": t + 120, "jti": jti,
        "sub": "repo:acme/app:ref:refs/heads/main", "repository": "acme/app", "repository_id": "42",
        "repository_owner": "acme", "repository_owner_id": "7", "repository_visibility": "private",
        "ref": "refs/heads/main", "ref_type": "branch", "ref_protected": "true", "event_name": "push",
        "workflow_ref": "acme/app/.github/workflows/deploy.yml@refs/heads/main",
        "job_workflow_ref": "acme/app/.github/workflows/deploy.yml@refs/heads/main",
        "runner_environment": "github-hosted", "actor": "alice", "actor_id": "99", "run_id": "555",
    });
    if let Some(env) = environment {
        c["environment"] = json!(env);
        c["sub"] = json!(format!("repo:acme/app:environment:{env}"));
    }
    c
}

struct Job<'a> {
    server: &'a Server,
    bundle: PathBuf,
    dir: PathBuf,
}

impl Job<'_> {
    /// Runs `ferrid svid exchange` with `token`, writing into `out`.
    fn exchange(&self, token: &str, out: &str, extra: &[&str]) -> std::process::Output {
        let token_file = self.dir.join(format!("{out}.jwt"));
        std::fs::write(&token_file, token).unwrap();
        let out_dir = self.dir.join(out);
        let mut args = vec![
            "svid",
            "exchange",
            "--server-address",
            &self.server.node,
            "--trust-domain",
            TD,
            "--trust-bundle",
            self.bundle.to_str().unwrap(),
            "--oidc-token-file",
            token_file.to_str().unwrap(),
            "--out-dir",
            out_dir.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        std::process::Command::new(bin()).args(&args).output().unwrap()
    }

    fn ok(&self, token: &str, out: &str, extra: &[&str]) -> Value {
        let mut a = extra.to_vec();
        a.extend(["--output", "json"]);
        let o = self.exchange(token, out, &a);
        assert!(o.status.success(), "exchange failed: {}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    }

    #[track_caller]
    fn refused(&self, token: &str, out: &str, needle: &str) {
        self.refused_with(token, out, &["--jwt-audience", "api"], needle);
    }

    #[track_caller]
    fn refused_with(&self, token: &str, out: &str, extra: &[&str], needle: &str) {
        let o = self.exchange(token, out, extra);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "exchange should have been refused ({needle})");
        assert!(err.contains(needle), "stderr lacks {needle:?}: {err}");
        assert!(!self.dir.join(out).join("svid.pem").exists(), "nothing is written on refusal");
        assert!(!self.dir.join(out).join("jwt_svid.token").exists(), "nothing is written on refusal");
    }
}

fn x509_svid(dir: &Path) -> spiffe::X509Svid {
    let chain: Vec<u8> = pem::parse_many(std::fs::read(dir.join("svid.pem")).unwrap())
        .unwrap()
        .into_iter()
        .flat_map(pem::Pem::into_contents)
        .collect();
    let key = pem::parse(std::fs::read(dir.join("key.pem")).unwrap()).unwrap().into_contents();
    spiffe::X509Svid::parse_from_der(&chain, &key).unwrap()
}

fn not_after(cert_der: &[u8]) -> i64 {
    let (_, c) = x509_parser::parse_x509_certificate(cert_der).unwrap();
    c.validity().not_after.timestamp()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ci_job_exchanges_its_oidc_token_for_svids() {
    let tmp = tempfile::tempdir().unwrap();
    let github = Issuer::start(Signer::rs256("gh-key-1")).await;
    let iss = github.url().to_owned();
    let server = Server::start_with(
        tmp.path(),
        format!("127.0.0.1:{}", free_port()),
        &format!("[github_actions]\nissuer = \"{iss}\"\naudience = \"{AUD}\"\nallowed_owners = [\"acme\"]\n"),
    );
    let parent = format!("spiffe://{TD}/ferrid/exchange");
    // Production deploys: only from the production environment of acme/app.
    server.ok(&[
        "entry",
        "create",
        "--parent-id",
        &parent,
        "--spiffe-id",
        &format!("spiffe://{TD}/ci/acme/app/prod"),
        "--selector",
        "github_actions:repository_id:42",
        "--selector",
        "github_actions:environment:production",
        "--x509-ttl",
        "1h",
        "--jwt-ttl",
        "1h",
    ]);
    // Everything else from main gets the dev identity.
    server.ok(&[
        "entry",
        "create",
        "--parent-id",
        &parent,
        "--spiffe-id",
        &format!("spiffe://{TD}/ci/acme/app/dev"),
        "--selector",
        "github_actions:repository_id:42",
        "--selector",
        "github_actions:ref:refs/heads/main",
        "--x509-ttl",
        "10m",
    ]);
    let bundle = tmp.path().join("bundle.pem");
    std::fs::write(&bundle, server.ok(&["bundle", "show"])).unwrap();
    let j = Job { server: &server, bundle, dir: tmp.path().to_owned() };

    // A production job: X.509-SVID and JWT-SVID for the prod identity.
    let claims = job(&iss, "jti-prod-1", Some("production"));
    let token_exp = claims["exp"].as_i64().unwrap();
    let token = github.sign(&claims);
    let r = j.ok(
        &token,
        "prod",
        &["--jwt-audience", "deployer", "--spiffe-id", &format!("spiffe://{TD}/ci/acme/app/prod")],
    );
    assert_eq!(r["attestor"], "github_actions");
    assert_eq!(r["attested_id"], format!("spiffe://{TD}/ferrid/agent/github_actions/acme/app/555"));
    assert!(r["selectors"].as_array().unwrap().contains(&json!("github_actions:environment:production")));
    let dir = tmp.path().join("prod");
    let svid = x509_svid(&dir);
    assert_eq!(svid.spiffe_id().to_string(), format!("spiffe://{TD}/ci/acme/app/prod"));
    // The entry allows an hour; the token has two minutes left, and wins.
    let leaf_not_after = not_after(svid.leaf().as_ref());
    assert!(leaf_not_after <= token_exp, "SVID outlives the token: {leaf_not_after} > {token_exp}");
    assert_eq!(std::fs::metadata(dir.join("key.pem")).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::metadata(dir.join("jwt_svid.token")).unwrap().permissions().mode() & 0o777, 0o600);
    // The JWT-SVID validates against the trust bundle's JWT authorities.
    // (The SPIFFE bundle holds both kinds of authority; JWT-SVIDs use the jwt-svid keys.)
    let mut jwks: Value = serde_json::from_str(&server.ok(&["bundle", "show", "--format", "jwks"])).unwrap();
    jwks["keys"].as_array_mut().unwrap().retain(|k| k["use"] == "jwt-svid");
    let td = spiffe::TrustDomain::new(TD).unwrap();
    let jwt_bundle = spiffe::JwtBundle::from_jwt_authorities(td, jwks.to_string().as_bytes()).unwrap();
    let set = spiffe::JwtBundleSet::from_iter([jwt_bundle]);
    let jwt = std::fs::read_to_string(dir.join("jwt_svid.token")).unwrap();
    let parsed = spiffe::JwtSvid::parse_and_validate(&jwt, &set, &["deployer"]).unwrap();
    assert_eq!(parsed.spiffe_id().to_string(), format!("spiffe://{TD}/ci/acme/app/prod"));
    assert!(parsed.expiry().unix_timestamp() <= token_exp);
    // The X.509-SVID chains to the bundle.
    let bundle_pem = std::fs::read(tmp.path().join("bundle.pem")).unwrap();
    let roots = pem::parse_many(&bundle_pem).unwrap();
    let issuer_der =
        svid.cert_chain().get(1).map_or_else(|| roots[0].contents().to_vec(), |c| c.as_ref().to_vec());
    let (_, leaf) = x509_parser::parse_x509_certificate(svid.leaf().as_ref()).unwrap();
    let (_, ca) = x509_parser::parse_x509_certificate(&issuer_der).unwrap();
    leaf.verify_signature(Some(ca.public_key())).unwrap();

    // The same token again: accepted once only.
    let prod = format!("spiffe://{TD}/ci/acme/app/prod");
    j.refused_with(&token, "prod-again", &["--spiffe-id", &prod], "already been exchanged");

    // Two identities match a production job from main: without --spiffe-id it must choose.
    j.refused(
        &github.sign(&job(&iss, "jti-prod-2", Some("production"))),
        "ambiguous",
        "choose one with spiffe_id",
    );

    // A job without an environment gets only the dev identity.
    let r = j.ok(&github.sign(&job(&iss, "jti-dev-1", None)), "dev", &[]);
    assert_eq!(r["x509_svid"]["spiffe_id"], format!("spiffe://{TD}/ci/acme/app/dev"));
    assert!(r["jwt_svid"].is_null());
    assert!(!tmp.path().join("dev/jwt_svid.token").exists());
    // ... and cannot ask for prod.
    j.refused(
        &github.sign(&{
            let mut c = job(&iss, "jti-dev-2", None);
            c["ref"] = json!("refs/heads/feature");
            c
        }),
        "feature",
        "no registration entry under",
    );
    let o = j.exchange(
        &github.sign(&job(&iss, "jti-dev-3", None)),
        "dev-wants-prod",
        &["--spiffe-id", &format!("spiffe://{TD}/ci/acme/app/prod")],
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not entitled to"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // Forgeries and strangers, each with its own error.
    let other_org = {
        let mut c = job(&iss, "jti-x-1", None);
        c["repository_owner"] = json!("evil");
        c["repository"] = json!("evil/app");
        c
    };
    j.refused(&github.sign(&other_org), "evil", "not in allowed_owners");
    let mut wrong_aud = job(&iss, "jti-x-2", None);
    wrong_aud["aud"] = json!("vault");
    j.refused(&github.sign(&wrong_aud), "aud", "audience");
    let mut expired = job(&iss, "jti-x-3", None);
    expired["exp"] = json!(now() - 600);
    j.refused(&github.sign(&expired), "expired", "expired");
    j.refused(
        &github.sign(&job("https://token.actions.example", "jti-x-4", None)),
        "foreign",
        "no attestor is configured for token issuer",
    );
    let none = Signer::forge(&json!({"alg": "none", "kid": "gh-key-1"}), &job(&iss, "jti-x-5", None), "");
    j.refused(&none, "none", "algorithm none is not allowed");
    let fetched = github.jwks_fetches();
    let rogue = Signer::rs256("gh-key-2");
    j.refused(&rogue.sign(&job(&iss, "jti-x-6", None)), "rogue", "no trusted key");
    assert!(github.jwks_fetches() <= fetched + 1, "one refresh at most for an unknown kid");
    j.refused("not a token", "garbage", "invalid argument");

    // The server kept serving through all of it.
    let r = j.ok(
        &github.sign(&job(&iss, "jti-dev-4", None)),
        "dev-again",
        &["--no-x509", "--jwt-audience", "api"],
    );
    assert_eq!(r["jwt_svid"]["spiffe_id"], format!("spiffe://{TD}/ci/acme/app/dev"));
    assert!(!tmp.path().join("dev-again/svid.pem").exists());

    // A trust bundle that does not hold the server's CA: the server is not trusted.
    let stranger = rcgen::generate_simple_self_signed(vec!["x".into()]).unwrap();
    let fake = tmp.path().join("fake-bundle.pem");
    std::fs::write(&fake, stranger.cert.pem()).unwrap();
    let j2 = Job { server: &server, bundle: fake, dir: tmp.path().to_owned() };
    let o = j2.exchange(&github.sign(&job(&iss, "jti-dev-5", None)), "untrusted", &[]);
    assert!(!o.status.success());
    server.stop();
}
