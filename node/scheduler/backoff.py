"""Temporary back-off for providers that keep failing: exponential in the consecutive failures."""

from __future__ import annotations

import random

DEFAULT_BASE_S = 5.0
DEFAULT_CAP_S = 600.0


def backoff_until(
    consecutive_failures: int,
    now: float,
    *,
    base_s: float = DEFAULT_BASE_S,
    cap_s: float = DEFAULT_CAP_S,
    rng: random.Random | None = None,
) -> float:
    """When a provider with `consecutive_failures` in a row may be tried again.

    No failures: at once. Then `base_s`, twice that, four times, … up to `cap_s`. With `rng`, up
    to 10% jitter is added so that many clients do not all come back to one provider at once.
    """
    if consecutive_failures <= 0:
        return now
    # The exponent is bounded before it is used so a long failure streak cannot overflow.
    delay = min(cap_s, base_s * 2.0 ** min(consecutive_failures - 1, 64))
    if rng is not None:
        delay *= 1.0 + 0.1 * rng.random()
    return now + delay
