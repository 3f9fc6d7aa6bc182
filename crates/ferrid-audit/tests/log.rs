//! The audit log through its public API: appends, reads, and every kind of tampering
//! `verify` and `open` must catch.
use std::path::Path;
use std::sync::Arc;

use ferrid_audit::{
    AuditError, AuditLog, AuditRecord, HEAD_FILE, LOG_FILE, RecordKind, VerifyOptions, What, Who, Why, verify,
};
use ferrid_types::{Clock, ManualClock};

fn clock() -> Arc<dyn Clock> {
    Arc::new(ManualClock::at_unix(1_700_000_000))
}

fn rec(i: i64) -> AuditRecord {
    AuditRecord {
        time: 1_700_000_000 + i,
        kind: RecordKind::Issuance,
        who: Who {
            spiffe_id: format!("spiffe://td/ferrid/agent/join_token/{i}"),
            selectors: vec!["unix:uid:1000".into()],
            ..Default::default()
        },
        what: What {
            credential_id: Some(format!("serial-{i}")),
            credential_type: Some("x509-svid".into()),
            spiffe_id: Some(format!("spiffe://td/w/{i}")),
            ttl: Some(600),
            task_id: (i % 2 == 0).then(|| format!("task-{i}")),
            ..Default::default()
        },
        why: Why { decision: "allow".into(), policy_hash: Some("abc".into()), reason: None },
        key_id: Some("ca-1".into()),
        seq: 0,
    }
}

/// A log with `batches` commits of `per` records each.
async fn filled(dir: &Path, batches: i64, per: i64) -> AuditLog {
    let log = AuditLog::open(dir, clock()).await.unwrap();
    for b in 0..batches {
        let waits: Vec<_> = (0..per).map(|i| log.submit(rec(b * per + i)).unwrap()).collect();
        for w in waits {
            w.wait().await.unwrap();
        }
    }
    log
}

/// A log of `n` records appended one at a time: `record, checkpoint` pairs, so line
/// `2k - 1` is record `k` and line `2k` its checkpoint.
async fn sequential(dir: &Path, n: i64) {
    let log = AuditLog::open(dir, clock()).await.unwrap();
    for i in 0..n {
        log.append(rec(i)).await.unwrap();
    }
}

fn lines(dir: &Path) -> Vec<Vec<u8>> {
    std::fs::read(dir.join(LOG_FILE)).unwrap().split_inclusive(|b| *b == b'\n').map(<[u8]>::to_vec).collect()
}

fn write_lines(dir: &Path, lines: &[Vec<u8>]) {
    std::fs::write(dir.join(LOG_FILE), lines.concat()).unwrap();
}

fn problems(dir: &Path) -> Vec<String> {
    verify(dir, &VerifyOptions::default()).unwrap().problems.iter().map(ToString::to_string).collect()
}

fn is_checkpoint(l: &[u8]) -> bool {
    l.starts_with(b"{\"sig\"")
}

#[tokio::test]
async fn round_trip() {
    let d = tempfile::tempdir().unwrap();
    let log = AuditLog::open(d.path(), clock()).await.unwrap();
    for i in 0..5 {
        assert_eq!(log.append(rec(i)).await.unwrap(), u64::try_from(i).unwrap() + 1);
    }
    let got = log.records_since(0).await.unwrap();
    assert_eq!(got.len(), 5);
    for (i, r) in got.iter().enumerate() {
        let mut want = rec(i64::try_from(i).unwrap());
        want.seq = u64::try_from(i).unwrap() + 1;
        assert_eq!(*r, want);
    }
    let report = verify(d.path(), &VerifyOptions::default()).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!(report.records, 5);
    assert_eq!(report.checkpoints, 5, "one append at a time: one commit each");
    assert_eq!(report.head.as_ref().unwrap().size, 5);
    assert!(report.unsealed.is_none());
    assert_eq!(log.checkpoint().unwrap().checkpoint.size, 5);
    drop(log);
    // Reopening continues the chain.
    let log = AuditLog::open(d.path(), clock()).await.unwrap();
    assert_eq!(log.append(rec(5)).await.unwrap(), 6);
    assert!(verify(d.path(), &VerifyOptions::default()).unwrap().is_ok());
}

