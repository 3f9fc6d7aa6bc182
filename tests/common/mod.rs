//! Helpers shared by the end-to-end tests: the real `ferrid` binary as a child process.
#![allow(dead_code, unreachable_pub, missing_docs)]
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod ssf;

pub const TD: &str = "e2e.example.org";

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_ferrid")
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub struct Server {
    pub child: Child,
    pub dir: PathBuf,
    pub node: String,
    pub health: String,
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Server {
    pub fn socket(&self) -> PathBuf {
        self.dir.join("admin.sock")
    }

    pub fn start(dir: &Path) -> Server {
        Self::start_on(dir, format!("127.0.0.1:{}", free_port()))
    }

    /// Starts (or restarts) a server on `dir` with its node API on `node`.
    pub fn start_on(dir: &Path, node: String) -> Server {
        Self::start_with(dir, node, "")
    }

    /// Starts a server whose configuration ends with `extra` (TOML sections).
    pub fn start_with(dir: &Path, node: String, extra: &str) -> Server {
        Self::start_in(dir, node, TD, extra)
    }

    /// Starts a server for trust domain `td`.
    pub fn start_in(dir: &Path, node: String, td: &str, extra: &str) -> Server {
        std::fs::create_dir_all(dir).unwrap();
        let health = format!("127.0.0.1:{}", free_port());
        let cfg = dir.join("server.toml");
        std::fs::write(
            &cfg,
            format!(
                "trust_domain = \"{td}\"\ndata_dir = \"{d}/data\"\nbind_address = \"{node}\"\n\
                 health_address = \"{health}\"\nadmin_socket = \"{d}/admin.sock\"\n[log]\nlevel = \"debug\"\n{extra}",
                d = dir.display()
            ),
        )
        .unwrap();
        let (child, log) = spawn_logged(&["server", "--config", cfg.to_str().unwrap()], &[]);
        let s = Server { child, dir: dir.to_owned(), node, health, log };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = s.cli(&["healthcheck", "--address", &s.health]);
            if out.status.success() {
                break;
            }
            assert!(Instant::now() < deadline, "server did not become ready: {:?}", s.log.lock().unwrap());
            std::thread::sleep(Duration::from_millis(100));
        }
        s
    }

    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(bin()).args(args).env("FERRID_ADMIN_SOCKET", self.socket()).output().unwrap()
    }

    /// Runs a CLI command that must succeed and returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "ferrid {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["--output", "json"]);
        serde_json::from_str(&self.ok(&a)).unwrap()
    }

    /// A revocation-feed credential for `spiffe_id` (the server serves its feed to SVID
    /// holders only): an X.509-SVID minted with `ferrid x509 mint` into `dir`,
    /// presented in the TLS handshake.
    pub fn feed_auth(&self, spiffe_id: &str, dir: &Path) -> ferrid_validate::feeds::FeedAuth {
        ssf::Creds::x509(self, spiffe_id, dir);
        ferrid_validate::feeds::FeedAuth::x509_files(dir.join("svid.pem"), dir.join("key.pem")).unwrap()
    }

    pub fn stop(mut self) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap());
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "server exited with {status}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

/// Spawns a `ferrid` child process with stderr captured into a shared log.
pub fn spawn_logged(
    args: &[&str],
    env: &[(&str, &str)],
) -> (Child, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let mut cmd = Command::new(bin());
    cmd.args(args).stdout(Stdio::null()).stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn ferrid");
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = log.clone();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    (child, log)
}

/// Sends SIGTERM and waits.
pub fn terminate(child: &mut Child) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let _ = child.wait();
}

pub struct Agent {
    pub child: std::process::Child,
    pub socket: std::path::PathBuf,
    pub config: std::path::PathBuf,
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Agent {
    pub fn start(config: &std::path::Path, socket: &std::path::Path) -> Agent {
        let (child, log) = spawn_logged(&["agent", "--config", config.to_str().unwrap()], &[]);
        Agent { child, socket: socket.to_owned(), config: config.to_owned(), log }
    }

    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(bin()).args(args).env("SPIFFE_ENDPOINT_SOCKET", self.endpoint()).output().unwrap()
    }

