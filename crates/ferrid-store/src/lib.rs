//! The datastore seam ([`Store`]) and its embedded default, [`SqliteStore`]: a SQLite
//! file under the server's data directory, created and migrated on first open.
//!
//! Every write is one transaction, so a crash never leaves a half-written entry, agent
//! or token. Writers are serialised inside the process (SQLite has one writer anyway);
//! readers run concurrently under WAL.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use ferrid_types::{AgentRecord, EntryId, JoinTokenRecord, RegistrationEntry, Selector, SpiffeId};
use futures::TryStreamExt as _;
use sqlx::postgres::PgRow;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite};
use tokio::sync::Mutex;

#[cfg(any(test, feature = "contract-tests"))]
pub mod contract;
pub mod postgres;

pub use postgres::{PgSettings, PgSslMode, PgStore, redact_url};

/// Datastore errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The record does not exist.
    #[error("{what} not found")]
    NotFound {
        /// What was looked for.
        what: String,
    },
    /// A unique record already exists (duplicate entry, replayed key, token id).
    #[error("{0}")]
    AlreadyExists(String),
    /// The write conflicts with the current state (stale revision, used token).
    #[error("{0}")]
    Conflict(String),
    /// The agent is banned (evicted): nothing was recorded for it.
    #[error("agent {0} has been evicted")]
    Banned(SpiffeId),
    /// The backend failed, or returned data that does not validate.
    #[error("datastore error: {0}")]
    Backend(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed => Self::Backend(format!("the database cannot be reached: {e}")),
            e => Self::Backend(e.to_string()),
        }
    }
}

fn not_found(what: impl Into<String>) -> StoreError {
    StoreError::NotFound { what: what.into() }
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

/// Filters for [`Store::list_entries`]; those given must all match.
#[derive(Debug, Clone, Default)]
pub struct EntryFilter {
    /// Entries with this SPIFFE ID.
    pub spiffe_id: Option<SpiffeId>,
    /// Entries with this parent.
    pub parent_id: Option<SpiffeId>,
    /// Entries that have this selector.
    pub selector: Option<Selector>,
}

/// A credential issued for a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskCredential {
    /// The task's ID, as the workload named it.
    pub task_id: String,
    /// The credential's `jti`.
    pub jti: String,
    /// The task's purpose, as the workload stated it.
    pub purpose: String,
    /// The workload (actor) the credential was issued to.
    pub spiffe_id: String,
    /// The credential's `sub` (the principal acted for, or the workload itself).
    pub subject: String,
    /// Unix time of issue.
    pub issued_at: i64,
    /// Unix time of expiry.
    pub expires_at: i64,
}

/// What a revocation covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevocationKind {
    /// One X.509-SVID, by serial (lowercase hex).
    X509,
    /// One JWT, by `jti`.
    Jwt,
    /// Every credential for a SPIFFE ID issued before the cut-off.
    SpiffeId,
}

impl RevocationKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::X509 => "x509",
            Self::Jwt => "jwt",
            Self::SpiffeId => "spiffe_id",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        match s {
            "x509" => Ok(Self::X509),
            "jwt" => Ok(Self::Jwt),
            "spiffe_id" => Ok(Self::SpiffeId),
            other => Err(StoreError::Backend(format!("unknown revocation kind {other:?}"))),
        }
    }
}

/// One revocation in the feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationRecord {
    /// Position in the feed, from 1; assigned by [`Store::append_revocations`].
    pub seq: u64,
    /// The SET's `jti`.
    pub id: String,
    /// The revoke operation this came from.
    pub txn: String,
    /// What is revoked.
    pub kind: RevocationKind,
    /// The serial, `jti` or SPIFFE ID.
    pub value: String,
    /// The holder's SPIFFE ID when known, else empty.
    pub spiffe_id: String,
    /// For [`RevocationKind::SpiffeId`]: credentials issued before this Unix time are
    /// revoked. 0 otherwise.
    pub cutoff: i64,
    /// Unix time of the revocation.
    pub revoked_at: i64,
    /// Unix time after which every credential it covers has expired.
    pub expires_at: i64,
    /// The operator's reason, possibly empty.
    pub reason: String,
    /// The signed Security Event Token.
    pub token: String,
}

/// What a change in the feed is about; followers re-read the current state of the
/// record it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ChangeKind {
    /// A registration entry (key: its ID) was created, updated or deleted.
    Entry,
    /// An agent (key: its SPIFFE ID) was attested, renewed or banned.
    Agent,
    /// Revocations were appended (key: empty; read them by their own sequence).
    Revocation,
}

impl ChangeKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Entry => "entry",
            Self::Agent => "agent",
            Self::Revocation => "revocation",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        match s {
            "entry" => Ok(Self::Entry),
            "agent" => Ok(Self::Agent),
            "revocation" => Ok(Self::Revocation),
            other => Err(StoreError::Backend(format!("unknown change kind {other:?}"))),
        }
    }
}

/// One row of the change feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Position in the feed, from 1, in commit order.
    pub seq: u64,
    /// What changed.
    pub kind: ChangeKind,
    /// Which record (see [`ChangeKind`]).
    pub key: String,
}

fn change_row(r: &impl Columns) -> Result<Change, StoreError> {
    let seq = r.int("seq")?;
    Ok(Change {
        seq: u64::try_from(seq)
            .map_err(|_| StoreError::Backend(format!("negative change sequence {seq}")))?,
        kind: ChangeKind::parse(&r.text("kind")?)?,
        key: r.text("key")?,
    })
}

/// A token minted by token exchange (or a task token), with the token it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelegationRecord {
    /// The token's `jti`.
    pub jti: String,
    /// The `jti` of the subject token it was exchanged from, when that was ours.
    pub parent_jti: Option<String>,
    /// The principal (`sub`).
    pub subject: String,
    /// The acting workload's SPIFFE ID.
    pub actor: String,
    /// The task, when bound to one.
    pub task_id: Option<String>,
    /// Unix time of issue.
    pub issued_at: i64,
    /// Unix time of expiry.
    pub expires_at: i64,
}

