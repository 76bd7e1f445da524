"""A cheater caught by spot checks is disputed on chain and slashed by a jury of real provider
nodes (libp2p on 127.0.0.1, the sandboxed executor, the embedded chain), which are paid for it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import numpy as np
import pytest
from e2e_support import PRICE_WEI, Devnet, mlp_input, running_devnet, serve_cheaply
from safetensors.numpy import load, save

from node.chain.eip712 import sign_receipt
from node.chain.keys import NodeKey
from node.chain.market import voucher_job_id
from node.domain.service import DisputeView, JobSpec, JobView
from node.domain.state import JobState
from node.p2p.job_messages import JobAccepted, JobRequest, JobResponse, JobResult, VoucherPayment
from node.scheduler.spot import Verdict
from node.settlement.disputes import DisputeDesk
from node.types import Address, Hash32, ResultReceipt, Voucher, sha256

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HONEST = 5


def paid_then_lying(key: NodeKey, devnet: Devnet) -> object:
    """A provider that is not a node: it redeems each voucher it gets at once, then answers with
    zeros, signed by its own key under a profile of its own."""
    domain = devnet.market.domain()

    async def handle(peer: str, request: JobRequest) -> AsyncIterator[JobResponse]:
        yield JobAccepted()
        assert isinstance(request.input, bytes)
        assert isinstance(request.payment, VoucherPayment)
        payment = request.payment
        voucher = Voucher(
            client=payment.client, provider=payment.provider, cumulative_amount=payment.cumulative_amount
        )
        await devnet.market.redeem_vouchers([(voucher, payment.signature)], sender=key.account)
        rows = load(request.input)["input"].shape[0]
        output = bytes(save({"output": np.zeros((rows, 16), dtype=np.float32)}))
        receipt = ResultReceipt(
            job_id=voucher_job_id(payment.client, request.job_id),
            model_id=request.model_id,
            input_hash=sha256(request.input),
            output_hash=sha256(output),
            profile_hash=sha256(b"a device of its own"),
            provider=key.address,
        )
        yield JobResult(receipt, sign_receipt(key.private_key, domain, receipt), output)

    return handle


async def finished(devnet: Devnet, spec: JobSpec) -> JobView:
    assert devnet.client is not None
    jobs = devnet.client.services.jobs
    view = await jobs.submit(spec)
    async for update in jobs.watch(view.job_id):
        if update.terminal:
            break
    return await jobs.get(view.job_id)


async def resolved(desk: DisputeDesk, devnet: Devnet) -> DisputeView:
    """The client's dispute once decided; blocks are mined so its jury can be drawn (the embedded
    chain mines only on transactions)."""
    while True:
        listed = await desk.list()
        if listed and listed[0].verdict != "pending":
            return listed[0]
        await devnet.chain.mine(1)
        await asyncio.sleep(0.2)


async def test_can_slash_a_cheater_through_a_jury_of_provider_nodes(tmp_path: Path) -> None:
    async with running_devnet(tmp_path, providers=HONEST) as devnet, AsyncExitStack() as stack:
        assert devnet.client is not None
        client = devnet.client
        attacker = devnet.keys[1 + HONEST]
        await serve_cheaply(devnet, stack, attacker, paid_then_lying(attacker, devnet))  # type: ignore[arg-type]
        await client.discovery.directory.wait_for(lambda d: len(d) >= HONEST + 1, timeout_s=60)
        client.client_jobs.pipeline.matchmaker.exploration = 0.0  # the cheapest is tried first
        client.spot_checks.share = 1.0
        cheated = await finished(
            devnet, JobSpec(model_id=devnet.model_id, input=mlp_input(3), max_price_wei=PRICE_WEI)
        )
        assert cheated.state is JobState.SETTLED
        assert cheated.provider == attacker.address
        report = await client.spot_checks.wait_for_report(cheated.job_id, timeout_s=120)
        assert report.verdict is Verdict.FIRST_WRONG
        # The client's node disputes the confirmed fraud on chain by itself, draws the jury and
        # waits; the provider nodes drawn re-run the job and vote.
        assert client.disputes is not None
        view = await asyncio.wait_for(resolved(client.disputes, devnet), 300)
        assert view.verdict == "provider_wrong"
        assert view.role == "challenger"
        assert view.provider == attacker.address
        assert (await devnet.deployment.registry.provider(attacker.address)).stake == 0
        honest = {Address(p.key.address): p for p in devnet.providers}
        assert view.jurors
        assert set(view.jurors) <= set(honest)
        dispute_id = Hash32(bytes.fromhex(view.dispute_id))
        for juror in view.jurors:
            jury = honest[juror].provider.jury  # type: ignore[union-attr]
            assert jury is not None
            served = await asyncio.wait_for(jury.wait_served(dispute_id), 60)
            assert served.vote is not None
            assert not served.vote.acceptable
            assert served.paid > 0  # paid for its jury work
        # The client's bond came back with its reward, and its node takes them out.
        await client.disputes.collect()
        assert await devnet.deployment.court.withdrawable(client.key.address) == 0
