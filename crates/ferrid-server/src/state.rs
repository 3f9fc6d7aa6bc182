//! The server's shared state: the CA, the datastore, an in-memory index of entries and
//! agents (written through to the datastore, so reads on the issuance path never touch
//! the disk), and a change counter that wakes every entry watch.
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use ferrid_attest::Registry;
use ferrid_ca::{Authority, TrustBundle};
use ferrid_store::{Store, StoreError};
use ferrid_types::{AgentRecord, Clock, EntryId, RegistrationEntry, SelectorSet, SpiffeId, TrustDomain};
use tokio::sync::{Mutex, watch};

use crate::config::ValidatedConfig;
use crate::metrics::Metrics;

/// All entries, indexed for the authorization walk. Persistent maps: a clone shares
/// structure with the original and one change costs O(log n), so a writer builds the
/// next snapshot from the current one without copying either map.
#[derive(Debug, Default, Clone)]
pub(crate) struct EntryIndex {
    pub(crate) by_id: imbl::HashMap<EntryId, Arc<RegistrationEntry>>,
    by_parent: imbl::HashMap<SpiffeId, imbl::OrdSet<EntryId>>,
}

impl EntryIndex {
    fn build(entries: Vec<RegistrationEntry>) -> Self {
        let mut idx = Self::default();
        for e in entries {
            idx.insert(e);
        }
        idx
    }

    /// Inserts `e`, replacing a stored entry with its ID.
    fn insert(&mut self, e: RegistrationEntry) {
        self.remove(&e.id);
        self.by_parent.entry(e.parent_id.clone()).or_default().insert(e.id.clone());
        self.by_id.insert(e.id.clone(), Arc::new(e));
    }

    fn remove(&mut self, id: &EntryId) {
        if let Some(old) = self.by_id.remove(id)
            && let Some(children) = self.by_parent.get_mut(&old.parent_id)
        {
            children.remove(id);
            if children.is_empty() {
                self.by_parent.remove(&old.parent_id);
            }
        }
    }

    /// Applies the datastore's current state of entry `id` (`None`: deleted), unless
    /// the index already holds a later revision of it.
    fn apply(&mut self, id: &EntryId, current: Option<RegistrationEntry>) {
        match current {
            Some(e) if self.by_id.get(id).is_some_and(|held| held.revision > e.revision) => {}
            Some(e) => self.insert(e),
            None => self.remove(id),
        }
    }

    fn children(&self, parent: &SpiffeId) -> impl Iterator<Item = &Arc<RegistrationEntry>> {
        self.by_parent.get(parent).into_iter().flatten().filter_map(|id| self.by_id.get(id))
    }

    /// The entries an agent may serve at `now`: those parented to the agent itself and
    /// those parented to a node alias (an entry parented to the server) whose selectors
    /// the agent's node selectors all satisfy. Sorted by entry ID.
    pub(crate) fn authorized(
        &self,
        agent: &AgentRecord,
        server_id: &SpiffeId,
        now: i64,
    ) -> Vec<Arc<RegistrationEntry>> {
        let node: SelectorSet = agent.selectors.iter().cloned().collect();
        let mut parents = vec![agent.spiffe_id.clone()];
        parents.extend(
            self.children(server_id)
                .filter(|alias| !alias.is_expired(now) && node.satisfies(&alias.selectors))
                .map(|alias| alias.spiffe_id.clone()),
        );
        let mut out: Vec<_> =
            parents.iter().flat_map(|p| self.children(p)).filter(|e| !e.is_expired(now)).cloned().collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out.dedup_by(|a, b| a.id == b.id);
        out
    }
}

