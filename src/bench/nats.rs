//! The `nats` target: nats-server, with subscribers on its WebSocket
//! listener and the publisher on its TCP client port.
//!
//! Both speak the NATS text protocol. The server opens with `INFO {...}`;
//! a client answers `CONNECT {...}`, then subscribers send one
//! `SUB tick.<SYM> <sid>` per symbol and receive
//! `MSG <subject> <sid> [reply-to] <#bytes>\r\n<payload>\r\n`, while the
//! publisher sends `PUB tick.<SYM> <#bytes>\r\n<payload>\r\n`. Either side
//! may send `PING`, which must be answered `PONG`. Over WebSocket the
//! frames carry a byte stream: one frame may hold several operations or
//! part of one, so [`Parser`] reassembles them.

use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use fastwebsockets::{Frame, OpCode, Payload};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use super::frames::FrameReader;
use super::light::tick_light;
use super::{connect_ws, Shared, Tally};
use crate::client::Client;

/// What every bench client sends first: no `+OK` per operation, and a
/// publisher that also subscribed would not get its own messages back.
const CONNECT: &[u8] = b"CONNECT {\"verbose\":false,\"pedantic\":false,\"protocol\":1,\"echo\":false}\r\n";

/// Longest control line accepted (nats-server's own limit is 4 KiB, its
/// `INFO` can be longer when it lists cluster URLs).
const MAX_CONTROL_LINE: usize = 64 * 1024;

/// Largest message payload accepted (nats-server's default is 1 MiB, at
/// most 64 MiB).
const MAX_PAYLOAD: usize = 64 << 20;

/// What a symbol's subject starts with: ticks of `AAPL` go to `tick.AAPL`.
pub(super) const SUBJECT_PREFIX: &str = "tick.";

/// The NATS subject a symbol's ticks are published on.
pub(super) fn subject(sym: &str) -> String {
    format!("{SUBJECT_PREFIX}{sym}")
}

/// The subject that matches every symbol's, for stalled subscribers.
const ALL_SUBJECTS: &str = "tick.>";

/// One operation a NATS server sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op<'a> {
    /// `INFO {json}`: server information, sent first and on changes.
    Info(&'a [u8]),
    /// `MSG`: a message on a subscription.
    Msg {
        /// The subject it was published on.
        subject: &'a [u8],
        /// The subscription id it matched.
        sid: &'a [u8],
        /// Reply subject, if the publisher gave one.
        reply: Option<&'a [u8]>,
        /// The message bytes.
        payload: &'a [u8],
    },
    /// `PING`: must be answered `PONG`, or the server drops the client.
    Ping,
    /// `PONG`: the answer to the client's `PING`.
    Pong,
    /// `+OK` (verbose mode only).
    Ok,
    /// `-ERR 'message'`.
    Err(&'a [u8]),
}

/// Why the server's byte stream is not valid NATS protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum ParseError {
    /// No line end within [`MAX_CONTROL_LINE`] bytes.
    #[error("control line longer than {MAX_CONTROL_LINE} bytes")]
    LineTooLong,
    /// A `MSG` line that does not have 3 or 4 arguments with a byte count.
    #[error("malformed MSG line {0:?}")]
    BadMsg(String),
    /// A `MSG` whose payload is larger than [`MAX_PAYLOAD`].
    #[error("MSG payload of {0} bytes is over the {MAX_PAYLOAD} byte limit")]
    PayloadTooLarge(usize),
    /// A `MSG` payload not followed by `\r\n`.
    #[error("MSG payload not followed by CRLF")]
    MissingCrlf,
    /// An operation the bench does not know (e.g. `HMSG`, which it never
    /// asks for).
    #[error("unexpected operation {0:?}")]
    Unknown(String),
}

/// Reassembles NATS operations from chunks of the server's byte stream
/// (WebSocket frames or TCP reads) and returns them one by one.
#[derive(Debug, Default)]
pub(super) struct Parser {
    buf: Vec<u8>,
    /// Bytes of `buf` already returned as operations.
    pos: usize,
}

impl Parser {
    /// An empty parser.
    pub(super) fn new() -> Parser {
        Parser::default()
    }

    /// Appends the next chunk of the stream.
    pub(super) fn feed(&mut self, data: &[u8]) {
        if self.pos == self.buf.len() {
            self.buf.clear();
        } else if self.pos > 0 {
            self.buf.drain(..self.pos);
        }
        self.pos = 0;
        self.buf.extend_from_slice(data);
    }

