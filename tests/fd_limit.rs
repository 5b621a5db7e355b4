//! The open-file limit at work: a real `tickcast` process started under a
//! small `ulimit -n` (the limit cannot be changed for a server running in
//! the test's own process), then sent more connections than it has
//! descriptors. It must say at start-up that the limit is below
//! `--max-connections`, keep serving the subscriber it has, answer the
//! extra connections `503` instead of leaving them in the backlog,
//! without spinning, count it in `/metrics`, and take new clients again
//! once the extra connections are gone.

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use tickcast::wire::ServerMessage;
use tickcast_client::{http_get, scrape_value, Client};

/// The server's open-file limit in this test: room for its own
/// descriptors and a few dozen clients.
const FD_LIMIT: u64 = 100;

/// Raw connections opened at once: more than the limit leaves room for.
const EXTRA_CONNECTIONS: usize = 150;

/// Kills the server when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port free now (bound, then released for the server to take).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The server's CPU seconds so far, from `/proc/PID/stat`.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / tickcast::sys::clock_ticks_per_second() as f64
}

/// Waits until `addr` answers `/healthz`.
async fn wait_until_serving(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !matches!(http_get(addr, "/healthz").await, Ok((200, _))) {
        assert!(Instant::now() < deadline, "the server did not start serving");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads until `n` live updates arrived, within 5 s.
async fn updates(client: &mut Client, n: usize) {
    let read = async {
        let mut seen = 0;
        while seen < n {
            let m = client.next_message().await.expect("the subscriber keeps its connection");
            if matches!(m, ServerMessage::Trade { .. } | ServerMessage::Quote { .. } | ServerMessage::Book { .. }) {
                seen += 1;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read).await.expect("updates keep flowing");
}

/// A subscriber to every symbol, with its first updates read.
async fn subscriber(addr: SocketAddr) -> Client {
    let mut client = Client::connect(addr, tickcast::wire::Encoding::Json).await.expect("connect");
    client.subscribe(&["*"]).await.expect("subscribe");
    updates(&mut client, 5).await;
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_descriptors_the_server_refuses_extra_clients_keeps_serving_and_recovers() {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let log = std::env::temp_dir().join(format!("tickcast-fd-limit-{}.log", std::process::id()));
    // `ulimit -n` in the shell sets the soft and the hard limit, which the
    // server cannot raise again; `exec` makes the server the shell's PID.
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new("sh")
        .args(["-c", &format!("ulimit -n {FD_LIMIT} && exec \"$0\" \"$@\""), env!("CARGO_BIN_EXE_tickcast")])
        .args(["--listen", &addr.to_string(), "--symbols", "10", "--rate", "200", "--writers", "1"])
        .args(["--handshake-timeout", "30s", "--log", "warn"])
        .env("NO_COLOR", "1")
        // The log goes to stdout.
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("start tickcast under sh");
    let server = Running(child);
    let pid = server.0.id();
    wait_until_serving(addr).await;
    let startup = std::fs::read_to_string(&log).unwrap();
    assert!(startup.contains(&format!("open-file limit {FD_LIMIT} allows about ")), "{startup}");
    assert!(startup.contains("below --max-connections 50000"), "{startup}");
    let (_, metrics) = http_get(addr, "/metrics").await.unwrap();
    assert_eq!(scrape_value(&metrics, "process_max_fds"), Some(FD_LIMIT as f64), "{metrics}");

    let mut first = subscriber(addr).await;

    // More connections than descriptors: each completes its TCP handshake
    // in the kernel's backlog; the server accepts what it can hold (they
    // then wait in the HTTP phase, up to --handshake-timeout) and must
    // answer the rest.
    let mut extra: Vec<(TcpStream, Vec<u8>)> = (0..EXTRA_CONNECTIONS)
        .map(|_| {
            let s = TcpStream::connect(addr).expect("the backlog takes it");
            s.set_nonblocking(true).unwrap();
            (s, Vec::new())
        })
        .collect();
    let cpu_before = cpu_seconds(pid);
    let started = Instant::now();
    let (mut answered, mut stable_since) = (0, Instant::now());
    while started.elapsed() < Duration::from_secs(10) && stable_since.elapsed() < Duration::from_secs(1) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut buf = [0u8; 512];
        for (s, got) in &mut extra {
            while let Ok(n @ 1..) = s.read(&mut buf) {
                got.extend_from_slice(&buf[..n]);
            }
        }
        let now = extra.iter().filter(|(_, got)| !got.is_empty()).count();
        if now != answered {
            (answered, stable_since) = (now, Instant::now());
        }
    }
    let cpu = (cpu_seconds(pid) - cpu_before) / started.elapsed().as_secs_f64();
    assert!(answered > 0, "no extra connection was answered: they wait in the backlog");
    assert!(answered < EXTRA_CONNECTIONS, "some were accepted and held: the limit was reached, not a refusal");
    for (_, got) in extra.iter().filter(|(_, got)| !got.is_empty()) {
        let text = String::from_utf8_lossy(got);
        assert!(text.starts_with("HTTP/1.1 503"), "{text}");
        assert!(text.contains("open-file limit"), "{text}");
    }
    assert!(cpu < 0.5, "the accept loop must not spin: {cpu:.2} cores while out of descriptors");
    // The subscriber that was in before never noticed.
    updates(&mut first, 20).await;

    // A new connection is answered too, while the extra ones are held
    // (it sends nothing: the server closes without reading a request).
    let mut late = TcpStream::connect(addr).unwrap();
    late.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut reply = String::new();
    let _ = late.read_to_string(&mut reply);
    assert!(reply.starts_with("HTTP/1.1 503"), "{reply}");
    drop(late);

    // Once the extra connections go away, clients are served again.
    drop(extra);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut second = loop {
        if let Ok(Ok(client)) = tokio::time::timeout(Duration::from_secs(2), async {
            let mut c = Client::connect(addr, tickcast::wire::Encoding::Json).await?;
            c.subscribe(&["*"]).await?;
            Ok::<_, tickcast_client::Error>(c)
        })
        .await
        {
            break client;
        }
        assert!(Instant::now() < deadline, "the server did not take new clients again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    updates(&mut second, 5).await;
    updates(&mut first, 5).await;
    let (_, metrics) = http_get(addr, "/metrics").await.unwrap();
    let fd_limit_errors = scrape_value(&metrics, r#"tickcast_accept_errors_total{reason="fd_limit"}"#).unwrap_or(0.0);
    assert!(fd_limit_errors >= 1.0, "{metrics}");
    let rejected = scrape_value(&metrics, "tickcast_connections_rejected_total").unwrap_or(0.0);
    assert!(rejected >= answered as f64, "every 503 is counted: {rejected} < {answered}");
    let _ = std::fs::remove_file(log);
}