#[tokio::test]
async fn files_have_private_modes() {
    use std::os::unix::fs::PermissionsExt as _;
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("audit");
    let _log = filled(&dir, 1, 1).await;
    let mode = |p: &str| std::fs::metadata(dir.join(p)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(""), 0o700);
    assert_eq!(mode(ferrid_audit::SIGNING_KEY_FILE), 0o600);
    assert_eq!(mode(LOG_FILE), 0o600);
}

#[tokio::test]
async fn records_since_uses_the_index_and_filters_by_time() {
    let d = tempfile::tempdir().unwrap();
    let log = filled(d.path(), 10, 100).await;
    let got = log.records_since(1_700_000_000 + 950).await.unwrap();
    assert_eq!(got.len(), 50);
    assert_eq!(got[0].seq, 951);
    assert!(got.windows(2).all(|w| w[0].seq + 1 == w[1].seq));
    assert_eq!(log.records_since(0).await.unwrap().len(), 1000);
    assert!(log.records_since(1_800_000_000).await.unwrap().is_empty());
}

#[tokio::test]
async fn concurrent_appends_are_all_present_in_order() {
    let d = tempfile::tempdir().unwrap();
    let log = AuditLog::open(d.path(), clock()).await.unwrap();
    let mut tasks = Vec::new();
    for t in 0..16 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..50 {
                seqs.push((log.append(rec(t * 1000 + i)).await.unwrap(), t * 1000 + i));
            }
            seqs
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_unstable();
    let seqs: Vec<u64> = all.iter().map(|a| a.0).collect();
    assert_eq!(seqs, (1..=800).collect::<Vec<u64>>(), "every seq handed out once, none lost");
    let on_disk = log.records_since(0).await.unwrap();
    assert_eq!(on_disk.len(), 800);
    for ((seq, i), r) in all.iter().zip(&on_disk) {
        assert_eq!(r.seq, *seq);
        assert_eq!(r.what.credential_id.as_deref(), Some(format!("serial-{i}").as_str()));
    }
    let report = verify(d.path(), &VerifyOptions::default()).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert!(
        report.checkpoints < 800,
        "concurrent appends share commits ({} checkpoints)",
        report.checkpoints
    );
}

#[tokio::test]
async fn flipping_any_byte_of_a_sealed_line_is_detected() {
    let d = tempfile::tempdir().unwrap();
    drop(filled(d.path(), 3, 2).await);
    let orig = lines(d.path());
    // Every byte of the first record, of a hash, and of a checkpoint's signature and
    // body: each flip must surface as a problem.
    for (li, line) in orig.iter().enumerate().take(3) {
        for pos in 0..line.len() - 1 {
            let mut l = orig.clone();
            l[li][pos] ^= 0x01;
            write_lines(d.path(), &l);
            let p = problems(d.path());
            assert!(
                !p.is_empty(),
                "flip at line {} byte {pos} ({:?}) went unnoticed",
                li + 1,
                String::from_utf8_lossy(&line[pos..=pos])
            );
            assert!(p[0].contains(&format!("line {}", li + 1)), "{p:?} should name line {}", li + 1);
        }
    }
    write_lines(d.path(), &orig);
    assert!(problems(d.path()).is_empty());
}

#[tokio::test]
async fn precise_messages_per_position_class() {
    let d = tempfile::tempdir().unwrap();
    sequential(d.path(), 2).await;
    let orig = lines(d.path());
    let flip = |li: usize, needle: &[u8], off: usize| {
        let mut l = orig.clone();
        let at = l[li].windows(needle.len()).position(|w| w == needle).unwrap() + needle.len() + off;
        l[li][at] = if l[li][at] == b'1' { b'2' } else { b'1' };
        write_lines(d.path(), &l);
        problems(d.path())
    };
    // Record body (the TTL digit).
    let p = flip(2, b"\"ttl\":", 0);
    assert!(p[0].contains("line 3") && p[0].contains("record 2: hash mismatch"), "{p:?}");
    // The stored hash.
    let p = flip(0, b"\"hash\":\"", 5);
    assert!(p[0].contains("line 1") && p[0].contains("record 1: hash mismatch"), "{p:?}");
    // The checkpoint's signature.
    let p = flip(1, b"{\"sig\":\"", 10);
    assert!(p.iter().any(|m| m.contains("line 2") && m.contains("signature")), "{p:?}");
    // The checkpoint's head.
    let p = flip(1, b"\"head\":\"", 3);
    assert!(p[0].contains("line 2") && p[0].contains("checkpoint head does not match"), "{p:?}");
    // The checkpoint's size.
    let p = flip(1, b"\"size\":", 0);
    assert!(p[0].contains("line 2") && p[0].contains("checkpoint seals 2 records but 1 precede it"), "{p:?}");
    write_lines(d.path(), &orig);
    assert!(problems(d.path()).is_empty());
}