impl EntryIndex {
    /// Entry `id` if `agent` may serve it at `now` (the same rule as
    /// [`authorized`](Self::authorized), for one entry: a lookup, not a walk of every
    /// entry the agent serves).
    pub(crate) fn authorize(
        &self,
        agent: &AgentRecord,
        server_id: &SpiffeId,
        id: &str,
        now: i64,
    ) -> Option<Arc<RegistrationEntry>> {
        let e = self.by_id.get(id)?;
        if e.is_expired(now) {
            return None;
        }
        if e.parent_id == agent.spiffe_id {
            return Some(e.clone());
        }
        let node: SelectorSet = agent.selectors.iter().cloned().collect();
        self.children(server_id)
            .any(|alias| {
                alias.spiffe_id == e.parent_id && !alias.is_expired(now) && node.satisfies(&alias.selectors)
            })
            .then(|| e.clone())
    }

    /// The entries parented to `parent` whose selectors `attested` all satisfies, and
    /// that have not expired at `now`. Sorted by SPIFFE ID, then entry ID.
    pub(crate) fn matching(
        &self,
        parent: &SpiffeId,
        attested: &SelectorSet,
        now: i64,
    ) -> Vec<Arc<RegistrationEntry>> {
        let mut out: Vec<_> = self
            .children(parent)
            .filter(|e| !e.is_expired(now) && attested.satisfies(&e.selectors))
            .cloned()
            .collect();
        out.sort_by(|a, b| {
            a.spiffe_id.to_string().cmp(&b.spiffe_id.to_string()).then_with(|| a.id.cmp(&b.id))
        });
        out
    }
}

/// State shared by every service and background task.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) cfg: ValidatedConfig,
    pub(crate) td: TrustDomain,
    pub(crate) server_id: SpiffeId,
    pub(crate) ca: Authority,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) attestors: Registry,
    /// Attestors for direct exchange, by issuer.
    pub(crate) exchange: Vec<crate::exchange::ExchangeAttestor>,
    /// Identity providers whose ID tokens are subject tokens of token exchange.
    pub(crate) idps: Vec<Arc<crate::delegation::Idp>>,
    /// The active policy set.
    pub(crate) policy: Arc<ferrid_policy::PolicyEngine>,
    /// Whether it is the built-in permit-all set (decisions are then skipped).
    pub(crate) policy_is_default: bool,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) metrics: Metrics,
    entries: ArcSwap<EntryIndex>,
    agents: ArcSwap<imbl::HashMap<SpiffeId, AgentRecord>>,
    /// The last change of the datastore's feed applied to this state.
    pub(crate) change_cursor: std::sync::atomic::AtomicU64,
    /// Serialises writers so the in-memory index follows the datastore's order.
    write_lock: Mutex<()>,
    changes: watch::Sender<u64>,
    pub(crate) ready: AtomicBool,
    pub(crate) tls: ArcSwap<rustls::ServerConfig>,
    /// The revocations in force and the feed that announces them.
    pub(crate) revocations: crate::revocation::Revocations,
    /// SSF poll receivers' queues.
    pub(crate) polls: crate::ssf::PollQueues,
    /// The audit log (`None` when `audit.enabled = false`); see `crate::audit`.
    pub(crate) audit: Option<ferrid_audit::AuditLog>,
}

impl Shared {
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn load(
        cfg: ValidatedConfig,
        ca: Authority,
        store: Arc<dyn Store>,
        attestors: Registry,
        exchange: Vec<crate::exchange::ExchangeAttestor>,
        idps: Vec<Arc<crate::delegation::Idp>>,
        policy: (Arc<ferrid_policy::PolicyEngine>, bool),
        clock: Arc<dyn Clock>,
        metrics: Metrics,
        tls: rustls::ServerConfig,
    ) -> Result<Self, StoreError> {
        // The cursor first: a change committed while the state below is read is applied
        // again by the follower, which is harmless (it re-reads current state).
        let cursor = store.last_change().await?;
        let entries = load_entries(store.as_ref()).await?;
        let agents = store.list_agents().await?;
        let revocations = store.list_revocations(0, clock.unix()).await?;
        tracing::info!(entries = entries.len(), agents = agents.len(), "loaded datastore");
        let td = cfg.trust_domain.clone();
        Ok(Self {
            server_id: ferrid_types::server_id(&td),
            td,
            cfg,
            ca,
            store,
            attestors,
            exchange,
            idps,
            policy: policy.0,
            policy_is_default: policy.1,
            clock,
            metrics,
            entries: ArcSwap::from_pointee(EntryIndex::build(entries)),
            agents: ArcSwap::from_pointee(agents.into_iter().map(|a| (a.spiffe_id.clone(), a)).collect()),
            change_cursor: std::sync::atomic::AtomicU64::new(cursor),
            write_lock: Mutex::new(()),
            changes: watch::channel(0).0,
            ready: AtomicBool::new(false),
            tls: ArcSwap::from_pointee(tls),
            revocations: crate::revocation::Revocations::new(revocations),
            polls: crate::ssf::PollQueues::default(),
            audit: None,
        })
    }

