//! End-to-end: the real `ferrid server` and `ferrid agent` binaries as processes, and a
//! real SPIFFE client (the `spiffe` crate's `WorkloadApiClient`) on the agent's socket —
//! the same path every workload takes.
mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt;
use spiffe::WorkloadApiClient;

fn chains_to(leaf: &[u8], roots: &[spiffe::cert::Certificate]) -> bool {
    let (_, l) = x509_parser::parse_x509_certificate(leaf).unwrap();
    roots.iter().any(|r| {
        let (_, r) = x509_parser::parse_x509_certificate(r.as_bytes()).unwrap();
        l.verify_signature(Some(r.public_key())).is_ok()
    })
}

/// A raw Workload API channel on the agent's socket (for what the spiffe crate does not
/// expose).
async fn uds(socket: &std::path::Path) -> tonic::transport::Channel {
    let path = socket.to_path_buf();
    tonic::transport::Endpoint::from_static("http://agent.invalid")
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let p = path.clone();
            async move { tokio::net::UnixStream::connect(p).await.map(hyper_util::rt::TokioIo::new) }
        }))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_serves_real_spiffe_clients() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("server"));
    let uid = nix::unistd::getuid().as_raw();

    let (agent, agent_id) = enrol(&server, tmp.path(), &[("web", &[])]);
    let socket = agent.socket.clone();
    let web = format!("spiffe://{TD}/web");

    // --- X.509-SVID through the spiffe crate's client. ---
    let client = eventually(30, "connect", || WorkloadApiClient::connect_to(agent.endpoint())).await;
    let svid = eventually(30, "first X.509-SVID", || client.fetch_x509_svid()).await;
    assert_eq!(svid.spiffe_id().to_string(), web);
    assert_eq!(svid.hint(), Some("web"));
    let ctx = client.fetch_x509_context().await.unwrap();
    let td = spiffe::TrustDomain::new(TD).unwrap();
    let roots = ctx.bundle_set().get(&td).expect("bundle keyed by trust domain");
    assert!(chains_to(svid.leaf().as_bytes(), roots.authorities()));

    // --- JWT-SVID, validated by the agent and by the spiffe crate offline. ---
    let jwt = client.fetch_jwt_svid(["db"], None).await.unwrap();
    assert_eq!(jwt.spiffe_id().to_string(), web);
    let validated = client.validate_jwt_token("db", jwt.token()).await.unwrap();
    assert_eq!(validated.spiffe_id().to_string(), web);
    assert!(client.validate_jwt_token("other", jwt.token()).await.is_err(), "wrong audience refused");
    let mut forged = jwt.token().to_owned();
    forged.pop();
    forged.push(if jwt.token().ends_with('A') { 'B' } else { 'A' });
    assert!(client.validate_jwt_token("db", &forged).await.is_err(), "tampered signature refused");
    let bundles = client.fetch_jwt_bundles().await.unwrap();
    spiffe::JwtSvid::parse_and_validate(jwt.token(), &bundles, &["db"])
        .expect("offline validation with fetched JWT bundle");

    // --- The spiffe crate's sources, which hold a stream open and track updates. ---
    let x509_source = spiffe::X509Source::builder().endpoint(agent.endpoint()).build().await.unwrap();
    assert_eq!(x509_source.svid().unwrap().spiffe_id().to_string(), web);
    assert!(x509_source.bundle_set().unwrap().get(&td).is_some());
    let jwt_source = spiffe::JwtSource::builder().endpoint(agent.endpoint()).build().await.unwrap();
    let from_source = jwt_source.fetch_jwt_svid(["db"]).await.unwrap();
    spiffe::JwtSvid::parse_and_validate(from_source.token(), &*jwt_source.bundle_set().unwrap(), &["db"])
        .expect("JwtSource token validates against JwtSource bundles");
    jwt_source.shutdown().await;

    // --- The security header is mandatory. ---
    {
        use ferrid_proto::workload::{X509svidRequest, spiffe_workload_api_client::SpiffeWorkloadApiClient};
        let err = SpiffeWorkloadApiClient::new(uds(&socket).await)
            .fetch_x509svid(X509svidRequest {})
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("security header"), "{err:?}");
    }

    // --- A process with no matching entry gets PermissionDenied. ---
    if nix::unistd::geteuid().is_root() {
        use std::os::unix::process::CommandExt;
        // The socket's directories must be reachable by that user, so the refusal comes
        // from the agent's attestation and not from file permissions.
        use std::os::unix::fs::PermissionsExt;
        for dir in [tmp.path(), socket.parent().unwrap()] {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let out = Command::new(bin())
            .args(["agent", "fetch", "x509"])
            .env("SPIFFE_ENDPOINT_SOCKET", agent.endpoint())
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("no identity issued"), "{err}");
    }

    // --- Entries are pushed: a new one reaches the open stream, a deleted one leaves. ---
    let mut stream = client.stream_x509_contexts().await.unwrap();
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(first.svids().len(), 1);
    let second = server.json(&[
        "entry",
        "create",
        "--spiffe-id",
        &format!("spiffe://{TD}/api"),
        "--parent-id",
        &agent_id,
        "--selector",
        &format!("unix:uid:{uid}"),
        "--hint",
        "api",
    ]);
    let second_id = second["entries"][0]["id"].as_str().unwrap().to_owned();
    let started = Instant::now();
    loop {
        let ctx = tokio::time::timeout(Duration::from_secs(15), stream.next())
            .await
            .expect("update pushed")
            .unwrap()
            .unwrap();
        if ctx.svids().len() == 2 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(15));
    }
    // Both identities miss the JWT cache for a new audience, so the agent mints them in
    // one BatchMintJwtSvids call; each token must be the one for its own SPIFFE ID.
    {
        use ferrid_proto::workload::{JwtsvidRequest, spiffe_workload_api_client::SpiffeWorkloadApiClient};
        let mut req =
            tonic::Request::new(JwtsvidRequest { audience: vec!["batch".into()], spiffe_id: String::new() });
        req.metadata_mut().insert("workload.spiffe.io", "true".parse().unwrap());
        let resp =
            SpiffeWorkloadApiClient::new(uds(&socket).await).fetch_jwtsvid(req).await.unwrap().into_inner();
        let mut ids: Vec<String> = resp.svids.iter().map(|s| s.spiffe_id.clone()).collect();
        ids.sort();
        assert_eq!(ids, [format!("spiffe://{TD}/api"), web.clone()]);
        let bundles = client.fetch_jwt_bundles().await.unwrap();
        for s in &resp.svids {
            let v = spiffe::JwtSvid::parse_and_validate(&s.svid, &bundles, &["batch"]).unwrap();
            assert_eq!(v.spiffe_id().to_string(), s.spiffe_id, "token and identity stay paired");
        }
    }
    let mut updates = x509_source.updated();
    let with_api = |_: &u64| x509_source.x509_context().is_ok_and(|c| c.svids().len() == 2);
    tokio::time::timeout(Duration::from_secs(15), updates.wait_for(with_api))
        .await
        .expect("X509Source updated")
        .unwrap();
    server.ok(&["entry", "delete", "--id", &second_id]);
    loop {
        let ctx = tokio::time::timeout(Duration::from_secs(15), stream.next())
            .await
            .expect("removal pushed")
            .unwrap()
            .unwrap();
        if ctx.svids().len() == 1 {
            assert_eq!(ctx.svids()[0].spiffe_id().to_string(), web);
            break;
        }
    }

    x509_source.shutdown().await;

    // --- The CLI: fetch with --write; the key file is private. ---
    let out_dir = tmp.path().join("files");
    let out = agent.cli(&["agent", "fetch", "x509", "--write", out_dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(out_dir.join("key.pem")).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(std::fs::read_to_string(out_dir.join("svid.pem")).unwrap().contains("BEGIN CERTIFICATE"));
    assert!(agent.cli(&["agent", "healthcheck"]).status.success());
    let token = String::from_utf8(agent.cli(&["agent", "fetch", "jwt", "--audience", "svc"]).stdout).unwrap();
    let ok = agent.cli(&["agent", "validate", "jwt", "--audience", "svc", "--token", token.trim()]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));

    // --- Server down: the agent keeps serving its cached SVID. ---
    let node = server.node.clone();
    let server_dir = server.dir.clone();
    server.stop();
    let cached = client.fetch_x509_svid().await.expect("cached SVID served while the server is down");
    assert_eq!(cached.spiffe_id().to_string(), web);
    let cached_jwt =
        client.fetch_jwt_svid(["db"], None).await.expect("cached JWT-SVID served while the server is down");
    assert_eq!(cached_jwt.token(), jwt.token(), "the agent's JWT cache answers repeated requests");
    let err = client.fetch_jwt_svid(["never-asked"], None).await.unwrap_err();
    assert!(format!("{err:?}").contains("Unavailable"), "a new JWT-SVID needs the server: {err:?}");

    // --- Server back on the same address: the agent reconnects and follows changes. ---
    let server = Server::start_on(&server_dir, node);
    server.ok(&[
        "entry",
        "create",
        "--spiffe-id",
        &format!("spiffe://{TD}/after"),
        "--parent-id",
        &agent_id,
        "--selector",
        &format!("unix:uid:{uid}"),
        "--hint",
        "after",
    ]);
    eventually(30, "reconnect and pick up the new entry", || async {
        let ctx = client.fetch_x509_context().await.map_err(|e| e.to_string())?;
        if ctx.svids().iter().any(|s| s.spiffe_id().to_string().ends_with("/after")) {
            Ok(())
        } else {
            Err("not yet".to_owned())
        }
    })
    .await;

    // --- Agent restart: it resumes with its saved SVID; no new token needed. ---
    let mut agent = agent;
    terminate(&mut agent.child);
    let agent2 = Agent::start(&agent.config, &socket);
    let client2 =
        eventually(30, "reconnect to restarted agent", || WorkloadApiClient::connect_to(agent2.endpoint()))
            .await;
    let again = eventually(30, "SVID after agent restart", || client2.fetch_x509_svid()).await;
    assert!(again.spiffe_id().to_string().starts_with(&format!("spiffe://{TD}/")));
    assert!(!agent2.logs().contains("node attested"), "the restarted agent did not attest again");
    let logs = agent.logs() + &agent2.logs();
    assert!(!logs.contains("PRIVATE KEY"), "no key material in logs");
    drop(agent2);
    server.stop();
}

