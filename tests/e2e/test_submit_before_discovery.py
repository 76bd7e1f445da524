"""A job submitted as soon as a client node starts, before it has heard any provider: the node
waits (within the job's timeout) for a provider's advert instead of failing at once, and when
none comes it fails saying what it heard. Real nodes: libp2p on 127.0.0.1, the embedded chain,
the sandboxed executor."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from e2e_support import Devnet, deployed, mlp_input, register
from typer.testing import CliRunner

from node.app import Node
from node.cli.main import _register_groups, app
from node.config import ApiSettings
from node.domain.service import JobSpec, JobView
from node.domain.state import JobState
from node.errors import SchedulerError
from node.executor.errors import UnknownModel

pytestmark = [pytest.mark.integration]

_register_groups()

_DONE = {JobState.VERIFIED, JobState.SETTLED, JobState.FAILED}


def client_node(devnet: Devnet, *, discovery_wait_s: float, serve_api: bool = False) -> Node:
    settings = devnet.place.settings("client", provider=False, api=ApiSettings(listen="127.0.0.1:0"))
    settings.client.discovery_wait_s = discovery_wait_s
    return Node(settings, key=devnet.keys[8], shared_chain=devnet.chain, serve_api=serve_api)


async def finished(client: Node, job_id: str) -> JobView:
    views: AsyncIterator[JobView] = client.services.jobs.watch(job_id)
    async with asyncio.timeout(60):
        async for view in views:
            if view.state in _DONE:
                return view
    raise AssertionError(f"job {job_id} ended without finishing")


async def test_can_submit_before_the_provider_is_heard(tmp_path: Path) -> None:
    async with deployed(tmp_path) as devnet, AsyncExitStack() as stack:
        # Long enough for the provider's sandbox to come up on a busy machine.
        client = await stack.enter_async_context(client_node(devnet, discovery_wait_s=60).running())
        await client.client_jobs.deposit(10**17)
        await register(devnet, devnet.keys[1])
        jobs = client.services.jobs
        assert len(client.discovery.directory) == 0
        submitting = asyncio.create_task(jobs.submit(JobSpec(model_id=devnet.model_id, input=mlp_input(3))))
        # The provider comes up a second later; meanwhile the submit waits for it.
        await asyncio.sleep(1.0)
        assert not submitting.done()
        bootstrap = [client.host.addrs[0]]
        await stack.enter_async_context(devnet.provider_node(0, bootstrap=bootstrap).running())
        view = await submitting
        final = await finished(client, view.job_id)
        assert final.state is not JobState.FAILED, final.error
        assert final.provider == devnet.keys[1].address
        # Once a provider is heard, one that cannot take the job is refused at once, saying why.
        started = time.monotonic()
        with pytest.raises(SchedulerError, match="asks more than the budget of 1 wei"):
            await jobs.submit(JobSpec(model_id=devnet.model_id, input=mlp_input(4), max_price_wei=1))
        assert time.monotonic() - started < 5


async def test_cannot_submit_when_no_provider_is_ever_heard(tmp_path: Path) -> None:
    async with deployed(tmp_path) as devnet, AsyncExitStack() as stack:
        node = client_node(devnet, discovery_wait_s=60, serve_api=True)
        client = await stack.enter_async_context(node.running())
        jobs = client.services.jobs
        before = await jobs.list()
        started = time.monotonic()
        # The job's timeout bounds the wait.
        with pytest.raises(
            UnknownModel, match=r"heard no provider's advert, after waiting 2\.\d s"
        ) as caught:
            await jobs.submit(JobSpec(model_id=devnet.model_id, input=mlp_input(5), timeout_s=2.0))
        assert 2.0 <= time.monotonic() - started < 10
        assert "p2p.bootstrap" in str(caught.value.hint)
        assert await jobs.list() == before
        # The command line says why it failed, and how long it waited.
        request = tmp_path / "input.safetensors"
        request.write_bytes(mlp_input(6))
        args = ["job", "submit", devnet.model_id, str(request), "--timeout", "2", "--api", client.api.address]
        result = await asyncio.to_thread(CliRunner().invoke, app, args)
        assert result.exit_code == 1, result.output
        assert "heard no provider's advert, after waiting" in result.stderr
        assert await jobs.list() == before
