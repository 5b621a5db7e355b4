//! Pacing a recording on the wall clock: the schedule both the replay feed
//! and private replay sessions keep.
//!
//! A replay keeps the recording's own clock: the time each event reached
//! the recorder (`ts_recv`: the tick log's `ts_ingest`, a Binance
//! capture's local receive time, DBN's `ts_recv`). That clock follows file
//! order, while exchange event times need not (a Binance capture mixes the
//! exchange's trade times with local receive times, which differ by the
//! capture host's clock offset). With `--speed N` each event is published
//! at `start + (ts_recv - first_ts_recv) / N` on the monotonic clock, so
//! the recorded gaps between events are kept, scaled by N, and errors do
//! not accumulate. An event whose time has already passed (a feed behind
//! schedule, or times that go backwards) is published at once. If the
//! replay falls more than [`MAX_LAG`] behind (the ring was full for a long
//! time) the schedule restarts from the current event rather than
//! bursting to catch up. `--speed max` publishes as fast as the ring takes
//! ticks. Clients see each event's original `ts_event`.
//!
//!
//! Imports: nothing of tickcast's.

use std::time::{Duration, Instant};

/// How far behind schedule a paced replay may fall before its schedule
/// restarts from the current event.
pub const MAX_LAG: Duration = Duration::from_secs(1);

/// How fast a recording is replayed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Speed {
    /// As fast as the pipeline takes it.
    Max,
    /// Recorded gaps divided by this factor (1 = real time).
    Times(f64),
}

impl std::str::FromStr for Speed {
    type Err = SpeedError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s == "max" {
            return Ok(Speed::Max);
        }
        let factor = s.strip_suffix('x').unwrap_or(s);
        match factor.parse::<f64>() {
            Ok(f) if f.is_finite() && (0.001..=1_000_000.0).contains(&f) => Ok(Speed::Times(f)),
            _ => Err(SpeedError(s.chars().take(64).collect())),
        }
    }
}

impl std::fmt::Display for Speed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Speed::Max => f.write_str("max"),
            Speed::Times(x) => write!(f, "{x}"),
        }
    }
}

/// A `--speed` (or a replay session's `speed`) that is neither `max` nor a
/// factor in range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("speed {0:?}: expected \"max\" or a factor from 0.001 to 1000000 (e.g. 1, 10, 0.5)")]
pub struct SpeedError(pub String);

/// Wall-clock schedule of a paced replay.
pub struct Pacer {
    speed: Speed,
    /// (event time, instant) the schedule counts from.
    base: Option<(u64, Instant)>,
}

impl Pacer {
    /// A schedule that starts at the first event it is asked about.
    pub fn new(speed: Speed) -> Pacer {
        Pacer { speed, base: None }
    }

    /// Starts the schedule afresh at the next event (after a pause, a
    /// speed change, a seek, a new pass).
    pub fn rebase(&mut self) {
        self.base = None;
    }

    /// Changes the speed from the next event on.
    pub fn set_speed(&mut self, speed: Speed) {
        self.speed = speed;
        self.base = None;
    }

    /// The current speed.
    pub fn speed(&self) -> Speed {
        self.speed
    }

    /// When the event with time `ts_event` is due; `None` = now.
    pub fn due(&mut self, ts_event: u64, now: Instant) -> Option<Instant> {
        let Speed::Times(factor) = self.speed else { return None };
        let (base_ts, base_at) = *self.base.get_or_insert((ts_event, now));
        let offset_ns = ts_event.saturating_sub(base_ts) as f64 / factor;
        let due = base_at + Duration::from_nanos(offset_ns.min(u64::MAX as f64 / 2.0) as u64);
        if now > due + MAX_LAG {
            self.base = Some((ts_event, now));
            return None;
        }
        (due > now).then_some(due)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speeds_parse_with_clear_errors() {
        assert_eq!("max".parse(), Ok(Speed::Max));
        assert_eq!("10".parse(), Ok(Speed::Times(10.0)));
        assert_eq!("0.5x".parse(), Ok(Speed::Times(0.5)));
        assert!("0".parse::<Speed>().unwrap_err().to_string().contains("expected"));
        assert!("fast".parse::<Speed>().is_err());
        assert!("inf".parse::<Speed>().is_err());
    }

    #[test]
    fn the_pacer_keeps_recorded_gaps_scaled_by_speed() {
        let t0 = Instant::now();
        let mut p = Pacer::new(Speed::Times(10.0));
        assert_eq!(p.due(1_000_000_000, t0), None, "the first event is due at once");
        // 50 ms later in event time is 5 ms later at 10x.
        assert_eq!(p.due(1_050_000_000, t0), Some(t0 + Duration::from_millis(5)));
        // Times going backwards are due at once.
        assert_eq!(p.due(900_000_000, t0 + Duration::from_millis(1)), None);
        // Far behind schedule: the schedule restarts instead of bursting.
        let late = t0 + Duration::from_secs(5);
        assert_eq!(p.due(1_060_000_000, late), None);
        assert_eq!(p.due(1_070_000_000, late), Some(late + Duration::from_millis(1)));
        let mut max = Pacer::new(Speed::Max);
        assert_eq!(max.due(1, t0), None);
        assert_eq!(max.due(u64::MAX, t0), None);
    }
}
