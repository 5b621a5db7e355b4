//! One feed handler's connection, as a task on the feed thread: the auth
//! line (with `--feed-token`), then the connection's format
//! (`--feed-format`, or its first bytes: see [`super`]), then JSON lines or
//! binary frames into the ring until the handler hangs up, falls silent
//! for `--feed-idle-timeout`, or the server stops.
//!
//! In: a connected socket. Out: ticks through the connection's
//! [`Publisher`].
//!
//! A bad line or record is counted (`tickcast_feed_errors_total`), logged
//! (rate-limited) and skipped; the connection and the feed go on. Lines
//! over [`MAX_LINE_BYTES`] are skipped to the next newline, so a handler
//! cannot make the server buffer without bound. A binary frame has the same
//! bound, but a frame length of 0 or over it cannot be skipped (nothing
//! says where the next frame starts): the connection is closed, logged and
//! counted (`tickcast_feed_refused_total{reason="bad_frame"}`). A frame cut
//! short by the end of the connection is a feed error. Records are decoded
//! in place, from the read buffer. An idle connection holds no read
//! buffer: one is taken when bytes arrive.

use std::borrow::Cow;
use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use tokio::net::TcpStream;

use super::access::{FeedToken, MAX_TOKEN_LEN};
use super::{FeedFormat, TcpFeedSettings, AUTH_TIMEOUT};
use crate::feed::binary::parse_record;
use crate::feed::json::{parse_line, FeedError, MAX_LINE_BYTES};
use crate::feed::{ErrorLog, FeedContext, Publisher};
use crate::metrics::FeedRefusal;
use crate::model::now_ns;
use crate::model::record::FRAME_PREFIX_LEN;
use crate::trace::{self, Stamp};

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

/// What a connection sends, once settled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Json,
    Binary,
}

