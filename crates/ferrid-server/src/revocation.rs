//! Revocation (docs/revocation.md): what a `ferrid revoke` target resolves to, the
//! Security Event Tokens that announce it, and the live feed that agents, gRPC
//! watchers, pollers and push receivers follow.
//!
//! A revocation is durable in the datastore before it is published; the in-memory
//! [`Feed`] is what the issuance path consults (one `ArcSwap` load, hash lookups).
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use ferrid_proto::admin::v1 as apb;
use ferrid_proto::revocation::v1 as rpb;
use ferrid_revocation::{JwtCredential, Match, RevocationIndex, X509Credential};
use ferrid_store::{RevocationKind, RevocationRecord};
use ferrid_types::{EntryId, Serial, SpiffeId};
use ferrid_validate::set::{Revocation, SetEvent};
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::state::Shared;
use ferrid_types::config::{ConfigError, invalid};

/// How long the revoke call waits, at most, for the clock to pass a SPIFFE-ID cut-off.
const CUTOFF_WAIT: Duration = Duration::from_millis(1500);

/// `[revocation]`: where the feed is served beyond the agents.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationSection {
    /// HTTPS listener for the SSF poll endpoint (RFC 8936) and the SPIFFE bundle
    /// endpoint (`GET /bundle`); "" disables it.
    #[serde(default)]
    pub address: String,
    /// The longest a watcher or push receiver goes without a message.
    #[serde(default = "default_heartbeat", with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// The longest a poll without `returnImmediately` waits for new events.
    #[serde(default = "default_poll_wait", with = "humantime_serde")]
    pub poll_wait: Duration,
    /// Push receivers (RFC 8935), `[[revocation.push]]`.
    #[serde(default)]
    pub push: Vec<PushReceiver>,
    /// Named poll receivers (RFC 8936), `[[revocation.poll]]`: `/ssf/poll/<name>`
    /// exists only for the SPIFFE ID configured for it.
    #[serde(default)]
    pub poll: Vec<PollReceiver>,
}

/// One `[[revocation.poll]]` receiver: the queue `name` belongs to `spiffe_id`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PollReceiver {
    /// The path segment of `/ssf/poll/<name>`.
    pub name: String,
    /// The only caller allowed to read and acknowledge this queue.
    #[serde(with = "ferrid_types::serde_spiffe_id")]
    pub spiffe_id: SpiffeId,
}

impl RevocationSection {
    /// Checks `[[revocation.poll]]`: valid, distinct names, each for a SPIFFE ID of
    /// `td` (only this trust domain's SVIDs authenticate a poll).
    pub(crate) fn validate(&self, td: &ferrid_types::TrustDomain) -> Result<(), ConfigError> {
        let mut names = HashSet::new();
        for (i, r) in self.poll.iter().enumerate() {
            if !crate::follower::valid_receiver(&r.name) {
                return Err(invalid(
                    "revocation.poll.name",
                    format!("receiver {i}: {:?} is not 1 to 64 of a-z 0-9 - _ .", r.name),
                ));
            }
            if !names.insert(r.name.as_str()) {
                return Err(invalid(
                    "revocation.poll.name",
                    format!("receiver {:?} is configured twice", r.name),
                ));
            }
            if !r.spiffe_id.is_member_of(td) {
                return Err(invalid(
                    "revocation.poll.spiffe_id",
                    format!("receiver {:?}: {} is not in the trust domain {td}", r.name, r.spiffe_id),
                ));
            }
        }
        Ok(())
    }
}

impl Default for RevocationSection {
    fn default() -> Self {
        Self {
            address: String::new(),
            heartbeat_interval: default_heartbeat(),
            poll_wait: default_poll_wait(),
            push: Vec::new(),
            poll: Vec::new(),
        }
    }
}

/// One `[[revocation.push]]` receiver.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushReceiver {
    /// The receiver's endpoint (`http://` or `https://`).
    pub url: String,
    /// A file whose content is sent as the `Authorization` header (e.g. `Bearer …`).
    #[serde(default)]
    pub authorization_file: Option<std::path::PathBuf>,
}

