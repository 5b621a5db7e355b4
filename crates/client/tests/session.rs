//! `Session` against a real server: the heartbeat watchdog gives up on a
//! connection that sends nothing (no data, no ping) and reconnects, and
//! server pings keep a quiet connection alive.

// The server's own test helpers: one `tests/common` for the workspace.
#[path = "../../../tests/common/mod.rs"]
mod common;

use std::time::Duration;

use common::start;
use tickcast::config::Config;
use tickcast::feed::SyntheticSettings;
use tickcast::wire::ServerMessage;
use tickcast_client::session::{Session, SessionConfig, SessionEvent};

/// A server whose universe has a symbol the synthetic feed never ticks:
/// after its snapshot, a subscriber to it hears nothing but pings.
fn quiet_server(ping_interval: Duration) -> Config {
    Config {
        synthetic: SyntheticSettings { symbols: 2, rate: 100.0, seed: 1 },
        universe: vec!["QUIET".into()],
        ping_interval,
        ..Config::default()
    }
}

async fn next(session: &mut Session) -> SessionEvent {
    tokio::time::timeout(Duration::from_secs(10), session.next_event()).await.expect("an event").expect("running")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watchdog_reconnects_a_silent_connection_and_pings_keep_one_alive() {
    let running = start(quiet_server(Duration::from_secs(3600))).await;
    let mut config = SessionConfig::new(running.addr.to_string(), vec!["QUIET".into()]);
    config.heartbeat_timeout = Duration::from_millis(300);
    let mut session = Session::start(config.clone());
    assert_eq!(next(&mut session).await, SessionEvent::Connected { resuming: 0 });
    let mut saw_snapshot = false;
    let reason = loop {
        match next(&mut session).await {
            SessionEvent::Message(m) if m.kind() == "snapshot" => saw_snapshot = true,
            SessionEvent::Message(_) => {}
            SessionEvent::Disconnected { reason, retry_in, attempt } => {
                assert_eq!(attempt, 0, "the first retry");
                assert!(retry_in <= config.backoff_base, "first retry within base: {retry_in:?}");
                break reason;
            }
            other => panic!("unexpected {other:?}"),
        }
    };
    assert!(saw_snapshot);
    assert!(reason.contains("heartbeat watchdog"), "{reason}");
    // It reconnects, resuming QUIET from its seq-0 snapshot (resume is on
    // by default): nothing was missed, so nothing follows but pings.
    assert_eq!(next(&mut session).await, SessionEvent::Connected { resuming: 1 }, "and it reconnects");
    assert!(matches!(next(&mut session).await, SessionEvent::Message(ServerMessage::Ack { .. })));
    assert_eq!(next(&mut session).await, SessionEvent::Resumed { sym: "QUIET".into(), from_seq: 0, recovered: true });
    drop(session);
    running.shutdown_within(Duration::from_secs(5)).await;

    // Pings every 100 ms: the same watchdog keeps the connection.
    let running = start(quiet_server(Duration::from_millis(100))).await;
    config.addr = running.addr.to_string();
    let mut session = Session::start(config);
    let quiet_for = tokio::time::timeout(Duration::from_millis(1500), async {
        loop {
            if let SessionEvent::Disconnected { reason, .. } = next(&mut session).await {
                return reason;
            }
        }
    })
    .await;
    assert!(quiet_for.is_err(), "disconnected: {quiet_for:?}");
    drop(session);
    running.shutdown_within(Duration::from_secs(5)).await;
}
