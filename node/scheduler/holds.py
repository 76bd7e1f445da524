"""Holds: a provider pulls work when a slot frees, instead of clients guessing who is free (pure).

A client that has a voucher job asks a few good providers at once to hold it a slot
(`/gpunode/hold/1`), sending no payment. Each provider queues the holds it is asked for and, each
time one of its slots is free, grants the oldest: the slot is kept for that client for
`grant_ttl_s`. The first provider to grant gets the job (the voucher is signed for it then, so no
voucher ever goes to a provider that would not start the job), and the client drops its other
holds, which frees their place in those queues. A job thus starts on whichever of its providers
frees a slot first (late binding, as in Sparrow), and its waiting happens in the queues of
several providers at once rather than one.

The book bounds what a client can make a provider keep: holds waiting per client, holds waiting
in all, and a granted slot that no job takes is given back after `grant_ttl_s`. A client that
lets a granted slot lapse (an honest one takes it or gives it up at once) loses its other holds
there and is refused holds for `PENALTY_S`. Holds never delay paid work: a job sent without one
is admitted as before, and holds are granted the slots such jobs leave free; nor can such jobs
starve a hold: once the jobs queued when it came, and one more, have started, it is granted
without a free slot and its job queues behind them.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from node.scheduler.admission import Rejected, RejectionCode
from node.types import Hash32

# A granted slot waits this long for its job before it is given to the next hold.
GRANT_TTL_S = 5.0
# Holds waiting at one provider, in all and per client. Each keeps a stream open, and a host
# serves a bounded number of streams at once (node.p2p.host.INBOUND_HANDLER_CREDITS): holds must
# leave most of them to jobs.
MAX_WAITING = 64
MAX_WAITING_PER_CLIENT = 16

# How long a client that let a granted slot lapse is refused holds.
PENALTY_S = 60.0

HoldKey = tuple[str, Hash32]  # (the client's peer id, the job id)


@dataclass(slots=True)
class _Hold:
    client: str
    share: float  # 1 / the number of providers the client asked to hold this job
    # Granted even with no slot free once this many jobs sent without a hold have started here
    # (so that such jobs cannot starve it), its job then queuing behind theirs. None: it waits
    # for a free slot.
    due: int | None = None
    granted_until: float | None = None


class HoldBook:
    """The holds one provider was asked for: waiting in order of arrival, or granted a slot."""

    def __init__(
        self,
        *,
        grant_ttl_s: float = GRANT_TTL_S,
        max_waiting: int = MAX_WAITING,
        max_waiting_per_client: int = MAX_WAITING_PER_CLIENT,
    ) -> None:
        if grant_ttl_s <= 0 or max_waiting < 1 or max_waiting_per_client < 1:
            raise ValueError("grant_ttl_s, max_waiting and max_waiting_per_client must be positive")
        self.grant_ttl_s = grant_ttl_s
        self.max_waiting = max_waiting
        self.max_waiting_per_client = max_waiting_per_client
        self._waiting: OrderedDict[HoldKey, _Hold] = OrderedDict()
        self._granted: dict[HoldKey, _Hold] = {}
        self._per_client: dict[str, int] = {}
        self._refused_until: dict[str, float] = {}

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def granted(self) -> int:
        """Slots kept for a job that has not arrived yet."""
        return len(self._granted)

    @property
    def expected_jobs(self) -> float:
        """The jobs the waiting holds are expected to bring here: each client asked several
        providers, and its job goes to one of them."""
        return sum(h.share for h in self._waiting.values())

    def is_waiting(self, key: HoldKey) -> bool:
        return key in self._waiting

    def is_granted(self, key: HoldKey) -> bool:
        return key in self._granted

    def awaited(self, slots: int) -> int:
        """The jobs the waiting holds are expected to bring, as the market is told: at most one
        per slot, since holds cost nothing to ask and a rival's must not make a provider look
        swamped."""
        return min(round(self.expected_jobs), slots)

    def ask(
        self, key: HoldKey, *, copies: int = 1, now: float = 0.0, due: int | None = None
    ) -> int | Rejected:
        """Queue a hold for the job; its position among the waiting ones (0: first in line), or
        why it is refused. `due`: see `grant`."""
        client = key[0]
        refused_until = self._refused_until.get(client, 0.0)
        if refused_until > now:
            return Rejected(
                RejectionCode.HOLD_LIMIT,
                f"a slot held for this client went unused; holds are refused for {refused_until - now:.0f} s",
            )
        if key in self._waiting or key in self._granted:
            return Rejected(RejectionCode.DUPLICATE, "this job already holds a place here")
        if len(self._waiting) >= self.max_waiting:
            return Rejected(RejectionCode.QUEUE_FULL, f"{len(self._waiting)} holds are waiting here")
        if self._per_client.get(client, 0) >= self.max_waiting_per_client:
            return Rejected(
                RejectionCode.HOLD_LIMIT,
                f"this client holds {self.max_waiting_per_client} places here already; "
                "it may ask again once one is granted or given up",
            )
        self._waiting[key] = _Hold(client, 1 / max(1, copies), due)
        self._per_client[client] = self._per_client.get(client, 0) + 1
        return len(self._waiting) - 1

    def grant(self, free_slots: int, now: float, *, started: int = 0) -> list[HoldKey]:
        """The waiting holds that get the `free_slots` slots free now, oldest first; each slot is
        kept for its job until `now + grant_ttl_s`. With `started` jobs sent without a hold started
        here so far, a hold first in line whose `due` has come is granted without a free slot:
        such jobs, sent after it came, would otherwise keep every slot busy and starve it."""
        granted = []
        while self._waiting:
            key, hold = next(iter(self._waiting.items()))
            if free_slots > 0:
                free_slots -= 1
            elif hold.due is None or hold.due > started:
                break
            del self._waiting[key]
            self._left(hold.client)
            hold.granted_until = now + self.grant_ttl_s
            self._granted[key] = hold
            granted.append(key)
        return granted

    def take(self, key: HoldKey) -> bool:
        """The held job arrived: the slot kept for it is its own now. False if none was kept."""
        return self._granted.pop(key, None) is not None

    def cancel(self, key: HoldKey) -> bool:
        """The client gave the hold up (or went away); True when that frees a granted slot."""
        hold = self._waiting.pop(key, None)
        if hold is not None:
            self._left(hold.client)
            return False
        return self._granted.pop(key, None) is not None

    def lapse(self, key: HoldKey, now: float) -> list[HoldKey]:
        """The slot granted to `key` went unused for its whole time: given back, and its client
        refused holds for `PENALTY_S`; returns that client's waiting holds, dropped."""
        self._granted.pop(key, None)
        client = key[0]
        self._refused_until[client] = now + PENALTY_S
        for stale in [c for c, until in self._refused_until.items() if until <= now]:
            del self._refused_until[stale]
        dropped = [k for k, h in self._waiting.items() if h.client == client]
        for dropped_key in dropped:
            del self._waiting[dropped_key]
        self._per_client.pop(client, None)
        return dropped

    def _left(self, client: str) -> None:
        count = self._per_client.get(client, 0) - 1
        if count > 0:
            self._per_client[client] = count
        else:
            self._per_client.pop(client, None)
