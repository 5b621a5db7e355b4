//! Who may feed prices: the shared token (`--feed-token`), the address
//! allow-list (`--feed-allow`), and the rule that a feed port off loopback
//! needs at least one of them.
//!
//! In: a peer address, then (with a token) the connection's first line.
//! Out: admitted or not, and why.
//!
//! Imports: nothing of tickcast's.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

/// Shortest `--feed-token` accepted: a guessable token is no lock.
pub const MIN_TOKEN_LEN: usize = 16;

/// Longest `--feed-token` accepted; the auth line is bounded accordingly.
pub const MAX_TOKEN_LEN: usize = 1024;

/// The secret a feed handler presents in its auth line. Its `Debug` never
/// prints it, so a logged [`Config`](crate::feed::tcp::TcpFeedSettings)
/// does not leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct FeedToken(Box<[u8]>);

/// Why a `--feed-token` is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeedTokenError {
    /// Shorter than [`MIN_TOKEN_LEN`] or longer than [`MAX_TOKEN_LEN`].
    #[error("must be {MIN_TOKEN_LEN} to {MAX_TOKEN_LEN} bytes long (it is {0})")]
    Length(usize),
    /// Whitespace, quotes, backslashes or control characters: the token
    /// travels inside a JSON string, so it is kept to printable ASCII that
    /// needs no escaping.
    #[error("must be printable ASCII without spaces, quotes or backslashes")]
    Charset,
}

impl FromStr for FeedToken {
    type Err = FeedTokenError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if !(MIN_TOKEN_LEN..=MAX_TOKEN_LEN).contains(&s.len()) {
            return Err(FeedTokenError::Length(s.len()));
        }
        if !s.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\') {
            return Err(FeedTokenError::Charset);
        }
        Ok(FeedToken(s.as_bytes().into()))
    }
}

impl fmt::Debug for FeedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FeedToken(<redacted>)")
    }
}

impl FeedToken {
    /// Whether `presented` is this token, in time that depends only on
    /// their lengths, never on where they first differ: a handler cannot
    /// learn the token a byte at a time from how fast it is refused.
    pub fn matches(&self, presented: &[u8]) -> bool {
        constant_time_eq(&self.0, presented)
    }
}

/// Compares two byte strings without an early exit. Only the lengths
/// (public: the token's bounds are documented) affect the time taken.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // Keeps the optimizer from turning the fold into an early-exit loop.
    std::hint::black_box(diff) == 0
}

/// One `--feed-allow` entry: an address, or a network in CIDR notation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

/// Why a `--feed-allow` entry is not an address or a network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an IP address or CIDR network (e.g. 10.0.0.5, 10.0.0.0/8, ::1)")]
pub struct IpNetError(String);

impl FromStr for IpNet {
    type Err = IpNetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || IpNetError(s.chars().take(64).collect());
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|&p| p <= max).ok_or_else(bad)?,
            None => max,
        };
        Ok(IpNet { addr, prefix })
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl IpNet {
    /// Whether `ip` is inside this network. An IPv4 peer reaching an IPv6
    /// socket (`::ffff:a.b.c.d`) is matched as the IPv4 address it is.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_eq(u32::from(net).into(), u32::from(ip).into(), self.prefix, 32)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => prefix_eq(u128::from(net), u128::from(ip), self.prefix, 128),
            _ => false,
        }
    }
}

/// Whether the top `prefix` bits of two `width`-bit numbers agree.
fn prefix_eq(a: u128, b: u128, prefix: u8, width: u32) -> bool {
    let shift = width - u32::from(prefix);
    // A shift by the full width (prefix 0) matches everything.
    a.checked_shr(shift).unwrap_or(0) == b.checked_shr(shift).unwrap_or(0)
}

/// Who may connect and feed: the allow-list and the token, either or both.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FeedAccess {
    /// `--feed-token`: the first line must be `{"type":"auth","token":"…"}`.
    pub token: Option<FeedToken>,
    /// `--feed-allow`: peers outside every entry are closed at accept.
    /// Empty: any peer that can reach the port.
    pub allow: Vec<IpNet>,
}

impl FeedAccess {
    /// Whether the peer's address passes the allow-list (an empty list
    /// passes everyone).
    pub fn allows(&self, peer: &SocketAddr) -> bool {
        self.allow.is_empty() || self.allow.iter().any(|net| net.contains(peer.ip()))
    }

    /// Whether anything restricts who may feed.
    pub fn is_open(&self) -> bool {
        self.token.is_none() && self.allow.is_empty()
    }

    /// The rule for exposing the feed port: on a loopback address anyone
    /// local may feed (as before); on any other address a token or an
    /// allow-list is required (`--feed-allow 0.0.0.0/0,::/0` says "anyone"
    /// explicitly). The error is the operator's message.
    pub fn check_exposure(&self, addr: SocketAddr) -> Result<(), String> {
        if addr.ip().is_loopback() || !self.is_open() {
            return Ok(());
        }
        Err(format!(
            "--feed tcp://{addr} listens beyond loopback: anyone who reaches it could inject prices. \
             Set --feed-token and/or --feed-allow (--feed-allow 0.0.0.0/0,::/0 to allow everyone explicitly), \
             or listen on 127.0.0.1"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole_and_never_print() {
        let t: FeedToken = "0123456789abcdef".parse().unwrap();
        assert!(t.matches(b"0123456789abcdef"));
        assert!(!t.matches(b"0123456789abcdeF"));
        assert!(!t.matches(b"0123456789abcde"));
        assert!(!t.matches(b""));
        assert_eq!(format!("{t:?}"), "FeedToken(<redacted>)");
        assert_eq!("short".parse::<FeedToken>(), Err(FeedTokenError::Length(5)));
        assert_eq!("0123456789 abcdef".parse::<FeedToken>(), Err(FeedTokenError::Charset));
        assert_eq!("0123456789\"abcdef".parse::<FeedToken>(), Err(FeedTokenError::Charset));
    }

    #[test]
    fn networks_match_by_prefix() {
        let net: IpNet = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains("10.1.200.3".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.0.9".parse().unwrap()), "v4-mapped peers match v4 networks");
        let one: IpNet = "192.168.1.7".parse().unwrap();
        assert!(one.contains("192.168.1.7".parse().unwrap()));
        assert!(!one.contains("192.168.1.8".parse().unwrap()));
        let all: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        let v6: IpNet = "fd00::/8".parse().unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!(!v6.contains("10.0.0.1".parse().unwrap()));
        for bad in ["10.0.0.0/33", "nowhere", "10.0.0.0/", "::/129", "1.2.3.4/x"] {
            assert!(bad.parse::<IpNet>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_feed_port_off_loopback_needs_a_lock() {
        let open = FeedAccess::default();
        assert!(open.check_exposure("127.0.0.1:9000".parse().unwrap()).is_ok());
        assert!(open.check_exposure("[::1]:9000".parse().unwrap()).is_ok());
        let err = open.check_exposure("0.0.0.0:9000".parse().unwrap()).unwrap_err();
        assert!(err.contains("--feed-token"), "{err}");
        let allowed = FeedAccess { token: None, allow: vec!["10.0.0.0/8".parse().unwrap()] };
        assert!(allowed.check_exposure("0.0.0.0:9000".parse().unwrap()).is_ok());
        assert!(allowed.allows(&"10.3.4.5:1234".parse().unwrap()));
        assert!(!allowed.allows(&"11.3.4.5:1234".parse().unwrap()));
        assert!(open.allows(&"11.3.4.5:1234".parse().unwrap()));
    }
}
