//! The contract every [`Store`] implementation must meet (SQLite today, PostgreSQL
//! later). `run_all` panics on the first violation. Enabled by the `contract-tests`
//! feature.
use std::collections::BTreeMap;
use std::sync::Arc;

use ferrid_types::{AgentRecord, EntryId, JoinTokenRecord, RegistrationEntry, Selector, SpiffeId};

use crate::{EntryFilter, Store, StoreError};

fn id(s: &str) -> SpiffeId {
    SpiffeId::new(s).expect("valid test SPIFFE ID")
}

/// An entry under parent `spiffe://td/agent` with the given selectors.
pub fn sample_entry(entry_id: &str, spiffe_id: &str, selectors: &[&str]) -> RegistrationEntry {
    RegistrationEntry {
        id: EntryId(entry_id.into()),
        spiffe_id: id(spiffe_id),
        parent_id: id("spiffe://td/agent"),
        selectors: selectors.iter().map(|s| s.parse().expect("valid test selector")).collect(),
        x509_svid_ttl: 60,
        jwt_svid_ttl: 30,
        dns_names: vec!["a.example".into()],
        hint: "h".into(),
        admin: false,
        expires_at: 0,
        metadata: BTreeMap::from([("k".to_owned(), "v".to_owned())]),
        revision: 0,
        created_at: 100,
    }
}

fn sample_agent(spiffe_id: &str) -> AgentRecord {
    AgentRecord {
        spiffe_id: id(spiffe_id),
        attestor: "join_token".into(),
        selectors: vec!["join_token:abc".parse().expect("selector")],
        svid_serial: "01ab".into(),
        svid_expires_at: 500,
        can_reattest: false,
        banned: false,
        attested_at: 100,
        last_seen: 100,
    }
}

/// Runs every contract check against `store` (which must start empty).
pub async fn run_all<S: Store>(store: &S) {
    entries_round_trip(store).await;
    duplicates_are_refused_order_insensitively(store).await;
    batch_create(store).await;
    updates_bump_revision_and_detect_conflicts(store).await;
    failed_update_leaves_entry_intact(store).await;
    filters(store).await;
    pages(store).await;
    delete(store).await;
    join_tokens(store).await;
    agents(store).await;
    replay(store).await;
    task_credentials(store).await;
    revocations(store).await;
    delegations(store).await;
    ca_state(store).await;
    change_feed(store).await;
}

async fn entries_round_trip<S: Store>(s: &S) {
    let e = sample_entry("rt", "spiffe://td/rt", &["unix:uid:1", "unix:gid:2"]);
    let saved = s.create_entry(&e).await.expect("create");
    assert_eq!(saved.revision, 1);
    let mut got = s.get_entry(&e.id).await.expect("get").expect("present");
    got.selectors.sort();
    let mut want = saved.clone();
    want.selectors.sort();
    assert_eq!(got, want);
    assert!(s.get_entry(&EntryId("absent".into())).await.expect("get").is_none());
    s.delete_entry(&e.id).await.expect("cleanup");
}

async fn duplicates_are_refused_order_insensitively<S: Store>(s: &S) {
    let a = sample_entry("dup-a", "spiffe://td/dup", &["unix:uid:1", "unix:gid:2"]);
    s.create_entry(&a).await.expect("create");
    let b = sample_entry("dup-b", "spiffe://td/dup", &["unix:gid:2", "unix:uid:1"]);
    assert!(matches!(s.create_entry(&b).await, Err(StoreError::AlreadyExists(_))));
    assert!(s.get_entry(&b.id).await.expect("get").is_none(), "nothing half-written");
    // A different selector set is a different entry.
    let c = sample_entry("dup-c", "spiffe://td/dup", &["unix:uid:1"]);
    s.create_entry(&c).await.expect("create distinct");
    let same_id = sample_entry("dup-a", "spiffe://td/other", &["x:y"]);
    assert!(s.create_entry(&same_id).await.is_err(), "entry IDs are unique");
    s.delete_entry(&a.id).await.expect("cleanup");
    s.delete_entry(&c.id).await.expect("cleanup");
}

