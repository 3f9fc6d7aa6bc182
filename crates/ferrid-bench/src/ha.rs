//! Several servers on one PostgreSQL database (docs/ha.md): how fast a change made
//! through one server reaches a workload served through another, the same on one
//! PostgreSQL-backed server, issuance on PostgreSQL against SQLite, and a restart with
//! the `--server-entries` entries on PostgreSQL.
//!
//! PostgreSQL is a real server from Debian's `postgresql` package, started by
//! `ferrid_test_util::postgres` on a private Unix socket with its durable defaults
//! (`fsync` on), on the same machine as the servers.
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::report::Section;
use crate::{LATENCY_HEADERS, PROPAGATION_HEADERS, Proc, admin_client, create_entry, issuance, propagation};

/// What the run measured.
pub(crate) struct Ha {
    sections: Vec<Section>,
}

impl Ha {
    /// The report sections.
    pub(crate) fn sections(self) -> Vec<Section> {
        self.sections
    }
}

/// The `[datastore]` and `[ca]` every PostgreSQL-backed server of the run shares: one
/// database, one upstream CA (until per-server keys, each server's intermediate is in
/// memory under it, so agents trust all of them).
fn shared(url_file: &Path, upstream: &(std::path::PathBuf, std::path::PathBuf)) -> String {
    format!(
        "[datastore]\nkind = \"postgres\"\nurl_file = \"{}\"\n\
         [ca]\nkey_manager = \"memory\"\nupstream_cert_file = \"{}\"\nupstream_key_file = \"{}\"\n",
        url_file.display(),
        upstream.0.display(),
        upstream.1.display()
    )
}

/// Runs every measurement in `dir`.
pub(crate) async fn run(
    ferrid: &Path,
    dir: &Path,
    samples: usize,
    issuance_seconds: u64,
    entries: usize,
    settle: Duration,
) -> Result<Ha> {
    std::fs::create_dir_all(dir)?;
    eprintln!("starting PostgreSQL …");
    let pg = ferrid_test_util::postgres::Server::start_durable();
    let url_file = dir.join("datastore-url");
    std::fs::write(&url_file, pg.create_database("ferrid")).context("writing the datastore URL")?;
    let upstream = ferrid_test_util::write_upstream_ca(dir);
    let config = shared(&url_file, &upstream);
    let uid = nix::unistd::getuid().as_raw();

    eprintln!("starting two ferrid servers on one PostgreSQL database …");
    for d in ["a", "b"] {
        std::fs::create_dir_all(dir.join(d))?;
    }
    let a = Proc::server_with(ferrid, &dir.join("a"), &config)?;
    let b = Proc::server_with(ferrid, &dir.join("b"), &config)?;
    let mut admin_a = admin_client(&a.admin_socket).await?;
    let mut admin_b = admin_client(&b.admin_socket).await?;
    let agent = Proc::agent(ferrid, &a, &mut admin_a, &dir.join("agent")).await?;
    create_entry(&mut admin_a, &agent.agent_id, "bench/ha-client", &format!("uid:{uid}")).await?;
    crate::wait_for_svids(&agent.socket, 1).await?;

    let mut prop = Section::new("Propagation across servers on PostgreSQL", PROPAGATION_HEADERS);
    eprintln!("cross-server propagation, {samples} samples …");
    let across = propagation(&mut admin_b, &agent.agent_id, &agent.socket, uid, samples).await?;
    prop.row(across.row("CreateEntry on server B → SVID on a stream of an agent on server A"));
    eprintln!("same-server propagation on PostgreSQL, {samples} samples …");
    let same = propagation(&mut admin_a, &agent.agent_id, &agent.socket, uid, samples).await?;
    prop.row(same.row("CreateEntry on server A → SVID on a stream of an agent on server A"));
    prop.note(format!(
        "Each sample creates an entry (committed to PostgreSQL with fsync on), then deletes it and waits \
         for it to leave. Across servers, B's commit reaches A through NOTIFY and A's read of the change \
         feed; the target is p99 < 100 ms. Across / same at p99: {:.2}.",
        across.p99.as_secs_f64() / same.p99.as_secs_f64().max(1e-9)
    ));
    drop(agent);
    drop(admin_b);
    drop(b);

    // Issuance on PostgreSQL against SQLite, same clients, same run.
    let sqlite_dir = dir.join("sqlite");
    std::fs::create_dir_all(&sqlite_dir)?;
    let sqlite = Proc::server(ferrid, &sqlite_dir)?;
    let dur = Duration::from_secs(issuance_seconds);
    let mut issued = Section::new("Issuance: PostgreSQL against SQLite datastore", LATENCY_HEADERS);
    let clients = 16;
    let mut ratio = Vec::new();
    for round in 0..2 {
        eprintln!("X.509 issuance, {clients} clients, round {} of 2 …", round + 1);
        let on_pg = issuance(&a.admin_socket, clients, dur, false).await?;
        let on_sqlite = issuance(&sqlite.admin_socket, clients, dur, false).await?;
        ratio.push(on_pg.throughput() / on_sqlite.throughput());
        issued.row(on_pg.row("MintX509SVID, PostgreSQL datastore", clients));
        issued.row(on_sqlite.row("MintX509SVID, SQLite datastore", clients));
    }
    issued.note(format!(
        "Alternating, twice. Minting makes no datastore write (only the audit log's durable append), so \
         the backends should match: PostgreSQL / SQLite throughput {}.",
        ratio.iter().map(|r| format!("{r:.2}")).collect::<Vec<_>>().join(", ")
    ));
    drop(sqlite);
    drop(admin_a);
    drop(a);

    eprintln!("server memory and restart with {entries} entries on PostgreSQL …");
    let url2 = dir.join("datastore-url-scale");
    std::fs::write(&url2, pg.create_database("ferrid_scale"))?;
    let scale =
        crate::scale::run_with(ferrid, &dir.join("scale"), entries, settle, &shared(&url2, &upstream))
            .await?
            .section_named(" on PostgreSQL");
    Ok(Ha { sections: vec![prop, issued, scale] })
}
