//! The open-file limit: every client is one file descriptor, so the
//! process's `RLIMIT_NOFILE` caps the connections the server can hold,
//! whatever `--max-connections` says.
//!
//! Two things live here:
//! - [`FdBudget`]: at start-up, the limit against `--max-connections` plus
//!   the descriptors the server keeps for itself (listeners, feed
//!   connections, tick-log and replay files, the runtime's own). When the
//!   limit is the lower, the server says so, with both numbers and the
//!   fix, instead of failing at the N-th client with `EMFILE`.
//! - [`AcceptErrors`]: what the accept loops do when `accept` fails. Out
//!   of descriptors (`EMFILE`/`ENFILE`), the pending connection stays in
//!   the kernel's backlog, so accepting again at once fails again: the
//!   loop would spin, and the client would wait in the backlog for
//!   nothing. Instead the loop gives up a descriptor it holds in reserve,
//!   accepts every pending connection, answers each `503` and closes it
//!   ([`admission::refuse`]), takes its reserve back, and pauses
//!   [`ACCEPT_BACKOFF`]. Sessions already open are not touched; once
//!   clients leave, accepting works again by itself. (libuv's
//!   `uv__emfile_trick` does the same.)
//!
//! Imports: the limit itself from [`crate::sys`], the settings from
//! [`Config`], the refusal from [`admission`].

use std::fs::File;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;

use super::admission::{self, Refused};
use super::upgrade::MAX_REPLAY_CHECKS;
use super::METRICS_MAX_CONNECTIONS;
use crate::config::Config;
use crate::feed::FeedSpec;
use crate::metrics::{AcceptError, Metrics};

/// Descriptors the server holds whatever its flags: stdin, stdout,
/// stderr, the runtime's epoll and its wakers (one eventfd per writer
/// thread and a few more), the main listener, the reserve of
/// [`AcceptErrors`], `/proc` files read at scrape time, and headroom for
/// the libraries. A synthetic-feed server with 2 writers holds 13, 14
/// while a scrape is open (`process_open_fds`); the rest is margin.
const BASE_FDS: u64 = 64;

/// Descriptors of a NATS connection (`--publish`, `--feed nats://`): the
/// socket and its client's runtime.
const NATS_FDS: u64 = 16;

/// Files the recorder keeps open (`--record`): the directory's lock, the
/// epoch file, the current segment, and one being rotated in.
const RECORD_FDS: u64 = 4;

/// Pause after a failed `accept`, so a lasting failure costs a few wake-ups
/// per second instead of a core.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// Most pending connections refused in one go while out of descriptors;
/// the rest wait for the next turn of the loop, after [`ACCEPT_BACKOFF`].
const MAX_REFUSED_AT_ONCE: usize = 1024;

/// Least time between two warnings about failing accepts: under a flood
/// of connections the log says what happened, once a second, with counts.
const WARN_EVERY: Duration = Duration::from_secs(1);

/// The open-file limit against what the configuration may open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdBudget {
    /// The soft `RLIMIT_NOFILE` the server runs with (after `main` raised
    /// it to the hard limit).
    pub limit: u64,
    /// Descriptors kept for the server's own use (see [`FdBudget::reserve`]).
    pub reserve: u64,
    /// `--max-connections`.
    pub max_connections: u64,
}

impl FdBudget {
    /// The budget of `config` under the process's current limit; `None`
    /// where the limit cannot be read.
    pub fn read(config: &Config) -> Option<FdBudget> {
        let (soft, _hard) = crate::sys::open_file_limit()?;
        Some(FdBudget {
            limit: soft,
            reserve: FdBudget::reserve(config),
            max_connections: config.max_connections as u64,
        })
    }

    /// Descriptors the server may open besides its clients' sockets, from
    /// its settings: [`BASE_FDS`]; `--metrics-listen`'s listener and its
    /// [`METRICS_MAX_CONNECTIONS`]; a tcp feed's listener and its
    /// `--max-feed-connections`; NATS ([`NATS_FDS`]); the recorder
    /// ([`RECORD_FDS`]) and one tick-log segment per rewind
    /// (`--max-replay-sessions`); a file per `/replay` session and per
    /// replay check ([`MAX_REPLAY_CHECKS`]).
    pub fn reserve(config: &Config) -> u64 {
        let mut reserve = BASE_FDS;
        if config.metrics_listen.is_some() {
            reserve += 1 + METRICS_MAX_CONNECTIONS as u64;
        }
        match &config.feed {
            FeedSpec::Tcp(_) => reserve += 1 + config.tcp_feed.max_connections as u64,
            FeedSpec::Replay(_) => reserve += 1,
            FeedSpec::Nats(_) => reserve += NATS_FDS,
            FeedSpec::Synthetic => {}
        }
        if config.publish.is_some() {
            reserve += NATS_FDS;
        }
        if config.record.is_some() {
            reserve += RECORD_FDS + config.max_replay_sessions as u64;
        }
        if config.replay_dir.is_some() {
            reserve += (config.max_replay_sessions + MAX_REPLAY_CHECKS) as u64;
        }
        reserve
    }

    /// Clients the limit leaves room for: the limit less the reserve.
    pub fn clients(&self) -> u64 {
        self.limit.saturating_sub(self.reserve)
    }

