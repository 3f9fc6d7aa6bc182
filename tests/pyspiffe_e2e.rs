//! End-to-end with py-spiffe, the SPIFFE Python library from PyPI, built on grpcio
//! (gRPC's C core). grpcio sends the Unix socket path as the HTTP/2 `:authority`, which
//! tonic's `h2` rejects unless the agent repairs it (ferrid_tls::authority); these tests
//! run the real library against the real `ferrid server` and `ferrid agent` binaries.
//! The virtualenv is created under the target directory on first run.
mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use serde_json::Value;

fn script() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/py/workload_client.py")
}

#[tokio::test(flavor = "multi_thread")]
async fn pyspiffe_fetches_validates_and_follows_the_stream() {
    let python = python_with_pyspiffe();
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("server"));
    // A 6 s SVID, so a rotation shows up on the stream within the test.
    let (agent, agent_id) = enrol(&server, tmp.path(), &[("py", &["--x509-ttl", "6s"])]);
    let id = format!("spiffe://{TD}/py");
    let endpoint = agent.endpoint();
    let ready = Command::new(bin())
        .args(["agent", "healthcheck", "--wait", "30s"])
        .env("SPIFFE_ENDPOINT_SOCKET", &endpoint)
        .output()
        .unwrap();
    assert!(ready.status.success(), "{}", String::from_utf8_lossy(&ready.stderr));

    // --- Every unary call, X509Source and JwtSource. ---
    let out = Command::new(&python)
        .arg(script())
        .arg("basic")
        .env("SPIFFE_ENDPOINT_SOCKET", &endpoint)
        .output()
        .unwrap();
    assert!(out.status.success(), "py-spiffe failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in ["x509_id", "jwt_id", "jwt_validated_id", "jwt_offline_id", "x509_source_id", "jwt_source_id"]
    {
        assert_eq!(r[key], id.as_str(), "{key}: {r}");
    }
    assert_eq!(r["x509_svids"], serde_json::json!([id]));
    assert_eq!(r["x509_authorities"], 1);
    assert_eq!(r["jwt_source_bundles"], 1);
    assert_eq!(r["wrong_audience"], "ValidateJwtSvidError", "a token for another audience is refused");

    // --- The update stream: initial state, a rotation, a new entry, a deletion. ---
    let mut child = Command::new(&python)
        .arg(script())
        .arg("stream")
        .env("SPIFFE_ENDPOINT_SOCKET", &endpoint)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel::<Value>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(serde_json::from_str(&line).unwrap()).is_err() {
                return;
            }
        }
    });
    let next_until = |what: &str, secs: u64, pred: &dyn Fn(&Value) -> bool| -> Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let v = rx.recv_timeout(left).unwrap_or_else(|_| panic!("{what}: nothing within {secs}s"));
            assert!(v.get("error").is_none(), "{what}: stream error {v}");
            if pred(&v) {
                return v;
            }
        }
    };
    let first = next_until("initial state", 30, &|v| v["ids"] == serde_json::json!([id]));
    next_until("rotation", 20, &|v| v["ids"] == serde_json::json!([id]) && v["serials"] != first["serials"]);

    let uid = nix::unistd::getuid().as_raw();
    let second = format!("spiffe://{TD}/py-second");
    let created = server.json(&[
        "entry",
        "create",
        "--spiffe-id",
        &second,
        "--parent-id",
        &agent_id,
        "--selector",
        &format!("unix:uid:{uid}"),
    ]);
    next_until("new entry pushed", 15, &|v| v["ids"].as_array().is_some_and(|a| a.len() == 2));
    server.ok(&["entry", "delete", "--id", created["entries"][0]["id"].as_str().unwrap()]);
    next_until("deleted entry leaves", 15, &|v| v["ids"] == serde_json::json!([id]));

    drop(child.stdin.take());
    let _ = child.wait();
    drop(agent);
    server.stop();
}