async fn batch_create<S: Store>(s: &S) {
    let stored = sample_entry("b-stored", "spiffe://td/b/stored", &["unix:uid:1"]);
    s.create_entry(&stored).await.expect("create");
    let batch = vec![
        sample_entry("b-1", "spiffe://td/b/1", &["unix:uid:1"]),
        // Duplicate of a stored entry (selector order does not matter).
        sample_entry("b-2", "spiffe://td/b/stored", &["unix:uid:1"]),
        sample_entry("b-3", "spiffe://td/b/3", &["unix:uid:1", "unix:gid:3"]),
        // Duplicate of an earlier entry in the same batch.
        sample_entry("b-4", "spiffe://td/b/3", &["unix:gid:3", "unix:uid:1"]),
    ];
    let out = s.create_entries(&batch).await.expect("batch");
    assert_eq!(out.len(), 4);
    assert_eq!(out[0].as_ref().expect("created").revision, 1);
    assert!(matches!(out[1], Err(StoreError::AlreadyExists(_))), "{:?}", out[1]);
    assert!(out[2].is_ok(), "{:?}", out[2]);
    assert!(matches!(out[3], Err(StoreError::AlreadyExists(_))), "{:?}", out[3]);
    for (id, present) in [("b-1", true), ("b-2", false), ("b-3", true), ("b-4", false)] {
        let got = s.get_entry(&EntryId(id.into())).await.expect("get");
        assert_eq!(got.is_some(), present, "{id}");
    }
    let mut b3 = s.get_entry(&EntryId("b-3".into())).await.expect("get").expect("present");
    b3.selectors.sort();
    assert_eq!(b3.selectors.len(), 2, "selectors of batch entries are stored");
    assert!(s.create_entries(&[]).await.expect("empty batch").is_empty());
    for id in ["b-stored", "b-1", "b-3"] {
        s.delete_entry(&EntryId(id.into())).await.expect("cleanup");
    }
}

async fn updates_bump_revision_and_detect_conflicts<S: Store>(s: &S) {
    let e = sample_entry("up", "spiffe://td/up", &["a:1"]);
    s.create_entry(&e).await.expect("create");
    let mut changed = e.clone();
    changed.selectors = vec!["a:2".parse().expect("selector")];
    changed.hint = "new".into();
    let v2 = s.update_entry(&changed, Some(1)).await.expect("update");
    assert_eq!(v2.revision, 2);
    assert_eq!(v2.created_at, e.created_at);
    let got = s.get_entry(&e.id).await.expect("get").expect("present");
    assert_eq!(got.selectors, changed.selectors);
    assert_eq!(got.hint, "new");
    assert!(matches!(s.update_entry(&changed, Some(1)).await, Err(StoreError::Conflict(_))));
    assert_eq!(s.update_entry(&changed, None).await.expect("unconditional").revision, 3);
    let missing = sample_entry("nope", "spiffe://td/nope", &["a:1"]);
    assert!(matches!(s.update_entry(&missing, None).await, Err(StoreError::NotFound { .. })));
    s.delete_entry(&e.id).await.expect("cleanup");
}

async fn failed_update_leaves_entry_intact<S: Store>(s: &S) {
    let a = sample_entry("fa", "spiffe://td/f", &["a:1"]);
    let b = sample_entry("fb", "spiffe://td/f", &["a:2"]);
    s.create_entry(&a).await.expect("create");
    s.create_entry(&b).await.expect("create");
    // Make b identical to a: the duplicate check must refuse and roll back everything.
    let mut clash = b.clone();
    clash.selectors = a.selectors.clone();
    clash.hint = "should not stick".into();
    assert!(matches!(s.update_entry(&clash, None).await, Err(StoreError::AlreadyExists(_))));
    let got = s.get_entry(&b.id).await.expect("get").expect("present");
    assert_eq!(got.selectors, b.selectors);
    assert_eq!(got.hint, b.hint);
    assert_eq!(got.revision, 1);
    s.delete_entry(&a.id).await.expect("cleanup");
    s.delete_entry(&b.id).await.expect("cleanup");
}