fn default_heartbeat() -> Duration {
    Duration::from_secs(5)
}

fn default_poll_wait() -> Duration {
    Duration::from_secs(10)
}

/// The revocations in force: the records in sequence order (what followers are sent)
/// and the one matcher ([`RevocationIndex`]) the issuance path asks.
#[derive(Debug, Default)]
pub(crate) struct Feed {
    /// In sequence order.
    pub(crate) records: Vec<Arc<RevocationRecord>>,
    index: RevocationIndex,
}

/// What a stored record revokes; `None` for a serial the datastore holds in a form
/// that does not parse (never written by this server; logged).
fn revocation_of(r: &RevocationRecord) -> Option<Revocation> {
    Some(match r.kind {
        RevocationKind::X509 => match Serial::parse(&r.value) {
            Ok(serial) => Revocation::X509 { serial, issuer: None, spiffe_id: None },
            Err(e) => {
                tracing::error!(sequence = r.seq, serial = %r.value, error = %e, "ignoring a stored revocation with an unreadable serial");
                return None;
            }
        },
        RevocationKind::Jwt => Revocation::Jwt { jti: r.value.clone(), iss: String::new() },
        RevocationKind::SpiffeId => Revocation::SpiffeId { id: r.value.clone(), cutoff: r.cutoff },
    })
}

impl Feed {
    fn build(records: Vec<Arc<RevocationRecord>>) -> Self {
        let mut index = RevocationIndex::new();
        for r in &records {
            if let Some(rev) = revocation_of(r) {
                index.apply(&rev, r.expires_at);
            }
        }
        Self { records, index }
    }

    /// What revokes the X.509-SVID with `serial` for `id`, valid from `not_before`, at
    /// `now`.
    pub(crate) fn x509_revoked(&self, serial: &Serial, id: &str, not_before: i64, now: i64) -> Option<Match> {
        self.index.x509(&X509Credential { serial, spiffe_id: id, not_before }, now)
    }

    /// What revokes the JWT `jti`, issued at `iat` for `sub` by the acting party
    /// `actor`, at `now`.
    pub(crate) fn jwt_revoked(
        &self,
        jti: &str,
        sub: &str,
        actor: Option<&str>,
        iat: Option<i64>,
        now: i64,
    ) -> Option<Match> {
        let cred =
            JwtCredential { jti: Some(jti).filter(|j| !j.is_empty()), subject: sub, actor, issued_at: iat };
        self.index.jwt(&cred, now)
    }

    /// The records after sequence `seq`.
    pub(crate) fn after(&self, seq: u64) -> &[Arc<RevocationRecord>] {
        let i = self.records.partition_point(|r| r.seq <= seq);
        &self.records[i..]
    }

    /// The highest sequence held (0 when empty).
    pub(crate) fn last_seq(&self) -> u64 {
        self.records.last().map_or(0, |r| r.seq)
    }

    /// The lowest sequence held (0 when empty).
    pub(crate) fn first_seq(&self) -> u64 {
        self.records.first().map_or(0, |r| r.seq)
    }
}

/// The live feed: the indexed revocations and a counter that wakes every follower.
#[derive(Debug)]
pub(crate) struct Revocations {
    feed: ArcSwap<Feed>,
    write: tokio::sync::Mutex<()>,
    seq: watch::Sender<u64>,
}

impl Revocations {
    pub(crate) fn new(records: Vec<RevocationRecord>) -> Self {
        let feed = Feed::build(records.into_iter().map(Arc::new).collect());
        let last = feed.last_seq();
        Self {
            feed: ArcSwap::from_pointee(feed),
            write: tokio::sync::Mutex::new(()),
            seq: watch::channel(last).0,
        }
    }

    /// The current feed.
    pub(crate) fn feed(&self) -> Arc<Feed> {
        self.feed.load_full()
    }