#[tokio::test]
async fn deleting_a_record_is_detected() {
    let d = tempfile::tempdir().unwrap();
    sequential(d.path(), 3).await;
    let mut l = lines(d.path());
    assert!(!is_checkpoint(&l[2]));
    l.remove(2);
    write_lines(d.path(), &l);
    let p = problems(d.path());
    assert!(p[0].contains("line 3") && p[0].contains("checkpoint seals 2 records but 1 precede it"), "{p:?}");
    assert!(
        p.iter().any(|m| m.contains("line 4") && m.contains("expected record 2, found record 3")),
        "{p:?}"
    );
    let err = AuditLog::open(d.path(), clock()).await.unwrap_err();
    assert!(matches!(err, AuditError::Tampered { .. }), "the server must not start on it: {err}");
}

#[tokio::test]
async fn reordering_two_lines_is_detected() {
    let d = tempfile::tempdir().unwrap();
    sequential(d.path(), 3).await;
    let mut l = lines(d.path());
    l.swap(2, 4);
    write_lines(d.path(), &l);
    let p = problems(d.path());
    assert!(p[0].contains("line 3") && p[0].contains("expected record 2, found record 3"), "{p:?}");
}

#[tokio::test]
async fn truncation_of_sealed_lines_is_detected_through_the_head() {
    let d = tempfile::tempdir().unwrap();
    sequential(d.path(), 3).await;
    let orig = lines(d.path());
    assert_eq!(orig.len(), 6);
    // Whole lines: the last commit (its record and checkpoint).
    write_lines(d.path(), &orig[..4]);
    let p = problems(d.path());
    assert!(
        p.iter().any(|m| m.contains(HEAD_FILE) && m.contains("seals 3 records but the log has only 2")),
        "{p:?}"
    );
    let err = AuditLog::open(d.path(), clock()).await.unwrap_err();
    assert!(matches!(err, AuditError::Tampered { .. }), "{err}");
    // Mid-line in the last checkpoint: the last commit loses its seal.
    let mut cut = orig.concat();
    cut.truncate(cut.len() - 10);
    std::fs::write(d.path().join(LOG_FILE), &cut).unwrap();
    let r = verify(d.path(), &VerifyOptions::default()).unwrap();
    assert!(
        r.problems.iter().any(|m| m.to_string().contains("truncated or rolled back")),
        "{:?}",
        r.problems
    );
    // Mid-line in an earlier record.
    let mut cut = orig[..3].concat();
    cut.truncate(cut.len() - 10);
    std::fs::write(d.path().join(LOG_FILE), &cut).unwrap();
    let r = verify(d.path(), &VerifyOptions::default()).unwrap();
    assert!(
        r.problems.iter().any(|m| m.to_string().contains("has only 1 sealed records")),
        "{:?}",
        r.problems
    );
    // Only the last checkpoint line deleted: its record is unsealed, and the head
    // file still knows there were three.
    write_lines(d.path(), &orig[..5]);
    let r = verify(d.path(), &VerifyOptions::default()).unwrap();
    assert_eq!(r.unsealed.as_ref().unwrap().records, 1);
    assert!(
        r.problems.iter().any(|m| m.to_string().contains("truncated or rolled back")),
        "{:?}",
        r.problems
    );
}