async fn filters<S: Store>(s: &S) {
    let mut other_parent = sample_entry("f3", "spiffe://td/x", &["k:v"]);
    other_parent.parent_id = id("spiffe://td/agent2");
    let all = [
        sample_entry("f1", "spiffe://td/x", &["k:v", "k:w"]),
        sample_entry("f2", "spiffe://td/y", &["k:v"]),
        other_parent,
    ];
    for e in &all {
        s.create_entry(e).await.expect("create");
    }
    let ids = |v: Vec<RegistrationEntry>| v.into_iter().map(|e| e.id.0).collect::<Vec<_>>();
    assert_eq!(ids(s.list_entries(&EntryFilter::default()).await.expect("list")), ["f1", "f3", "f2"]);
    let by_id = EntryFilter { spiffe_id: Some(id("spiffe://td/x")), ..Default::default() };
    assert_eq!(ids(s.list_entries(&by_id).await.expect("list")), ["f1", "f3"]);
    let by_parent = EntryFilter { parent_id: Some(id("spiffe://td/agent2")), ..Default::default() };
    assert_eq!(ids(s.list_entries(&by_parent).await.expect("list")), ["f3"]);
    let by_sel =
        EntryFilter { selector: Some(Selector::new("k", "w").expect("selector")), ..Default::default() };
    let got = s.list_entries(&by_sel).await.expect("list");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].selectors.len(), 2, "a selector filter still returns every selector of the entry");
    let both = EntryFilter {
        spiffe_id: Some(id("spiffe://td/y")),
        selector: Some(Selector::new("k", "w").expect("selector")),
        ..Default::default()
    };
    assert!(s.list_entries(&both).await.expect("list").is_empty());
    for e in &all {
        s.delete_entry(&e.id).await.expect("cleanup");
    }
}

async fn pages<S: Store>(s: &S) {
    let made: Vec<RegistrationEntry> = ["p4", "p1", "p5", "p3", "p2"]
        .iter()
        .enumerate()
        .map(|(i, n)| sample_entry(n, &format!("spiffe://td/page{}", 5 - i), &["k:v", &format!("n:{n}")]))
        .collect();
    for e in &made {
        s.create_entry(e).await.expect("create");
    }
    let mut seen = Vec::new();
    let mut after: Option<EntryId> = None;
    loop {
        let page = s.list_entries_page(after.as_ref(), 2).await.expect("page");
        assert!(page.len() <= 2, "a page holds at most `limit` entries");
        let Some(last) = page.last() else { break };
        after = Some(last.id.clone());
        seen.extend(page);
    }
    let ids: Vec<&str> = seen.iter().map(|e| e.id.0.as_str()).collect();
    assert_eq!(ids, ["p1", "p2", "p3", "p4", "p5"], "pages come in ID order, none repeated or missed");
    for got in &seen {
        let want = made.iter().find(|e| e.id == got.id).expect("made");
        assert_eq!(got.spiffe_id, want.spiffe_id);
        assert_eq!(got.selectors.len(), 2, "each entry of a page carries its own selectors: {got:?}");
        assert!(got.selectors.iter().any(|x| x.value == got.id.0), "{got:?}");
    }
    let from_p2 = s.list_entries_page(Some(&EntryId("p2".into())), 10).await.expect("page");
    assert_eq!(from_p2.iter().map(|e| e.id.0.as_str()).collect::<Vec<_>>(), ["p3", "p4", "p5"]);
    assert!(s.list_entries_page(Some(&EntryId("p5".into())), 10).await.expect("page").is_empty());
    for e in &made {
        s.delete_entry(&e.id).await.expect("cleanup");
    }
}

async fn delete<S: Store>(s: &S) {
    let e = sample_entry("del", "spiffe://td/del", &["a:1"]);
    s.create_entry(&e).await.expect("create");
    let gone = s.delete_entry(&e.id).await.expect("delete");
    assert_eq!(gone.selectors, e.selectors);
    assert!(matches!(s.delete_entry(&e.id).await, Err(StoreError::NotFound { .. })));
    // The selectors went with it: a new entry with the same ID starts clean.
    s.create_entry(&sample_entry("del", "spiffe://td/del", &["b:1"])).await.expect("re-create");
    assert_eq!(s.get_entry(&e.id).await.expect("get").expect("present").selectors.len(), 1);
    s.delete_entry(&e.id).await.expect("cleanup");
}