/// Serves one admitted connection until it ends.
pub(super) async fn serve(stream: TcpStream, peer: SocketAddr, settings: &TcpFeedSettings, mut publisher: Publisher) {
    let ctx = publisher.context().clone();
    let mut input = Input::new(stream, ctx.metrics.trace.enabled());
    // Lines taken so far: the auth line, if any.
    let mut lines_before = 0u64;
    if let Some(token) = &settings.access.token {
        if let Err(why) = authenticate(&mut input, token).await {
            ctx.metrics.feed_refused(FeedRefusal::Auth);
            tracing::warn!(%peer, "feed handler closed: {why}");
            input.reply(br#"{"type":"error","code":"unauthorized"}"#);
            return;
        }
        lines_before = 1;
        tracing::info!(%peer, "feed handler authenticated");
    }
    let format = match settle_format(&mut input, settings, &mut lines_before).await {
        Ok(format) => format,
        Err(end) => {
            ended(&ctx, peer, settings, &end);
            tracing::info!(%peer, "feed handler disconnected before its first tick");
            return;
        }
    };
    let source = format!("tcp feed {peer}");
    match format {
        Format::Json => {
            let lines = json_lines(&mut input, peer, settings, &mut publisher, &source, lines_before).await;
            publisher.end_burst();
            tracing::info!(%peer, lines, "feed handler disconnected");
        }
        Format::Binary => {
            tracing::info!(%peer, "feed handler sends binary records");
            let records = binary_records(&mut input, peer, settings, &mut publisher, &source).await;
            publisher.end_burst();
            tracing::info!(%peer, records, "feed handler disconnected");
        }
    }
}

/// The connection's format: `--feed-format`, or with `auto` its first
/// bytes (see [`super`]). Without a token, an auth line sent first is
/// skipped (counted in `lines_before`) and the format is decided by what
/// follows; the JSON reader skips one itself.
async fn settle_format(input: &mut Input, settings: &TcpFeedSettings, lines_before: &mut u64) -> Result<Format, End> {
    if settings.format == FeedFormat::Json {
        return Ok(Format::Json);
    }
    loop {
        match input.sniff(settings.idle_timeout).await? {
            Sniff::Binary => return Ok(Format::Binary),
            Sniff::Text => {
                let may_skip = settings.access.token.is_none() && *lines_before == 0;
                if may_skip && input.skip_auth_line(settings.idle_timeout).await? {
                    *lines_before = 1;
                    continue;
                }
                // Forced binary: a text line is read as a frame, whose
                // length is then out of bounds, and closes the connection.
                return Ok(if settings.format == FeedFormat::Binary { Format::Binary } else { Format::Json });
            }
        }
    }
}

/// Logs (and counts) how a connection ended.
fn ended(ctx: &FeedContext, peer: SocketAddr, settings: &TcpFeedSettings, end: &End) {
    match end {
        End::Eof => {}
        End::Idle => {
            ctx.metrics.feed_refused(FeedRefusal::Idle);
            tracing::warn!(%peer, idle = ?settings.idle_timeout, "feed handler closed: sent nothing within --feed-idle-timeout");
        }
        End::Failed(e) => tracing::warn!(%peer, error = %e, "feed connection failed"),
    }
}

/// JSON lines into the ring until the connection ends; returns the number
/// of lines read (the auth line included).
async fn json_lines(
    lines: &mut Input,
    peer: SocketAddr,
    settings: &TcpFeedSettings,
    publisher: &mut Publisher,
    source: &str,
    mut line_no: u64,
) -> u64 {
    let ctx = publisher.context().clone();
    let mut errors = ErrorLog::new();
    loop {
        // Whatever one read brings is one burst: it ends before the next
        // read can wait.
        let next = lines.next(MAX_LINE_BYTES, settings.idle_timeout, || publisher.end_burst()).await;
        let (line, read) = match next {
            Next::Line(line, read) => (line, read),
            Next::TooLong => {
                line_no += 1;
                errors.report(&ctx.metrics, source, &format!("line {line_no}: {}", FeedError::LineTooLong));
                continue;
            }
            Next::End(end) => {
                ended(&ctx, peer, settings, &end);
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
                if publisher.publish_read_in_burst(id, ts_event, t.update, read).is_err() {
                    break; // Shutting down.
                }
            }
            Err(e) => errors.report(&ctx.metrics, source, &format!("line {line_no}: {e}")),
        }
    }
    line_no
}

/// Binary records into the ring until the connection ends (or sends a
/// frame length out of bounds); returns the number of records read.
async fn binary_records(
    input: &mut Input,
    peer: SocketAddr,
    settings: &TcpFeedSettings,
    publisher: &mut Publisher,
    source: &str,
) -> u64 {
    let ctx = publisher.context().clone();
    let mut errors = ErrorLog::new();
    let mut records = 0u64;
    loop {
        // As with lines, one read is one burst.
        let next = input.frame(MAX_LINE_BYTES, settings.idle_timeout, || publisher.end_burst()).await;
        let (record, read) = match next {
            NextFrame::Frame(record, read) => (record, read),
            NextFrame::BadLength(len) => {
                ctx.metrics.feed_refused(FeedRefusal::BadFrame);
                tracing::warn!(
                    %peer,
                    records,
                    "feed handler closed: frame length {len} after record {records}; a frame holds 1 to \
                     {MAX_LINE_BYTES} bytes of record, and a stream past a bad length cannot be resynchronized"
                );
                break;
            }
            NextFrame::Truncated { got, want } => {
                records += 1;
                let e = format!("record {records}: the connection ended {got} bytes into a frame of {want}");
                errors.report(&ctx.metrics, source, &e);
                break;
            }
            NextFrame::End(end) => {
                ended(&ctx, peer, settings, &end);
                break;
            }
        };
        records += 1;
        if ctx.stopping() {
            break;
        }
        let parsed = parse_record(record).and_then(|t| Ok((publisher.symbol(&t.sym)?, t)));
        match parsed {
            Ok((id, t)) => {
                let ts_event = t.ts_event.unwrap_or_else(now_ns);
                if publisher.publish_read_in_burst(id, ts_event, t.update, read).is_err() {
                    break; // Shutting down.
                }
            }
            Err(e) => errors.report(&ctx.metrics, source, &format!("record {records}: {e}")),
        }
    }
    records
}

/// Reads the first line within [`AUTH_TIMEOUT`] and checks its token.
async fn authenticate(lines: &mut Input, token: &FeedToken) -> Result<(), &'static str> {
    let first = tokio::time::timeout(AUTH_TIMEOUT, lines.next(MAX_AUTH_LINE, AUTH_TIMEOUT, || {})).await;
    let line = match first {
        Ok(Next::Line(line, _)) => trim(line),
        Ok(Next::TooLong) => return Err("the first line is too long to be an auth line"),
        Ok(Next::End(End::Eof | End::Failed(_))) => return Err("hung up before authenticating"),
        Ok(Next::End(End::Idle)) | Err(_) => return Err("no auth line within the auth timeout"),
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

/// Why no more input comes.
#[derive(Debug)]
enum End {
    /// The handler closed the connection.
    Eof,
    /// No byte arrived within the idle timeout.
    Idle,
    /// The socket failed.
    Failed(io::Error),
}

/// What [`Input::next`] found.
enum Next<'a> {
    /// A whole line, without its newline (a last line may lack one), and
    /// when the read that completed it returned (`--trace-latency`; 0 when
    /// off).
    Line(&'a [u8], Stamp),
    /// A line over the bound, consumed to its newline and dropped.
    TooLong,
    /// No more lines.
    End(End),
}

/// What [`Input::frame`] found.
#[derive(Debug)]
enum NextFrame<'a> {
    /// A whole frame's record, without its length prefix, and when the
    /// read that completed it returned (as for [`Next::Line`]).
    Frame(&'a [u8], Stamp),
    /// A length prefix of 0 or over the bound: nothing after it can be read.
    BadLength(usize),
    /// The connection ended inside a frame: `got` of the `want` bytes of
    /// prefix and record arrived.
    Truncated {
        /// Bytes of the frame that arrived.
        got: usize,
        /// Bytes the frame needed (the prefix alone, if it was cut).
        want: usize,
    },
    /// No more frames.
    End(End),
}

/// What a connection's first bytes are, for `--feed-format auto`.
#[derive(Debug, PartialEq, Eq)]
enum Sniff {
    /// `{` or whitespace first, and not a binary frame's length.
    Text,
    /// Anything else.
    Binary,
}

/// A connection's input: newline-delimited lines or length-prefixed
/// frames, each at most a given length, with a read buffer that exists
/// only while bytes are pending.
struct Input {
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
    /// Stamp every read (`--trace-latency` is on).
    stamp_reads: bool,
    /// When the last read returned, if `stamp_reads`; else 0.
    read_at: Stamp,
}

impl Input {
    fn new(stream: TcpStream, stamp_reads: bool) -> Input {
        Input { stream, buf: Vec::new(), pos: 0, scanned: 0, skipping: false, eof: false, stamp_reads, read_at: 0 }
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
                return Next::Line(&self.buf[start..start + len], self.read_at);
            }
            if self.eof {
                // A final line without its newline still counts.
                let (start, len) = (self.pos, pending.len());
                self.pos = self.buf.len();
                self.scanned = 0;
                return if std::mem::take(&mut self.skipping) || len > max {
                    Next::TooLong
                } else if len == 0 {
                    Next::End(End::Eof)
                } else {
                    Next::Line(&self.buf[start..start + len], self.read_at)
                };
            }
            self.scanned = pending.len();
            if self.skipping || self.scanned > max {
                // Over the bound: keep nothing of it, only look for its end.
                self.skipping = true;
                self.pos = self.buf.len();
                self.scanned = 0;
            }
            if let Err(end) = self.fill(idle, &mut before_wait).await {
                return Next::End(end);
            }
        }
    }

    /// The next frame's record, of 1 to `max` bytes, borrowed from the read
    /// buffer. `before_wait` and `idle` as for [`next`](Self::next).
    async fn frame(&mut self, max: usize, idle: Duration, mut before_wait: impl FnMut() + Send) -> NextFrame<'_> {
        loop {
            let pending = self.buf.len() - self.pos;
            let mut want = FRAME_PREFIX_LEN;
            if pending >= FRAME_PREFIX_LEN {
                let prefix = &self.buf[self.pos..self.pos + FRAME_PREFIX_LEN];
                let len = u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
                if len == 0 || len > max {
                    return NextFrame::BadLength(len);
                }
                want += len;
                if pending >= want {
                    let start = self.pos + FRAME_PREFIX_LEN;
                    self.pos += want;
                    return NextFrame::Frame(&self.buf[start..start + len], self.read_at);
                }
            }
            if self.eof {
                self.pos = self.buf.len();
                return if pending == 0 {
                    NextFrame::End(End::Eof)
                } else {
                    NextFrame::Truncated { got: pending, want }
                };
            }
            if let Err(end) = self.fill(idle, &mut before_wait).await {
                return NextFrame::End(end);
            }
        }
    }

    /// For `--feed-format auto`: whether the input starts as text (JSON
    /// lines) or as a binary frame, reading (without taking) up to a frame
    /// prefix's worth of bytes. `Err(End::Eof)` if the handler hung up
    /// without sending a byte.
    async fn sniff(&mut self, idle: Duration) -> Result<Sniff, End> {
        loop {
            let pending = &self.buf[self.pos..];
            match pending.first() {
                None if self.eof => return Err(End::Eof),
                None => {}
                Some(&first) if first != b'{' && !first.is_ascii_whitespace() => return Ok(Sniff::Binary),
                Some(_) if pending.len() >= FRAME_PREFIX_LEN => {
                    // `{` and whitespace also begin frame lengths (123,
                    // 266, ...): one within the bound has a 0 fourth byte,
                    // which text never has.
                    let len = u32::from_le_bytes([pending[0], pending[1], pending[2], pending[3]]) as usize;
                    return Ok(if len <= MAX_LINE_BYTES { Sniff::Binary } else { Sniff::Text });
                }
                Some(_) if self.eof => return Ok(Sniff::Text),
                Some(_) => {}
            }
            self.fill(idle, &mut || {}).await?;
        }
    }

    /// Takes the first line if it is an auth line (`true`); leaves the
    /// input as it is otherwise (`false`). Waits for a whole line, or for
    /// more bytes than an auth line has.
    async fn skip_auth_line(&mut self, idle: Duration) -> Result<bool, End> {
        loop {
            let pending = &self.buf[self.pos..];
            let window = &pending[..pending.len().min(MAX_AUTH_LINE + 1)];
            if let Some(i) = window.iter().position(|&b| b == b'\n') {
                if AuthLine::parse(trim(&window[..i])).is_none() {
                    return Ok(false);
                }
                self.pos += i + 1;
                self.scanned = 0;
                return Ok(true);
            }
            if pending.len() > MAX_AUTH_LINE || self.eof {
                return Ok(false);
            }
            self.fill(idle, &mut || {}).await?;
        }
    }

    /// Waits for the socket (at most `idle`) and reads what it has into
    /// the buffer; sets `eof` when the peer has closed. `before_wait` runs
    /// first.
    async fn fill(&mut self, idle: Duration, before_wait: &mut (impl FnMut() + Send)) -> Result<(), End> {
        self.compact();
        before_wait();
        match tokio::time::timeout(idle, self.stream.readable()).await {
            Err(_) => return Err(End::Idle),
            Ok(Err(e)) => return Err(End::Failed(e)),
            Ok(Ok(())) => {}
        }
        self.buf.reserve(READ_CHUNK);
        let read = self.stream.try_read_buf(&mut self.buf);
        if self.stamp_reads {
            self.read_at = trace::now();
        }
        match read {
            Ok(0) => self.eof = true,
            // One read is one turn: the other handlers' tasks get
            // theirs before this one's next read, so a fire hose (or
            // a line of 10,000 levels) delays them by one read at most.
            Ok(_) => tokio::task::yield_now().await,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
            Err(e) => return Err(End::Failed(e)),
        }
        Ok(())
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
    use std::net::TcpListener as StdTcpListener;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use super::*;
    use crate::feed::tcp::FeedAccess;
    use crate::metrics::Metrics;
    use crate::model::record::{encode_image, encode_tick, Image, HEAD_LEN};
    use crate::model::{Quote, Side, SymbolTable, Tick, Trade, Update};
    use crate::ring::TickRing;
    use tokio::io::AsyncWriteExt;

    async fn pair() -> (Input, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (Input::new(server, false), client)
    }

    async fn collect(reader: &mut Input, max: usize) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            match reader.next(max, Duration::from_secs(5), || {}).await {
                Next::Line(l, _) => out.push(String::from_utf8_lossy(l).into_owned()),
                Next::TooLong => out.push("<too long>".into()),
                Next::End(End::Eof) => return out,
                Next::End(end) => panic!("{end:?}"),
            }
        }
    }

    /// Writes `chunks` one by one, 10 ms apart, so each is its own read.
    fn write_slowly(mut client: TcpStream, chunks: Vec<Vec<u8>>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            for chunk in chunks {
                client.write_all(&chunk).await.unwrap();
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    }

    fn quote(i: u64) -> Update {
        Update::Quote(Quote { bid: i as f64, bid_sz: 1.0, ask: i as f64 + 0.5, ask_sz: 2.0 })
    }

    /// Frames of quotes on "A" with seq 1..=n.
    fn frames(n: u64) -> Vec<u8> {
        let mut buf = Vec::new();
        for seq in 1..=n {
            encode_tick(&mut buf, 0, seq, "A", seq, 0, &quote(seq));
        }
        buf
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
        assert!(matches!(next, Next::End(End::Idle)));
        assert_eq!(reader.buf.capacity(), 0, "an idle connection holds no buffer");
    }

    /// The seqs of the frames read, and how the reading ended.
    async fn seqs_of_frames(reader: &mut Input, max: usize) -> (Vec<u64>, String) {
        let mut seqs = Vec::new();
        loop {
            match reader.frame(max, Duration::from_secs(5), || {}).await {
                NextFrame::Frame(f, _) => seqs.push(crate::model::record::decode(f).unwrap().seq),
                other => return (seqs, format!("{other:?}")),
            }
        }
    }

    #[tokio::test]
    async fn frames_split_anywhere_and_several_in_one_read() {
        let all = frames(6);
        let one = all.len() / 6;
        // A prefix cut in two, a record cut in two, then four frames at once.
        let chunks = vec![
            all[..2].to_vec(),
            all[2..one + 10].to_vec(),
            all[one + 10..2 * one].to_vec(),
            all[2 * one..].to_vec(),
        ];
        let (mut reader, client) = pair().await;
        let writer = write_slowly(client, chunks);
        let (seqs, last) = seqs_of_frames(&mut reader, MAX_LINE_BYTES).await;
        assert_eq!((seqs, last), (vec![1, 2, 3, 4, 5, 6], "End(Eof)".to_owned()));
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn a_bad_frame_length_or_a_cut_frame_ends_the_frames() {
        for (bad, cap) in [(0u32, MAX_LINE_BYTES), (MAX_LINE_BYTES as u32 + 1, MAX_LINE_BYTES), (100, 99)] {
            let mut bytes = frames(2);
            bytes.extend_from_slice(&bad.to_le_bytes());
            bytes.extend_from_slice(&[1; 200]);
            let (mut reader, client) = pair().await;
            let writer = write_slowly(client, vec![bytes]);
            let (seqs, last) = seqs_of_frames(&mut reader, cap).await;
            assert_eq!((seqs, last), (vec![1, 2], format!("BadLength({bad})")));
            writer.await.unwrap();
        }
        let mut bytes = frames(2);
        bytes.truncate(bytes.len() - 3);
        let (mut reader, client) = pair().await;
        let writer = write_slowly(client, vec![bytes]);
        let (seqs, last) = seqs_of_frames(&mut reader, MAX_LINE_BYTES).await;
        let want = frames(1).len();
        assert_eq!((seqs, last), (vec![1], format!("Truncated {{ got: {}, want: {want} }}", want - 3)));
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn first_bytes_tell_text_from_binary() {
        let cases: [(&[u8], Sniff); 7] = [
            (br#"{"type":"trade"}"#, Sniff::Text),
            (b"\n\n\n\n", Sniff::Text),
            (b" {}", Sniff::Text), // Three bytes, then the end: text.
            (&[57, 0, 0, 0], Sniff::Binary),
            // A 123-byte frame begins with `{`, a 266-byte one with a newline.
            (&[b'{', 0, 0, 0], Sniff::Binary),
            (&[b'\n', 1, 0, 0], Sniff::Binary),
            (b"x", Sniff::Binary),
        ];
        for (bytes, want) in cases {
            let (mut reader, client) = pair().await;
            // One byte at a time: the decision waits for four, or the end.
            let writer = write_slowly(client, bytes.iter().map(|&b| vec![b]).collect());
            assert_eq!(reader.sniff(Duration::from_secs(5)).await.unwrap(), want, "{bytes:?}");
            assert_eq!(reader.pos, 0, "nothing taken");
            writer.await.unwrap();
        }
        let (mut reader, client) = pair().await;
        drop(client);
        assert!(matches!(reader.sniff(Duration::from_secs(5)).await, Err(End::Eof)));
    }

    /// A feed context over a fresh ring, and the metrics it counts in.
    fn context() -> (FeedContext, Arc<TickRing>) {
        let ring = Arc::new(TickRing::new(1024));
        let ctx = FeedContext {
            ring: ring.clone(),
            symbols: Arc::new(SymbolTable::default()),
            metrics: Arc::new(Metrics::default()),
            max_symbols: 100,
            shutdown: Arc::new(AtomicBool::new(false)),
        };
        (ctx, ring)
    }

    /// Serves one connection that sends `chunks` (10 ms apart) and hangs
    /// up; returns what reached the ring and the context.
    async fn serve_chunks(settings: TcpFeedSettings, chunks: Vec<Vec<u8>>) -> (Vec<Tick>, FeedContext) {
        let (ctx, ring) = context();
        let listener = StdTcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, peer) = listener.accept().await.unwrap();
        let writer = write_slowly(client, chunks);
        serve(server, peer, &settings, Publisher::new(ctx.clone())).await;
        writer.await.unwrap();
        (
            std::iter::from_fn(|| ring.pop())
                .map(|input| match input {
                    crate::ring::Input::Tick(t) => t,
                    other => panic!("the tcp feed pushes ticks only: {other:?}"),
                })
                .collect(),
            ctx,
        )
    }

    fn settings(format: FeedFormat) -> TcpFeedSettings {
        TcpFeedSettings { format, ..TcpFeedSettings::default() }
    }

    fn quote_bids(ticks: &[Tick]) -> Vec<f64> {
        ticks
            .iter()
            .map(|t| match t.update {
                Update::Quote(q) => q.bid,
                _ => panic!("{t:?}"),
            })
            .collect()
    }

    #[tokio::test]
    async fn bad_records_are_skipped_and_counted_and_the_next_ones_arrive() {
        let mut bytes = Vec::new();
        encode_tick(&mut bytes, 0, 0, "A", 0, 0, &quote(1));
        // A NaN price.
        let start = bytes.len();
        encode_tick(&mut bytes, 0, 0, "A", 0, 0, &quote(2));
        let at = start + FRAME_PREFIX_LEN + HEAD_LEN + 1;
        bytes[at..at + 8].copy_from_slice(&f64::NAN.to_le_bytes());
        // An unknown kind, and an image.
        let start = bytes.len();
        encode_tick(&mut bytes, 0, 0, "A", 0, 0, &quote(3));
        bytes[start + FRAME_PREFIX_LEN + 1] = 9;
        encode_image(&mut bytes, 0, "A", &Image::default());
        // A good one, with its own seq, epoch and ts_ingest (ignored).
        encode_tick(&mut bytes, 7, 99, "A", 1_700_000_000_000_000_000, 5, &quote(4));
        let before = now_ns();
        let (ticks, ctx) = serve_chunks(settings(FeedFormat::Auto), vec![bytes]).await;
        assert_eq!(quote_bids(&ticks), [1.0, 4.0]);
        assert!(ticks[0].ts_event >= before, "ts_event 0: the server's clock");
        assert_eq!(ticks[1].ts_event, 1_700_000_000_000_000_000);
        assert!(ticks.iter().all(|t| t.ts_ingest >= before), "the server stamps ts_ingest");
        assert_eq!(ctx.metrics.feed_errors.load(Ordering::Relaxed), 3);
        assert_eq!(ctx.metrics.feed_refusals(FeedRefusal::BadFrame), 0);
    }

    #[tokio::test]
    async fn a_bad_frame_length_closes_the_connection_and_is_counted() {
        let mut bytes = frames(2);
        bytes.extend_from_slice(&(MAX_LINE_BYTES as u32 + 1).to_le_bytes());
        bytes.extend_from_slice(&frames(1));
        let (ticks, ctx) = serve_chunks(settings(FeedFormat::Binary), vec![bytes]).await;
        assert_eq!(quote_bids(&ticks), [1.0, 2.0], "nothing after the bad length");
        assert_eq!(ctx.metrics.feed_refusals(FeedRefusal::BadFrame), 1);
        assert_eq!(ctx.metrics.feed_errors.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn formats_are_settled_per_connection_after_an_auth_line() {
        let auth = b"{\"type\":\"auth\",\"token\":\"0123456789abcdef\"}\n".to_vec();
        let json = b"{\"type\":\"quote\",\"sym\":\"A\",\"bid\":1,\"bid_sz\":1,\"ask\":1.5,\"ask_sz\":2}\n".to_vec();
        // Binary after an auth line, with and without a token; JSON after one.
        let token: FeedToken = "0123456789abcdef".parse().unwrap();
        let with_token =
            TcpFeedSettings { access: FeedAccess { token: Some(token), allow: vec![] }, ..TcpFeedSettings::default() };
        for s in [settings(FeedFormat::Auto), settings(FeedFormat::Binary), with_token.clone()] {
            let (ticks, ctx) = serve_chunks(s, vec![auth.clone(), frames(2)]).await;
            assert_eq!(quote_bids(&ticks), [1.0, 2.0]);
            assert_eq!(ctx.metrics.feed_errors.load(Ordering::Relaxed), 0);
        }
        for s in [settings(FeedFormat::Auto), settings(FeedFormat::Json), with_token] {
            let (ticks, ctx) = serve_chunks(s, vec![auth.clone(), json.clone(), b"\n".to_vec(), json.clone()]).await;
            assert_eq!(quote_bids(&ticks), [1.0, 1.0]);
            assert_eq!(ctx.metrics.feed_errors.load(Ordering::Relaxed), 0);
        }
        // Forced JSON reads binary as (bad) lines; forced binary closes on a JSON line.
        let (ticks, ctx) = serve_chunks(settings(FeedFormat::Json), vec![frames(1)]).await;
        assert!(ticks.is_empty() && ctx.metrics.feed_errors.load(Ordering::Relaxed) >= 1);
        let (ticks, ctx) = serve_chunks(settings(FeedFormat::Binary), vec![json]).await;
        assert!(ticks.is_empty());
        assert_eq!(ctx.metrics.feed_refusals(FeedRefusal::BadFrame), 1);
    }

    #[tokio::test]
    async fn a_binary_trade_keeps_its_exact_price() {
        let mut bytes = Vec::new();
        let trade = Update::Trade(Trade { px: 0.1 + 0.2, sz: 3.0, side: Side::Sell });
        encode_tick(&mut bytes, 0, 0, "BRK.B", 1, 0, &trade);
        let (ticks, _) = serve_chunks(settings(FeedFormat::Auto), vec![bytes]).await;
        assert_eq!(ticks.len(), 1);
        assert_eq!(ticks[0].update, trade);
    }
}
