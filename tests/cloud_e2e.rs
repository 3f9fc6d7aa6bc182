//! Cloud node attestation end to end: the real `ferrid` server and agent, the agent
//! reading its evidence from a metadata service.
//!
//! There is no EC2 or GCE metadata service on this machine. The test serves, on
//! loopback, the parts of their published APIs the agent uses: IMDSv2 (`PUT
//! /latest/api/token`, then `GET /latest/dynamic/instance-identity/{document,rsa2048}`
//! with `X-aws-ec2-metadata-token`, 401 without it) with a real EC2 document and its real
//! AWS signature (crates/ferrid-attest-aws-iid/tests/data), and the GCE metadata server
//! (`GET /computeMetadata/v1/instance/service-accounts/default/identity` with
//! `Metadata-Flavor: Google`) with a token signed here, since Google's real tokens have
//! expired.
mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::Query;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, put};
use common::*;
use spiffe::WorkloadApiClient;

fn aws_data(name: &str) -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../ferrid-attest-aws-iid/tests/data/rsa2048-teleport")
        .join(name);
    std::fs::read_to_string(p).unwrap()
}

fn agent_config(
    dir: &std::path::Path,
    server: &Server,
    bundle: &std::path::Path,
    section: &str,
) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let config = dir.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "trust_domain = \"{TD}\"\nserver_address = \"{}\"\ndata_dir = \"{}\"\nsocket_path = \"{}\"\n\
             trust_bundle_file = \"{}\"\nmax_backoff = \"1s\"\n{section}",
            server.node,
            dir.join("data").display(),
            dir.join("api.sock").display(),
            bundle.display(),
        ),
    )
    .unwrap();
    config
}

