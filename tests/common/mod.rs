//! Helpers shared by the end-to-end tests: the real `ferrid` binary as a child process.
#![allow(dead_code, unreachable_pub, missing_docs)]
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

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
        std::fs::create_dir_all(dir).unwrap();
        let health = format!("127.0.0.1:{}", free_port());
        let cfg = dir.join("server.toml");
        std::fs::write(
            &cfg,
            format!(
                "trust_domain = \"{TD}\"\ndata_dir = \"{d}/data\"\nbind_address = \"{node}\"\n\
                 health_address = \"{health}\"\nadmin_socket = \"{d}/admin.sock\"\n[log]\nlevel = \"debug\"\n",
                d = dir.display()
            ),
        )
        .unwrap();
        let mut child = Command::new(bin())
            .args(["server", "--config"])
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ferrid server");
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = log.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
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
