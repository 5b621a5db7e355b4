//! Entitlements: what a token's claims let its holder read, compiled once.
//!
//! The claims (all optional; an absent one grants nothing, except
//! `max_subscriptions`):
//!
//! | claim | shape | grants |
//! |---|---|---|
//! | `symbols` | array of patterns | live symbols: `"AAPL"` exactly that symbol, `"BTC*"` every symbol starting with `BTC`, `"*"` every symbol. `*` is allowed only at the end. Absent or empty: none |
//! | `replay` | `true`, `false`, or an array of recording names | `/replay`: every recording, none, or only those named. Absent: none |
//! | `max_subscriptions` | integer | most symbols subscribed at once (a `"*"` counts each symbol it expands to). Absent: no limit beyond the server's |
//!
//! The engine checks a subscribe against these when it applies it,
//! including each symbol a `"*"` subscription picks up later; nothing is
//! checked per message.

use std::collections::HashSet;

use serde::Deserialize;

/// The claims tickcast reads from a verified token; other claims are
/// ignored.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Claims {
    /// Subject: who the token names.
    #[serde(default)]
    pub sub: Option<String>,
    /// Expiry, seconds since the Unix epoch.
    #[serde(default)]
    pub exp: Option<u64>,
    /// Symbol patterns (see the module doc).
    #[serde(default)]
    pub symbols: Option<Vec<String>>,
    /// Replay access (see the module doc).
    #[serde(default)]
    pub replay: Option<ReplayClaim>,
    /// Most symbols subscribed at once.
    #[serde(default)]
    pub max_subscriptions: Option<u64>,
}

/// The `replay` claim: all or nothing, or a list of recordings.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum ReplayClaim {
    /// `true`: every recording; `false`: none.
    All(bool),
    /// Only these recordings (`?source=` names).
    Sources(Vec<String>),
}

/// A bad symbol pattern in a token's claims.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// An empty string.
    #[error("symbol pattern \"\" is empty")]
    Empty,
    /// `*` anywhere but at the end.
    #[error("symbol pattern {0:?}: '*' is allowed only at the end (\"BTC*\", \"*\")")]
    Star(String),
}

/// Compiled symbol patterns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct SymbolPatterns {
    /// `"*"` was among them.
    all: bool,
    /// Exact names.
    exact: HashSet<String>,
    /// Prefixes of `"PREFIX*"` patterns.
    prefixes: Vec<String>,
}

impl SymbolPatterns {
    fn compile(patterns: &[String]) -> Result<SymbolPatterns, PatternError> {
        let mut out = SymbolPatterns::default();
        for p in patterns {
            let shown = || p.chars().take(64).collect::<String>();
            match p.find('*') {
                _ if p.is_empty() => return Err(PatternError::Empty),
                None => {
                    out.exact.insert(p.clone());
                }
                Some(i) if i + 1 == p.len() => {
                    if i == 0 {
                        out.all = true;
                    } else {
                        out.prefixes.push(p[..i].to_owned());
                    }
                }
                Some(_) => return Err(PatternError::Star(shown())),
            }
        }
        Ok(out)
    }

    fn matches(&self, symbol: &str) -> bool {
        self.all || self.exact.contains(symbol) || self.prefixes.iter().any(|p| symbol.starts_with(p.as_str()))
    }
}

/// Which recordings `/replay` may open.
#[derive(Clone, Debug, PartialEq, Eq)]
enum ReplayGrant {
    None,
    All,
    Sources(HashSet<String>),
}

/// What a token's holder may read; built once from its claims, then shared
/// (`Arc`) with the engine and only read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entitlements {
    symbols: SymbolPatterns,
    replay: ReplayGrant,
    /// Most symbols subscribed at once; `None`: no limit of the token's.
    pub max_subscriptions: Option<usize>,
}

