//! Where a handshake carries its token, in the order they are looked at:
//!
//! 1. `Authorization: Bearer <jwt>` (any client that can set headers);
//! 2. a `Sec-WebSocket-Protocol` entry `base64url.bearer.<jwt>` (browsers
//!    cannot set headers on a WebSocket, but can offer subprotocols). A JWT
//!    is already base64url and dots, so it goes as is; a remainder with no
//!    dot is read as the base64url (unpadded) of the token. The entry is
//!    never echoed back as the chosen subprotocol: offer an encoding
//!    subprotocol beside it (`tickcast.json`) if the client needs an echo;
//! 3. `?token=<jwt>` in the query (browsers; it can end up in proxies'
//!    access logs, so prefer the others: tickcast never logs it).

use std::borrow::Cow;

use base64::Engine as _;

/// The prefix of a `Sec-WebSocket-Protocol` entry that carries a token.
pub const BEARER_SUBPROTOCOL_PREFIX: &str = "base64url.bearer.";

/// The token of a handshake, from the first place that has one; `None` if
/// none does.
pub fn from_handshake<'a>(
    authorization: Option<&'a str>,
    protocols: Option<&'a str>,
    query: Option<&'a str>,
) -> Option<Cow<'a, str>> {
    if let Some(value) = authorization {
        let value = value.trim();
        if value.len() > 7 && value[..7].eq_ignore_ascii_case("bearer ") {
            return Some(Cow::Borrowed(value[7..].trim()));
        }
    }
    if let Some(entry) = protocols.into_iter().flat_map(|p| p.split(',')).map(str::trim).find_map(bearer_entry) {
        if entry.contains('.') {
            return Some(Cow::Borrowed(entry));
        }
        let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(entry).ok()?;
        return String::from_utf8(decoded).ok().map(Cow::Owned);
    }
    form_urlencoded::parse(query.unwrap_or("").as_bytes()).find(|(k, _)| k == "token").map(|(_, v)| v)
}

fn bearer_entry(entry: &str) -> Option<&str> {
    entry.strip_prefix(BEARER_SUBPROTOCOL_PREFIX).filter(|t| !t.is_empty())
}

/// `Sec-WebSocket-Protocol` without its token entries: what the encoding
/// is chosen from. `None` if nothing else was offered.
pub fn without_bearer(protocols: &str) -> Option<String> {
    let kept: Vec<&str> = protocols
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty() && !p.starts_with(BEARER_SUBPROTOCOL_PREFIX))
        .collect();
    (!kept.is_empty()).then(|| kept.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_from_header_subprotocol_or_query() {
        assert_eq!(from_handshake(Some("Bearer a.b.c"), None, None).as_deref(), Some("a.b.c"));
        assert_eq!(from_handshake(Some("bearer  a.b.c "), None, None).as_deref(), Some("a.b.c"));
        assert_eq!(from_handshake(Some("Basic xyz"), None, None), None);
        assert_eq!(from_handshake(None, Some("tickcast.json, base64url.bearer.x.y.z"), None).as_deref(), Some("x.y.z"));
        // Unpadded base64url of "a.b.c".
        assert_eq!(from_handshake(None, Some("base64url.bearer.YS5iLmM"), None).as_deref(), Some("a.b.c"));
        assert_eq!(from_handshake(None, None, Some("encoding=json&token=t.u.v")).as_deref(), Some("t.u.v"));
        assert_eq!(from_handshake(None, Some("tickcast.json"), Some("encoding=json")), None);
        assert_eq!(from_handshake(Some("Bearer h.h.h"), None, Some("token=q.q.q")).as_deref(), Some("h.h.h"));
    }

    #[test]
    fn bearer_entries_are_not_offered_encodings() {
        assert_eq!(without_bearer("tickcast.json, base64url.bearer.x.y.z").as_deref(), Some("tickcast.json"));
        assert_eq!(without_bearer("base64url.bearer.x.y.z"), None);
    }
}