fn leaf_serial(pem_chain: &str) -> String {
    let first = pem::parse_many(pem_chain).unwrap().into_iter().next().expect("a certificate");
    let (_, c) = x509_parser::parse_x509_certificate(first.contents()).unwrap();
    c.raw_serial_as_string()
}

/// `ferrid agent fetch x509 --write DIR --watch` keeps the files current through a
/// rotation and across an agent restart (the agent mints fresh keys after a restart,
/// so the files must change again).
#[tokio::test(flavor = "multi_thread")]
async fn watch_mode_follows_rotation_and_agent_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("server"));
    // A 6 s SVID rotates at about 3 s (half-life, ±10 % jitter).
    let (agent, _) = enrol(&server, tmp.path(), &[("short", &["--x509-ttl", "6s"])]);
    let out_dir = tmp.path().join("files");
    let (mut watch, watch_log) = spawn_logged(
        &["agent", "fetch", "x509", "--write", out_dir.to_str().unwrap(), "--watch"],
        &[("SPIFFE_ENDPOINT_SOCKET", &agent.endpoint())],
    );
    let svid_file = out_dir.join("svid.pem");
    let read_serial = || {
        std::fs::read_to_string(&svid_file)
            .ok()
            .filter(|s| s.contains("END CERTIFICATE"))
            .map(|s| leaf_serial(&s))
    };
    let first = eventually(30, "first write", || async {
        read_serial().ok_or_else(|| {
            format!("no file yet: {:?}\nagent log:\n{}", watch_log.lock().unwrap(), agent.logs())
        })
    })
    .await;
    let first_key = std::fs::read(out_dir.join("key.pem")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(out_dir.join("key.pem")).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(std::fs::read_to_string(out_dir.join("bundle.pem")).unwrap().contains("BEGIN CERTIFICATE"));

    let rotated = eventually(20, "rotation written", || async {
        match read_serial() {
            Some(s) if s != first => Ok(s),
            _ => Err("not rotated yet"),
        }
    })
    .await;
    assert_ne!(std::fs::read(out_dir.join("key.pem")).unwrap(), first_key, "rotation brings a new key");

    // Restart the agent; the watcher reconnects and writes the new agent's SVID.
    let mut agent = agent;
    terminate(&mut agent.child);
    let agent2 = Agent::start(&agent.config, &agent.socket);
    eventually(30, "write after agent restart", || async {
        match read_serial() {
            Some(s) if s != first && s != rotated => Ok(()),
            _ => Err("not rewritten yet"),
        }
    })
    .await;
    assert!(
        watch.try_wait().unwrap().is_none(),
        "the watcher survives the agent restart: {:?}",
        watch_log.lock().unwrap()
    );
    terminate(&mut watch);
    drop(agent2);
    server.stop();
}

