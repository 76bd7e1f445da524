"""Holds against real nodes on the embedded chain: a voucher job waits in the hold queues of a
few providers at once and runs on the first to free a slot, with no voucher sent to the others.
A provider that grants holds and refuses the jobs gains one job's price at most. A provider
still refuses a job that asks to start now when it is busy (`max_queue_position` 0)."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from e2e_support import PRICE_WEI, mlp_input, running_devnet, serve_cheaply

from node.chain.eip712 import sign_voucher
from node.domain.service import JobSpec, JobView
from node.domain.state import AttemptOutcome, JobState, PaymentPath
from node.p2p.hold_protocol import serve_holds
from node.p2p.job_messages import (
    HoldReady,
    HoldRequest,
    HoldResponse,
    JobRejected,
    JobRequest,
    JobResponse,
    VoucherPayment,
)
from node.p2p.job_protocol import JobClient
from node.provider.holds import HoldDesk
from node.types import Hash32, Voucher

pytestmark = [pytest.mark.integration]

JOBS = 6
BUSY_PRICE = PRICE_WEI // 4


async def until(condition: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        await asyncio.sleep(0.05)


async def until_done(jobs: object, job_id: str) -> JobView:
    async for view in jobs.watch(job_id):  # type: ignore[attr-defined]
        if view.state in {JobState.SETTLED, JobState.FAILED}:
            return view
    raise AssertionError(f"job {job_id} never ended")


async def test_can_run_a_voucher_job_on_the_provider_that_frees_a_slot_first(tmp_path: Path) -> None:
    """Every slot of both providers is busy: the job's holds wait in both queues, and no voucher
    goes anywhere. The second provider frees a slot first and gets the job, in one attempt; the
    hold at the first is given up, and the first never sees a voucher."""
    async with running_devnet(tmp_path, providers=2) as devnet:
        client = devnet.client
        assert client is not None
        client.client_jobs.pipeline.matchmaker.exploration = 0.0
        first, second = devnet.providers
        desks = []
        for node in (first, second):
            assert node.provider is not None
            assert node.provider.jobs.holds is not None
            desks.append(node.provider.jobs.holds)
        for desk in desks:
            for _ in range(desk.load.slots):
                desk.load.started()  # busy with work of its own
        jobs = client.services.jobs
        view = await jobs.submit(
            JobSpec(model_id=devnet.model_id, input=mlp_input(1), payment=PaymentPath.VOUCHER)
        )
        await until(lambda: all(d.book.waiting == 1 for d in desks))
        for node in (first, second):
            assert await node.db.run(node.db.vouchers.get, client.key.address, node.key.address) is None
        unheld = desks[1].load.unheld_starts
        for _ in range(desks[1].load.slots):
            desks[1].load.finished()
        done = await until_done(jobs, view.job_id)
        assert done.state is JobState.SETTLED, done.error
        assert [a.provider for a in done.attempts] == [second.key.address]
        # It started in the slot kept for it, and nothing stays kept.
        assert desks[1].load.unheld_starts == unheld
        assert (desks[1].load.held, desks[1].load.reserved) == (0, 0)
        await until(lambda: desks[0].book.waiting == 0 and desks[0].book.granted == 0)
        assert await first.db.run(first.db.vouchers.get, client.key.address, first.key.address) is None
        for _ in range(desks[0].load.slots):
            desks[0].load.finished()


async def test_cannot_gain_more_than_one_price_by_granting_holds_and_refusing_jobs(tmp_path: Path) -> None:
    """The attacker advertises eight free slots at a quarter of the price and grants every hold at
    once, so the client's jobs go to it first; it refuses each job and keeps the voucher, then
    redeems the highest. Each job runs on an honest provider next, the refusals count against
    the attacker (it is backed off), and it is paid the price of one job it never ran at most:
    each voucher it holds names that one price, never more."""
    async with running_devnet(tmp_path, providers=2) as devnet, AsyncExitStack() as stack:
        client = devnet.client
        assert client is not None
        attacker = devnet.keys[5]
        kept: list[VoucherPayment] = []

        async def refuse(peer: str, request: JobRequest) -> AsyncIterator[JobResponse]:
            assert isinstance(request.payment, VoucherPayment)
            kept.append(request.payment)
            yield JobRejected("queue_full", "every slot is busy")

        async def grant(peer: str, request: HoldRequest) -> AsyncIterator[HoldResponse]:
            yield HoldReady(5000)
            await asyncio.sleep(5)

        host = await serve_cheaply(devnet, stack, attacker, refuse)
        serve_holds(host, grant)
        directory = client.discovery.directory
        await directory.wait_for(lambda d: d.get(attacker.address) is not None, timeout_s=60.0)
        client.client_jobs.pipeline.matchmaker.exploration = 0.0
        jobs = client.services.jobs
        honest = {p.key.address for p in devnet.providers}
        for seed in range(JOBS):
            view = await jobs.submit(
                JobSpec(model_id=devnet.model_id, input=mlp_input(seed), payment=PaymentPath.VOUCHER)
            )
            done = await until_done(jobs, view.job_id)
            assert done.state is JobState.SETTLED, done.error
            *refused, ran = done.attempts
            assert [(a.provider, a.outcome) for a in refused] in (
                [],
                [(attacker.address, AttemptOutcome.REJECTED)],
            )
            assert ran.provider in honest
        assert 1 <= len(kept) < JOBS  # backed off after its refusals
        stats = client.client_jobs.pipeline.matchmaker.stats[attacker.address]
        assert stats.failures == len(kept)
        assert {payment.cumulative_amount for payment in kept} == {BUSY_PRICE}
        book = client.client_jobs.pipeline.vouchers
        assert book.owed(attacker.address) == 0
        payment = kept[-1]
        voucher = Voucher(payment.client, payment.provider, payment.cumulative_amount)
        redemption = await devnet.market.redeem_vouchers(
            [(voucher, payment.signature)], sender=attacker.account
        )
        assert redemption.total == BUSY_PRICE
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


async def test_can_send_a_job_to_queue_when_no_provider_keeps_it_a_slot_in_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both providers stay busy past the hold wait: the job is sent to one of them allowed to
    queue there (one attempt), and its holds are given up."""
    monkeypatch.setattr("node.client.pipeline.HOLD_WAIT_S", 1.0)
    async with running_devnet(tmp_path, providers=2) as devnet:
        client = devnet.client
        assert client is not None
        desks = [busy_desk(node) for node in devnet.providers]
        jobs = client.services.jobs
        spec = JobSpec(model_id=devnet.model_id, input=mlp_input(2), payment=PaymentPath.VOUCHER)
        started = time.monotonic()
        done = await until_done(jobs, (await jobs.submit(spec)).job_id)
        assert done.state is JobState.SETTLED, done.error
        assert time.monotonic() - started >= 1.0  # the holds waited their time first
        assert len(done.attempts) == 1
        await until(lambda: all(d.book.waiting == 0 and d.book.granted == 0 for d in desks))
        for desk in desks:
            free_desk(desk)


