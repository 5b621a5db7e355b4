//! The NATS text protocol, as much of it as the bench speaks.
//!
//! The server opens with `INFO {...}`; a client answers `CONNECT {...}`,
//! then subscribers send one `SUB tick.<SYM> <sid>` per symbol and receive
//! `MSG <subject> <sid> [reply-to] <#bytes>\r\n<payload>\r\n`, while the
//! publisher sends `PUB tick.<SYM> <#bytes>\r\n<payload>\r\n`. Either side
//! may send `PING`, which must be answered `PONG`. Over WebSocket the
//! frames carry a byte stream: one frame may hold several operations or
//! part of one, so [`Parser`] reassembles them.
//!
//! Imports: nothing of the bench (its tests use the light tick reader).

/// What every bench client sends first: no `+OK` per operation, and a
/// publisher that also subscribed would not get its own messages back.
pub const CONNECT: &[u8] = b"CONNECT {\"verbose\":false,\"pedantic\":false,\"protocol\":1,\"echo\":false}\r\n";

/// Longest control line accepted (nats-server's own limit is 4 KiB, its
/// `INFO` can be longer when it lists cluster URLs).
pub const MAX_CONTROL_LINE: usize = 64 * 1024;

/// Largest message payload accepted (nats-server's default is 1 MiB, at
/// most 64 MiB).
pub const MAX_PAYLOAD: usize = 64 << 20;

/// What a symbol's subject starts with: ticks of `AAPL` go to `tick.AAPL`.
pub const SUBJECT_PREFIX: &str = "tick.";

/// The NATS subject a symbol's ticks are published on.
pub fn subject(sym: &str) -> String {
    format!("{SUBJECT_PREFIX}{sym}")
}

/// The subject that matches every symbol's, for stalled subscribers.
pub const ALL_SUBJECTS: &str = "tick.>";

/// One operation a NATS server sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op<'a> {
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
pub enum ParseError {
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
pub struct Parser {
    buf: Vec<u8>,
    /// Bytes of `buf` already returned as operations.
    pos: usize,
}

impl Parser {
    /// An empty parser.
    pub fn new() -> Parser {
        Parser::default()
    }

    /// Appends the next chunk of the stream.
    pub fn feed(&mut self, data: &[u8]) {
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
    pub fn next_op(&mut self) -> Result<Option<Op<'_>>, ParseError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::light::tick_light;

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
