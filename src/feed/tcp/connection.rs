//! One feed handler's connection, as a task on the feed thread: the auth
//! line (with `--feed-token`), then JSON lines into the ring until the
//! handler hangs up, falls silent for `--feed-idle-timeout`, or the server
//! stops.
//!
//! In: a connected socket. Out: ticks through the connection's
//! [`Publisher`].
//!
//! A bad line is counted (`tickcast_feed_errors_total`), logged
//! (rate-limited) and skipped; the connection and the feed go on. Lines
//! over [`MAX_LINE_BYTES`] are skipped to the next newline, so a handler
//! cannot make the server buffer without bound. An idle connection holds
//! no read buffer: one is taken when bytes arrive.

use std::borrow::Cow;
use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use tokio::net::TcpStream;

use super::access::{FeedToken, MAX_TOKEN_LEN};
use super::{TcpFeedSettings, AUTH_TIMEOUT};
use crate::feed::json::{parse_line, FeedError, MAX_LINE_BYTES};
use crate::feed::{ErrorLog, Publisher};
use crate::metrics::FeedRefusal;
use crate::model::now_ns;

/// Bytes asked of the socket per read: one read is one burst into the
/// ring (see [`Publisher`]).
const READ_CHUNK: usize = 64 << 10;

/// The longest auth line: the token, its JSON around it, and some slack.
const MAX_AUTH_LINE: usize = MAX_TOKEN_LEN + 256;

/// The auth line, `{"type":"auth","token":"…"}`.
#[derive(Deserialize)]
struct AuthLine<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    token: Option<Cow<'a, str>>,
}

impl AuthLine<'_> {
    /// The line parsed as an auth line, if it is one.
    fn parse(line: &[u8]) -> Option<AuthLine<'_>> {
        serde_json::from_slice::<AuthLine<'_>>(line).ok().filter(|a| a.kind == "auth")
    }
}

/// Serves one admitted connection until it ends.
pub(super) async fn serve(stream: TcpStream, peer: SocketAddr, settings: &TcpFeedSettings, mut publisher: Publisher) {
    let ctx = publisher.context().clone();
    let mut lines = LineReader::new(stream);
    let mut line_no = 0u64;
    if let Some(token) = &settings.access.token {
        if let Err(why) = authenticate(&mut lines, token).await {
            ctx.metrics.feed_refused(FeedRefusal::Auth);
            tracing::warn!(%peer, "feed handler closed: {why}");
            lines.reply(br#"{"type":"error","code":"unauthorized"}"#);
            return;
        }
        line_no = 1;
        tracing::info!(%peer, "feed handler authenticated");
    }
    let source = format!("tcp feed {peer}");
    let mut errors = ErrorLog::new();
    loop {
        // Whatever one read brings is one burst: it ends before the next
        // read can wait.
        let next = lines.next(MAX_LINE_BYTES, settings.idle_timeout, || publisher.end_burst()).await;
        let line = match next {
            Next::Line(line) => line,
            Next::TooLong => {
                line_no += 1;
                errors.report(&ctx.metrics, &source, &format!("line {line_no}: {}", FeedError::LineTooLong));
                continue;
            }
            Next::Eof => break,
            Next::Idle => {
                ctx.metrics.feed_refused(FeedRefusal::Idle);
                tracing::warn!(%peer, idle = ?settings.idle_timeout, "feed handler closed: sent nothing within --feed-idle-timeout");
                break;
            }
            Next::Failed(e) => {
                tracing::warn!(%peer, error = %e, "feed connection failed");
                break;
            }
        };
        line_no += 1;
        if ctx.stopping() {
            break;
        }
        let text = trim(line);
        if text.is_empty() {
            continue; // A heartbeat.
        }
        if line_no == 1 && settings.access.token.is_none() && AuthLine::parse(text).is_some() {
            continue; // A handler that always authenticates, talking to a server that does not ask.
        }
        let parsed = parse_line(text).and_then(|t| Ok((publisher.symbol(&t.sym)?, t)));
        match parsed {
            Ok((id, t)) => {
                let ts_event = t.ts_event.unwrap_or_else(now_ns);
                if publisher.publish_in_burst(id, ts_event, t.update).is_err() {
                    break; // Shutting down.
                }
            }
            Err(e) => errors.report(&ctx.metrics, &source, &format!("line {line_no}: {e}")),
        }
    }
    publisher.end_burst();
    tracing::info!(%peer, lines = line_no, "feed handler disconnected");
}

/// Reads the first line within [`AUTH_TIMEOUT`] and checks its token.
async fn authenticate(lines: &mut LineReader, token: &FeedToken) -> Result<(), &'static str> {
    let first = tokio::time::timeout(AUTH_TIMEOUT, lines.next(MAX_AUTH_LINE, AUTH_TIMEOUT, || {})).await;
    let line = match first {
        Ok(Next::Line(line)) => trim(line),
        Ok(Next::TooLong) => return Err("the first line is too long to be an auth line"),
        Ok(Next::Eof | Next::Failed(_)) => return Err("hung up before authenticating"),
        Ok(Next::Idle) | Err(_) => return Err("no auth line within the auth timeout"),
    };
    let Some(auth) = AuthLine::parse(line) else {
        return Err("the first line is not an auth line ({\"type\":\"auth\",\"token\":\"...\"})");
    };
    match auth.token {
        Some(presented) if token.matches(presented.as_bytes()) => Ok(()),
        _ => Err("wrong feed token"),
    }
}