async def test_can_cancel_a_job_while_its_holds_wait(tmp_path: Path) -> None:
    async with running_devnet(tmp_path, providers=2) as devnet:
        client = devnet.client
        assert client is not None
        desks = [busy_desk(node) for node in devnet.providers]
        jobs = client.services.jobs
        view = await jobs.submit(
            JobSpec(model_id=devnet.model_id, input=mlp_input(3), payment=PaymentPath.VOUCHER)
        )
        await until(lambda: all(d.book.waiting == 1 for d in desks))
        cancelled = await jobs.cancel(view.job_id)
        assert cancelled.state is JobState.CANCELLED
        await until(lambda: all(d.book.waiting == 0 for d in desks), timeout_s=10.0)  # given up at once
        for desk in desks:
            free_desk(desk)
        await asyncio.sleep(0.5)
        assert all(d.load.active == 0 and d.book.granted == 0 for d in desks)  # nothing was sent
        for node in devnet.providers:
            assert await node.db.run(node.db.vouchers.get, client.key.address, node.key.address) is None


def busy_desk(node: object) -> HoldDesk:
    """The provider node's hold desk, with every slot busy with work of its own."""
    provider = node.provider  # type: ignore[attr-defined]
    assert provider is not None
    desk = provider.jobs.holds
    assert desk is not None
    for _ in range(desk.load.slots):
        desk.load.started()
    return desk  # type: ignore[no-any-return]


def free_desk(desk: HoldDesk) -> None:
    for _ in range(desk.load.slots):
        desk.load.finished()


async def test_can_run_many_voucher_jobs_at_once_through_holds_and_keep_no_slot(tmp_path: Path) -> None:
    """Sixty voucher jobs at once over two providers: each settles, most through a hold (a client
    may keep 16 waiting at a provider; the rest queue), and once they are done no slot stays kept
    or reserved and no hold waits."""
    async with running_devnet(tmp_path, providers=2) as devnet:
        client = devnet.client
        assert client is not None
        desks = [busy_desk(node) for node in devnet.providers]
        for desk in desks:
            free_desk(desk)
        unheld = sum(d.load.unheld_starts for d in desks)
        jobs = client.services.jobs
        specs = [
            JobSpec(model_id=devnet.model_id, input=mlp_input(seed), payment=PaymentPath.VOUCHER)
            for seed in range(60)
        ]
        views = await asyncio.gather(*(jobs.submit(spec) for spec in specs))
        done = await asyncio.wait_for(asyncio.gather(*(until_done(jobs, v.job_id) for v in views)), 120)
        assert all(d.state is JobState.SETTLED for d in done), [d.error for d in done if d.error]
        await until(lambda: all(d.book.waiting == d.book.granted == 0 for d in desks))
        for desk in desks:
            assert (desk.load.active, desk.load.held, desk.load.reserved) == (0, 0, 0)
        # Most started in a slot a hold kept for them.
        assert sum(d.load.unheld_starts for d in desks) - unheld <= 30