#[tokio::test]
async fn an_unsealed_torn_tail_is_cut_on_open_and_reported() {
    let d = tempfile::tempdir().unwrap();
    drop(filled(d.path(), 2, 2).await);
    let orig = std::fs::read(d.path().join(LOG_FILE)).unwrap();
    // A crash mid-commit: a complete record line and half of the next, no checkpoint.
    let mut torn = orig.clone();
    torn.extend_from_slice(br#"{"seq":5,"hash":"00"#);
    std::fs::write(d.path().join(LOG_FILE), &torn).unwrap();
    let r = verify(d.path(), &VerifyOptions::default()).unwrap();
    assert!(r.is_ok(), "an unsealed tail is not tampering: {:?}", r.problems);
    let tail = r.unsealed.unwrap();
    assert!(tail.torn);
    assert_eq!(tail.offset, orig.len() as u64);
    let log = AuditLog::open(d.path(), clock()).await.unwrap();
    assert_eq!(std::fs::read(d.path().join(LOG_FILE)).unwrap(), orig, "cut back to the last checkpoint");
    assert_eq!(log.append(rec(9)).await.unwrap(), 5);
    assert!(verify(d.path(), &VerifyOptions::default()).unwrap().is_ok());
}

#[tokio::test]
async fn a_checkpoint_signed_by_another_key_is_refused() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    drop(filled(a.path(), 1, 1).await);
    drop(filled(b.path(), 1, 1).await);
    // Same record content, so only the checkpoints' keys differ.
    let mut la = lines(a.path());
    let lb = lines(b.path());
    assert_eq!(la[0], lb[0]);
    la[1] = lb[1].clone();
    write_lines(a.path(), &la);
    let p = problems(a.path());
    assert!(p.iter().any(|m| m.contains("line 2") && m.contains("is signed by key")), "{p:?}");
    // Verifying against the other directory's public key rejects everything in `a`.
    let opts = VerifyOptions {
        public_key: Some(b.path().join(ferrid_audit::PUBLIC_KEY_FILE)),
        ..Default::default()
    };
    write_lines(a.path(), &lines(a.path()));
    let r = verify(a.path(), &opts).unwrap();
    assert!(!r.is_ok());
}

#[tokio::test]
async fn a_head_file_newer_than_the_log_is_detected() {
    let d = tempfile::tempdir().unwrap();
    drop(filled(d.path(), 2, 1).await);
    let old_log = std::fs::read(d.path().join(LOG_FILE)).unwrap();
    let log = AuditLog::open(d.path(), clock()).await.unwrap();
    log.append(rec(7)).await.unwrap();
    drop(log);
    // Roll the log back to before the last append, but not the head.
    std::fs::write(d.path().join(LOG_FILE), &old_log).unwrap();
    let p = problems(d.path());
    assert!(p.iter().any(|m| m.contains("seals 3 records but the log has only 2")), "{p:?}");
}

#[tokio::test]
async fn a_witness_checkpoint_catches_a_rollback_of_both_files() {
    let d = tempfile::tempdir().unwrap();
    drop(filled(d.path(), 2, 1).await);
    let (old_log, old_head) =
        (std::fs::read(d.path().join(LOG_FILE)).unwrap(), std::fs::read(d.path().join(HEAD_FILE)).unwrap());
    let log = AuditLog::open(d.path(), clock()).await.unwrap();
    log.append(rec(7)).await.unwrap();
    let witness = d.path().join("witness");
    std::fs::write(&witness, log.checkpoint().unwrap().to_line()).unwrap();
    drop(log);
    std::fs::write(d.path().join(LOG_FILE), &old_log).unwrap();
    std::fs::write(d.path().join(HEAD_FILE), &old_head).unwrap();
    assert!(problems(d.path()).is_empty(), "without a witness a consistent rollback is invisible");
    let opts = VerifyOptions { checkpoint: Some(witness), ..Default::default() };
    let r = verify(d.path(), &opts).unwrap();
    assert!(
        r.problems.iter().any(|p| p.to_string().contains("witness") && p.to_string().contains("rolled back"))
    );
}

#[tokio::test]
async fn oversized_records_are_refused_on_write_and_lines_on_read() {
    let d = tempfile::tempdir().unwrap();
    let log = AuditLog::open(d.path(), clock()).await.unwrap();
    let mut big = rec(1);
    big.why.reason = Some("x".repeat(ferrid_audit::MAX_LINE));
    assert!(matches!(log.append(big).await, Err(AuditError::TooLarge { .. })));
    assert_eq!(log.append(rec(2)).await.unwrap(), 1, "a refused record takes no seq");
    drop(log);
    let mut l = lines(d.path());
    let mut long = b"{\"seq\":2,".to_vec();
    long.extend(std::iter::repeat_n(b' ', ferrid_audit::MAX_LINE + 10));
    long.push(b'\n');
    l.insert(1, long);
    write_lines(d.path(), &l);
    let p = problems(d.path());
    assert!(p[0].contains("line 2") && p[0].contains("longer than the limit"), "{p:?}");
}