/// What the server keeps. One call is one transaction.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// Inserts a new entry (ID and `created_at` set by the caller) at revision 1.
    /// `AlreadyExists` when another entry has the same SPIFFE ID, parent and selector set.
    async fn create_entry(&self, entry: &RegistrationEntry) -> Result<RegistrationEntry, StoreError>;
    /// Inserts several new entries in one transaction (one durable commit): one result
    /// per entry, in order. An entry that would be a duplicate (of a stored one or of an
    /// earlier one in the batch) gets `AlreadyExists` and the others are still created.
    /// `Err` only when the batch as a whole failed, and then nothing was written.
    async fn create_entries(
        &self,
        entries: &[RegistrationEntry],
    ) -> Result<Vec<Result<RegistrationEntry, StoreError>>, StoreError>;
    /// Replaces an entry's fields and bumps its revision; `Conflict` when
    /// `expected_revision` is given and stale; `NotFound` when absent.
    async fn update_entry(
        &self,
        entry: &RegistrationEntry,
        expected_revision: Option<i64>,
    ) -> Result<RegistrationEntry, StoreError>;
    /// Deletes an entry and returns it.
    async fn delete_entry(&self, id: &EntryId) -> Result<RegistrationEntry, StoreError>;
    /// One entry.
    async fn get_entry(&self, id: &EntryId) -> Result<Option<RegistrationEntry>, StoreError>;
    /// Entries matching `filter`, sorted by SPIFFE ID then ID.
    async fn list_entries(&self, filter: &EntryFilter) -> Result<Vec<RegistrationEntry>, StoreError>;
    /// Up to `limit` entries with an ID above `after` (all when `None`), sorted by ID: one
    /// page of a listing that never holds the whole table in one query or transaction.
    async fn list_entries_page(
        &self,
        after: Option<&EntryId>,
        limit: u32,
    ) -> Result<Vec<RegistrationEntry>, StoreError>;
    /// Stores a new join token; `AlreadyExists` on a duplicate ID.
    async fn create_join_token(&self, token: &JoinTokenRecord) -> Result<(), StoreError>;
    /// One join token.
    async fn get_join_token(&self, id: &str) -> Result<Option<JoinTokenRecord>, StoreError>;
    /// Atomically marks a token used at `now`; `Conflict` if it already was.
    async fn consume_join_token(&self, id: &str, now: i64) -> Result<JoinTokenRecord, StoreError>;
    /// Deletes tokens that expired before `now`; returns how many.
    async fn prune_join_tokens(&self, now: i64) -> Result<u64, StoreError>;
    /// Inserts or replaces an agent. A ban is monotonic: a stored `banned = true` stays
    /// true whatever `agent.banned` says.
    async fn upsert_agent(&self, agent: &AgentRecord) -> Result<(), StoreError>;
    /// Records `agent` with the SVID just minted for it, unless the stored agent is
    /// banned: in one conditional statement, so an eviction that commits first always
    /// wins. `Banned` (and nothing written) when it is banned, or when `agent.banned`.
    async fn record_agent_svid(&self, agent: &AgentRecord) -> Result<(), StoreError>;
    /// One agent.
    async fn get_agent(&self, id: &SpiffeId) -> Result<Option<AgentRecord>, StoreError>;
    /// Every agent, sorted by SPIFFE ID.
    async fn list_agents(&self) -> Result<Vec<AgentRecord>, StoreError>;
    /// Marks an agent banned and returns it.
    async fn ban_agent(&self, id: &SpiffeId) -> Result<AgentRecord, StoreError>;
    /// Records a single-use key until `expires_at`; `AlreadyExists` while an unexpired
    /// record with that key exists.
    async fn record_replay(&self, key: &str, expires_at: i64, now: i64) -> Result<(), StoreError>;
    /// Records a credential issued for a task.
    async fn record_task_credential(&self, c: &TaskCredential) -> Result<(), StoreError>;
    /// Every credential recorded for `task_id`, oldest first.
    async fn list_task_credentials(&self, task_id: &str) -> Result<Vec<TaskCredential>, StoreError>;
    /// Appends revocations to the feed in one transaction, assigning each its sequence
    /// (written into the records); `AlreadyExists` when an `id` is taken.
    async fn append_revocations(&self, revs: &mut [RevocationRecord]) -> Result<(), StoreError>;
    /// Revocations with a sequence above `after` that expire at or after `now`, in order.
    async fn list_revocations(&self, after: u64, now: i64) -> Result<Vec<RevocationRecord>, StoreError>;
    /// Deletes revocations that expired before `now`; returns how many.
    async fn prune_revocations(&self, now: i64) -> Result<u64, StoreError>;
    /// Records a delegation token; `AlreadyExists` on a duplicate `jti`.
    async fn record_delegation(&self, d: &DelegationRecord) -> Result<(), StoreError>;
    /// One delegation record.
    async fn get_delegation(&self, jti: &str) -> Result<Option<DelegationRecord>, StoreError>;
    /// Every unexpired token exchanged, directly or through others, from one of `roots`
    /// (not the roots themselves).
    async fn delegation_descendants(
        &self,
        roots: &[String],
        now: i64,
    ) -> Result<Vec<DelegationRecord>, StoreError>;
    /// Every unexpired delegation token whose principal is `subject`.
    async fn delegations_by_subject(
        &self,
        subject: &str,
        now: i64,
    ) -> Result<Vec<DelegationRecord>, StoreError>;
    /// Deletes delegation records that expired before `now`; returns how many.
    async fn prune_delegations(&self, now: i64) -> Result<u64, StoreError>;
    /// The CA's persisted state (an opaque JSON document).
    async fn get_ca_state(&self) -> Result<Option<Vec<u8>>, StoreError>;
    /// Replaces the CA's persisted state.
    async fn put_ca_state(&self, state: &[u8]) -> Result<(), StoreError>;
    /// Up to `limit` changes with a sequence above `after`, in order. Every write to
    /// entries, agents and revocations records one in the same transaction.
    async fn list_changes(&self, after: u64, limit: u32) -> Result<Vec<Change>, StoreError>;
    /// The sequence of the latest change ever recorded (0 for none), pruned or not.
    async fn last_change(&self) -> Result<u64, StoreError>;
    /// Deletes all but the newest `keep` changes; returns how many.
    async fn prune_changes(&self, keep: u64) -> Result<u64, StoreError>;
    /// A wake-up for changes committed by other processes: its value moves when one
    /// may have arrived. `None` when the backend has no such signal (then followers
    /// rely on tailing by sequence alone).
    fn change_wakeups(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }
}

