"""A registered provider that returns results which do not verify: its receipt's output hash does
not match the output, or the receipt is signed by another key. The client refuses each result,
backs the provider off and has the job done by an honest provider."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from e2e_support import PRICE_WEI, mlp_input, running_devnet, serve_cheaply

from node.chain.eip712 import sign_receipt
from node.chain.keys import NodeKey
from node.domain.service import JobSpec
from node.domain.state import AttemptOutcome, JobState
from node.p2p.job_messages import JobAccepted, JobRequest, JobResponse, JobResult
from node.types import Hash32, ResultReceipt, sha256

pytestmark = [pytest.mark.integration]


def forging(key: NodeKey, signer: NodeKey, domain: object, *, wrong_hash: bool):
    """A job handler that accepts and answers with a result that must not verify."""

    async def handle(peer: str, request: JobRequest) -> AsyncIterator[JobResponse]:
        yield JobAccepted()
        output = b"not what the model computes"
        assert isinstance(request.input, bytes)
        receipt = ResultReceipt(
            job_id=request.job_id,
            model_id=request.model_id,
            input_hash=sha256(request.input),
            output_hash=sha256(b"something else" if wrong_hash else output),
            profile_hash=Hash32(b"\x00" * 32),
            provider=key.address,
        )
        yield JobResult(receipt, sign_receipt(signer.private_key, domain, receipt), output)  # type: ignore[arg-type]

    return handle


async def test_cannot_pass_off_a_result_that_does_not_verify(tmp_path: Path) -> None:
    async with running_devnet(tmp_path, providers=1) as devnet, AsyncExitStack() as stack:
        assert devnet.client is not None
        client = devnet.client
        domain = devnet.market.domain()
        forgers = [(devnet.keys[4], devnet.keys[4], True), (devnet.keys[5], devnet.keys[7], False)]
        for key, signer, wrong_hash in forgers:
            await serve_cheaply(devnet, stack, key, forging(key, signer, domain, wrong_hash=wrong_hash))
        await client.discovery.directory.wait_for(lambda d: len(d) >= 3, timeout_s=60)
        # The order of tries is the point here: no exploration may send a try to the honest
        # provider before both cheaper forgers were caught.
        client.client_jobs.pipeline.matchmaker.exploration = 0.0

        jobs = client.services.jobs
        view = await jobs.submit(
            JobSpec(model_id=devnet.model_id, input=mlp_input(3), max_price_wei=PRICE_WEI)
        )
        async for update in jobs.watch(view.job_id):
            if update.terminal:
                break
        final = await jobs.get(view.job_id)
        assert final.state is JobState.SETTLED, final.error
        forged_by = {key.address for key, _, _ in forgers}
        *refused, honest = final.attempts
        assert {a.provider for a in refused} == forged_by
        assert all(a.outcome is AttemptOutcome.BAD_RESULT for a in refused)
        assert honest.provider == devnet.providers[0].key.address
        assert final.receipt is not None
        assert final.receipt.receipt.provider == honest.provider
        # Both forgers are backed off: the next job goes straight to the honest provider.
        second = await jobs.submit(
            JobSpec(model_id=devnet.model_id, input=mlp_input(4), max_price_wei=PRICE_WEI)
        )
        async for update in jobs.watch(second.job_id):
            if update.terminal:
                break
        assert [a.provider for a in (await jobs.get(second.job_id)).attempts] == [honest.provider]
