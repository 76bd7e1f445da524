"""Faults on a real anvil chain: a provider process SIGKILLed mid-job, the RPC node killed and
restarted. The job is reassigned and nothing is paid twice; the node rides out the outage."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from e2e_support import (
    PRICE_WEI,
    Devnet,
    deploy,
    deployed,
    make_builtin_model,
    mlp_input,
    register,
)

from node.app import Node
from node.chain.anvil import AnvilProcess
from node.domain.service import JobSpec
from node.domain.state import AttemptOutcome, JobState
from node.errors import ChainError
from node.types import sha256

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HERE = Path(__file__).parent
# A model slow enough on one CPU thread (a few seconds a job) to be killed while it runs.
SLOW_MODEL = {"in_features": 64, "hidden": 2048, "out_features": 8, "layers": 6}
SLOW_ROWS = 3000


@pytest.fixture
async def anvil() -> AsyncIterator[AnvilProcess]:
    async with AnvilProcess() as process:
        yield process


async def start_provider_process(
    devnet: Devnet, index: int, bootstrap: list[str], **overrides: object
) -> asyncio.subprocess.Process:
    settings = devnet.provider_settings(index, bootstrap=bootstrap)
    document = settings.model_dump(mode="json")
    document["provider"].update(overrides)
    document["executor"]["max_input_bytes"] = 4 * 2**20
    config = devnet.root / f"provider{index}.json"
    config.write_text(json.dumps({"settings": document, "key": devnet.keys[1 + index].private_key.hex()}))
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(HERE / "provider_node.py"),
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=(devnet.root / f"provider{index}.log").open("wb"),
    )
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), 120)
    if not line.startswith(b"/ip4/"):
        await process.wait()
        log = (devnet.root / f"provider{index}.log").read_text()[-3000:]
        raise AssertionError(f"provider process did not start (exit {process.returncode}): {log}")
    return process


async def test_a_provider_killed_mid_job_is_replaced(anvil: AnvilProcess, tmp_path: Path) -> None:
    async with deployed(tmp_path, rpc_url=anvil.rpc_url) as devnet:
        devnet.model_dir = tmp_path / "slow-model"
        devnet.model_id = await asyncio.to_thread(
            make_builtin_model, devnet.model_dir, "mlp", "slow-mlp", **SLOW_MODEL
        )
        client_settings = devnet.settings("client", provider=False)
        client_settings.executor.max_input_bytes = 4 * 2**20
        client = Node(client_settings, key=devnet.keys[8], serve_api=False)
        async with client.running():
            await client.client_jobs.deposit(10**17)
            bootstrap = [client.host.addrs[0]]
            for index in (0, 1):
                await register(devnet, devnet.keys[1 + index])
            # The doomed provider is cheaper, so the scheduler picks it first.
            doomed = await start_provider_process(devnet, 0, bootstrap, price_per_job_wei=PRICE_WEI // 2)
            try:
                survivor_settings = devnet.provider_settings(1, bootstrap=bootstrap)
                survivor_settings.executor.max_input_bytes = 4 * 2**20
                survivor = devnet.provider_node(1, bootstrap=bootstrap, settings=survivor_settings)
                async with survivor.running():
                    await client.discovery.directory.wait_for(lambda d: len(d) >= 2, timeout_s=60)
                    jobs = client.services.jobs
                    view = await jobs.submit(
                        JobSpec(
                            model_id=devnet.model_id,
                            input=mlp_input(1, rows=SLOW_ROWS),
                            max_price_wei=PRICE_WEI,
                        )
                    )
                    async for update in jobs.watch(view.job_id):
                        if update.state is JobState.RUNNING and doomed.returncode is None:
                            assert update.provider == devnet.keys[1].address, update.attempts
                            doomed.kill()
                            await doomed.wait()
                        if update.terminal:
                            break
                    final = await jobs.get(view.job_id)
                    assert final.state is JobState.SETTLED, final.error
                    first, second = final.attempts
                    assert first.provider == devnet.keys[1].address
                    assert first.outcome in (AttemptOutcome.DIED, AttemptOutcome.TIMED_OUT)
                    assert second.provider == devnet.keys[2].address
                    assert second.outcome is AttemptOutcome.COMPLETED
                    assert final.receipt is not None
                    assert final.output is not None
                    assert final.receipt.receipt.output_hash == sha256(final.output)
                    # The survivor is paid its price once; the dead provider's voucher was never topped up.
                    assert survivor.services.provider is not None
                    report = await survivor.services.provider.settle()
                    assert report.redeemed_wei == PRICE_WEI
                    assert await devnet.market.paid(client.key.address, devnet.keys[2].address) == PRICE_WEI
                    assert await devnet.market.paid(client.key.address, devnet.keys[1].address) == 0
            finally:
                if doomed.returncode is None:
                    doomed.kill()
                await doomed.wait()


async def test_the_node_rides_out_the_rpc_going_away(anvil: AnvilProcess, tmp_path: Path) -> None:
    async with deployed(tmp_path, rpc_url=anvil.rpc_url) as devnet:
        client = devnet.client_node()
        async with client.running():
            await client.client_jobs.deposit(10**16)
            await register(devnet, devnet.keys[1])
            provider = devnet.provider_node(0, bootstrap=[client.host.addrs[0]])
            async with provider.running():
                await client.discovery.directory.wait_for(lambda d: len(d) >= 1, timeout_s=60)
                await anvil.kill()
                with pytest.raises(ChainError):
                    await client.client_jobs.deposit(10**16)
                assert client.ready.is_set()
                assert provider.ready.is_set()
                # Anvil comes back empty on the same port; the same deployer puts the contracts
                # back at the same addresses, and the nodes carry on against them.
                await anvil.start()
                redeployed = await deploy(devnet.chain)
                assert redeployed.market.address == devnet.market.address
                await register(devnet, devnet.keys[1])
                await client.client_jobs.deposit(10**16)
                view = await client.services.jobs.submit(
                    JobSpec(model_id=devnet.model_id, input=mlp_input(4))
                )
                async for update in client.services.jobs.watch(view.job_id):
                    if update.terminal:
                        break
                final = await client.services.jobs.get(view.job_id)
                assert final.state is JobState.SETTLED, final.error
                assert provider.services.provider is not None
                report = await provider.services.provider.settle()
                assert report.redeemed_wei == PRICE_WEI