/// Typed column reads, the same for every backend's rows, so that each record is
/// decoded (and validated) in one place.
trait Columns {
    fn text(&self, col: &str) -> Result<String, StoreError>;
    fn opt_text(&self, col: &str) -> Result<Option<String>, StoreError>;
    fn int(&self, col: &str) -> Result<i64, StoreError>;
    fn opt_int(&self, col: &str) -> Result<Option<i64>, StoreError>;
    fn flag(&self, col: &str) -> Result<bool, StoreError>;
}

macro_rules! columns {
    ($row:ty) => {
        impl Columns for $row {
            fn text(&self, col: &str) -> Result<String, StoreError> {
                Ok(self.try_get(col)?)
            }
            fn opt_text(&self, col: &str) -> Result<Option<String>, StoreError> {
                Ok(self.try_get(col)?)
            }
            fn int(&self, col: &str) -> Result<i64, StoreError> {
                Ok(self.try_get(col)?)
            }
            fn opt_int(&self, col: &str) -> Result<Option<i64>, StoreError> {
                Ok(self.try_get(col)?)
            }
            fn flag(&self, col: &str) -> Result<bool, StoreError> {
                Ok(self.try_get(col)?)
            }
        }
    };
}
columns!(SqliteRow);
columns!(PgRow);

fn delegation_row(r: &impl Columns) -> Result<DelegationRecord, StoreError> {
    Ok(DelegationRecord {
        jti: r.text("jti")?,
        parent_jti: r.opt_text("parent_jti")?,
        subject: r.text("subject")?,
        actor: r.text("actor")?,
        task_id: r.opt_text("task_id")?,
        issued_at: r.int("issued_at")?,
        expires_at: r.int("expires_at")?,
    })
}

fn task_credential_row(r: &impl Columns) -> Result<TaskCredential, StoreError> {
    Ok(TaskCredential {
        task_id: r.text("task_id")?,
        jti: r.text("jti")?,
        purpose: r.text("purpose")?,
        spiffe_id: r.text("spiffe_id")?,
        subject: r.text("subject")?,
        issued_at: r.int("issued_at")?,
        expires_at: r.int("expires_at")?,
    })
}

fn revocation_row(r: &impl Columns) -> Result<RevocationRecord, StoreError> {
    let seq = r.int("seq")?;
    Ok(RevocationRecord {
        seq: u64::try_from(seq).map_err(|_| StoreError::Backend(format!("negative sequence {seq}")))?,
        id: r.text("id")?,
        txn: r.text("txn")?,
        kind: RevocationKind::parse(&r.text("kind")?)?,
        value: r.text("value")?,
        spiffe_id: r.text("spiffe_id")?,
        cutoff: r.int("cutoff")?,
        revoked_at: r.int("revoked_at")?,
        expires_at: r.int("expires_at")?,
        reason: r.text("reason")?,
        token: r.text("token")?,
    })
}

/// The embedded SQLite datastore.
#[derive(Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    write: Mutex<()>,
    /// Test hook: a listing stops between its two reads, inside its transaction, says
    /// so on the first channel and goes on when the second one fires.
    #[cfg(test)]
    pause_listing:
        std::sync::Mutex<Option<(tokio::sync::oneshot::Sender<()>, tokio::sync::oneshot::Receiver<()>)>>,
}

/// How long a connection waits on a lock held by another process before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

impl SqliteStore {
    /// Opens (creating and migrating if needed) the database at `path`. The parent
    /// directory is created with mode 0700 and the file restricted to 0600. WAL journal
    /// with `synchronous = FULL`: a committed write survives power loss.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Backend(format!("creating {}: {e}", dir.display())))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| StoreError::Backend(format!("restricting {}: {e}", dir.display())))?;
        }
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        // Every write transaction starts with BEGIN IMMEDIATE: a deferred one that reads
        // first and then writes cannot wait for the lock in WAL mode (SQLite answers
        // SQLITE_BUSY at once instead of using busy_timeout) when another connection
        // committed in between.
        let pool = SqlitePoolOptions::new().max_connections(4).connect_with(opts).await?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| StoreError::Backend(format!("restricting {}: {e}", path.display())))?;
        Self::migrate(pool).await
    }

    /// A private in-memory database (for tests).
    pub async fn in_memory() -> Result<Self, StoreError> {
        let opts = SqliteConnectOptions::from_str("sqlite::memory:")?.foreign_keys(true);
        // One connection: every in-memory connection would be its own database.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(opts)
            .await?;
        Self::migrate(pool).await
    }

    async fn migrate(pool: SqlitePool) -> Result<Self, StoreError> {
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .map_err(|e| StoreError::Backend(format!("migration: {e}")))?;
        Ok(Self {
            pool,
            write: Mutex::new(()),
            #[cfg(test)]
            pause_listing: std::sync::Mutex::new(None),
        })
    }
}

/// Canonical, order-insensitive form of a selector set (selectors cannot hold control
/// characters, so a newline separates them unambiguously).
fn fingerprint(selectors: &[Selector]) -> String {
    let mut v: Vec<String> = selectors.iter().map(ToString::to_string).collect();
    v.sort();
    v.dedup();
    v.join("\n")
}

fn bad(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("corrupt {what} in datastore: {e}"))
}

fn json<T: serde::Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Backend(e.to_string()))
}

