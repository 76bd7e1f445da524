"""Job watchers wake on every persisted record of their job and stop after a terminal one."""

from __future__ import annotations

import asyncio
import dataclasses

from node.domain.state import JobState, JobStatus, PaymentPath, Role
from node.jobstore.events import JobEvents, records_until_terminal
from node.storage import JobRecord
from node.types import Hash32

JOB = Hash32(b"\x01" * 32)


def at(state: JobState, version: int, job_id: Hash32 = JOB) -> JobRecord:
    status = dataclasses.replace(JobStatus.initial(Role.CLIENT, PaymentPath.VOUCHER), state=state)
    return JobRecord(job_id, JOB, JOB, 1, None, None, status, version, 0.0, 0.0)


async def test_can_watch_a_job_until_it_is_terminal() -> None:
    events = JobEvents()
    seen: list[JobState] = []

    async def watch() -> None:
        with events.subscribe(JOB) as queue:
            ready.set()
            async for record in records_until_terminal(at(JobState.SUBMITTED, 1), queue):
                seen.append(record.state)

    ready = asyncio.Event()
    watcher = asyncio.create_task(watch())
    await ready.wait()
    events.publish(at(JobState.MATCHED, 2))
    events.publish(at(JobState.MATCHED, 2))  # a duplicate is skipped
    events.publish(at(JobState.PAID, 3, Hash32(b"\x02" * 32)))  # another job's record is not seen
    events.publish(at(JobState.CANCELLED, 3))
    await asyncio.wait_for(watcher, 5)
    assert seen == [JobState.SUBMITTED, JobState.MATCHED, JobState.CANCELLED]
    assert not events._watchers  # the subscription is gone once the watcher is
