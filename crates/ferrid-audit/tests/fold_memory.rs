//! `AuditLog::fold_since` streams: scanning a large log holds one record at a time, so
//! the memory a scan needs does not grow with the log. Measured with dhat's heap
//! statistics (its own test binary, one test, so nothing else allocates meanwhile),
//! against the collecting `records_since` on the same log as the yardstick.
use std::sync::Arc;

use ferrid_audit::{AuditLog, AuditRecord, RecordKind, What, Who, Why};
use ferrid_types::{Clock, ManualClock};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

/// Peak heap bytes allocated while `f` runs (what was allocated before is not counted).
async fn peak_during<T>(f: impl std::future::Future<Output = T>) -> (T, usize) {
    let profiler = dhat::Profiler::builder().testing().build();
    let out = f.await;
    let peak = dhat::HeapStats::get().max_bytes;
    drop(profiler);
    (out, peak)
}

fn rec(i: i64) -> AuditRecord {
    AuditRecord {
        time: 1_700_000_000,
        kind: RecordKind::Issuance,
        who: Who {
            spiffe_id: format!("spiffe://td/w/{i}"),
            agent_id: Some(format!("spiffe://td/ferrid/agent/join_token/{}", i % 100)),
            selectors: vec!["unix:uid:1000".into(), "k8s:ns:payments".into()],
            ..Default::default()
        },
        what: What {
            credential_id: Some(format!("{i:040x}")),
            credential_type: Some("x509-svid".into()),
            spiffe_id: Some(format!("spiffe://td/w/{i}")),
            ttl: Some(600),
            ..Default::default()
        },
        why: Why { decision: "allow".into(), policy_hash: Some("abc".into()), reason: None },
        key_id: Some("ca-1".into()),
        seq: 0,
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_scan_of_a_large_log_holds_one_record_at_a_time() {
    const N: i64 = 20_000;
    let d = tempfile::tempdir().unwrap();
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::at_unix(1_700_000_000));
    let log = AuditLog::open(d.path(), clock).await.unwrap();
    for batch in 0..N / 1000 {
        let waits: Vec<_> = (0..1000).map(|i| log.submit(rec(batch * 1000 + i)).unwrap()).collect();
        for w in waits {
            w.wait().await.unwrap();
        }
    }
    // What eviction asks: the credentials issued through one agent (1 in 100 records).
    let agent = "spiffe://td/ferrid/agent/join_token/7".to_owned();
    let (folded, fold_peak) = peak_during(log.fold_since(0, (Vec::new(), 0u64), move |(m, n), r| {
        *n += 1;
        if r.who.agent_id.as_deref() == Some(agent.as_str()) {
            m.push(r.what.credential_id.unwrap());
        }
    }))
    .await;
    let (matched, visited) = folded.unwrap();
    assert_eq!(visited, 20_000);
    assert_eq!(matched.len(), 200);
    assert_eq!(matched[0], format!("{:040x}", 7));
    assert_eq!(matched[199], format!("{:040x}", 19_907));

    let (all, collect_peak) = peak_during(log.records_since(0)).await;
    let all = all.unwrap();
    assert_eq!(all.len(), 20_000);
    drop(all);
    // The collected log is megabytes; the scan needs its read buffer, one record and
    // the 200 matches.
    assert!(collect_peak > 8 << 20, "collecting 20,000 records took only {collect_peak} bytes");
    assert!(fold_peak < 1 << 20, "the scan peaked at {fold_peak} bytes");
    assert!(collect_peak > 8 * fold_peak, "scan {fold_peak} bytes, collection {collect_peak} bytes");
}
