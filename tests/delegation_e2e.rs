//! Delegation end to end: the real `ferrid server` and `ferrid token exchange|task`.
//!
//! A person (alice) signs in at an identity provider; a planner agent exchanges her ID
//! token for a delegation token addressed to a researcher sub-agent, which exchanges it
//! again for a token to a search API. There is no real identity provider here: a local
//! OIDC issuer on loopback (discovery + JWKS) stands in, and the test signs alice's ID
//! token under its key. The workloads' X.509-SVIDs come from `ferrid x509 mint`.
mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::*;
use ferrid_test_util::jwt::Signer;
use ferrid_test_util::oidc::Issuer;
use serde_json::{Value, json};

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

struct World {
    server: Server,
    dir: PathBuf,
    bundle: PathBuf,
}

impl World {
    /// Registers `path` with `model` and mints its X.509-SVID into `<dir>/<name>/`.
    fn workload(&self, name: &str, model: &str) -> String {
        let id = format!("spiffe://{TD}/agents/{name}");
        self.server.ok(&[
            "entry",
            "create",
            "--spiffe-id",
            &id,
            "--parent-id",
            &format!("spiffe://{TD}/ferrid/agent/x/{name}"),
            "--selector",
            "unix:uid:65534",
            "--metadata",
            &format!("authority_model={model}"),
        ]);
        let out = self.dir.join(name);
        self.server.ok(&["x509", "mint", "--spiffe-id", &id, "--out-dir", out.to_str().unwrap()]);
        id
    }

    fn token(&self, as_: &str, args: &[&str]) -> std::process::Output {
        let dir = self.dir.join(as_);
        let mut a = vec![
            "token".to_owned(),
            args[0].to_owned(),
            "--server-address".into(),
            self.server.node.clone(),
            "--trust-domain".into(),
            TD.into(),
            "--trust-bundle".into(),
            self.bundle.display().to_string(),
            "--cert".into(),
            dir.join("svid.pem").display().to_string(),
            "--key".into(),
            dir.join("key.pem").display().to_string(),
        ];
        a.extend(args[1..].iter().map(|s| (*s).to_owned()));
        std::process::Command::new(bin()).args(&a).output().unwrap()
    }

    /// `ferrid token exchange` as `as_` with `subject` (written to a file) → JSON.
    fn exchange(&self, as_: &str, subject: &str, extra: &[&str]) -> Result<Value, String> {
        let f = self.dir.join(format!("subject-{}.jwt", rand_suffix()));
        std::fs::write(&f, subject).unwrap();
        let mut args = vec!["exchange", "--subject-token-file", f.to_str().unwrap(), "-o", "json"];
        args.extend_from_slice(extra);
        let o = self.token(as_, &args);
        if o.status.success() {
            Ok(serde_json::from_slice(&o.stdout).unwrap())
        } else {
            Err(String::from_utf8_lossy(&o.stderr).into_owned())
        }
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::SeqCst)
}

/// The claims, read with a plain JWT library: signature checked against the trust
/// bundle's JWT keys, nothing SPIFFE-specific.
fn claims(server: &Server, token: &str, aud: &str) -> Value {
    let jwks: jsonwebtoken::jwk::JwkSet =
        serde_json::from_str(&server.ok(&["bundle", "show", "--format", "jwks"])).unwrap();
    let header = jsonwebtoken::decode_header(token).unwrap();
    let jwk = jwks.find(header.kid.as_deref().unwrap()).unwrap();
    let mut v = jsonwebtoken::Validation::new(header.alg);
    v.set_audience(&[aud]);
    jsonwebtoken::decode::<Value>(token, &jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap(), &v)
        .unwrap()
        .claims
}

#[track_caller]
fn refused(r: Result<Value, String>, code: &str, needle: &str) {
    match r {
        Err(e) => assert!(e.contains(code) && e.contains(needle), "expected {code} with {needle:?}: {e}"),
        Ok(v) => panic!("expected {code} ({needle}), got a token: {v}"),
    }
}

