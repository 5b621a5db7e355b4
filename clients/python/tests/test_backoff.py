"""The reconnect delay: full jitter under an exponential bound, capped."""

from __future__ import annotations

import random

import pytest

from tickcast import backoff_bound, backoff_delay


def test_the_bound_doubles_then_saturates_at_the_cap():
    assert [backoff_bound(0.1, 10.0, n) for n in range(9)] == pytest.approx(
        [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 10.0, 10.0]
    )
    assert backoff_bound(0.1, 10.0, 10_000) == 10.0, "no overflow for any attempt"
    assert backoff_bound(0.0, 5.0, 3) == 0.0
    with pytest.raises(ValueError):
        backoff_bound(0.1, 10.0, -1)


def test_every_delay_is_within_its_bound_and_spreads_over_it():
    rng = random.Random(7)
    for attempt in range(40):
        bound = backoff_bound(0.05, 2.0, attempt)
        delays = [backoff_delay(0.05, 2.0, attempt, rng) for _ in range(300)]
        assert all(0.0 <= d <= bound for d in delays)
        # Full jitter: uniform over [0, bound], so both halves are used.
        assert min(delays) < bound * 0.25 and max(delays) > bound * 0.75


def test_a_seeded_rng_makes_delays_reproducible():
    a = [backoff_delay(0.1, 10, n, random.Random(3)) for n in range(5)]
    b = [backoff_delay(0.1, 10, n, random.Random(3)) for n in range(5)]
    assert a == b
