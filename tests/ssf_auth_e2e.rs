//! Who may follow the revocation feed, end to end: the real `ferrid server`, its SSF
//! poll endpoint and gRPC `Revocations/Watch` over loopback TLS, and pollers in this
//! process presenting X.509-SVIDs and JWT-SVIDs minted by the server's admin CLI (and
//! by a second server of another trust domain). docs/revocation.md, "Who may poll and
//! watch".
mod common;

use std::time::Duration;

use base64::Engine as _;
use common::ssf::{self, Creds};
use common::*;
use serde_json::{Value, json};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

struct Feed {
    server: Server,
    ssf: String,
    bundle_pem: String,
    tmp: tempfile::TempDir,
}

impl Feed {
    /// A server with its revocation listener and one named receiver, `payments`.
    fn start() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let ssf = format!("127.0.0.1:{}", free_port());
        let server = Server::start_with(
            &tmp.path().join("server"),
            format!("127.0.0.1:{}", free_port()),
            &format!(
                "[revocation]\naddress = \"{ssf}\"\nheartbeat_interval = \"1s\"\npoll_wait = \"2s\"\n\
                 [[revocation.poll]]\nname = \"payments\"\nspiffe_id = \"spiffe://{TD}/payments\"\n"
            ),
        );
        let bundle_pem = server.ok(&["bundle", "show", "--format", "pem"]);
        Self { server, ssf, bundle_pem, tmp }
    }

    fn x509(&self, path: &str) -> Creds {
        let dir = self.tmp.path().join(format!("svid-{}", path.replace('/', "-")));
        Creds::x509(&self.server, &format!("spiffe://{TD}/{path}"), &dir)
    }

    async fn post(&self, who: &Creds, path: &str, body: &Value) -> Result<ssf::Answer, String> {
        ssf::request(&self.ssf, &self.bundle_pem, who, path, body).await
    }

    async fn ok(&self, who: &Creds, path: &str, body: &Value) -> Value {
        ssf::poll_ok(&self.ssf, &self.bundle_pem, who, path, body).await
    }

    /// Revokes a fresh JWT-SVID by `jti`; the SET's id.
    fn revoke_something(&self) -> String {
        let (_, jti) = Creds::jwt(&self.server, &format!("spiffe://{TD}/victim"), "api", "5m");
        let r = self.server.json(&["revoke", "--jti", &jti, "--reason", "test"]);
        r["revocations"][0]["id"].as_str().unwrap().to_owned()
    }
}

fn now_body() -> Value {
    json!({"returnImmediately": true})
}

/// A 401 from the poll endpoint: RFC 8936 error body and a `WWW-Authenticate` challenge.
#[track_caller]
fn assert_401(a: &ssf::Answer, needle: &str) {
    assert_eq!(a.status, 401, "{a:?}");
    assert_eq!(a.www_authenticate.as_deref(), Some("Bearer realm=\"ferrid-ssf\""), "{a:?}");
    assert_eq!(a.body["err"], "authentication_failed", "{a:?}");
    let d = a.body["description"].as_str().unwrap_or_default();
    assert!(d.contains(needle), "the description {d:?} does not say {needle:?}");
}

#[track_caller]
fn assert_403(a: &ssf::Answer, needle: &str) {
    assert_eq!(a.status, 403, "{a:?}");
    assert_eq!(a.www_authenticate, None, "{a:?}");
    assert_eq!(a.body["err"], "access_denied", "{a:?}");
    let d = a.body["description"].as_str().unwrap_or_default();
    assert!(d.contains(needle), "the description {d:?} does not say {needle:?}");
}

