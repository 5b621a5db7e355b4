//! Admission at the front door: every accepted TCP connection counts, from
//! `accept` until its socket closes, whether it is still sending its
//! request, answering `/healthz` or upgraded to a session.
//!
//! Two bounds, checked before a single byte is read:
//! - the total (`--max-connections`): without it, pre-upgrade connections
//!   (a slowloris, or plain idle sockets) were not counted, and 20,000 of
//!   them exhausted the process's file descriptors;
//! - per peer IP address (`--max-connections-per-ip`), so one host cannot
//!   take the whole total. Behind a load balancer or a NAT every client
//!   shares the balancer's address: raise it to `--max-connections` there.
//!
//! A connection over either bound is closed at once, after a best-effort
//! `503` written without reading the request (see [`refuse`]).

use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::net::IpAddr;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::net::TcpStream;

/// The open connections of one listener, in total and per peer address.
#[derive(Debug)]
pub struct ConnectionLimits {
    /// Most open connections in total.
    max_total: usize,
    /// Most open connections from one IP address.
    max_per_ip: usize,
    /// The open count, in total and per address. One lock, taken once at
    /// accept and once at close (never on the tick path); an address leaves
    /// the map with its last connection, so the map holds at most
    /// `max_total` entries.
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// `--max-connections` connections are open.
    #[error("too many connections: try again later")]
    Total,
    /// `--max-connections-per-ip` connections are open from this address.
    #[error("too many connections from your address: try again later")]
    PerIp,
    /// The process is out of file descriptors (its open-file limit is
    /// below `--max-connections`): see [`super::fd_limit`].
    #[error("the server is at its open-file limit: try again later")]
    FdLimit,
}

/// One admitted connection: its slot is held until the last clone is
/// dropped (the HTTP connection, then the session it was upgraded to).
#[derive(Debug, Clone)]
pub struct Admission {
    /// Held for its `Drop`, which gives the slot back.
    _slot: Arc<Slot>,
}

#[derive(Debug)]
struct Slot {
    limits: Arc<ConnectionLimits>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.limits.open.lock();
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.per_ip.remove(&self.ip);
            }
        }
    }
}

impl ConnectionLimits {
    /// Limits of `max_total` open connections, `max_per_ip` from any one
    /// address.
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<ConnectionLimits> {
        Arc::new(ConnectionLimits { max_total, max_per_ip, open: Mutex::new(Open::default()) })
    }

    /// Takes a slot for a connection from `ip`, or says which bound is full.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admission, Refused> {
        let mut open = self.open.lock();
        if open.total >= self.max_total {
            return Err(Refused::Total);
        }
        let from_ip = open.per_ip.entry(ip).or_insert(0);
        if *from_ip >= self.max_per_ip {
            return Err(Refused::PerIp);
        }
        *from_ip += 1;
        open.total += 1;
        Ok(Admission { _slot: Arc::new(Slot { limits: self.clone(), ip }) })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.lock().total
    }
}

/// Closes a refused connection at once: writes a one-shot `503` with the
/// reason (best effort, on the non-blocking socket: nothing waits) and
/// closes, reading at most what has already arrived of the request. A
/// client whose request arrives later may see the connection reset instead
/// of the answer.
pub fn refuse(stream: TcpStream, why: Refused) {
    let body = format!("{why}\n");
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    // Off the reactor: plain non-blocking calls, then close on drop.
    if let Ok(mut std_stream) = stream.into_std() {
        let _ = std_stream.write(response.as_bytes());
        let _ = std_stream.shutdown(std::net::Shutdown::Write);
        // Whatever of the request has already arrived is read (once, never
        // waiting): a socket closed with unread data sends a reset, which
        // can make the client lose the answer.
        let mut unread = [0u8; 4096];
        let _ = std_stream.read(&mut unread);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_total_and_each_address_are_bounded_and_slots_come_back() {
        let limits = ConnectionLimits::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = limits.admit(a).unwrap();
        let a2 = limits.admit(a).unwrap();
        assert_eq!(limits.admit(a).unwrap_err(), Refused::PerIp);
        let b1 = limits.admit(b).unwrap();
        assert_eq!(limits.admit(b).unwrap_err(), Refused::Total, "the total is checked first");
        assert_eq!(limits.open(), 3);
        // A clone (the session's) keeps the slot until it too is dropped.
        let a1_session = a1.clone();
        drop(a1);
        assert_eq!(limits.open(), 3);
        drop(a1_session);
        assert_eq!(limits.open(), 2);
        assert!(limits.admit(a).is_ok(), "a's slot came back");
        drop((a2, b1));
        assert_eq!(limits.open(), 0);
        assert!(limits.open.lock().per_ip.is_empty(), "addresses leave the map with their last connection");
    }
}
