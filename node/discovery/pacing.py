"""When a provider announces its advert again because its load changed (pure: clocks passed in).

A provider's room is its free slots, or minus its queue when it has none. It is published on a
significant change: the provider turning busy or free again, or its room moving by a quarter of
its slots (at least one job). Every advert spends a token of a bucket that stays
below what receivers accept from one peer (`AdvertValidator`: 0.5/s, burst 5), so load adverts
are never dropped as a flood; changes made while the bucket refills are coalesced into one advert
that carries the latest value.
"""

from __future__ import annotations

import math

# Below the receivers' limit per source, leaving room for the periodic refresh.
PUBLISH_PER_S = 0.4
PUBLISH_BURST = 3.0
# A change of this share of the slots (at least one slot) is worth an advert.
SIGNIFICANT_SHARE = 0.25


def significant(published: int, current: int, slots: int) -> bool:
    """Whether the provider's room (free slots, less the jobs queued when there are none)
    moving from `published` to `current` is worth telling the market."""
    if (published > 0) != (current > 0):
        return True
    return abs(current - published) >= max(1, math.ceil(slots * SIGNIFICANT_SHARE))


class LoadPublication:
    """The free slots last announced and a token bucket that paces announcements."""

    def __init__(self, *, per_s: float = PUBLISH_PER_S, burst: float = PUBLISH_BURST) -> None:
        if per_s <= 0 or burst < 1:
            raise ValueError(f"per_s must be > 0 and burst >= 1, got {per_s} and {burst}")
        self.per_s = per_s
        self.burst = burst
        self.slots = 1
        self.room: int | None = None
        self._tokens = burst
        self._updated: float | None = None

    def _refill(self, now: float) -> float:
        if self._updated is not None:
            self._tokens = min(self.burst, self._tokens + max(0.0, now - self._updated) * self.per_s)
        self._updated = now
        return self._tokens

    def due(self, room: int, now: float) -> float | None:
        """When `room` (free slots, or minus the queue) should be announced: `now`, later (once a
        token is back), or None when what was announced last still tells the market enough."""
        if self.room is None or not significant(self.room, room, self.slots):
            return None
        tokens = self._refill(now)
        return now if tokens >= 1 else now + (1 - tokens) / self.per_s

    def announced(self, room: int, now: float) -> None:
        """An advert carrying `room` went out at `now` (a refresh counts too). The most free
        slots ever announced stand for the provider's slots: it starts idle."""
        self._tokens = max(0.0, self._refill(now) - 1)
        self.room = room
        self.slots = max(self.slots, room)