    /// Wakes on every new revocation (the value is the highest sequence).
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.seq.subscribe()
    }

    /// Publishes what the datastore holds beyond the feed's last sequence, whichever
    /// server appended it, in sequence order, and floors the CA's issuance for every
    /// SPIFFE-ID cut-off among them (so no server mints a replacement that is revoked on
    /// arrival). Returns how many records were new. The one way records enter the feed.
    pub(crate) async fn catch_up(
        &self,
        store: &dyn ferrid_store::Store,
        ca: &ferrid_ca::Authority,
        now: i64,
    ) -> Result<usize, ferrid_store::StoreError> {
        let _w = self.write.lock().await;
        let last = self.feed.load().last_seq();
        let new: Vec<RevocationRecord> =
            store.list_revocations(last, now).await?.into_iter().filter(|r| r.seq > last).collect();
        for r in new.iter().filter(|r| r.kind == RevocationKind::SpiffeId) {
            if let Ok(id) = SpiffeId::new(&r.value) {
                ca.set_issue_floor(&id, r.cutoff, r.expires_at);
            }
        }
        let n = new.len();
        if n > 0 {
            self.publish(new);
        }
        Ok(n)
    }

    fn publish(&self, new: Vec<RevocationRecord>) {
        let cur = self.feed.load_full();
        let mut records = cur.records.clone();
        records.extend(new.into_iter().map(Arc::new));
        let feed = Feed::build(records);
        let last = feed.last_seq();
        self.feed.store(Arc::new(feed));
        self.seq.send_replace(last);
    }

    /// Forgets revocations that no longer cover any live credential.
    pub(crate) fn prune(&self, now: i64) {
        let cur = self.feed.load_full();
        if cur.records.iter().any(|r| r.expires_at < now) {
            let kept = cur.records.iter().filter(|r| r.expires_at >= now).cloned().collect();
            self.feed.store(Arc::new(Feed::build(kept)));
        }
    }
}

/// Refuses a caller whose X.509-SVID (the TLS leaf) has been revoked.
pub(crate) fn check_peer(shared: &Shared, leaf: &ferrid_tls::PeerLeaf) -> Result<(), Status> {
    let feed = shared.revocations.feed();
    if feed.records.is_empty() {
        return Ok(());
    }
    let id = &leaf.spiffe_id;
    if let Some(m) = feed.x509_revoked(&leaf.serial, &id.to_string(), leaf.not_before, shared.now()) {
        return Err(Status::permission_denied(format!(
            "the caller's X.509-SVID for {id} (serial {}) has been revoked ({m})",
            leaf.serial
        )));
    }
    Ok(())
}

/// What `ferrid revoke` names.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    Serial(Serial),
    Jti(String),
    Entry(EntryId),
    Agent(SpiffeId),
    Task(String),
    Subject(String),
    SpiffeId(SpiffeId),
}

impl Target {
    pub(crate) fn from_proto(t: Option<apb::revoke_request::Target>) -> Result<Self, Status> {
        use apb::revoke_request::Target as T;
        let nonempty = |what: &str, v: String| {
            let v = v.trim().to_owned();
            if v.is_empty() || v.len() > 1024 || v.chars().any(char::is_control) {
                Err(Status::invalid_argument(format!("{what} must be 1 to 1,024 printable characters")))
            } else {
                Ok(v)
            }
        };
        let id = |what: &str, v: String| {
            SpiffeId::new(v.trim()).map_err(|e| Status::invalid_argument(format!("{what} {v:?}: {e}")))
        };
        Ok(match t.ok_or_else(|| Status::invalid_argument("name what to revoke"))? {
            T::Serial(s) => Self::Serial(Serial::parse(&s).map_err(|e| {
                Status::invalid_argument(format!("serial {s:?} is not a hexadecimal serial number: {e}"))
            })?),
            T::Jti(j) => Self::Jti(nonempty("jti", j)?),
            T::EntryId(e) => Self::Entry(EntryId(nonempty("entry_id", e)?)),
            T::AgentId(a) => Self::Agent(id("agent_id", a)?),
            T::TaskId(t) => Self::Task(nonempty("task_id", t)?),
            T::Subject(s) => Self::Subject(nonempty("subject", s)?),
            T::SpiffeId(s) => Self::SpiffeId(id("spiffe_id", s)?),
        })
    }
}

