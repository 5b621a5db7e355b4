//! A subscriber that stops reading is closed as a slow consumer once its
//! queue passes `--disconnect-above`, its memory is freed, and a healthy
//! subscriber of the same symbols loses nothing meanwhile.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tickcast::client::{http_get, Client};
use tickcast::codec::{Encoding, ServerMessage};
use tickcast::config::Config;
use tickcast::engine::SlowConsumerPolicy;
use tickcast::feed::SyntheticSettings;
use tickcast::metrics::scrape_value;
use tickcast::server::Server;

async fn metric(addr: SocketAddr, name: &str) -> f64 {
    let (_, body) = http_get(addr, "/metrics").await.unwrap();
    scrape_value(&body, name).unwrap_or_else(|| panic!("{name} missing"))
}

/// A subscriber to everything that never reads after the handshake, with a
/// tiny receive buffer so the server's side fills quickly.
async fn stalled_subscriber(addr: SocketAddr) -> tokio::net::TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&addr.into()).unwrap();
    socket.set_nonblocking(true).unwrap();
    let stream = tokio::net::TcpStream::from_std(socket.into()).unwrap();
    common::handshake_and_subscribe_all(stream, addr, "/ws?encoding=json").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_subscriber_is_disconnected_and_a_healthy_one_loses_nothing() {
    let limit = 256 * 1024;
    let config = Config {
        synthetic: SyntheticSettings { symbols: 10, rate: 20_000.0, seed: 5 },
        slow: SlowConsumerPolicy { disconnect_above: limit, slow_timeout: Duration::from_secs(30) },
        ..Config::default()
    };
    let server = Server::bind(config).await.unwrap();
    let addr = server.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));

    // The healthy subscriber reads on its own task from the start, so the
    // test's metric scrapes never make it fall behind.
    let mut healthy = Client::connect(addr, Encoding::Msgpack).await.unwrap();
    healthy.subscribe(&["*"]).await.unwrap();
    let received = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (received, done) = (received.clone(), done.clone());
        tokio::spawn(async move {
            let mut last = std::collections::HashMap::<String, u64>::new();
            while !done.load(Ordering::Relaxed) {
                let msg = tokio::time::timeout(Duration::from_secs(5), healthy.next_message()).await.unwrap().unwrap();
                if let Some((sym, seq)) = msg.sym_seq() {
                    let is_update = !matches!(msg, ServerMessage::Snapshot { .. });
                    if let Some(prev) = last.insert(sym.to_owned(), seq) {
                        assert!(
                            !is_update || seq == prev + 1,
                            "healthy subscriber saw a gap in {sym}: {prev} -> {seq}"
                        );
                    }
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let stalled = stalled_subscriber(addr).await;

    let started = Instant::now();
    let mut disconnected_at = None;
    let mut kernel_max = 0.0f64;
    let mut buffered_over_64k = 0.0f64;
    // Watch until well after the stalled session was closed.
    while started.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = received.load(Ordering::Relaxed);
        if disconnected_at.is_none() {
            // While stalled, its bytes show in the kernel send queue and in
            // the buffered-bytes histogram.
            kernel_max = kernel_max.max(metric(addr, "tickcast_kernel_queued_bytes").await);
            let count = metric(addr, "tickcast_session_buffered_bytes_count").await;
            let small = metric(addr, "tickcast_session_buffered_bytes_bucket{le=\"65536\"}").await;
            buffered_over_64k = buffered_over_64k.max(count - small);
            if metric(addr, "tickcast_slow_disconnects_total").await == 1.0 {
                disconnected_at = Some(now);
            }
        }
        if disconnected_at.is_some_and(|at| now >= at + 20_000) || reader.is_finished() {
            break;
        }
    }
    done.store(true, Ordering::Relaxed);
    reader.await.expect("the healthy subscriber saw every update, in order");
    let received = received.load(Ordering::Relaxed);
    let at = disconnected_at.expect("the stalled subscriber was closed as a slow consumer");
    assert_eq!(metric(addr, "tickcast_slow_disconnects_total").await, 1.0, "only the stalled one was dropped");
    assert!(kernel_max > 0.0, "SIOCOUTQ showed the stalled socket's kernel queue");
    assert!(buffered_over_64k >= 1.0, "the histogram showed a session over 64 KiB buffered");
    assert!(received >= at + 20_000, "healthy subscriber kept receiving after the disconnect");
    // The stalled session is gone, with its memory.
    tokio::time::timeout(Duration::from_secs(5), async {
        while metric(addr, "tickcast_connections").await != 1.0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the slow session ended");
    assert!(metric(addr, "tickcast_queued_bytes").await < limit as f64);
    drop(stalled);
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(5), task).await.unwrap().unwrap();
}