#[tokio::test]
async fn a_missing_signing_key_with_a_log_refuses_to_open() {
    let d = tempfile::tempdir().unwrap();
    drop(filled(d.path(), 1, 1).await);
    std::fs::remove_file(d.path().join(ferrid_audit::SIGNING_KEY_FILE)).unwrap();
    let err = AuditLog::open(d.path(), clock()).await.unwrap_err();
    assert!(matches!(err, AuditError::Key(_)), "{err}");
}

#[tokio::test]
async fn a_missing_head_is_rewritten_on_open() {
    let d = tempfile::tempdir().unwrap();
    drop(filled(d.path(), 2, 1).await);
    std::fs::remove_file(d.path().join(HEAD_FILE)).unwrap();
    let log = AuditLog::open(d.path(), clock()).await.unwrap();
    drop(log);
    assert_eq!(verify(d.path(), &VerifyOptions::default()).unwrap().head.unwrap().size, 2);
}

#[tokio::test]
async fn an_empty_head_counts_as_missing() {
    // What an unsynced head file can be after a power loss.
    let d = tempfile::tempdir().unwrap();
    drop(filled(d.path(), 2, 1).await);
    std::fs::write(d.path().join(HEAD_FILE), b"").unwrap();
    let r = verify(d.path(), &VerifyOptions::default()).unwrap();
    assert!(r.is_ok() && r.head.is_none(), "{:?}", r.problems);
    drop(AuditLog::open(d.path(), clock()).await.unwrap());
    assert_eq!(verify(d.path(), &VerifyOptions::default()).unwrap().head.unwrap().size, 2);
    // Anything else that is not a checkpoint is a problem.
    std::fs::write(d.path().join(HEAD_FILE), b"x").unwrap();
    assert!(problems(d.path()).iter().any(|p| p.starts_with(HEAD_FILE)));
}

/// The invariants of `fuzz/fuzz_targets/audit_log.rs`, on every single-byte mutation of
/// real lines: parsing never panics, and whatever parses encodes back to the same bytes.
#[tokio::test]
async fn parsed_lines_re_encode_to_the_same_bytes() {
    use ferrid_audit::line::{self, Line};
    let d = tempfile::tempdir().unwrap();
    sequential(d.path(), 2).await;
    let check = |data: &[u8]| match line::parse_line(data) {
        Ok(Line::Record { seq, hash, body }) => {
            assert_eq!(line::encode_record(seq, &hash, body), data);
            if let Ok(rec) = line::parse_record(body) {
                assert_eq!(line::parse_record(&line::record_body(&rec).unwrap()).unwrap(), rec);
            }
        }
        Ok(Line::Checkpoint { sig, body }) => {
            assert_eq!(line::encode_checkpoint(&sig, body), data);
            let _ = line::parse_signed_checkpoint(data);
        }
        Err(_) => {}
    };
    for l in lines(d.path()) {
        let l = &l[..l.len() - 1];
        check(l);
        assert!(line::parse_line(l).is_ok());
        for pos in 0..l.len() {
            for v in [0u8, b'"', b'}', b'0', l[pos] ^ 0x20] {
                let mut m = l.to_vec();
                m[pos] = v;
                check(&m);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_head_is_current_once_a_burst_of_concurrent_appends_drains() {
    // Under load the head file is replaced at most every 250 ms (see `HEAD_EVERY`), but
    // the commit that empties the queue always brings it up to date before replying.
    let d = tempfile::tempdir().unwrap();
    let log = AuditLog::open(d.path(), clock()).await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..16 {
        let log = log.clone();
        tasks.spawn(async move {
            for i in 0..50 {
                log.append(rec(t * 100 + i)).await.unwrap();
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let last = log.checkpoint().unwrap();
    assert_eq!(last.checkpoint.size, 800);
    let head = ferrid_audit::read_checkpoint_file(&d.path().join(HEAD_FILE)).unwrap().unwrap();
    assert_eq!(head.checkpoint, last.checkpoint, "the head seals every record once appends stop");
    drop(log);
    assert!(problems(d.path()).is_empty());
}
