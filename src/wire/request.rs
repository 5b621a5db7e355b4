//! Control messages from clients: JSON objects with an `op`.
//!
//! Live sessions take `subscribe` and `unsubscribe` ([`ClientRequest`]);
//! replay sessions add their own ops on the same envelope
//! ([`parse_envelope`]), so both answer malformed input with the same codes.

use serde_json::Value;

use super::codes::ErrorCode;
use crate::model::{parse_event_time, valid_depth, DEPTHS, FULL_DEPTH};

/// A parsed control message from a client.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientRequest {
    /// Start receiving these symbols (`"*"` = all).
    Subscribe {
        /// Symbols as the client named them.
        symbols: Vec<String>,
        /// Book levels per side (`"depth"`: one of
        /// [`DEPTHS`](crate::model::DEPTHS), or `"full"` =
        /// [`FULL_DEPTH`]); `None`: the server's `--book-depth`.
        depth: Option<usize>,
        /// Where the named symbols start: `None`, at a snapshot of now.
        start: Option<Start>,
    },
    /// Stop receiving these symbols (`"*"` = all).
    Unsubscribe(Vec<String>),
    /// Replace the session's token (`"token"`), before it expires.
    Refresh(String),
    /// An application-level ping, answered at once with ack `ping`: the
    /// liveness probe of clients that cannot send WebSocket pings or see
    /// the server's (browsers).
    Ping,
}

/// Where a subscribe starts, other than a snapshot of now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// Resume (`from_seq`): per symbol, the last seq the client holds; it
    /// gets the updates after it from history, or a `reset` and a
    /// snapshot. `epoch` is the one the client's earlier ack named.
    Seq {
        /// (symbol, last seq held), each symbol also in `symbols`.
        seqs: Vec<(String, u64)>,
        /// The epoch the seqs belong to, if the client said.
        epoch: Option<u64>,
    },
    /// Live with rewind (`from_ts`): the state as of this event time (ns)
    /// from the tick log, every update after it, then live.
    Time(u64),
}

/// Parses a book depth as clients write it: a number from
/// [`DEPTHS`](crate::model::DEPTHS), or `full`. Shared by the subscribe
/// request (`"depth"`) and the replay handshake (`?depth=`).
pub fn parse_depth(text: &str) -> Option<usize> {
    if text == "full" {
        return Some(FULL_DEPTH);
    }
    text.parse().ok().filter(|&d| d != FULL_DEPTH && valid_depth(d))
}

/// What a refused depth is told.
pub fn depth_error(shown: &str) -> String {
    let menu: Vec<String> = DEPTHS.iter().map(ToString::to_string).collect();
    format!("depth {shown} is not offered: use one of {} or \"full\"", menu.join(", "))
}

/// Why a control message was refused; each maps to an `error` code.
#[derive(Debug, PartialEq, Eq)]
pub struct RequestError {
    /// The counted kind, whose code goes on the wire.
    pub kind: ErrorCode,
    /// The explanation sent to the client.
    pub message: String,
}

/// Most symbols one subscribe or unsubscribe may name.
pub const MAX_SYMBOLS_PER_REQUEST: usize = 10_000;

/// Parses a control message's envelope: a JSON object with a string `op`.
/// Shared by live and replay sessions, so both answer the same malformed
/// input with the same codes.
pub fn parse_envelope(payload: &[u8]) -> Result<(serde_json::Map<String, Value>, String), RequestError> {
    let err = |kind, message: String| RequestError { kind, message };
    let value: Value = serde_json::from_slice(payload)
        .map_err(|e| err(ErrorCode::BadJson, format!("control message is not valid JSON: {e}")))?;
    let Value::Object(obj) = value else {
        return Err(err(ErrorCode::BadRequest, "control message must be a JSON object".into()));
    };
    let op = obj
        .get("op")
        .and_then(Value::as_str)
        .ok_or_else(|| err(ErrorCode::BadRequest, "missing string field \"op\"".into()))?
        .to_owned();
    Ok((obj, op))
}

/// The `"token"` of a `refresh` (live and replay sessions alike).
pub fn refresh_token(obj: &serde_json::Map<String, Value>) -> Result<String, RequestError> {
    match obj.get("token").and_then(Value::as_str) {
        Some(token) if !token.is_empty() => Ok(token.to_owned()),
        _ => Err(RequestError {
            kind: ErrorCode::BadRequest,
            message: "refresh needs \"token\": the new token, a string".into(),
        }),
    }
}

