//! `tickcast-client` against a real server on the synthetic feed: JSON
//! lines that parse, with gapless seqs; a server restart in the middle
//! of a run, after which the client reconnects within its backoff bound
//! and the stream goes on (a snapshot, then gapless updates); and a cut
//! connection, after which the client resumes by seq (no snapshot, no gap)
//! and says so on stderr and in `--stats`.

// The server's own test helpers: one `tests/common` for the workspace.
#[path = "../../../tests/common/mod.rs"]
mod common;
mod support;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{start, Running};
use support::proxy::{Cut, Proxy};
use tickcast::config::Config;
use tickcast::feed::SyntheticSettings;
use tickcast_client::http_get;

fn config(listen: SocketAddr) -> Config {
    Config { listen, synthetic: SyntheticSettings { symbols: 10, rate: 2_000.0, seed: 1 }, ..Config::default() }
}

async fn first_symbol(addr: SocketAddr) -> String {
    let (status, body) = http_get(addr, "/symbols").await.expect("GET /symbols");
    assert_eq!(status, 200);
    let names: Vec<String> = serde_json::from_str(&body).expect("a JSON array");
    names.into_iter().next().expect("a synthetic symbol")
}

/// Runs the CLI; its stdout lines come through the channel.
fn spawn_cli(args: &[String]) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tickcast-client"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tickcast-client");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// The next line, waited for off the runtime that serves the server.
async fn next_line(rx: &mut mpsc::Receiver<String>, within: Duration) -> serde_json::Value {
    let owned = std::mem::replace(rx, mpsc::channel().1);
    let (back, line) = tokio::task::spawn_blocking(move || {
        let line = owned.recv_timeout(within);
        (owned, line)
    })
    .await
    .expect("join");
    *rx = back;
    let line = line.expect("a line in time");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

fn seq(v: &serde_json::Value) -> u64 {
    v["seq"].as_u64().unwrap_or_else(|| panic!("no seq in {v}"))
}

fn stderr_of(mut child: Child) -> String {
    let _ = child.kill();
    let _ = child.wait();
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_json_lines_with_gapless_seqs_then_exit_0() {
    let running = start(config("127.0.0.1:0".parse().unwrap())).await;
    let sym = first_symbol(running.addr).await;
    let args: Vec<String> =
        [format!("ws://{}", running.addr), "--format".into(), "json".into(), "--count".into(), "50".into()]
            .into_iter()
            .chain(["--subscribe".into(), sym.clone()])
            .collect();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_tickcast-client")).args(&args).output().expect("run tickcast-client")
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> =
        stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
    assert_eq!(lines.len(), 50);
    assert_eq!(lines[0]["type"], "snapshot");
    for pair in lines.windows(2) {
        assert_eq!(pair[1]["sym"], sym.as_str());
        assert_eq!(seq(&pair[1]), seq(&pair[0]) + 1, "gapless: {} then {}", pair[0], pair[1]);
    }
    // ts_ingest is above 2^53: printed exactly, as an integer.
    assert!(lines[1]["ts_ingest"].as_u64().is_some_and(|t| t > 1 << 53));
    running.shutdown_within(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_is_survived_snapshot_then_gapless() {
    let running = start(config("127.0.0.1:0".parse().unwrap())).await;
    let addr = running.addr;
    let sym = first_symbol(addr).await;
    let cap = Duration::from_millis(500);
    let args: Vec<String> = vec![
        format!("ws://{addr}"),
        "--subscribe".into(),
        sym.clone(),
        "--format".into(),
        "json".into(),
        "--backoff-base".into(),
        "50ms".into(),
        "--backoff-cap".into(),
        "500ms".into(),
        "--duration".into(),
        "60s".into(),
    ];
    let (child, mut rx) = spawn_cli(&args);
    let mut last = seq(&next_line(&mut rx, Duration::from_secs(10)).await);
    for _ in 0..20 {
        let v = next_line(&mut rx, Duration::from_secs(5)).await;
        assert_eq!(seq(&v), last + 1);
        last = seq(&v);
    }

    running.shutdown_within(Duration::from_secs(5)).await;
    // Down for a while: the client retries with backoff meanwhile.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let restarted = Instant::now();
    // Wait for the port to be free, then start again on it.
    while let Err(e) = std::net::TcpListener::bind(addr) {
        assert!(restarted.elapsed() < Duration::from_secs(5), "cannot bind {addr} again: {e}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let running: Running = start(config(addr)).await;
    let restarted = Instant::now();

    // Lines queued before the shutdown may still come; then the snapshot.
    let snapshot = loop {
        let v = next_line(&mut rx, Duration::from_secs(10)).await;
        if v["type"] == "snapshot" {
            break v;
        }
    };
    let waited = restarted.elapsed();
    // Within one backoff bound (the cap) after the server is back, plus
    // room for a loaded CI machine.
    assert!(waited < cap + Duration::from_secs(2), "reconnected after {waited:?}");
    let mut last = seq(&snapshot);
    for _ in 0..50 {
        let v = next_line(&mut rx, Duration::from_secs(5)).await;
        assert_eq!(seq(&v), last + 1, "gapless after the snapshot: {v}");
        last = seq(&v);
    }
    let err = stderr_of(child);
    assert!(err.matches("tickcast-client: connected").count() >= 2, "{err}");
    assert!(!err.contains("panicked"), "{err}");
    running.shutdown_within(Duration::from_secs(5)).await;
}

#[test]
fn bad_flags_exit_2_with_one_line() {
    for args in [
        vec!["http://localhost:1", "--subscribe", "A"],
        vec!["ws://localhost:1", "--subscribe", "A", "--depth", "7"],
        vec!["ws://localhost:1", "--subscribe", "A", "--encoding", "xml"],
        vec!["ws://localhost:1"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_tickcast-client")).args(&args).output().expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn an_unreachable_server_is_retried_and_reported() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let out = Command::new(env!("CARGO_BIN_EXE_tickcast-client"))
        .args([&format!("ws://127.0.0.1:{port}"), "--subscribe", "A", "--duration", "1s", "--backoff-cap", "200ms"])
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.lines().filter(|l| l.contains("retrying in")).count() >= 2, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn book_ladder_and_stats_print_once_a_second_off_a_tty() {
    let running = start(config("127.0.0.1:0".parse().unwrap())).await;
    let sym = first_symbol(running.addr).await;
    let url = format!("ws://{}", running.addr);
    let run = |extra: Vec<String>| {
        let mut args = vec![url.clone(), "--subscribe".into(), sym.clone(), "--duration".into(), "2500ms".into()];
        args.extend(extra);
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_tickcast-client")).args(&args).output().expect("run tickcast-client")
        })
    };
    let (book, stats) = tokio::join!(run(vec!["--book".into(), sym.clone()]), run(vec!["--stats".into()]));
    let (book, stats) = (book.expect("join"), stats.expect("join"));
    assert_eq!(book.status.code(), Some(0));
    assert_eq!(stats.status.code(), Some(0));
    let ladder = String::from_utf8_lossy(&book.stdout);
    assert!(!ladder.contains('\x1b'), "no ANSI codes into a pipe");
    let frames = ladder.matches(&format!("{sym} depth 10 checksum")).count();
    assert!((2..=4).contains(&frames), "one ladder a second: {ladder}");
    assert!(ladder.contains("  ask ") && ladder.contains("  bid "), "{ladder}");
    let stats = String::from_utf8_lossy(&stats.stdout);
    let lines: Vec<&str> = stats.lines().collect();
    assert!((2..=3).contains(&lines.len()), "one line a second: {stats}");
    assert!(lines.iter().all(|l| l.starts_with("msgs/s ") && l.contains("lag_ms p50")), "{stats}");
    running.shutdown_within(Duration::from_secs(5)).await;
}

/// Waits (up to 10 s) until `proxy` has accepted `n` connections, then a
/// little longer, so the stream through it is flowing.
async fn flowing(proxy: &Proxy, n: usize) {
    let waited = Instant::now();
    while proxy.accepted() < n {
        assert!(waited.elapsed() < Duration::from_secs(10), "no connection through the proxy");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_connection_is_resumed_gapless_without_a_snapshot_and_counted_in_stats() {
    let running = start(config("127.0.0.1:0".parse().unwrap())).await;
    let sym = first_symbol(running.addr).await;

    // JSON lines through a proxy that resets the connection mid-stream.
    let proxy = Proxy::start(running.addr).await;
    let args: Vec<String> = [
        format!("ws://{}", proxy.addr).as_str(),
        "--subscribe",
        &sym,
        "--format",
        "json",
        "--backoff-base",
        "20ms",
        "--backoff-cap",
        "200ms",
        "--count",
        "200",
    ]
    .map(String::from)
    .into();
    let (mut child, mut rx) = spawn_cli(&args);
    let snapshot = next_line(&mut rx, Duration::from_secs(10)).await;
    assert_eq!(snapshot["type"], "snapshot");
    let mut last = seq(&snapshot);
    for _ in 0..30 {
        let v = next_line(&mut rx, Duration::from_secs(5)).await;
        assert_eq!(seq(&v), last + 1, "{v}");
        last = seq(&v);
    }
    assert_eq!(proxy.cut(Cut::Reset), 1);
    for _ in 31..200 {
        let v = next_line(&mut rx, Duration::from_secs(10)).await;
        assert_ne!(v["type"], "snapshot", "a recovered symbol gets no snapshot: {v}");
        assert_eq!(seq(&v), last + 1, "gapless across the reconnect: {v}");
        last = seq(&v);
    }
    let status = tokio::task::spawn_blocking(move || {
        let status = child.wait();
        (child, status)
    });
    let (child, status) = tokio::time::timeout(Duration::from_secs(10), status).await.expect("exits").expect("join");
    assert_eq!(status.expect("wait").code(), Some(0), "--count reached");
    let err = stderr_of(child);
    assert_eq!(proxy.accepted(), 2, "{err}");
    assert!(err.contains("connected, resuming 1 symbol(s)"), "{err}");
    assert!(err.contains(&format!("resumed {sym} after seq ")) && err.contains(": recovered, no snapshot"), "{err}");

    // --stats counts the reconnect and the recovery.
    let proxy = Proxy::start(running.addr).await;
    let url = format!("ws://{}", proxy.addr);
    let stats_args = [&url, "--subscribe", &sym, "--stats", "--duration", "4s", "--backoff-base", "20ms"];
    let stats_args: Vec<String> = stats_args.map(|a| a.to_string()).into();
    let stats = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_tickcast-client")).args(&stats_args).output().expect("run tickcast-client")
    });
    flowing(&proxy, 1).await;
    assert_eq!(proxy.cut(Cut::Close), 1);
    let out = stats.await.expect("join");
    let stats = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stats}{}", String::from_utf8_lossy(&out.stderr));
    let last_line = stats.lines().last().unwrap_or_default();
    assert!(
        last_line.contains("unannounced 0)")
            && last_line.contains("reconnects 1 resumes 1 (recovered 1, not_recovered 0) checksum_mismatches 0"),
        "{stats}"
    );
    running.shutdown_within(Duration::from_secs(5)).await;
}
