"""Jury duty with real parts: staked provider keys on the embedded chain, the real DisputeCourt,
one real sandboxed executor they share, outputs compared within the model's manifest tolerance."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load, save

from node.chain.client import ChainClient
from node.chain.deploy import Deployment, deploy_contracts
from node.chain.eip712 import sign_receipt
from node.chain.follower import EventFollower, JsonCursorStore
from node.chain.keys import NodeKey
from node.chain.market import JobRequested, JobStatus
from node.config import ChainSettings, ExecutorSettings
from node.devnet.marketplace import make_builtin_model
from node.domain import disputes
from node.domain.disputes import Verdict
from node.executor.pool import ExecutorPool
from node.executor.store import ModelStore
from node.provider.jury import (
    JuryDuty,
    JuryService,
    chain_evidence,
    manifest_tolerance,
    store_has_model,
)
from node.types import Address, Hash32, ResultReceipt, sha256

pytestmark = [pytest.mark.slow]

MIN_STAKE = 10**18
PRICE = 10**15
JURORS = 8


@dataclass
class Court:
    client: ChainClient
    deployment: Deployment
    pool: ExecutorPool
    model_id: str
    jurors: list[NodeKey]
    provider: NodeKey
    duties: dict[str, JuryDuty]


async def fund_and_register(client: ChainClient, deployment: Deployment, key: NodeKey) -> None:
    await client.transfer(key.address, 2 * MIN_STAKE, sender=client.dev_accounts()[0])
    peer_id = bytes.fromhex("0025") + key.public_key_compressed + bytes(2)
    await deployment.registry.register(peer_id, sha256(b"meta"), stake=MIN_STAKE, sender=key.account)


@pytest.fixture
async def court(tmp_path: Path) -> AsyncIterator[Court]:
    client = await ChainClient.connect(ChainSettings(rpc_url="embedded", poll_interval_s=0.05))
    deployer = client.dev_accounts()[0]
    deployment = await deploy_contracts(
        client,
        deployer,
        min_stake=MIN_STAKE,
        unstake_cooldown_s=7_200,
        challenge_window_s=600,
        withdrawal_delay_s=1_800,
    )
    store = ModelStore(tmp_path / "store", capacity_bytes=2**30)
    model_id = make_builtin_model(tmp_path / "mlp")
    store.import_dir(tmp_path / "mlp")
    settings = ExecutorSettings.model_validate({"model_dir": tmp_path / "store", "job_timeout_s": 60.0})
    jurors = [NodeKey.generate() for _ in range(JURORS)]
    provider = NodeKey.generate()
    for key in [*jurors, provider]:
        await fund_and_register(client, deployment, key)
    try:
        async with ExecutorPool(settings, store) as pool:
            tolerates = manifest_tolerance(store)
            duties = {
                key.address: JuryDuty(
                    deployment.court,
                    key,
                    pool,
                    chain_evidence(deployment.market),
                    tolerates,
                    has_model=store_has_model(store),
                    follower=EventFollower(
                        client,
                        deployment.court.contract,
                        name="jury-duty",
                        cursors=JsonCursorStore(tmp_path / key.address / "cursors.json"),
                        events=("JurorDrawn",),
                        start_block=await client.block_number(),
                        poll_interval_s=0.05,
                    ),
                    poll_interval_s=0.05,
                )
                for key in [*jurors, provider]
            }
            async with asyncio.TaskGroup() as group:
                following = [group.create_task(duty.run()) for duty in duties.values()]
                await asyncio.gather(*(duty.ready.wait() for duty in duties.values()))
                yield Court(client, deployment, pool, model_id, jurors, provider, duties)
                for task in following:
                    task.cancel()
    finally:
        await client.close()


def mlp_input(seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    return bytes(save({"input": rng.standard_normal((2, 64), dtype=np.float32)}))


async def answered(
    court: Court, output: bytes, *, profile: Hash32
) -> tuple[JobRequested, ResultReceipt, bytes]:
    """An on-chain job, with input and output in the logs, answered by the provider with `output`."""
    market = court.deployment.market
    requester = court.client.dev_accounts()[3]
    deadline = int(await court.client.chain_time()) + 3_600
    job = await market.request_job(
        bytes.fromhex(court.model_id),
        price=PRICE,
        deadline=deadline,
        input=mlp_input(),
        output_on_chain=True,
        sender=requester,
    )
    await market.claim_job(job.job_id, sender=court.provider.account)
    receipt = ResultReceipt(
        job_id=job.terms.job_id,
        model_id=job.terms.model_id,
        input_hash=job.terms.input_hash,
        output_hash=sha256(output),
        profile_hash=profile,
        provider=court.provider.address,
    )
    signature = sign_receipt(court.provider.private_key, market.domain(), receipt)
    await market.submit_result(job.terms, receipt, signature, output=output, sender=requester)
    return job, receipt, signature


async def jury_serves(
    court: Court, receipt: ResultReceipt, signature: bytes
) -> tuple[Hash32, list[JuryService]]:
    """The challenger opens a dispute; the jury is drawn; every drawn node sees its draw in the
    court's events and serves on its own."""
    challenger = court.client.dev_accounts()[3]
    dc = court.deployment.court
    opened = await dc.open_dispute(receipt, signature, bond=await dc.bond(), sender=challenger)
    await court.client.mine(disputes.DRAW_DELAY_BLOCKS + 1)
    drawn = await dc.draw_jury(opened.dispute_id, sender=court.client.dev_accounts()[5])
    assert len(drawn.jurors) == disputes.JURY_SIZE
    served = await asyncio.wait_for(
        asyncio.gather(*(court.duties[juror].wait_served(opened.dispute_id) for juror in drawn.jurors)), 120
    )
    return opened.dispute_id, list(served)


