//! Revocation end to end: the real `ferrid server` and `ferrid agent`, `ferrid revoke`,
//! and relying parties in this test process reading the feed over loopback: an RFC 8935
//! push receiver (an HTTP server here) and an RFC 8936 poller (HTTPS to the server,
//! authenticating it by its SPIFFE ID). Every SET is verified against the JWT bundle.
mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use ferrid_validate::keys::JwtKeySet;
use ferrid_validate::set::{Revocation, verify_set};
use serde_json::{Value, json};

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// The serial and notBefore of the agent's current X.509-SVID for `hint`.
fn current_svid(agent: &Agent, dir: &std::path::Path) -> Result<(ferrid_types::Serial, i64), String> {
    let out = dir.join(format!("fetch-{}", rand::random::<u32>()));
    let o = agent.cli(&["agent", "fetch", "x509", "--write", out.to_str().unwrap()]);
    if !o.status.success() {
        return Err(format!("fetch failed: {}", String::from_utf8_lossy(&o.stderr)));
    }
    let pem = std::fs::read(out.join("svid.pem")).unwrap();
    let der = pem::parse_many(&pem).unwrap().remove(0).into_contents();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    let serial = ferrid_types::Serial::from_bytes(cert.raw_serial()).map_err(|e| e.to_string())?;
    Ok((serial, cert.validity().not_before.timestamp()))
}

