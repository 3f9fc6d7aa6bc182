//! [`PgStore`]: the datastore on a PostgreSQL server, for several Ferrid servers sharing
//! one trust domain.
//!
//! Every method is one statement or one transaction, and each is correct under READ
//! COMMITTED with writers in other processes: conditional writes are single statements
//! (`UPDATE … WHERE revision = $n RETURNING`, `UPDATE … WHERE used_at IS NULL`,
//! `ON CONFLICT … WHERE`), rows a transaction reads and then changes are locked
//! (`FOR UPDATE`), and feed sequences are taken from a counter row whose lock is held to
//! commit, so sequence order is commit order and a reader never skips a number that
//! commits later. Migrations take sqlx's advisory lock, so servers starting together
//! apply them once.
use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use ferrid_types::{AgentRecord, EntryId, JoinTokenRecord, RegistrationEntry, Selector, SpiffeId};
use futures::TryStreamExt as _;
use serde::Deserialize;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgSslMode as SqlxSslMode};
use sqlx::{Postgres, QueryBuilder, Row};

use crate::{
    Change, ChangeKind, DelegationRecord, EntryFilter, RevocationRecord, Store, StoreError, TaskCredential,
    agent_from_row, bad, change_row, delegation_row, duplicate, entries_page, entry_from_row, fingerprint,
    is_unique_violation, json, not_found, push_filter, revocation_row, task_credential_row, token_from_row,
};

/// TLS to the database, as libpq's `sslmode` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum PgSslMode {
    /// Plain TCP (or a Unix socket).
    Disable,
    /// TLS when the server offers it, without verifying it (libpq's default).
    #[default]
    Prefer,
    /// TLS, without verifying the server's certificate.
    Require,
    /// TLS, with the server's certificate verified against the CA.
    VerifyCa,
    /// TLS, verified against the CA and the host name.
    VerifyFull,
}

impl PgSslMode {
    fn sqlx(self) -> SqlxSslMode {
        match self {
            Self::Disable => SqlxSslMode::Disable,
            Self::Prefer => SqlxSslMode::Prefer,
            Self::Require => SqlxSslMode::Require,
            Self::VerifyCa => SqlxSslMode::VerifyCa,
            Self::VerifyFull => SqlxSslMode::VerifyFull,
        }
    }
}

/// How to reach the database. `Debug` never shows the URL's password.
#[derive(Clone)]
pub struct PgSettings {
    /// `postgres://user:password@host:port/database` (query parameters as libpq takes
    /// them, e.g. `?host=/run/postgresql` for a Unix socket). Secret: never logged.
    pub url: String,
    /// Connections in the pool.
    pub max_connections: u32,
    /// How long to wait for a connection (connecting, or one free in the pool).
    pub connect_timeout: Duration,
    /// The server-side `statement_timeout` of every connection.
    pub statement_timeout: Duration,
    /// TLS to the database; overrides an `sslmode` in the URL.
    pub ssl_mode: Option<PgSslMode>,
    /// The CA that signs the database's certificate (`verify-ca`, `verify-full`).
    pub ca_file: Option<PathBuf>,
}

impl PgSettings {
    /// Settings for `url` with the defaults: 10 connections, 5 s to connect, 10 s per
    /// statement, the URL's own TLS mode.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: 10,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(10),
            ssl_mode: None,
            ca_file: None,
        }
    }
}

