//! End-to-end: the real `ferrid` binary, started as a process on a temporary data
//! directory, driven through its admin socket (by the real CLI) and its node API (by a
//! gRPC client over real TLS sockets), then restarted on the same directory.
mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

use ferrid_proto::node::v1::{self as npb, node_client::NodeClient};
use ferrid_types::{KeyAlgorithm, SpiffeId, TrustDomain};
use serde_json::Value;
use tonic::Code;

fn bundle_roots(s: &Server) -> Vec<Vec<u8>> {
    let pem_text = s.ok(&["bundle", "show", "--format", "pem"]);
    pem::parse_many(pem_text).unwrap().into_iter().map(|p| p.into_contents()).collect()
}

async fn channel(
    s: &Server,
    roots: &[Vec<u8>],
    client: Option<(&[Vec<u8>], &[u8])>,
) -> tonic::transport::Channel {
    let td = TrustDomain::new(TD).unwrap();
    let tls = ferrid_server::tls::client_config(roots, ferrid_types::server_id(&td), client).unwrap();
    ferrid_server::client::node_channel(&s.node, tls).await.unwrap()
}

/// Runs join-token attestation; returns the agent SVID chain, or the gRPC status.
async fn attest(
    s: &Server,
    roots: &[Vec<u8>],
    token: &str,
    csr: Vec<u8>,
) -> Result<npb::AttestResult, tonic::Status> {
    let mut node = NodeClient::new(channel(s, roots, None).await);
    let first = npb::AttestAgentRequest {
        step: Some(npb::attest_agent_request::Step::Params(npb::AttestParams {
            data: Some(npb::AttestationData {
                r#type: "join_token".into(),
                payload: token.as_bytes().to_vec(),
            }),
            csr,
        })),
    };
    let mut stream = node.attest_agent(tokio_stream::iter(vec![first])).await?.into_inner();
    match stream.message().await?.and_then(|m| m.step) {
        Some(npb::attest_agent_response::Step::Result(r)) => Ok(r),
        other => panic!("unexpected attestation response {other:?}"),
    }
}

fn parse_cert(der: &[u8]) -> x509_parser::certificate::X509Certificate<'_> {
    x509_parser::parse_x509_certificate(der).unwrap().1
}