/// A push receiver: answers 202 and keeps every body it is sent.
async fn push_receiver() -> (String, Arc<Mutex<Vec<String>>>) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let keep = got.clone();
    let app = axum::Router::new().route(
        "/events",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let keep = keep.clone();
            async move {
                assert_eq!(headers.get("content-type").unwrap(), "application/secevent+jwt");
                keep.lock().unwrap().push(body);
                axum::http::StatusCode::ACCEPTED
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/events", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (url, got)
}

/// One RFC 8936 poll over HTTPS, the server authenticated as spiffe://<td>/ferrid/server,
/// the poller by its X.509-SVID; `receiver` is a configured named receiver.
async fn poll(addr: &str, bundle_pem: &str, who: &ssf::Creds, receiver: &str, body: &Value) -> Value {
    ssf::poll_ok(addr, bundle_pem, who, &format!("/ssf/poll/{receiver}"), body).await
}

fn keys(server: &Server) -> JwtKeySet {
    JwtKeySet::from_jwks(server.ok(&["bundle", "show", "--format", "jwks"]).as_bytes()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn revocations_reach_agents_pollers_and_push_receivers() {
    let tmp = tempfile::tempdir().unwrap();
    let (push_url, pushed) = push_receiver().await;
    let ssf = format!("127.0.0.1:{}", free_port());
    let server = Server::start_with(
        tmp.path(),
        format!("127.0.0.1:{}", free_port()),
        &format!(
            "[revocation]\naddress = \"{ssf}\"\nheartbeat_interval = \"1s\"\npoll_wait = \"2s\"\n\
             [[revocation.push]]\nurl = \"{push_url}\"\n\
             [[revocation.poll]]\nname = \"rp-1\"\nspiffe_id = \"spiffe://{TD}/rp-1\"\n\
             [[revocation.poll]]\nname = \"rp-2\"\nspiffe_id = \"spiffe://{TD}/rp-2\"\n"
        ),
    );
    // Every poller authenticates with an X.509-SVID of the trust domain.
    let rp1 = ssf::Creds::x509(&server, &format!("spiffe://{TD}/rp-1"), &tmp.path().join("rp-1"));
    let rp2 = ssf::Creds::x509(&server, &format!("spiffe://{TD}/rp-2"), &tmp.path().join("rp-2"));
    let (agent, agent_id) = enrol(&server, tmp.path(), &[("web", &[])]);
    let (serial, _) = eventually(30, "first SVID", || async { current_svid(&agent, tmp.path()) }).await;
    let iss = format!("spiffe://{TD}/ferrid/server");
    let aud = format!("spiffe://{TD}");
    let bundle_pem = server.ok(&["bundle", "show", "--format", "pem"]);

    // Nothing is revoked yet: a poll returns at once with nothing.
    let first = poll(&ssf, &bundle_pem, &rp1, "rp-1", &json!({"returnImmediately": true})).await;
    assert_eq!(first["sets"], json!({}));

    // Revoke the workload's X.509-SVID by serial.
    let r = server.json(&["revoke", "--serial", &serial.as_str().to_uppercase(), "--reason", "key leaked"]);
    let rev = &r["revocations"][0];
    assert_eq!(rev["kind"], "x509");
    assert_eq!(rev["value"], serial.as_str());
    let set_id = rev["id"].as_str().unwrap().to_owned();

    // The agent drops it and serves a replacement at once.
    let (new_serial, _) = eventually(10, "replacement SVID", || {
        let (agent, dir, serial) = (&agent, tmp.path(), serial.clone());
        async move {
            let s = current_svid(agent, dir)?;
            if s.0 != serial { Ok(s) } else { Err("still the revoked SVID".to_owned()) }
        }
    })
    .await;
    assert_ne!(new_serial, serial);

    // A poller receives the SET, verifiable with the trust domain's JWT bundle.
    let got = poll(&ssf, &bundle_pem, &rp1, "rp-1", &json!({"returnImmediately": true})).await;
    let token = got["sets"][&set_id].as_str().unwrap_or_else(|| panic!("no SET {set_id} in {got}"));
    let v = verify_set(token, &keys(&server), &iss, &aud, now()).unwrap();
    assert_eq!(v.jti, set_id);
    match &v.event.revocation {
        Revocation::X509 { serial: got, spiffe_id, .. } => {
            assert_eq!(got, &serial);
            assert_eq!(spiffe_id, &None, "a workload SVID's holder is not known to the server");
        }
        other => panic!("expected an X.509 revocation, got {other:?}"),
    }
    assert_eq!(v.event.reason.as_deref(), Some("key leaked"));
    // Unacknowledged SETs come again; acknowledged ones do not.
    let again = poll(&ssf, &bundle_pem, &rp1, "rp-1", &json!({"returnImmediately": true})).await;
    assert!(again["sets"].get(&set_id).is_some(), "redelivered until acknowledged");
    let acked =
        poll(&ssf, &bundle_pem, &rp1, "rp-1", &json!({"returnImmediately": true, "ack": [set_id]})).await;
    assert_eq!(acked["sets"], json!({}));
    // Another receiver has its own queue and starts with everything in force.
    let other = poll(&ssf, &bundle_pem, &rp2, "rp-2", &json!({"returnImmediately": true})).await;
    assert!(other["sets"].get(&set_id).is_some());

    // ferrid-validate's RFC 8936 poll client (HTTPS, the server authenticated by its
    // SPIFFE ID) brings the same revocation into a relying party's RevocationSet.
    let td = spiffe::TrustDomain::new(TD).unwrap();
    let rp_bundle = ferrid_validate::TrustBundle::from_spiffe_json(
        td.clone(),
        server.ok(&["bundle", "show", "--format", "jwks"]).as_bytes(),
    )
    .unwrap();
    let rp_revocations = Arc::new(ferrid_validate::RevocationSet::new(Duration::from_secs(30)));
    let rp_feed = ferrid_validate::feeds::Feed {
        trust_domain: td,
        bundles: Arc::new(ferrid_validate::BundleSet::of([rp_bundle])),
        revocations: rp_revocations.clone(),
        clock: Arc::new(ferrid_types::SystemClock),
    };
    let stale = rp_revocations.check_serial(&new_serial, &format!("spiffe://{TD}/web"), now(), now());
    assert!(stale.unwrap_err().to_string().contains("stale"), "a feed never heard from fails closed");
    // It polls its own queue (`/ssf/poll`), as the identity its SVID files prove.
    let auth = server.feed_auth(&format!("spiffe://{TD}/validator"), &tmp.path().join("validator"));
    let poller = ferrid_validate::feeds::PollClient::new(rp_feed, &format!("https://{ssf}"), auth).unwrap();
    let out = poller.poll_once(&Default::default(), true).await.unwrap();
    assert_eq!(out.applied, std::slice::from_ref(&set_id), "{out:?}");
    let refused = rp_revocations.check_serial(&serial, "", 0, now()).unwrap_err();
    assert!(refused.to_string().contains(serial.as_str()), "{refused}");
    rp_revocations.check_serial(&new_serial, &format!("spiffe://{TD}/web"), now(), now()).unwrap();
    let acked = poller.poll_once(&out, true).await.unwrap();
    assert!(acked.applied.is_empty(), "acknowledged SETs are not sent again: {acked:?}");

    // A long poll is woken by a new revocation: revoke the whole SPIFFE ID meanwhile.
    let long = {
        let (ssf, bundle_pem) = (ssf.clone(), bundle_pem.clone());
        tokio::spawn(async move { poll(&ssf, &bundle_pem, &rp1, "rp-1", &json!({"maxEvents": 10})).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r2 = server.json(&["revoke", "--spiffe-id", &format!("spiffe://{TD}/web")]);
    let rev2 = &r2["revocations"][0];
    assert_eq!(rev2["kind"], "spiffe_id");
    let cutoff = rev2["cutoff"].as_i64().unwrap();
    let woke = long.await.unwrap();
    let t2 = woke["sets"][rev2["id"].as_str().unwrap()].as_str().expect("the long poll got the new SET");
    let v2 = verify_set(t2, &keys(&server), &iss, &aud, now()).unwrap();
    assert_eq!(v2.event.revocation, Revocation::SpiffeId { id: format!("spiffe://{TD}/web"), cutoff });

    // The agent replaces the SVID again, and the replacement is on the right side of the cut-off.
    let (third, third_nb) = eventually(10, "SVID after the cut-off", || {
        let (agent, dir, prev) = (&agent, tmp.path(), new_serial.clone());
        async move {
            let s = current_svid(agent, dir)?;
            if s.0 != prev { Ok(s) } else { Err("still the cut-off SVID".to_owned()) }
        }
    })
    .await;
    assert!(third_nb >= cutoff, "replacement notBefore {third_nb} is before the cut-off {cutoff}");
    assert_ne!(third, new_serial);

    // The push receiver got both SETs, in order, and heartbeats; all verify.
    let pushed = eventually(10, "pushed SETs", || {
        let pushed = pushed.clone();
        async move {
            let v = pushed.lock().unwrap().clone();
            let n = v.iter().filter(|t| ferrid_validate::set::unverified_jti(t).is_some()).count();
            if n >= 3 { Ok(v) } else { Err(n) }
        }
    })
    .await;
    let k = keys(&server);
    let verified: Vec<_> = pushed.iter().map(|t| verify_set(t, &k, &iss, &aud, now()).unwrap()).collect();
    let revs: Vec<&str> = verified
        .iter()
        .filter(|v| !matches!(v.event.revocation, Revocation::Heartbeat { .. }))
        .map(|v| v.jti.as_str())
        .collect();
    assert_eq!(revs, [set_id.as_str(), rev2["id"].as_str().unwrap()], "in feed order");
    assert!(
        verified.iter().any(|v| matches!(v.event.revocation, Revocation::Heartbeat { .. })),
        "heartbeats keep an idle receiver fresh"
    );

    // Evicting the agent revokes its own SVID and, from the audit log, every live
    // credential issued through it: the workload's current X.509-SVID among them.
    let r3 = server.json(&["revoke", "--agent", &agent_id, "--reason", "node compromised"]);
    let values: Vec<(&str, &str)> = r3["revocations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["kind"].as_str().unwrap(), v["value"].as_str().unwrap()))
        .collect();
    assert!(values.contains(&("x509", third.as_str())), "the workload's live SVID: {values:?}");
    assert!(
        r3["revocations"].as_array().unwrap().iter().any(|v| v["spiffe_id"] == agent_id.as_str()),
        "the agent's own SVID: {r3}"
    );
    let agent_rec = server.json(&["agent", "show", "--spiffe-id", &agent_id]);
    assert_eq!(agent_rec["agents"][0]["banned"], true, "{agent_rec}");
    // The revocation itself is in the audit log, with who asked and why.
    let audit_dir = tmp.path().join("data/audit");
    let q = server.ok(&["audit", "query", "--dir", audit_dir.to_str().unwrap(), "--kind", "revocation"]);
    let recs: Vec<Value> = q.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(recs.len(), 3, "{q}");
    assert!(recs[2]["why"]["reason"].as_str().unwrap().contains("node compromised"), "{q}");
    assert!(
        recs[2]["what"]["revoked"].as_array().unwrap().iter().any(|v| v == &json!(format!("x509:{third}")))
    );

    // `revoke list` shows all; revoking the same serial again is refused.
    let list = server.json(&["revoke", "list"]);
    assert_eq!(
        list["revocations"].as_array().unwrap().len(),
        2 + r3["revocations"].as_array().unwrap().len()
    );
    let again = server.cli(&["revoke", "--serial", serial.as_str()]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already revoked"));
    // Bad input is refused precisely.
    let bad = server.cli(&["revoke", "--serial", "not-hex"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a hexadecimal serial"));
    let none = server.cli(&["revoke", "--task", "no-such-task"]);
    assert!(String::from_utf8_lossy(&none.stderr).contains("no unexpired credential"));
}