/// The `k8s_psat` node attestor end to end: a server configured with a cluster's
/// issuer key, and an agent that attests with a projected service-account token read
/// from a file. There is no Kubernetes cluster on this machine, so the token is signed
/// here with the claims a 1.30+ kubelet puts in a projected token; the real tokens are
/// covered in crates/ferrid-attest-k8s-psat/tests.
#[tokio::test(flavor = "multi_thread")]
async fn agent_attests_with_a_kubernetes_projected_token() {
    let tmp = tempfile::tempdir().unwrap();
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let issuer_pem = tmp.path().join("issuer.pem");
    std::fs::write(&issuer_pem, kp.public_key_pem()).unwrap();
    let extra = format!(
        "[k8s_psat.clusters.test]\nissuer = \"https://k8s.test\"\npublic_key_files = [\"{}\"]\n\
         allowed_service_accounts = [\"ferrid:agent\"]\n",
        issuer_pem.display()
    );
    let server = Server::start_with(&tmp.path().join("server"), format!("127.0.0.1:{}", free_port()), &extra);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let token_for = |sa: &str| {
        let claims = serde_json::json!({
            "iss": "https://k8s.test", "aud": ["ferrid-server"], "iat": now, "nbf": now, "exp": now + 3600,
            "sub": format!("system:serviceaccount:ferrid:{sa}"),
            "kubernetes.io": {
                "namespace": "ferrid",
                "serviceaccount": {"name": sa, "uid": "sa-uid"},
                "pod": {"name": "ferrid-agent-abcde", "uid": "pod-uid"},
                "node": {"name": "worker-1", "uid": "node-uid-1"}
            }
        });
        let enc = jsonwebtoken::EncodingKey::from_ec_pem(kp.serialize_pem().as_bytes()).unwrap();
        jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256), &claims, &enc)
            .unwrap()
    };
    let bundle_file = tmp.path().join("bundle.pem");
    std::fs::write(&bundle_file, server.ok(&["bundle", "show", "--format", "pem"])).unwrap();
    let uid = nix::unistd::getuid().as_raw();
    let agent_id = format!("spiffe://{TD}/ferrid/agent/k8s_psat/test/node-uid-1");
    server.ok(&[
        "entry",
        "create",
        "--spiffe-id",
        &format!("spiffe://{TD}/k8s/web"),
        "--parent-id",
        &agent_id,
        "--selector",
        &format!("unix:uid:{uid}"),
    ]);
    let start_agent = |name: &str, sa: &str| {
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let token = dir.join("token");
        std::fs::write(&token, token_for(sa)).unwrap();
        let socket = dir.join("api.sock");
        let config = dir.join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "trust_domain = \"{TD}\"\nserver_address = \"{}\"\ndata_dir = \"{}\"\nsocket_path = \"{}\"\n\
                 trust_bundle_file = \"{}\"\nmax_backoff = \"1s\"\n[k8s_psat]\ncluster = \"test\"\ntoken_path = \"{}\"\n",
                server.node,
                dir.join("data").display(),
                socket.display(),
                bundle_file.display(),
                token.display()
            ),
        )
        .unwrap();
        Agent::start(&config, &socket)
    };

    let agent = start_agent("good", "agent");
    let client = eventually(30, "connect", || WorkloadApiClient::connect_to(agent.endpoint())).await;
    let svid = eventually(30, "SVID through a k8s_psat agent", || client.fetch_x509_svid()).await;
    assert_eq!(svid.spiffe_id().to_string(), format!("spiffe://{TD}/k8s/web"));
    let agents = server.json(&["agent", "list"]);
    assert!(agents.to_string().contains(&agent_id), "{agents}");
    assert!(agents.to_string().contains("k8s_psat:agent_node_name:worker-1"), "{agents}");

    // A service account the cluster does not allow: refused, with the reason in the log.
    let bad = start_agent("bad", "default");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !bad.logs().contains("ferrid:default is not allowed") {
        assert!(Instant::now() < deadline, "agent log: {}", bad.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(bad);
    drop(agent);
    server.stop();
}