async fn join_tokens<S: Store>(s: &S) {
    let t = JoinTokenRecord {
        id: "t1".into(),
        secret_sha256: "ab".into(),
        expires_at: 200,
        used_at: None,
        created_at: 100,
    };
    s.create_join_token(&t).await.expect("create");
    assert!(matches!(s.create_join_token(&t).await, Err(StoreError::AlreadyExists(_))));
    assert_eq!(s.get_join_token("t1").await.expect("get"), Some(t.clone()));
    let used = s.consume_join_token("t1", 150).await.expect("consume");
    assert_eq!(used.used_at, Some(150));
    assert!(matches!(s.consume_join_token("t1", 151).await, Err(StoreError::Conflict(_))));
    assert!(matches!(s.consume_join_token("absent", 151).await, Err(StoreError::NotFound { .. })));
    let t2 = JoinTokenRecord { id: "t2".into(), expires_at: 1000, ..t.clone() };
    s.create_join_token(&t2).await.expect("create");
    assert_eq!(s.prune_join_tokens(500).await.expect("prune"), 1);
    assert!(s.get_join_token("t1").await.expect("get").is_none());
    assert!(s.get_join_token("t2").await.expect("get").is_some());
}

async fn agents<S: Store>(s: &S) {
    let a = sample_agent("spiffe://td/ferrid/agent/join_token/b");
    let b = sample_agent("spiffe://td/ferrid/agent/join_token/a");
    s.upsert_agent(&a).await.expect("upsert");
    s.upsert_agent(&b).await.expect("upsert");
    let mut a2 = a.clone();
    a2.svid_serial = "ff".into();
    s.upsert_agent(&a2).await.expect("replace");
    assert_eq!(s.get_agent(&a.spiffe_id).await.expect("get"), Some(a2.clone()));
    let list = s.list_agents().await.expect("list");
    assert_eq!(
        list.iter().map(|x| x.spiffe_id.to_string()).collect::<Vec<_>>(),
        [b.spiffe_id.to_string(), a.spiffe_id.to_string()]
    );
    let banned = s.ban_agent(&a.spiffe_id).await.expect("ban");
    assert!(banned.banned);
    assert!(s.get_agent(&a.spiffe_id).await.expect("get").expect("present").banned);
    assert!(matches!(
        s.ban_agent(&id("spiffe://td/ferrid/agent/x/none")).await,
        Err(StoreError::NotFound { .. })
    ));
    // A ban is monotonic: an upsert from a record read before the ban keeps it.
    let mut stale = a2.clone();
    stale.svid_serial = "0abc".into();
    s.upsert_agent(&stale).await.expect("upsert over a ban");
    let after = s.get_agent(&a.spiffe_id).await.expect("get").expect("present");
    assert!(after.banned, "an upsert cleared a ban");
    // Recording a renewed SVID for a banned agent is refused and writes nothing.
    let mut renewed = a2.clone();
    renewed.svid_serial = "0def".into();
    match s.record_agent_svid(&renewed).await {
        Err(StoreError::Banned(who)) => assert_eq!(who, a.spiffe_id),
        other => panic!("recorded an SVID for a banned agent: {other:?}"),
    }
    assert_eq!(s.get_agent(&a.spiffe_id).await.expect("get").expect("present").svid_serial, "0abc");
    // A record that says banned is refused too, for a new agent as for a known one.
    let mut new_banned = sample_agent("spiffe://td/ferrid/agent/join_token/c");
    new_banned.banned = true;
    assert!(matches!(s.record_agent_svid(&new_banned).await, Err(StoreError::Banned(_))));
    assert_eq!(s.get_agent(&new_banned.spiffe_id).await.expect("get"), None);
    // For an agent that is not banned it inserts, then replaces.
    let mut c = sample_agent("spiffe://td/ferrid/agent/join_token/c");
    s.record_agent_svid(&c).await.expect("first SVID");
    c.svid_serial = "01".into();
    s.record_agent_svid(&c).await.expect("renewed SVID");
    assert_eq!(s.get_agent(&c.spiffe_id).await.expect("get"), Some(c.clone()));
}

async fn replay<S: Store>(s: &S) {
    s.record_replay("k1", 200, 100).await.expect("first use");
    assert!(matches!(s.record_replay("k1", 300, 150).await, Err(StoreError::AlreadyExists(_))));
    // Once the record has expired the key may be recorded again.
    s.record_replay("k1", 400, 250).await.expect("after expiry");
    assert!(matches!(s.record_replay("k1", 500, 300).await, Err(StoreError::AlreadyExists(_))));
}