    /// The next complete operation, `Ok(None)` if more bytes are needed.
    /// After an error the stream cannot be resynchronised: drop it.
    pub(super) fn next_op(&mut self) -> Result<Option<Op<'_>>, ParseError> {
        let start = self.pos;
        let Some(eol) = self.buf[start..].windows(2).position(|w| w == b"\r\n") else {
            return if self.buf.len() - start > MAX_CONTROL_LINE { Err(ParseError::LineTooLong) } else { Ok(None) };
        };
        if eol > MAX_CONTROL_LINE {
            return Err(ParseError::LineTooLong);
        }
        let line_end = start + eol;
        let next = line_end + 2;
        // The line's first blank-separated fields, as ranges of `buf`.
        let mut fields = [(0usize, 0usize); 6];
        let mut count = 0;
        let mut i = start;
        while count < fields.len() {
            while i < line_end && is_blank(self.buf[i]) {
                i += 1;
            }
            if i == line_end {
                break;
            }
            let from = i;
            while i < line_end && !is_blank(self.buf[i]) {
                i += 1;
            }
            fields[count] = (from, i);
            count += 1;
        }
        let buf = &self.buf;
        let text = |(from, to): (usize, usize)| &buf[from..to];
        let verb = if count == 0 { &buf[start..start] } else { text(fields[0]) };
        if verb.eq_ignore_ascii_case(b"MSG") {
            let bad = || ParseError::BadMsg(String::from_utf8_lossy(&buf[start..line_end]).into_owned());
            // MSG <subject> <sid> [reply-to] <#bytes>, and nothing after.
            if !(count == 4 || count == 5) || i < line_end && buf[i..line_end].iter().any(|b| !is_blank(*b)) {
                return Err(bad());
            }
            let size: usize =
                std::str::from_utf8(text(fields[count - 1])).ok().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
            if size > MAX_PAYLOAD {
                return Err(ParseError::PayloadTooLarge(size));
            }
            let end = next + size;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(ParseError::MissingCrlf);
            }
            self.pos = end + 2;
            let buf = &self.buf;
            let text = |(from, to): (usize, usize)| &buf[from..to];
            return Ok(Some(Op::Msg {
                subject: text(fields[1]),
                sid: text(fields[2]),
                reply: (count == 5).then(|| text(fields[3])),
                payload: &buf[next..end],
            }));
        }
        // Everything after the verb, without surrounding blanks.
        let args_from = if count > 1 { fields[1].0 } else { line_end };
        let mut args_to = line_end;
        while args_to > args_from && is_blank(buf[args_to - 1]) {
            args_to -= 1;
        }
        let verb = [
            (&b"PING"[..], Verb::Ping),
            (b"PONG", Verb::Pong),
            (b"+OK", Verb::Ok),
            (b"-ERR", Verb::Err),
            (b"INFO", Verb::Info),
        ]
        .into_iter()
        .find_map(|(name, v)| verb.eq_ignore_ascii_case(name).then_some(v))
        .ok_or_else(|| ParseError::Unknown(String::from_utf8_lossy(verb).into_owned()))?;
        self.pos = next;
        let args = &self.buf[args_from..args_to];
        Ok(Some(match verb {
            Verb::Ping => Op::Ping,
            Verb::Pong => Op::Pong,
            Verb::Ok => Op::Ok,
            Verb::Err => Op::Err(args),
            Verb::Info => Op::Info(args),
        }))
    }
}

/// The verbs of operations without a payload.
#[derive(Clone, Copy)]
enum Verb {
    Ping,
    Pong,
    Ok,
    Err,
    Info,
}

/// Blanks that separate the fields of a control line.
fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// A WebSocket client that has done the NATS handshake and whose
/// subscriptions the server has confirmed.
pub(super) struct Subscribed {
    /// The connection.
    pub(super) client: Client,
    /// Holds whatever the server sent after the `PONG`.
    pub(super) parser: Parser,
}