fn trim(line: &[u8]) -> &[u8] {
    let end = line.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(0, |i| i + 1);
    &line[..end]
}

/// What [`LineReader::next`] found.
enum Next<'a> {
    /// A whole line, without its newline (a last line may lack one).
    Line(&'a [u8]),
    /// A line over the bound, consumed to its newline and dropped.
    TooLong,
    /// The handler closed the connection.
    Eof,
    /// No byte arrived within the idle timeout.
    Idle,
    /// The socket failed.
    Failed(io::Error),
}

/// Newline-delimited lines from a socket, each at most a given length,
/// with a read buffer that exists only while bytes are pending.
struct LineReader {
    stream: TcpStream,
    /// Bytes read: `buf[pos..]` is not yet returned.
    buf: Vec<u8>,
    pos: usize,
    /// `buf[pos..pos + scanned]` holds no newline.
    scanned: usize,
    /// Dropping the rest of an overlong line.
    skipping: bool,
    /// The peer has closed its side.
    eof: bool,
}

impl LineReader {
    fn new(stream: TcpStream) -> LineReader {
        LineReader { stream, buf: Vec::new(), pos: 0, scanned: 0, skipping: false, eof: false }
    }

    /// The next line of at most `max` bytes. `before_wait` runs before
    /// every read of the socket (which may wait); a wait longer than
    /// `idle` ends the connection.
    async fn next(&mut self, max: usize, idle: Duration, mut before_wait: impl FnMut() + Send) -> Next<'_> {
        loop {
            let pending = &self.buf[self.pos..];
            if let Some(i) = pending[self.scanned..].iter().position(|&b| b == b'\n') {
                let (start, len) = (self.pos, self.scanned + i);
                self.pos += len + 1;
                self.scanned = 0;
                if std::mem::take(&mut self.skipping) || len > max {
                    return Next::TooLong;
                }
                return Next::Line(&self.buf[start..start + len]);
            }
            if self.eof {
                // A final line without its newline still counts.
                let (start, len) = (self.pos, pending.len());
                self.pos = self.buf.len();
                self.scanned = 0;
                return if std::mem::take(&mut self.skipping) || len > max {
                    Next::TooLong
                } else if len == 0 {
                    Next::Eof
                } else {
                    Next::Line(&self.buf[start..start + len])
                };
            }
            self.scanned = pending.len();
            if self.skipping || self.scanned > max {
                // Over the bound: keep nothing of it, only look for its end.
                self.skipping = true;
                self.pos = self.buf.len();
                self.scanned = 0;
            }
            self.compact();
            before_wait();
            match tokio::time::timeout(idle, self.stream.readable()).await {
                Err(_) => return Next::Idle,
                Ok(Err(e)) => return Next::Failed(e),
                Ok(Ok(())) => {}
            }
            self.buf.reserve(READ_CHUNK);
            match self.stream.try_read_buf(&mut self.buf) {
                Ok(0) => self.eof = true,
                // One read is one turn: the other handlers' tasks get
                // theirs before this one's next read, so a fire hose (or
                // a line of 10,000 levels) delays them by one read at most.
                Ok(_) => tokio::task::yield_now().await,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
                Err(e) => return Next::Failed(e),
            }
        }
    }

    /// Moves the unreturned bytes to the front, and frees the buffer when
    /// nothing is pending, so a connection waiting for bytes holds none
    /// (an allocation per read is far cheaper than parsing what it reads).
    fn compact(&mut self) {
        if self.pos == self.buf.len() {
            self.buf = Vec::new();
        } else if self.pos > 0 {
            self.buf.drain(..self.pos);
        }
        self.pos = 0;
    }

    /// Best effort: one line to the handler before its connection is
    /// closed, never waiting for the socket.
    fn reply(&self, message: &[u8]) {
        let mut line = message.to_vec();
        line.push(b'\n');
        let _ = self.stream.try_write(&line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    async fn pair() -> (LineReader, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (LineReader::new(server), client)
    }

    async fn collect(reader: &mut LineReader, max: usize) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            match reader.next(max, Duration::from_secs(5), || {}).await {
                Next::Line(l) => out.push(String::from_utf8_lossy(l).into_owned()),
                Next::TooLong => out.push("<too long>".into()),
                Next::Eof => return out,
                Next::Idle => panic!("idle"),
                Next::Failed(e) => panic!("{e}"),
            }
        }
    }

    #[tokio::test]
    async fn lines_split_anywhere_and_overlong_ones_are_skipped() {
        let (mut reader, mut client) = pair().await;
        let writer = tokio::spawn(async move {
            for chunk in [&b"ab"[..], b"c\nde", b"f\n0123456789", b"0123456789\nlast"] {
                client.write_all(chunk).await.unwrap();
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        assert_eq!(collect(&mut reader, 8).await, ["abc", "def", "<too long>", "last"]);
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn a_silent_connection_is_idle() {
        let (mut reader, _client) = pair().await;
        let next = reader.next(8, Duration::from_millis(50), || {}).await;
        assert!(matches!(next, Next::Idle));
        assert_eq!(reader.buf.capacity(), 0, "an idle connection holds no buffer");
    }
}
