//! The audit log end to end, with the real `ferrid` binary: what the server records for
//! the credentials it hands out, `ferrid audit verify|query|checkpoint`, tampering with
//! the files, and a server killed with SIGKILL in the middle of issuing.
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Server, TD, bin};
use serde_json::Value;

fn audit_dir(s: &Server) -> PathBuf {
    s.dir.join("data/audit")
}

fn audit(args: &[&str]) -> std::process::Output {
    Command::new(bin()).arg("audit").args(args).output().unwrap()
}

fn query(dir: &Path, filter: &[&str]) -> Vec<Value> {
    let mut args = vec!["query", "--dir", dir.to_str().unwrap()];
    args.extend_from_slice(filter);
    let out = audit(&args);
    assert!(out.status.success(), "audit query failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// `ferrid audit verify` on `dir`: (success, stdout + stderr).
fn verify(dir: &Path, extra: &[&str]) -> (bool, String) {
    let mut args = vec!["verify", "--dir", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = audit(&args);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn log_lines(dir: &Path) -> Vec<Vec<u8>> {
    std::fs::read(dir.join("audit.log"))
        .unwrap()
        .split_inclusive(|b| *b == b'\n')
        .map(<[u8]>::to_vec)
        .collect()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn issued_credentials_are_recorded_and_tampering_is_detected() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("s"));
    let web = format!("spiffe://{TD}/web");
    let ops = format!("spiffe://{TD}/ops");
    let out = tmp.path().join("svid");
    let x = s.json(&["x509", "mint", "--spiffe-id", &web, "--ttl", "2m", "--out-dir", out.to_str().unwrap()]);
    let serial = x["serial"].as_str().unwrap().to_owned();
    let j = s.json(&["jwt", "mint", "--spiffe-id", &ops, "--audience", "svc", "--audience", "db"]);
    let jti = j["jti"].as_str().unwrap().to_owned();
    let dir = audit_dir(&s);

    // --- query finds each credential with its fields. ---
    let recs = query(&dir, &["--spiffe-id", &web]);
    assert_eq!(recs.len(), 1, "{recs:?}");
    let r = &recs[0];
    assert_eq!(r["kind"], "issuance");
    assert_eq!(r["what"]["credential_id"], serial.as_str());
    assert_eq!(r["what"]["credential_type"], "x509-svid");
    assert_eq!(r["what"]["spiffe_id"], web.as_str());
    let ttl = r["what"]["ttl"].as_i64().unwrap();
    assert!((115..=120).contains(&ttl), "ttl {ttl}");
    assert_eq!(r["why"]["decision"], "allow");
    assert_eq!(r["why"]["policy_hash"].as_str().unwrap().len(), 64, "the active policy set's hash");
    assert!(!r["key_id"].as_str().unwrap().is_empty(), "the signing CA key");
    let uid = nix::unistd::geteuid().as_raw();
    assert_eq!(r["who"]["selectors"][0], format!("unix:uid:{uid}"), "the operator who asked");
    assert!(r.get("token").is_none() && !r.to_string().contains("PRIVATE KEY"));
    let recs = query(&dir, &["--spiffe-id", &ops, "--kind", "issuance"]);
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert_eq!(recs[0]["what"]["credential_id"], jti.as_str());
    assert_eq!(recs[0]["what"]["audience"], serde_json::json!(["svc", "db"]));
    assert!(!recs[0].to_string().contains(j["token"].as_str().unwrap()), "never the token itself");
    assert!(query(&dir, &["--spiffe-id", &ops, "--kind", "denial"]).is_empty());
    assert!(query(&dir, &["--since", "2100-01-01T00:00:00Z"]).is_empty());
    assert_eq!(query(&dir, &["--since", "2000-01-01T00:00:00Z"]).len(), 2);

    // --- verify passes, even while the server runs. ---
    let (ok, text) = verify(&dir, &[]);
    assert!(ok, "{text}");
    assert!(text.contains("OK") && text.contains("2 records"), "{text}");
    let witness = tmp.path().join("witness");
    let out = audit(&["checkpoint", "--dir", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::write(&witness, &out.stdout).unwrap();
    let (ok, text) = verify(&dir, &["--checkpoint", witness.to_str().unwrap()]);
    assert!(ok, "{text}");
    let cfg = s.dir.join("server.toml");
    s.stop();
    // The directory is found from the server's configuration too.
    let out = audit(&["verify", "--config", cfg.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // --- Tampering: each copy is altered one way and must fail with a precise message. ---
    let lines = log_lines(&dir);
    assert_eq!(lines.len(), 4, "two single-record commits: record, checkpoint, record, checkpoint");
    let case = |name: &str, lines: &[Vec<u8>]| {
        let d = tmp.path().join(name);
        copy_dir(&dir, &d);
        std::fs::write(d.join("audit.log"), lines.concat()).unwrap();
        let (ok, text) = verify(&d, &[]);
        assert!(!ok, "{name}: verify passed on a tampered log:\n{text}");
        text
    };
    // One byte of the first record (a digit of its time).
    let mut flipped = lines.clone();
    let at = flipped[0].windows(7).position(|w| w == b"\"time\":").unwrap() + 7;
    flipped[0][at] = if flipped[0][at] == b'1' { b'2' } else { b'1' };
    let text = case("flipped", &flipped);
    assert!(text.contains("audit.log line 1 (byte 0): record 1: hash mismatch"), "{text}");
    // The first record deleted.
    let text = case("deleted", &lines[1..]);
    assert!(
        text.contains("line 1") && text.contains("checkpoint seals 1 records but 0 precede it"),
        "{text}"
    );
    // The last commit cut off.
    let text = case("truncated", &lines[..2]);
    assert!(text.contains("audit.head") && text.contains("seals 2 records but the log has only 1"), "{text}");
    // Both files rolled back consistently: only the witness sees it.
    let d = tmp.path().join("rolled-back");
    copy_dir(&tmp.path().join("truncated"), &d);
    std::fs::remove_file(d.join("audit.head")).unwrap();
    let (ok, _) = verify(&d, &[]);
    assert!(ok, "without a witness a rollback of both files is not visible");
    let (ok, text) = verify(&d, &["--checkpoint", witness.to_str().unwrap()]);
    assert!(!ok && text.contains("witness") && text.contains("rolled back"), "{text}");

    // --- The server refuses to start on a tampered log. ---
    std::fs::write(dir.join("audit.log"), flipped.concat()).unwrap();
    let mut child = Command::new(bin())
        .args(["server", "--config", cfg.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the server started on a tampered audit log");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success());
    assert!(err.contains("fails verification") && err.contains("record 1: hash mismatch"), "{err}");
}

/// What this proves: the server appends a credential's audit record (and waits for the
/// writer to acknowledge it) *before* the credential leaves the process, so a server
/// killed with SIGKILL at any moment under concurrent load cannot have handed out a
/// credential whose record is missing — and the log it leaves behind verifies (an
/// unsealed, never-acknowledged tail is cut off when the server reopens it).
///
/// What it does not prove: SIGKILL leaves the page cache intact, so this does not
/// exercise power loss. That the acknowledgement follows an `fdatasync` of the records
/// and their checkpoint is what covers power loss; it is not tested here.
#[test]
fn kill_9_under_load_loses_no_acknowledged_record() {
    let tmp = tempfile::tempdir().unwrap();
    let node = format!("127.0.0.1:{}", common::free_port());
    let s = Server::start_on(&tmp.path().join("s"), node.clone());
    let socket = s.socket();
    let received = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..4 {
        let (socket, received, stop) = (socket.clone(), received.clone(), stop.clone());
        let out_dir = tmp.path().join(format!("out-{c}"));
        clients.push(std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let id = format!("spiffe://{TD}/load/{c}/{i}");
                let args: Vec<&str> = if i % 2 == 0 {
                    vec!["jwt", "mint", "--spiffe-id", &id, "--audience", "a", "--output", "json"]
                } else {
                    vec![
                        "x509",
                        "mint",
                        "--spiffe-id",
                        &id,
                        "--out-dir",
                        out_dir.to_str().unwrap(),
                        "--output",
                        "json",
                    ]
                };
                let out =
                    Command::new(bin()).args(&args).env("FERRID_ADMIN_SOCKET", &socket).output().unwrap();
                if out.status.success() {
                    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
                    let cred = v.get("jti").or_else(|| v.get("serial")).unwrap().as_str().unwrap().to_owned();
                    received.lock().unwrap().push(cred);
                }
            }
        }));
    }
    // Let the clients get going, then kill the server while they are mid-flight.
    let deadline = Instant::now() + Duration::from_secs(120);
    while received.lock().unwrap().len() < 60 {
        assert!(Instant::now() < deadline, "clients made no progress: {:?}", s.log.lock().unwrap());
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut s = s;
    s.child.kill().unwrap(); // SIGKILL
    s.child.wait().unwrap();
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().unwrap();
    }
    let received = received.lock().unwrap().clone();
    let dir = audit_dir(&s);

    // The log as the kill left it verifies (an unsealed tail is only a note).
    let (ok, text) = verify(&dir, &[]);
    assert!(ok, "{text}");
    let recorded: std::collections::HashSet<String> = query(&dir, &["--kind", "issuance"])
        .iter()
        .map(|r| r["what"]["credential_id"].as_str().unwrap().to_owned())
        .collect();
    let missing: Vec<&String> = received.iter().filter(|c| !recorded.contains(*c)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} credentials handed out have no record: {missing:?}",
        missing.len(),
        received.len()
    );

    // Reopening cuts any unsealed tail; the log verifies, keeps every record, and grows.
    drop(s);
    let s = Server::start_on(&tmp.path().join("s"), node);
    s.ok(&["jwt", "mint", "--spiffe-id", &format!("spiffe://{TD}/after"), "--audience", "a"]);
    let (ok, text) = verify(&dir, &[]);
    assert!(ok && !text.contains("unsealed"), "{text}");
    let after = query(&dir, &["--kind", "issuance"]);
    assert!(after.iter().any(|r| r["what"]["spiffe_id"] == format!("spiffe://{TD}/after")));
    assert!(received.iter().all(|c| after.iter().any(|r| r["what"]["credential_id"] == c.as_str())));
    s.stop();
}

/// The node API path: an agent's attestation, the X.509-SVIDs it mints for workloads
/// and JWT-SVIDs, and a refusal by authority model, each recorded with who asked.
#[test]
fn agent_attestation_issuance_and_denials_are_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("s"));
    let (agent, agent_id) = common::enrol(
        &s,
        tmp.path(),
        &[("web", &[]), ("assistant", &["--metadata", "authority_model=delegated"])],
    );
    let web = format!("spiffe://{TD}/web");
    let assistant = format!("spiffe://{TD}/assistant");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !agent.cli(&["agent", "fetch", "x509"]).status.success() {
        assert!(Instant::now() < deadline, "no SVID from the agent: {}", agent.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = agent.cli(&["agent", "fetch", "jwt", "--audience", "calendar", "--spiffe-id", &web]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = agent.cli(&["agent", "fetch", "jwt", "--audience", "calendar", "--spiffe-id", &assistant]);
    assert!(!out.status.success(), "a delegated workload gets no plain JWT-SVID");
    let dir = audit_dir(&s);

    let att = query(&dir, &["--kind", "attestation"]);
    assert_eq!(att.len(), 1, "{att:?}");
    assert_eq!(att[0]["who"]["spiffe_id"], agent_id.as_str());
    assert_eq!(att[0]["who"]["attestor"], "join_token");
    assert_eq!(att[0]["who"]["evidence_sha256"].as_str().unwrap().len(), 64, "a digest, never the token");
    assert!(att[0]["who"]["selectors"][0].as_str().unwrap().starts_with("join_token:"));
    assert_eq!(att[0]["what"]["credential_type"], "agent-svid");

    let issued = query(&dir, &["--spiffe-id", &web, "--kind", "issuance"]);
    let x509 =
        issued.iter().find(|r| r["what"]["credential_type"] == "x509-svid").expect("X.509-SVID record");
    assert_eq!(x509["who"]["agent_id"], agent_id.as_str());
    assert!(!x509["what"]["entry_id"].as_str().unwrap().is_empty());
    assert!(x509["what"]["credential_id"].as_str().is_some_and(|s| !s.is_empty()));
    let jwt = issued.iter().find(|r| r["what"]["credential_type"] == "jwt-svid").expect("JWT-SVID record");
    assert_eq!(jwt["what"]["audience"], serde_json::json!(["calendar"]));
    assert!(jwt["key_id"].as_str().is_some_and(|s| !s.is_empty()));

    // Refusals are queued for the next commit rather than awaited: give it a moment.
    let deadline = Instant::now() + Duration::from_secs(30);
    let denied = loop {
        let d = query(&dir, &["--spiffe-id", &assistant, "--kind", "denial"]);
        if !d.is_empty() {
            break d;
        }
        assert!(Instant::now() < deadline, "the refusal was never recorded");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(denied[0]["why"]["decision"], "deny");
    assert_eq!(denied[0]["what"]["authority_model"], "delegated");
    assert!(denied[0]["why"]["reason"].as_str().unwrap().contains("is delegated"), "{:?}", denied[0]);
    assert!(
        query(&dir, &["--spiffe-id", &assistant, "--kind", "issuance"])
            .iter()
            .all(|r| r["what"]["credential_type"] != "jwt-svid")
    );
    let (ok, text) = verify(&dir, &[]);
    assert!(ok, "{text}");
    drop(agent);
    s.stop();
}
