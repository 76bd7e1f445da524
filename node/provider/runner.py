"""Provider side: run an accepted job in the executor and sign its receipt, persisting each step.

    accepted → running → signed → delivered → paid      (| failed)

The output hash is computed by the executor outside the sandbox; the key that signs the receipt
never reaches a worker.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from node.chain.eip712 import Eip712Domain, sign_receipt
from node.chain.keys import NodeKey
from node.domain.state import Failed, ProviderState, ResultDelivered, ResultSigned, Started
from node.errors import ExecutorError
from node.executor.pool import ExecutorPool
from node.executor.result import ExecutionResult, build_receipt
from node.jobstore.store import JobStore
from node.logging import get_logger
from node.scheduler import ProviderLoad
from node.storage import JobRecord, SignedReceipt
from node.types import Hash32, ResultReceipt

log = get_logger(__name__)

_TIMINGS_KEPT = 10_000
# A job that finishes within this long is recorded as running and signed in one write: a start
# written alongside the run would hold the signed result back behind it.
RUNNING_RECORD_DELAY_S = 0.005


@dataclass(frozen=True, slots=True)
class SignedResult:
    receipt: ResultReceipt
    signature: bytes
    output: bytes
    run_s: float


@dataclass
class Load:
    """Jobs admitted and not yet finished on this provider: at most `slots` run, the rest wait.
    Slots kept for the job of a granted hold (`held`), or for such a job that arrived and has not
    started (`reserved`), are not free either, and the jobs the waiting holds are expected to
    bring (`awaited`) count as queued for the market (node.scheduler.holds).

    Each change is passed to `listeners` as (free slots, jobs queued or awaited): the provider's
    adverts carry them, so clients see its load."""

    slots: int = 1
    active: int = 0
    held: int = 0
    reserved: int = 0
    awaited: int = 0
    unheld_starts: int = 0  # jobs started here so far not in a slot a hold kept for them
    listeners: list[Callable[[int, int], None]] = field(default_factory=list)

    @property
    def running(self) -> int:
        return min(self.active, self.slots)

    @property
    def queued(self) -> int:
        return max(0, self.active - self.slots)

    @property
    def free_slots(self) -> int:
        return max(0, self.slots - self.active - self.held - self.reserved)

    @property
    def backlog(self) -> int:
        """Jobs queued here, and those the waiting holds are expected to bring."""
        return self.queued + self.awaited

    def started(self, *, reserved: bool = False) -> None:
        """A job started (`reserved`: in the slot reserved for it)."""
        if reserved and self.reserved > 0:
            self.reserved -= 1
        else:
            self.unheld_starts += 1
        self.active += 1
        self._changed()

    def reserve(self) -> None:
        """A slot is reserved for a job admitted on a granted hold, until it starts."""
        self.reserved += 1

    def unreserve(self) -> None:
        """The job a slot was reserved for will not start: the slot is free."""
        self.reserved = max(0, self.reserved - 1)
        self._changed()

    def finished(self) -> None:
        self.active = max(0, self.active - 1)
        self._changed()

    def holding(self, held: int, awaited: int) -> None:
        """The slots kept for granted holds and the jobs waiting holds are expected to bring."""
        if (held, awaited) != (self.held, self.awaited):
            self.held, self.awaited = held, awaited
            self._changed()

    def _changed(self) -> None:
        for listener in self.listeners:
            listener(self.free_slots, self.backlog)

    def snapshot(self, *, reserved_for_it: bool = False) -> ProviderLoad:
        """The load as admission sees it; `reserved_for_it`: for the job a slot is reserved for."""
        taken = self.active + self.held + self.reserved - (1 if reserved_for_it else 0)
        return ProviderLoad(running=min(taken, self.slots), queued=max(0, taken - self.slots))


class JobRunner:
    def __init__(
        self,
        store: JobStore,
        pool: ExecutorPool,
        key: NodeKey,
        domain: Eip712Domain,
        *,
        slots: int,
    ) -> None:
        self.store = store
        self.db = store.db
        self.pool = pool
        self.key = key
        self.domain = domain
        self.slots = slots
        self.load = Load(slots=slots)
        self.served = 0
        # Seconds the executor spent on each recent job, for figures (end-to-end minus execution).
        self.run_seconds: OrderedDict[Hash32, float] = OrderedDict()
        # Jobs signed and not yet handed over, as stored, so recording the hand-over reads nothing.
        self._signed: dict[Hash32, JobRecord] = {}

    async def run(
        self,
        record: JobRecord,
        job_input: bytes,
        *,
        timeout_s: float | None = None,
        on_tokens: Callable[[str], None] | None = None,
        stop: asyncio.Event | None = None,
        reserved: bool = False,
    ) -> SignedResult:
        """Run an accepted job (`reserved`: in the slot a granted hold reserved for it); the
        result is signed and recorded as signed before it returns.
        Setting `stop` ends a generation with what it made so far (which is signed).

        Call `delivered()` once the result is handed over. An `ExecutorError` marks the job failed
        and is raised again for the caller to report.
        """
        self.load.started(reserved=reserved)
        try:
            result, running = await self._execute(record, job_input, timeout_s, on_tokens, stop)
        finally:
            self.load.finished()
        receipt = build_receipt(
            job_id=record.job_id,
            model_id=record.model_id,
            input_hash=record.input_hash,
            result=result,
            provider=self.key.address,
        )
        signature = sign_receipt(self.key.private_key, self.domain, receipt)
        moves = (ResultSigned(),) if running.state is ProviderState.RUNNING else (Started(), ResultSigned())
        signed = await self.store.apply(
            record.job_id, *moves, known=running, receipt=SignedReceipt(receipt, signature)
        )
        self._signed[record.job_id] = signed
        while len(self._signed) > _TIMINGS_KEPT:  # results whose stream broke are never handed over
            del self._signed[next(iter(self._signed))]
        self.served += 1
        self.run_seconds[record.job_id] = result.run_s
        while len(self.run_seconds) > _TIMINGS_KEPT:
            self.run_seconds.popitem(last=False)
        log.info("job_served", job_id=record.job_id.hex(), run_ms=round(result.run_s * 1000, 2))
        return SignedResult(receipt, signature, result.output, result.run_s)

    async def _execute(
        self,
        record: JobRecord,
        job_input: bytes,
        timeout_s: float | None,
        on_tokens: Callable[[str], None] | None = None,
        stop: asyncio.Event | None = None,
    ) -> tuple[ExecutionResult, JobRecord]:
        """The execution's result and the job as stored once it ends (running, or still accepted
        when it ended before the start was worth recording)."""
        execution = asyncio.ensure_future(
            self.pool.run(
                record.model_id,
                job_input,
                timeout_s=timeout_s,
                client=record.client,
                on_tokens=on_tokens,
                stop=stop,
            )
        )
        try:
            await asyncio.wait({execution}, timeout=RUNNING_RECORD_DELAY_S)
        except asyncio.CancelledError:
            execution.cancel()
            raise
        # Recording the start overlaps the rest of the run: the signed result is what must be durable.
        started = None
        if not execution.done() and record.state is ProviderState.ACCEPTED:
            started = asyncio.create_task(self.store.apply(record.job_id, Started(), known=record))
        try:
            result = await execution
        except ExecutorError as exc:
            current = record if started is None else await started
            await self.store.apply(record.job_id, Failed(f"execution failed: {exc}"), known=current)
            raise
        finally:
            if started is not None and not started.done():
                # The caller was cancelled: the start's write must not outlive the run. It is one
                # short write on a thread that cancelling would not stop, so it is waited for.
                await asyncio.wait({started})
        return result, record if started is None else await started

    async def took(self, job_id: Hash32) -> bool:
        """Whether this provider ever took the job id. An on-chain id recurs when its requester
        reuses a salt after the job ended; a second receipt for it, with another output, would read
        as equivocation, so each id is signed once."""
        return await self.db.run(self.db.jobs.find, job_id) is not None

    async def delivered(self, job_id: Hash32) -> None:
        """The result left this node (over the overlay or on-chain)."""
        await self.store.apply(job_id, ResultDelivered(), known=self._signed.pop(job_id, None))

    async def undelivered(self, job_id: Hash32, reason: str) -> None:
        """The result will never be handed over (or the run never ended): the job failed."""
        await self.store.apply(job_id, Failed(reason), known=self._signed.pop(job_id, None))
