//! The load generator (`tickcast-bench`) against a real server: the batch
//! frame reader it shares across targets must see every update, in order,
//! in every encoding, whether its publisher sends JSON lines or binary
//! records. A short run; the real figures live in BENCHMARKS.md.

// The server's own test helpers: one `tests/common` for the workspace.
#[path = "../../../tests/common/mod.rs"]
mod common;

use std::time::Duration;

use common::start;
use tickcast::config::Config;
use tickcast::feed::FeedSpec;

async fn bench(args: Vec<String>) -> serde_json::Value {
    // A child process, waited for off the runtime that serves it.
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_tickcast-bench")).args(&args).output()
    })
    .await
    .expect("join")
    .expect("run tickcast-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "bench failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let last = stdout.lines().last().expect("a JSON report");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {last}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_generator_sees_every_update_in_order_in_every_encoding() {
    let running = start(Config { feed: FeedSpec::Tcp("127.0.0.1:0".parse().unwrap()), ..Config::default() }).await;
    let server = running.addr.to_string();
    let feed = running.feed.expect("tcp feed").to_string();
    for (encoding, feed_format) in [("msgpack", "json"), ("protobuf", "json"), ("json", "json"), ("msgpack", "binary")]
    {
        let args = [
            "--feed-format",
            feed_format,
            "--target",
            "tickcast",
            "--server",
            &server,
            "--drive-feed",
            &feed,
            "--encoding",
            encoding,
            "--subscribers",
            "20",
            "--per-sub",
            "5",
            "--symbols",
            "20",
            "--rate",
            "2000",
            "--warmup",
            "1s",
            "--duration",
            "2s",
            "--json",
        ];
        let report = bench(args.iter().map(|s| s.to_string()).collect()).await;
        let delivered = report["delivered"].as_f64().expect("delivered");
        let expected = report["expected_per_sec"].as_f64().expect("expected") * 2.0;
        let run = format!("{encoding}, {feed_format} feed");
        assert_eq!(report["seq_errors"], 0, "{run}: {report}");
        assert!(delivered > 0.9 * expected && delivered < 1.1 * expected, "{run}: {delivered} of {expected}");
        let p50 = report["p50_us"].as_f64().expect("p50");
        assert!(p50 > 0.0 && p50 < 1_000_000.0, "{run}: p50 {p50} us");
    }
    running.shutdown_within(Duration::from_secs(5)).await;
}

/// `--idle N --with-load`: the idle subscribers connect from 127.0.0.2,
/// stay on quiet symbols of their own while the load run measures, and
/// the active subscribers see every update (the quiet symbols are left
/// out of the expected count).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_subscribers_stay_idle_beside_a_load_run() {
    let running = start(Config { feed: FeedSpec::Tcp("127.0.0.1:0".parse().unwrap()), ..Config::default() }).await;
    let args = [
        "--server",
        &running.addr.to_string(),
        "--drive-feed",
        &running.feed.expect("tcp feed").to_string(),
        "--idle",
        "300",
        "--with-load",
        "--subscribers",
        "20",
        "--per-sub",
        "5",
        "--symbols",
        "20",
        "--rate",
        "2000",
        "--warmup",
        "1s",
        "--duration",
        "2s",
        "--json",
    ];
    let report = bench(args.iter().map(|s| s.to_string()).collect()).await;
    assert_eq!(report["idle_connections"], 300, "{report}");
    assert_eq!(report["idle_sources"], 1, "{report}");
    assert!(report["idle_connects_per_sec"].as_f64().unwrap() > 0.0, "{report}");
    assert!(report["idle_rss_after_bytes"].as_f64().unwrap() > 0.0, "{report}");
    assert_eq!(report["seq_errors"], 0, "{report}");
    let delivered = report["delivered"].as_f64().expect("delivered");
    let expected = report["expected_per_sec"].as_f64().expect("expected") * 2.0;
    assert!(delivered > 0.9 * expected && delivered < 1.1 * expected, "{delivered} of {expected}: {report}");
    running.shutdown_within(Duration::from_secs(5)).await;
}

#[test]
fn flags_that_cannot_make_a_run_are_refused_before_connecting() {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tickcast-bench"))
            .args(["--server", "127.0.0.1:9"])
            .args(args)
            .output()
            .expect("run tickcast-bench");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!stderr.contains("panicked"), "{stderr}");
        (out.status.code(), stderr)
    };
    let (code, stderr) = run(&["--per-sub", "6", "--symbols", "5"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("--per-sub 6 is more than --symbols 5"), "{stderr}");
    let (code, stderr) = run(&["--target", "nats", "--drive-feed", "127.0.0.1:9"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("--target nats needs --server-pid"), "{stderr}");
    let (code, stderr) =
        run(&["--target", "nats", "--server-pid", "1", "--drive-feed", "127.0.0.1:9", "--feed-format", "binary"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("only tickcast's tcp feed takes binary records"), "{stderr}");
    let (code, stderr) = run(&["--feed-format", "binary"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("--feed-format binary needs --drive-feed"), "{stderr}");
    let (code, stderr) = run(&["--with-load", "--drive-feed", "127.0.0.1:9"]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("--with-load runs a load beside --idle"), "{stderr}");
    let (code, stderr) = run(&["--idle", "10", "--with-load"]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("--with-load needs --drive-feed"), "{stderr}");
    let (code, stderr) = run(&["--target", "smoke-signals"]);
    assert_eq!(code, Some(2), "clap's own exit code: {stderr}");
}