#[tokio::test(flavor = "multi_thread")]
async fn server_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path());
    let roots = bundle_roots(&s);
    assert_eq!(roots.len(), 1, "a fresh server has one X.509 authority");

    // --- The SPIFFE bundle document parses with the spiffe crate. ---
    let jwks: Value = serde_json::from_str(&s.ok(&["bundle", "show", "--format", "jwks"])).unwrap();
    assert!(jwks["spiffe_sequence"].as_u64().unwrap() >= 1);
    let x5c = jwks["keys"].as_array().unwrap().iter().find(|k| k["use"] == "x509-svid").unwrap();
    use base64::Engine;
    let der = base64::engine::general_purpose::STANDARD.decode(x5c["x5c"][0].as_str().unwrap()).unwrap();
    assert_eq!(der, roots[0]);

    // --- Join token + entry through the CLI. ---
    let tok = s.json(&["token", "generate", "--ttl", "5m"]);
    let token = tok["token"].as_str().unwrap().to_owned();
    let agent_id = tok["agent_id"].as_str().unwrap().to_owned();
    assert!(agent_id.starts_with(&format!("spiffe://{TD}/ferrid/agent/join_token/")));
    let created = s.json(&[
        "entry",
        "create",
        "--spiffe-id",
        &format!("spiffe://{TD}/web"),
        "--parent-id",
        &agent_id,
        "--selector",
        "unix:uid:1000",
        "--dns-name",
        "web.internal",
        "--x509-ttl",
        "2m",
    ]);
    let entry_id = created["entries"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(created["entries"][0]["revision"], 1);
    // Duplicate → AlreadyExists, nothing written.
    let dup = s.cli(&[
        "entry",
        "create",
        "--spiffe-id",
        &format!("spiffe://{TD}/web"),
        "--parent-id",
        &agent_id,
        "--selector",
        "unix:uid:1000",
    ]);
    assert!(!dup.status.success());
    assert!(String::from_utf8_lossy(&dup.stderr).contains("already exists"), "{dup:?}");
    // A SPIFFE ID that breaks the spec → InvalidArgument naming the field.
    let bad = s.cli(&[
        "entry",
        "create",
        "--spiffe-id",
        &format!("spiffe://{TD}/a//b"),
        "--parent-id",
        &agent_id,
        "--selector",
        "unix:uid:1",
    ]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("invalid argument") && err.contains("spiffe_id"), "{err}");
    // Foreign trust domain.
    let bad = s.cli(&[
        "entry",
        "create",
        "--spiffe-id",
        "spiffe://other.org/x",
        "--parent-id",
        &agent_id,
        "--selector",
        "unix:uid:1",
    ]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not in trust domain"));
    assert_eq!(s.json(&["entry", "list"])["entries"].as_array().unwrap().len(), 1);

    // --- Node attestation over server-authenticated TLS. ---
    let (agent_key, agent_csr) = ferrid_ca::generate_key_and_csr(KeyAlgorithm::EcP256, None).unwrap();
    // A forged token (right id, wrong secret) is refused and does not burn the token.
    let (id_part, _) = token.split_once('.').unwrap();
    let forged = format!("{id_part}.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    let e = attest(&s, &roots, &forged, agent_csr.clone()).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    // A malformed CSR is refused and does not burn the token either.
    let e = attest(&s, &roots, &token, b"not a csr".to_vec()).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let unknown = attest(&s, &roots, "nope", agent_csr.clone()).await.unwrap_err();
    assert_eq!(unknown.code(), Code::InvalidArgument, "{unknown:?}");
    let result = attest(&s, &roots, &token, agent_csr.clone()).await.expect("attestation");
    let agent_chain = result.svid.as_ref().unwrap().cert_chain.clone();
    assert_eq!(result.svid.as_ref().unwrap().spiffe_id, agent_id);
    // The same token again is refused.
    let replay = attest(&s, &roots, &token, agent_csr.clone()).await.unwrap_err();
    assert_eq!(replay.code(), Code::PermissionDenied, "{replay:?}");
    assert!(replay.message().contains("used"), "{replay:?}");

    // --- Without a client certificate, minting is refused. ---
    let mut anon = NodeClient::new(channel(&s, &roots, None).await);
    let e = anon.batch_mint_x509_svids(npb::BatchMintX509SvidsRequest { params: vec![] }).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);

    // --- Mutual TLS with the agent SVID. ---
    let mut node = NodeClient::new(channel(&s, &roots, Some((&agent_chain, &agent_key))).await);
    let mut watch = node.watch_authorized(npb::WatchAuthorizedRequest {}).await.unwrap().into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.entries.len(), 1);
    assert_eq!(first.entries[0].id, entry_id);
    assert!(first.bundle.is_some());

    // Batch: one good CSR, one malformed, one entry the agent may not use.
    let (_wk, wcsr) = ferrid_ca::generate_key_and_csr(KeyAlgorithm::EcP256, None).unwrap();
    let r = node
        .batch_mint_x509_svids(npb::BatchMintX509SvidsRequest {
            params: vec![
                npb::X509SvidParams { entry_id: entry_id.clone(), csr: wcsr.clone() },
                npb::X509SvidParams { entry_id: entry_id.clone(), csr: vec![0x30, 0x03, 1, 2, 3] },
                npb::X509SvidParams { entry_id: "not-mine".into(), csr: wcsr.clone() },
            ],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.results.len(), 3);
    let svid = r.results[0].svid.as_ref().expect("first CSR minted");
    assert_eq!(r.results[1].error_code, Code::InvalidArgument as i32, "{:?}", r.results[1]);
    assert_eq!(r.results[2].error_code, Code::PermissionDenied as i32, "{:?}", r.results[2]);
    let leaf = parse_cert(&svid.cert_chain[0]);
    let lifetime = leaf.validity().not_after.timestamp() - leaf.validity().not_before.timestamp();
    assert!(lifetime <= 120 + 30, "entry TTL of 2m honoured (got {lifetime}s incl. backdating)");
    let sans: Vec<String> = leaf
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert!(sans.iter().any(|n| n.contains(&format!("spiffe://{TD}/web"))), "{sans:?}");
    assert!(sans.iter().any(|n| n.contains("web.internal")), "{sans:?}");
    // The leaf verifies against the bundle root.
    let root = parse_cert(&roots[0]);
    leaf.verify_signature(Some(root.public_key())).expect("SVID chains to the bundle");

    // JWT-SVID through the node API, verified with the bundle's JWT key.
    let jwt = node
        .mint_jwt_svid(npb::MintJwtSvidRequest {
            entry_id: entry_id.clone(),
            audience: vec!["db".into()],
            ttl: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .svid
        .unwrap();
    assert_eq!(jwt.spiffe_id, format!("spiffe://{TD}/web"));
    let e = node
        .mint_jwt_svid(npb::MintJwtSvidRequest { entry_id: entry_id.clone(), audience: vec![], ttl: 0 })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    // Batched JWT-SVIDs: one result per request, in order; a refusal is per item; an
    // empty audience is refused per item too; more than `limits.max_batch` is refused
    // as a whole.
    let jwt_req = |entry: &str, aud: &[&str]| npb::MintJwtSvidRequest {
        entry_id: entry.into(),
        audience: aud.iter().map(|a| (*a).to_owned()).collect(),
        ttl: 0,
    };
    let r = node
        .batch_mint_jwt_svids(npb::BatchMintJwtSvidsRequest {
            params: vec![
                jwt_req(&entry_id, &["db"]),
                jwt_req("not-mine", &["db"]),
                jwt_req(&entry_id, &[]),
                jwt_req(&entry_id, &["cache", "queue"]),
            ],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.results.len(), 4);
    let ids: Vec<&str> = r.results.iter().map(|r| r.entry_id.as_str()).collect();
    assert_eq!(ids, [entry_id.as_str(), "not-mine", entry_id.as_str(), entry_id.as_str()]);
    let (a, d) = (r.results[0].svid.as_ref().expect("minted"), r.results[3].svid.as_ref().expect("minted"));
    assert_eq!(a.spiffe_id, format!("spiffe://{TD}/web"));
    assert_ne!(a.jti, d.jti, "every JWT-SVID has its own jti");
    let claims = |t: &str| -> serde_json::Value {
        use base64::Engine as _;
        let part = t.split('.').nth(1).unwrap();
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).unwrap())
            .unwrap()
    };
    assert_eq!(claims(&a.token)["aud"], "db", "one audience is a string (RFC 7519 4.1.3)");
    assert_eq!(claims(&d.token)["aud"], serde_json::json!(["cache", "queue"]));
    assert_eq!(r.results[1].error_code, Code::PermissionDenied as i32, "{:?}", r.results[1]);
    assert!(r.results[1].error_message.contains("not authorized"), "{:?}", r.results[1]);
    assert_eq!(r.results[2].error_code, Code::InvalidArgument as i32, "{:?}", r.results[2]);
    let e = node
        .batch_mint_jwt_svids(npb::BatchMintJwtSvidsRequest {
            params: (0..1001).map(|_| jwt_req(&entry_id, &["db"])).collect(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("at most 1000"), "{e:?}");
    let e = anon.batch_mint_jwt_svids(npb::BatchMintJwtSvidsRequest { params: vec![] }).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);

    // Oversized request: refused with a precise status, and the server keeps serving.
    let huge = vec![0u8; 5 * 1024 * 1024];
    let e = node
        .batch_mint_x509_svids(npb::BatchMintX509SvidsRequest {
            params: vec![npb::X509SvidParams { entry_id: entry_id.clone(), csr: huge }],
        })
        .await
        .unwrap_err();
    assert!(matches!(e.code(), Code::OutOfRange | Code::ResourceExhausted), "{e:?}");
    assert!(e.message().contains("too large") || e.message().contains("length"), "{e:?}");

    // --- A new entry is pushed down the open watch. ---
    let second = s.json(&[
        "entry",
        "create",
        "--spiffe-id",
        &format!("spiffe://{TD}/api"),
        "--parent-id",
        &agent_id,
        "--selector",
        "unix:uid:1001",
    ]);
    let second_id = second["entries"][0]["id"].as_str().unwrap().to_owned();
    let pushed = tokio::time::timeout(Duration::from_secs(10), watch.message())
        .await
        .expect("pushed")
        .unwrap()
        .unwrap();
    assert!(pushed.entries.iter().any(|e| e.id == second_id));
    s.ok(&["entry", "delete", "--id", &second_id]);
    let pushed = tokio::time::timeout(Duration::from_secs(10), watch.message())
        .await
        .expect("pushed")
        .unwrap()
        .unwrap();
    assert!(!pushed.entries.iter().any(|e| e.id == second_id));

    // --- Update with the CLI bumps the revision. ---
    let updated = s.json(&["entry", "update", "--id", &entry_id, "--hint", "frontend"]);
    assert_eq!(updated["entries"][0]["revision"], 2);
    assert_eq!(updated["entries"][0]["hint"], "frontend");
    let nf = s.cli(&["entry", "show", "--id", "does-not-exist"]);
    assert!(String::from_utf8_lossy(&nf.stderr).contains("not found"));

    // --- Batch creation from a file: valid entries are created together, a bad one is
    // refused on its own, and the command says which and fails. ---
    let data = tmp.path().join("entries.json");
    let batch = serde_json::json!({ "entries": [
        { "spiffe_id": format!("spiffe://{TD}/batch/a"), "parent_id": agent_id, "selectors": ["unix:uid:7"] },
        { "spiffe_id": "spiffe://elsewhere.org/x", "parent_id": agent_id, "selectors": ["unix:uid:7"] },
        { "spiffe_id": format!("spiffe://{TD}/batch/b"), "parent_id": agent_id, "selectors": ["unix:uid:8"],
          "hint": "b", "x509_svid_ttl": 60 },
    ]});
    std::fs::write(&data, batch.to_string()).unwrap();
    let out = s.cli(&["entry", "create", "--data", data.to_str().unwrap(), "--output", "json"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("1 of 3 entries were refused") && err.contains("entry 1 (spiffe://elsewhere.org/x)"),
        "{err}"
    );
    let listed = s.json(&["entry", "list", "--parent-id", &agent_id]);
    let batch_ids: Vec<&str> = listed["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["spiffe_id"].as_str().unwrap().contains("/batch/"))
        .map(|e| e["spiffe_id"].as_str().unwrap())
        .collect();
    assert_eq!(batch_ids, [format!("spiffe://{TD}/batch/a"), format!("spiffe://{TD}/batch/b")]);
    // A listing fed back in is accepted as input, and every entry in it is a duplicate.
    let again = tmp.path().join("again.json");
    std::fs::write(&again, listed.to_string()).unwrap();
    let out = s.cli(&["entry", "create", "--data", again.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("already exists"), "{err}");
    let n = listed["entries"].as_array().unwrap().len();
    assert!(err.contains(&format!("{n} of {n} entries were refused")), "{err}");
    // Unknown fields are refused before anything is sent.
    std::fs::write(&again, r#"{"entries":[{"spiffe_id":"x","parent_id":"y","selectors":[],"color":"red"}]}"#)
        .unwrap();
    let err = String::from_utf8_lossy(&s.cli(&["entry", "create", "--data", again.to_str().unwrap()]).stderr)
        .into_owned();
    assert!(err.contains("unknown field `color`"), "{err}");
    for e in listed["entries"].as_array().unwrap() {
        if e["spiffe_id"].as_str().unwrap().contains("/batch/") {
            s.ok(&["entry", "delete", "--id", e["id"].as_str().unwrap()]);
        }
    }

    // --- Agents: list, renew, evict. ---
    let agents = s.json(&["agent", "list"]);
    assert_eq!(agents["agents"][0]["spiffe_id"], agent_id.as_str());
    let (_k2, csr2) = ferrid_ca::generate_key_and_csr(KeyAlgorithm::EcP256, None).unwrap();
    let renewed =
        node.renew_agent(npb::RenewAgentRequest { csr: csr2 }).await.unwrap().into_inner().svid.unwrap();
    assert_eq!(renewed.spiffe_id, agent_id);
    s.ok(&["agent", "evict", "--spiffe-id", &agent_id]);
    let e = node.batch_mint_x509_svids(npb::BatchMintX509SvidsRequest { params: vec![] }).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(e.message().contains("evicted"));

    // --- Operator minting writes the three files; the key is private. ---
    let out = tmp.path().join("minted");
    s.ok(&[
        "x509",
        "mint",
        "--spiffe-id",
        &format!("spiffe://{TD}/ops"),
        "--ttl",
        "1m",
        "--out-dir",
        out.to_str().unwrap(),
    ]);
    for f in ["svid.pem", "key.pem", "bundle.pem"] {
        assert!(out.join(f).exists(), "{f} written");
    }
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(out.join("key.pem")).unwrap().permissions().mode() & 0o777, 0o600);
    let svid_pem = pem::parse(std::fs::read(out.join("svid.pem")).unwrap()).unwrap();
    let minted = parse_cert(svid_pem.contents());
    minted.verify_signature(Some(root.public_key())).unwrap();
    let token = s.ok(&["jwt", "mint", "--spiffe-id", &format!("spiffe://{TD}/ops"), "--audience", "svc"]);
    assert_eq!(token.trim().split('.').count(), 3);
    let e =
        s.cli(&["x509", "mint", "--spiffe-id", "spiffe://other.org/x", "--out-dir", out.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&e.stderr).contains("not in trust domain"));

    // --- The admin socket refuses other users. ---
    if nix::unistd::geteuid().is_root() {
        use std::os::unix::process::CommandExt;
        let out = Command::new(bin())
            .args(["entry", "list"])
            .env("FERRID_ADMIN_SOCKET", s.socket())
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
        assert!(err.contains("permission denied") || err.contains("cannot reach"), "{err}");
    }

    // --- Metrics and health. ---
    let metrics = s.ok(&["healthcheck", "--address", &s.health]);
    assert!(metrics.contains("healthy"));
    assert!(s.log.lock().unwrap().iter().any(|l| l.contains("ferrid server ready")));
    let logs = s.log.lock().unwrap().join("\n");
    assert!(!logs.contains(token.trim()), "JWTs are never logged");

    // --- Restart on the same data directory: entries and bundle survive. ---
    let before_bundle = s.ok(&["bundle", "show", "--format", "jwks"]);
    let dir = s.dir.clone();
    s.stop();
    let s = Server::start(&dir);
    assert_eq!(s.ok(&["bundle", "show", "--format", "jwks"]), before_bundle);
    let entries = s.json(&["entry", "list"]);
    assert_eq!(entries["entries"].as_array().unwrap().len(), 1);
    assert_eq!(entries["entries"][0]["id"], entry_id.as_str());
    let agents = s.json(&["agent", "list"]);
    assert_eq!(agents["agents"][0]["banned"], true);
    s.stop();
    let _ = SpiffeId::new(format!("spiffe://{TD}/web")).unwrap();
}
