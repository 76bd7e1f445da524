"""Spot checks against real nodes on the embedded chain: providers that return random bytes or
zeros under a valid signature are caught by a client's spot check and excluded, and the other
clients on the overlay learn of it from a fraud record; an honest provider whose outputs differ
within the model's tolerance (another device's rounding) passes; a checked job looks to its
provider like any other job."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from pathlib import Path

import numpy as np
import pytest
from e2e_support import PRICE_WEI, Devnet, mlp_input, running_devnet, serve_cheaply
from safetensors.numpy import load, load_file, save

from node.chain.eip712 import sign_receipt
from node.chain.keys import NodeKey
from node.chain.market import voucher_job_id
from node.domain.service import JobSpec, JobView
from node.domain.state import JobState
from node.p2p.job_messages import JobAccepted, JobRequest, JobResponse, JobResult, VoucherPayment
from node.scheduler.spot import Verdict
from node.types import Hash32, ResultReceipt, sha256

pytestmark = [pytest.mark.integration, pytest.mark.slow]

Compute = Callable[[bytes], bytes]


def answering(key: NodeKey, devnet: Devnet, compute: Compute, seen: list[JobRequest]) -> object:
    """A provider that is not a node: it answers every job with `compute(input)`, signed by its
    own key under its own execution profile, and keeps the requests it got."""
    domain = devnet.market.domain()
    profile = sha256(b"another device")

    async def handle(peer: str, request: JobRequest) -> AsyncIterator[JobResponse]:
        seen.append(request)
        yield JobAccepted()
        assert isinstance(request.input, bytes)
        assert isinstance(request.payment, VoucherPayment)
        output = compute(request.input)
        receipt = ResultReceipt(
            job_id=voucher_job_id(request.payment.client, request.job_id),
            model_id=request.model_id,
            input_hash=sha256(request.input),
            output_hash=sha256(output),
            profile_hash=profile,
            provider=key.address,
        )
        yield JobResult(receipt, sign_receipt(key.private_key, domain, receipt), output)

    return handle


def random_bytes(data: bytes) -> bytes:
    return secrets.token_bytes(128)


def zeros(data: bytes) -> bytes:
    rows = load(data)["input"].shape[0]
    return bytes(save({"output": np.zeros((rows, 16), dtype=np.float32)}))


def float64_mlp(model_dir: Path) -> Compute:
    """The model run honestly on 'another device': numpy in float64, rounded to float32 at the end."""
    weights = load_file(str(model_dir / "weights.safetensors"))
    layers = sorted({name.split(".")[1] for name in weights}, key=int)

    def compute(data: bytes) -> bytes:
        x = load(data)["input"].astype(np.float64)
        for i, layer in enumerate(layers):
            w, b = weights[f"linears.{layer}.weight"], weights[f"linears.{layer}.bias"]
            x = x @ w.astype(np.float64).T + b.astype(np.float64)
            if i < len(layers) - 1:
                x = np.maximum(x, 0.0)
        return bytes(save({"output": x.astype(np.float32)}))

    return compute


async def finished(devnet: Devnet, spec: JobSpec) -> JobView:
    assert devnet.client is not None
    jobs = devnet.client.services.jobs
    view = await jobs.submit(spec)
    async for update in jobs.watch(view.job_id):
        if update.terminal:
            break
    return await jobs.get(view.job_id)


@pytest.mark.parametrize("lie", [random_bytes, zeros], ids=["random-bytes", "zeros"])
async def test_cannot_be_paid_for_wrong_outputs_unchecked(tmp_path: Path, lie: Compute) -> None:
    """The attacker, the cheapest provider, answers with random bytes (or, lazily, zeros) under a
    valid signature. The client's spot check re-runs the job on an honest provider, a third run
    decides, and the attacker is excluded (for good: the exclusion is stored); a second client
    on the overlay verifies the fraud record and re-checks the attacker more."""
    async with running_devnet(tmp_path, providers=2) as devnet, AsyncExitStack() as stack:
        assert devnet.client is not None
        client = devnet.client
        watcher = await stack.enter_async_context(devnet.client_node("watcher", key_index=9).running())
        await watcher.host.connect(client.host.addrs[0])
        attacker = devnet.keys[5]
        seen: list[JobRequest] = []
        await serve_cheaply(devnet, stack, attacker, answering(attacker, devnet, lie, seen))  # type: ignore[arg-type]
        await client.discovery.directory.wait_for(lambda d: len(d) >= 3, timeout_s=60)
        client.client_jobs.pipeline.matchmaker.exploration = 0.0  # the cheapest is tried first
        checker = client.spot_checks
        checker.share = 1.0
        spec = JobSpec(model_id=devnet.model_id, input=mlp_input(7), max_price_wei=PRICE_WEI)

        cheated = await finished(devnet, spec)
        assert cheated.state is JobState.SETTLED
        assert cheated.provider == attacker.address  # verified: its signature was good
        report = await checker.wait_for_report(cheated.job_id, timeout_s=60)

        assert report.verdict is Verdict.FIRST_WRONG
        assert report.loser == attacker.address
        honest = {p.key.address for p in devnet.providers}
        assert {provider for provider, _, _ in report.runs[1:]} == honest
        assert attacker.address in client.client_jobs.pipeline.matchmaker.excluded
        stored = await client.db.run(client.db.reputation.get, attacker.address)
        assert stored is not None
        assert stored.excluded
        assert stored.checks_failed == 1
        # The next job goes to an honest provider, though the attacker is still the cheapest.
        after = await finished(devnet, spec)
        assert after.state is JobState.SETTLED
        assert after.provider in honest
        assert len(seen) == 1
        # The other client learnt it from the fraud record: it checks the attacker more, and
        # excludes nobody on another's word.
        await watcher.fraud_records.wait_for(attacker.address, timeout_s=30)
        learnt = watcher.spot_checks.book.get(attacker.address)
        assert learnt.fraud_records_seen == 1
        assert learnt.rechecks_due > 0
        assert not learnt.excluded
        assert not watcher.client_jobs.pipeline.matchmaker.excluded


async def test_can_pass_checks_with_outputs_that_differ_within_tolerance(tmp_path: Path) -> None:
    """An honest provider on 'another device' (float64 arithmetic) returns outputs that differ
    from the other providers' in their last bits. It is checked like anyone, and never flagged;
    the check that reaches it is a job like any other (a fresh id, the same request, paid)."""
    async with running_devnet(tmp_path, providers=1) as devnet, AsyncExitStack() as stack:
        assert devnet.client is not None
        client = devnet.client
        other = devnet.keys[5]
        seen: list[JobRequest] = []
        compute = float64_mlp(devnet.model_dir)
        await serve_cheaply(devnet, stack, other, answering(other, devnet, compute, seen))  # type: ignore[arg-type]
        await client.discovery.directory.wait_for(lambda d: len(d) >= 2, timeout_s=60)
        client.client_jobs.pipeline.matchmaker.exploration = 0.0
        checker = client.spot_checks
        checker.share = 0.0  # checked on demand only (`job verify`)
        node_provider = devnet.providers[0].key.address
        input_ = mlp_input(8)

        first = await finished(
            devnet, JobSpec(model_id=devnet.model_id, input=input_, max_price_wei=PRICE_WEI)
        )
        assert first.provider == other.address
        passed = await checker.verify(first.job_id)
        assert passed.verdict is Verdict.AGREED, passed.why
        assert passed.runs[1][2].output != first.output  # not bit-identical, within tolerance
        # A job pinned to the node provider, checked: the check goes to the other provider.
        pinned = JobSpec(
            model_id=devnet.model_id, input=input_, max_price_wei=PRICE_WEI, provider=node_provider
        )
        second = await finished(devnet, pinned)
        assert second.provider == node_provider
        checked = await checker.verify(second.job_id)
        assert checked.verdict is Verdict.AGREED, checked.why
        assert [p for p, _, _ in checked.runs] == [node_provider, other.address]

        plain, check = seen
        assert plain.job_id != check.job_id
        assert (plain.model_id, plain.input, plain.max_price_wei, plain.stream) == (
            check.model_id,
            check.input,
            check.max_price_wei,
            check.stream,
        )
        assert type(plain.payment) is type(check.payment)
        assert isinstance(check.payment, VoucherPayment)
        assert check.payment.cumulative_amount > plain.payment.cumulative_amount  # type: ignore[union-attr]
        reputation = checker.book.get(other.address)
        assert reputation.checks_passed == 1
        assert not reputation.excluded
        assert not client.client_jobs.pipeline.matchmaker.excluded
        assert Hash32(bytes.fromhex(first.job_id)) != Hash32(bytes.fromhex(checked.runs[1][1]))