/// One credential (or SPIFFE ID) to revoke, before it is signed.
#[derive(Debug)]
struct Item {
    kind: RevocationKind,
    value: String,
    spiffe_id: String,
    expires_at: i64,
}

/// Revokes `target`: resolves it, signs one SET per item, stores them all in one
/// transaction, then publishes them. Returns the operation ID and the records.
pub(crate) async fn revoke(
    shared: &Shared,
    target: Target,
    reason: &str,
    who: ferrid_audit::Who,
) -> Result<(String, Vec<RevocationRecord>), Status> {
    if reason.len() > 1024 || reason.chars().any(char::is_control) {
        return Err(Status::invalid_argument("reason must be at most 1,024 printable characters"));
    }
    let now = shared.now();
    // Nothing issued now outlives this.
    let horizon = now + i64::try_from(shared.cfg.raw.svid.max_ttl.as_secs()).unwrap_or(i64::MAX / 4) + 60;
    let store = &shared.store;
    let st = crate::error::store_status;
    let mut items = Vec::new();
    let mut jwt_roots: Vec<String> = Vec::new();
    let cutoff_of = |id: &SpiffeId| Item {
        kind: RevocationKind::SpiffeId,
        value: id.to_string(),
        spiffe_id: id.to_string(),
        expires_at: horizon,
    };
    match &target {
        Target::Serial(s) => {
            let holder = shared
                .list_agents()
                .into_iter()
                .find(|a| Serial::parse(&a.svid_serial).ok().as_ref() == Some(s));
            items.push(Item {
                kind: RevocationKind::X509,
                value: s.to_string(),
                spiffe_id: holder.as_ref().map(|a| a.spiffe_id.to_string()).unwrap_or_default(),
                expires_at: holder.map_or(horizon, |a| a.svid_expires_at),
            });
        }
        Target::Jti(j) => jwt_roots.push(j.clone()),
        Target::Entry(e) => {
            let entry = shared
                .entries()
                .by_id
                .get(e)
                .cloned()
                .ok_or_else(|| Status::not_found(format!("no registration entry {:?}", e.0)))?;
            items.push(cutoff_of(&entry.spiffe_id));
        }
        Target::SpiffeId(id) => {
            if !id.is_member_of(&shared.td) {
                return Err(Status::invalid_argument(format!(
                    "{id} is not in this server's trust domain {}",
                    shared.td
                )));
            }
            items.push(cutoff_of(id));
        }
        Target::Agent(id) => {
            if shared.agent(id).is_none() {
                return Err(Status::not_found(format!("no agent {id}")));
            }
            // Ban first, and take the SVID from the row the ban wrote: a renewal that
            // recorded before the ban committed left its serial there, and none can
            // record after it (`Store::record_agent_svid` refuses a banned agent), so
            // this is the agent's last SVID.
            let agent = shared.ban_agent(id).await.map_err(st)?;
            if !agent.svid_serial.is_empty() && agent.svid_expires_at >= now {
                items.push(Item {
                    kind: RevocationKind::X509,
                    value: canonical(&agent.svid_serial),
                    spiffe_id: id.to_string(),
                    expires_at: agent.svid_expires_at,
                });
            }
            // Everything issued through the agent that is still live, from the audit log.
            for (kind, value, holder, expires_at) in issued_through(shared, id, now, horizon).await? {
                match kind {
                    RevocationKind::Jwt => jwt_roots.push(value),
                    _ => items.push(Item { kind, value, spiffe_id: holder, expires_at }),
                }
            }
        }
        Target::Task(t) => {
            let creds = store.list_task_credentials(t).await.map_err(st)?;
            let live: Vec<_> = creds.into_iter().filter(|c| c.expires_at >= now).collect();
            if live.is_empty() {
                return Err(Status::not_found(format!("no unexpired credential is recorded for task {t:?}")));
            }
            jwt_roots.extend(live.into_iter().map(|c| c.jti));
        }
        Target::Subject(s) => {
            let live = store.delegations_by_subject(s, now).await.map_err(st)?;
            if live.is_empty() {
                return Err(Status::not_found(format!(
                    "no unexpired delegation token has the subject {s:?}"
                )));
            }
            jwt_roots.extend(live.into_iter().map(|d| d.jti));
        }
    }
    // JWTs: the roots and everything exchanged from them.
    if !jwt_roots.is_empty() {
        let descendants = store.delegation_descendants(&jwt_roots, now).await.map_err(st)?;
        let mut seen = HashSet::new();
        let mut known: HashMap<String, (String, i64)> =
            descendants.iter().map(|d| (d.jti.clone(), (d.actor.clone(), d.expires_at))).collect();
        for root in &jwt_roots {
            if !known.contains_key(root) {
                // A root we recorded (a delegation or task token) carries its actor and
                // expiry; any other jti is revoked for as long as anything could live.
                let found = store.get_delegation(root).await.map_err(st)?.filter(|d| d.expires_at >= now);
                known.insert(
                    root.clone(),
                    found.map_or((String::new(), horizon), |d| (d.actor, d.expires_at)),
                );
            }
        }
        for jti in jwt_roots.iter().chain(descendants.iter().map(|d| &d.jti)) {
            if seen.insert(jti.clone()) {
                let (actor, expires_at) = known.get(jti).cloned().unwrap_or((String::new(), horizon));
                items.push(Item {
                    kind: RevocationKind::Jwt,
                    value: jti.clone(),
                    spiffe_id: actor,
                    expires_at,
                });
            }
        }
    }
    // Already revoked items are not sent again.
    let feed = shared.revocations.feed();
    items.retain(|i| {
        !feed
            .records
            .iter()
            .any(|r| r.kind == i.kind && i.kind != RevocationKind::SpiffeId && same_value(r, &i.value))
    });
    if items.is_empty() {
        return Err(Status::already_exists("everything named is already revoked"));
    }
    // A SPIFFE-ID cut-off is a whole second after now: everything issued until the
    // revocation is published is covered, and replacements (floored by the CA) are not.
    let cutoff = now + 1;
    if items.iter().any(|i| i.kind == RevocationKind::SpiffeId) {
        for i in items.iter().filter(|i| i.kind == RevocationKind::SpiffeId) {
            if let Ok(id) = SpiffeId::new(&i.value) {
                shared.ca.set_issue_floor(&id, cutoff, horizon);
            }
        }
        let started = std::time::Instant::now();
        while shared.now() < cutoff && started.elapsed() < CUTOFF_WAIT {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let txn = uuid::Uuid::new_v4().to_string();
    let revoked_at = shared.now();
    let mut records = Vec::with_capacity(items.len());
    for i in items {
        let mut rec = RevocationRecord {
            seq: 0,
            id: uuid::Uuid::new_v4().to_string(),
            txn: txn.clone(),
            kind: i.kind,
            value: i.value,
            spiffe_id: i.spiffe_id,
            cutoff: if i.kind == RevocationKind::SpiffeId { cutoff } else { 0 },
            revoked_at,
            expires_at: i.expires_at.max(revoked_at),
            reason: reason.to_owned(),
            token: String::new(),
        };
        let claims = set_claims(shared, &rec)?;
        rec.token = shared.ca.sign_security_event(claims).map_err(crate::error::ca_status)?.0;
        records.push(rec);
    }
    store.append_revocations(&mut records).await.map_err(st)?;
    // In force here at once, together with anything another server appended before.
    shared.revocations.catch_up(store.as_ref(), &shared.ca, shared.now()).await.map_err(st)?;
    shared.notify();
    shared.metrics.revocations.inc_by(records.len() as u64);
    // The revocation is in force; the record of who did it follows.
    let rec = ferrid_audit::AuditRecord {
        kind: ferrid_audit::RecordKind::Revocation,
        who,
        what: ferrid_audit::What {
            revoked: records.iter().map(|r| format!("{}:{}", r.kind.as_str(), r.value)).collect(),
            ..Default::default()
        },
        why: ferrid_audit::Why {
            reason: Some(format!(
                "{target:?} (operation {txn}){}",
                if reason.is_empty() { String::new() } else { format!(": {reason}") }
            )),
            ..Default::default()
        },
        ..Default::default()
    };
    shared.audit(rec).await.map_err(|s| {
        Status::unavailable(format!(
            "the revocation (operation {txn}) is in force and published, but its audit record failed: {}",
            s.message()
        ))
    })?;
    tracing::warn!(txn = %txn, target = ?target, revoked = records.len(), reason, "revoked");
    Ok((txn, records))
}

/// The credentials the audit log says were issued through `agent` and are still live:
/// (kind, serial or jti, holder, expiry). Without the audit log only the agent's own
/// SVID can be revoked, and the server says so.
async fn issued_through(
    shared: &Shared,
    agent: &SpiffeId,
    now: i64,
    horizon: i64,
) -> Result<Vec<(RevocationKind, String, String, i64)>, Status> {
    let Some(log) = &shared.audit else {
        tracing::warn!(agent = %agent, "audit log disabled: only the agent's own SVID is revoked, not what it was issued");
        return Ok(Vec::new());
    };
    let since = now - (horizon - now);
    let agent = agent.to_string();
    // Streamed: only the agent's own live credentials are kept, however long the log.
    let (out, _) = log
        .fold_since(since, (Vec::new(), HashSet::new()), move |(out, seen), r| {
            if let Some(item) = issued_item(&agent, r, now)
                && seen.insert(item.1.clone())
            {
                out.push(item);
            }
        })
        .await
        .map_err(|e| {
            Status::unavailable(format!("reading the audit log for the agent's credentials: {e}"))
        })?;
    Ok(out)
}

/// What an audit record says was issued through `agent` and is live at `now`, as
/// (kind, value, holder, expires_at).
fn issued_item(
    agent: &str,
    r: ferrid_audit::AuditRecord,
    now: i64,
) -> Option<(RevocationKind, String, String, i64)> {
    if r.kind != ferrid_audit::RecordKind::Issuance || r.who.agent_id.as_deref() != Some(agent) {
        return None;
    }
    let (Some(id), Some(kind), Some(exp)) = (r.what.credential_id, r.what.credential_type, r.what.expires_at)
    else {
        return None;
    };
    if exp < now {
        return None;
    }
    let kind = match kind.as_str() {
        "x509-svid" => RevocationKind::X509,
        "jwt-svid" | "wit-svid" | "delegation-token" | "task-token" => RevocationKind::Jwt,
        _ => return None,
    };
    let value = if kind == RevocationKind::X509 { canonical(&id) } else { id };
    Some((kind, value, r.what.spiffe_id.unwrap_or_default(), exp))
}

/// A serial this server wrote, in canonical form (it is already, unless the datastore
/// holds one from an older version).
fn canonical(serial: &str) -> String {
    Serial::parse(serial).map_or_else(|_| serial.to_owned(), |s| s.to_string())
}

/// Whether a stored record names `value` (serials compared in canonical form).
fn same_value(r: &RevocationRecord, value: &str) -> bool {
    match r.kind {
        RevocationKind::X509 => canonical(&r.value) == value,
        _ => r.value == value,
    }
}

/// The SET claims for a record (docs/revocation.md).
fn set_claims(shared: &Shared, r: &RevocationRecord) -> Result<Map<String, Value>, Status> {
    let iss = shared.server_id.to_string();
    let holder = Some(r.spiffe_id.clone()).filter(|s| !s.is_empty());
    let revocation = match r.kind {
        RevocationKind::X509 => Revocation::X509 {
            serial: Serial::parse(&r.value).map_err(|e| {
                Status::internal(format!(
                    "the recorded serial {:?} of the credential to revoke: {e}",
                    r.value
                ))
            })?,
            issuer: None,
            spiffe_id: holder,
        },
        RevocationKind::Jwt => Revocation::Jwt {
            jti: r.value.clone(),
            iss: shared.cfg.raw.ca.jwt_issuer.clone().unwrap_or_else(|| iss.clone()),
        },
        RevocationKind::SpiffeId => Revocation::SpiffeId { id: r.value.clone(), cutoff: r.cutoff },
    };
    let mut event = SetEvent::new(revocation, Some(r.revoked_at));
    event.reason = Some(r.reason.clone()).filter(|s| !s.is_empty());
    event.txn = Some(r.txn.clone());
    Ok(into_map(event.claims(&iss, &shared.td.id_string(), &r.id, r.revoked_at)))
}

fn into_map(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// A heartbeat SET (SSF verification event) carrying the feed's sequence.
pub(crate) fn heartbeat_set(shared: &Shared, sequence: u64) -> Result<String, Status> {
    let claims = SetEvent::heartbeat(sequence.to_string()).claims(
        &shared.server_id.to_string(),
        &shared.td.id_string(),
        &uuid::Uuid::new_v4().to_string(),
        shared.now(),
    );
    Ok(shared.ca.sign_security_event(into_map(claims)).map_err(crate::error::ca_status)?.0)
}

pub(crate) fn info(r: &RevocationRecord) -> apb::RevocationInfo {
    apb::RevocationInfo {
        sequence: r.seq,
        id: r.id.clone(),
        kind: r.kind.as_str().into(),
        value: r.value.clone(),
        spiffe_id: r.spiffe_id.clone(),
        revoked_at: r.revoked_at,
        expires_at: r.expires_at,
        reason: r.reason.clone(),
        txn: r.txn.clone(),
        cutoff: r.cutoff,
    }
}

pub(crate) fn to_proto(r: &RevocationRecord) -> rpb::Revocation {
    rpb::Revocation { sequence: r.seq, set: r.token.clone(), expires_at: r.expires_at }
}

/// `ferrid.revocation.v1.Revocations` on the node API port.
#[derive(Clone)]
pub(crate) struct WatchService {
    pub(crate) shared: Arc<Shared>,
    pub(crate) stop: watch::Receiver<bool>,
}

type BoxStream<T> = std::pin::Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl rpb::revocations_server::Revocations for WatchService {
    type WatchStream = BoxStream<rpb::WatchResponse>;

    async fn watch(
        &self,
        request: Request<rpb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let leaf = request.extensions().get::<crate::tls::PeerInfo>().and_then(|p| p.leaf.as_deref());
        let auth = request.metadata().get("authorization").map(|v| v.as_bytes());
        let who = crate::follower::authenticate(&self.shared, leaf, auth)?;
        tracing::debug!(follower = %who, "revocation watch opened");
        let after = request.into_inner().after_sequence;
        let shared = self.shared.clone();
        let mut stop = self.stop.clone();
        let mut changes = shared.revocations.subscribe();
        let heartbeat = shared.cfg.raw.revocation.heartbeat_interval;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let mut sent = after;
            let mut first = true;
            loop {
                changes.borrow_and_update();
                let feed = shared.revocations.feed();
                // A client ahead of us (we restarted and lost nothing: the feed is
                // durable, so this means another server's feed) or behind what we keep
                // gets the whole retained set.
                let reset = first && (sent > feed.last_seq() || (sent > 0 && sent + 1 < feed.first_seq()));
                let batch: Vec<rpb::Revocation> = if reset {
                    feed.records.iter().map(|r| to_proto(r)).collect()
                } else {
                    feed.after(sent).iter().map(|r| to_proto(r)).collect()
                };
                sent = feed.last_seq().max(if reset { 0 } else { sent });
                let msg = rpb::WatchResponse {
                    revocations: batch,
                    sequence: feed.last_seq(),
                    server_time: shared.now(),
                    reset,
                };
                first = false;
                if tx.send(Ok(msg)).await.is_err() {
                    return;
                }
                tokio::select! {
                    r = changes.changed() => if r.is_err() { return },
                    () = tokio::time::sleep(heartbeat) => {}
                    () = tx.closed() => return,
                    () = async { let _ = stop.wait_for(|s| *s).await; } => {
                        let _ = tx.send(Err(Status::unavailable("server shutting down"))).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(seq: u64, kind: RevocationKind, value: &str, cutoff: i64) -> Arc<RevocationRecord> {
        Arc::new(RevocationRecord {
            seq,
            id: format!("id-{seq}"),
            txn: "t".into(),
            kind,
            value: value.into(),
            spiffe_id: String::new(),
            cutoff,
            revoked_at: 100,
            expires_at: 1000,
            reason: String::new(),
            token: String::new(),
        })
    }

    fn serial(s: &str) -> Serial {
        Serial::parse(s).unwrap()
    }

    #[test]
    fn feed_checks_serials_jtis_and_cutoffs() {
        let f = Feed::build(vec![
            // Written by an older version: odd-length hex. Still matched.
            rec(1, RevocationKind::X509, "abc", 0),
            rec(2, RevocationKind::Jwt, "j-1", 0),
            rec(3, RevocationKind::SpiffeId, "spiffe://td/web", 200),
            rec(4, RevocationKind::SpiffeId, "spiffe://td/web", 150),
            rec(5, RevocationKind::X509, "not hex", 0),
        ]);
        let now = 500;
        assert!(f.x509_revoked(&serial("0abc"), "spiffe://td/x", 500, now).is_some());
        assert!(f.x509_revoked(&serial("0ABC"), "spiffe://td/x", 500, now).is_some());
        assert!(f.x509_revoked(&serial("0abd"), "spiffe://td/x", 10, now).is_none());
        assert!(
            f.x509_revoked(&serial("ffff"), "spiffe://td/web", 199, now).is_some(),
            "issued before the later cut-off"
        );
        assert!(
            f.x509_revoked(&serial("ffff"), "spiffe://td/web", 200, now).is_none(),
            "issued at the cut-off"
        );
        assert!(f.x509_revoked(&serial("0abc"), "spiffe://td/x", 500, 1001).is_none(), "after its expiry");
        assert!(f.jwt_revoked("j-1", "alice", None, Some(999), now).is_some());
        assert!(f.jwt_revoked("j-2", "alice", Some("spiffe://td/api"), Some(10), now).is_none());
        assert!(
            f.jwt_revoked("j-2", "alice", Some("spiffe://td/web"), Some(199), now).is_some(),
            "the actor's ID was cut off"
        );
        assert!(f.jwt_revoked("j-2", "spiffe://td/web", None, Some(10), now).is_some());
        assert!(f.jwt_revoked("j-2", "spiffe://td/web", None, Some(200), now).is_none());
        assert!(
            f.jwt_revoked("j-2", "spiffe://td/web", None, None, now).is_some(),
            "no iat: before the cut-off"
        );
        assert!(f.jwt_revoked("", "alice", None, Some(1), now).is_none(), "an empty jti matches nothing");
        assert_eq!(f.after(0).len(), 5);
        assert_eq!(f.after(2).iter().map(|r| r.seq).collect::<Vec<_>>(), [3, 4, 5]);
        assert!(f.after(5).is_empty());
        assert_eq!((f.first_seq(), f.last_seq()), (1, 5));
    }

    #[test]
    fn serial_targets_take_any_spelling() {
        use apb::revoke_request::Target as T;
        for spelling in ["0F:34:43:3B", "f34433b", "0x0f34433b", "000F34433b"] {
            let Target::Serial(s) = Target::from_proto(Some(T::Serial(spelling.into()))).unwrap() else {
                panic!("not a serial target");
            };
            assert_eq!(s.as_str(), "0f34433b", "{spelling:?}");
        }
        for bad in ["", "xyz", "12 34", &"a".repeat(41)] {
            let e = Target::from_proto(Some(T::Serial(bad.into()))).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{bad:?}");
            assert!(e.message().contains("is not a hexadecimal serial number"), "{}", e.message());
        }
    }
}
