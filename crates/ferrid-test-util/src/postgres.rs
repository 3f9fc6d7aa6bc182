//! A real PostgreSQL server for tests, private to the test that starts it.
//!
//! [`Server::start`] runs PostgreSQL's own binaries (Debian's `postgresql` package, which
//! `scripts/test.sh` installs on a fresh machine) on a Unix socket in a fresh directory
//! under the workspace's `target/pg/`, with no TCP listener. A cluster is initialised
//! once (`initdb`, under a file lock shared by parallel test processes) and copied for
//! each server, which takes milliseconds. Run as root, the server runs as the
//! unprivileged `postgres` user, as PostgreSQL requires. It is stopped when the
//! [`Server`] is dropped; [`Server::stop`] and [`Server::restart`] let a test take the
//! database away and bring it back.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The database role every test server trusts (no password, socket only).
pub const USER: &str = "ferrid";

/// A running PostgreSQL server.
pub struct Server {
    dir: PathBuf,
    bin: PathBuf,
    running: bool,
    durable: bool,
}

/// Where clusters live: `target/pg` in the workspace, unless (as root) the `postgres`
/// user cannot reach it because a parent directory is private, then `/tmp/ferrid-pg`.
fn root() -> PathBuf {
    static ROOT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    ROOT.get_or_init(|| {
        // crates/ferrid-test-util → the workspace root.
        let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/pg");
        std::fs::create_dir_all(&target).expect("create target/pg");
        if !is_root() {
            return target;
        }
        chown_to_postgres(&target);
        let reachable = Command::new("runuser")
            .args(["-u", "postgres", "--", "test", "-w"])
            .arg(&target)
            .status()
            .is_ok_and(|s| s.success());
        if reachable {
            return target;
        }
        let tmp = PathBuf::from("/tmp/ferrid-pg");
        std::fs::create_dir_all(&tmp).expect("create /tmp/ferrid-pg");
        chown_to_postgres(&tmp);
        tmp
    })
    .clone()
}

/// PostgreSQL's server binaries: `$FERRID_PG_BINDIR`, else the newest
/// `/usr/lib/postgresql/<version>/bin`, else the directory of `initdb` on `PATH`.
pub fn bindir() -> PathBuf {
    if let Some(d) = std::env::var_os("FERRID_PG_BINDIR") {
        return PathBuf::from(d);
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    found.sort();
    if let Some((_, bin)) = found.pop() {
        return bin;
    }
    std::env::var_os("PATH")
        .and_then(|p| std::env::split_paths(&p).find(|d| d.join("initdb").exists()))
        .expect(
            "PostgreSQL server binaries (initdb, pg_ctl) not found: scripts/test.sh installs Debian's \
             `postgresql` package; or set FERRID_PG_BINDIR",
        )
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

/// Runs one of PostgreSQL's programs, as the `postgres` user when we are root.
fn pg_command(bin: &Path, program: &str) -> Command {
    let exe = bin.join(program);
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(&exe);
        c
    } else {
        Command::new(&exe)
    }
}

fn pg(bin: &Path, program: &str, args: &[&str]) -> std::process::Output {
    let exe = bin.join(program);
    let out = pg_command(bin, program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", exe.display()));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn chown_to_postgres(path: &Path) {
    if is_root() {
        let st = Command::new("chown").arg("-R").arg("postgres:postgres").arg(path).status().expect("chown");
        assert!(st.success(), "chown -R postgres: {}", path.display());
    }
}

/// The initialised cluster every server is copied from, made once per machine.
fn template(bin: &Path) -> PathBuf {
    let root = root();
    let lock = std::fs::File::create(root.join("template.lock")).expect("lock file");
    lock.lock().expect("lock the template");
    let version =
        bin.parent().and_then(|p| p.file_name()).and_then(|v| v.to_str()).unwrap_or("pg").to_owned();
    let dir = root.join(format!("template-{version}"));
    if !dir.join("ready").exists() {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("template dir");
        chown_to_postgres(&dir);
        let d = dir.to_str().expect("UTF-8 path");
        pg(bin, "initdb", &["-D", d, "-U", USER, "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"]);
        std::fs::write(dir.join("ready"), b"").expect("mark template ready");
    }
    drop(lock);
    dir
}

static COUNT: AtomicUsize = AtomicUsize::new(0);

impl Server {
    /// Starts a new server with an empty cluster, `fsync` off (test data need not
    /// survive a power cut).
    pub fn start() -> Self {
        Self::start_inner(false)
    }

    /// Like [`Server::start`] with PostgreSQL's durable defaults (`fsync` on), for
    /// benchmarks that compare with SQLite's durable commits.
    pub fn start_durable() -> Self {
        Self::start_inner(true)
    }

    fn start_inner(durable: bool) -> Self {
        let bin = bindir();
        let template = template(&bin);
        let name = format!("{}-{}", std::process::id(), COUNT.fetch_add(1, Ordering::SeqCst));
        let dir = root().join(name);
        let _ = std::fs::remove_dir_all(&dir);
        let st = Command::new("cp").arg("-a").arg(&template).arg(&dir).status().expect("cp");
        assert!(st.success(), "copying the template cluster");
        let _ = std::fs::remove_file(dir.join("ready"));
        chown_to_postgres(&dir);
        let mut s = Self { dir, bin, running: false, durable };
        s.restart();
        s
    }

    /// Starts the server again after [`Server::stop`] (same data).
    pub fn restart(&mut self) {
        let d = self.dir.to_str().expect("UTF-8 path");
        let log = self.dir.join("server.log");
        // No TCP; the socket lives in the data directory. fsync off unless durable: it
        // keeps two cores free for the tests.
        let fsync = if self.durable { "on" } else { "off" };
        let opts = format!("-k {d} -c listen_addresses='' -c fsync={fsync} -c max_connections=200");
        pg(&self.bin, "pg_ctl", &["-D", d, "-l", log.to_str().expect("path"), "-o", &opts, "-w", "start"]);
        self.running = true;
    }

    /// Stops the server at once (`immediate`: connections are cut, as when a database
    /// host goes away).
    pub fn stop(&mut self) {
        if self.running {
            let d = self.dir.to_str().expect("UTF-8 path");
            pg(&self.bin, "pg_ctl", &["-D", d, "-m", "immediate", "-w", "stop"]);
            self.running = false;
        }
    }

    /// The socket directory.
    pub fn socket_dir(&self) -> &Path {
        &self.dir
    }

    /// Creates database `name` and returns its URL.
    pub fn create_database(&self, name: &str) -> String {
        let d = self.dir.to_str().expect("UTF-8 path");
        pg(&self.bin, "createdb", &["-h", d, "-U", USER, name]);
        self.url(name)
    }

    /// The URL of database `name` on this server (over its Unix socket).
    pub fn url(&self, name: &str) -> String {
        format!("postgres://{USER}@localhost/{name}?host={}", self.dir.display())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.running {
            let d = self.dir.to_string_lossy().into_owned();
            let _ =
                pg_command(&self.bin, "pg_ctl").args(["-D", &d, "-m", "immediate", "-w", "stop"]).output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
