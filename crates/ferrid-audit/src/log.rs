//! The writer: one thread that commits records in groups, each group sealed by a signed
//! checkpoint and made durable by one `fdatasync` before any caller hears back.
use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ferrid_types::Clock;
use tokio::sync::{mpsc, oneshot};

use crate::key::{SigningKey, sync_dir};
use crate::line::{self, Checkpoint, MAX_LINE, SignedCheckpoint};
use crate::scan::{INDEX_EVERY, check, read_records};
use crate::{AuditError, AuditRecord};

/// The log's file name in the audit directory.
pub const LOG_FILE: &str = "audit.log";
/// The head file's name: the latest checkpoint, replaced atomically after each commit.
pub const HEAD_FILE: &str = "audit.head";

/// Records that may wait for the writer.
const QUEUE: usize = 16 * 1024;
/// Records in one commit at most.
const MAX_BATCH: usize = 4096;
/// While more records are waiting, the head file is replaced at most this often.
/// Replacing it (create, write, rename) adds directory and allocation work to the next
/// commit's journal flush; on ext4 that doubled the cost of every commit (2.5 → 4.8 ms
/// measured here), so under load it is done once per interval instead of per commit.
/// When the queue is empty after a commit the head is always brought up to date before
/// anyone hears back.
const HEAD_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// A position in the log the index keeps: record `seq` starts at byte `offset`, and
/// every record before it is older than `max_time_before` or equal to it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IndexPoint {
    pub(crate) seq: u64,
    pub(crate) offset: u64,
    pub(crate) max_time_before: i64,
}

/// What readers share with the writer.
#[derive(Debug, Default)]
struct State {
    /// The end of the last commit: readers never read past it.
    committed_len: u64,
    index: Vec<IndexPoint>,
    last_checkpoint: Option<SignedCheckpoint>,
}

type Reply = oneshot::Sender<Result<u64, AuditError>>;

struct Job {
    record: AuditRecord,
    reply: Option<Reply>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    tx: mpsc::Sender<Job>,
    state: Arc<Mutex<State>>,
    key_id: String,
}

/// An open audit log. Cloning is cheap; every clone appends to the same writer, which
/// stops when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct AuditLog {
    inner: Arc<Inner>,
}

/// A record handed to the writer (see [`AuditLog::submit`]).
#[derive(Debug)]
pub struct Pending(oneshot::Receiver<Result<u64, AuditError>>);

impl Pending {
    /// Waits until the record is durable and sealed; its `seq`.
    pub async fn wait(self) -> Result<u64, AuditError> {
        self.0.await.unwrap_or_else(|_| Err(AuditError::Failed("the writer stopped".into())))
    }
}

impl AuditLog {
    /// Opens (or creates) the log in `dir`: loads or generates the signing key, verifies
    /// the whole hash chain, every checkpoint against it, the last checkpoint's
    /// signature and the head file. An unsealed tail (records after the last checkpoint,
    /// which were never acknowledged: a crash mid-commit) is cut off with a warning.
    /// Anything else inconsistent is [`AuditError::Tampered`] and the log is not opened:
    /// a server must not keep appending to a log that no longer verifies (move it aside
    /// to start a new one; see `docs/audit.md`).
    pub async fn open(dir: &Path, clock: Arc<dyn Clock>) -> Result<AuditLog, AuditError> {
        let dir = dir.to_path_buf();
        tokio::task::spawn_blocking(move || open_blocking(dir, clock))
            .await
            .map_err(|e| AuditError::Failed(format!("opening the audit log: {e}")))?
    }

    /// Appends a record; returns its `seq` once it is on disk (`fdatasync`) and sealed by
    /// a signed checkpoint. The record's `seq` is assigned here.
    pub async fn append(&self, record: AuditRecord) -> Result<u64, AuditError> {
        let (reply, rx) = oneshot::channel();
        self.inner
            .tx
            .send(Job { record, reply: Some(reply) })
            .await
            .map_err(|_| AuditError::Failed("the writer stopped".into()))?;
        Pending(rx).wait().await
    }