async fn wait_for_log(agent: &Agent, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !agent.logs().contains(needle) {
        assert!(Instant::now() < deadline, "agent log lacks {needle:?}: {}", agent.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn aws_agent_attests_once_with_a_real_instance_identity_document() {
    let document = aws_data("instance1-us-west-2.document.json");
    let rsa2048 = aws_data("instance1-us-west-2.rsa2048.b64");
    let requests = Arc::new(Mutex::new(Vec::<String>::new()));
    let (doc, sig, log1, log2) = (document.clone(), rsa2048.clone(), requests.clone(), requests.clone());
    let authorized = |h: &HeaderMap| {
        h.get("x-aws-ec2-metadata-token").and_then(|v| v.to_str().ok()) == Some("imds-session")
    };
    let router = axum::Router::new()
        .route(
            "/latest/api/token",
            put(move |h: HeaderMap| async move {
                log1.lock().unwrap().push("token".into());
                if h.get("x-aws-ec2-metadata-token-ttl-seconds").is_none() {
                    return (StatusCode::BAD_REQUEST, "missing TTL").into_response();
                }
                "imds-session".into_response()
            }),
        )
        .route(
            "/latest/dynamic/instance-identity/{what}",
            get(move |h: HeaderMap, axum::extract::Path(what): axum::extract::Path<String>| async move {
                log2.lock().unwrap().push(what.clone());
                if !authorized(&h) {
                    return (StatusCode::UNAUTHORIZED, "").into_response();
                }
                match what.as_str() {
                    "document" => doc.clone().into_response(),
                    "rsa2048" => sig.clone().into_response(),
                    _ => (StatusCode::NOT_FOUND, "").into_response(),
                }
            }),
        );
    let imds = ferrid_test_util::serve(router, None).await;

    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        &tmp.path().join("server"),
        format!("127.0.0.1:{}", free_port()),
        "[aws_iid]\naccounts = [\"278576220453\"]\nregions = [\"us-west-2\"]\n",
    );
    let bundle = tmp.path().join("bundle.pem");
    std::fs::write(&bundle, server.ok(&["bundle", "show", "--format", "pem"])).unwrap();
    let agent_id = format!("spiffe://{TD}/ferrid/agent/aws_iid/278576220453/us-west-2/i-078517ca8a70a1dde");
    let uid = nix::unistd::getuid().as_raw();
    server.ok(&[
        "entry",
        "create",
        "--spiffe-id",
        &format!("spiffe://{TD}/aws/billing"),
        "--parent-id",
        &agent_id,
        "--selector",
        &format!("unix:uid:{uid}"),
    ]);
    let section = format!("[aws_iid]\nimds_url = \"http://127.0.0.1:{}\"\n", imds.port());
    let dir = tmp.path().join("agent");
    let agent = Agent::start(&agent_config(&dir, &server, &bundle, &section), &dir.join("api.sock"));
    let client = eventually(30, "connect", || WorkloadApiClient::connect_to(agent.endpoint())).await;
    let svid = eventually(30, "SVID through an aws_iid agent", || client.fetch_x509_svid()).await;
    assert_eq!(svid.spiffe_id().to_string(), format!("spiffe://{TD}/aws/billing"));
    let agents = server.json(&["agent", "list"]).to_string();
    for want in [agent_id.as_str(), "aws_iid:instance_id:i-078517ca8a70a1dde", "aws_iid:az:us-west-2a"] {
        assert!(agents.contains(want), "missing {want}: {agents}");
    }
    assert_eq!(requests.lock().unwrap()[..3], ["token", "document", "rsa2048"]);

    // Trust on first use: another agent presenting the same document is refused.
    let dir2 = tmp.path().join("agent2");
    let copycat = Agent::start(&agent_config(&dir2, &server, &bundle, &section), &dir2.join("api.sock"));
    wait_for_log(&copycat, "already been used").await;

    // An account the server does not allow: refused with the reason.
    let other = Server::start_with(
        &tmp.path().join("server2"),
        format!("127.0.0.1:{}", free_port()),
        "[aws_iid]\naccounts = [\"111122223333\"]\n",
    );
    let bundle2 = tmp.path().join("bundle2.pem");
    std::fs::write(&bundle2, other.ok(&["bundle", "show", "--format", "pem"])).unwrap();
    let dir3 = tmp.path().join("agent3");
    let refused = Agent::start(&agent_config(&dir3, &other, &bundle2, &section), &dir3.join("api.sock"));
    wait_for_log(&refused, "278576220453").await;
    assert!(
        refused.logs().contains("not allowed") || refused.logs().contains("not in"),
        "{}",
        refused.logs()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn gcp_agent_attests_with_an_instance_identity_token() {
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let claims = serde_json::json!({
        "iss": "https://accounts.google.com", "aud": "ferrid-server", "azp": "1234",
        "sub": "1234", "email": "vm@demo-project.iam.gserviceaccount.com", "email_verified": true,
        "iat": now, "exp": now + 3600,
        "google": {"compute_engine": {"project_id": "demo-project", "project_number": 42,
            "zone": "europe-west1-b", "instance_id": "7000000000000000001", "instance_name": "web-1",
            "instance_creation_timestamp": now - 60}}
    });
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some("test-key".into());
    let enc = jsonwebtoken::EncodingKey::from_rsa_pem(kp.serialize_pem().as_bytes()).unwrap();
    let token = jsonwebtoken::encode(&header, &claims, &enc).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let jwks = {
        let keys = ferrid_jwt::KeySet::from_pem(kp.public_key_pem().as_bytes()).unwrap();
        assert_eq!(keys.len(), 1);
        // The server takes a JWKS; build one from the public key's modulus and exponent.
        let der = pem::parse(kp.public_key_pem()).unwrap().into_contents();
        let (n, e) = rsa_n_e(&der);
        use base64::Engine;
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        serde_json::json!({"keys": [{"kty": "RSA", "alg": "RS256", "use": "sig", "kid": "test-key", "n": b64(&n), "e": b64(&e)}]})
    };
    let jwks_file = tmp.path().join("jwks.json");
    std::fs::write(&jwks_file, jwks.to_string()).unwrap();

    let tok = token.clone();
    let router = axum::Router::new().route(
        "/computeMetadata/v1/instance/service-accounts/default/identity",
        get(move |h: HeaderMap, Query(q): Query<std::collections::HashMap<String, String>>| async move {
            if h.get("metadata-flavor").and_then(|v| v.to_str().ok()) != Some("Google") {
                return (StatusCode::FORBIDDEN, "Missing Metadata-Flavor:Google header.").into_response();
            }
            if q.get("audience").map(String::as_str) != Some("ferrid-server")
                || q.get("format").map(String::as_str) != Some("full")
            {
                return (StatusCode::BAD_REQUEST, "audience and format=full expected").into_response();
            }
            let mut r = tok.clone().into_response();
            r.headers_mut().insert("metadata-flavor", "Google".parse().unwrap());
            r
        }),
    );
    let metadata = ferrid_test_util::serve(router, None).await;

    let server = Server::start_with(
        &tmp.path().join("server"),
        format!("127.0.0.1:{}", free_port()),
        &format!(
            "[gcp_iit]\nallowed_projects = [\"demo-project\"]\njwks_file = \"{}\"\njwks_url = \"\"\n",
            jwks_file.display()
        ),
    );
    let bundle = tmp.path().join("bundle.pem");
    std::fs::write(&bundle, server.ok(&["bundle", "show", "--format", "pem"])).unwrap();
    let agent_id =
        format!("spiffe://{TD}/ferrid/agent/gcp_iit/demo-project/europe-west1-b/7000000000000000001");
    let uid = nix::unistd::getuid().as_raw();
    server.ok(&[
        "entry",
        "create",
        "--spiffe-id",
        &format!("spiffe://{TD}/gcp/web"),
        "--parent-id",
        &agent_id,
        "--selector",
        &format!("unix:uid:{uid}"),
    ]);
    let section = format!("[gcp_iit]\nmetadata_url = \"http://127.0.0.1:{}\"\n", metadata.port());
    let dir = tmp.path().join("agent");
    let agent = Agent::start(&agent_config(&dir, &server, &bundle, &section), &dir.join("api.sock"));
    let client = eventually(30, "connect", || WorkloadApiClient::connect_to(agent.endpoint())).await;
    let svid = eventually(30, "SVID through a gcp_iit agent", || client.fetch_x509_svid()).await;
    assert_eq!(svid.spiffe_id().to_string(), format!("spiffe://{TD}/gcp/web"));
    let agents = server.json(&["agent", "list"]).to_string();
    assert!(agents.contains("gcp_iit:instance_name:web-1"), "{agents}");
}

/// The modulus and exponent of an RSA SubjectPublicKeyInfo (DER), for a JWK.
fn rsa_n_e(spki: &[u8]) -> (Vec<u8>, Vec<u8>) {
    use x509_parser::prelude::FromDer;
    let (_, info) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki).unwrap();
    match info.parsed().unwrap() {
        x509_parser::public_key::PublicKey::RSA(k) => {
            let strip = |b: &[u8]| b.iter().skip_while(|&&x| x == 0).copied().collect::<Vec<u8>>();
            (strip(k.modulus), strip(k.exponent))
        }
        _ => panic!("not RSA"),
    }
}

/// Signs `content` as IMDS does (PKCS#7 SignedData, SHA-256/RSA, content embedded, no
/// signed attributes) with Python's `cryptography` (installed with py-spiffe in the
/// test's virtualenv): an implementation independent of the verifier under test.
fn imds_sign(
    python: &std::path::Path,
    cert: &std::path::Path,
    key: &std::path::Path,
    content: &str,
) -> String {
    use std::io::Write;
    let script = "import sys, base64\n\
from cryptography import x509\n\
from cryptography.hazmat.primitives import hashes, serialization\n\
from cryptography.hazmat.primitives.serialization import pkcs7\n\
cert = x509.load_pem_x509_certificate(open(sys.argv[1], 'rb').read())\n\
key = serialization.load_pem_private_key(open(sys.argv[2], 'rb').read(), None)\n\
der = pkcs7.PKCS7SignatureBuilder().set_data(sys.stdin.buffer.read()).add_signer(cert, key, hashes.SHA256()).sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary, pkcs7.PKCS7Options.NoAttributes])\n\
sys.stdout.write(base64.b64encode(der).decode())\n";
    let mut child = std::process::Command::new(python)
        .args(["-c", script])
        .arg(cert)
        .arg(key)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(content.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "signing failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Azure: the server challenges the agent with a nonce; the agent fetches the attested
/// document with it from (a stand-in for) IMDS (`GET /metadata/attested/document?
/// api-version=2020-09-01&nonce=…` with `Metadata: true`), which signs it on the spot
/// under a throwaway CA standing in for Microsoft's (configured as `roots_file`).
#[tokio::test(flavor = "multi_thread")]
async fn azure_agent_answers_the_nonce_challenge() {
    let python = python_with_pyspiffe();
    let tmp = tempfile::tempdir().unwrap();
    let root_key = rcgen::KeyPair::generate().unwrap();
    let mut root_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    root_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    root_params.distinguished_name.push(rcgen::DnType::CommonName, "Test Azure Root");
    let root = root_params.self_signed(&root_key).unwrap();
    let issuer = rcgen::Issuer::new(root_params, root_key);
    let leaf_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let mut leaf_params = rcgen::CertificateParams::new(vec!["metadata.azure.com".to_owned()]).unwrap();
    leaf_params.distinguished_name.push(rcgen::DnType::CommonName, "metadata.azure.com");
    leaf_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
    let (root_pem, leaf_pem, key_pem) =
        (tmp.path().join("root.pem"), tmp.path().join("leaf.pem"), tmp.path().join("leaf.key"));
    std::fs::write(&root_pem, root.pem()).unwrap();
    std::fs::write(&leaf_pem, leaf.pem()).unwrap();
    std::fs::write(&key_pem, leaf_key.serialize_pem()).unwrap();

    let subscription = "5f130ffc-0a3e-4795-b691-4f56a12a5547";
    let vm = "bd8e7443-24a0-41f3-b949-8baf4fd1c573";
    let nonces = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = nonces.clone();
    let (py, lp, kp) = (python.clone(), leaf_pem.clone(), key_pem.clone());
    let router = axum::Router::new().route(
        "/metadata/attested/document",
        get(move |h: HeaderMap, Query(q): Query<std::collections::HashMap<String, String>>| async move {
            if h.get("metadata").and_then(|v| v.to_str().ok()) != Some("true") {
                return (StatusCode::BAD_REQUEST, "Required metadata header not specified").into_response();
            }
            let nonce = q.get("nonce").cloned().unwrap_or_default();
            seen.lock().unwrap().push(nonce.clone());
            let fmt = time::macros::format_description!(
                "[month]/[day]/[year repr:last_two] [hour]:[minute]:[second] -0000"
            );
            let now = time::OffsetDateTime::now_utc();
            let content = serde_json::json!({
                "licenseType": "", "nonce": nonce, "plan": {"name": "", "product": "", "publisher": ""},
                "sku": "22_04-lts-gen2", "subscriptionId": subscription, "vmId": vm,
                "timeStamp": {"createdOn": now.format(&fmt).unwrap(),
                              "expiresOn": (now + time::Duration::hours(6)).format(&fmt).unwrap()},
            })
            .to_string();
            let (py, lp, kp) = (py.clone(), lp.clone(), kp.clone());
            let sig = tokio::task::spawn_blocking(move || imds_sign(&py, &lp, &kp, &content)).await.unwrap();
            axum::Json(serde_json::json!({"encoding": "pkcs7", "signature": sig})).into_response()
        }),
    );
    let imds = ferrid_test_util::serve(router, None).await;

    let server = Server::start_with(
        &tmp.path().join("server"),
        format!("127.0.0.1:{}", free_port()),
        &format!(
            "[azure]\nallowed_subscriptions = [\"{subscription}\"]\nroots_file = \"{}\"\n",
            root_pem.display()
        ),
    );
    let bundle = tmp.path().join("bundle.pem");
    std::fs::write(&bundle, server.ok(&["bundle", "show", "--format", "pem"])).unwrap();
    let agent_id = format!("spiffe://{TD}/ferrid/agent/azure/{subscription}/{vm}");
    let uid = nix::unistd::getuid().as_raw();
    server.ok(&[
        "entry",
        "create",
        "--spiffe-id",
        &format!("spiffe://{TD}/azure/api"),
        "--parent-id",
        &agent_id,
        "--selector",
        &format!("unix:uid:{uid}"),
    ]);
    let section = format!("[azure]\nimds_url = \"http://127.0.0.1:{}\"\n", imds.port());
    let dir = tmp.path().join("agent");
    let agent = Agent::start(&agent_config(&dir, &server, &bundle, &section), &dir.join("api.sock"));
    let client = eventually(60, "connect", || WorkloadApiClient::connect_to(agent.endpoint())).await;
    let svid = eventually(60, "SVID through an azure agent", || client.fetch_x509_svid()).await;
    assert_eq!(svid.spiffe_id().to_string(), format!("spiffe://{TD}/azure/api"));
    let agents = server.json(&["agent", "list"]).to_string();
    assert!(agents.contains(&format!("azure:vm_id:{vm}")), "{agents}");
    // The document was fetched with a nonce the server chose (not empty, not fixed).
    let nonces = nonces.lock().unwrap().clone();
    assert_eq!(nonces.len(), 1, "{nonces:?}");
    assert!(
        nonces[0].len() >= 8 && nonces[0].bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'),
        "{nonces:?}"
    );
}
