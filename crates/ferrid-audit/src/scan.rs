//! Reading and verifying a log: one pass over the file that recomputes the hash chain,
//! checks every checkpoint against it, and compares the head file (and an optional
//! witness checkpoint kept elsewhere) with the chain.
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::key::{PUBLIC_KEY_FILE, PublicKey, parse_public_pem};
use crate::line::{self, Checkpoint, Line, MAX_LINE, SignedCheckpoint};
use crate::log::{HEAD_FILE, IndexPoint, LOG_FILE};
use crate::{AuditError, AuditRecord};

/// How often (in records) the in-memory index keeps a position.
pub(crate) const INDEX_EVERY: u64 = 128;

/// What [`verify`] checks against.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// The public key to verify checkpoints with (PEM). Default: the one in the audit
    /// directory — which whoever can rewrite the log can also replace, so keep a copy
    /// elsewhere and pass it here.
    pub public_key: Option<PathBuf>,
    /// A checkpoint kept outside the audit directory (`ferrid audit checkpoint`'s
    /// output): the log must still contain exactly what it sealed.
    pub checkpoint: Option<PathBuf>,
    /// Check only the last checkpoint's signature (every checkpoint is still compared
    /// with the chain). What opening the log does; `verify` checks them all.
    pub last_signature_only: bool,
}

/// One thing wrong with a log, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file (`audit.log`, `audit.head`, or the witness checkpoint's path).
    pub file: String,
    /// The line in the log, from 1 (0 for other files).
    pub line: u64,
    /// The line's byte offset in the log.
    pub offset: u64,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line > 0 {
            write!(f, "{} line {} (byte {}): {}", self.file, self.line, self.offset, self.message)
        } else {
            write!(f, "{}: {}", self.file, self.message)
        }
    }
}

/// The unsealed end of a log: lines after the last checkpoint. The writer acknowledges
/// a record only after its checkpoint is on disk, so this is what a crash (or a write in
/// progress) leaves; nobody was told these records were written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tail {
    /// Where it starts (the end of the last checkpoint line).
    pub offset: u64,
    /// Its length.
    pub bytes: u64,
    /// Complete record lines in it.
    pub records: u64,
    /// Whether it ends in an incomplete line.
    pub torn: bool,
    /// Anything in it that is not a valid continuation of the chain.
    pub notes: Vec<String>,
}

/// The result of [`verify`].
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    /// Records sealed by the last checkpoint.
    pub records: u64,
    /// Checkpoint lines.
    pub checkpoints: u64,
    /// The last checkpoint in the log.
    pub last_checkpoint: Option<Checkpoint>,
    /// The head file's checkpoint.
    pub head: Option<Checkpoint>,
    /// The ID of the key the checkpoints were checked with.
    pub key_id: String,
    /// The unsealed tail, if any (not a problem by itself: see [`Tail`]).
    pub unsealed: Option<Tail>,
    /// Everything wrong, in file order; empty when the log verifies.
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    /// Whether the log verifies.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Everything one pass learns.
#[derive(Debug)]
pub(crate) struct Scanned {
    pub(crate) report: VerifyReport,
    pub(crate) sealed_len: u64,
    pub(crate) sealed_hash: [u8; 32],
    pub(crate) last_signed: Option<SignedCheckpoint>,
    pub(crate) index: Vec<IndexPoint>,
    pub(crate) max_time: i64,
}

/// Reads one line of at most [`MAX_LINE`] bytes into `buf`. `Ok(None)` at the end;
/// `Ok(Some(false))` for a line that does not end in a newline (the last one) or is too
/// long (then the rest of it is skipped).
fn read_line(r: &mut impl BufRead, buf: &mut Vec<u8>) -> std::io::Result<Option<(bool, u64)>> {
    buf.clear();
    let n = r.by_ref().take(MAX_LINE as u64).read_until(b'\n', buf)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
        return Ok(Some((true, n as u64)));
    }
    if n < MAX_LINE {
        return Ok(Some((false, n as u64)));
    }
    // Too long: skip to the next newline.
    let mut skipped = n as u64;
    let mut sink = Vec::new();
    loop {
        sink.clear();
        let m = r.by_ref().take(MAX_LINE as u64).read_until(b'\n', &mut sink)?;
        skipped += m as u64;
        if m == 0 || sink.last() == Some(&b'\n') {
            buf.truncate(MAX_LINE);
            return Ok(Some((false, skipped)));
        }
    }
}

