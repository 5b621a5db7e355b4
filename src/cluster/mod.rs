//! Scale-out on NATS: one sequencer, many edges, the same seqs everywhere.
//!
//! In: sequenced ticks from the engine (a sequencer, `--publish nats://`).
//! Out: binary tick records on NATS, and answers to edges' snapshot and
//! universe requests. The edge side, which follows a sequencer, is a feed
//! source: [`crate::feed::nats`].
//!
//! ```text
//!   feed ─▶ sequencer (tickcast --publish)          NATS             edges (tickcast --feed nats://)
//!           engine: seq ─▶ PublishTap ─▶ thread ─▶ PREFIX.tick.<SYM> ─▶ feed-nats thread ─▶ ring ─▶ engine
//!                  ▲                               PREFIX.snap.<SYM> ◀─ request image (sync, re-sync)
//!                  └── Command::Image ◀─ responder  PREFIX.universe   ◀─ request symbols (start-up)
//! ```
//!
//! NATS carries the data; no tickcast node talks to another directly, and
//! an edge keeps no state but its topics. Every record carries the
//! sequencer's **epoch** (see [`Epoch`]) and the symbol's seq, so an edge
//! can tell a lost record (a seq jump), a repeat, and a restarted
//! sequencer apart, and re-sync from a snapshot instead of guessing.
//! `docs/CLUSTER.md` has the subjects, the record layout
//! ([`crate::model::record`]) and what each failure looks like to a client.
//!
//! # Bounds
//! - The engine hands records to the publisher thread through a bounded
//!   queue of [`QUEUE_BATCHES`] engine batches; a full queue drops the batch
//!   (counted, `tickcast_cluster_publish_dropped_total`): fan-out never
//!   waits on NATS. Edges see the gap and re-sync those symbols.
//! - The publisher awaits NATS's own client buffer, so a NATS server that
//!   cannot keep up fills that queue, not memory.
//! - The responder answers at most [`MAX_INFLIGHT_REQUESTS`] snapshot
//!   requests at once, each waiting at most [`IMAGE_TIMEOUT`] for the engine.
//!
//! Imports: [`crate::model`] and [`crate::metrics`].

pub mod sequencer;
pub mod tap;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

pub use sequencer::{start_sequencer, ImageSource, Sequencer};
pub use tap::PublishTap;

/// Engine batches the publish queue holds (each at most the engine's
/// `MAX_BATCH` = 512 records, about 60 bytes each for trades and quotes):
/// at 1M ticks/s over half a second of a stalled NATS connection, in at most
/// about 16 MiB.
pub const QUEUE_BATCHES: usize = 1024;

/// Snapshot requests a sequencer works on at once; more wait in NATS's
/// subscription buffer.
pub const MAX_INFLIGHT_REQUESTS: usize = 64;

/// How long a sequencer waits for the engine's image of a topic before it
/// gives up on the request (the edge asks again).
pub const IMAGE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long an edge waits for a snapshot or universe reply.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Default subject prefix.
pub const DEFAULT_PREFIX: &str = "tickcast";

/// A sequencer's incarnation: a number every record carries, that changes
/// whenever the sequencer starts without its state (see `record` for how
/// `--record` keeps it across a clean restart). It is the start time in
/// ns, so a later epoch is a larger number and an edge can tell a stale
/// record of the old epoch from the first of a new one.
pub type Epoch = u64;

/// The NATS side of `--publish` and `--feed nats://`: where and how to
/// connect, and the subjects' prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatsSettings {
    /// `nats://HOST:PORT` (or `tls://`), as given.
    pub url: String,
    /// Subjects are `PREFIX.tick.<SYM>`, `PREFIX.snap.<SYM>`, `PREFIX.universe`.
    pub prefix: String,
    /// `--nats-creds FILE`: a NATS credentials file (JWT + NKey seed).
    pub creds: Option<PathBuf>,
    /// `--nats-user` / `--nats-password`.
    pub user: Option<(String, String)>,
    /// `--nats-token`.
    pub token: Option<String>,
    /// `--nats-ca FILE`: trust this CA for the NATS server's certificate
    /// (and require TLS).
    pub tls_ca: Option<PathBuf>,
    /// `--nats-cert FILE --nats-key FILE`: a client certificate.
    pub tls_client: Option<(PathBuf, PathBuf)>,
    /// Sequencer: put all of a symbol's records of one engine batch in one
    /// NATS message (`--nats-batch`, default on) instead of one message each.
    pub batch: bool,
}

impl NatsSettings {
    /// Settings for `url` with everything else at its default.
    pub fn new(url: impl Into<String>) -> NatsSettings {
        NatsSettings {
            url: url.into(),
            prefix: DEFAULT_PREFIX.to_owned(),
            creds: None,
            user: None,
            token: None,
            tls_ca: None,
            tls_client: None,
            batch: true,
        }
    }