impl std::fmt::Debug for PgSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgSettings")
            .field("url", &redact_url(&self.url))
            .field("max_connections", &self.max_connections)
            .field("connect_timeout", &self.connect_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("ssl_mode", &self.ssl_mode)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

/// `url` with any password (in the authority or a `password=` parameter) replaced by
/// `***`, for logs and errors. A URL that does not parse is shown as `<unparsable URL>`.
pub fn redact_url(url: &str) -> String {
    let Ok(mut u) = url::Url::parse(url) else {
        return "<unparsable URL>".into();
    };
    if u.password().is_some() {
        let _ = u.set_password(Some("***"));
    }
    let pairs: Vec<(String, String)> = u
        .query_pairs()
        .map(|(k, v)| {
            let v = if k.eq_ignore_ascii_case("password") { "***".into() } else { v.into_owned() };
            (k.into_owned(), v)
        })
        .collect();
    if !pairs.is_empty() {
        u.query_pairs_mut().clear().extend_pairs(pairs);
    }
    u.to_string()
}

/// Removes the password from a driver error message (sqlx may echo the URL).
fn scrub(msg: String, settings: &PgSettings) -> String {
    match url::Url::parse(&settings.url).ok().and_then(|u| u.password().map(str::to_owned)) {
        Some(p) if !p.is_empty() => msg.replace(&p, "***"),
        _ => msg,
    }
}

/// The datastore on PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    /// Moves on every `NOTIFY ferrid_changes` (and after the listener reconnects).
    wake: tokio::sync::watch::Receiver<u64>,
}

/// The channel every change is announced on.
const CHANGES_CHANNEL: &str = "ferrid_changes";

/// The counter rows that number the feeds (see the module docs).
const REVOCATIONS_COUNTER: &str = "revocations";
const CHANGES_COUNTER: &str = "changes";

