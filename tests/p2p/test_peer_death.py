"""A provider process killed in the middle of a job: the client learns at once, without a hang."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from test_job_protocol import make_request

from node.errors import P2PError, PeerTimeout
from node.p2p.job_messages import JobAccepted, JobProgress
from node.p2p.job_protocol import JobClient

if TYPE_CHECKING:
    from conftest import HostsFactory

PROVIDER = Path(__file__).with_name("provider_process.py")
REPOSITORY = Path(__file__).resolve().parents[2]


@pytest.mark.integration
async def test_client_learns_when_provider_is_killed_mid_stream(running_hosts: HostsFactory) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(PROVIDER),
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPOSITORY)},
    )
    try:
        assert process.stdout is not None
        addr = (await asyncio.wait_for(process.stdout.readline(), 60)).decode().strip()
        async with running_hosts(1) as (client,):
            peer = await client.connect(addr)
            progressed = asyncio.Event()

            def on_progress(event: JobAccepted | JobProgress) -> None:
                if isinstance(event, JobProgress):
                    progressed.set()

            jobs = JobClient(client, read_timeout_s=10.0)
            job = asyncio.create_task(jobs.request_job(peer, make_request(), on_progress))
            await asyncio.wait_for(progressed.wait(), 20)
            process.send_signal(signal.SIGKILL)
            killed_at = time.monotonic()
            with pytest.raises(P2PError) as failure:
                await job
            assert not isinstance(failure.value, PeerTimeout), "the death was noticed only by a timeout"
            assert time.monotonic() - killed_at < 5
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()