    /// Whether the limit, not `--max-connections`, bounds the clients.
    pub fn is_short(&self) -> bool {
        self.clients() < self.max_connections
    }

    /// Logs the budget at start-up: a warning naming both numbers and the
    /// fix when the limit is the lower bound, a debug line otherwise.
    pub fn log(&self) {
        if self.is_short() {
            tracing::warn!(
                open_file_limit = self.limit,
                reserved = self.reserve,
                max_connections = self.max_connections,
                "open-file limit {} allows about {} clients ({} descriptors kept for the server), below \
                 --max-connections {}: clients past that are refused with 503 as accept fails. Raise the hard \
                 limit (`ulimit -Hn` in the shell that starts the server, LimitNOFILE= in its systemd unit, \
                 nofile in limits.conf) or lower --max-connections",
                self.limit,
                self.clients(),
                self.reserve,
                self.max_connections
            );
        } else {
            tracing::debug!(
                open_file_limit = self.limit,
                reserved = self.reserve,
                max_connections = self.max_connections,
                "the open-file limit covers --max-connections"
            );
        }
    }
}

/// An accept loop's answer to `accept` failing: see the module doc.
#[derive(Debug)]
pub struct AcceptErrors {
    /// One descriptor held open (`/dev/null`) to be given up when the
    /// process runs out, so the pending connections can be accepted and
    /// refused. `None` while given up, or if it could not be reopened
    /// (another thread took the descriptor first): the loop then only
    /// backs off.
    reserve: Option<File>,
    /// Failures since the last warning, and when that was.
    unreported: u64,
    last_warning: Option<Instant>,
}

impl Default for AcceptErrors {
    fn default() -> Self {
        AcceptErrors { reserve: open_reserve(), unreported: 0, last_warning: None }
    }
}

impl AcceptErrors {
    /// Handles one failed `accept` on `listener`: counts it, refuses what
    /// is pending if the process is out of descriptors, warns (at most
    /// every [`WARN_EVERY`]) and backs off [`ACCEPT_BACKOFF`].
    pub async fn handle(&mut self, listener: &TcpListener, error: std::io::Error, metrics: &Metrics, what: &str) {
        let out_of_fds = crate::sys::is_out_of_fds(&error);
        let kind = if out_of_fds { AcceptError::FdLimit } else { AcceptError::Other };
        metrics.accept_errors[kind as usize].fetch_add(1, Ordering::Relaxed);
        let refused = if out_of_fds { self.refuse_pending(listener) } else { 0 };
        metrics.connections_rejected.fetch_add(refused as u64, Ordering::Relaxed);
        self.unreported += 1;
        if self.last_warning.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
            tracing::warn!(
                %error,
                failures = self.unreported,
                refused,
                "{what} failed{}",
                if out_of_fds { ": out of file descriptors, refusing new connections with 503" } else { "" }
            );
            self.unreported = 0;
            self.last_warning = Some(Instant::now());
        }
        tokio::time::sleep(ACCEPT_BACKOFF).await;
    }

    /// Gives up the reserve descriptor, accepts what is pending (up to
    /// [`MAX_REFUSED_AT_ONCE`]) and refuses each, then takes the reserve
    /// back. Never waits: the listener is polled, not awaited.
    fn refuse_pending(&mut self, listener: &TcpListener) -> usize {
        let Some(reserve) = self.reserve.take() else {
            self.reserve = open_reserve();
            return 0;
        };
        drop(reserve);
        let mut cx = Context::from_waker(Waker::noop());
        let mut refused = 0;
        while refused < MAX_REFUSED_AT_ONCE {
            match listener.poll_accept(&mut cx) {
                Poll::Ready(Ok((stream, _peer))) => {
                    admission::refuse(stream, Refused::FdLimit);
                    refused += 1;
                }
                Poll::Ready(Err(_)) | Poll::Pending => break,
            }
        }
        self.reserve = open_reserve();
        refused
    }
}

/// The reserve descriptor.
fn open_reserve() -> Option<File> {
    File::open("/dev/null").ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_grows_with_what_the_server_may_open() {
        let plain = Config::default();
        let base = FdBudget::reserve(&plain);
        assert_eq!(base, BASE_FDS);
        let tcp = Config { feed: FeedSpec::Tcp("127.0.0.1:0".parse().unwrap()), ..Config::default() };
        assert_eq!(FdBudget::reserve(&tcp), base + 1 + tcp.tcp_feed.max_connections as u64);
        let metrics = Config { metrics_listen: Some("127.0.0.1:0".parse().unwrap()), ..Config::default() };
        assert_eq!(FdBudget::reserve(&metrics), base + 1 + METRICS_MAX_CONNECTIONS as u64);
    }

    #[test]
    fn a_limit_below_max_connections_is_short_by_the_reserve() {
        let budget = FdBudget { limit: 20_000, reserve: 64, max_connections: 50_000 };
        assert!(budget.is_short());
        assert_eq!(budget.clients(), 19_936);
        let roomy = FdBudget { limit: 1 << 20, reserve: 64, max_connections: 50_000 };
        assert!(!roomy.is_short());
        let tiny = FdBudget { limit: 10, reserve: 64, max_connections: 1 };
        assert_eq!(tiny.clients(), 0, "never negative");
    }
}