async fn task_credentials<S: Store>(s: &S) {
    let c = |jti: &str, at: i64| crate::TaskCredential {
        task_id: "t-1".into(),
        jti: jti.into(),
        purpose: "summarise the inbox".into(),
        spiffe_id: "spiffe://td/agent/researcher".into(),
        subject: "alice".into(),
        issued_at: at,
        expires_at: at + 300,
    };
    assert!(s.list_task_credentials("t-1").await.expect("list").is_empty());
    s.record_task_credential(&c("j2", 20)).await.expect("record");
    s.record_task_credential(&c("j1", 10)).await.expect("record");
    let mut other = c("j3", 5);
    other.task_id = "t-2".into();
    s.record_task_credential(&other).await.expect("record");
    let got = s.list_task_credentials("t-1").await.expect("list");
    assert_eq!(got, vec![c("j1", 10), c("j2", 20)]);
    assert!(s.record_task_credential(&c("j1", 10)).await.is_err(), "a jti is recorded once per task");
}

async fn revocations<S: Store>(s: &S) {
    use crate::{RevocationKind, RevocationRecord};
    let r = |id: &str, kind: RevocationKind, expires_at: i64| RevocationRecord {
        seq: 0,
        id: id.into(),
        txn: "txn-1".into(),
        kind,
        value: format!("v-{id}"),
        spiffe_id: "spiffe://td/web".into(),
        cutoff: if kind == RevocationKind::SpiffeId { 150 } else { 0 },
        revoked_at: 150,
        expires_at,
        reason: "compromised".into(),
        token: "a.b.c".into(),
    };
    assert!(s.list_revocations(0, 0).await.expect("list").is_empty());
    let mut batch = [
        r("r1", RevocationKind::X509, 200),
        r("r2", RevocationKind::Jwt, 400),
        r("r3", RevocationKind::SpiffeId, 300),
    ];
    s.append_revocations(&mut batch).await.expect("append");
    let seqs: Vec<u64> = batch.iter().map(|b| b.seq).collect();
    assert!(seqs[0] >= 1 && seqs[1] == seqs[0] + 1 && seqs[2] == seqs[1] + 1, "sequences {seqs:?}");
    assert_eq!(s.list_revocations(0, 0).await.expect("list"), batch.to_vec());
    assert_eq!(s.list_revocations(seqs[0], 0).await.expect("list"), batch[1..].to_vec());
    // Expired revocations are not listed, and pruning removes them.
    assert_eq!(s.list_revocations(0, 250).await.expect("list"), batch[1..].to_vec());
    assert_eq!(s.prune_revocations(250).await.expect("prune"), 1);
    assert_eq!(s.list_revocations(0, 0).await.expect("list"), batch[1..].to_vec());
    // An ID is used once; a failed batch writes nothing.
    let mut dup = [r("r4", RevocationKind::Jwt, 500), r("r2", RevocationKind::Jwt, 500)];
    assert!(matches!(s.append_revocations(&mut dup).await, Err(StoreError::AlreadyExists(_))));
    assert_eq!(s.list_revocations(0, 0).await.expect("list").len(), 2, "the failed batch left nothing");
    // Sequences keep rising after pruning.
    let mut next = [r("r5", RevocationKind::X509, 900)];
    s.append_revocations(&mut next).await.expect("append");
    assert!(next[0].seq > seqs[2]);
}