fn open_log(path: &Path) -> Result<File, AuditError> {
    File::open(path).map_err(AuditError::io("opening", path))
}

/// Reads a head file or witness checkpoint; `Ok(None)` when it does not exist or is
/// empty (what an unsynced head file can be after a power loss).
pub fn read_checkpoint_file(path: &Path) -> Result<Option<SignedCheckpoint>, AuditError> {
    match std::fs::read(path) {
        Ok(b) if b.is_empty() => Ok(None),
        Ok(b) if b.len() > MAX_LINE => Err(AuditError::Invalid(format!("{} is too large", path.display()))),
        Ok(b) => line::parse_signed_checkpoint(&b)
            .map(Some)
            .map_err(|e| AuditError::Invalid(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(AuditError::io("reading", path)(e)),
    }
}

/// One pass over the log at `path`. `wanted` are sizes whose chain hash the caller
/// needs (the head's and the witness's).
pub(crate) fn scan(
    path: &Path,
    key: &PublicKey,
    all_signatures: bool,
    wanted: &[u64],
) -> Result<(Scanned, HashMap<u64, [u8; 32]>), AuditError> {
    let file_name = LOG_FILE.to_owned();
    let mut r = BufReader::with_capacity(256 * 1024, open_log(path)?);
    let mut buf = Vec::with_capacity(4096);
    let mut problems: Vec<Problem> = Vec::new();
    let mut hashes = HashMap::new();
    if wanted.contains(&0) {
        hashes.insert(0, line::genesis());
    }
    let mut prev = line::genesis();
    let mut expected = 1u64;
    let mut resync = false;
    let mut offset = 0u64;
    let mut lineno = 0u64;
    let mut checkpoints = 0u64;
    let mut last_cp: Option<Checkpoint> = None;
    let mut last_signed: Option<SignedCheckpoint> = None;
    let mut last_signed_at = (0u64, 0u64);
    let mut sealed_len = 0u64;
    let mut sealed_hash = prev;
    let mut sealed_records = 0u64;
    let mut tail_records = 0u64;
    let mut torn = false;
    let mut index = Vec::new();
    let mut max_time = i64::MIN;

    while let Some((complete, n)) = read_line(&mut r, &mut buf).map_err(AuditError::io("reading", path))? {
        lineno += 1;
        let at = offset;
        offset += n;
        let mut problem = |message: String| {
            problems.push(Problem { file: file_name.clone(), line: lineno, offset: at, message });
        };
        if !complete {
            if n as usize >= MAX_LINE {
                problem(format!("line longer than the limit of {MAX_LINE} bytes"));
                resync = true;
                continue;
            }
            torn = true;
            break;
        }
        match line::parse_line(&buf) {
            Err(e) => {
                problem(e);
                // Assume it was a record: the next line's checks resume from its own
                // stored hash instead of reporting every later record.
                resync = true;
                expected += 1;
            }
            Ok(Line::Record { seq, hash, body }) => {
                tail_records += 1;
                if seq != expected {
                    problem(format!(
                        "expected record {expected}, found record {seq} (a record was deleted, inserted or moved)"
                    ));
                    resync = true;
                }
                let computed = line::chain(&prev, seq, body);
                if !resync && computed != hash {
                    problem(format!(
                        "record {seq}: hash mismatch (the record or its stored hash was altered)"
                    ));
                }
                prev = if resync || computed != hash { hash } else { computed };
                resync = false;
                expected = seq.saturating_add(1);
                match line::parse_record(body) {
                    Err(e) => problem(format!("record {seq}: {e}")),
                    Ok(rec) => {
                        if rec.seq != seq {
                            problem(format!("record {seq}: its seq field says {}", rec.seq));
                        }
                        if seq > 0 && (seq - 1) % INDEX_EVERY == 0 {
                            index.push(IndexPoint { seq, offset: at, max_time_before: max_time });
                        }
                        max_time = max_time.max(rec.time);
                    }
                }
                if wanted.contains(&seq) {
                    hashes.insert(seq, prev);
                }
            }
            Ok(Line::Checkpoint { sig, body }) => {
                checkpoints += 1;
                tail_records = 0;
                match line::parse_checkpoint(body) {
                    Err(e) => problem(e),
                    Ok(c) => {
                        let records = expected - 1;
                        if c.size != records {
                            problem(format!("checkpoint seals {} records but {records} precede it", c.size));
                        } else if c.head != hex::encode(prev) {
                            problem(format!("checkpoint head does not match the chain at record {records}"));
                        }
                        let signed = SignedCheckpoint { checkpoint: c.clone(), body: body.to_vec(), sig };
                        if all_signatures && let Err(e) = key.check(&signed) {
                            problem(e);
                        }
                        if let Some(p) = &last_cp
                            && c.size < p.size
                        {
                            problem(format!("checkpoint size {} is below the previous {}", c.size, p.size));
                        }
                        last_cp = Some(c);
                        last_signed = Some(signed);
                        last_signed_at = (lineno, at);
                    }
                }
                sealed_len = offset;
                sealed_hash = prev;
                sealed_records = expected - 1;
            }
        }
    }
    if !all_signatures
        && let Some(s) = &last_signed
        && let Err(e) = key.check(s)
    {
        problems.push(Problem {
            file: file_name.clone(),
            line: last_signed_at.0,
            offset: last_signed_at.1,
            message: e,
        });
    }
    // Problems past the last checkpoint are in the unsealed tail: never acknowledged.
    let (problems, tail_problems): (Vec<_>, Vec<_>) =
        problems.into_iter().partition(|p| p.offset < sealed_len);
    let tail = (offset > sealed_len).then(|| Tail {
        offset: sealed_len,
        bytes: offset - sealed_len,
        records: tail_records,
        torn,
        notes: tail_problems.iter().map(ToString::to_string).collect(),
    });
    // Chain hashes the caller wanted that lie in the unsealed tail do not count.
    hashes.retain(|size, _| *size <= sealed_records);
    index.retain(|p: &IndexPoint| p.seq <= sealed_records);
    Ok((
        Scanned {
            report: VerifyReport {
                records: sealed_records,
                checkpoints,
                last_checkpoint: last_signed.as_ref().map(|s| s.checkpoint.clone()),
                head: None,
                key_id: key.key_id.clone(),
                unsealed: tail,
                problems,
            },
            sealed_len,
            sealed_hash,
            last_signed,
            index,
            max_time,
        },
        hashes,
    ))
}

/// Compares a signed checkpoint kept outside the log (the head file, a witness) with
/// the log's chain.
fn compare(
    what: &str,
    file: &str,
    c: &SignedCheckpoint,
    key: &PublicKey,
    records: u64,
    hashes: &HashMap<u64, [u8; 32]>,
) -> Option<Problem> {
    let problem = |message: String| Some(Problem { file: file.to_owned(), line: 0, offset: 0, message });
    if let Err(e) = key.check(c) {
        return problem(format!("{what}: {e}"));
    }
    let size = c.checkpoint.size;
    if size > records {
        return problem(format!(
            "{what} seals {size} records but the log has only {records} sealed records: the log was truncated or rolled back"
        ));
    }
    match hashes.get(&size) {
        Some(h) if hex::encode(h) == c.checkpoint.head => None,
        _ => problem(format!(
            "{what} (size {size}) does not match the log's chain at record {size}: the log was rewritten"
        )),
    }
}

/// Scans the log in `dir` and checks the head file and the witness against it.
pub(crate) fn check(
    dir: &Path,
    key: &PublicKey,
    witness: Option<&Path>,
    all_signatures: bool,
) -> Result<Scanned, AuditError> {
    let head_path = dir.join(HEAD_FILE);
    let mut early = Vec::new();
    let head = match read_checkpoint_file(&head_path) {
        Ok(h) => h,
        Err(e) => {
            early.push(Problem { file: HEAD_FILE.into(), line: 0, offset: 0, message: e.to_string() });
            None
        }
    };
    let witness = match witness {
        None => None,
        Some(p) => match read_checkpoint_file(p)? {
            Some(w) => Some((p.display().to_string(), w)),
            None => return Err(AuditError::Invalid(format!("witness checkpoint {} not found", p.display()))),
        },
    };
    let wanted: Vec<u64> =
        head.iter().chain(witness.iter().map(|w| &w.1)).map(|c| c.checkpoint.size).collect();
    let (mut s, hashes) = scan(&dir.join(LOG_FILE), key, all_signatures, &wanted)?;
    let records = s.report.records;
    s.report.problems.splice(0..0, early);
    if let Some(h) = &head {
        s.report.problems.extend(compare("the head file's checkpoint", HEAD_FILE, h, key, records, &hashes));
        s.report.head = Some(h.checkpoint.clone());
    }
    if let Some((name, w)) = &witness {
        s.report.problems.extend(compare("the witness checkpoint", name, w, key, records, &hashes));
    }
    Ok(s)
}

/// Verifies the log in `dir`: the hash chain, every checkpoint (against the chain and,
/// unless `last_signature_only`, its signature), the head file, and the witness
/// checkpoint if one is given. `Err` only when the files cannot be read at all; every
/// inconsistency is a [`Problem`] in the report.
pub fn verify(dir: &Path, opts: &VerifyOptions) -> Result<VerifyReport, AuditError> {
    let pub_path = opts.public_key.clone().unwrap_or_else(|| dir.join(PUBLIC_KEY_FILE));
    let text = std::fs::read_to_string(&pub_path).map_err(AuditError::io("reading", &pub_path))?;
    let key = parse_public_pem(&text)?;
    Ok(check(dir, &key, opts.checkpoint.as_deref(), !opts.last_signature_only)?.report)
}

/// Calls `f` with every record in the log in `dir` from byte `from` up to `until`
/// (the end of the file when `None`), oldest first, skipping checkpoints. This does not
/// verify anything (see [`verify`]); lines that do not parse are counted and skipped.
/// Returns how many were skipped.
pub fn records(
    dir: &Path,
    from: u64,
    until: Option<u64>,
    f: impl FnMut(AuditRecord),
) -> Result<u64, AuditError> {
    read_records(&dir.join(LOG_FILE), from, until, f)
}

pub(crate) fn read_records(
    path: &Path,
    from: u64,
    until: Option<u64>,
    mut f: impl FnMut(AuditRecord),
) -> Result<u64, AuditError> {
    let mut file = open_log(path)?;
    file.seek(SeekFrom::Start(from)).map_err(AuditError::io("seeking in", path))?;
    let limit = until.map_or(u64::MAX, |u| u.saturating_sub(from));
    let mut r = BufReader::with_capacity(256 * 1024, file.take(limit));
    let mut buf = Vec::with_capacity(4096);
    let mut skipped = 0;
    while let Some((complete, _)) = read_line(&mut r, &mut buf).map_err(AuditError::io("reading", path))? {
        if !complete {
            skipped += 1;
            continue;
        }
        match line::parse_line(&buf) {
            Ok(Line::Record { body, .. }) => match line::parse_record(body) {
                Ok(rec) => f(rec),
                Err(_) => skipped += 1,
            },
            Ok(Line::Checkpoint { .. }) => {}
            Err(_) => skipped += 1,
        }
    }
    Ok(skipped)
}