async def test_can_slash_a_provider_that_returned_a_wrong_output(court: Court) -> None:
    # Attacker: the provider skips the model and returns zeros, signed, under a profile of its own.
    zeros = bytes(save({"output": np.zeros((2, 8), dtype=np.float32)}))
    job, receipt, signature = await answered(court, zeros, profile=sha256(b"some other device"))
    _, served = await jury_serves(court, receipt, signature)
    assert {s.verdict for s in served} == {Verdict.PROVIDER_WRONG}
    assert all(s.vote is not None and not s.vote.acceptable for s in served)
    # Every juror did the work and was paid for it; the provider lost its stake.
    assert sum(s.paid for s in served) > 0
    assert all(s.paid > 0 for s in served)
    assert (await court.deployment.registry.provider(court.provider.address)).stake == 0
    assert (await court.deployment.market.job(job.job_id)).status is JobStatus.DISPUTED


async def test_cannot_slash_an_honest_provider_whose_output_differs_within_tolerance(court: Court) -> None:
    honest = await court.pool.run(court.model_id, mlp_input())
    # Another thread count or device: the same values up to rounding, a different profile and hash.
    tensors = load(honest.output)
    nudged = bytes(save({name: t + np.float32(1e-6) * np.sign(t) for name, t in tensors.items()}))
    assert nudged != honest.output
    _, receipt, signature = await answered(court, nudged, profile=sha256(b"another thread count"))
    _, served = await jury_serves(court, receipt, signature)
    assert {s.verdict for s in served} == {Verdict.PROVIDER_RIGHT}
    assert (await court.deployment.registry.provider(court.provider.address)).stake == MIN_STAKE
    # The frivolous challenger lost its bond; the provider got a share of it.
    assert await court.deployment.court.withdrawable(court.provider.address) > 0


async def test_cannot_judge_ones_own_result(court: Court) -> None:
    zeros = bytes(save({"output": np.zeros((2, 8), dtype=np.float32)}))
    _, receipt, signature = await answered(court, zeros, profile=sha256(b"x"))
    dc = court.deployment.court
    opened = await dc.open_dispute(
        receipt, signature, bond=await dc.bond(), sender=court.client.dev_accounts()[3]
    )
    # Even if the chain named it, the provider's own node refuses to sit on its dispute.
    started = time.monotonic()
    refused = await court.duties[court.provider.address].serve(opened.dispute_id)
    assert refused.refused == "the disputed result is this node's own"
    assert refused.vote is None
    assert time.monotonic() - started < 30
    ballot = await dc.ballot(opened.dispute_id, court.provider.address)
    assert not ballot.committed
    assert Address(opened.provider) == court.provider.address
