//! Server cold start to ready (issue 9): the time from spawning `ferrid server` to its
//! health endpoint's `GET /ready` answering 200.
//!
//! `/ready` answers 200 only once `ferrid_server::start` has finished: datastore open,
//! CA loaded or created, server certificate minted, and the node API, admin socket and
//! health listeners all bound. That is the signal an orchestrator's readiness probe
//! uses; a connectable admin socket (what the harness waits for elsewhere) comes
//! earlier, before the health listener and the ready flag.
//!
//! - **Cold**: a fresh data directory, so the server creates its datastore, the CA key
//!   and certificate, and its own SVID.
//! - **Warm restart**: the same data directory again after a clean stop (SIGTERM):
//!   the server opens the existing datastore and restores its CA.
//!
//! The harness polls every millisecond, so that is the resolution. Each sample uses
//! new ports, so no socket left in TIME_WAIT can delay a bind.
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::report::Section;
use crate::{fmt_us, percentile};

/// How often `/ready` is polled.
const POLL: Duration = Duration::from_millis(1);

/// Start-up samples, in the order taken.
pub(crate) struct Startup {
    cold: Vec<Duration>,
    warm: Vec<Duration>,
}

/// Takes `samples` cold starts, each followed by a warm restart on its data directory.
pub(crate) async fn run(ferrid: &Path, dir: &Path, samples: usize) -> Result<Startup> {
    let mut out = Startup { cold: Vec::with_capacity(samples), warm: Vec::with_capacity(samples) };
    for i in 0..samples {
        let d = dir.join(format!("start-{i}"));
        std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        eprintln!("server cold start {}/{samples} …", i + 1);
        out.cold.push(time_to_ready(ferrid, &d).await.context("cold start")?);
        eprintln!("server warm restart {}/{samples} …", i + 1);
        out.warm.push(time_to_ready(ferrid, &d).await.context("warm restart")?);
    }
    Ok(out)
}

/// Spawns `ferrid server` on `dir` (a configuration with fresh ports), waits for
/// `GET /ready` → 200, checks the admin API answers, and stops the server.
async fn time_to_ready(ferrid: &Path, dir: &Path) -> Result<Duration> {
    let [node, health] = two_ports()?.map(|p| format!("127.0.0.1:{p}"));
    let (cfg, admin_socket) = crate::server_config(dir, &node, &health, "")?;
    let log = dir.join("server.log");
    let stderr = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let began = Instant::now();
    let child = Command::new(ferrid)
        .args(["server", "--config"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .with_context(|| format!("starting {} server", ferrid.display()))?;
    // Stopped (SIGTERM, then waited for) on every path out of here.
    let mut server = Server(child);
    let deadline = began + Duration::from_secs(60);
    let took = loop {
        if ready(&health).await {
            break began.elapsed();
        }
        if let Some(status) = server.0.try_wait()? {
            bail!("ferrid server exited ({status}) before it was ready; see {}", log.display());
        }
        ensure!(Instant::now() < deadline, "ferrid server not ready after 60 s; see {}", log.display());
        tokio::time::sleep(POLL).await;
    };
    // Ready means serving: one admin call must succeed (not timed).
    let mut admin = crate::admin_client(&admin_socket).await?;
    admin
        .get_bundle(ferrid_proto::admin::v1::GetBundleRequest {})
        .await
        .context("the admin API did not answer after /ready said 200")?;
    drop(admin);
    server.stop();
    Ok(took)
}

/// A `ferrid server` child, stopped on drop.
struct Server(Child);

impl Server {
    /// SIGTERM, then SIGKILL if it has not exited within 30 s; reaps it either way.
    fn stop(&mut self) {
        if matches!(self.0.try_wait(), Ok(Some(_))) {
            return;
        }
        if let Ok(pid) = i32::try_from(self.0.id()) {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Two free local ports, distinct (both are held until both are known).
fn two_ports() -> Result<[u16; 2]> {
    let a = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    let b = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok([a.local_addr()?.port(), b.local_addr()?.port()])
}

/// Whether `GET /ready` on `addr` answers 200 (HTTP/1.1, a new connection each time).
async fn ready(addr: &str) -> bool {
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else { return false };
    let req = format!("GET /ready HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut head)).await,
        Ok(Ok(_)) if &head == b"HTTP/1.1 200"
    )
}

impl Startup {
    /// The report section: p50 and max of each kind of start.
    pub(crate) fn section(&self) -> Section {
        let mut s =
            Section::new("Server cold start to ready", &["start", "ready signal", "samples", "p50", "max"]);
        for (what, samples) in [
            ("cold: fresh data directory (creates the datastore, CA key and certificate)", &self.cold),
            ("warm restart: same data directory (opens the datastore, restores the CA)", &self.warm),
        ] {
            let mut sorted = samples.clone();
            sorted.sort_unstable();
            s.row([
                what.to_owned(),
                "`GET /ready` → 200 on the health endpoint".to_owned(),
                sorted.len().to_string(),
                fmt_us(percentile(&sorted, 0.5)),
                fmt_us(sorted.last().copied().unwrap_or_default()),
            ]);
        }
        s.note(
            "From spawning `ferrid server` (process creation and exec included) to `/ready` answering \
             200, which it does once the datastore is open, the CA loaded, and the node API, admin \
             socket and health listeners are bound; polled every 1 ms. Each warm restart follows a \
             clean stop (SIGTERM) of the cold start before it, on the same data directory.",
        );
        s
    }
}
