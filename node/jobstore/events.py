"""Job change notifications: the pipeline publishes every persisted job, watchers wake on it."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager

from node.storage import JobRecord
from node.types import Hash32

# A watcher that falls this far behind misses intermediate states, never the latest one.
_QUEUE_BOUND = 256


class JobEvents:
    """Fan-out of persisted job records to whoever watches that job; lives on the event loop."""

    def __init__(self, observe: Callable[[JobRecord], None] | None = None) -> None:
        # Sees every persisted record (the node's metrics count jobs with it).
        self._observe = observe
        self._watchers: defaultdict[Hash32, set[asyncio.Queue[JobRecord]]] = defaultdict(set)

    def publish(self, record: JobRecord) -> None:
        if self._observe is not None:
            self._observe(record)
        for queue in tuple(self._watchers.get(record.job_id, ())):
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(record)

    @contextmanager
    def subscribe(self, job_id: Hash32) -> Iterator[asyncio.Queue[JobRecord]]:
        queue: asyncio.Queue[JobRecord] = asyncio.Queue(maxsize=_QUEUE_BOUND)
        self._watchers[job_id].add(queue)
        try:
            yield queue
        finally:
            watchers = self._watchers.get(job_id)
            if watchers is not None:
                watchers.discard(queue)
                if not watchers:
                    del self._watchers[job_id]


async def records_until_terminal(
    first: JobRecord, queue: asyncio.Queue[JobRecord]
) -> AsyncIterator[JobRecord]:
    """`first`, then each newer record from `queue`, ending after a terminal one."""
    latest = first
    yield latest
    while not latest.status.terminal:
        record = await queue.get()
        if record.version <= latest.version:
            continue
        latest = record
        yield latest
