//! Wall-clock time as the pipeline stamps it, and event times as users
//! write them (`--from`, `seek`, `from=`).

use std::time::{SystemTime, UNIX_EPOCH};

/// Nanoseconds since the Unix epoch on the wall clock (0 if the clock is
/// before 1970, which no sane host is).
pub fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// An event time that is neither ns since the Unix epoch nor RFC 3339.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("time {0:?}: expected ns since the Unix epoch or RFC 3339 (e.g. 2024-08-08T23:55:00Z)")]
pub struct EventTimeError(pub String);

/// Parses an event time: integer ns since the Unix epoch, or RFC 3339
/// (`2024-08-08T23:55:00Z`, fractions allowed). Times before 1970 or past
/// what a `u64` of ns holds (2554-07-21T23:34:33.709551615Z) are refused,
/// never wrapped into another century.
pub fn parse_event_time(s: &str) -> Result<u64, EventTimeError> {
    let s = s.trim();
    if let Ok(ns) = s.parse::<u64>() {
        return Ok(ns);
    }
    humantime::parse_rfc3339_weak(s)
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .and_then(|d| u64::try_from(d.as_nanos()).ok())
        .ok_or_else(|| EventTimeError(s.chars().take(64).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_times_parse_with_clear_errors() {
        assert_eq!(parse_event_time("1723161254206652067"), Ok(1_723_161_254_206_652_067));
        assert_eq!(parse_event_time("2024-08-08T23:55:00Z"), Ok(1_723_161_300_000_000_000));
        assert_eq!(parse_event_time("2024-08-08T23:55:00.5Z"), Ok(1_723_161_300_500_000_000));
        assert!(parse_event_time("yesterday").unwrap_err().to_string().contains("RFC 3339"));
    }

    /// Found by the `event_time` fuzz target: a time past 2554 wrapped
    /// silently into the past (`as u64` on the u128 of ns).
    #[test]
    fn times_past_u64_ns_are_refused_not_wrapped() {
        assert_eq!(parse_event_time("2554-07-21T23:34:33.709551615Z"), Ok(u64::MAX));
        assert!(parse_event_time("2554-07-21T23:34:33.709551616Z").is_err());
        assert!(parse_event_time("4202-08-08T23:55:00.00000000123456789Z").is_err());
        assert!(parse_event_time("9999-12-31T23:59:59Z").is_err());
        assert!(parse_event_time("1969-12-31T23:59:59Z").is_err());
    }
}
