//! Two real `ferrid server` processes on one real PostgreSQL database
//! (`ferrid_test_util::postgres`, a private cluster on a Unix socket): what is written
//! through one server reaches the other's agents, workloads and relying parties through
//! the datastore's change feed, and both keep serving while the database is down.
//!
//! Until per-server signing keys (issue 18), both servers sign under one upstream CA
//! (`ca.upstream_cert_file`) with in-memory intermediates, so agents trust either.
mod common;

use std::path::{Path, PathBuf};

use common::*;
use serde_json::json;
use spiffe::WorkloadApiClient;

/// The configuration both servers share, plus `extra`.
fn shared_config(url_file: &Path, upstream: &(PathBuf, PathBuf), extra: &str) -> String {
    format!(
        "[datastore]\nkind = \"postgres\"\nurl_file = \"{}\"\nconnect_timeout = \"2s\"\n\
         [ca]\nkey_manager = \"memory\"\nupstream_cert_file = \"{}\"\nupstream_key_file = \"{}\"\n{extra}",
        url_file.display(),
        upstream.0.display(),
        upstream.1.display()
    )
}

/// The SPIFFE IDs the workload is currently served by the agent.
async fn served_ids(agent: &Agent) -> Result<Vec<String>, String> {
    let client = WorkloadApiClient::connect_to(&agent.endpoint()).await.map_err(|e| e.to_string())?;
    let ctx = client.fetch_x509_context().await.map_err(|e| e.to_string())?;
    Ok(ctx.svids().iter().map(|s| s.spiffe_id().to_string()).collect())
}

/// The serial and notBefore of the SVID the agent serves for `id`.
async fn svid_of(agent: &Agent, id: &str) -> Result<(String, i64), String> {
    let client = WorkloadApiClient::connect_to(&agent.endpoint()).await.map_err(|e| e.to_string())?;
    let ctx = client.fetch_x509_context().await.map_err(|e| e.to_string())?;
    let svid = ctx
        .svids()
        .iter()
        .find(|s| s.spiffe_id().to_string() == id)
        .ok_or_else(|| format!("{id} is not served"))?;
    let (_, cert) = x509_parser::parse_x509_certificate(svid.leaf().as_ref()).map_err(|e| e.to_string())?;
    Ok((cert.raw_serial_as_string(), cert.validity().not_before.timestamp()))
}

fn create_entry(server: &Server, agent_id: &str, name: &str) -> String {
    let id = format!("spiffe://{TD}/{name}");
    let sel = format!("unix:uid:{}", nix::unistd::getuid().as_raw());
    server.ok(&["entry", "create", "--spiffe-id", &id, "--parent-id", agent_id, "--selector", &sel]);
    id
}

