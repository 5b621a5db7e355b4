"""Reconnect delays: exponential backoff with full jitter.

Retry ``attempt`` (0-based) waits a delay drawn uniformly from
``[0, min(cap, base * 2**attempt)]``. The jitter spreads clients that lost
the server at the same moment, so they do not all come back at once
(AWS Architecture Blog, "Exponential Backoff And Jitter").
"""

from __future__ import annotations

import random


def backoff_bound(base: float, cap: float, attempt: int) -> float:
    """The upper bound, in seconds, of retry ``attempt``'s delay:
    ``min(cap, base * 2**attempt)``, without overflow for any attempt."""
    if base < 0 or cap < 0 or attempt < 0:
        raise ValueError("base, cap and attempt must not be negative")
    if attempt >= 64 or base * 2.0**attempt > cap:
        return cap
    return base * 2.0**attempt


def backoff_delay(base: float, cap: float, attempt: int, rng: random.Random | None = None) -> float:
    """The delay before retry ``attempt``, in seconds: uniform in
    ``[0, backoff_bound(base, cap, attempt)]`` (full jitter). ``rng`` makes
    it reproducible; the default is the ``random`` module's generator."""
    bound = backoff_bound(base, cap, attempt)
    uniform = rng.uniform if rng is not None else random.uniform
    return uniform(0.0, bound)