fn entry_from_row(row: &impl Columns, selectors: Vec<Selector>) -> Result<RegistrationEntry, StoreError> {
    let ttl =
        |col: &str| -> Result<u32, StoreError> { u32::try_from(row.int(col)?).map_err(|e| bad(col, e)) };
    Ok(RegistrationEntry {
        spiffe_id: SpiffeId::new(&row.text("spiffe_id")?).map_err(|e| bad("spiffe_id", e))?,
        parent_id: SpiffeId::new(&row.text("parent_id")?).map_err(|e| bad("parent_id", e))?,
        selectors,
        x509_svid_ttl: ttl("x509_svid_ttl")?,
        jwt_svid_ttl: ttl("jwt_svid_ttl")?,
        dns_names: serde_json::from_str(&row.text("dns_names")?).map_err(|e| bad("dns_names", e))?,
        hint: row.text("hint")?,
        admin: row.flag("admin")?,
        expires_at: row.int("expires_at")?,
        metadata: serde_json::from_str(&row.text("metadata")?).map_err(|e| bad("metadata", e))?,
        revision: row.int("revision")?,
        created_at: row.int("created_at")?,
        id: EntryId(row.text("id")?),
    })
}

fn agent_from_row(row: &impl Columns) -> Result<AgentRecord, StoreError> {
    let sels: Vec<String> =
        serde_json::from_str(&row.text("selectors")?).map_err(|e| bad("agent selectors", e))?;
    Ok(AgentRecord {
        spiffe_id: SpiffeId::new(&row.text("spiffe_id")?).map_err(|e| bad("agent spiffe_id", e))?,
        attestor: row.text("attestor")?,
        selectors: sels
            .iter()
            .map(|s| s.parse().map_err(|e| bad("agent selector", e)))
            .collect::<Result<_, _>>()?,
        svid_serial: row.text("svid_serial")?,
        svid_expires_at: row.int("svid_expires_at")?,
        can_reattest: row.flag("can_reattest")?,
        banned: row.flag("banned")?,
        attested_at: row.int("attested_at")?,
        last_seen: row.int("last_seen")?,
    })
}

fn token_from_row(row: &impl Columns) -> Result<JoinTokenRecord, StoreError> {
    Ok(JoinTokenRecord {
        id: row.text("id")?,
        secret_sha256: row.text("secret_sha256")?,
        expires_at: row.int("expires_at")?,
        used_at: row.opt_int("used_at")?,
        created_at: row.int("created_at")?,
    })
}

/// One page of entries from its entry rows and the selector rows of the same IDs.
fn entries_page(
    rows: &[impl Columns],
    selector_rows: &[impl Columns],
) -> Result<Vec<RegistrationEntry>, StoreError> {
    let mut selectors: HashMap<String, Vec<Selector>> = HashMap::new();
    for r in selector_rows {
        let s = Selector::new(r.text("type")?, r.text("value")?).map_err(|e| bad("selector", e))?;
        selectors.entry(r.text("entry_id")?).or_default().push(s);
    }
    rows.iter()
        .map(|row| entry_from_row(row, selectors.remove(&row.text("id")?).unwrap_or_default()))
        .collect()
}

/// Appends the WHERE clause of `filter` over table alias `e`.
fn push_filter<'a, DB: sqlx::Database>(q: &mut QueryBuilder<'a, DB>, filter: &'a EntryFilter)
where
    String: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    q.push(" WHERE 1 = 1");
    if let Some(id) = &filter.spiffe_id {
        q.push(" AND e.spiffe_id = ").push_bind(id.to_string());
    }
    if let Some(id) = &filter.parent_id {
        q.push(" AND e.parent_id = ").push_bind(id.to_string());
    }
    if let Some(s) = &filter.selector {
        q.push(" AND e.id IN (SELECT entry_id FROM entry_selectors WHERE type = ")
            .push_bind(s.kind.clone())
            .push(" AND value = ")
            .push_bind(s.value.clone())
            .push(")");
    }
}

async fn insert_selectors(
    tx: &mut sqlx::Transaction<'_, Sqlite>,
    id: &str,
    selectors: &[Selector],
) -> Result<(), StoreError> {
    let mut seen = std::collections::BTreeSet::new();
    for s in selectors {
        if seen.insert(s) {
            sqlx::query("INSERT INTO entry_selectors (entry_id, type, value) VALUES (?, ?, ?)")
                .bind(id)
                .bind(&s.kind)
                .bind(&s.value)
                .execute(&mut **tx)
                .await?;
        }
    }
    Ok(())
}

/// Inserts one entry row and its selectors inside `tx`.
async fn insert_entry(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    entry: &RegistrationEntry,
) -> Result<(), StoreError> {
    let r = sqlx::query(
        "INSERT INTO entries (id, spiffe_id, parent_id, fingerprint, x509_svid_ttl, jwt_svid_ttl, dns_names, \
         hint, admin, expires_at, metadata, revision, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?)",
    )
    .bind(&entry.id.0)
    .bind(entry.spiffe_id.to_string())
    .bind(entry.parent_id.to_string())
    .bind(fingerprint(&entry.selectors))
    .bind(i64::from(entry.x509_svid_ttl))
    .bind(i64::from(entry.jwt_svid_ttl))
    .bind(json(&entry.dns_names)?)
    .bind(&entry.hint)
    .bind(entry.admin)
    .bind(entry.expires_at)
    .bind(json(&entry.metadata)?)
    .bind(entry.created_at)
    .execute(&mut **tx)
    .await;
    match r {
        Err(e) if is_unique_violation(&e) => return Err(duplicate(entry)),
        r => r?,
    };
    insert_selectors(tx, &entry.id.0, &entry.selectors).await
}

/// Inserts `a` or updates its row (with `condition` on the update); the ban never goes
/// back to false. Returns how many rows were written.
/// Records a change in the feed, inside the transaction that made it.
async fn record_change(
    conn: &mut sqlx::SqliteConnection,
    kind: ChangeKind,
    key: &str,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO changes (kind, key) VALUES (?, ?)")
        .bind(kind.as_str())
        .bind(key)
        .execute(conn)
        .await?;
    Ok(())
}

