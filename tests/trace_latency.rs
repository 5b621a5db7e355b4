//! `--trace-latency`, end to end over real sockets: a tcp feed handler
//! sends quotes, a subscriber reads them, and `/metrics` shows every
//! stage of their way, consistent with each other; off, it shows none.

mod common;

use std::time::Duration;

use common::{start, Running};
use tickcast::config::Config;
use tickcast::feed::FeedSpec;
use tickcast::trace::{Stage, QUANTILES};
use tickcast::wire::{Encoding, ServerMessage};
use tickcast_client::{http_get, scrape_value, Client};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::timeout;

const STEP: Duration = Duration::from_secs(5);

fn tcp_config(trace_latency: u32) -> Config {
    Config { feed: FeedSpec::Tcp("127.0.0.1:0".parse().unwrap()), trace_latency, ..Config::default() }
}

fn quote(sym: &str, ask: f64, ts: u64) -> String {
    format!(r#"{{"type":"quote","sym":"{sym}","bid":1.0,"bid_sz":300,"ask":{ask:?},"ask_sz":200,"ts_event":{ts}}}"#)
}

async fn next(client: &mut Client) -> ServerMessage<'static> {
    timeout(STEP, client.next_message()).await.expect("message in time").expect("message")
}

async fn metrics_text(running: &Running) -> String {
    let (status, body) = http_get(running.addr, "/metrics").await.expect("GET /metrics");
    assert_eq!(status, 200);
    body
}

/// A server on a tcp feed with one msgpack subscriber to AAPL, which has
/// read its ack and snapshot; then `bursts` bursts of 10 quotes, each read
/// by the subscriber before the next is sent.
async fn feed_a_subscriber(running: &Running, bursts: u64) {
    let mut feed = TcpStream::connect(running.feed.expect("tcp feed")).await.expect("connect feed");
    feed.write_all(format!("{}\n", quote("AAPL", 2.0, 1)).as_bytes()).await.unwrap();
    timeout(STEP, async {
        while running.metric("tickcast_updates_published_total").await < 1.0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("first quote published");
    let mut c = Client::connect(running.addr, Encoding::Msgpack).await.unwrap();
    c.subscribe(&["AAPL"]).await.unwrap();
    assert!(matches!(next(&mut c).await, ServerMessage::Ack { .. }));
    assert!(matches!(next(&mut c).await, ServerMessage::Snapshot { seq: 1, .. }));
    for burst in 0..bursts {
        let lines: String = (0..10).map(|i| quote("AAPL", 2.0 + i as f64, 10 + burst) + "\n").collect();
        feed.write_all(lines.as_bytes()).await.unwrap();
        for i in 0..10u64 {
            match next(&mut c).await {
                ServerMessage::Quote { seq, .. } => assert_eq!(seq, 2 + 10 * burst + i),
                other => panic!("expected a quote, got {other:?}"),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stage_of_a_sampled_tick_is_timed_and_the_stages_add_up() {
    let running = start(tcp_config(1)).await;
    feed_a_subscriber(&running, 20).await;
    // A sample is recorded right after the write that delivered it
    // returned, which the client may see first: wait for the last ones.
    let text = timeout(STEP, async {
        loop {
            let text = metrics_text(&running).await;
            if scrape_value(&text, r#"tickcast_trace_stage_ns_count{stage="total"}"#).unwrap_or(0.0) >= 20.0 {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("at least one traced delivery per burst");
    let value = |key: String| scrape_value(&text, &key).unwrap_or_else(|| panic!("{key} missing:\n{text}"));
    let count = |stage: Stage| value(format!(r#"tickcast_trace_stage_ns_count{{stage="{}"}}"#, stage.name()));
    let sum = |stage: Stage| value(format!(r#"tickcast_trace_stage_ns_sum{{stage="{}"}}"#, stage.name()));
    let quantile =
        |stage: Stage, q: f64| value(format!(r#"tickcast_trace_stage_ns{{stage="{}",quantile="{q}"}}"#, stage.name()));
    let total = Stage::Total;
    assert!(value("tickcast_trace_sampled_total".into()) >= 201.0, "every tick sampled at 1 in 1");
    for stage in Stage::ALL {
        // Every stage is recorded once per delivery.
        assert_eq!(count(stage), count(total), "{stage:?}");
        assert!(sum(stage) <= sum(total), "{stage:?}");
        for q in QUANTILES {
            // Each delivery's total is at least each of its stages, so
            // every quantile of the total is at least the stage's.
            assert!(quantile(stage, q) <= quantile(total, q), "{stage:?} at {q}:\n{text}");
        }
    }
    // The feed read, the thread hops and the socket write all take time.
    for stage in [Stage::FeedParse, Stage::RingWait, Stage::Fanout, Stage::WriterWake, Stage::SocketWrite] {
        assert!(sum(stage) > 0.0, "{stage:?}");
    }
    let parts: f64 = Stage::ALL[..6].iter().map(|&s| sum(s)).sum();
    assert_eq!(parts, sum(total), "the stages' sums add up to the total's");
    running.shutdown_within(STEP).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_by_default_no_trace_metrics_are_shown() {
    let running = start(tcp_config(Config::default().trace_latency)).await;
    feed_a_subscriber(&running, 3).await;
    let text = metrics_text(&running).await;
    assert!(text.contains("tickcast_updates_published_total"), "{text}");
    assert!(!text.contains("tickcast_trace"), "off: no trace metrics\n{text}");
    running.shutdown_within(STEP).await;
}
