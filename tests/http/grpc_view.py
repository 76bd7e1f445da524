"""The client node's jobs as its gRPC API shows them (as `gpunode job get/list` do), for tests
that check what an HTTP request left behind."""

from __future__ import annotations

import asyncio

from node.api.client import ApiClient
from node.domain.service import JobView


def job_of(api: str, job_id: str) -> JobView:
    async def get() -> JobView:
        async with await ApiClient.connect(api) as client:
            return await client.get_job(job_id)

    return asyncio.run(get())


def jobs_of(api: str) -> tuple[JobView, ...]:
    async def listed() -> tuple[JobView, ...]:
        async with await ApiClient.connect(api) as client:
            return await client.list_jobs()

    return asyncio.run(listed())


def until_terminal(api: str, job_id: str, timeout_s: float = 120.0) -> JobView:
    """The job once it ended (settled, failed, cancelled, refunded); fails the test after `timeout_s`."""

    async def watched() -> JobView:
        async with await ApiClient.connect(api) as client, asyncio.timeout(timeout_s):
            view = await client.get_job(job_id, with_output=False)
            async for view in client.watch_job(job_id, omit_output=True):
                if view.terminal:
                    break
            return view

    return asyncio.run(watched())
