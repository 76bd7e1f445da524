"""The provider's side of holds: the desk that queues clients' holds and grants them as slots free
(node.scheduler.holds, over `/gpunode/hold/1`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

from node.logging import get_logger
from node.p2p.job_messages import HoldQueued, HoldReady, HoldRequest, HoldResponse, JobRejected
from node.provider.runner import Load
from node.scheduler import (
    AdmissionPolicy,
    HoldBook,
    HoldKey,
    JobOffer,
    ProviderLoad,
    Rejected,
    RejectionCode,
    admit,
)
from node.types import Hash32

log = get_logger(__name__)


class HoldDesk:
    """Grants holds the slots of `load` as they free, oldest first; `take` hands a granted slot to
    the job that arrives for it."""

    def __init__(
        self,
        load: Load,
        policy: Callable[[], AdmissionPolicy],
        *,
        refuse: Callable[[Hash32], JobRejected | None] = lambda _model_id: None,
        book: HoldBook | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.load = load
        self.policy = policy
        self.refuse = refuse  # why a model's jobs are refused whatever the price and load
        self.book = book if book is not None else HoldBook()
        self.clock = clock
        self._answers: dict[HoldKey, _Answer] = {}
        self._granting = False
        load.listeners.append(lambda _free, _backlog: self._grant())

    async def handle(self, peer: str, request: HoldRequest) -> AsyncIterator[HoldResponse]:
        """The answers to one hold: queued (when no slot is free), then ready, or refused. After
        ready it waits while the slot is kept; closing it (the client left or gave the hold up, or
        the slot's time ran out) gives the slot back unless the job took it."""
        # Only what a job would be refused for whatever the load: the model (one to fetch beyond
        # what this provider takes included), the price, the size.
        refused = self.refuse(request.model_id)
        if refused is not None:
            yield refused
            return
        checked = admit(
            JobOffer(request.model_id, request.max_price_wei, request.input_bytes),
            ProviderLoad(),
            self.policy(),
        )
        if isinstance(checked, Rejected):
            yield JobRejected(checked.code.value, checked.reason)
            return
        key = (peer, request.job_id)
        load = self.load
        # It waits for a free slot, but it is due (granted without one) once the jobs queued here
        # now have started and one more sent without a hold: holds never delay paid work, and
        # paid work overtakes a hold at most once.
        due = load.unheld_starts + load.queued + 1
        asked = self.book.ask(key, copies=request.copies, now=self.clock(), due=due)
        if isinstance(asked, Rejected):
            yield JobRejected(asked.code.value, asked.reason)
            return
        answer = self._answers[key] = _Answer()
        lapsed = False
        try:
            self._grant()
            if not answer.event.is_set():
                self._publish()
                yield HoldQueued(asked)
                await answer.event.wait()
            if answer.dropped:
                yield JobRejected(
                    RejectionCode.HOLD_LIMIT.value,
                    "a slot held for this client went unused: its holds are dropped",
                )
                return
            yield HoldReady(int(self.book.grant_ttl_s * 1000))
            await asyncio.sleep(self.book.grant_ttl_s)
            lapsed = True
        finally:
            del self._answers[key]
            if lapsed and self.book.is_granted(key):
                log.warning("hold_slot_lapsed", job_id=request.job_id.hex(), peer=peer)
                for dropped in self.book.lapse(key, self.clock()):
                    self._answers[dropped].drop()
            elif self.book.cancel(key):
                log.info("hold_slot_given_back", job_id=request.job_id.hex(), peer=peer)
            self._grant()

    def take(self, peer: str, job_id: Hash32) -> bool:
        """The job of a granted hold arrived: the slot kept for it is reserved for it until it
        starts (`Load.started(reserved=True)`) or is refused (`Load.unreserve()`)."""
        if not self.book.take((peer, job_id)):
            return False
        self.load.reserve()
        self._publish()
        return True

    def _grant(self) -> None:
        if self._granting:
            return  # a change made below
        self._granting = True
        try:
            load = self.load
            # Free slots as the book has them now (`load.held` is told after the grant).
            free = load.slots - load.active - load.reserved - self.book.granted
            for key in self.book.grant(free, self.clock(), started=load.unheld_starts):
                answer = self._answers.get(key)
                if answer is not None:
                    answer.event.set()
            self._publish()
        finally:
            self._granting = False

    def _publish(self) -> None:
        self.load.holding(self.book.granted, self.book.awaited(self.load.slots))


class _Answer:
    """What a waiting hold is told: granted, or dropped with its client's other holds."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.dropped = False

    def drop(self) -> None:
        self.dropped = True
        self.event.set()