async fn delegations<S: Store>(s: &S) {
    use crate::DelegationRecord;
    let d = |jti: &str, parent: Option<&str>, subject: &str, expires_at: i64| DelegationRecord {
        jti: jti.into(),
        parent_jti: parent.map(Into::into),
        subject: subject.into(),
        actor: "spiffe://td/agent".into(),
        task_id: None,
        issued_at: 100,
        expires_at,
    };
    // alice: root -> a1 -> a2 -> a3, root -> b1 (expired); bob: c1 -> c2.
    for rec in [
        d("a1", Some("root"), "alice", 500),
        d("a2", Some("a1"), "alice", 500),
        d("a3", Some("a2"), "alice", 500),
        d("b1", Some("root"), "alice", 120),
        d("c1", None, "bob", 500),
        d("c2", Some("c1"), "bob", 500),
    ] {
        s.record_delegation(&rec).await.expect("record");
    }
    let jtis = |v: Vec<DelegationRecord>| v.into_iter().map(|r| r.jti).collect::<Vec<_>>();
    let mut got = jtis(s.delegation_descendants(&["root".into()], 200).await.expect("descendants"));
    got.sort();
    assert_eq!(got, ["a1", "a2", "a3"], "transitive, expired left out");
    let mut got =
        jtis(s.delegation_descendants(&["a2".into(), "c1".into()], 200).await.expect("descendants"));
    got.sort();
    assert_eq!(got, ["a3", "c2"]);
    assert!(s.delegation_descendants(&[], 200).await.expect("none").is_empty());
    let mut got = jtis(s.delegations_by_subject("alice", 200).await.expect("by subject"));
    got.sort();
    assert_eq!(got, ["a1", "a2", "a3"]);
    assert_eq!(s.get_delegation("a2").await.expect("get"), Some(d("a2", Some("a1"), "alice", 500)));
    assert_eq!(s.get_delegation("zz").await.expect("get"), None);
    assert!(matches!(s.record_delegation(&d("a1", None, "x", 1)).await, Err(StoreError::AlreadyExists(_))));
    assert_eq!(s.prune_delegations(200).await.expect("prune"), 1);
}

async fn ca_state<S: Store>(s: &S) {
    assert!(s.get_ca_state().await.expect("get").is_none());
    s.put_ca_state(b"one").await.expect("put");
    s.put_ca_state(b"two").await.expect("put");
    assert_eq!(s.get_ca_state().await.expect("get").as_deref(), Some(&b"two"[..]));
}

async fn change_feed<S: Store>(s: &S) {
    use crate::{ChangeKind, RevocationKind, RevocationRecord};
    let start = s.last_change().await.expect("last");
    let kinds = |after: u64| async move {
        s.list_changes(after, 100)
            .await
            .expect("list")
            .into_iter()
            .map(|c| (c.kind, c.key))
            .collect::<Vec<_>>()
    };
    let e = sample_entry("feed-1", "spiffe://td/feed", &["a:1"]);
    s.create_entry(&e).await.expect("create");
    // A refused write records nothing.
    assert!(s.create_entry(&sample_entry("feed-dup", "spiffe://td/feed", &["a:1"])).await.is_err());
    s.update_entry(&e, None).await.expect("update");
    s.delete_entry(&e.id).await.expect("delete");
    let agent = sample_agent("spiffe://td/agent/feed");
    s.upsert_agent(&agent).await.expect("upsert");
    s.record_agent_svid(&agent).await.expect("renew");
    s.ban_agent(&agent.spiffe_id).await.expect("ban");
    assert!(matches!(s.record_agent_svid(&agent).await, Err(StoreError::Banned(_))));
    let mut revs = [RevocationRecord {
        seq: 0,
        id: "feed-rev".into(),
        txn: "t".into(),
        kind: RevocationKind::Jwt,
        value: "j".into(),
        spiffe_id: String::new(),
        cutoff: 0,
        revoked_at: 1,
        expires_at: 2,
        reason: String::new(),
        token: "a.b.c".into(),
    }];
    s.append_revocations(&mut revs).await.expect("append");
    let agent_key = agent.spiffe_id.to_string();
    assert_eq!(
        kinds(start).await,
        vec![
            (ChangeKind::Entry, "feed-1".to_owned()),
            (ChangeKind::Entry, "feed-1".to_owned()),
            (ChangeKind::Entry, "feed-1".to_owned()),
            (ChangeKind::Agent, agent_key.clone()),
            (ChangeKind::Agent, agent_key.clone()),
            (ChangeKind::Agent, agent_key),
            (ChangeKind::Revocation, String::new()),
        ]
    );
    let all = s.list_changes(start, 100).await.expect("list");
    assert!(all.windows(2).all(|w| w[1].seq == w[0].seq + 1), "no gaps: {all:?}");
    let last = s.last_change().await.expect("last");
    assert_eq!(last, all.last().expect("some").seq);
    assert_eq!(s.list_changes(start, 2).await.expect("limit").len(), 2);
    // Pruning keeps the newest rows, and the last sequence survives it.
    s.prune_changes(1).await.expect("prune");
    let kept = s.list_changes(0, 100).await.expect("list");
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].seq, last);
    assert_eq!(s.last_change().await.expect("last"), last);
    s.prune_changes(0).await.expect("prune all");
    assert_eq!(s.last_change().await.expect("last"), last, "pruning everything keeps the sequence");
    s.create_entry(&sample_entry("feed-2", "spiffe://td/feed2", &["a:1"])).await.expect("create");
    assert_eq!(s.list_changes(last, 10).await.expect("list")[0].seq, last + 1);
    s.delete_entry(&EntryId("feed-2".into())).await.expect("cleanup");
}