impl Entitlements {
    /// Compiles a token's claims.
    pub fn from_claims(claims: &Claims) -> Result<Entitlements, PatternError> {
        let symbols = SymbolPatterns::compile(claims.symbols.as_deref().unwrap_or(&[]))?;
        let replay = match &claims.replay {
            None | Some(ReplayClaim::All(false)) => ReplayGrant::None,
            Some(ReplayClaim::All(true)) => ReplayGrant::All,
            Some(ReplayClaim::Sources(names)) => ReplayGrant::Sources(names.iter().cloned().collect()),
        };
        let max_subscriptions = claims.max_subscriptions.map(|n| usize::try_from(n).unwrap_or(usize::MAX));
        Ok(Entitlements { symbols, replay, max_subscriptions })
    }

    /// Whether the holder may subscribe to `symbol`.
    pub fn allows_symbol(&self, symbol: &str) -> bool {
        self.symbols.matches(symbol)
    }

    /// Whether every symbol is allowed (a `"*"` pattern): a replay of a
    /// whole recording is then allowed too.
    pub fn allows_every_symbol(&self) -> bool {
        self.symbols.all
    }

    /// Whether the holder may replay the recording named `source`.
    pub fn allows_replay(&self, source: &str) -> bool {
        match &self.replay {
            ReplayGrant::None => false,
            ReplayGrant::All => true,
            ReplayGrant::Sources(names) => names.contains(source),
        }
    }

    /// Whether `max_subscriptions` lets a session hold `count` symbols.
    pub fn allows_count(&self, count: usize) -> bool {
        self.max_subscriptions.is_none_or(|max| count <= max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(json: &str) -> Claims {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn patterns_match_exactly_or_by_prefix() {
        let e = Entitlements::from_claims(&claims(r#"{"symbols":["BTC*","AAPL"]}"#)).unwrap();
        assert!(e.allows_symbol("BTCUSDT") && e.allows_symbol("BTC") && e.allows_symbol("AAPL"));
        assert!(!e.allows_symbol("AAPL2") && !e.allows_symbol("ETHBTC") && !e.allows_symbol(""));
        assert!(!e.allows_every_symbol());
        let all = Entitlements::from_claims(&claims(r#"{"symbols":["*"]}"#)).unwrap();
        assert!(all.allows_symbol("ANY") && all.allows_every_symbol());
    }

    #[test]
    fn absent_claims_grant_nothing() {
        let e = Entitlements::from_claims(&Claims::default()).unwrap();
        assert!(!e.allows_symbol("AAPL") && !e.allows_replay("day.gz"));
        assert!(e.allows_count(1_000_000));
    }

    #[test]
    fn replay_is_all_none_or_listed() {
        let yes = Entitlements::from_claims(&claims(r#"{"replay":true}"#)).unwrap();
        assert!(yes.allows_replay("x"));
        let no = Entitlements::from_claims(&claims(r#"{"replay":false}"#)).unwrap();
        assert!(!no.allows_replay("x"));
        let some = Entitlements::from_claims(&claims(r#"{"replay":["a.gz"]}"#)).unwrap();
        assert!(some.allows_replay("a.gz") && !some.allows_replay("b.gz"));
        assert!(serde_json::from_str::<Claims>(r#"{"replay":"yes"}"#).is_err());
    }

    #[test]
    fn limits_and_bad_patterns() {
        let e = Entitlements::from_claims(&claims(r#"{"symbols":["*"],"max_subscriptions":2}"#)).unwrap();
        assert!(e.allows_count(2) && !e.allows_count(3));
        for bad in [r#"["A*B"]"#, r#"["**"]"#, r#"["*A"]"#, r#"[""]"#] {
            let c = claims(&format!(r#"{{"symbols":{bad}}}"#));
            assert!(Entitlements::from_claims(&c).is_err(), "{bad}");
        }
        assert!(serde_json::from_str::<Claims>(r#"{"max_subscriptions":-1}"#).is_err());
    }
}