    /// The subject a symbol's records are published on.
    pub fn tick_subject(&self, sym: &str) -> String {
        format!("{}.tick.{}", self.prefix, escape(sym))
    }

    /// The subject an edge requests a symbol's image on.
    pub fn snap_subject(&self, sym: &str) -> String {
        format!("{}.snap.{}", self.prefix, escape(sym))
    }

    /// The subject an edge asks the symbol universe on.
    pub fn universe_subject(&self) -> String {
        format!("{}.universe", self.prefix)
    }

    /// Connects, applying the auth and TLS options; with
    /// `retry_on_initial_connect` the client keeps trying in the background
    /// (the caller need not wait for the server to be up), and it always
    /// reconnects by itself after a loss. `events` receives connection
    /// events (bounded: a full queue drops the event, and a lost
    /// `Connected` costs at most a missed re-sync check, see the edge).
    pub async fn connect(
        &self,
        name: &str,
        events: Option<tokio::sync::mpsc::Sender<async_nats::Event>>,
    ) -> Result<async_nats::Client, ClusterError> {
        let mut options = async_nats::ConnectOptions::new()
            .name(name)
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(2))
            .request_timeout(Some(REQUEST_TIMEOUT))
            // Reconnect quickly but never spin: 50 ms doubling to 2 s.
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis(50u64.saturating_mul(1 << attempts.min(6) as u64)).min(Duration::from_secs(2))
            });
        if let Some(path) = &self.creds {
            options = options
                .credentials_file(path)
                .await
                .map_err(|e| ClusterError::Options(format!("--nats-creds {}: {e}", path.display())))?;
        }
        if let Some((user, password)) = &self.user {
            options = options.user_and_password(user.clone(), password.clone());
        }
        if let Some(token) = &self.token {
            options = options.token(token.clone());
        }
        if let Some(ca) = &self.tls_ca {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        if let Some((cert, key)) = &self.tls_client {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        if let Some(events) = events {
            options = options.event_callback(move |event| {
                let events = events.clone();
                async move {
                    let _ = events.try_send(event);
                }
            });
        }
        options.connect(self.url.as_str()).await.map_err(|e| ClusterError::Connect(self.url.clone(), e.to_string()))
    }
}

/// Why a cluster link could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A bad NATS option (e.g. an unreadable credentials file).
    #[error("{0}")]
    Options(String),
    /// The connection or a subscription failed.
    #[error("NATS {0}: {1}")]
    Connect(String, String),
    /// The NATS thread could not be spawned.
    #[error("cannot start the NATS thread: {0}")]
    Thread(std::io::Error),
}

/// A `nats://` (or `tls://`) URL, checked at flag parsing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatsUrl(pub String);

impl FromStr for NatsUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s.strip_prefix("nats://").or_else(|| s.strip_prefix("tls://"));
        match rest {
            Some(hostport) if !hostport.is_empty() && !hostport.contains(char::is_whitespace) => Ok(NatsUrl(s.into())),
            _ => Err(format!("{s:?} is not a NATS URL: expected nats://HOST:PORT or tls://HOST:PORT")),
        }
    }
}

impl fmt::Display for NatsUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A symbol as one NATS subject token: `.` (the token separator, and legal
/// in symbols such as `BRK.B`) becomes `%2E`; `%` cannot be in a symbol,
/// so the mapping is one to one. Every other symbol character is legal in
/// a subject as it is.
pub fn escape(sym: &str) -> std::borrow::Cow<'_, str> {
    if sym.contains('.') {
        std::borrow::Cow::Owned(sym.replace('.', "%2E"))
    } else {
        std::borrow::Cow::Borrowed(sym)
    }
}

/// The symbol a subject token names ([`escape`] undone).
pub fn unescape(token: &str) -> std::borrow::Cow<'_, str> {
    if token.contains('%') {
        std::borrow::Cow::Owned(token.replace("%2E", "."))
    } else {
        std::borrow::Cow::Borrowed(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbols_are_one_subject_token_and_come_back() {
        for sym in ["AAPL", "BRK.B", "ES.Z5.C", "BTC/USD", "a-b_c:d"] {
            let token = escape(sym);
            assert!(!token.contains('.') && !token.contains('*') && !token.contains('>'), "{token}");
            assert_eq!(unescape(&token), sym);
        }
        let s = NatsSettings::new("nats://127.0.0.1:4222");
        assert_eq!(s.tick_subject("BRK.B"), "tickcast.tick.BRK%2EB");
        assert_eq!(s.snap_subject("AAPL"), "tickcast.snap.AAPL");
    }

    #[test]
    fn nats_urls_are_checked() {
        assert!("nats://127.0.0.1:4222".parse::<NatsUrl>().is_ok());
        assert!("tls://nats.example:4222".parse::<NatsUrl>().is_ok());
        assert!("http://x".parse::<NatsUrl>().unwrap_err().contains("nats://HOST:PORT"));
        assert!("nats://".parse::<NatsUrl>().is_err());
    }
}