async fn write_agent(
    conn: &mut sqlx::SqliteConnection,
    a: &AgentRecord,
    condition: &str,
) -> Result<u64, StoreError> {
    let sels: Vec<String> = a.selectors.iter().map(ToString::to_string).collect();
    let sql = format!(
        "INSERT INTO agents (spiffe_id, attestor, selectors, svid_serial, svid_expires_at, can_reattest, banned, \
         attested_at, last_seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (spiffe_id) DO UPDATE SET \
         attestor = excluded.attestor, selectors = excluded.selectors, svid_serial = excluded.svid_serial, \
         svid_expires_at = excluded.svid_expires_at, can_reattest = excluded.can_reattest, \
         banned = MAX(agents.banned, excluded.banned), attested_at = excluded.attested_at, \
         last_seen = excluded.last_seen{condition}"
    );
    let done = sqlx::query(&sql)
        .bind(a.spiffe_id.to_string())
        .bind(&a.attestor)
        .bind(json(&sels)?)
        .bind(&a.svid_serial)
        .bind(a.svid_expires_at)
        .bind(a.can_reattest)
        .bind(a.banned)
        .bind(a.attested_at)
        .bind(a.last_seen)
        .execute(conn)
        .await?;
    Ok(done.rows_affected())
}

fn duplicate(e: &RegistrationEntry) -> StoreError {
    StoreError::AlreadyExists(format!(
        "an entry for {} under parent {} with the same selectors already exists",
        e.spiffe_id, e.parent_id
    ))
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_entry(&self, entry: &RegistrationEntry) -> Result<RegistrationEntry, StoreError> {
        let _w = self.write.lock().await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        insert_entry(&mut tx, entry).await?;
        record_change(&mut tx, ChangeKind::Entry, &entry.id.0).await?;
        tx.commit().await?;
        Ok(RegistrationEntry { revision: 1, ..entry.clone() })
    }

    async fn create_entries(
        &self,
        entries: &[RegistrationEntry],
    ) -> Result<Vec<Result<RegistrationEntry, StoreError>>, StoreError> {
        let _w = self.write.lock().await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let mut out = Vec::with_capacity(entries.len());
        for entry in entries {
            // A refused INSERT (a uniqueness violation) aborts only its own statement,
            // not the transaction, so the rest of the batch goes on; its selectors are
            // inserted only after the entry row succeeded.
            out.push(match insert_entry(&mut tx, entry).await {
                Ok(()) => {
                    record_change(&mut tx, ChangeKind::Entry, &entry.id.0).await?;
                    Ok(RegistrationEntry { revision: 1, ..entry.clone() })
                }
                Err(e @ StoreError::AlreadyExists(_)) => Err(e),
                Err(e) => return Err(e),
            });
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn update_entry(
        &self,
        entry: &RegistrationEntry,
        expected_revision: Option<i64>,
    ) -> Result<RegistrationEntry, StoreError> {
        let _w = self.write.lock().await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let row = sqlx::query("SELECT revision, created_at FROM entries WHERE id = ?")
            .bind(&entry.id.0)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| not_found(format!("entry {}", entry.id)))?;
        let current: i64 = row.try_get("revision")?;
        let created_at: i64 = row.try_get("created_at")?;
        if let Some(expected) = expected_revision
            && expected != current
        {
            return Err(StoreError::Conflict(format!(
                "entry {} is at revision {current}, not {expected}; fetch it again and retry",
                entry.id
            )));
        }
        let revision = current + 1;
        let r = sqlx::query(
            "UPDATE entries SET spiffe_id = ?, parent_id = ?, fingerprint = ?, x509_svid_ttl = ?, jwt_svid_ttl = ?, \
             dns_names = ?, hint = ?, admin = ?, expires_at = ?, metadata = ?, revision = ? WHERE id = ?",
        )
        .bind(entry.spiffe_id.to_string())
        .bind(entry.parent_id.to_string())
        .bind(fingerprint(&entry.selectors))
        .bind(i64::from(entry.x509_svid_ttl))
        .bind(i64::from(entry.jwt_svid_ttl))
        .bind(json(&entry.dns_names)?)
        .bind(&entry.hint)
        .bind(entry.admin)
        .bind(entry.expires_at)
        .bind(json(&entry.metadata)?)
        .bind(revision)
        .bind(&entry.id.0)
        .execute(&mut *tx)
        .await;
        match r {
            Err(e) if is_unique_violation(&e) => return Err(duplicate(entry)),
            r => r?,
        };
        sqlx::query("DELETE FROM entry_selectors WHERE entry_id = ?")
            .bind(&entry.id.0)
            .execute(&mut *tx)
            .await?;
        insert_selectors(&mut tx, &entry.id.0, &entry.selectors).await?;
        record_change(&mut tx, ChangeKind::Entry, &entry.id.0).await?;
        tx.commit().await?;
        Ok(RegistrationEntry { revision, created_at, ..entry.clone() })
    }

    async fn delete_entry(&self, id: &EntryId) -> Result<RegistrationEntry, StoreError> {
        let _w = self.write.lock().await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let entry = {
            let row = sqlx::query("SELECT * FROM entries WHERE id = ?")
                .bind(&id.0)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or_else(|| not_found(format!("entry {id}")))?;
            let sels = sqlx::query(
                "SELECT type, value FROM entry_selectors WHERE entry_id = ? ORDER BY type, value",
            )
            .bind(&id.0)
            .fetch_all(&mut *tx)
            .await?;
            let sels = sels
                .iter()
                .map(|r| {
                    Selector::new(r.get::<String, _>("type"), r.get::<String, _>("value"))
                        .map_err(|e| bad("selector", e))
                })
                .collect::<Result<_, _>>()?;
            entry_from_row(&row, sels)?
        };
        sqlx::query("DELETE FROM entries WHERE id = ?").bind(&id.0).execute(&mut *tx).await?;
        record_change(&mut tx, ChangeKind::Entry, &id.0).await?;
        tx.commit().await?;
        Ok(entry)
    }

    async fn get_entry(&self, id: &EntryId) -> Result<Option<RegistrationEntry>, StoreError> {
        let Some(row) =
            sqlx::query("SELECT * FROM entries WHERE id = ?").bind(&id.0).fetch_optional(&self.pool).await?
        else {
            return Ok(None);
        };
        let sels =
            sqlx::query("SELECT type, value FROM entry_selectors WHERE entry_id = ? ORDER BY type, value")
                .bind(&id.0)
                .fetch_all(&self.pool)
                .await?
                .iter()
                .map(|r| {
                    Selector::new(r.get::<String, _>("type"), r.get::<String, _>("value"))
                        .map_err(|e| bad("selector", e))
                })
                .collect::<Result<_, _>>()?;
        entry_from_row(&row, sels).map(Some)
    }

    async fn list_entries(&self, filter: &EntryFilter) -> Result<Vec<RegistrationEntry>, StoreError> {
        // Two queries in one read transaction (a consistent snapshot), not one per entry.
        // A deferred transaction that only reads never takes the write lock: in WAL mode
        // writers go on while a large listing runs.
        let mut tx = self.pool.begin().await?;
        let mut q = QueryBuilder::<Sqlite>::new(
            "SELECT s.entry_id, s.type, s.value FROM entry_selectors s JOIN entries e ON e.id = s.entry_id",
        );
        push_filter(&mut q, filter);
        q.push(" ORDER BY s.entry_id, s.type, s.value");
        // Rows are streamed, not collected: at 100,000 entries a collected result set
        // is a transient peak that the allocator keeps resident after start-up.
        let mut selectors: HashMap<String, Vec<Selector>> = HashMap::new();
        {
            let mut rows = q.build().fetch(&mut *tx);
            while let Some(r) = rows.try_next().await? {
                let s = Selector::new(r.try_get::<String, _>("type")?, r.try_get::<String, _>("value")?)
                    .map_err(|e| bad("selector", e))?;
                selectors.entry(r.try_get("entry_id")?).or_default().push(s);
            }
        }
        #[cfg(test)]
        let paused = self.pause_listing.lock().unwrap_or_else(|e| e.into_inner()).take();
        #[cfg(test)]
        if let Some((arrived, resume)) = paused {
            let _ = arrived.send(());
            let _ = resume.await;
        }
        let mut q = QueryBuilder::<Sqlite>::new("SELECT e.* FROM entries e");
        push_filter(&mut q, filter);
        q.push(" ORDER BY e.spiffe_id, e.id");
        let mut out = Vec::new();
        {
            let mut rows = q.build().fetch(&mut *tx);
            while let Some(row) = rows.try_next().await? {
                let id: String = row.try_get("id")?;
                out.push(entry_from_row(&row, selectors.remove(&id).unwrap_or_default())?);
            }
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn list_entries_page(
        &self,
        after: Option<&EntryId>,
        limit: u32,
    ) -> Result<Vec<RegistrationEntry>, StoreError> {
        let after = after.map(|a| a.0.as_str()).unwrap_or("");
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query("SELECT * FROM entries WHERE id > ? ORDER BY id LIMIT ?")
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await?;
        let selector_rows = match rows.last() {
            Some(last) => {
                let last: String = last.try_get("id")?;
                sqlx::query(
                    "SELECT entry_id, type, value FROM entry_selectors WHERE entry_id > ? AND entry_id <= ? ORDER BY entry_id, type, value",
                )
                    .bind(after)
                    .bind(last)
                    .fetch_all(&mut *tx)
                    .await?
            }
            None => Vec::new(),
        };
        tx.commit().await?;
        entries_page(&rows, &selector_rows)
    }

    async fn create_join_token(&self, t: &JoinTokenRecord) -> Result<(), StoreError> {
        let _w = self.write.lock().await;
        let r = sqlx::query("INSERT INTO join_tokens (id, secret_sha256, expires_at, used_at, created_at) VALUES (?, ?, ?, ?, ?)")
            .bind(&t.id)
            .bind(&t.secret_sha256)
            .bind(t.expires_at)
            .bind(t.used_at)
            .bind(t.created_at)
            .execute(&self.pool)
            .await;
        match r {
            Err(e) if is_unique_violation(&e) => {
                Err(StoreError::AlreadyExists(format!("join token {} already exists", t.id)))
            }
            r => r.map(|_| ()).map_err(Into::into),
        }
    }

    async fn get_join_token(&self, id: &str) -> Result<Option<JoinTokenRecord>, StoreError> {
        sqlx::query("SELECT * FROM join_tokens WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| token_from_row(&r))
            .transpose()
    }

    async fn consume_join_token(&self, id: &str, now: i64) -> Result<JoinTokenRecord, StoreError> {
        let _w = self.write.lock().await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let done = sqlx::query("UPDATE join_tokens SET used_at = ? WHERE id = ? AND used_at IS NULL")
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let row = sqlx::query("SELECT * FROM join_tokens WHERE id = ?")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| not_found(format!("join token {id}")))?;
        if done == 0 {
            return Err(StoreError::Conflict("join token already used".into()));
        }
        tx.commit().await?;
        token_from_row(&row)
    }

    async fn prune_join_tokens(&self, now: i64) -> Result<u64, StoreError> {
        let _w = self.write.lock().await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let n = sqlx::query("DELETE FROM join_tokens WHERE expires_at < ?")
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query("DELETE FROM replay WHERE expires_at < ?").bind(now).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(n)
    }

    async fn upsert_agent(&self, a: &AgentRecord) -> Result<(), StoreError> {
        let _w = self.write.lock().await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        write_agent(&mut tx, a, "").await?;
        record_change(&mut tx, ChangeKind::Agent, &a.spiffe_id.to_string()).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn record_agent_svid(&self, a: &AgentRecord) -> Result<(), StoreError> {
        if a.banned {
            return Err(StoreError::Banned(a.spiffe_id.clone()));
        }
        let _w = self.write.lock().await;
        // The conflict update applies only to an unbanned row; a banned one leaves the
        // statement with nothing written.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        if write_agent(&mut tx, a, " WHERE agents.banned = 0").await? == 0 {
            return Err(StoreError::Banned(a.spiffe_id.clone()));
        }
        record_change(&mut tx, ChangeKind::Agent, &a.spiffe_id.to_string()).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn get_agent(&self, id: &SpiffeId) -> Result<Option<AgentRecord>, StoreError> {
        sqlx::query("SELECT * FROM agents WHERE spiffe_id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?
            .map(|r| agent_from_row(&r))
            .transpose()
    }

    async fn list_agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        sqlx::query("SELECT * FROM agents ORDER BY spiffe_id")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(agent_from_row)
            .collect()
    }

    async fn ban_agent(&self, id: &SpiffeId) -> Result<AgentRecord, StoreError> {
        let _w = self.write.lock().await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query("UPDATE agents SET banned = 1 WHERE spiffe_id = ?")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        let row = sqlx::query("SELECT * FROM agents WHERE spiffe_id = ?")
            .bind(id.to_string())
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| not_found(format!("agent {id}")))?;
        record_change(&mut tx, ChangeKind::Agent, &id.to_string()).await?;
        tx.commit().await?;
        agent_from_row(&row)
    }

    async fn record_replay(&self, key: &str, expires_at: i64, now: i64) -> Result<(), StoreError> {
        let _w = self.write.lock().await;
        let n = sqlx::query(
            "INSERT INTO replay (key, expires_at) VALUES (?, ?) \
             ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at WHERE replay.expires_at <= ?",
        )
        .bind(key)
        .bind(expires_at)
        .bind(now)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if n == 0 { Err(StoreError::AlreadyExists(format!("{key} has already been used"))) } else { Ok(()) }
    }

    async fn record_task_credential(&self, c: &TaskCredential) -> Result<(), StoreError> {
        let _w = self.write.lock().await;
        sqlx::query(
            "INSERT INTO task_credentials (task_id, jti, purpose, spiffe_id, subject, issued_at, expires_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&c.task_id)
        .bind(&c.jti)
        .bind(&c.purpose)
        .bind(&c.spiffe_id)
        .bind(&c.subject)
        .bind(c.issued_at)
        .bind(c.expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn list_task_credentials(&self, task_id: &str) -> Result<Vec<TaskCredential>, StoreError> {
        sqlx::query("SELECT * FROM task_credentials WHERE task_id = ? ORDER BY issued_at, jti")
            .bind(task_id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(task_credential_row)
            .collect()
    }

    async fn append_revocations(&self, revs: &mut [RevocationRecord]) -> Result<(), StoreError> {
        let _w = self.write.lock().await;
        let mut tx = self.pool.begin().await?;
        for r in revs.iter_mut() {
            let row = sqlx::query(
                "INSERT INTO revocations (id, txn, kind, value, spiffe_id, cutoff, revoked_at, expires_at, reason, token) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING seq",
            )
            .bind(&r.id)
            .bind(&r.txn)
            .bind(r.kind.as_str())
            .bind(&r.value)
            .bind(&r.spiffe_id)
            .bind(r.cutoff)
            .bind(r.revoked_at)
            .bind(r.expires_at)
            .bind(&r.reason)
            .bind(&r.token)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::AlreadyExists(format!("revocation {} already exists", r.id))
                } else {
                    e.into()
                }
            })?;
            let seq: i64 = row.try_get("seq")?;
            r.seq =
                u64::try_from(seq).map_err(|_| StoreError::Backend(format!("negative sequence {seq}")))?;
        }
        if !revs.is_empty() {
            record_change(&mut tx, ChangeKind::Revocation, "").await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn list_revocations(&self, after: u64, now: i64) -> Result<Vec<RevocationRecord>, StoreError> {
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        sqlx::query("SELECT * FROM revocations WHERE seq > ? AND expires_at >= ? ORDER BY seq")
            .bind(after)
            .bind(now)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(revocation_row)
            .collect()
    }

    async fn prune_revocations(&self, now: i64) -> Result<u64, StoreError> {
        let _w = self.write.lock().await;
        Ok(sqlx::query("DELETE FROM revocations WHERE expires_at < ?")
            .bind(now)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    async fn record_delegation(&self, d: &DelegationRecord) -> Result<(), StoreError> {
        let _w = self.write.lock().await;
        sqlx::query(
            "INSERT INTO delegations (jti, parent_jti, subject, actor, task_id, issued_at, expires_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&d.jti)
        .bind(&d.parent_jti)
        .bind(&d.subject)
        .bind(&d.actor)
        .bind(&d.task_id)
        .bind(d.issued_at)
        .bind(d.expires_at)
        .execute(&self.pool)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                StoreError::AlreadyExists(format!("delegation {} already recorded", d.jti))
            } else {
                e.into()
            }
        })?;
        Ok(())
    }

    async fn get_delegation(&self, jti: &str) -> Result<Option<DelegationRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM delegations WHERE jti = ?")
            .bind(jti)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(delegation_row).transpose()
    }

    async fn delegation_descendants(
        &self,
        roots: &[String],
        now: i64,
    ) -> Result<Vec<DelegationRecord>, StoreError> {
        if roots.is_empty() {
            return Ok(Vec::new());
        }
        // Breadth-first over parent links, in SQL; UNION (not UNION ALL) ends cycles.
        let mut q = QueryBuilder::<Sqlite>::new("WITH RECURSIVE roots(jti) AS (");
        let mut first = true;
        for r in roots {
            q.push(if first { "SELECT " } else { " UNION SELECT " });
            q.push_bind(r);
            first = false;
        }
        q.push(
            "), tree(jti) AS (SELECT d.jti FROM delegations d JOIN roots r ON d.parent_jti = r.jti \
             UNION SELECT d.jti FROM delegations d JOIN tree t ON d.parent_jti = t.jti) \
             SELECT d.* FROM delegations d JOIN tree t ON d.jti = t.jti WHERE d.expires_at >= ",
        );
        q.push_bind(now);
        q.push(" ORDER BY d.issued_at, d.jti");
        let rows = q.build().fetch_all(&self.pool).await?;
        rows.iter().map(delegation_row).collect()
    }

    async fn delegations_by_subject(
        &self,
        subject: &str,
        now: i64,
    ) -> Result<Vec<DelegationRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM delegations WHERE subject = ? AND expires_at >= ? ORDER BY issued_at, jti",
        )
        .bind(subject)
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(delegation_row).collect()
    }

    async fn prune_delegations(&self, now: i64) -> Result<u64, StoreError> {
        let _w = self.write.lock().await;
        Ok(sqlx::query("DELETE FROM delegations WHERE expires_at < ?")
            .bind(now)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    async fn get_ca_state(&self) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(sqlx::query("SELECT state FROM ca_state WHERE id = 1")
            .fetch_optional(&self.pool)
            .await?
            .map(|r| r.get::<Vec<u8>, _>("state")))
    }

    async fn put_ca_state(&self, state: &[u8]) -> Result<(), StoreError> {
        let _w = self.write.lock().await;
        sqlx::query("INSERT INTO ca_state (id, state) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET state = excluded.state")
            .bind(state)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn list_changes(&self, after: u64, limit: u32) -> Result<Vec<Change>, StoreError> {
        sqlx::query("SELECT * FROM changes WHERE seq > ? ORDER BY seq LIMIT ?")
            .bind(i64::try_from(after).unwrap_or(i64::MAX))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(change_row)
            .collect()
    }

    async fn last_change(&self) -> Result<u64, StoreError> {
        // AUTOINCREMENT keeps the highest sequence ever used, pruned or not.
        let last: Option<i64> = sqlx::query_scalar("SELECT seq FROM sqlite_sequence WHERE name = 'changes'")
            .fetch_optional(&self.pool)
            .await?;
        Ok(last.map_or(0, |v| u64::try_from(v).unwrap_or(0)))
    }

    async fn prune_changes(&self, keep: u64) -> Result<u64, StoreError> {
        let last = i64::try_from(self.last_change().await?).unwrap_or(i64::MAX);
        let _w = self.write.lock().await;
        Ok(sqlx::query("DELETE FROM changes WHERE seq <= ?")
            .bind(last.saturating_sub(i64::try_from(keep).unwrap_or(i64::MAX)))
            .execute(&self.pool)
            .await?
            .rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn contract_in_memory() {
        contract::run_all(&SqliteStore::in_memory().await.unwrap()).await;
    }

    #[tokio::test]
    async fn contract_on_a_file_and_persistence() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/ferrid.sqlite3");
        let store = SqliteStore::open(&path).await.unwrap();
        contract::run_all(&store).await;
        let e = contract::sample_entry("persisted", "spiffe://td/persisted", &["k8s:ns:a"]);
        store.create_entry(&e).await.unwrap();
        store.put_ca_state(b"{\"v\":1}").await.unwrap();
        drop(store);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(path.parent().unwrap()).unwrap().permissions().mode() & 0o777, 0o700);
        // Reopening runs migrations again (a no-op) and finds the data.
        let store = SqliteStore::open(&path).await.unwrap();
        assert_eq!(store.get_entry(&e.id).await.unwrap().unwrap().selectors, e.selectors);
        assert_eq!(store.get_ca_state().await.unwrap().unwrap(), b"{\"v\":1}");
    }

    #[tokio::test]
    async fn corrupted_rows_are_errors_not_panics() {
        let store = SqliteStore::in_memory().await.unwrap();
        let e = contract::sample_entry("c1", "spiffe://td/c", &["a:b"]);
        store.create_entry(&e).await.unwrap();
        sqlx::query("UPDATE entries SET spiffe_id = 'not a spiffe id'").execute(&store.pool).await.unwrap();
        assert!(
            matches!(store.get_entry(&e.id).await, Err(StoreError::Backend(m)) if m.contains("spiffe_id"))
        );
        assert!(matches!(store.list_entries(&EntryFilter::default()).await, Err(StoreError::Backend(_))));
    }
}

#[cfg(test)]
mod concurrency {
    use std::sync::Arc;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_listing_does_not_block_writers_and_reads_one_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(dir.path().join("list.sqlite3")).await.unwrap());
        let mut first = contract::sample_entry("e1", "spiffe://td/one", &["unix:uid:1"]);
        first = store.create_entry(&first).await.unwrap();
        let (arrived_tx, arrived) = tokio::sync::oneshot::channel();
        let (resume, resume_rx) = tokio::sync::oneshot::channel();
        *store.pause_listing.lock().unwrap() = Some((arrived_tx, resume_rx));
        let lister = {
            let store = store.clone();
            tokio::spawn(async move { store.list_entries(&EntryFilter::default()).await })
        };
        // The listing has read the selectors and holds its transaction open.
        arrived.await.unwrap();
        // A writer on another connection commits meanwhile (under the old
        // `BEGIN IMMEDIATE` it failed with SQLITE_BUSY after the busy timeout).
        let second = contract::sample_entry("e2", "spiffe://td/two", &["unix:uid:2"]);
        store.create_entry(&second).await.expect("a write while a listing is open");
        resume.send(()).unwrap();
        let listed = lister.await.unwrap().unwrap();
        // The listing saw the state it started in, selectors and entries alike.
        assert_eq!(listed, vec![first]);
        assert_eq!(store.list_entries(&EntryFilter::default()).await.unwrap().len(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn racing_consumers_on_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(dir.path().join("race.sqlite3")).await.unwrap());
        contract::run_concurrency(store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn two_instances_on_one_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("two.sqlite3");
        let a = Arc::new(SqliteStore::open(&path).await.unwrap());
        let b = Arc::new(SqliteStore::open(&path).await.unwrap());
        contract::run_two_instances(a, b).await;
    }
}