/// The attack of issue 16: a client that is not `payments` learns the SET ids and
/// acknowledges them on `payments`' queue so that `payments` never hears of the
/// revocation. Every step of it is refused; `payments` still gets the SET.
#[tokio::test(flavor = "multi_thread")]
async fn nobody_reads_or_acknowledges_another_receivers_queue() {
    let f = Feed::start();
    let payments = f.x509("payments");
    let attacker = f.x509("attacker");
    let set_id = f.revoke_something();

    // Unauthenticated, as in the report: refused before any queue is touched.
    let anon = f.post(&Creds::none(), "/ssf/poll/payments", &json!({"ack": [set_id]})).await.unwrap();
    assert_401(&anon, "present an X.509-SVID");
    // Authenticated as someone else: payments' queue is not theirs to read or ack.
    let read = f.post(&attacker, "/ssf/poll/payments", &now_body()).await.unwrap();
    assert_403(&read, &format!("spiffe://{TD}/attacker may not poll the receiver \"payments\""));
    assert!(read.body.get("sets").is_none(), "a refusal reveals no SETs: {read:?}");
    let ack =
        f.post(&attacker, "/ssf/poll/payments", &json!({"ack": [set_id], "returnImmediately": true})).await;
    assert_403(&ack.unwrap(), "may not poll");
    // A bearer JWT-SVID of the attacker's identity fares no better.
    let (token, _) = Creds::jwt(&f.server, &format!("spiffe://{TD}/attacker"), &ssf::server_id(), "5m");
    let ack = f.post(&Creds::bearer(&token), "/ssf/poll/payments", &json!({"ack": [set_id]})).await;
    assert_403(&ack.unwrap(), "may not poll");
    // Nor does a stolen bearer token of payments beside the attacker's own certificate.
    let (stolen, _) = Creds::jwt(&f.server, &format!("spiffe://{TD}/payments"), &ssf::server_id(), "5m");
    let mixed = Creds { authorization: Some(format!("Bearer {stolen}")), ..attacker.clone() };
    let a = f.post(&mixed, "/ssf/poll/payments", &json!({"ack": [set_id]})).await.unwrap();
    assert_401(&a, "present one identity");

    // The attacker may read the feed from its own queue, and acknowledging there
    // touches nobody else's.
    let own = f.ok(&attacker, "/ssf/poll", &now_body()).await;
    assert!(own["sets"].get(&set_id).is_some(), "{own}");
    let acked = f.ok(&attacker, "/ssf/poll", &json!({"ack": [set_id], "returnImmediately": true})).await;
    assert_eq!(acked["sets"], json!({}));

    // payments hears of the revocation, on its named queue and on its own.
    let got = f.ok(&payments, "/ssf/poll/payments", &now_body()).await;
    assert!(got["sets"].get(&set_id).is_some(), "payments still gets the SET: {got}");
    let got = f.ok(&payments, "/ssf/poll", &now_body()).await;
    assert!(got["sets"].get(&set_id).is_some(), "{got}");
    // A bearer JWT-SVID of payments (audience: the server) works as well as its certificate.
    let got = f.ok(&Creds::bearer(&stolen), "/ssf/poll/payments", &now_body()).await;
    assert!(got["sets"].get(&set_id).is_some(), "{got}");
    // Once payments acknowledges, its queue is empty; the attacker's queue was already.
    let done =
        f.ok(&payments, "/ssf/poll/payments", &json!({"ack": [set_id], "returnImmediately": true})).await;
    assert_eq!(done["sets"], json!({}));

    // A name nobody configured does not exist, for anyone; a malformed one is a bad request.
    let a = f.post(&payments, "/ssf/poll/nobody", &now_body()).await.unwrap();
    assert_403(&a, "no receiver \"nobody\" is configured");
    let a = f.post(&payments, "/ssf/poll/NOT_A_NAME", &now_body()).await.unwrap();
    assert_eq!((a.status, a.body["err"].as_str()), (400, Some("invalid_request")), "{a:?}");
}

