"""A provider in its own process, so a test can SIGKILL it mid-job.

Run as `python provider_process.py`; it prints its dialable address on one line, then serves
`/gpunode/job/1` with a handler that accepts, reports progress and never finishes.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator

from node.config import P2PSettings
from node.logging import configure_logging
from node.p2p.host import P2PHost
from node.p2p.job_messages import JobAccepted, JobProgress, JobRequest, JobResponse
from node.p2p.job_protocol import serve_jobs


async def never_finishes(peer: str, request: JobRequest) -> AsyncIterator[JobResponse]:
    yield JobAccepted()
    while True:
        yield JobProgress("running", 0.5)
        await asyncio.sleep(0.2)


async def main() -> None:
    # stdout carries the address line; logs go to stderr.
    configure_logging("WARNING")
    async with P2PHost.start(os.urandom(32), P2PSettings()) as host:
        serve_jobs(host, never_finishes)
        print(host.addrs[0], flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
