"""Late binding against real nodes on the embedded chain: a voucher job asks a provider to start
it at once; a busy provider refuses `queue_full`, and the job runs on another at once, with no
extra payment: the refused attempt's amount drops out of what the client owes, so the voucher
the busy provider holds covers its next job. A provider that keeps refusing and redeems what it
was handed gains one job's price at most, whatever it refused."""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from e2e_support import PRICE_WEI, mlp_input, running_devnet, serve_cheaply

from node.chain.eip712 import sign_voucher
from node.domain.service import JobSpec, JobView
from node.domain.state import AttemptOutcome, JobState, PaymentPath
from node.p2p.job_messages import JobRejected, JobRequest, JobResponse, VoucherPayment
from node.p2p.job_protocol import JobClient
from node.types import Hash32, Voucher

pytestmark = [pytest.mark.integration]

JOBS = 6
BUSY_PRICE = PRICE_WEI // 4


async def until_done(jobs: object, job_id: str) -> JobView:
    async for view in jobs.watch(job_id):  # type: ignore[attr-defined]
        if view.state in {JobState.SETTLED, JobState.FAILED}:
            return view
    raise AssertionError(f"job {job_id} never ended")


async def test_cannot_gain_more_than_one_price_by_refusing_start_now_jobs_and_redeeming(
    tmp_path: Path,
) -> None:
    """The attacker advertises eight free slots at a quarter of the price, so the client asks it
    first, and refuses every job `queue_full`, keeping each voucher it is handed; then redeems the
    highest. Each job runs on an honest provider right after the refusal, a start-now refusal does
    not count against the attacker (it is only busy), and it is paid the price of one job it never
    ran: exactly what the client had already signed to it before the first refusal, never more."""
    async with running_devnet(tmp_path, providers=2) as devnet, AsyncExitStack() as stack:
        client = devnet.client
        assert client is not None
        attacker = devnet.keys[5]
        kept: list[tuple[VoucherPayment, int | None]] = []

        async def busy(peer: str, request: JobRequest) -> AsyncIterator[JobResponse]:
            assert isinstance(request.payment, VoucherPayment)
            kept.append((request.payment, request.max_queue_position))
            yield JobRejected("queue_full", "every slot is busy")

        await serve_cheaply(devnet, stack, attacker, busy)
        directory = client.discovery.directory
        await directory.wait_for(lambda d: d.get(attacker.address) is not None, timeout_s=60.0)
        # Every decision goes by price and expected completion: no exploring honest providers first.
        client.client_jobs.pipeline.matchmaker.exploration = 0.0
        jobs = client.services.jobs
        honest = {p.key.address for p in devnet.providers}
        asked = 0
        for seed in range(JOBS):
            view = await jobs.submit(
                JobSpec(model_id=devnet.model_id, input=mlp_input(seed), payment=PaymentPath.VOUCHER)
            )
            done = await until_done(jobs, view.job_id)
            assert done.state is JobState.SETTLED, done.error
            # The cheapest provider that looks free is asked first; refused, the job runs at once
            # on an honest one. (Right after a refusal it looks busy for about one run time, and
            # a job then goes to an honest provider straight away.)
            *refused, ran = done.attempts
            assert [(a.provider, a.outcome) for a in refused] in (
                [],
                [(attacker.address, AttemptOutcome.REJECTED)],
            )
            assert ran.provider in honest
            assert ran.outcome is None or ran.outcome is not AttemptOutcome.REJECTED
            asked += len(refused)
        assert len(kept) == asked >= 2
        # Asked to start now whenever it looked free: those refusals count as busy, not failing.
        # (Right after one it looks busy; if it still looks as quick as the others, the price
        # rule sends the job there to queue, and a refusal of that is a failure like any other.)
        start_now = sum(1 for _, bound in kept if bound == 0)
        assert start_now >= 2
        assert {bound for _, bound in kept} <= {0, None}
        # Every voucher it was handed names the same amount: one job's price, never more.
        assert {payment.cumulative_amount for payment, _ in kept} == {BUSY_PRICE}
        stats = client.client_jobs.pipeline.matchmaker.stats.get(attacker.address)
        failures = 0 if stats is None else stats.failures
        assert failures == len(kept) - start_now
        # The client owes it nothing; what it already signed covers the next job sent to it.
        book = client.client_jobs.pipeline.vouchers
        assert book.owed(attacker.address) == 0
        assert book.next_voucher(attacker.address, BUSY_PRICE).voucher.cumulative_amount == BUSY_PRICE

        payment, _ = kept[-1]
        voucher = Voucher(payment.client, payment.provider, payment.cumulative_amount)
        redemption = await devnet.market.redeem_vouchers(
            [(voucher, payment.signature)], sender=attacker.account
        )
        # Redeemable: the price of the jobs it completed (none) plus at most one outstanding price.
        assert redemption.total == BUSY_PRICE
        assert await devnet.market.paid(client.key.address, attacker.address) == 0 * BUSY_PRICE + BUSY_PRICE
        # The honest providers are owed exactly the jobs they ran; nothing was paid twice.
        owed = {p: book.owed(p) for p in honest}
        assert sum(owed.values()) == JOBS * PRICE_WEI


async def test_cannot_start_now_on_a_busy_provider_node(tmp_path: Path) -> None:
    """A real provider node whose slots are all busy refuses a job that asks to start now, before
    it takes the voucher or stores anything; the same request allowed to queue is taken."""
    async with running_devnet(tmp_path, providers=1) as devnet:
        client = devnet.client
        assert client is not None
        (provider,) = devnet.providers
        assert provider.provider is not None
        load = provider.provider.jobs.runner.load
        key = client.key
        voucher = Voucher(key.address, provider.key.address, PRICE_WEI)
        await devnet.market.reserve(provider.key.address, PRICE_WEI, sender=key.account)

        def request(bound: int | None) -> JobRequest:
            return JobRequest(
                job_id=Hash32(secrets.token_bytes(32)),
                model_id=Hash32(bytes.fromhex(devnet.model_id)),
                input=mlp_input(7),
                payment=VoucherPayment(
                    voucher.client,
                    voucher.provider,
                    voucher.cumulative_amount,
                    sign_voucher(key.private_key, devnet.market.domain(), voucher),
                ),
                max_price_wei=PRICE_WEI,
                deadline_ms=int((time.time() + 60) * 1000),
                max_queue_position=bound,
            )

        for _ in range(load.slots):
            load.started()  # every slot busy with work of its own
        try:
            refused_request = request(0)
            refused = await JobClient(client.host).request_job(provider.host.peer_id, refused_request)
            assert isinstance(refused, JobRejected)
            assert refused.code == "queue_full"
            assert "asked to start now" in refused.reason
            assert await provider.db.run(provider.db.jobs.find, refused_request.job_id) is None
            stored = await provider.db.run(provider.db.vouchers.get, key.address, provider.key.address)
            assert stored is None  # the voucher was not taken: nothing is spent on it
        finally:
            for _ in range(load.slots):
                load.finished()
        served = await JobClient(client.host).request_job(provider.host.peer_id, request(0))
        assert not isinstance(served, JobRejected), served