/// Connects to the WebSocket listener, waits for `INFO`, sends `CONNECT`,
/// one `SUB` per subject and a `PING`, and waits for the `PONG`: once it
/// arrives, the server has registered every subscription.
pub(super) async fn subscribe(
    server: SocketAddr,
    subjects: &[String],
    small_buffer: bool,
) -> Result<Subscribed, String> {
    let mut client = connect_ws(server, "/", small_buffer).await?;
    let mut parser = Parser::new();
    let mut sent = false;
    loop {
        let frame = client.raw().read_frame().await.map_err(|e| format!("nats handshake: {e}"))?;
        match frame.opcode {
            OpCode::Binary | OpCode::Text => parser.feed(&frame.payload),
            OpCode::Close => return Err("nats handshake: the server closed the connection".into()),
            _ => continue,
        }
        let mut reply = Vec::new();
        let mut info = false;
        loop {
            match parser.next_op().map_err(|e| format!("nats handshake: {e}"))? {
                None => break,
                Some(Op::Info(_)) => info = true,
                Some(Op::Ping) => reply.extend_from_slice(b"PONG\r\n"),
                Some(Op::Err(e)) => return Err(format!("nats: -ERR {}", String::from_utf8_lossy(e))),
                Some(Op::Pong) if sent => {
                    if !reply.is_empty() {
                        send(&mut client, reply).await?;
                    }
                    return Ok(Subscribed { client, parser });
                }
                // Messages before the PONG may come from subscriptions the
                // server already has: the seq check starts after it.
                Some(_) => {}
            }
        }
        if info && !sent {
            reply.extend_from_slice(CONNECT);
            for (sid, subject) in subjects.iter().enumerate() {
                reply.extend_from_slice(format!("SUB {subject} {}\r\n", sid + 1).as_bytes());
            }
            reply.extend_from_slice(b"PING\r\n");
            sent = true;
        }
        if !reply.is_empty() {
            send(&mut client, reply).await?;
        }
    }
}

/// Sends protocol bytes in one binary frame.
async fn send(client: &mut Client, bytes: Vec<u8>) -> Result<(), String> {
    client.raw().write_frame(Frame::binary(Payload::Owned(bytes))).await.map_err(|e| format!("nats write: {e}"))
}

/// A healthy subscriber on `symbols`' subjects: checks per-symbol seq
/// continuity and records latency (receive time minus `ts_event`).
pub(super) async fn subscriber(server: SocketAddr, symbols: Vec<String>, shared: Arc<Shared>) {
    let subjects: Vec<String> = symbols.iter().map(|s| subject(s)).collect();
    let Subscribed { client, mut parser } = match subscribe(server, &subjects, false).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("nats subscriber: {e}");
            return;
        }
    };
    // The `PONG` confirmed the subscriptions and the publisher starts only
    // once every subscriber is in: what followed it is in `parser`, and
    // nothing unread is lost with the framing.
    let reader = FrameReader::new(client.into_inner());
    shared.connected.fetch_add(1, Ordering::Relaxed);
    let mut tally = Tally::new(symbols.len());
    let mut warned = false;
    reader
        .run(&shared, |payload, now| {
            parser.feed(payload);
            let mut pong = None;
            loop {
                match parser.next_op() {
                    Ok(None) => break,
                    Ok(Some(Op::Msg { payload, .. })) => match tick_light(payload) {
                        Some(t) if matches!(&*t.kind, "trade" | "quote" | "book") => {
                            tally.update(&shared, &t.sym, t.seq, t.ts_event, now);
                        }
                        _ => {}
                    },
                    Ok(Some(Op::Ping)) => pong = Some(b"PONG\r\n".to_vec()),
                    Ok(Some(Op::Err(e))) => {
                        if !warned {
                            eprintln!("nats subscriber: -ERR {}", String::from_utf8_lossy(e));
                            warned = true;
                        }
                    }
                    Ok(Some(_)) => {}
                    Err(e) => {
                        eprintln!("nats subscriber: {e}");
                        return ControlFlow::Break(());
                    }
                }
            }
            ControlFlow::Continue(pong)
        })
        .await;
    tally.flush(&shared);
}

/// A subscriber to every symbol (`tick.>`) on a small-buffer socket that
/// never reads after its subscription is confirmed; held until the run
/// aborts it.
pub(super) async fn stalled(server: SocketAddr, shared: Arc<Shared>) {
    let subjects = [ALL_SUBJECTS.to_owned()];
    super::hold_stalled("nats stalled subscriber", subscribe(server, &subjects, true), shared).await
}

/// An idle subscriber for `--idle`: subscribed to `symbols` and confirmed.
pub(super) async fn connect_idle(server: SocketAddr, symbols: &[String]) -> Result<Client, String> {
    let subjects: Vec<String> = symbols.iter().map(|s| subject(s)).collect();
    Ok(subscribe(server, &subjects, false).await?.client)
}