fn setup(tmp: &Path, idp: &str, depth: usize) -> World {
    let server = Server::start_with(
        tmp,
        format!("127.0.0.1:{}", free_port()),
        &format!(
            "[delegation]\nmax_chain_depth = {depth}\n[[delegation.identity_providers]]\nname = \"corp\"\nissuer = \"{idp}\"\naudience = \"ferrid\"\n"
        ),
    );
    let bundle = tmp.join("bundle.pem");
    std::fs::write(&bundle, server.ok(&["bundle", "show"])).unwrap();
    World { server, dir: tmp.to_owned(), bundle }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_person_a_planner_and_a_researcher() {
    let tmp = tempfile::tempdir().unwrap();
    let corp = Issuer::start(Signer::rs256("corp-1")).await;
    let idp = corp.url().to_owned();
    let w = setup(tmp.path(), &idp, 2);
    let planner = w.workload("planner", "delegated");
    let researcher = w.workload("researcher", "delegated");
    let bot = w.workload("bot", "autonomous");
    let worker = w.workload("worker", "bounded");

    let alice = |may_act: &str| {
        corp.sign(&json!({
            "iss": idp, "aud": "ferrid", "sub": "alice", "iat": now(), "exp": now() + 300,
            "scope": "mail.read mail.send calendar.read", "may_act": {"sub": may_act},
        }))
    };

    // Hop 1: the planner acts for alice, for the researcher only, with less scope.
    let t1 = w
        .exchange(
            "planner",
            &alice(&planner),
            &[
                "--subject-token-type",
                "id_token",
                "--audience",
                &researcher,
                "--scope",
                "mail.read calendar.read",
                "--may-act",
                &researcher,
            ],
        )
        .unwrap();
    assert_eq!(t1["subject"], "alice");
    assert_eq!(t1["actors"], json!([planner]));
    let c1 = claims(&w.server, t1["access_token"].as_str().unwrap(), &researcher);
    assert_eq!(c1["sub"], "alice");
    assert_eq!(c1["sub_type"], "human");
    assert_eq!(c1["principal_iss"], idp.as_str());
    assert_eq!(c1["act"], json!({"sub": planner}));
    assert_eq!(c1["scope"], "calendar.read mail.read");
    assert_eq!(c1["authority_model"], "delegated");
    assert!(c1["exp"].as_i64().unwrap() <= now() + 300);

    // Hop 2: the researcher acts for alice through the planner; the innermost act is the oldest actor.
    let t1_token = t1["access_token"].as_str().unwrap();
    let t2 =
        w.exchange("researcher", t1_token, &["--audience", "search-api", "--scope", "mail.read"]).unwrap();
    let c2 = claims(&w.server, t2["access_token"].as_str().unwrap(), "search-api");
    assert_eq!(c2["sub"], "alice");
    assert_eq!(c2["act"], json!({"sub": researcher, "act": {"sub": planner}}));
    assert_eq!(c2["scope"], "mail.read");
    assert_eq!(t2["actors"], json!([researcher, planner]));
    assert!(c2["exp"].as_i64().unwrap() <= c1["exp"].as_i64().unwrap(), "never outlives the chain");

    // Scope never grows.
    refused(
        w.exchange("researcher", t1_token, &["--audience", "search-api", "--scope", "mail.send"]),
        "invalid_scope",
        "mail.send",
    );
    // An actor not named in may_act is refused (the ID token names the planner).
    refused(
        w.exchange("researcher", &alice(&planner), &["--subject-token-type", "id_token", "--audience", "x"]),
        "invalid_grant",
        "may_act",
    );
    // A token not addressed to the caller: the planner cannot reuse the researcher's hop.
    refused(
        w.exchange("planner", t2["access_token"].as_str().unwrap(), &["--audience", "x"]),
        "invalid_grant",
        "audience",
    );
    // Depth: a third hop exceeds max_chain_depth = 2.
    let t2b = w.exchange("researcher", t1_token, &["--audience", &planner]).unwrap();
    refused(
        w.exchange("planner", t2b["access_token"].as_str().unwrap(), &["--audience", "x"]),
        "invalid_request",
        "at most 2",
    );
    // An autonomous agent never gets a credential whose subject is a person.
    refused(
        w.exchange("bot", &alice(&bot), &["--subject-token-type", "id_token", "--audience", "x"]),
        "invalid_grant",
        "autonomous",
    );
    // A delegated agent without a subject token gets nothing: no task token, no plain exchange.
    let o = w.token("planner", &["task", "--audience", "x", "--task-id", "t-1"]);
    assert!(
        !o.status.success() && String::from_utf8_lossy(&o.stderr).contains("is delegated"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    refused(w.exchange("planner", "", &["--audience", "x"]), "", "no token");
    // A forged subject token (alice's claims, another key) is refused.
    let forged = Signer::rs256("corp-1").sign(&json!({"iss": idp, "aud": "ferrid", "sub": "alice", "iat": now(), "exp": now() + 300, "may_act": {"sub": planner}}));
    refused(
        w.exchange("planner", &forged, &["--subject-token-type", "id_token", "--audience", "x"]),
        "invalid_grant",
        "signature",
    );
    // An expired one too.
    let old = corp
        .sign(&json!({"iss": idp, "aud": "ferrid", "sub": "alice", "iat": now() - 900, "exp": now() - 600}));
    refused(
        w.exchange("planner", &old, &["--subject-token-type", "id_token", "--audience", "x"]),
        "invalid_grant",
        "expired",
    );

    // Bounded: task tokens carry the task; exchange without a task is refused.
    let o = w.token(
        "worker",
        &[
            "task",
            "--audience",
            "ci",
            "--task-id",
            "t-42",
            "--task-purpose",
            "rebuild the index",
            "-o",
            "json",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let t: Value = serde_json::from_slice(&o.stdout).unwrap();
    let c = claims(&w.server, t["access_token"].as_str().unwrap(), "ci");
    assert_eq!(c["sub"], worker);
    assert_eq!(c["task"], json!({"id": "t-42", "purpose": "rebuild the index"}));
    assert!(t["expires_in"].as_i64().unwrap() <= 600);
    refused(
        w.exchange("worker", &alice(&worker), &["--subject-token-type", "id_token", "--audience", "x"]),
        "invalid_request",
        "bounded",
    );
    let with_task = w
        .exchange(
            "worker",
            &alice(&worker),
            &["--subject-token-type", "id_token", "--audience", "x", "--task-id", "t-43"],
        )
        .unwrap();
    assert_eq!(claims(&w.server, with_task["access_token"].as_str().unwrap(), "x")["task"]["id"], "t-43");

    // The server kept serving.
    w.exchange("planner", &alice(&planner), &["--subject-token-type", "id_token", "--audience", "x"])
        .unwrap();
    w.server.stop();
}

/// A workload with no X.509-SVID of its own reaches token exchange through its node
/// agent: `ferrid.exchange.v1.AgentExchange` on the Workload API socket. The agent
/// attests the caller (uid), picks its identity and forwards over its mutual TLS.
#[tokio::test(flavor = "multi_thread")]
async fn a_workload_exchanges_through_its_agent() {
    use ferrid_proto::exchange::v1 as xpb;
    let tmp = tempfile::tempdir().unwrap();
    let corp = Issuer::start(Signer::rs256("corp-1")).await;
    let idp = corp.url().to_owned();
    let w = setup(tmp.path(), &idp, 4);
    let node_dir = tmp.path().join("node");
    std::fs::create_dir_all(&node_dir).unwrap();
    let (agent, _agent_id) =
        enrol(&w.server, &node_dir, &[("agents/assistant", &["--metadata", "authority_model=delegated"])]);
    let assistant = format!("spiffe://{TD}/agents/assistant");
    let path = tmp.path().join("node/agent/api.sock");
    // Lazy: the agent creates its socket once it has attested; calls are retried below.
    let channel = tonic::transport::Endpoint::from_static("http://agent.invalid")
        .connect_with_connector_lazy(tower::service_fn(move |_: tonic::transport::Uri| {
            let p = path.clone();
            async move { tokio::net::UnixStream::connect(p).await.map(hyper_util::rt::TokioIo::new) }
        }));
    let mut client = xpb::agent_exchange_client::AgentExchangeClient::new(channel);
    let subject = corp.sign(&json!({
        "iss": idp, "aud": "ferrid", "sub": "bob", "iat": now(), "exp": now() + 300, "may_act": {"sub": assistant},
    }));
    let request = |subject: &str| {
        let mut r = tonic::Request::new(xpb::AgentTokenExchangeRequest {
            request: Some(xpb::TokenExchangeRequest {
                grant_type: "urn:ietf:params:oauth:grant-type:token-exchange".into(),
                subject_token: subject.into(),
                subject_token_type: "urn:ietf:params:oauth:token-type:id_token".into(),
                audience: vec!["calendar-api".into()],
                ..Default::default()
            }),
            spiffe_id: String::new(),
        });
        r.metadata_mut().insert("workload.spiffe.io", "true".parse().unwrap());
        r
    };
    // The agent serves once it has synced its entries.
    let r = eventually(30, "exchange through the agent", || {
        let (mut c, req) = (client.clone(), request(&subject));
        async move { c.exchange_token(req).await }
    })
    .await
    .into_inner();
    assert_eq!(r.subject, "bob");
    assert_eq!(r.actors, vec![assistant.clone()]);
    let c = claims(&w.server, &r.access_token, "calendar-api");
    assert_eq!(c["act"], json!({"sub": assistant}));

    // Without the security header the agent refuses, as the Workload API does.
    let mut bare = request(&subject);
    bare.metadata_mut().remove("workload.spiffe.io");
    let e = client.exchange_token(bare).await.unwrap_err();
    assert!(e.message().contains("security header"), "{e:?}");
    // The server's refusals come back unchanged, with the RFC 8693 code.
    let other = corp.sign(&json!({
        "iss": idp, "aud": "ferrid", "sub": "bob", "iat": now(), "exp": now() + 300, "may_act": {"sub": "spiffe://e2e.example.org/agents/other"},
    }));
    let e = client.exchange_token(request(&other)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    assert!(e.message().starts_with("invalid_grant"), "{e:?}");
    assert_eq!(e.metadata().get("ferrid-oauth-error").unwrap(), "invalid_grant");
    // The workload cannot name an identity it is not issued.
    let mut wrong = request(&subject);
    wrong.get_mut().spiffe_id = format!("spiffe://{TD}/agents/root");
    assert_eq!(client.exchange_token(wrong).await.unwrap_err().code(), tonic::Code::PermissionDenied);
    // A delegated workload gets no plain JWT-SVID from the Workload API.
    let wl = eventually(30, "connect", || spiffe::WorkloadApiClient::connect_to(agent.endpoint())).await;
    let e = wl.fetch_jwt_svid(["calendar-api"], None).await.unwrap_err();
    assert!(format!("{e:?}").contains("is delegated"), "{e:?}");
    drop(agent);
    w.server.stop();
}

/// Runtime policy decides every exchange: a `forbid` wins over any `permit`, a policy
/// file that does not validate is refused while the previous set keeps deciding, and a
/// good edit takes effect without a restart.
#[tokio::test(flavor = "multi_thread")]
async fn policy_decides_at_request_time_and_reloads_atomically() {
    let tmp = tempfile::tempdir().unwrap();
    let corp = Issuer::start(Signer::rs256("corp-1")).await;
    let idp = corp.url().to_owned();
    let policies = tmp.path().join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    let permit = "@id(\"permit-all\")\npermit(principal, action, resource);\n";
    let forbid = "@id(\"no-search-after-two-hops\")\nforbid(principal, action == Ferrid::Action::\"exchange\", resource)\nwhen { resource.audience.contains(\"search-api\") && context.chain_depth > 2 };\n";
    std::fs::write(policies.join("10-permit.cedar"), permit).unwrap();
    std::fs::write(policies.join("20-forbid.cedar"), forbid).unwrap();
    let server = Server::start_with(
        tmp.path(),
        format!("127.0.0.1:{}", free_port()),
        &format!(
            "[policy]\npath = \"{}\"\nreload_interval = \"1s\"\n[[delegation.identity_providers]]\nname = \"corp\"\nissuer = \"{idp}\"\naudience = \"ferrid\"\n",
            policies.display()
        ),
    );
    let bundle = tmp.path().join("bundle.pem");
    std::fs::write(&bundle, server.ok(&["bundle", "show"])).unwrap();
    let w = World { server, dir: tmp.path().to_owned(), bundle };
    let planner = w.workload("planner", "delegated");
    let researcher = w.workload("researcher", "delegated");
    let alice = corp.sign(&json!({
        "iss": idp, "aud": "ferrid", "sub": "alice", "iat": now(), "exp": now() + 300, "may_act": {"sub": planner},
    }));
    let t1 = w
        .exchange("planner", &alice, &["--subject-token-type", "id_token", "--audience", &researcher])
        .unwrap();
    let t1 = t1["access_token"].as_str().unwrap().to_owned();
    // alice -> planner -> researcher is three long: the forbid wins over permit-all.
    refused(
        w.exchange("researcher", &t1, &["--audience", "search-api"]),
        "denied by policy",
        "no-search-after-two-hops",
    );
    // Other audiences are permitted.
    w.exchange("researcher", &t1, &["--audience", "calendar-api"]).unwrap();

    // A broken edit is refused; the old set keeps deciding (still denies, still permits).
    std::fs::write(
        policies.join("20-forbid.cedar"),
        "forbid(principal, action, resource) when { resource.nonsense };",
    )
    .unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    refused(
        w.exchange("researcher", &t1, &["--audience", "search-api"]),
        "denied by policy",
        "no-search-after-two-hops",
    );
    w.exchange("researcher", &t1, &["--audience", "calendar-api"]).unwrap();

    // A good edit (the forbid removed) takes effect without a restart.
    std::fs::remove_file(policies.join("20-forbid.cedar")).unwrap();
    eventually(15, "the reloaded policy permits search-api", || {
        let r = w.exchange("researcher", &t1, &["--audience", "search-api"]);
        async move { r }
    })
    .await;
    w.server.stop();
}

/// `ferrid policy validate` and `ferrid policy test` on the shipped examples, and on a
/// policy that does not validate (the error names file, line, column and policy).
#[test]
fn policy_cli_validates_and_runs_golden_cases() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let examples = root.join("examples/policy");
    let run = |args: &[&str]| std::process::Command::new(bin()).args(args).output().unwrap();
    let o = run(&["policy", "validate", examples.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("policies OK (hash "));
    let cases = examples.join("CASES.json");
    let o = run(&["policy", "test", "--policies", examples.to_str().unwrap(), cases.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    assert!(String::from_utf8_lossy(&o.stdout).contains(" 0 failed"));
    // A golden case that expects the wrong answer fails the run.
    let tmp = tempfile::tempdir().unwrap();
    let text =
        std::fs::read_to_string(&cases).unwrap().replacen("\"expect\": \"deny\"", "\"expect\": \"allow\"", 1);
    std::fs::write(tmp.path().join("wrong.json"), text).unwrap();
    let o = run(&[
        "policy",
        "test",
        "--policies",
        examples.to_str().unwrap(),
        tmp.path().join("wrong.json").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let bad = tmp.path().join("bad.cedar");
    std::fs::write(&bad, "permit(principal, action, resource) when { resource.bogus };").unwrap();
    let o = run(&["policy", "validate", bad.to_str().unwrap()]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("bad.cedar:1:") && err.contains("bogus"), "{err}");
}

/// Trust-domain separation: a QA server's credentials are worthless to the production
/// server. A QA JWT-SVID addressed to a production agent is not a subject token there,
/// and a QA X.509-SVID does not authenticate to production at all.
#[tokio::test(flavor = "multi_thread")]
async fn a_qa_credential_is_never_accepted_by_production() {
    let tmp = tempfile::tempdir().unwrap();
    let idp = Issuer::start(Signer::rs256("corp-1")).await.url().to_owned();
    let prod = setup(&tmp.path().join("prod"), &idp, 4);
    let qa = Server::start_in(&tmp.path().join("qa"), format!("127.0.0.1:{}", free_port()), "qa.example", "");
    let deployer = prod.workload("deployer", "delegated");
    // QA mints a perfectly valid JWT-SVID of its own, addressed to the production deployer.
    qa.ok(&[
        "entry",
        "create",
        "--spiffe-id",
        "spiffe://qa.example/deployer",
        "--parent-id",
        "spiffe://qa.example/ferrid/agent/x/y",
        "--selector",
        "unix:uid:65534",
    ]);
    let qa_jwt =
        qa.ok(&["jwt", "mint", "--spiffe-id", "spiffe://qa.example/deployer", "--audience", &deployer]);
    refused(
        prod.exchange("deployer", qa_jwt.trim(), &["--audience", "deploy-api"]),
        "invalid_grant",
        "neither by this trust domain",
    );
    // A QA X.509-SVID presented to production: the TLS layer refuses the client certificate.
    qa.ok(&[
        "x509",
        "mint",
        "--spiffe-id",
        "spiffe://qa.example/deployer",
        "--out-dir",
        tmp.path().join("prod/qa-deployer").to_str().unwrap(),
    ]);
    let o = prod.token("qa-deployer", &["task", "--audience", "x", "--task-id", "t"]);
    assert!(!o.status.success(), "a QA certificate authenticated to production");
    qa.stop();
    prod.server.stop();
}

/// A relying service's view of the trust domain: the bundle, and the revocations it
/// hears on the server's `ferrid.revocation.v1.Revocations/Watch` (ferrid-validate's
/// watch client, over TLS, the server authenticated by its SPIFFE ID).
struct RelyingParty {
    bundle: ferrid_validate::TrustBundle,
    revocations: Arc<ferrid_validate::RevocationSet>,
    task: tokio::task::JoinHandle<()>,
}

impl RelyingParty {
    fn start(server: &Server) -> Self {
        let td = spiffe::TrustDomain::new(TD).unwrap();
        let json = server.ok(&["bundle", "show", "--format", "jwks"]);
        let bundle = ferrid_validate::TrustBundle::from_spiffe_json(td.clone(), json.as_bytes()).unwrap();
        let revocations = Arc::new(ferrid_validate::RevocationSet::new(std::time::Duration::from_secs(30)));
        let feed = ferrid_validate::feeds::Feed {
            trust_domain: td,
            bundles: Arc::new(ferrid_validate::BundleSet::of([bundle.clone()])),
            revocations: revocations.clone(),
            clock: Arc::new(ferrid_types::SystemClock),
        };
        let auth =
            server.feed_auth(&format!("spiffe://{TD}/relying-party"), &server.dir.join("relying-party"));
        let task =
            tokio::spawn(ferrid_validate::feeds::watch::run(feed, format!("https://{}", server.node), auth));
        Self { bundle, revocations, task }
    }
}

impl Drop for RelyingParty {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Revoking a delegation token revokes every token exchanged from it; revoking a
/// principal revokes every delegation acting for them; revoking a task revokes its
/// tokens. The server refuses to exchange what is revoked, and the feed names each
/// token (`jti`), so relying parties refuse them too (tests/revocation_e2e.rs).
#[tokio::test(flavor = "multi_thread")]
async fn revoking_a_delegation_reaches_everything_derived_from_it() {
    let tmp = tempfile::tempdir().unwrap();
    let corp = Issuer::start(Signer::rs256("corp-1")).await;
    let idp = corp.url().to_owned();
    let w = setup(tmp.path(), &idp, 3);
    let planner = w.workload("planner", "delegated");
    let researcher = w.workload("researcher", "delegated");
    let worker = w.workload("worker", "bounded");
    let alice =
        || corp.sign(&json!({"iss": idp, "aud": "ferrid", "sub": "alice", "iat": now(), "exp": now() + 300}));
    let id_token = ["--subject-token-type", "id_token"];
    let hop = |as_: &str, subject: &str, aud: &str, extra: &[&str]| {
        let mut a = vec!["--audience", aud];
        a.extend_from_slice(extra);
        w.exchange(as_, subject, &a).unwrap()
    };
    let jti = |t: &Value| t["jti"].as_str().unwrap().to_owned();
    let tok = |t: &Value| t["access_token"].as_str().unwrap().to_owned();

    // alice → planner (t1) → researcher (t2, for the planner) → planner (t3); and a sibling t2b.
    let t1 = hop("planner", &alice(), &researcher, &id_token);
    let t2 = hop("researcher", &tok(&t1), &planner, &[]);
    let t3 = hop("planner", &tok(&t2), "search-api", &[]);
    let t2b = hop("researcher", &tok(&t1), "search-api", &[]);
    // An unrelated chain for alice through another ID token, and one for bob.
    let u1 = hop("planner", &alice(), &researcher, &id_token);
    let bob =
        corp.sign(&json!({"iss": idp, "aud": "ferrid", "sub": "bob", "iat": now(), "exp": now() + 300}));
    let b1 = hop("planner", &bob, &researcher, &id_token);

    // A relying service (the search API) built on ferrid-validate, following the
    // server's gRPC revocation watch. It accepts t3 and t2b now.
    let rp = RelyingParty::start(&w.server);
    let td = spiffe::TrustDomain::new(TD).unwrap();
    let accept = |token: &str| -> Result<(), String> {
        let keys = rp.bundle.jwt.clone();
        let now = now();
        let v = ferrid_validate::validate_jwt_svid(
            token,
            &keys,
            &td,
            &ferrid_validate::JwtOptions::new("search-api"),
            now,
        )
        .map_err(|e| e.to_string())?;
        rp.revocations.check_jwt(&v, now).map_err(|e| e.to_string())
    };
    eventually(10, "the relying party hears the feed", || async { accept(&tok(&t3)) }).await;
    accept(&tok(&t2b)).unwrap();

    // Revoke t2: it and t3 go; t1 and the sibling t2b stay.
    let r = w.server.json(&["revoke", "--jti", &jti(&t2), "--reason", "researcher misbehaved"]);
    let mut revoked: Vec<String> = r["revocations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["value"].as_str().unwrap().to_owned())
        .collect();
    revoked.sort();
    let mut want = vec![jti(&t2), jti(&t3)];
    want.sort();
    assert_eq!(revoked, want);
    assert!(r["revocations"].as_array().unwrap().iter().all(|v| v["kind"] == "jwt" && v["txn"] == r["txn"]));
    // The server will not exchange a revoked token, nor one derived from it.
    refused(w.exchange("planner", &tok(&t2), &["--audience", "x"]), "invalid_grant", "revoked");
    // The relying party refuses the child t3 before it expires; the sibling still passes.
    let why = eventually(5, "t3 refused by the relying party", || async {
        match accept(&tok(&t3)) {
            Err(e) => Ok(e),
            Ok(()) => Err("still accepted"),
        }
    })
    .await;
    assert!(why.contains("revoked") && why.contains(&jti(&t3)), "{why}");
    accept(&tok(&t2b)).unwrap();
    // t1 still works.
    hop("researcher", &tok(&t1), "search-api", &[]);

    // Revoke t1: everything derived from it that is still live goes (t2b and the new hop).
    let r = w.server.json(&["revoke", "--jti", &jti(&t1)]);
    let values: Vec<&str> =
        r["revocations"].as_array().unwrap().iter().map(|v| v["value"].as_str().unwrap()).collect();
    assert!(values.contains(&jti(&t1).as_str()) && values.contains(&jti(&t2b).as_str()), "{values:?}");
    assert!(!values.contains(&jti(&t2).as_str()), "already revoked tokens are not sent again");
    refused(w.exchange("researcher", &tok(&t1), &["--audience", "x"]), "invalid_grant", "revoked");
    eventually(5, "t2b refused by the relying party", || async {
        if accept(&tok(&t2b)).is_err() { Ok(()) } else { Err("still accepted") }
    })
    .await;

    // Revoke the principal: every live delegation acting for alice goes; bob's stays.
    let r = w.server.json(&["revoke", "--subject", "alice"]);
    let values: Vec<&str> =
        r["revocations"].as_array().unwrap().iter().map(|v| v["value"].as_str().unwrap()).collect();
    assert!(values.contains(&jti(&u1).as_str()), "{values:?}");
    assert!(!values.contains(&jti(&b1).as_str()));
    refused(w.exchange("researcher", &tok(&u1), &["--audience", "x"]), "invalid_grant", "revoked");
    hop("researcher", &tok(&b1), "search-api", &[]);

    // Revoke a task: its tokens go.
    let o = w.token("worker", &["task", "--audience", "ci", "--task-id", "t-9", "-o", "json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let task: Value = serde_json::from_slice(&o.stdout).unwrap();
    let r = w.server.json(&["revoke", "--task", "t-9"]);
    assert_eq!(r["revocations"][0]["value"], jti(&task));
    assert_eq!(r["revocations"][0]["spiffe_id"], worker.as_str());
    w.server.stop();
}
