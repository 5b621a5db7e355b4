//! The per-connection request rate limit: a token bucket over everything a
//! client sends that asks for work or a reply (text and binary messages,
//! and pings; not pongs, which are replies, nor the close).
//!
//! In: the time of each such message. Out: a [`Verdict`]: apply it,
//! refuse it (the session answers `error` `rate_limited` to a request and
//! drops a ping unanswered), or close the connection (1008 "rate limited").
//!
//! The bucket holds up to `burst` tokens and refills at `per_sec`; each
//! message takes one. A message that finds the bucket empty is refused and
//! still takes its token, as debt: a client that slows down pays the debt
//! back at the refill rate and is served again, but one that keeps sending
//! until it owes a whole second burst is closed. At the defaults (100/s,
//! burst 200) a client that floods is refused after 200 messages and closed
//! after 400; one that sends steadily at 150/s is refused from about the
//! 4th second and closed at about the 8th.

use std::time::Instant;

/// What to do with one client message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Within the rate: apply it.
    Allowed,
    /// Over the rate: refuse it (`rate_limited`) and drop it.
    Refused,
    /// Over the rate by more than a whole burst: close the connection.
    Exhausted,
}

/// One connection's token bucket; see the module doc.
#[derive(Debug)]
pub struct RequestLimiter {
    /// Refill rate, tokens per second; 0 turns the limit off.
    per_sec: f64,
    /// Bucket size, and the debt that closes the connection.
    burst: f64,
    /// Tokens now; negative while the client is in debt.
    tokens: f64,
    /// When `tokens` was last brought up to date.
    at: Instant,
}

impl RequestLimiter {
    /// A full bucket of `burst` tokens refilled at `per_sec`
    /// (`--max-requests-per-sec`, `--request-burst`); `per_sec` 0 allows
    /// everything.
    pub fn new(per_sec: u32, burst: u32, now: Instant) -> RequestLimiter {
        let burst = f64::from(burst.max(1));
        RequestLimiter { per_sec: f64::from(per_sec), burst, tokens: burst, at: now }
    }

    /// Takes a token for one message at `now`.
    pub fn check(&mut self, now: Instant) -> Verdict {
        if self.per_sec == 0.0 {
            return Verdict::Allowed;
        }
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.burst) - 1.0;
        if self.tokens >= 0.0 {
            Verdict::Allowed
        } else if self.tokens >= -self.burst {
            Verdict::Refused
        } else {
            Verdict::Exhausted
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn count(limiter: &mut RequestLimiter, now: Instant, n: usize) -> [usize; 3] {
        let mut seen = [0; 3];
        for _ in 0..n {
            seen[limiter.check(now) as usize] += 1;
        }
        seen
    }

    #[test]
    fn a_flood_gets_a_burst_then_refusals_then_the_close() {
        let t0 = Instant::now();
        let mut l = RequestLimiter::new(100, 200, t0);
        assert_eq!(count(&mut l, t0, 200), [200, 0, 0], "the burst is allowed");
        assert_eq!(count(&mut l, t0, 200), [0, 200, 0], "a second burst is refused");
        assert_eq!(l.check(t0), Verdict::Exhausted, "then the connection is closed");
    }

    #[test]
    fn a_client_that_slows_down_pays_its_debt_and_is_served_again() {
        let t0 = Instant::now();
        let mut l = RequestLimiter::new(100, 200, t0);
        assert_eq!(count(&mut l, t0, 300), [200, 100, 0]);
        // 100 owed plus one: 1.01 s at 100/s.
        assert_eq!(l.check(t0 + Duration::from_millis(1000)), Verdict::Refused);
        assert_eq!(l.check(t0 + Duration::from_millis(1030)), Verdict::Allowed);
        // Steady at the rate: always allowed.
        let mut t = t0 + Duration::from_millis(1030);
        for _ in 0..1000 {
            t += Duration::from_millis(10);
            assert_eq!(l.check(t), Verdict::Allowed);
        }
    }

    #[test]
    fn steady_over_the_rate_is_closed_in_bounded_time() {
        let t0 = Instant::now();
        let mut l = RequestLimiter::new(100, 200, t0);
        // 150/s: 50/s over; the burst lasts 4 s, the debt another 4 s.
        let verdicts: Vec<(u64, Verdict)> =
            (1..=1500u64).map(|i| (i, l.check(t0 + Duration::from_micros(i * 6667)))).collect();
        let first = |v: Verdict| verdicts.iter().find(|(_, x)| *x == v).map(|(i, _)| *i).unwrap();
        let (refused, closed) = (first(Verdict::Refused), first(Verdict::Exhausted));
        assert!((590..=610).contains(&refused), "first refusal at message {refused}");
        assert!((1190..=1210).contains(&closed), "closed at message {closed}");
    }

    #[test]
    fn zero_turns_the_limit_off() {
        let t0 = Instant::now();
        let mut l = RequestLimiter::new(0, 1, t0);
        assert_eq!(count(&mut l, t0, 10_000), [10_000, 0, 0]);
    }
}