impl PgStore {
    /// Connects, and applies the migrations not yet applied (once, whichever of several
    /// starting servers gets sqlx's migration lock first). Errors say what failed
    /// without the password.
    pub async fn connect(settings: &PgSettings) -> Result<Self, StoreError> {
        let backend = |what: &str, e: &dyn std::fmt::Display| {
            StoreError::Backend(scrub(format!("{what} ({}): {e}", redact_url(&settings.url)), settings))
        };
        let mut opts = PgConnectOptions::from_str(&settings.url).map_err(|e| backend("datastore URL", &e))?;
        if let Some(mode) = settings.ssl_mode {
            opts = opts.ssl_mode(mode.sqlx());
        }
        if let Some(ca) = &settings.ca_file {
            opts = opts.ssl_root_cert(ca);
        }
        let timeout_ms = settings.statement_timeout.as_millis().to_string();
        opts = opts.options([("statement_timeout", timeout_ms.as_str())]).application_name("ferrid-server");
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections.max(1))
            .acquire_timeout(settings.connect_timeout)
            .connect_with(opts)
            .await
            .map_err(|e| backend("connecting to PostgreSQL", &e))?;
        sqlx::migrate!("./migrations-postgres").run(&pool).await.map_err(|e| backend("migration", &e))?;
        let (tx, wake) = tokio::sync::watch::channel(0);
        tokio::spawn(listen(pool.clone(), tx));
        Ok(Self { pool, wake })
    }

    /// The pool, for tests that reach into the database.
    #[doc(hidden)]
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Closes the pool (waits for connections in use to be returned).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Follows `LISTEN ferrid_changes` on a connection of its own until every receiver is
/// gone, moving `wake` on each notification. A notification sent while the connection
/// was down is lost, so a reconnect moves `wake` too (followers then tail the feed).
async fn listen(pool: PgPool, wake: tokio::sync::watch::Sender<u64>) {
    let bump = || wake.send_modify(|v| *v = v.wrapping_add(1));
    loop {
        let listener = async {
            let mut l = sqlx::postgres::PgListener::connect_with(&pool).await?;
            l.listen(CHANGES_CHANNEL).await?;
            bump();
            loop {
                // `None`: the connection dropped and was re-established.
                l.try_recv().await?;
                bump();
            }
            #[allow(unreachable_code)]
            Ok::<(), sqlx::Error>(())
        };
        tokio::select! {
            () = wake.closed() => return,
            r = listener => {
                if let Err(e) = r {
                    tracing::warn!(error = %e, "listening for datastore changes failed; retrying in 1s (changes still arrive by tailing)");
                }
            }
        }
        tokio::select! {
            () = wake.closed() => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Records a change in the feed inside `tx`, numbered in commit order, and announces it
/// (PostgreSQL delivers the notification when `tx` commits).
async fn record_change(
    tx: &mut sqlx::Transaction<'_, Postgres>,
    kind: ChangeKind,
    key: &str,
) -> Result<(), StoreError> {
    let seq = take_sequence(tx, CHANGES_COUNTER, 1).await?;
    sqlx::query("INSERT INTO changes (seq, kind, key) VALUES ($1, $2, $3)")
        .bind(seq)
        .bind(kind.as_str())
        .bind(key)
        .execute(&mut **tx)
        .await?;
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANGES_CHANNEL)
        .bind(seq.to_string())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Inserts one entry row and its selectors inside `tx`. `AlreadyExists` (with the
/// transaction still usable) when an entry with that identity or ID exists.
async fn insert_entry(
    tx: &mut sqlx::Transaction<'_, Postgres>,
    entry: &RegistrationEntry,
) -> Result<(), StoreError> {
    // ON CONFLICT DO NOTHING rather than catching the violation: in PostgreSQL a failed
    // statement aborts the whole transaction, and a batch must go on past a duplicate.
    let inserted = sqlx::query(
        "INSERT INTO entries (id, spiffe_id, parent_id, fingerprint, x509_svid_ttl, jwt_svid_ttl, dns_names, \
         hint, admin, expires_at, metadata, revision, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 1, $12) ON CONFLICT DO NOTHING RETURNING id",
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
    .fetch_optional(&mut **tx)
    .await?;
    if inserted.is_none() {
        return Err(duplicate(entry));
    }
    insert_selectors(tx, &entry.id.0, &entry.selectors).await
}

async fn insert_selectors(
    tx: &mut sqlx::Transaction<'_, Postgres>,
    id: &str,
    selectors: &[Selector],
) -> Result<(), StoreError> {
    let mut seen = std::collections::BTreeSet::new();
    let (kinds, values): (Vec<&str>, Vec<&str>) =
        selectors.iter().filter(|s| seen.insert(*s)).map(|s| (s.kind.as_str(), s.value.as_str())).unzip();
    if kinds.is_empty() {
        return Ok(());
    }
    sqlx::query("INSERT INTO entry_selectors (entry_id, type, value) SELECT $1, * FROM UNNEST($2::text[], $3::text[])")
        .bind(id)
        .bind(&kinds)
        .bind(&values)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn entry_selectors(conn: &mut sqlx::PgConnection, id: &EntryId) -> Result<Vec<Selector>, StoreError> {
    sqlx::query("SELECT type, value FROM entry_selectors WHERE entry_id = $1 ORDER BY type, value")
        .bind(&id.0)
        .fetch_all(conn)
        .await?
        .iter()
        .map(|r| {
            Selector::new(r.try_get::<String, _>("type")?, r.try_get::<String, _>("value")?)
                .map_err(|e| bad("selector", e))
        })
        .collect()
}

/// Inserts `a` or updates its row (with `condition` on the update); the ban never goes
/// back to false. Returns how many rows were written.
async fn write_agent(
    conn: &mut sqlx::PgConnection,
    a: &AgentRecord,
    condition: &str,
) -> Result<u64, StoreError> {
    let sels: Vec<String> = a.selectors.iter().map(ToString::to_string).collect();
    let sql = format!(
        "INSERT INTO agents (spiffe_id, attestor, selectors, svid_serial, svid_expires_at, can_reattest, banned, \
         attested_at, last_seen) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (spiffe_id) DO UPDATE SET \
         attestor = excluded.attestor, selectors = excluded.selectors, svid_serial = excluded.svid_serial, \
         svid_expires_at = excluded.svid_expires_at, can_reattest = excluded.can_reattest, \
         banned = agents.banned OR excluded.banned, attested_at = excluded.attested_at, \
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

/// Takes `n` numbers from the counter `name`: returns the first. The row stays locked
/// until the caller's transaction ends, so numbers are handed out in commit order.
async fn take_sequence(
    tx: &mut sqlx::Transaction<'_, Postgres>,
    name: &str,
    n: usize,
) -> Result<i64, StoreError> {
    let n = i64::try_from(n).map_err(|_| StoreError::Backend("too many records in one append".into()))?;
    let last: i64 =
        sqlx::query_scalar("UPDATE counters SET value = value + $2 WHERE name = $1 RETURNING value")
            .bind(name)
            .bind(n)
            .fetch_one(&mut **tx)
            .await?;
    Ok(last - n + 1)
}

#[async_trait]
impl Store for PgStore {
    async fn create_entry(&self, entry: &RegistrationEntry) -> Result<RegistrationEntry, StoreError> {
        let mut tx = self.pool.begin().await?;
        insert_entry(&mut tx, entry).await?;
        record_change(&mut tx, ChangeKind::Entry, &entry.id.0).await?;
        tx.commit().await?;
        Ok(RegistrationEntry { revision: 1, ..entry.clone() })
    }

    async fn create_entries(
        &self,
        entries: &[RegistrationEntry],
    ) -> Result<Vec<Result<RegistrationEntry, StoreError>>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut out = Vec::with_capacity(entries.len());
        for entry in entries {
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
        let mut tx = self.pool.begin().await?;
        // One conditional statement: a concurrent update of the same row waits for this
        // one to commit and then re-checks the revision against the row it left.
        let r = sqlx::query(
            "UPDATE entries SET spiffe_id = $1, parent_id = $2, fingerprint = $3, x509_svid_ttl = $4, \
             jwt_svid_ttl = $5, dns_names = $6, hint = $7, admin = $8, expires_at = $9, metadata = $10, \
             revision = revision + 1 WHERE id = $11 AND ($12::BIGINT IS NULL OR revision = $12) \
             RETURNING revision, created_at",
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
        .bind(&entry.id.0)
        .bind(expected_revision)
        .fetch_optional(&mut *tx)
        .await;
        let row = match r {
            Err(e) if is_unique_violation(&e) => return Err(duplicate(entry)),
            r => r?,
        };
        let Some(row) = row else {
            let current: Option<i64> = sqlx::query_scalar("SELECT revision FROM entries WHERE id = $1")
                .bind(&entry.id.0)
                .fetch_optional(&mut *tx)
                .await?;
            return Err(match (current, expected_revision) {
                (Some(current), Some(expected)) => StoreError::Conflict(format!(
                    "entry {} is at revision {current}, not {expected}; fetch it again and retry",
                    entry.id
                )),
                _ => not_found(format!("entry {}", entry.id)),
            });
        };
        let revision: i64 = row.try_get("revision")?;
        let created_at: i64 = row.try_get("created_at")?;
        sqlx::query("DELETE FROM entry_selectors WHERE entry_id = $1")
            .bind(&entry.id.0)
            .execute(&mut *tx)
            .await?;
        insert_selectors(&mut tx, &entry.id.0, &entry.selectors).await?;
        record_change(&mut tx, ChangeKind::Entry, &entry.id.0).await?;
        tx.commit().await?;
        Ok(RegistrationEntry { revision, created_at, ..entry.clone() })
    }

    async fn delete_entry(&self, id: &EntryId) -> Result<RegistrationEntry, StoreError> {
        let mut tx = self.pool.begin().await?;
        // Locked first: a racing update waits, then finds the row gone.
        let row = sqlx::query("SELECT * FROM entries WHERE id = $1 FOR UPDATE")
            .bind(&id.0)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| not_found(format!("entry {id}")))?;
        let sels = entry_selectors(&mut tx, id).await?;
        let entry = entry_from_row(&row, sels)?;
        sqlx::query("DELETE FROM entries WHERE id = $1").bind(&id.0).execute(&mut *tx).await?;
        record_change(&mut tx, ChangeKind::Entry, &id.0).await?;
        tx.commit().await?;
        Ok(entry)
    }

    async fn get_entry(&self, id: &EntryId) -> Result<Option<RegistrationEntry>, StoreError> {
        // One snapshot for the row and its selectors.
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY").execute(&mut *tx).await?;
        let Some(row) =
            sqlx::query("SELECT * FROM entries WHERE id = $1").bind(&id.0).fetch_optional(&mut *tx).await?
        else {
            return Ok(None);
        };
        let sels = entry_selectors(&mut tx, id).await?;
        tx.commit().await?;
        entry_from_row(&row, sels).map(Some)
    }

    async fn list_entries(&self, filter: &EntryFilter) -> Result<Vec<RegistrationEntry>, StoreError> {
        // Two queries in one REPEATABLE READ snapshot; readers never block writers.
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY").execute(&mut *tx).await?;
        let mut q = QueryBuilder::<Postgres>::new(
            "SELECT s.entry_id, s.type, s.value FROM entry_selectors s JOIN entries e ON e.id = s.entry_id",
        );
        push_filter(&mut q, filter);
        q.push(" ORDER BY s.entry_id, s.type, s.value");
        let mut selectors: HashMap<String, Vec<Selector>> = HashMap::new();
        {
            let mut rows = q.build().fetch(&mut *tx);
            while let Some(r) = rows.try_next().await? {
                let s = Selector::new(r.try_get::<String, _>("type")?, r.try_get::<String, _>("value")?)
                    .map_err(|e| bad("selector", e))?;
                selectors.entry(r.try_get("entry_id")?).or_default().push(s);
            }
        }
        let mut q = QueryBuilder::<Postgres>::new("SELECT e.* FROM entries e");
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
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY").execute(&mut *tx).await?;
        let rows = sqlx::query("SELECT * FROM entries WHERE id > $1 ORDER BY id LIMIT $2")
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await?;
        let selector_rows = match rows.last() {
            Some(last) => {
                let last: String = last.try_get("id")?;
                sqlx::query(
                    "SELECT entry_id, type, value FROM entry_selectors WHERE entry_id > $1 AND entry_id <= $2 ORDER BY entry_id, type, value",
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
        let r = sqlx::query(
            "INSERT INTO join_tokens (id, secret_sha256, expires_at, used_at, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
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
        sqlx::query("SELECT * FROM join_tokens WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| token_from_row(&r))
            .transpose()
    }

    async fn consume_join_token(&self, id: &str, now: i64) -> Result<JoinTokenRecord, StoreError> {
        // One conditional statement decides the winner.
        let row =
            sqlx::query("UPDATE join_tokens SET used_at = $2 WHERE id = $1 AND used_at IS NULL RETURNING *")
                .bind(id)
                .bind(now)
                .fetch_optional(&self.pool)
                .await?;
        if let Some(row) = row {
            return token_from_row(&row);
        }
        match self.get_join_token(id).await? {
            Some(_) => Err(StoreError::Conflict("join token already used".into())),
            None => Err(not_found(format!("join token {id}"))),
        }
    }

    async fn prune_join_tokens(&self, now: i64) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query("DELETE FROM join_tokens WHERE expires_at < $1")
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query("DELETE FROM replay WHERE expires_at < $1").bind(now).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(n)
    }

    async fn upsert_agent(&self, a: &AgentRecord) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        write_agent(&mut tx, a, "").await?;
        record_change(&mut tx, ChangeKind::Agent, &a.spiffe_id.to_string()).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn record_agent_svid(&self, a: &AgentRecord) -> Result<(), StoreError> {
        if a.banned {
            return Err(StoreError::Banned(a.spiffe_id.clone()));
        }
        // A ban committing first makes the conflict update write nothing; one still in
        // flight holds the row lock, and this statement re-checks after it commits.
        let mut tx = self.pool.begin().await?;
        if write_agent(&mut tx, a, " WHERE NOT agents.banned").await? == 0 {
            return Err(StoreError::Banned(a.spiffe_id.clone()));
        }
        record_change(&mut tx, ChangeKind::Agent, &a.spiffe_id.to_string()).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn get_agent(&self, id: &SpiffeId) -> Result<Option<AgentRecord>, StoreError> {
        sqlx::query("SELECT * FROM agents WHERE spiffe_id = $1")
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
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query("UPDATE agents SET banned = TRUE WHERE spiffe_id = $1 RETURNING *")
            .bind(id.to_string())
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| not_found(format!("agent {id}")))?;
        record_change(&mut tx, ChangeKind::Agent, &id.to_string()).await?;
        tx.commit().await?;
        agent_from_row(&row)
    }

    async fn record_replay(&self, key: &str, expires_at: i64, now: i64) -> Result<(), StoreError> {
        let n = sqlx::query(
            "INSERT INTO replay (key, expires_at) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at WHERE replay.expires_at <= $3",
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
        sqlx::query(
            "INSERT INTO task_credentials (task_id, jti, purpose, spiffe_id, subject, issued_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
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
        sqlx::query("SELECT * FROM task_credentials WHERE task_id = $1 ORDER BY issued_at, jti")
            .bind(task_id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(task_credential_row)
            .collect()
    }

    async fn append_revocations(&self, revs: &mut [RevocationRecord]) -> Result<(), StoreError> {
        if revs.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        let first = take_sequence(&mut tx, REVOCATIONS_COUNTER, revs.len()).await?;
        for (r, seq) in revs.iter_mut().zip(first..) {
            sqlx::query(
                "INSERT INTO revocations (seq, id, txn, kind, value, spiffe_id, cutoff, revoked_at, expires_at, \
                 reason, token) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            )
            .bind(seq)
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
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::AlreadyExists(format!("revocation {} already exists", r.id))
                } else {
                    e.into()
                }
            })?;
            r.seq =
                u64::try_from(seq).map_err(|_| StoreError::Backend(format!("negative sequence {seq}")))?;
        }
        record_change(&mut tx, ChangeKind::Revocation, "").await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_revocations(&self, after: u64, now: i64) -> Result<Vec<RevocationRecord>, StoreError> {
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        sqlx::query("SELECT * FROM revocations WHERE seq > $1 AND expires_at >= $2 ORDER BY seq")
            .bind(after)
            .bind(now)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(revocation_row)
            .collect()
    }

    async fn prune_revocations(&self, now: i64) -> Result<u64, StoreError> {
        Ok(sqlx::query("DELETE FROM revocations WHERE expires_at < $1")
            .bind(now)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    async fn record_delegation(&self, d: &DelegationRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO delegations (jti, parent_jti, subject, actor, task_id, issued_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
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
        let row = sqlx::query("SELECT * FROM delegations WHERE jti = $1")
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
        // Breadth-first over parent links; UNION (not UNION ALL) ends cycles.
        let rows = sqlx::query(
            "WITH RECURSIVE tree(jti) AS (\
               SELECT d.jti FROM delegations d WHERE d.parent_jti = ANY($1) \
               UNION SELECT d.jti FROM delegations d JOIN tree t ON d.parent_jti = t.jti) \
             SELECT d.* FROM delegations d JOIN tree t ON d.jti = t.jti WHERE d.expires_at >= $2 \
             ORDER BY d.issued_at, d.jti",
        )
        .bind(roots)
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(delegation_row).collect()
    }

    async fn delegations_by_subject(
        &self,
        subject: &str,
        now: i64,
    ) -> Result<Vec<DelegationRecord>, StoreError> {
        sqlx::query(
            "SELECT * FROM delegations WHERE subject = $1 AND expires_at >= $2 ORDER BY issued_at, jti",
        )
        .bind(subject)
        .bind(now)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(delegation_row)
        .collect()
    }

    async fn prune_delegations(&self, now: i64) -> Result<u64, StoreError> {
        Ok(sqlx::query("DELETE FROM delegations WHERE expires_at < $1")
            .bind(now)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    async fn get_ca_state(&self) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(sqlx::query_scalar("SELECT state FROM ca_state WHERE id = 1").fetch_optional(&self.pool).await?)
    }

    async fn put_ca_state(&self, state: &[u8]) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO ca_state (id, state) VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET state = excluded.state",
        )
        .bind(state)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn list_changes(&self, after: u64, limit: u32) -> Result<Vec<Change>, StoreError> {
        sqlx::query("SELECT * FROM changes WHERE seq > $1 ORDER BY seq LIMIT $2")
            .bind(i64::try_from(after).unwrap_or(i64::MAX))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(change_row)
            .collect()
    }

    async fn last_change(&self) -> Result<u64, StoreError> {
        let last: i64 = sqlx::query_scalar("SELECT value FROM counters WHERE name = $1")
            .bind(CHANGES_COUNTER)
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(last).unwrap_or(0))
    }

    async fn prune_changes(&self, keep: u64) -> Result<u64, StoreError> {
        let last = i64::try_from(self.last_change().await?).unwrap_or(i64::MAX);
        Ok(sqlx::query("DELETE FROM changes WHERE seq <= $1")
            .bind(last.saturating_sub(i64::try_from(keep).unwrap_or(i64::MAX)))
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    fn change_wakeups(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        Some(self.wake.clone())
    }
}

#[cfg(test)]
mod tests {
    //! Against a real PostgreSQL server started for each test
    //! ([`ferrid_test_util::postgres::Server`]).
    use std::sync::Arc;

    use ferrid_test_util::postgres::Server;

    use super::*;
    use crate::contract;

    async fn store(url: &str) -> PgStore {
        PgStore::connect(&PgSettings::new(url)).await.expect("connect")
    }

    #[tokio::test]
    async fn contract() {
        let pg = Server::start();
        let s = store(&pg.create_database("contract")).await;
        contract::run_all(&s).await;
        contract::run_concurrency(Arc::new(s)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn two_instances_on_one_database() {
        let pg = Server::start();
        let url = pg.create_database("two");
        // Both connect at once: the migrations run once, under sqlx's advisory lock.
        let (a, b) = tokio::join!(store(&url), store(&url));
        contract::run_two_instances(Arc::new(a), Arc::new(b)).await;
    }

    #[tokio::test]
    async fn a_database_that_is_down_is_an_error_and_writes_resume_after() {
        let mut pg = Server::start();
        let url = pg.create_database("down");
        let mut settings = PgSettings::new(&url);
        settings.connect_timeout = Duration::from_secs(1);
        let s = PgStore::connect(&settings).await.expect("connect");
        let e = contract::sample_entry("d1", "spiffe://td/d1", &["a:1"]);
        pg.stop();
        let err = s.create_entry(&e).await.expect_err("the database is down");
        assert!(matches!(err, StoreError::Backend(_)), "{err:?}");
        pg.restart();
        // The pool reconnects by itself; the failed write left nothing behind.
        let mut tries = 0;
        let created = loop {
            match s.create_entry(&e).await {
                Ok(c) => break c,
                Err(err) if tries < 20 => {
                    tries += 1;
                    let _ = err;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(err) => panic!("after restart: {err:?}"),
            }
        };
        assert_eq!(created.revision, 1);
        assert_eq!(s.list_entries(&EntryFilter::default()).await.expect("list").len(), 1);
    }

    #[tokio::test]
    async fn connection_errors_never_show_the_password() {
        let pg = Server::start();
        // A password the server never sees (the database does not exist): the error names
        // the database but not the password.
        let url =
            format!("postgres://ferrid:hunter2-secret@localhost/missing?host={}", pg.socket_dir().display());
        let mut settings = PgSettings::new(&url);
        settings.connect_timeout = Duration::from_secs(2);
        let err = PgStore::connect(&settings).await.expect_err("no such database").to_string();
        assert!(!err.contains("hunter2"), "{err}");
        assert!(err.contains("missing"), "{err}");
        assert!(!format!("{settings:?}").contains("hunter2"));
        assert_eq!(
            redact_url("postgres://u:p4ss@h:5432/db?sslmode=require&password=p4ss"),
            "postgres://u:***@h:5432/db?sslmode=require&password=***"
        );
        assert_eq!(redact_url("not a url"), "<unparsable URL>");
    }

    #[tokio::test]
    async fn migrations_are_applied_once_and_reopening_finds_the_data() {
        let pg = Server::start();
        let url = pg.create_database("reopen");
        let s = store(&url).await;
        let e = contract::sample_entry("p1", "spiffe://td/p1", &["a:1"]);
        s.create_entry(&e).await.expect("create");
        s.close().await;
        let s = store(&url).await;
        assert_eq!(s.get_entry(&e.id).await.expect("get").expect("present").selectors, e.selectors);
        let applied: i64 =
            sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations").fetch_one(s.pool()).await.unwrap();
        assert_eq!(applied, 2, "each migration recorded once, not once per open");
    }
}