    pub fn logs(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

/// Enrols an agent with `server`: a join token, the bootstrap bundle, one entry per
/// `(name, extra create args)` for this test's uid (hint = name), then starts the agent.
pub fn enrol(server: &Server, dir: &std::path::Path, entries: &[(&str, &[&str])]) -> (Agent, String) {
    enrol_with(server, dir, entries, "")
}

/// [`enrol`] with `extra` (TOML sections) at the end of the agent's configuration.
pub fn enrol_with(
    server: &Server,
    dir: &std::path::Path,
    entries: &[(&str, &[&str])],
    extra: &str,
) -> (Agent, String) {
    enrol_via(server, &server.node, dir, entries, extra)
}

/// [`enrol_with`] where the token and entries come from `server`'s admin socket but the
/// agent attests to, and is served by, the node API at `node` (another server of the
/// same trust domain).
pub fn enrol_via(
    server: &Server,
    node: &str,
    dir: &std::path::Path,
    entries: &[(&str, &[&str])],
    extra: &str,
) -> (Agent, String) {
    let uid = nix::unistd::getuid().as_raw();
    let tok = server.json(&["token", "generate"]);
    let agent_id = tok["agent_id"].as_str().unwrap().to_owned();
    let bundle_file = dir.join("bundle.pem");
    std::fs::write(&bundle_file, server.ok(&["bundle", "show", "--format", "pem"])).unwrap();
    for (name, extra) in entries {
        let id = format!("spiffe://{TD}/{name}");
        let sel = format!("unix:uid:{uid}");
        let mut args = vec![
            "entry",
            "create",
            "--spiffe-id",
            &id,
            "--parent-id",
            &agent_id,
            "--selector",
            &sel,
            "--hint",
            name,
        ];
        args.extend_from_slice(extra);
        server.ok(&args);
    }
    let socket = dir.join("agent/api.sock");
    let config = dir.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "trust_domain = \"{TD}\"\nserver_address = \"{}\"\ndata_dir = \"{}\"\nsocket_path = \"{}\"\n\
             join_token = \"{}\"\ntrust_bundle_file = \"{}\"\nmax_backoff = \"1s\"\n[log]\nlevel = \"debug\"\n{extra}",
            node,
            dir.join("agent/data").display(),
            socket.display(),
            tok["token"].as_str().unwrap(),
            bundle_file.display()
        ),
    )
    .unwrap();
    (Agent::start(&config, &socket), agent_id)
}

/// Retries `f` until it succeeds or `secs` pass.
pub async fn eventually<T, E: std::fmt::Debug, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) if Instant::now() > deadline => panic!("{what}: still failing after {secs}s: {e:?}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// A Python interpreter with py-spiffe (tests/py/requirements.txt) installed in a
/// virtualenv under the target directory; created on first use with `python3 -m venv`
/// and pip from PyPI, then reused.
pub fn python_with_pyspiffe() -> PathBuf {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock().unwrap();
    // Test binaries run as separate processes (nextest runs them side by side): an
    // exclusive file lock makes one create the venv while the others wait, instead of
    // running a half-installed pip.
    let lock =
        std::fs::File::create(Path::new(env!("CARGO_TARGET_TMPDIR")).join("py-spiffe-venv.lock")).unwrap();
    lock.lock().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let reqs = root.join("tests/py/requirements.txt");
    let wanted = std::fs::read_to_string(&reqs).unwrap();
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("py-spiffe-venv");
    let python = venv.join("bin/python");
    let stamp = venv.join("ferrid-requirements.txt");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) && python.exists() {
        return python;
    }
    let _ = std::fs::remove_dir_all(&venv);
    let run = |cmd: &mut Command, what: &str| {
        let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(
            out.status.success(),
            "{what} failed (the py-spiffe tests need Python 3 with venv and pip, and PyPI):\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(Command::new("python3").args(["-m", "venv"]).arg(&venv), "python3 -m venv");
    run(
        Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r"])
            .arg(&reqs),
        "pip install -r tests/py/requirements.txt",
    );
    std::fs::write(&stamp, wanted).unwrap();
    python
}