    /// The current entry index.
    pub(crate) fn entries(&self) -> Arc<EntryIndex> {
        self.entries.load_full()
    }

    /// A cached agent record.
    pub(crate) fn agent(&self, id: &SpiffeId) -> Option<AgentRecord> {
        self.agents.load().get(id).cloned()
    }

    /// Subscribes to change notifications (entries, agents or bundle).
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Wakes every watcher.
    pub(crate) fn notify(&self) {
        self.changes.send_modify(|v| *v += 1);
    }

    pub(crate) fn now(&self) -> i64 {
        self.clock.unix()
    }

    /// Refuses a batch call with more than `limits.max_batch` items (`what` names them).
    pub(crate) fn check_batch(&self, len: usize, what: &str) -> Result<(), tonic::Status> {
        let max = self.cfg.raw.limits.max_batch;
        if len > max {
            return Err(tonic::Status::invalid_argument(format!(
                "{len} {what} in one batch; at most {max} are allowed (limits.max_batch)"
            )));
        }
        Ok(())
    }

    pub(crate) fn bundle(&self) -> TrustBundle {
        self.ca.bundle()
    }

    pub(crate) fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Creates an entry in the datastore, then in the index, then wakes watchers.
    pub(crate) async fn create_entry(&self, e: RegistrationEntry) -> Result<RegistrationEntry, StoreError> {
        let _w = self.write_lock.lock().await;
        let saved = self.store.create_entry(&e).await?;
        self.update_index(|idx| idx.insert(saved.clone()));
        self.notify();
        Ok(saved)
    }

    /// Creates several entries in one datastore transaction, then updates the index and
    /// wakes watchers once (see [`Store::create_entries`]).
    pub(crate) async fn create_entries(
        &self,
        entries: Vec<RegistrationEntry>,
    ) -> Result<Vec<Result<RegistrationEntry, StoreError>>, StoreError> {
        let _w = self.write_lock.lock().await;
        let saved = self.store.create_entries(&entries).await?;
        if saved.iter().any(Result::is_ok) {
            self.update_index(|idx| saved.iter().flatten().for_each(|e| idx.insert(e.clone())));
            self.notify();
        }
        Ok(saved)
    }

    /// Updates an entry (optimistic concurrency on `expected_revision`).
    pub(crate) async fn update_entry(
        &self,
        e: RegistrationEntry,
        expected_revision: Option<i64>,
    ) -> Result<RegistrationEntry, StoreError> {
        let _w = self.write_lock.lock().await;
        let saved = self.store.update_entry(&e, expected_revision).await?;
        self.update_index(|idx| idx.insert(saved.clone()));
        self.notify();
        Ok(saved)
    }

    /// Deletes an entry.
    pub(crate) async fn delete_entry(&self, id: &EntryId) -> Result<RegistrationEntry, StoreError> {
        let _w = self.write_lock.lock().await;
        let gone = self.store.delete_entry(id).await?;
        self.update_index(|idx| idx.remove(id));
        self.notify();
        Ok(gone)
    }

    fn update_index(&self, f: impl FnOnce(&mut EntryIndex)) {
        // Readers keep the snapshot they hold; the clone shares the persistent maps.
        let mut next = EntryIndex::clone(&self.entries.load());
        f(&mut next);
        self.entries.store(Arc::new(next));
    }