impl ClientRequest {
    /// Parses one live session's control message (a JSON object).
    pub fn parse(payload: &[u8]) -> Result<ClientRequest, RequestError> {
        let err = |kind, message: String| RequestError { kind, message };
        let (obj, op) = parse_envelope(payload)?;
        let op = op.as_str();
        if op == "refresh" {
            return refresh_token(&obj).map(ClientRequest::Refresh);
        }
        if op == "ping" {
            return Ok(ClientRequest::Ping);
        }
        if op != "subscribe" && op != "unsubscribe" {
            let op: String = op.chars().take(64).collect();
            return Err(err(
                ErrorCode::UnknownOp,
                format!("unknown op {op:?}: valid ops are subscribe, unsubscribe, refresh, ping"),
            ));
        }
        let symbols = obj
            .get("symbols")
            .and_then(Value::as_array)
            .ok_or_else(|| err(ErrorCode::BadRequest, format!("{op} needs \"symbols\": an array of strings")))?;
        if symbols.is_empty() || symbols.len() > MAX_SYMBOLS_PER_REQUEST {
            return Err(err(
                ErrorCode::BadRequest,
                format!("\"symbols\" must name 1 to {MAX_SYMBOLS_PER_REQUEST} symbols"),
            ));
        }
        let mut names = Vec::with_capacity(symbols.len());
        for s in symbols {
            match s.as_str() {
                Some(name) => names.push(name.to_owned()),
                None => return Err(err(ErrorCode::BadRequest, "\"symbols\" must hold only strings".into())),
            }
        }
        if op == "unsubscribe" {
            return Ok(ClientRequest::Unsubscribe(names));
        }
        let depth = match obj.get("depth") {
            None | Some(Value::Null) => None,
            // A number from the menu, or the string "full" (not "10").
            Some(v) => {
                let depth = match v {
                    Value::String(s) if s == "full" => Some(FULL_DEPTH),
                    Value::Number(n) => parse_depth(&n.to_string()),
                    _ => None,
                };
                let shown: String = v.to_string().chars().take(32).collect();
                Some(depth.ok_or_else(|| err(ErrorCode::BadRequest, depth_error(&shown)))?)
            }
        };
        let start = parse_start(&obj, &names)?;
        Ok(ClientRequest::Subscribe { symbols: names, depth, start })
    }
}

/// Most symbols one `from_seq` may name: as many as a request may.
const MAX_FROM_SEQ: usize = MAX_SYMBOLS_PER_REQUEST;

