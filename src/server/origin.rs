//! Which web pages may open a WebSocket to this server (`--allowed-origins`).
//!
//! A browser sends the page's origin in the `Origin` header of every
//! WebSocket handshake, and lets any page connect anywhere: the server is
//! the only one that can refuse a page from another site (cross-site
//! WebSocket hijacking). A handshake whose `Origin` is not allowed gets
//! HTTP 403. A handshake without `Origin` comes from a program, not a
//! browser page, and is allowed: the header protects browser users, it
//! authenticates nobody.
//!
//! Entries, comma-separated, compared without regard to ASCII case:
//! - an exact origin, `scheme://host[:port]` (no path): `https://app.example.com`;
//! - a pattern with `*` as the whole leftmost host label, matching one or
//!   more labels: `https://*.example.com` allows `https://a.example.com` and
//!   `https://a.b.example.com`, not `https://example.com` nor
//!   `https://a.example.com:8443`;
//! - `null` (sandboxed frames, `file:` pages in most browsers) and `file://`
//!   only when listed: they are origins like any other;
//! - `*` alone: every origin.

/// The origins a browser handshake may come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedOrigins {
    /// Every origin (`*`, or no `--allowed-origins`).
    Any,
    /// Only these entries.
    Only(Vec<OriginPattern>),
}

/// One entry of `--allowed-origins`, lower-cased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginPattern {
    /// An exact origin.
    Exact(String),
    /// `scheme://*.rest`: `prefix` is `scheme://`, `suffix` is `.rest`.
    Subdomains {
        /// `scheme://`.
        prefix: String,
        /// `.rest`, port included if any.
        suffix: String,
    },
}

/// An `--allowed-origins` entry that is not an origin or a pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--allowed-origins {entry:?}: {why} (examples: https://app.example.com, https://*.example.com, null, *)")]
pub struct OriginError {
    /// The entry as given.
    pub entry: String,
    /// What is wrong with it.
    pub why: &'static str,
}

impl AllowedOrigins {
    /// Parses the comma-separated entries of `--allowed-origins`.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<AllowedOrigins, OriginError> {
        let mut patterns = Vec::new();
        for entry in entries.iter().flat_map(|e| e.as_ref().split(',')).map(str::trim) {
            let bad = |why| Err(OriginError { entry: entry.to_owned(), why });
            let lower = entry.to_ascii_lowercase();
            if lower == "*" {
                return Ok(AllowedOrigins::Any);
            }
            if lower.is_empty() {
                return bad("empty entry");
            }
            if lower == "null" {
                patterns.push(OriginPattern::Exact(lower));
                continue;
            }
            let Some((scheme, authority)) = lower.split_once("://") else {
                return bad("an origin is scheme://host[:port]");
            };
            if scheme.is_empty() || !scheme.bytes().all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)) {
                return bad("bad scheme");
            }
            if authority.contains('/') {
                return bad("an origin has no path, not even a trailing /");
            }
            if authority.is_empty() && scheme != "file" {
                return bad("no host");
            }
            match authority.strip_prefix('*') {
                None if authority.contains('*') => {
                    return bad("* must be the whole leftmost label: https://*.example.com")
                }
                None => patterns.push(OriginPattern::Exact(lower.clone())),
                Some(rest) => {
                    if !rest.starts_with('.') || rest.len() < 2 || rest.contains('*') {
                        return bad("* must be the whole leftmost label: https://*.example.com");
                    }
                    patterns
                        .push(OriginPattern::Subdomains { prefix: format!("{scheme}://"), suffix: rest.to_owned() });
                }
            }
        }
        Ok(AllowedOrigins::Only(patterns))
    }

    /// Whether a handshake with this `Origin` header value is allowed.
    pub fn allows(&self, origin: &str) -> bool {
        let patterns = match self {
            AllowedOrigins::Any => return true,
            AllowedOrigins::Only(p) => p,
        };
        let origin = origin.trim().to_ascii_lowercase();
        patterns.iter().any(|p| match p {
            OriginPattern::Exact(o) => *o == origin,
            OriginPattern::Subdomains { prefix, suffix } => origin
                .strip_prefix(prefix.as_str())
                .and_then(|rest| rest.strip_suffix(suffix.as_str()))
                // The labels `*` stands for: host characters only, so no
                // port, user info or path can hide in them.
                .is_some_and(|labels| {
                    !labels.is_empty()
                        && !labels.starts_with('.')
                        && !labels.ends_with('.')
                        && labels.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
                }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(entries: &str) -> AllowedOrigins {
        AllowedOrigins::parse(&[entries]).unwrap()
    }

    #[test]
    fn exact_origins_match_whole_and_ignore_case() {
        let a = allowed("https://app.example.com, http://localhost:3000");
        assert!(a.allows("https://app.example.com"));
        assert!(a.allows("HTTPS://App.Example.COM"));
        assert!(a.allows("http://localhost:3000"));
        assert!(!a.allows("http://app.example.com"), "the scheme is part of the origin");
        assert!(!a.allows("https://app.example.com:8443"), "so is the port");
        assert!(!a.allows("http://localhost:3001"));
        assert!(!a.allows("https://app.example.com.evil.example"));
        assert!(!a.allows("https://evil.example"));
    }

    #[test]
    fn a_star_label_matches_subdomains_only() {
        let a = allowed("https://*.example.com");
        assert!(a.allows("https://a.example.com"));
        assert!(a.allows("https://a.b.example.com"));
        assert!(a.allows("https://x-1.example.com"));
        assert!(!a.allows("https://example.com"), "not the apex");
        assert!(!a.allows("https://.example.com"));
        assert!(!a.allows("http://a.example.com"));
        assert!(!a.allows("https://a.example.com:8443"));
        assert!(!a.allows("https://evil.com/.example.com"), "no path can hide in the star");
        assert!(!a.allows("https://evil.com:1@a.example.com"), "nor user info");
        assert!(!a.allows("https://a.example.com.evil.example"));
        assert!(!a.allows("https://aexample.com"));
        let ported = allowed("https://*.example.com:8443");
        assert!(ported.allows("https://a.example.com:8443"));
        assert!(!ported.allows("https://a.example.com"));
    }

    #[test]
    fn null_and_file_must_be_listed() {
        let a = allowed("https://app.example.com");
        assert!(!a.allows("null"));
        assert!(!a.allows("file://"));
        let a = allowed("null,file://");
        assert!(a.allows("null"));
        assert!(a.allows("file://"));
        assert!(!a.allows("https://app.example.com"));
    }

    #[test]
    fn a_lone_star_allows_everything() {
        assert_eq!(allowed("https://a.example, *"), AllowedOrigins::Any);
        for origin in ["null", "file://", "https://evil.example", ""] {
            assert!(AllowedOrigins::Any.allows(origin));
        }
    }

    #[test]
    fn malformed_entries_are_refused_with_the_reason() {
        for (entry, why) in [
            ("app.example.com", "scheme://host"),
            ("https://app.example.com/", "no path"),
            ("https://app.example.com/x", "no path"),
            ("https://", "no host"),
            ("https://a.*.example.com", "leftmost label"),
            ("https://*example.com", "leftmost label"),
            ("https://*.", "leftmost label"),
            ("https://*.*.example.com", "leftmost label"),
            ("ht tp://a", "bad scheme"),
            ("https://a.example,,https://b.example", "empty entry"),
        ] {
            let e = AllowedOrigins::parse(&[entry]).unwrap_err();
            assert!(e.to_string().contains(why), "{entry}: {e}");
        }
    }
}