    /// Queues a record without waiting (for callers that cannot `.await`, such as a
    /// refusal on a synchronous path). It is written in the next commit, in queue order;
    /// [`Pending::wait`] tells when it is durable. Fails at once when the queue is full.
    pub fn submit(&self, record: AuditRecord) -> Result<Pending, AuditError> {
        let (reply, rx) = oneshot::channel();
        self.inner.tx.try_send(Job { record, reply: Some(reply) }).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => AuditError::Busy(QUEUE),
            mpsc::error::TrySendError::Closed(_) => AuditError::Failed("the writer stopped".into()),
        })?;
        Ok(Pending(rx))
    }

    /// Records whose `time` is at or after `since` (Unix seconds), oldest first, read
    /// from disk, collected. For a scan of a log of any size use [`AuditLog::fold_since`].
    pub async fn records_since(&self, since: i64) -> Result<Vec<AuditRecord>, AuditError> {
        self.fold_since(since, Vec::new(), |out, r| out.push(r)).await
    }

    /// Streams the records whose `time` is at or after `since` (Unix seconds), oldest
    /// first, through `f` with the accumulator `acc`, and returns it: one record is
    /// held at a time, so memory is what `f` keeps, whatever the size of the log. A
    /// sparse in-memory index (every 128th record's offset and the latest time before
    /// it) lets a recent `since` skip the older part of the file; the scan ends at what
    /// was committed when it started.
    pub async fn fold_since<T, F>(&self, since: i64, acc: T, mut f: F) -> Result<T, AuditError>
    where
        T: Send + 'static,
        F: FnMut(&mut T, AuditRecord) + Send + 'static,
    {
        let (from, until) = {
            let st = self.inner.state.lock().unwrap_or_else(|e| e.into_inner());
            let n = st.index.partition_point(|p| p.max_time_before < since);
            let from = if n == 0 { 0 } else { st.index[n - 1].offset };
            (from, st.committed_len)
        };
        let path = self.inner.dir.join(LOG_FILE);
        tokio::task::spawn_blocking(move || {
            let mut acc = acc;
            read_records(&path, from, Some(until), |r| {
                if r.time >= since {
                    f(&mut acc, r);
                }
            })?;
            Ok(acc)
        })
        .await
        .map_err(|e| AuditError::Failed(format!("reading the audit log: {e}")))?
    }

    /// The latest checkpoint (what the head file holds).
    pub fn checkpoint(&self) -> Option<SignedCheckpoint> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner()).last_checkpoint.clone()
    }

    /// The signing key's ID.
    pub fn key_id(&self) -> &str {
        &self.inner.key_id
    }

    /// The audit directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }
}

fn open_blocking(dir: PathBuf, clock: Arc<dyn Clock>) -> Result<AuditLog, AuditError> {
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(AuditError::io("creating", &dir))?;
    }
    let log_path = dir.join(LOG_FILE);
    let existing = match fs::metadata(&log_path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(AuditError::io("reading", &log_path)(e)),
    };
    let key = SigningKey::load_or_create(&dir, existing == 0)?;
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&log_path)
        .map_err(AuditError::io("opening", &log_path))?;
    if existing == 0 {
        sync_dir(&dir)?;
    }
    let scanned = check(&dir, &key.public, None, false)?;
    if !scanned.report.problems.is_empty() {
        return Err(AuditError::Tampered {
            dir: dir.clone(),
            problems: scanned.report.problems.iter().map(ToString::to_string).collect(),
        });
    }
    if let Some(t) = &scanned.report.unsealed {
        tracing::warn!(
            log = %log_path.display(),
            offset = t.offset,
            bytes = t.bytes,
            records = t.records,
            torn = t.torn,
            notes = ?t.notes,
            "cutting off the unsealed end of the audit log: records after the last checkpoint were never acknowledged (the server stopped mid-commit)"
        );
        file.set_len(t.offset).map_err(AuditError::io("truncating", &log_path))?;
        file.sync_all().map_err(AuditError::io("syncing", &log_path))?;
    }
    let head_path = dir.join(HEAD_FILE);
    if let Some(last) = &scanned.last_signed
        && scanned.report.head.as_ref() != Some(&last.checkpoint)
    {
        // The head is missing or older than the log (a crash between the log's sync
        // and the head's replacement): bring it up to date.
        if scanned.report.head.is_none() {
            tracing::warn!(head = %head_path.display(), "the audit head file is missing; rewriting it from the log's last checkpoint");
        }
        write_head(&dir, last)?;
    }
    let records = scanned.report.records;
    let state = Arc::new(Mutex::new(State {
        committed_len: scanned.sealed_len,
        index: scanned.index,
        last_checkpoint: scanned.last_signed,
    }));
    let key_id = key.public.key_id.clone();
    let writer = Writer {
        file,
        dir: dir.clone(),
        log_path,
        len: scanned.sealed_len,
        prev: scanned.sealed_hash,
        next_seq: records + 1,
        max_time: scanned.max_time,
        key,
        clock,
        state: state.clone(),
        failed: None,
        head_written: std::time::Instant::now(),
    };
    let (tx, rx) = mpsc::channel(QUEUE);
    std::thread::Builder::new()
        .name("ferrid-audit-writer".into())
        .spawn(move || writer.run(rx))
        .map_err(|e| AuditError::Failed(format!("starting the writer thread: {e}")))?;
    tracing::info!(dir = %dir.display(), records, key_id = %key_id, "audit log opened");
    Ok(AuditLog { inner: Arc::new(Inner { dir, tx, state, key_id }) })
}