/// A subscribe's `from_seq` and `epoch`, or its `from_ts`.
fn parse_start(obj: &serde_json::Map<String, Value>, symbols: &[String]) -> Result<Option<Start>, RequestError> {
    let err = |message: String| RequestError { kind: ErrorCode::BadRequest, message };
    let from_seq = obj.get("from_seq").filter(|v| !v.is_null());
    let from_ts = obj.get("from_ts").filter(|v| !v.is_null());
    let epoch = match obj.get("epoch").filter(|v| !v.is_null()) {
        None => None,
        Some(v) => Some(v.as_u64().ok_or_else(|| err("\"epoch\" must be the integer an ack gave".into()))?),
    };
    match (from_seq, from_ts) {
        (Some(_), Some(_)) => Err(err("a subscribe takes \"from_seq\" or \"from_ts\", not both".into())),
        (Some(v), None) => {
            let Value::Object(map) = v else {
                return Err(err("\"from_seq\" must be an object: symbol -> the last seq held".into()));
            };
            if map.len() > MAX_FROM_SEQ {
                return Err(err(format!("\"from_seq\" names more than {MAX_FROM_SEQ} symbols")));
            }
            let mut seqs = Vec::with_capacity(map.len());
            for (sym, seq) in map {
                let Some(seq) = seq.as_u64() else {
                    let sym: String = sym.chars().take(64).collect();
                    return Err(err(format!("\"from_seq\" for {sym:?} must be an integer >= 0")));
                };
                if !symbols.iter().any(|s| s == sym) {
                    let sym: String = sym.chars().take(64).collect();
                    return Err(err(format!("\"from_seq\" names {sym:?}, which \"symbols\" does not")));
                }
                seqs.push((sym.clone(), seq));
            }
            Ok(Some(Start::Seq { seqs, epoch }))
        }
        (None, Some(v)) => {
            let text = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => return Err(err("\"from_ts\" must be RFC 3339 or ns since the Unix epoch".into())),
            };
            let ts = parse_event_time(&text).map_err(|e| err(format!("\"from_ts\": {e}")))?;
            Ok(Some(Start::Time(ts)))
        }
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_or_say_why_not() {
        assert_eq!(
            ClientRequest::parse(br#"{"op":"subscribe","symbols":["AAPL","*"]}"#),
            Ok(ClientRequest::Subscribe { symbols: vec!["AAPL".into(), "*".into()], depth: None, start: None })
        );
        assert_eq!(
            ClientRequest::parse(br#"{"op":"subscribe","symbols":["A"],"depth":25}"#),
            Ok(ClientRequest::Subscribe { symbols: vec!["A".into()], depth: Some(25), start: None })
        );
        assert_eq!(
            ClientRequest::parse(br#"{"op":"subscribe","symbols":["A"],"depth":"full"}"#),
            Ok(ClientRequest::Subscribe { symbols: vec!["A".into()], depth: Some(FULL_DEPTH), start: None })
        );
        assert_eq!(
            ClientRequest::parse(br#"{"op":"unsubscribe","symbols":["X"],"extra":1}"#),
            Ok(ClientRequest::Unsubscribe(vec!["X".into()]))
        );
        assert_eq!(
            ClientRequest::parse(br#"{"op":"refresh","token":"a.b.c"}"#),
            Ok(ClientRequest::Refresh("a.b.c".into()))
        );
        let kind = |p: &[u8]| ClientRequest::parse(p).unwrap_err().kind;
        assert_eq!(kind(br#"{"op":"refresh"}"#), ErrorCode::BadRequest);
        assert_eq!(ClientRequest::parse(br#"{"op":"ping"}"#), Ok(ClientRequest::Ping));
        assert_eq!(ClientRequest::parse(br#"{"op":"ping","id":7}"#), Ok(ClientRequest::Ping));
        assert_eq!(kind(br#"{"op":"refresh","token":7}"#), ErrorCode::BadRequest);
        assert_eq!(kind(b"{nope"), ErrorCode::BadJson);
        assert_eq!(kind(b"[1]"), ErrorCode::BadRequest);
        assert_eq!(kind(br#"{"op":"dance","symbols":["A"]}"#), ErrorCode::UnknownOp);
        assert_eq!(kind(br#"{"op":"subscribe"}"#), ErrorCode::BadRequest);
        assert_eq!(kind(br#"{"op":"subscribe","symbols":[]}"#), ErrorCode::BadRequest);
        assert_eq!(kind(br#"{"op":"subscribe","symbols":[1]}"#), ErrorCode::BadRequest);
        for bad in [r#"7"#, r#""deep""#, r#"4096"#, r#"-1"#, r#"10.5"#, r#"[10]"#, r#""10 ""#, r#""10""#, r#""4096""#] {
            let req = format!(r#"{{"op":"subscribe","symbols":["A"],"depth":{bad}}}"#);
            let e = ClientRequest::parse(req.as_bytes()).unwrap_err();
            assert_eq!(e.kind, ErrorCode::BadRequest, "{bad}");
            assert!(e.message.contains("not offered"), "{}", e.message);
        }
    }

    #[test]
    fn from_seq_and_from_ts_parse_or_say_why_not() {
        let start = |p: &str| match ClientRequest::parse(p.as_bytes()) {
            Ok(ClientRequest::Subscribe { start, .. }) => Ok(start),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e.message),
        };
        assert_eq!(
            start(r#"{"op":"subscribe","symbols":["A","B"],"from_seq":{"A":12},"epoch":7}"#),
            Ok(Some(Start::Seq { seqs: vec![("A".into(), 12)], epoch: Some(7) }))
        );
        assert_eq!(
            start(r#"{"op":"subscribe","symbols":["A"],"from_ts":"2024-08-08T23:55:00Z"}"#),
            Ok(Some(Start::Time(1_723_161_300_000_000_000)))
        );
        assert_eq!(start(r#"{"op":"subscribe","symbols":["A"],"from_ts":5}"#), Ok(Some(Start::Time(5))));
        for (bad, says) in [
            (r#""from_seq":{"C":1}"#, "which \"symbols\" does not"),
            (r#""from_seq":{"A":-1}"#, "integer >= 0"),
            (r#""from_seq":{"A":"1"}"#, "integer >= 0"),
            (r#""from_seq":[1]"#, "must be an object"),
            (r#""from_seq":{"A":1},"from_ts":1"#, "not both"),
            (r#""from_ts":"yesterday""#, "RFC 3339"),
            (r#""from_ts":true"#, "RFC 3339"),
            (r#""from_seq":{"A":1},"epoch":"x""#, "\"epoch\""),
        ] {
            let req = format!(r#"{{"op":"subscribe","symbols":["A"],{bad}}}"#);
            let message = start(&req).unwrap_err();
            assert!(message.contains(says), "{bad}: {message}");
        }
    }
}
