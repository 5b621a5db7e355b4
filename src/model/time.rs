//! Wall-clock time as the pipeline stamps it, and event times as users
//! write them (`--from`, `seek`, `from=`).

use std::time::{SystemTime, UNIX_EPOCH};

/// Nanoseconds since the Unix epoch on the wall clock (0 if the clock is
/// before 1970, which no sane host is).
pub fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// The latest event time there is: `u64::MAX` ns after the Unix epoch, as
/// RFC 3339. Event times are u64 ns, so a later time cannot be represented
/// and is refused rather than wrapped into the past.
pub const LATEST_EVENT_TIME: &str = "2554-07-21T23:34:33.709551615Z";

/// An event time a user wrote that the server cannot use. The text shown
/// is the first 64 characters of what was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventTimeError {
    /// Neither ns since the Unix epoch nor RFC 3339.
    #[error("time {0:?}: expected ns since the Unix epoch or RFC 3339 (e.g. 2024-08-08T23:55:00Z)")]
    Malformed(String),
    /// A well-formed time outside what u64 ns since the epoch can hold:
    /// before 1970, or after [`LATEST_EVENT_TIME`].
    #[error("time {0:?}: out of range: event times run from 1970-01-01T00:00:00Z to {LATEST_EVENT_TIME}")]
    OutOfRange(String),
}

/// Parses an event time: integer ns since the Unix epoch, or RFC 3339
/// (`2024-08-08T23:55:00Z`, fractions allowed). A time after
/// [`LATEST_EVENT_TIME`] (an integer over `u64::MAX`, or a date after the
/// year 2554) is [`EventTimeError::OutOfRange`], never wrapped.
pub fn parse_event_time(s: &str) -> Result<u64, EventTimeError> {
    let s = s.trim();
    let shown = || s.chars().take(64).collect::<String>();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse::<u64>().map_err(|_| EventTimeError::OutOfRange(shown()));
    }
    let time = humantime::parse_rfc3339_weak(s).map_err(|_| EventTimeError::Malformed(shown()))?;
    let since_epoch = time.duration_since(UNIX_EPOCH).map_err(|_| EventTimeError::OutOfRange(shown()))?;
    u64::try_from(since_epoch.as_nanos()).map_err(|_| EventTimeError::OutOfRange(shown()))
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

    #[test]
    fn times_past_u64_ns_are_refused_not_wrapped() {
        // The last representable instant, both ways.
        assert_eq!(parse_event_time(LATEST_EVENT_TIME), Ok(u64::MAX));
        assert_eq!(parse_event_time(&u64::MAX.to_string()), Ok(u64::MAX));
        // One ns later, a later year, and an integer over u64::MAX.
        for late in ["2554-07-21T23:34:33.709551616Z", "2600-01-01T00:00:00Z", "9999-12-31T23:59:59Z"] {
            let e = parse_event_time(late).unwrap_err();
            assert_eq!(e, EventTimeError::OutOfRange(late.into()), "{late}");
            assert!(e.to_string().contains(LATEST_EVENT_TIME), "{e}");
        }
        assert!(matches!(parse_event_time("18446744073709551616"), Err(EventTimeError::OutOfRange(_))));
        // humantime refuses dates before 1970 as malformed: either way, no wrap.
        assert!(parse_event_time("1969-12-31T23:59:59Z").is_err());
        assert!(matches!(parse_event_time("-5"), Err(EventTimeError::Malformed(_))));
        assert!(matches!(parse_event_time(""), Err(EventTimeError::Malformed(_))));
    }
}
