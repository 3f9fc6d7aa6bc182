//! The server at scale: resident memory with N registration entries (100,000 by
//! default), how fast `BatchCreateEntry` stores them, and how long a restart on that
//! datastore takes to serve again.
//!
//! The entries are spread over 1,000 parent IDs of agents that never connect, each with
//! its own selector, so only the server's own cost is measured: the SQLite rows and the
//! in-memory entry index every issuance reads.
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use ferrid_proto::admin::v1 as apb;
use ferrid_proto::types::v1 as tpb;

use crate::report::Section;
use crate::{Proc, TD, admin_client};

/// Entries per `BatchCreateEntry` call (the server's default `limits.max_batch`).
const BATCH: usize = 1000;
/// Parent agents the entries are spread over.
const PARENTS: usize = 1000;

/// What the scale run measured.
pub(crate) struct Scale {
    pub(crate) entries: usize,
    /// Resident memory of a fresh server with no entries, KiB.
    pub(crate) empty_kib: f64,
    /// After creating the entries through the admin API, KiB.
    pub(crate) loaded_kib: f64,
    /// After a restart that loads them from the datastore, KiB.
    pub(crate) restarted_kib: f64,
    /// Time to store them with `BatchCreateEntry`.
    pub(crate) create: Duration,
    /// From spawning `ferrid server` on the populated datastore to it serving.
    pub(crate) restart: Duration,
}

/// Starts a server in `dir`, fills it with `n` entries, reads its memory after
/// `settle`, restarts it and reads it again.
pub(crate) async fn run(ferrid: &Path, dir: &Path, n: usize, settle: Duration) -> Result<Scale> {
    run_with(ferrid, dir, n, settle, "").await
}

/// [`run`] on a server whose configuration ends with `extra` (e.g. a `[datastore]`).
pub(crate) async fn run_with(
    ferrid: &Path,
    dir: &Path,
    n: usize,
    settle: Duration,
    extra: &str,
) -> Result<Scale> {
    std::fs::create_dir_all(dir)?;
    let mut server = Proc::server_with(ferrid, dir, extra)?;
    let mut admin = admin_client(&server.admin_socket).await?;
    tokio::time::sleep(settle).await;
    let empty_kib = server.rss_kib()?;

    let began = Instant::now();
    let mut created = 0;
    for start in (0..n).step_by(BATCH) {
        let entries = (start..(start + BATCH).min(n))
            .map(|i| tpb::Entry {
                spiffe_id: format!("spiffe://{TD}/scale/ns-{}/sa-{i}", i % 97),
                parent_id: format!("spiffe://{TD}/ferrid/agent/join_token/scale-{}", i % PARENTS),
                selectors: vec![
                    tpb::Selector { r#type: "k8s".into(), value: format!("ns:ns-{}", i % 97) },
                    tpb::Selector { r#type: "k8s".into(), value: format!("sa:sa-{i}") },
                ],
                ..Default::default()
            })
            .collect();
        let r = admin.batch_create_entry(apb::BatchCreateEntryRequest { entries }).await?.into_inner();
        if let Some(bad) = r.results.iter().find(|r| r.entry.is_none()) {
            anyhow::bail!("entry refused: {}", bad.error_message);
        }
        created += r.results.len();
        if (start / BATCH) % 20 == 19 {
            eprintln!("  {created} of {n} entries created …");
        }
    }
    let create = began.elapsed();
    let listed = admin
        .list_entries(apb::ListEntriesRequest {
            parent_id: format!("spiffe://{TD}/ferrid/agent/join_token/scale-0"),
            ..Default::default()
        })
        .await?
        .into_inner()
        .entries
        .len();
    ensure!(listed == n.div_ceil(PARENTS).min(n), "expected the entries of one parent, listed {listed}");
    tokio::time::sleep(settle).await;
    let loaded_kib = server.rss_kib()?;

    drop(admin);
    server.stop();
    let began = Instant::now();
    let server = Proc::server_with(ferrid, dir, extra)?;
    let restart = began.elapsed();
    tokio::time::sleep(settle).await;
    let restarted_kib = server.rss_kib()?;
    Ok(Scale { entries: created, empty_kib, loaded_kib, restarted_kib, create, restart })
}

impl Scale {
    /// The report section: one table.
    pub(crate) fn section(&self) -> Section {
        self.section_named("")
    }

    /// The section, its title ending with `on` (e.g. " on PostgreSQL").
    pub(crate) fn section_named(&self, on: &str) -> Section {
        let mib = |k: f64| format!("{:.1} MiB", k / 1024.0);
        let per = |k: f64| format!("{:.2} KiB", (k - self.empty_kib) / self.entries.max(1) as f64);
        let n = self.entries;
        let mut s = Section::new(
            format!("Server memory with {n} registration entries{on}"),
            &["state", "RSS", "per entry over empty"],
        );
        s.row(["empty server".to_owned(), mib(self.empty_kib), "—".to_owned()]);
        s.row([
            format!(
                "{n} entries created through `BatchCreateEntry` ({:.1} s, {:.0} entries/s)",
                self.create.as_secs_f64(),
                n as f64 / self.create.as_secs_f64()
            ),
            mib(self.loaded_kib),
            per(self.loaded_kib),
        ]);
        s.row([
            format!(
                "restarted on that datastore (admin socket accepting after {:.2} s)",
                self.restart.as_secs_f64()
            ),
            mib(self.restarted_kib),
            per(self.restarted_kib),
        ]);
        s
    }
}