/// Replaces the head file: a temporary file renamed over it. Neither the file nor the
/// directory is synced (that would double the commit's cost): after a power loss the
/// head may be older than the log, which is allowed (the log was synced first, so the
/// head is never newer), or empty, which counts as missing and is rewritten on open.
fn write_head(dir: &Path, c: &SignedCheckpoint) -> Result<(), AuditError> {
    let tmp = dir.join(format!("{HEAD_FILE}.tmp"));
    let mut text = c.to_line();
    text.push(b'\n');
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(AuditError::io("creating", &tmp))?;
    f.write_all(&text).map_err(AuditError::io("writing", &tmp))?;
    let head = dir.join(HEAD_FILE);
    fs::rename(&tmp, &head).map_err(AuditError::io("replacing", &head))
}

struct Writer {
    file: File,
    dir: PathBuf,
    log_path: PathBuf,
    len: u64,
    prev: [u8; 32],
    next_seq: u64,
    max_time: i64,
    key: SigningKey,
    clock: Arc<dyn Clock>,
    state: Arc<Mutex<State>>,
    failed: Option<String>,
    /// When the head file was last replaced.
    head_written: std::time::Instant,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        let mut batch = Vec::new();
        while let Some(job) = rx.blocking_recv() {
            batch.push(job);
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(j) => batch.push(j),
                    Err(_) => break,
                }
            }
            self.commit(&mut batch, &rx);
        }
    }

    fn commit(&mut self, batch: &mut Vec<Job>, rx: &mpsc::Receiver<Job>) {
        if let Some(msg) = &self.failed {
            for job in batch.drain(..) {
                reply(job.reply, Err(AuditError::Failed(msg.clone())));
            }
            return;
        }
        let mut buf = Vec::with_capacity(batch.len() * 512 + 256);
        let (mut prev, mut seq, mut max_time) = (self.prev, self.next_seq, self.max_time);
        let mut points = Vec::new();
        let mut accepted = Vec::with_capacity(batch.len());
        for mut job in batch.drain(..) {
            job.record.seq = seq;
            let body = match line::record_body(&job.record) {
                Ok(b) => b,
                Err(e) => {
                    reply(job.reply, Err(AuditError::Invalid(e)));
                    continue;
                }
            };
            let hash = line::chain(&prev, seq, &body);
            let l = line::encode_record(seq, &hash, &body);
            if l.len() + 1 > MAX_LINE {
                reply(job.reply, Err(AuditError::TooLarge { len: l.len() + 1, limit: MAX_LINE }));
                continue;
            }
            if (seq - 1) % INDEX_EVERY == 0 {
                points.push(IndexPoint {
                    seq,
                    offset: self.len + buf.len() as u64,
                    max_time_before: max_time,
                });
            }
            max_time = max_time.max(job.record.time);
            buf.extend_from_slice(&l);
            buf.push(b'\n');
            accepted.push((seq, job.reply));
            prev = hash;
            seq += 1;
        }
        if accepted.is_empty() {
            return;
        }
        let checkpoint = Checkpoint {
            size: seq - 1,
            head: hex::encode(prev),
            time: self.clock.unix(),
            key_id: self.key.public.key_id.clone(),
        };
        let result = self.key.sign(&checkpoint).and_then(|signed| {
            buf.extend_from_slice(&signed.to_line());
            buf.push(b'\n');
            self.file.write_all(&buf).map_err(AuditError::io("appending to", &self.log_path))?;
            self.file.sync_data().map_err(AuditError::io("syncing", &self.log_path))?;
            Ok(signed)
        });
        let signed = match result {
            Ok(s) => s,
            Err(e) => {
                // The file may now end in part of this commit; only reopening (which
                // cuts the unsealed tail) makes it consistent again.
                let msg = e.to_string();
                tracing::error!(error = %msg, "audit log write failed; refusing further appends until restart");
                self.failed = Some(msg.clone());
                for (_, r) in accepted {
                    reply(r, Err(AuditError::Failed(msg.clone())));
                }
                return;
            }
        };
        self.len += buf.len() as u64;
        self.prev = prev;
        self.next_seq = seq;
        self.max_time = max_time;
        {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            st.committed_len = self.len;
            st.index.extend(points);
            st.last_checkpoint = Some(signed.clone());
        }
        // The head goes first so that whoever heard back also finds it up to date,
        // unless more records are already waiting (then within `HEAD_EVERY`, and with
        // the last commit before the queue drains).
        if rx.is_empty() || self.head_written.elapsed() >= HEAD_EVERY {
            if let Err(e) = write_head(&self.dir, &signed) {
                tracing::warn!(error = %e, "could not replace the audit head file (the log itself is durable)");
            }
            self.head_written = std::time::Instant::now();
        }
        for (s, r) in accepted {
            reply(r, Ok(s));
        }
    }
}

fn reply(r: Option<Reply>, v: Result<u64, AuditError>) {
    if let Some(r) = r {
        let _ = r.send(v);
    }
}
