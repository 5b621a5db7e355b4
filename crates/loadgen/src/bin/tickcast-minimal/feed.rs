//! A feed connection: JSON lines in, one MessagePack frame per tick out to
//! the symbol's subscribers.
//!
//! In: tickcast's tcp feed format, one JSON tick per line (what
//! `tickcast-bench --drive-feed` sends, parsed by tickcast's own
//! [`parse_line`]). Out: the tick as tickcast sends a `quote` or `trade`
//! in MessagePack (same fields, same encoder), with the symbol's next seq
//! and `ts_ingest` stamped here, framed once and handed to
//! [`Topics::publish`].
//!
//! Each feed connection is one task that parses, encodes and fans out a
//! line before it reads the next: no ring, no engine thread, no pacing.
//! Book lines are counted and dropped (an exact book needs the state this
//! server does not keep); binary tick records are not read.

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::TcpStream;

use tickcast::feed::json::parse_line;
use tickcast::model::{now_ns, Update};
use tickcast::wire::{encode_frame, Encoding, ServerMessage};

use crate::topics::Topics;

/// Longest line taken, bytes: a longer one ends the connection (a feed
/// that sends no newline must not grow a line without end).
const MAX_LINE: u64 = 64 * 1024;

/// Bytes read from the socket at once.
const READ_BUFFER: usize = 64 * 1024;

/// What a feed connection saw, printed when it ends.
#[derive(Debug, Default)]
struct FeedCounts {
    published: u64,
    books_dropped: u64,
    bad_lines: u64,
}

/// Reads `stream` line by line until it closes, publishing every quote and
/// trade. Bad lines are counted, the first one printed; the connection
/// ends on a read error or a line over [`MAX_LINE`].
pub async fn run(stream: TcpStream, topics: &Topics) {
    let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    let mut reader = BufReader::with_capacity(READ_BUFFER, stream);
    let mut line = Vec::with_capacity(512);
    let mut scratch = Vec::with_capacity(256);
    let mut counts = FeedCounts::default();
    loop {
        line.clear();
        match (&mut reader).take(MAX_LINE).read_until(b'\n', &mut line).await {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                eprintln!("tickcast-minimal: feed {peer}: read failed: {e}");
                break;
            }
        }
        let Some(text) = line.strip_suffix(b"\n") else {
            if line.len() as u64 >= MAX_LINE {
                eprintln!("tickcast-minimal: feed {peer}: a line over {MAX_LINE} bytes; closing");
            }
            // Otherwise the last line, cut by the peer's close.
            break;
        };
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        if text.is_empty() {
            continue;
        }
        match publish_line(text, topics, &mut scratch) {
            Ok(true) => counts.published += 1,
            Ok(false) => counts.books_dropped += 1,
            Err(e) => {
                if counts.bad_lines == 0 {
                    eprintln!("tickcast-minimal: feed {peer}: bad line: {e}");
                }
                counts.bad_lines += 1;
            }
        }
    }
    eprintln!("tickcast-minimal: feed {peer} closed: {counts:?}");
}

/// Parses one line and publishes it; `Ok(false)`: a book line, dropped.
fn publish_line(text: &[u8], topics: &Topics, scratch: &mut Vec<u8>) -> Result<bool, tickcast::feed::json::FeedError> {
    let tick = parse_line(text)?;
    let ts_ingest = now_ns();
    let ts_event = tick.ts_event.unwrap_or(ts_ingest);
    if matches!(tick.update, Update::Book(_)) {
        return Ok(false);
    }
    let sym = &*tick.sym;
    topics.publish(sym, |seq| {
        let message = ServerMessage::update(sym, seq, ts_event, ts_ingest, &tick.update, 0);
        encode_frame(Encoding::Msgpack, &message, scratch)
    });
    Ok(true)
}