    /// Applies entry changes read from the datastore's feed: for each ID, its state
    /// there now. Under the writers' lock, so a local write is never overtaken by an
    /// older read of the same entry.
    pub(crate) async fn apply_entry_changes(&self, ids: &[EntryId]) -> Result<(), StoreError> {
        let _w = self.write_lock.lock().await;
        let mut current = Vec::with_capacity(ids.len());
        for id in ids {
            current.push((id, self.store.get_entry(id).await?));
        }
        self.update_index(|idx| current.into_iter().for_each(|(id, e)| idx.apply(id, e)));
        Ok(())
    }

    /// Applies agent changes read from the feed (the datastore's record of each).
    pub(crate) async fn apply_agent_changes(&self, ids: &[SpiffeId]) -> Result<(), StoreError> {
        for id in ids {
            if let Some(a) = self.store.get_agent(id).await? {
                self.cache_agent(a);
            }
        }
        Ok(())
    }

    /// Replaces the index and the agent cache with the datastore's whole state (a
    /// follower that fell behind the pruned feed).
    pub(crate) async fn reload(&self) -> Result<(), StoreError> {
        let _w = self.write_lock.lock().await;
        let entries = load_entries(self.store.as_ref()).await?;
        let agents = self.store.list_agents().await?;
        self.entries.store(Arc::new(EntryIndex::build(entries)));
        for a in agents {
            self.cache_agent(a);
        }
        Ok(())
    }

    /// Records an agent with its new SVID, in the datastore and then the cache. The
    /// datastore refuses (`StoreError::Banned`) when the agent was evicted, even by an
    /// eviction that committed after this request authenticated the agent; the cache
    /// then learns the ban too.
    pub(crate) async fn record_agent_svid(&self, a: AgentRecord) -> Result<(), StoreError> {
        // Not under `write_lock`: the datastore decides between this and a ban, and the
        // cache below never un-bans, so the order the two reach the cache in is moot.
        let result = self.store.record_agent_svid(&a).await;
        match &result {
            Ok(()) => self.cache_agent(a),
            // The refused SVID was never recorded: keep the cached one, mark the ban.
            Err(StoreError::Banned(_)) => self.cache_ban(&a.spiffe_id),
            Err(_) => {}
        }
        result
    }

    /// Bans an agent: its SVID is refused from now on and its watch ends. Returns the
    /// agent as the ban left it in the datastore.
    pub(crate) async fn ban_agent(&self, id: &SpiffeId) -> Result<AgentRecord, StoreError> {
        let a = self.store.ban_agent(id).await?;
        self.cache_agent(a.clone());
        self.notify();
        Ok(a)
    }

    /// Puts `a` in the agent cache; like the datastore, the cache never clears a ban,
    /// and it keeps the record with the later SVID (a feed read older than a local
    /// renewal does not replace it).
    fn cache_agent(&self, a: AgentRecord) {
        // Read-copy-update: a concurrent update is never lost (the closure reruns).
        self.agents.rcu(|cur| {
            let mut next = (**cur).clone();
            let held = next.get(&a.spiffe_id);
            let banned = a.banned || held.is_some_and(|c| c.banned);
            let record = match held {
                Some(h) if h.svid_expires_at > a.svid_expires_at => h.clone(),
                _ => a.clone(),
            };
            next.insert(a.spiffe_id.clone(), AgentRecord { banned, ..record });
            next
        });
    }

    /// Marks a cached agent banned, leaving the rest of its record as it is.
    fn cache_ban(&self, id: &SpiffeId) {
        self.agents.rcu(|cur| {
            let mut next = (**cur).clone();
            if let Some(a) = next.get_mut(id) {
                a.banned = true;
            }
            next
        });
    }

    /// All cached agents, sorted by ID.
    pub(crate) fn list_agents(&self) -> Vec<AgentRecord> {
        let mut v: Vec<_> = self.agents.load().values().cloned().collect();
        v.sort_by(|a, b| a.spiffe_id.cmp(&b.spiffe_id));
        v
    }

