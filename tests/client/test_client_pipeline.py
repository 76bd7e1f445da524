"""The client's pipeline driven through `ClientJobs`, over a fake chain and overlay: a job is
matched, paid, sent and its result checked; every way to lose a provider moves the job to the
next one without paying twice; deadlines, attempts, cancels and chain failures end it clearly."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest
from client_support import BUDGET, GWEI, INPUT, MODEL, ClientSide, fast_chain_retries, output_for
from job_fakes import MAX_JOB_TIME_S, chain_down, reverted

from node.chain.eip712 import verify_receipt
from node.chain.keys import NodeKey
from node.chain.market import JobStatus as ChainJobStatus
from node.client.pipeline import ESCROW_MARGIN_S, RESERVE_AHEAD_JOBS
from node.domain.service import JobSpec
from node.domain.state import AttemptOutcome, JobState, JobTransitionError, PaymentPath
from node.errors import JobError, SettlementError
from node.executor.errors import UnknownModel
from node.p2p.job_messages import HOLD_PROTOCOL, JobRejected, OnchainPayment, VoucherPayment


def outcomes(view: object) -> list[tuple[str, AttemptOutcome | None]]:
    return [(a.provider, a.outcome) for a in view.attempts]  # type: ignore[attr-defined]


# happy paths ------------------------------------------------------------------------------------


async def test_can_run_a_job_paid_by_voucher_and_settle_it(client: ClientSide) -> None:
    provider = client.provider(price=3 * GWEI)
    await client.start()
    view = await client.finished((await client.submit()).job_id)

    assert view.state is JobState.SETTLED
    assert view.output == output_for(INPUT)
    assert view.receipt is not None
    assert view.receipt.verified
    assert verify_receipt(
        client.market.domain(), view.receipt.receipt, view.receipt.signature, provider.address
    )
    assert outcomes(view) == [(provider.address, AttemptOutcome.COMPLETED)]
    [request] = client.requests_to(provider)
    assert isinstance(request.payment, VoucherPayment)
    assert request.payment.cumulative_amount == 3 * GWEI
    assert await client.stored_voucher(provider) == 3 * GWEI
    assert client.market.called("request_job") == []
    again = await client.jobs.get(view.job_id)
    assert (again.state, again.output) == (JobState.SETTLED, output_for(INPUT))


@pytest.mark.parametrize("payment", [PaymentPath.VOUCHER, PaymentPath.ESCROW])
async def test_can_match_a_submitted_job_once(client: ClientSide, payment: PaymentPath) -> None:
    client.provider(price=3 * GWEI)
    client.provider(price=2 * GWEI)
    chosen = client.matches()
    await client.start()
    view = await client.finished((await client.submit(payment)).job_id)

    [choice] = chosen
    assert [attempt.provider for attempt in view.attempts] == [choice.candidate.address]
    assert view.price_wei == choice.offer.price_wei == 2 * GWEI


async def test_can_run_a_job_paid_by_escrow_and_wait_for_the_chain(client: ClientSide) -> None:
    provider = client.provider(price=3 * GWEI)
    await client.start()
    view = await client.finished((await client.submit(PaymentPath.ESCROW)).job_id)

    assert view.state is JobState.VERIFIED
    assert view.output == output_for(INPUT)
    [request] = client.requests_to(provider)
    assert isinstance(request.payment, OnchainPayment)
    assert view.onchain_job_id == request.payment.job_id.hex()
    onchain = client.market.jobs[request.payment.job_id]
    assert (onchain.price, onchain.named, onchain.terms.requester) == (3 * GWEI, provider.address, client.me)
    assert len(client.market.called("request_job")) == 1
    assert await client.stored_voucher(provider) is None


async def test_can_run_jobs_one_after_another_with_vouchers_that_add_up(client: ClientSide) -> None:
    provider = client.provider(price=2 * GWEI)
    await client.start()
    for _ in range(3):
        await client.finished((await client.submit()).job_id)
    amounts = [r.payment.cumulative_amount for r in client.requests_to(provider)]  # type: ignore[union-attr]
    assert amounts == [2 * GWEI, 4 * GWEI, 6 * GWEI]


# losing a provider ------------------------------------------------------------------------------


LOSSES = ["rejected", "timed_out", "died", "failed"]
CHEATS = ["job_id", "model", "input", "provider", "hash", "signature"]


@pytest.mark.parametrize("payment", [PaymentPath.VOUCHER, PaymentPath.ESCROW])
@pytest.mark.parametrize("how", LOSSES + CHEATS)
async def test_can_move_to_the_next_provider_when_one_is_lost(
    client: ClientSide, how: str, payment: PaymentPath
) -> None:
    lost = client.provider(price=1 * GWEI)
    good = client.provider(price=2 * GWEI)
    lost.behaviour = {
        "rejected": lost.rejecting,
        "timed_out": lost.timing_out,
        "died": lost.dying,
        "failed": lost.failing,
    }.get(how, lambda: lost.cheating(how, NodeKey.generate()))()
    await client.start()
    view = await client.finished((await client.submit(payment)).job_id)

    expected = (
        AttemptOutcome.BAD_RESULT
        if how in CHEATS
        else {
            "rejected": AttemptOutcome.REJECTED,
            "timed_out": AttemptOutcome.TIMED_OUT,
            "died": AttemptOutcome.DIED,
            "failed": AttemptOutcome.DIED,
        }[how]
    )
    # An escrow job's attempt completes when the chain finalizes it (see settlement).
    done = AttemptOutcome.COMPLETED if payment is PaymentPath.VOUCHER else None
    assert outcomes(view) == [(lost.address, expected), (good.address, done)]
    assert view.output == output_for(INPUT)
    assert view.receipt is not None
    assert view.receipt.receipt.provider == good.address
    assert len(client.requests_to(lost)) == 1
    assert len(client.requests_to(good)) == 1
    if payment is PaymentPath.VOUCHER:
        assert view.state is JobState.SETTLED
        assert await client.stored_voucher(good) == 2 * GWEI
    else:
        # One escrow per attempt, each naming its provider: the lost one's is refunded later.
        assert view.state is JobState.VERIFIED
        named = sorted(args[2] for args in client.market.called("request_job"))
        assert named == sorted([lost.address, good.address])


async def test_cannot_promise_a_lost_providers_price_twice(client: ClientSide) -> None:
    flaky = client.provider(price=2 * GWEI)
    other = client.provider(price=5 * GWEI)
    flaky.behaviour = flaky.rejecting()
    await client.start()
    await client.finished((await client.submit()).job_id)

    flaky.behaviour = flaky.honest()
    client.forgive(flaky)
    view = await client.finished((await client.submit(provider=flaky.address)).job_id)
    assert view.state is JobState.SETTLED
    # The rejected attempt's voucher was never earned: the next job reuses its amount.
    amounts = [r.payment.cumulative_amount for r in client.requests_to(flaky)]  # type: ignore[union-attr]
    assert amounts == [2 * GWEI, 2 * GWEI]
    assert [len(client.requests_to(other))] == [1]


async def test_can_fall_back_to_a_queue_when_no_provider_holds_the_job_a_slot(client: ClientSide) -> None:
    """A voucher job first asks providers to hold it a slot; these scripted peers serve no holds,
    so it goes where `choose` puts it, allowed to queue, with no other attempt lost."""
    cheap = client.provider(price=1 * GWEI)
    client.provider(price=2 * GWEI)
    await client.start()
    view = await client.finished((await client.submit()).job_id)
    assert outcomes(view) == [(cheap.address, AttemptOutcome.COMPLETED)]
    assert {protocol for _, protocol in client.overlay.streams_asked} == {HOLD_PROTOCOL}
    (asked,) = client.requests_to(cheap)
    assert asked.max_queue_position is None


async def test_cannot_finish_a_job_when_every_provider_is_lost(client: ClientSide) -> None:
    first = client.provider(price=1 * GWEI)
    second = client.provider(price=2 * GWEI)
    first.behaviour = first.rejecting("queue_full")
    second.behaviour = second.dying()
    await client.start()
    view = await client.until((await client.submit()).job_id, JobState.FAILED)

    assert view.state is JobState.FAILED
    assert "the last provider tried failed with" in (view.error or "")
    assert outcomes(view) == [(first.address, AttemptOutcome.REJECTED), (second.address, AttemptOutcome.DIED)]


async def test_cannot_reassign_a_job_pinned_to_a_provider_that_is_lost(client: ClientSide) -> None:
    pinned = client.provider(price=1 * GWEI)
    spare = client.provider(price=1 * GWEI)
    pinned.behaviour = pinned.timing_out()
    await client.start()
    view = await client.until((await client.submit(provider=pinned.address)).job_id, JobState.FAILED)
    assert view.state is JobState.FAILED
    assert client.requests_to(spare) == []


async def test_cannot_send_to_a_provider_whose_advert_expired(client: ClientSide) -> None:
    gone = client.provider(price=1 * GWEI)
    await client.start()
    record = await client.stored_job(JobState.PAID, provider=gone)
    client.directory.remove(gone.address)
    await client.restart()
    view = await client.until(record.job_id.hex(), JobState.FAILED)
    assert view.state is JobState.FAILED
    assert outcomes(view) == [(gone.address, AttemptOutcome.DIED)]
    assert client.requests_to(gone) == []


# deadlines and attempts -------------------------------------------------------------------------


async def test_cannot_match_a_job_past_its_deadline(client: ClientSide) -> None:
    provider = client.provider()
    record = await client.stored_job(JobState.SUBMITTED, deadline=1.0)
    await client.start()
    view = await client.until(record.job_id.hex(), JobState.FAILED)
    assert (view.state, "ran out of time" in (view.error or "")) == (JobState.FAILED, True)
    assert client.requests_to(provider) == []


async def test_cannot_try_more_providers_than_a_job_allows(client: ClientSide) -> None:
    provider = client.provider()
    tried = tuple(NodeKey.generate().address for _ in range(256))
    record = await client.stored_job(JobState.SUBMITTED, lost=tried)
    await client.start()
    view = await client.until(record.job_id.hex(), JobState.FAILED)
    assert "providers tried and none finished" in (view.error or "")
    assert client.requests_to(provider) == []


# cancelling -------------------------------------------------------------------------------------


@pytest.mark.parametrize("state", [JobState.SUBMITTED, JobState.MATCHED])
async def test_can_cancel_a_job_not_yet_paid(client: ClientSide, state: JobState) -> None:
    provider = client.provider()
    record = await client.stored_job(state, provider=provider)
    view = await client.jobs.cancel(record.job_id.hex())
    assert view.state is JobState.CANCELLED
    await client.start()
    assert (await client.jobs.get(record.job_id.hex())).state is JobState.CANCELLED
    assert client.requests_to(provider) == []


@pytest.mark.parametrize("state", [JobState.PAID, JobState.RUNNING, JobState.VERIFIED])
async def test_cannot_cancel_a_paid_job(client: ClientSide, state: JobState) -> None:
    provider = client.provider()
    record = await client.stored_job(state, provider=provider)
    with pytest.raises(JobError, match="a paid job finishes"):
        await client.jobs.cancel(record.job_id.hex())
    assert (await client.jobs.get(record.job_id.hex())).state is state


async def test_cannot_cancel_a_job_that_is_not_known(client: ClientSide) -> None:
    with pytest.raises(JobError, match="no job"):
        await client.jobs.cancel("ab" * 32)
    with pytest.raises(JobError, match="not a job id"):
        await client.jobs.cancel("nonsense")


# submitting -------------------------------------------------------------------------------------


async def test_cannot_submit_what_no_provider_can_take(client: ClientSide) -> None:
    with pytest.raises(UnknownModel):
        await client.submit()
    client.provider(price=3 * GWEI + 1)
    with pytest.raises(JobError, match="not a whole number of gwei"):
        await client.submit(PaymentPath.ESCROW)
    client.market.balances[client.me] = GWEI
    with pytest.raises(SettlementError, match="deposit"):
        await client.submit()
    with pytest.raises(JobError, match="timeout"):
        await client.jobs.submit(JobSpec(model_id="05" * 32, input=INPUT, timeout_s=0))
    assert await client.jobs.list() == ()


# the chain while paying by escrow ---------------------------------------------------------------


async def test_cannot_pay_an_escrow_the_chain_refuses(client: ClientSide) -> None:
    provider = client.provider()
    client.market.fail("request_job", reverted("InsufficientValue"))
    await client.start()
    view = await client.until((await client.submit(PaymentPath.ESCROW)).job_id, JobState.FAILED)
    assert "the chain refused the escrow payment" in (view.error or "")
    assert client.requests_to(provider) == []
    assert client.market.jobs == {}


async def test_cannot_pay_an_escrow_while_the_chain_stays_unreachable(
    client: ClientSide, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast_chain_retries(monkeypatch)
    provider = client.provider()
    client.market.fail("request_job", chain_down(), times=5)
    await client.start()
    view = await client.until((await client.submit(PaymentPath.ESCROW)).job_id, JobState.FAILED)
    assert "the chain stayed unreachable" in (view.error or "")
    assert client.requests_to(provider) == []


async def test_can_pay_an_escrow_once_the_chain_answers_again(
    client: ClientSide, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast_chain_retries(monkeypatch)
    provider = client.provider()
    client.market.fail("request_job", chain_down(), times=3)
    client.market.fail("chain_time", chain_down())
    await client.start()
    view = await client.finished((await client.submit(PaymentPath.ESCROW)).job_id)
    assert view.state is JobState.VERIFIED
    assert len(client.market.called("request_job")) == 1
    assert len(client.requests_to(provider)) == 1


async def test_can_budget_and_price_an_escrow_at_the_providers_price(client: ClientSide) -> None:
    provider = client.provider(price=4 * GWEI)
    await client.start()
    view = await client.finished((await client.submit(PaymentPath.ESCROW, budget=BUDGET)).job_id)
    onchain = bytes.fromhex(view.onchain_job_id or "")
    assert client.market.jobs[onchain].price == 4 * GWEI
    assert client.market.jobs[onchain].status is ChainJobStatus.SUBMITTED
    assert view.provider == provider.address


async def test_can_cancel_a_job_while_its_escrow_is_being_requested(client: ClientSide) -> None:
    provider = client.provider()
    requesting = client.market.hold("request_job")
    job_id = (await client.submit(PaymentPath.ESCROW)).job_id
    with client.changes(job_id) as changes:
        driving = asyncio.ensure_future(client.drive(job_id))
        assert (await asyncio.wait_for(changes.get(), 5)).state == JobState.MATCHED

    assert (await client.jobs.cancel(job_id)).state is JobState.CANCELLED
    requesting.set()  # the escrow reaches the chain after the cancel was recorded
    with pytest.raises(JobTransitionError):
        await driving
    view = await client.jobs.get(job_id)
    assert view.state is JobState.CANCELLED
    assert [(a.provider, a.outcome) for a in view.attempts] == [(provider.address, AttemptOutcome.ABANDONED)]
    assert client.requests_to(provider) == []
    # The escrow is left to the client's settlement, which refunds abandoned attempts.
    assert len(client.market.jobs) == 1


# the service ------------------------------------------------------------------------------------


async def test_can_watch_a_job_move_through_each_state_in_order(client: ClientSide) -> None:
    client.provider()
    await client.start()
    job_id = (await client.submit()).job_id
    states = [view.state async for view in client.jobs.watch(job_id)]
    assert states[-1] is JobState.SETTLED
    order = list(JobState)
    assert states == sorted(set(states), key=order.index)


async def test_cannot_escrow_a_job_longer_than_the_market_allows(client: ClientSide) -> None:
    client.provider(price=3 * GWEI)
    longest = MAX_JOB_TIME_S - ESCROW_MARGIN_S
    spec = JobSpec(model_id=MODEL.hex(), input=INPUT, timeout_s=longest + 1, payment=PaymentPath.ESCROW)
    with pytest.raises(JobError, match=f"at most {longest} s"):
        await client.jobs.submit(spec)
    assert await client.jobs.list() == ()
    assert client.market.called("request_job") == []

    # A voucher job is not bound by escrow deadlines; an escrow within them goes through.
    await client.jobs.submit(dataclasses.replace(spec, payment=PaymentPath.VOUCHER))
    await client.start()
    view = await client.finished(
        (await client.jobs.submit(dataclasses.replace(spec, timeout_s=longest))).job_id
    )
    assert view.state is JobState.VERIFIED


async def test_can_submit_once_a_deposit_covers_the_voucher(client: ClientSide) -> None:
    client.provider(price=3 * GWEI)
    client.market.balances[client.me] = 0
    with pytest.raises(SettlementError):
        await client.submit()
    assert await client.jobs.deposit(5 * GWEI) == 5 * GWEI
    await client.start()
    view = await client.finished((await client.submit()).job_id)
    assert view.state is JobState.SETTLED
    # 5 gwei cover one 3-gwei job, not a second.
    with pytest.raises(SettlementError, match="does not cover"):
        await client.submit()


async def test_can_reserve_for_a_provider_before_signing_its_voucher(
    client: ClientSide, monkeypatch: pytest.MonkeyPatch
) -> None:
    provider = client.provider(price=2 * GWEI)
    cover = client.market.cover_vouchers
    signed_before: list[int | None] = []

    async def watched(*args: Any, **kwargs: Any) -> int:
        signed_before.append(await client.stored_voucher(provider))
        return await cover(*args, **kwargs)

    monkeypatch.setattr(client.market, "cover_vouchers", watched)
    await client.start()
    for _ in range(3):
        view = await client.finished((await client.submit()).job_id)
        assert view.state is JobState.SETTLED

    # One reservation, made before any voucher was signed, covers the first job and those ahead.
    assert signed_before == [None]
    ahead = RESERVE_AHEAD_JOBS * 2 * GWEI
    assert client.market.called("reserve") == [(provider.address, 2 * GWEI + ahead, 0)]
    assert client.market.reserves[client.me, provider.address] == 2 * GWEI + ahead
    assert client.market.balances[client.me] == 1000 * GWEI - 2 * GWEI - ahead


async def test_can_reserve_no_more_than_the_deposit_holds(client: ClientSide) -> None:
    provider = client.provider(price=3 * GWEI)
    client.market.balances[client.me] = 5 * GWEI
    await client.start()
    assert (await client.finished((await client.submit()).job_id)).state is JobState.SETTLED
    assert client.market.reserves[client.me, provider.address] == 5 * GWEI
    assert client.market.balances[client.me] == 0


async def test_can_move_on_when_the_reservation_for_a_provider_failed(client: ClientSide) -> None:
    cheap = client.provider(price=1 * GWEI)
    dear = client.provider(price=2 * GWEI)
    client.market.fail("cover_vouchers", chain_down())
    await client.start()
    view = await client.finished((await client.submit()).job_id)
    # The unreserved voucher was refused, not run; the next provider was reserved for and paid.
    assert outcomes(view) == [
        (cheap.address, AttemptOutcome.REJECTED),
        (dear.address, AttemptOutcome.COMPLETED),
    ]
    assert client.market.reserves[client.me, cheap.address] == 0
    assert client.market.reserves[client.me, dear.address] > 0


async def test_cannot_let_one_broken_job_stop_the_others(client: ClientSide) -> None:
    provider = client.provider()
    # Paid by a voucher that is not in the store (it was lost with the database's last write).
    broken = await client.stored_job(JobState.PAID, provider=provider, voucher_kept=False)
    other = client.provider()
    healthy = await client.stored_job(JobState.MATCHED, provider=other)
    await client.start()
    failed = await client.until(broken.job_id.hex(), JobState.FAILED)
    assert failed.state is JobState.FAILED
    assert "the node hit an error driving the job" in (failed.error or "")
    assert client.requests_to(provider) == [
        r for r in client.requests_to(provider) if r.job_id == healthy.job_id
    ]
    assert (await client.finished(healthy.job_id.hex())).state is JobState.SETTLED


async def test_can_resume_a_job_handed_back_to_the_running_service(client: ClientSide) -> None:
    provider = client.provider()
    await client.start()
    record = await client.stored_job(JobState.SUBMITTED)
    client.jobs.resume(record.job_id)
    view = await client.finished(record.job_id.hex())
    assert view.state is JobState.SETTLED
    assert len(client.requests_to(provider)) == 1


@pytest.mark.parametrize("reported", ["failed", "rejected"])
async def test_cannot_blame_a_provider_for_the_clients_own_input(client: ClientSide, reported: str) -> None:
    from job_fakes import accepted_then

    from node.p2p.job_messages import INVALID_INPUT, JobFailed

    strict = client.provider(price=1 * GWEI)
    other = client.provider(price=2 * GWEI)
    if reported == "failed":
        strict.behaviour = accepted_then(lambda r: JobFailed(INVALID_INPUT, "tensor 'input' is F32[2, 3]"))
    else:

        async def refuse(request: Any, on_event: Any) -> Any:
            return JobRejected(INVALID_INPUT, "tensor 'input' is F32[2, 3]")

        strict.behaviour = refuse
    await client.start()
    view = await client.until((await client.submit()).job_id, JobState.FAILED)
    # The real cause, and no other provider bothered: it would refuse the same input.
    assert "the input does not fit the model: tensor 'input' is F32[2, 3]" in (view.error or "")
    assert client.requests_to(other) == []
    assert client.jobs.pipeline.matchmaker.stats.get(strict.address, None) is None or (
        client.jobs.pipeline.matchmaker.stats[strict.address].backoff_until == 0.0
    )