/// The publisher's connection to the TCP client port, after the
/// handshake; a task reads the server's side and flags its `PING`s.
pub(super) struct PublisherConn {
    /// Where `PUB`s go.
    pub(super) writer: OwnedWriteHalf,
    /// Set when the server sent `PING`: the publisher appends a `PONG`.
    pub(super) pong_due: Arc<AtomicBool>,
    /// The reading task, to abort when the run ends.
    pub(super) reader: tokio::task::JoinHandle<()>,
}

/// Connects the publisher: waits for `INFO`, sends `CONNECT` and `PING`,
/// and waits for the `PONG`, so a wrong address or a refused client fails
/// here rather than silently during the run.
pub(super) async fn connect_publisher(addr: SocketAddr) -> Result<PublisherConn, String> {
    let stream =
        TcpStream::connect(addr).await.map_err(|e| format!("nats publisher: cannot connect to {addr}: {e}"))?;
    stream.set_nodelay(true).map_err(|e| format!("nats publisher: {e}"))?;
    let (mut read, mut writer) = stream.into_split();
    let mut parser = Parser::new();
    let mut chunk = vec![0u8; 16 * 1024];
    let mut sent = false;
    let timeout = std::time::Duration::from_secs(10);
    loop {
        let n = tokio::time::timeout(timeout, read.read(&mut chunk))
            .await
            .map_err(|_| format!("nats publisher: no handshake from {addr} within 10s: is it nats' client port?"))?
            .map_err(|e| format!("nats publisher: {e}"))?;
        if n == 0 {
            return Err(format!("nats publisher: {addr} closed the connection during the handshake"));
        }
        parser.feed(&chunk[..n]);
        let mut out = Vec::new();
        loop {
            match parser.next_op().map_err(|e| format!("nats publisher: {e}"))? {
                None => break,
                Some(Op::Info(_)) if !sent => {
                    out.extend_from_slice(CONNECT);
                    out.extend_from_slice(b"PING\r\n");
                    sent = true;
                }
                Some(Op::Ping) => out.extend_from_slice(b"PONG\r\n"),
                Some(Op::Err(e)) => return Err(format!("nats publisher: -ERR {}", String::from_utf8_lossy(e))),
                Some(Op::Pong) if sent => {
                    writer.write_all(&out).await.map_err(|e| format!("nats publisher: {e}"))?;
                    let pong_due = Arc::new(AtomicBool::new(false));
                    let reader = tokio::spawn(read_server(read, parser, pong_due.clone()));
                    return Ok(PublisherConn { writer, pong_due, reader });
                }
                Some(_) => {}
            }
        }
        writer.write_all(&out).await.map_err(|e| format!("nats publisher: {e}"))?;
    }
}