/// Concurrency checks: of many racing uses of one token or replay key, exactly one wins.
pub async fn run_concurrency<S: Store>(store: Arc<S>) {
    let t = JoinTokenRecord {
        id: "race".into(),
        secret_sha256: "ab".into(),
        expires_at: 200,
        used_at: None,
        created_at: 100,
    };
    store.create_join_token(&t).await.expect("create");
    let mut tasks = Vec::new();
    for i in 0..8 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move { s.consume_join_token("race", 100 + i).await.is_ok() }));
    }
    let mut wins = 0;
    for t in tasks {
        wins += usize::from(t.await.expect("task"));
    }
    assert_eq!(wins, 1, "exactly one consumer wins");
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move { s.record_replay("race-key", 500, 100).await.is_ok() }));
    }
    let mut wins = 0;
    for t in tasks {
        wins += usize::from(t.await.expect("task"));
    }
    assert_eq!(wins, 1, "exactly one replay record wins");
}

/// Races between two store instances on one database (two servers): each instance has
/// its own connections, so only the SQL itself can make these atomic. Both must start on
/// the same empty database.
pub async fn run_two_instances<S: Store>(a: Arc<S>, b: Arc<S>) {
    use crate::{RevocationKind, RevocationRecord};
    let stores = [a.clone(), b.clone()];

    // The same join token consumed through both: exactly one wins.
    for round in 0..10 {
        let t = JoinTokenRecord {
            id: format!("two-{round}"),
            secret_sha256: "ab".into(),
            expires_at: 200,
            used_at: None,
            created_at: 100,
        };
        a.create_join_token(&t).await.expect("create");
        let (x, y) = tokio::join!(a.consume_join_token(&t.id, 101), b.consume_join_token(&t.id, 102));
        assert!(x.is_ok() ^ y.is_ok(), "exactly one consumer wins: {x:?} / {y:?}");
        let loser = if x.is_ok() { y } else { x };
        assert!(matches!(loser, Err(StoreError::Conflict(_))), "{loser:?}");
    }

    // The same replay key recorded through both: exactly one wins.
    for round in 0..10 {
        let key = format!("replay-two-{round}");
        let (x, y) = tokio::join!(a.record_replay(&key, 500, 100), b.record_replay(&key, 500, 100));
        assert!(x.is_ok() ^ y.is_ok(), "exactly one replay record wins: {x:?} / {y:?}");
    }

    // The same expected revision through both: one update wins, the other is refused.
    for round in 0..10 {
        let e = sample_entry(&format!("two-up-{round}"), &format!("spiffe://td/two/{round}"), &["a:1"]);
        a.create_entry(&e).await.expect("create");
        let mut ea = e.clone();
        ea.hint = "from a".into();
        let mut eb = e.clone();
        eb.hint = "from b".into();
        let (x, y) = tokio::join!(a.update_entry(&ea, Some(1)), b.update_entry(&eb, Some(1)));
        assert!(x.is_ok() ^ y.is_ok(), "exactly one update wins: {x:?} / {y:?}");
        let (winner, loser) = if x.is_ok() { (x, y) } else { (y, x) };
        assert!(matches!(loser, Err(StoreError::Conflict(_))), "{loser:?}");
        let stored = b.get_entry(&e.id).await.expect("get").expect("present");
        assert_eq!(stored.revision, 2);
        assert_eq!(stored.hint, winner.expect("winner").hint, "the winner's write is the one stored");
    }

    // A delete racing an update: the entry ends up gone, and the update either happened
    // first (revision 2) or found nothing; never an update of a deleted entry.
    for round in 0..10 {
        let e = sample_entry(&format!("two-del-{round}"), &format!("spiffe://td/two-del/{round}"), &["a:1"]);
        a.create_entry(&e).await.expect("create");
        let mut changed = e.clone();
        changed.selectors = vec!["a:2".parse().expect("selector")];
        let (d, u) = tokio::join!(a.delete_entry(&e.id), b.update_entry(&changed, None));
        let deleted = d.expect("the delete always succeeds");
        match u {
            Ok(updated) => {
                assert_eq!(updated.revision, 2);
                assert_eq!(deleted.revision, 2, "the update committed first, so the delete returned it");
                assert_eq!(deleted.selectors, changed.selectors);
            }
            Err(StoreError::NotFound { .. }) => assert_eq!(deleted.revision, 1),
            Err(other) => panic!("update racing a delete: {other:?}"),
        }
        assert!(a.get_entry(&e.id).await.expect("get").is_none());
        assert!(b.get_entry(&e.id).await.expect("get").is_none());
        let sels = a
            .list_entries(&EntryFilter {
                selector: Some("a:2".parse().expect("selector")),
                ..Default::default()
            })
            .await
            .expect("list");
        assert!(sels.iter().all(|x| x.id != e.id), "no selectors left behind");
    }

    // Revocations appended through both while a reader follows the feed by sequence: the
    // reader, listing "after the last one I saw", must see every revocation. A sequence
    // that commits out of order (an identity column) would make it skip some.
    let writers = 2 * 40;
    let rev = |id: String| RevocationRecord {
        seq: 0,
        id,
        txn: "t".into(),
        kind: RevocationKind::Jwt,
        value: "v".into(),
        spiffe_id: String::new(),
        cutoff: 0,
        revoked_at: 100,
        expires_at: 1_000,
        reason: String::new(),
        token: "a.b.c".into(),
    };
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let s = b.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let (mut last, mut seen) = (0u64, Vec::new());
            loop {
                let finished = done.load(std::sync::atomic::Ordering::SeqCst);
                for r in s.list_revocations(last, 0).await.expect("list") {
                    last = r.seq;
                    seen.push(r.id);
                }
                if finished {
                    return seen;
                }
                tokio::task::yield_now().await;
            }
        })
    };
    let before: Vec<String> =
        a.list_revocations(0, 0).await.expect("list").into_iter().map(|r| r.id).collect();
    let mut tasks = Vec::new();
    for i in 0..writers {
        let s = stores[i % 2].clone();
        tasks.push(tokio::spawn(async move {
            let mut batch = [rev(format!("two-rev-{i}-a")), rev(format!("two-rev-{i}-b"))];
            s.append_revocations(&mut batch).await.expect("append");
            assert_eq!(batch[1].seq, batch[0].seq + 1, "one batch takes consecutive numbers");
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut seen = reader.await.expect("reader");
    seen.retain(|id| !before.contains(id));
    assert_eq!(seen.len(), 2 * writers, "the follower saw every revocation exactly once");
    let all = a.list_revocations(0, 0).await.expect("list");
    let seqs: Vec<u64> = all.iter().map(|r| r.seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "sequences rise: {seqs:?}");

    // A change committed through one instance wakes the other's followers (when the
    // backend has a wake-up signal; a follower tails the feed either way).
    if let Some(mut wake) = b.change_wakeups() {
        wake.borrow_and_update();
        a.create_entry(&sample_entry("two-wake", "spiffe://td/two/wake", &["a:1"])).await.expect("create");
        tokio::time::timeout(std::time::Duration::from_secs(10), wake.changed())
            .await
            .expect("woken by the other instance's change")
            .expect("listener alive");
    }

    // 64-bit times: GCP's trust-on-first-use expiry is year 9999 in Unix seconds.
    let mut agent = sample_agent("spiffe://td/agent/tofu");
    agent.svid_expires_at = 253_402_300_799;
    a.upsert_agent(&agent).await.expect("upsert");
    assert_eq!(b.get_agent(&agent.spiffe_id).await.expect("get").expect("present"), agent);
}