#[tokio::test(flavor = "multi_thread")]
async fn two_servers_on_one_postgres_database_are_one_trust_domain() {
    let tmp = tempfile::tempdir().unwrap();
    let mut pg = ferrid_test_util::postgres::Server::start();
    let url_file = tmp.path().join("datastore-url");
    std::fs::write(&url_file, format!("{}\n", pg.create_database("ferrid"))).unwrap();
    let upstream = ferrid_test_util::write_upstream_ca(tmp.path());

    let (a_node, b_node) = (format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port()));
    let a_ssf = format!("127.0.0.1:{}", free_port());
    let a_extra = shared_config(
        &url_file,
        &upstream,
        &format!(
            "[revocation]\naddress = \"{a_ssf}\"\n\
             [[revocation.poll]]\nname = \"rp\"\nspiffe_id = \"spiffe://{TD}/rp\"\n"
        ),
    );
    let a = Server::start_with(&tmp.path().join("a"), a_node.clone(), &a_extra);
    let b =
        Server::start_with(&tmp.path().join("b"), b_node.clone(), &shared_config(&url_file, &upstream, ""));
    let logs = a.log.lock().unwrap().join("\n");
    assert!(logs.contains("kind=\"postgres\"") || logs.contains("kind=postgres"), "{logs}");

    // A join token made on B attests an agent on A (single use across servers).
    let (agent, agent_id) = enrol_via(&b, &a_node, tmp.path(), &[], "");
    eventually(30, "agent attested on A", || async {
        let list = a.json(&["agent", "list"]);
        if list.to_string().contains(&agent_id) { Ok(()) } else { Err(list.to_string()) }
    })
    .await;
    // B knows the agent too.
    let shown = b.json(&["agent", "show", "--spiffe-id", &agent_id]);
    assert_eq!(shown["agents"][0]["spiffe_id"], json!(agent_id), "{shown}");

    // An entry created through B's admin socket reaches the agent served by A.
    let web = create_entry(&b, &agent_id, "web");
    let ids = eventually(10, "entry from B served through A", || async {
        let ids = served_ids(&agent).await?;
        if ids.contains(&web) { Ok(ids) } else { Err(format!("serving {ids:?}")) }
    })
    .await;
    assert_eq!(ids, vec![web.clone()]);
    // A's index has it (it answers `entry show` from memory).
    let listed = a.json(&["entry", "list"]);
    assert!(listed.to_string().contains(&web), "{listed}");

    // A revocation made on B reaches A's agents (a replacement minted after the
    // cut-off, so A applies B's issue floor) and A's relying parties (its SSF poller).
    let (before, _) = svid_of(&agent, &web).await.unwrap();
    let r = b.json(&["revoke", "--spiffe-id", &web, "--reason", "e2e"]);
    let set_id = r["revocations"][0]["id"].as_str().unwrap().to_owned();
    let cut_off = time::OffsetDateTime::now_utc().unix_timestamp() - 1;
    let (after, not_before) = eventually(10, "replacement SVID on A after B's revocation", || {
        let (agent, web, before) = (&agent, web.clone(), before.clone());
        async move {
            let s = svid_of(agent, &web).await?;
            if s.0 != before { Ok(s) } else { Err("still the revoked SVID".to_owned()) }
        }
    })
    .await;
    assert_ne!(after, before);
    assert!(not_before >= cut_off, "replacement notBefore {not_before} is before the cut-off {cut_off}");
    let rp = ssf::Creds::x509(&a, &format!("spiffe://{TD}/rp"), &tmp.path().join("rp"));
    let a_bundle = a.ok(&["bundle", "show", "--format", "pem"]);
    let polled =
        ssf::poll_ok(&a_ssf, &a_bundle, &rp, "/ssf/poll/rp", &json!({"returnImmediately": true})).await;
    assert!(polled["sets"].get(&set_id).is_some(), "A's poller did not get B's revocation: {polled}");
    let listed = a.json(&["revoke", "list"]);
    assert!(listed.to_string().contains(&set_id), "{listed}");

    // The agent moves to B with the SVID A gave it: B accepts it as an attested agent
    // and serves the same entries.
    drop(agent);
    let cfg = std::fs::read_to_string(tmp.path().join("agent.toml")).unwrap().replace(&a_node, &b_node);
    std::fs::write(tmp.path().join("agent.toml"), cfg).unwrap();
    let agent = Agent::start(&tmp.path().join("agent.toml"), &tmp.path().join("agent/api.sock"));
    let api = create_entry(&a, &agent_id, "api");
    eventually(15, "agent served by B with A's entry", || async {
        let ids = served_ids(&agent).await?;
        if ids.contains(&web) && ids.contains(&api) { Ok(()) } else { Err(format!("serving {ids:?}")) }
    })
    .await;
    // (Its join token was consumed on A: only the saved SVID can have got it in.)

    // A restarts and rebuilds its state from the database.
    a.stop();
    let a = Server::start_with(&tmp.path().join("a"), a_node.clone(), &a_extra);
    let listed = a.json(&["entry", "list"]);
    assert!(listed.to_string().contains(&web) && listed.to_string().contains(&api), "{listed}");

    // The database goes away: writes fail UNAVAILABLE with a clear message, nothing
    // leaks the URL's secrets, and both servers keep serving what they hold.
    pg.stop();
    let e = b.cli(&[
        "entry",
        "create",
        "--spiffe-id",
        &format!("spiffe://{TD}/while-down"),
        "--parent-id",
        &agent_id,
        "--selector",
        "unix:uid:1",
    ]);
    assert!(!e.status.success());
    let stderr = String::from_utf8_lossy(&e.stderr);
    eprintln!("while down: {stderr}");
    assert!(stderr.contains("unavailable") && stderr.contains("the database cannot be reached"), "{stderr}");
    assert!(a.cli(&["healthcheck", "--address", &a.health]).status.success(), "A stopped serving health");
    let ids = served_ids(&agent).await.unwrap();
    assert!(ids.contains(&web) && ids.contains(&api), "{ids:?}");
    // Minting needs no database write: B still issues.
    b.ok(&[
        "x509",
        "mint",
        "--spiffe-id",
        &format!("spiffe://{TD}/m"),
        "--out-dir",
        tmp.path().join("m").to_str().unwrap(),
    ]);

    // It comes back: the next write succeeds and reaches the agent on B, and A catches up.
    pg.restart();
    let late = eventually(30, "write after the database is back", || async {
        let id = format!("spiffe://{TD}/late");
        let sel = format!("unix:uid:{}", nix::unistd::getuid().as_raw());
        let out =
            a.cli(&["entry", "create", "--spiffe-id", &id, "--parent-id", &agent_id, "--selector", &sel]);
        if out.status.success() { Ok(id) } else { Err(String::from_utf8_lossy(&out.stderr).into_owned()) }
    })
    .await;
    eventually(15, "entry written after the outage served by B", || async {
        let ids = served_ids(&agent).await?;
        if ids.contains(&late) { Ok(()) } else { Err(format!("serving {ids:?}")) }
    })
    .await;
    let listed = b.json(&["entry", "list"]);
    assert!(listed.to_string().contains(&late), "{listed}");

    // A falls behind a feed pruned past its position (it is frozen while B writes and
    // the feed is cut down to its last change): on waking it finds the gap and reloads
    // the whole state, in pages, rather than applying what is left.
    use nix::sys::signal::{Signal, kill};
    let pid = nix::unistd::Pid::from_raw(a.child.id() as i32);
    kill(pid, Signal::SIGSTOP).unwrap();
    let sel = format!("unix:uid:{}", nix::unistd::getuid().as_raw());
    let gap = b.json(&[
        "entry",
        "create",
        "--spiffe-id",
        &format!("spiffe://{TD}/after-gap"),
        "--parent-id",
        &agent_id,
        "--selector",
        &sel,
    ]);
    let gap_id =
        gap["entries"][0]["id"].as_str().unwrap_or_else(|| panic!("no entry ID in {gap}")).to_owned();
    let all = b.json(&["entry", "list"]);
    let api_entry_id = all["entries"]
        .as_array()
        .and_then(|es| es.iter().find(|e| e["spiffe_id"] == json!(api)))
        .and_then(|e| e["id"].as_str())
        .unwrap_or_else(|| panic!("no entry for {api} in {all}"))
        .to_owned();
    b.ok(&["entry", "delete", "--id", &api_entry_id]);
    let _marker = create_entry(&b, &agent_id, "marker");
    let url = std::fs::read_to_string(&url_file).unwrap();
    let direct = ferrid_store::PgStore::connect(&ferrid_store::PgSettings::new(url.trim())).await.unwrap();
    use ferrid_store::Store as _;
    let pruned = direct.prune_changes(1).await.unwrap();
    assert!(pruned > 2, "the feed was not pruned past A ({pruned} rows)");
    direct.close().await;
    kill(pid, Signal::SIGCONT).unwrap();
    // `entry show` answers from A's in-memory index (`entry list` reads the database).
    eventually(15, "A's index reloaded after the gap", || async {
        let added = a.cli(&["entry", "show", "--id", &gap_id]);
        let removed = a.cli(&["entry", "show", "--id", &api_entry_id]);
        if added.status.success() && !removed.status.success() {
            Ok(())
        } else {
            Err(format!("show new: {:?}; show deleted: {:?}", added.status, removed.status))
        }
    })
    .await;
    // (The log is read from A's output by another thread: wait for the line too.)
    eventually(10, "A logs the reload", || async {
        let logs = a.log.lock().unwrap().join("\n");
        if logs.contains("pruned past this server's position; reloading") { Ok(()) } else { Err(logs) }
    })
    .await;
    a.stop();
    b.stop();
}
