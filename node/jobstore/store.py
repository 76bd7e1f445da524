"""`JobStore`: the one way a job is created or changes, for both roles.

Each change is one transaction (the moves, and the receipt or voucher that goes with them), and
each new state is published to watchers only once it is durable.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

from node.domain.records import JobRecord, NewJob, SignedReceipt, SignedVoucher
from node.domain.state import JobEvent
from node.jobstore.events import JobEvents
from node.storage import Database
from node.types import Hash32

Before = Callable[[], object]
P = ParamSpec("P")
T = TypeVar("T")


class JobStore:
    """Jobs as stored, with change notifications: create, apply, read, watch."""

    def __init__(self, db: Database, events: JobEvents | None = None) -> None:
        self.db = db
        self.events = events if events is not None else JobEvents()

    async def create(
        self, job: NewJob, *, voucher: SignedVoucher | None = None, before: Before | None = None
    ) -> JobRecord:
        """Store a new job (and the voucher that pays for it, in the same transaction), then publish it.

        `before` runs on the database's thread just before the transaction: a file the job's rows
        refer to is then on disk first, without a trip to a thread of its own.
        """
        record = await self.db.run(_after(before, self.db.jobs.create), job, voucher=voucher)
        self.events.publish(record)
        return record

    async def apply(
        self,
        job_id: Hash32,
        *events: JobEvent,
        known: JobRecord | None = None,
        receipt: SignedReceipt | None = None,
        voucher: SignedVoucher | None = None,
        before: Before | None = None,
        receipt_signs: Hash32 | None = None,
    ) -> JobRecord:
        """Persist `events` (moves in a row, one transaction), then publish each new state.

        `known` is the job as the caller holds it, sparing a read; the write is still guarded by
        its version. `before` is as for `create`; `receipt_signs` as for `JobRepository.apply_many`.
        Returns the job as it now stands.
        """
        records = await self.db.run(
            _after(before, self.db.jobs.apply_many),
            job_id,
            events,
            known=known,
            receipt=receipt,
            voucher=voucher,
            receipt_signs=receipt_signs,
        )
        for record in records:
            self.events.publish(record)
        return records[-1]

    async def get(self, job_id: Hash32) -> JobRecord:
        return await self.db.run(self.db.jobs.get, job_id)

    @contextmanager
    def watch(self, job_id: Hash32) -> Iterator[asyncio.Queue[JobRecord]]:
        """Every record of `job_id` published while the block runs."""
        with self.events.subscribe(job_id) as queue:
            yield queue


def _after(before: Before | None, write: Callable[P, T]) -> Callable[P, T]:
    if before is None:
        return write

    def both(*args: P.args, **kwargs: P.kwargs) -> T:
        before()
        return write(*args, **kwargs)

    return both