/// Reads what the server sends the publisher: flags `PING`s for the
/// publisher to answer, reports the first `-ERR`.
async fn read_server(mut read: OwnedReadHalf, mut parser: Parser, pong_due: Arc<AtomicBool>) {
    let mut chunk = vec![0u8; 16 * 1024];
    let mut warned = false;
    loop {
        loop {
            match parser.next_op() {
                Ok(None) => break,
                Ok(Some(Op::Ping)) => pong_due.store(true, Ordering::Relaxed),
                Ok(Some(Op::Err(e))) if !warned => {
                    eprintln!("nats publisher: -ERR {}", String::from_utf8_lossy(e));
                    warned = true;
                }
                Ok(Some(_)) => {}
                Err(e) => {
                    eprintln!("nats publisher: {e}");
                    return;
                }
            }
        }
        match read.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => parser.feed(&chunk[..n]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(parser: &mut Parser) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(op) = parser.next_op().expect("valid stream") {
            out.push(match op {
                Op::Info(j) => format!("INFO {}", String::from_utf8_lossy(j)),
                Op::Msg { subject, sid, reply, payload } => format!(
                    "MSG {} {} {:?} {}",
                    String::from_utf8_lossy(subject),
                    String::from_utf8_lossy(sid),
                    reply.map(|r| String::from_utf8_lossy(r).into_owned()),
                    String::from_utf8_lossy(payload)
                ),
                Op::Ping => "PING".into(),
                Op::Pong => "PONG".into(),
                Op::Ok => "+OK".into(),
                Op::Err(e) => format!("-ERR {}", String::from_utf8_lossy(e)),
            });
        }
        out
    }

    const STREAM: &[u8] = b"INFO {\"server_id\":\"x\",\"max_payload\":1048576}\r\n\
        MSG tick.AAPL 1 5\r\nhello\r\n\
        PING\r\n\
        MSG tick.MSFT 2 _INBOX.r 11\r\nhel\r\nlo you\r\n\
        +OK\r\n-ERR 'Slow Consumer'\r\nPONG\r\n\
        MSG tick.X 3 0\r\n\r\n";

    fn expected() -> Vec<String> {
        vec![
            "INFO {\"server_id\":\"x\",\"max_payload\":1048576}".to_owned(),
            "MSG tick.AAPL 1 None hello".to_owned(),
            "PING".to_owned(),
            "MSG tick.MSFT 2 Some(\"_INBOX.r\") hel\r\nlo you".to_owned(),
            "+OK".to_owned(),
            "-ERR 'Slow Consumer'".to_owned(),
            "PONG".to_owned(),
            "MSG tick.X 3 None ".to_owned(),
        ]
    }

    #[test]
    fn several_ops_in_one_frame() {
        let mut parser = Parser::new();
        parser.feed(STREAM);
        assert_eq!(ops(&mut parser), expected());
        assert_eq!(parser.next_op(), Ok(None));
    }

    #[test]
    fn ops_split_at_every_byte_come_out_whole() {
        for split in 1..STREAM.len() {
            let mut parser = Parser::new();
            parser.feed(&STREAM[..split]);
            let mut got = ops(&mut parser);
            parser.feed(&STREAM[split..]);
            got.extend(ops(&mut parser));
            assert_eq!(got, expected(), "split at {split}");
        }
        // One byte per frame.
        let mut parser = Parser::new();
        let mut got = Vec::new();
        for b in STREAM {
            parser.feed(std::slice::from_ref(b));
            got.extend(ops(&mut parser));
        }
        assert_eq!(got, expected());
    }

    #[test]
    fn a_bench_tick_in_a_msg_is_read() {
        let payload = br#"{"type":"quote","sym":"S007","seq":12,"ts_event":1700000000000000001,"bid":1.5}"#;
        let mut stream = format!("MSG tick.S007 9 {}\r\n", payload.len()).into_bytes();
        stream.extend_from_slice(payload);
        stream.extend_from_slice(b"\r\nPING\r\n");
        let mut parser = Parser::new();
        parser.feed(&stream);
        let Ok(Some(Op::Msg { subject, sid, payload: got, .. })) = parser.next_op() else { panic!("no MSG") };
        assert_eq!((subject, sid), (&b"tick.S007"[..], &b"9"[..]));
        let light = tick_light(got).expect("tick");
        assert_eq!((&*light.sym, light.seq, light.ts_event), ("S007", 12, 1_700_000_000_000_000_001));
        assert_eq!(parser.next_op(), Ok(Some(Op::Ping)));
    }

    #[test]
    fn bad_streams_are_errors_not_panics() {
        for bad in [
            &b"MSG tick.A\r\n"[..],
            b"MSG tick.A 1 x\r\n",
            b"MSG a b c d e\r\n",
            b"MSG tick.A 1 99999999999999999999999\r\n",
            b"MSG tick.A 1 3\r\nabcXY",
            b"HMSG tick.A 1 0 0\r\n",
            b"WHAT\r\n",
        ] {
            let mut parser = Parser::new();
            parser.feed(bad);
            assert!(parser.next_op().is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let mut parser = Parser::new();
        parser.feed(&vec![b'x'; MAX_CONTROL_LINE + 1]);
        assert_eq!(parser.next_op(), Err(ParseError::LineTooLong));
        let mut parser = Parser::new();
        parser.feed(format!("MSG a 1 {}\r\n", MAX_PAYLOAD + 1).as_bytes());
        assert_eq!(parser.next_op(), Err(ParseError::PayloadTooLarge(MAX_PAYLOAD + 1)));
        // An incomplete payload just waits for more.
        let mut parser = Parser::new();
        parser.feed(b"MSG a 1 10\r\nabc");
        assert_eq!(parser.next_op(), Ok(None));
        assert_eq!(parser.next_op(), Ok(None));
    }

    #[test]
    fn lowercase_verbs_and_extra_blanks_are_accepted() {
        let mut parser = Parser::new();
        parser.feed(b"ping\r\nmsg  tick.A\t7   2\r\nhi\r\n");
        assert_eq!(ops(&mut parser), vec!["PING".to_owned(), "MSG tick.A 7 None hi".to_owned()]);
    }
}
