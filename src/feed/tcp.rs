//! `--feed tcp://ADDR`: feed handlers connect and send newline-delimited
//! JSON ticks in the normalized schema ([`super::json`]).
//!
//! In: TCP connections on ADDR. Out: ticks through a [`Publisher`].
//!
//! One acceptor thread, and one ingest thread per connected handler (feed
//! handlers are few, and a thread each keeps a slow handler from delaying
//! another). A bad line is counted (`tickcast_feed_errors_total`), logged
//! (rate-limited) and skipped; the connection and the feed go on. Lines
//! over [`MAX_LINE_BYTES`] are skipped to the next newline, so a handler
//! cannot make the server buffer without bound.

use std::io::{self, BufRead, BufReader, ErrorKind};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::thread;
use std::time::Duration;

use super::json::{parse_line, FeedError, MAX_LINE_BYTES};
use super::{ErrorLog, FeedContext, FeedHandle, Publisher};
use crate::model::now_ns;

/// How often blocked reads and accepts look at the shutdown flag.
const POLL: Duration = Duration::from_millis(100);

/// Binds `addr` and starts the acceptor thread.
pub fn start(addr: SocketAddr, ctx: FeedContext) -> io::Result<FeedHandle> {
    let listener = TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let local_addr = listener.local_addr()?;
    tracing::info!(%local_addr, "tcp feed listening for feed handlers");
    let acceptor = thread::Builder::new().name("feed-accept".into()).spawn(move || accept_loop(listener, ctx))?;
    Ok(FeedHandle { threads: vec![acceptor], local_addr: Some(local_addr), declared: None })
}

fn accept_loop(listener: TcpListener, ctx: FeedContext) {
    let mut readers = Vec::new();
    let mut n = 0u64;
    while !ctx.stopping() {
        match listener.accept() {
            Ok((stream, peer)) => {
                n += 1;
                ctx.metrics.feed_connections.fetch_add(1, Ordering::Relaxed);
                tracing::info!(%peer, "feed handler connected");
                let ctx = ctx.clone();
                match thread::Builder::new().name(format!("feed-in-{n}")).spawn(move || read_loop(stream, peer, ctx)) {
                    Ok(h) => readers.push(h),
                    Err(e) => tracing::error!(%peer, error = %e, "cannot start feed ingest thread"),
                }
                readers.retain(|h: &thread::JoinHandle<()>| !h.is_finished());
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(POLL / 4),
            Err(e) => {
                tracing::warn!(error = %e, "feed accept failed");
                thread::sleep(POLL);
            }
        }
    }
    for h in readers {
        let _ = h.join();
    }
}

fn read_loop(stream: TcpStream, peer: SocketAddr, ctx: FeedContext) {
    if let Err(e) = stream.set_nonblocking(false).and_then(|_| stream.set_read_timeout(Some(POLL))) {
        tracing::warn!(%peer, error = %e, "feed socket setup failed");
        return;
    }
    let source = format!("tcp feed {peer}");
    let mut reader = BufReader::with_capacity(256 * 1024, stream);
    let mut publisher = Publisher::new(ctx.clone());
    let mut errors = ErrorLog::new();
    let mut line = Vec::with_capacity(4096);
    let mut line_no = 0u64;
    loop {
        // Whatever this read returns is one burst: it ends when the buffer
        // runs dry, before the next read can wait.
        let idle = &mut || publisher.end_burst();
        match read_line(&mut reader, &mut line, &ctx, idle) {
            Ok(Line::Eof) => break,
            Ok(Line::TooLong) => {
                line_no += 1;
                errors.report(&ctx.metrics, &source, &format!("line {line_no}: {}", FeedError::LineTooLong));
            }
            Ok(Line::Complete) => {
                line_no += 1;
                if ctx.stopping() {
                    break;
                }
                let text = trim(&line);
                if text.is_empty() {
                    continue;
                }
                let parsed = parse_line(text).and_then(|t| {
                    let id = publisher.symbol(&t.sym)?;
                    Ok((id, t))
                });
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
            Err(e) => {
                tracing::warn!(%peer, error = %e, "feed connection failed");
                break;
            }
        }
    }
    tracing::info!(%peer, lines = line_no, "feed handler disconnected");
}

fn trim(line: &[u8]) -> &[u8] {
    let end = line.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(0, |i| i + 1);
    &line[..end]
}

enum Line {
    Complete,
    TooLong,
    Eof,
}

/// Reads one line into `line` (cleared first), at most [`MAX_LINE_BYTES`];
/// an overlong line is consumed to its newline and reported. Read timeouts
/// only serve to check the shutdown flag. `idle` is called before every
/// read of the socket, which may wait.
fn read_line(
    reader: &mut BufReader<TcpStream>,
    line: &mut Vec<u8>,
    ctx: &FeedContext,
    idle: &mut dyn FnMut(),
) -> io::Result<Line> {
    line.clear();
    let mut too_long = false;
    loop {
        if reader.buffer().is_empty() {
            idle();
        }
        let available = match reader.fill_buf() {
            Ok(buf) => buf,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {
                if ctx.stopping() {
                    return Ok(Line::Eof);
                }
                continue;
            }
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            // EOF: a final line without newline still counts.
            return Ok(if too_long {
                Line::TooLong
            } else if line.is_empty() {
                Line::Eof
            } else {
                Line::Complete
            });
        }
        let (chunk, found) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (&available[..i], Some(i + 1)),
            None => (available, None),
        };
        if !too_long {
            if line.len() + chunk.len() > MAX_LINE_BYTES {
                too_long = true;
                line.clear();
            } else {
                line.extend_from_slice(chunk);
            }
        }
        let used = found.unwrap_or(available.len());
        reader.consume(used);
        if found.is_some() {
            return Ok(if too_long { Line::TooLong } else { Line::Complete });
        }
    }
}