/// Replaces the signature of a JWT with nothing and its header with `alg: none`, or
/// edits its claims keeping the signature.
fn forge(token: &str, edit: impl FnOnce(&mut Value, &mut Value)) -> String {
    let mut parts = token.split('.');
    let mut header: Value = serde_json::from_slice(&B64.decode(parts.next().unwrap()).unwrap()).unwrap();
    let mut claims: Value = serde_json::from_slice(&B64.decode(parts.next().unwrap()).unwrap()).unwrap();
    let sig = parts.next().unwrap().to_owned();
    let (h0, c0) = (header.clone(), claims.clone());
    edit(&mut header, &mut claims);
    assert!(h0 != header || c0 != claims, "the forgery changes something");
    let sig = if header["alg"] == "none" { String::new() } else { sig };
    format!(
        "{}.{}.{sig}",
        B64.encode(serde_json::to_vec(&header).unwrap()),
        B64.encode(serde_json::to_vec(&claims).unwrap())
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn each_authentication_failure_gets_its_status() {
    let f = Feed::start();
    let me = format!("spiffe://{TD}/rp");
    let aud = ssf::server_id();

    // No credential.
    let a = f.post(&Creds::none(), "/ssf/poll", &now_body()).await.unwrap();
    assert_401(&a, "present an X.509-SVID (mutual TLS) or `Authorization: Bearer <JWT-SVID>`");
    // Not a bearer credential, or not a JWT.
    let basic = Creds { authorization: Some("Basic cnA6cGFzcw==".into()), ..Creds::none() };
    assert_401(&f.post(&basic, "/ssf/poll", &now_body()).await.unwrap(), "not `Bearer <JWT-SVID>`");
    assert_401(
        &f.post(&Creds::bearer("not-a-jwt"), "/ssf/poll", &now_body()).await.unwrap(),
        "bearer JWT-SVID",
    );

    // A JWT-SVID for another audience (a token meant for some API, replayed here).
    let (other_aud, _) = Creds::jwt(&f.server, &me, &format!("spiffe://{TD}/api"), "5m");
    let a = f.post(&Creds::bearer(&other_aud), "/ssf/poll", &now_body()).await.unwrap();
    assert_401(&a, "audience");

    // A good one, then the same forged: alg none, claims edited under the old signature.
    let (good, jti) = Creds::jwt(&f.server, &me, &aud, "5m");
    f.ok(&Creds::bearer(&good), "/ssf/poll", &now_body()).await;
    let none = forge(&good, |h, _| h["alg"] = json!("none"));
    assert_401(&f.post(&Creds::bearer(&none), "/ssf/poll", &now_body()).await.unwrap(), "bearer JWT-SVID");
    let tampered = forge(&good, |_, c| c["sub"] = json!(format!("spiffe://{TD}/payments")));
    let a = f.post(&Creds::bearer(&tampered), "/ssf/poll/payments", &now_body()).await.unwrap();
    assert_401(&a, "bearer JWT-SVID");
    // The header switched to HS256 under the ES256 signature (algorithm confusion).
    let hs = forge(&good, |h, _| h["alg"] = json!("HS256"));
    assert_401(&f.post(&Creds::bearer(&hs), "/ssf/poll", &now_body()).await.unwrap(), "bearer JWT-SVID");

    // Revoked: the JWT-SVID by jti, an X.509-SVID by serial.
    f.server.ok(&["revoke", "--jti", &jti]);
    let a = f.post(&Creds::bearer(&good), "/ssf/poll", &now_body()).await.unwrap();
    assert_401(&a, "has been revoked");
    let cert = f.x509("rp");
    f.ok(&cert, "/ssf/poll", &now_body()).await;
    let leaf = &cert.x509.as_ref().unwrap().0[0];
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf).unwrap();
    let serial = ferrid_types::Serial::from_bytes(parsed.raw_serial()).unwrap();
    f.server.ok(&["revoke", "--serial", serial.as_str()]);
    let a = f.post(&cert, "/ssf/poll", &now_body()).await.unwrap();
    assert_401(&a, "has been revoked");

    // Another trust domain: its JWT-SVID names the right audience but is signed by keys
    // this server does not trust; its X.509-SVID does not chain to this bundle, so the
    // TLS handshake is refused before any HTTP.
    let foreign =
        Server::start_in(&f.tmp.path().join("other"), format!("127.0.0.1:{}", free_port()), "other.org", "");
    let (theirs, _) = Creds::jwt(&foreign, "spiffe://other.org/rp", &aud, "5m");
    let a = f.post(&Creds::bearer(&theirs), "/ssf/poll", &now_body()).await.unwrap();
    assert_401(&a, "bearer JWT-SVID");
    let their_cert = Creds::x509(&foreign, "spiffe://other.org/rp", &f.tmp.path().join("other-svid"));
    let e = f.post(&their_cert, "/ssf/poll", &now_body()).await.unwrap_err();
    assert!(!e.is_empty());
    foreign.stop();

    // Expired: a JWT-SVID past its exp (beyond the 5 s leeway) and an X.509-SVID past
    // its notAfter (refused in the handshake).
    let (short, _) = Creds::jwt(&f.server, &me, &aud, "1s");
    let dir = f.tmp.path().join("short-x509");
    f.server.ok(&["x509", "mint", "--spiffe-id", &me, "--ttl", "1s", "--out-dir", dir.to_str().unwrap()]);
    let expiring = Creds::x509_files(&dir);
    tokio::time::sleep(Duration::from_secs(8)).await;
    let a = f.post(&Creds::bearer(&short), "/ssf/poll", &now_body()).await.unwrap();
    assert_401(&a, "expired");
    assert!(f.post(&expiring, "/ssf/poll", &now_body()).await.is_err(), "an expired client certificate");

    // After all of it the server serves as before.
    let fresh = f.x509("fresh");
    let got = f.ok(&fresh, "/ssf/poll", &now_body()).await;
    assert!(got["sets"].as_object().is_some_and(|s| s.len() == 2), "both revocations are in force: {got}");
}

/// The gRPC watch streams only to SVID holders, with the same rule as the poll.
#[tokio::test(flavor = "multi_thread")]
async fn revocations_watch_requires_an_svid() {
    let f = Feed::start();
    let node = f.server.node.clone();
    f.revoke_something();

    let e = ssf::watch_first(&node, &f.bundle_pem, &Creds::none()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    assert!(e.message().contains("present an X.509-SVID"), "{e:?}");
    let e = ssf::watch_first(&node, &f.bundle_pem, &Creds::bearer("nope")).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    let (wrong_aud, _) = Creds::jwt(&f.server, &format!("spiffe://{TD}/rp"), "api", "5m");
    let e = ssf::watch_first(&node, &f.bundle_pem, &Creds::bearer(&wrong_aud)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    assert!(e.message().contains("audience"), "{e:?}");

    // An X.509-SVID, or a JWT-SVID for the server: the stream opens with what is in force.
    let first = ssf::watch_first(&node, &f.bundle_pem, &f.x509("rp")).await.unwrap();
    assert_eq!(first.revocations.len(), 1, "{first:?}");
    let (token, _) = Creds::jwt(&f.server, &format!("spiffe://{TD}/rp"), &ssf::server_id(), "5m");
    let first = ssf::watch_first(&node, &f.bundle_pem, &Creds::bearer(&token)).await.unwrap();
    assert_eq!(first.revocations.len(), 1);

    // ferrid-validate's watch client with a JWT-SVID file keeps a relying party current.
    let file = f.tmp.path().join("jwt-svid");
    std::fs::write(&file, &token).unwrap();
    let td = spiffe::TrustDomain::new(TD).unwrap();
    let bundle = ferrid_validate::TrustBundle::from_spiffe_json(
        td.clone(),
        f.server.ok(&["bundle", "show", "--format", "jwks"]).as_bytes(),
    )
    .unwrap();
    let revocations = std::sync::Arc::new(ferrid_validate::RevocationSet::new(Duration::from_secs(30)));
    let feed = ferrid_validate::feeds::Feed {
        trust_domain: td,
        bundles: std::sync::Arc::new(ferrid_validate::BundleSet::of([bundle])),
        revocations: revocations.clone(),
        clock: std::sync::Arc::new(ferrid_types::SystemClock),
    };
    let auth = ferrid_validate::feeds::FeedAuth::jwt_file(&file);
    let endpoint = format!("https://{node}");
    let task = tokio::spawn(ferrid_validate::feeds::watch::run(feed.clone(), endpoint.clone(), auth));
    eventually(20, "the watch client hears the feed", || {
        let r = revocations.clone();
        async move { if r.len() == 1 && r.last_heard().is_some() { Ok(()) } else { Err(r.len()) } }
    })
    .await;
    task.abort();
    // A token the server refuses is reported as such, not as a transport failure.
    std::fs::write(&file, &wrong_aud).unwrap();
    let e = ferrid_validate::feeds::watch::once(
        &feed,
        &endpoint,
        &ferrid_validate::feeds::FeedAuth::jwt_file(&file),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, ferrid_validate::feeds::FeedError::Unauthenticated(_)), "{e}");
}
