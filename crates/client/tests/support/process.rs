//! The server binary (`tickcast`, the workspace's root package) run as a
//! child process, so a test can SIGKILL it and start it again on the same
//! port: the failure a client sees when the machine or the process dies,
//! with nothing flushed and no close frame.
//!
//! The binary: `$TICKCAST_BIN` if set (what `scripts/test.sh` exports for
//! the Python suite), else the one of this build's profile in cargo's
//! target directory (`cargo test --workspace` builds it for the server's
//! own tests), built first with `cargo build -p tickcast --bin tickcast`
//! when it is missing or older than the server's sources (`cargo test -p
//! tickcast-client` alone does not build it).

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Path of the server binary, built once per test process if it is
/// missing or older than the server's sources.
pub fn server_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            if let Some(bin) = std::env::var_os("TICKCAST_BIN") {
                return PathBuf::from(bin);
            }
            // This test runs as <target>/<profile>/deps/<name>-<hash>.
            let exe = std::env::current_exe().expect("the test's own path");
            let profile_dir = exe.parent().and_then(|deps| deps.parent()).expect("<target>/<profile>/deps");
            let binary = profile_dir.join("tickcast");
            let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
            if !is_fresh(&binary, root) {
                build(root, profile_dir);
            }
            binary
        })
        .clone()
}

/// Whether `binary` exists and is newer than every source of the server
/// under `root` (`src/`, `proto/`, `build.rs`, `Cargo.toml`, `Cargo.lock`).
/// Building when it is fresh would not be free: the environment cargo
/// gives a test makes some build scripts run again, and with them half
/// the dependency tree.
fn is_fresh(binary: &Path, root: &Path) -> bool {
    let Ok(built) = std::fs::metadata(binary).and_then(|m| m.modified()) else { return false };
    let mut pending: Vec<PathBuf> =
        ["src", "proto", "build.rs", "Cargo.toml", "Cargo.lock"].iter().map(|p| root.join(p)).collect();
    while let Some(path) = pending.pop() {
        let Ok(meta) = std::fs::metadata(&path) else { continue };
        if meta.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&path) {
                pending.extend(entries.flatten().map(|e| e.path()));
            }
        } else if meta.modified().is_ok_and(|m| m > built) {
            return false;
        }
    }
    true
}

/// `cargo build -p tickcast --bin tickcast` into the profile of this test.
fn build(root: &Path, profile_dir: &Path) {
    let mut build = Command::new(option_env!("CARGO").unwrap_or("cargo"));
    build
        .args(["build", "--quiet", "-p", "tickcast", "--bin", "tickcast", "--manifest-path"])
        .arg(root.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", profile_dir.parent().expect("<target>"));
    if profile_dir.file_name().is_some_and(|p| p == "release") {
        build.arg("--release");
    }
    let status = build.status().expect("run cargo build for the server binary");
    assert!(status.success(), "cargo build -p tickcast --bin tickcast failed");
}

/// A `tickcast` child process on 127.0.0.1. Killed when dropped.
pub struct ServerProcess {
    /// Its HTTP/WebSocket address.
    pub addr: SocketAddr,
    child: Child,
    /// Every line it wrote so far (its log), for failure messages.
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ServerProcess {
    /// Starts the server on `listen` (port 0: a free port) with `args`, and
    /// waits (up to 20 s) until it logs the address it listens on. A port
    /// still held by a dying process is retried for up to 10 s.
    pub fn start(listen: SocketAddr, args: &[&str]) -> ServerProcess {
        let started = Instant::now();
        loop {
            match ServerProcess::try_start(listen, args) {
                Ok(server) => return server,
                Err(log) if started.elapsed() < Duration::from_secs(10) && log.contains("cannot listen") => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(log) => panic!("tickcast did not start on {listen}:\n{log}"),
            }
        }
    }

    fn try_start(listen: SocketAddr, args: &[&str]) -> Result<ServerProcess, String> {
        let mut child = Command::new(server_binary())
            .arg("--listen")
            .arg(listen.to_string())
            .args(["--log", "info"])
            .args(args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tickcast");
        // The log goes to stdout, start-up errors to stderr: both are read
        // to the end, so the server never blocks on a full pipe.
        let log: Arc<Mutex<Vec<String>>> = Default::default();
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().map(|o| Box::new(o) as Box<dyn Read + Send>);
        let stderr = child.stderr.take().map(|e| Box::new(e) as Box<dyn Read + Send>);
        for pipe in [stdout, stderr].into_iter().flatten() {
            let (tx, log) = (tx.clone(), log.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let line = strip_ansi(&line);
                    let _ = tx.send(line.clone());
                    log.lock().expect("log lock").push(line);
                }
            });
        }
        drop(tx);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.contains("tickcast listening") => {
                    let addr = listening_addr(&line).unwrap_or_else(|| panic!("no address in {line:?}"));
                    return Ok(ServerProcess { addr, child, log });
                }
                Ok(_) => continue,
                // Both pipes closed (the process exited) or the deadline.
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(log.lock().expect("log lock").join("\n"));
                }
            }
        }
    }

    /// SIGKILL: the process dies at once, nothing flushed, no close frame
    /// sent; the kernel closes its sockets. Returns once it is reaped.
    pub fn kill(mut self) -> SocketAddr {
        self.child.kill().expect("SIGKILL tickcast");
        self.child.wait().expect("reap tickcast");
        self.addr
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        self.log.lock().expect("log lock").join("\n")
    }
}

/// The `addr=HOST:PORT` of the server's "tickcast listening" log line.
fn listening_addr(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find("addr=")? + "addr=".len()..];
    rest.split_whitespace().next()?.trim_matches('"').parse().ok()
}

/// `text` without its terminal escape codes (the server's log colours its
/// fields even into a pipe).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // CSI: ESC [ ... final byte in @..~
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) && c != '[' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