    /// Persists the CA state after a rotation step.
    pub(crate) async fn persist_ca(&self) -> Result<(), StoreError> {
        let json = serde_json::to_vec(&self.ca.state()).map_err(|e| StoreError::Backend(e.to_string()))?;
        self.store.put_ca_state(&json).await
    }
}

/// Entries read per query when the whole table is loaded.
const LOAD_PAGE: u32 = 5_000;

/// Every entry, read in pages of [`LOAD_PAGE`], each its own short query: loading a
/// large table neither holds one long transaction open on the database nor a whole
/// result set beside the index being built. A change committed while the pages are
/// read may be missed by them but not by the server, which applies the change feed
/// from a position taken before the first page.
async fn load_entries(store: &dyn Store) -> Result<Vec<RegistrationEntry>, StoreError> {
    let mut entries = Vec::new();
    let mut after: Option<EntryId> = None;
    loop {
        let page = store.list_entries_page(after.as_ref(), LOAD_PAGE).await?;
        let full = page.len() == LOAD_PAGE as usize;
        after = page.last().map(|e| e.id.clone());
        entries.extend(page);
        if !full {
            return Ok(entries);
        }
        tracing::debug!(entries = entries.len(), "loading entries");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn id(s: &str) -> SpiffeId {
        SpiffeId::new(s).unwrap()
    }

    fn entry(eid: &str, spiffe: &str, parent: &str, sels: &[&str]) -> RegistrationEntry {
        RegistrationEntry {
            id: EntryId(eid.into()),
            spiffe_id: id(spiffe),
            parent_id: id(parent),
            selectors: sels.iter().map(|s| s.parse().unwrap()).collect(),
            x509_svid_ttl: 0,
            jwt_svid_ttl: 0,
            dns_names: vec![],
            hint: String::new(),
            admin: false,
            expires_at: 0,
            metadata: BTreeMap::new(),
            revision: 1,
            created_at: 0,
        }
    }

    fn agent(spiffe: &str, sels: &[&str]) -> AgentRecord {
        AgentRecord {
            spiffe_id: id(spiffe),
            attestor: "join_token".into(),
            selectors: sels.iter().map(|s| s.parse().unwrap()).collect(),
            svid_serial: String::new(),
            svid_expires_at: 0,
            can_reattest: false,
            banned: false,
            attested_at: 0,
            last_seen: 0,
        }
    }

    #[test]
    fn authorization_follows_parents_and_node_aliases() {
        let server = id("spiffe://td/ferrid/server");
        let a1 = "spiffe://td/ferrid/agent/join_token/a1";
        let mut expired = entry("e5", "spiffe://td/old", a1, &["unix:uid:1"]);
        expired.expires_at = 50;
        let idx = EntryIndex::build(vec![
            entry("e1", "spiffe://td/web", a1, &["unix:uid:1"]),
            entry("e2", "spiffe://td/db", "spiffe://td/ferrid/agent/join_token/a2", &["unix:uid:1"]),
            entry("alias", "spiffe://td/cluster/prod", server.to_string().as_str(), &["join_token:a1"]),
            entry("e3", "spiffe://td/api", "spiffe://td/cluster/prod", &["unix:uid:2"]),
            entry("other-alias", "spiffe://td/cluster/dev", server.to_string().as_str(), &["join_token:zz"]),
            entry("e4", "spiffe://td/devapi", "spiffe://td/cluster/dev", &["unix:uid:2"]),
            expired,
        ]);
        let got: Vec<String> = idx
            .authorized(&agent(a1, &["join_token:a1"]), &server, 100)
            .iter()
            .map(|e| e.id.0.clone())
            .collect();
        assert_eq!(got, vec!["e1", "e3"]);
        let none = idx.authorized(&agent("spiffe://td/ferrid/agent/join_token/a9", &[]), &server, 100);
        assert!(none.is_empty());
        // The single-entry lookup agrees with the walk, entry by entry and agent by agent
        // (unknown IDs included).
        for a in [agent(a1, &["join_token:a1"]), agent("spiffe://td/ferrid/agent/join_token/a9", &[])] {
            let walk: Vec<String> = idx.authorized(&a, &server, 100).iter().map(|e| e.id.0.clone()).collect();
            for eid in ["e1", "e2", "alias", "e3", "other-alias", "e4", "e5", "nope"] {
                let one = idx.authorize(&a, &server, eid, 100).map(|e| e.id.0.clone());
                assert_eq!(one.is_some(), walk.contains(&eid.to_owned()), "{eid} for {}", a.spiffe_id);
            }
        }
    }

    #[test]
    fn index_remove_drops_parent_links() {
        let mut idx = EntryIndex::build(vec![entry("e1", "spiffe://td/web", "spiffe://td/p", &["a:b"])]);
        idx.remove(&EntryId("e1".into()));
        assert!(idx.by_id.is_empty());
        assert_eq!(idx.children(&id("spiffe://td/p")).count(), 0);
    }

    /// The index after any sequence of inserts, updates (parent and selector moves
    /// included), applies and removals is the index a full reload of the surviving
    /// entries builds; and a snapshot taken earlier is left as it was.
    #[test]
    fn incremental_changes_agree_with_a_full_rebuild() {
        let server = id("spiffe://td/ferrid/server");
        let parents = ["spiffe://td/a1", "spiffe://td/a2", "spiffe://td/alias", server.to_string().leak()];
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut idx = EntryIndex::default();
        let mut truth: BTreeMap<String, RegistrationEntry> = BTreeMap::new();
        let mut snapshot = None;
        for step in 0..5_000 {
            let eid = format!("e{}", next(200));
            let parent = parents[next(parents.len() as u64) as usize];
            let mut e = entry(
                &eid,
                &format!("spiffe://td/w{}", next(20)),
                parent,
                &[&format!("unix:uid:{}", next(5))],
            );
            e.revision = truth.get(&eid).map_or(1, |t| t.revision + 1);
            match next(4) {
                0 | 1 => {
                    idx.insert(e.clone());
                    truth.insert(eid, e);
                }
                2 => {
                    // A feed read: an older revision than the one held is ignored.
                    let stale = truth.get(&eid).is_some_and(|t| t.revision > 1) && next(2) == 0;
                    if stale {
                        let mut old = e.clone();
                        old.revision = truth[&eid].revision - 1;
                        old.hint = "stale".into();
                        idx.apply(&old.id.clone(), Some(old));
                    } else {
                        idx.apply(&e.id.clone(), Some(e.clone()));
                        truth.insert(eid, e);
                    }
                }
                _ => {
                    if next(2) == 0 {
                        idx.remove(&EntryId(eid.clone()));
                    } else {
                        idx.apply(&EntryId(eid.clone()), None);
                    }
                    truth.remove(&eid);
                }
            }
            if step == 2_500 {
                snapshot = Some((idx.clone(), truth.clone()));
            }
        }
        let agree = |idx: &EntryIndex, truth: &BTreeMap<String, RegistrationEntry>| {
            let rebuilt = EntryIndex::build(truth.values().cloned().collect());
            assert_eq!(idx.by_id.len(), rebuilt.by_id.len());
            for (k, v) in &rebuilt.by_id {
                assert_eq!(idx.by_id.get(k).map(|e| &**e), Some(&**v), "{k}");
            }
            assert_eq!(idx.by_parent, rebuilt.by_parent, "parent links");
            let a = agent("spiffe://td/a1", &["unix:uid:1"]);
            let ids = |i: &EntryIndex| {
                i.authorized(&a, &server, 10).iter().map(|e| e.id.clone()).collect::<Vec<_>>()
            };
            assert_eq!(ids(idx), ids(&rebuilt));
        };
        agree(&idx, &truth);
        let (old_idx, old_truth) = snapshot.expect("snapshot");
        agree(&old_idx, &old_truth);
    }
}
