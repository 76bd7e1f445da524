"""A provider answering job requests (`ProviderJobs.handle`), over a fake chain and executor:
every rejection leaves nothing stored, claimed or run; paid jobs run, are stored, and carry a
receipt signed by the provider; a failed run frees what the client's voucher covered."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from pathlib import Path

import pytest
from job_fakes import CHALLENGE_WINDOW_S, chain_down, reverted
from provider_support import (
    GWEI,
    INPUT,
    MODEL,
    OTHER_MODEL,
    PRICE,
    ProviderSide,
    fast_submission_retries,
    new_provider,
    peer_of,
)

from node.chain.eip712 import verify_receipt
from node.chain.keys import NodeKey
from node.chain.market import JobStatus as ChainJobStatus
from node.chain.market import voucher_job_id
from node.domain.state import JobState
from node.errors import ExecutorError
from node.p2p.job_messages import (
    BlobRef,
    JobAccepted,
    JobFailed,
    JobProgress,
    JobRejected,
    JobRequest,
    JobResponse,
    JobResult,
)
from node.provider import jobs as provider_jobs
from node.types import sha256


def fund(provider: ProviderSide, client: NodeKey, wei: int = 100 * PRICE) -> None:
    provider.market.reserves[client.address, provider.me] = wei


def rejection(frames: list[JobResponse]) -> JobRejected:
    assert len(frames) == 1, frames
    assert isinstance(frames[0], JobRejected), frames
    return frames[0]


def result_of(frames: list[JobResponse]) -> JobResult:
    assert isinstance(frames[0], JobAccepted), frames
    assert isinstance(frames[1], JobProgress), frames
    assert isinstance(frames[-1], JobResult), frames
    return frames[-1]


async def assert_nothing_taken(provider: ProviderSide, client: NodeKey, request: JobRequest) -> None:
    assert await provider.stored_job(request) is None
    assert await provider.db.run(provider.db.vouchers.get, client.address, provider.me) is None
    assert provider.pool.runs == []
    assert provider.market.called("claim_job") == []
    assert provider.market.called("submit_result") == []


# paid jobs --------------------------------------------------------------------------------------


async def test_can_run_a_voucher_job_and_sign_its_receipt(provider: ProviderSide, client: NodeKey) -> None:
    fund(provider, client)
    request = provider.voucher_request(client, PRICE)
    result = result_of(await provider.handle(client, request))

    assert result.output == b"out:" + INPUT
    receipt = result.receipt
    signed_id = voucher_job_id(client.address, request.job_id)
    assert (receipt.job_id, receipt.model_id, receipt.input_hash) == (signed_id, MODEL, sha256(INPUT))
    assert receipt.output_hash == sha256(result.output)
    assert verify_receipt(provider.market.domain(), receipt, result.signature, provider.me)
    stored = await provider.stored_job(request)
    assert stored is not None
    assert stored.state == JobState.DELIVERED
    assert (stored.client, stored.price_wei) == (client.address, PRICE)
    voucher = await provider.db.run(provider.db.vouchers.get, client.address, provider.me)
    assert voucher is not None
    assert voucher.voucher.cumulative_amount == PRICE
    assert await provider.db.run(provider.db.receipts.get, signed_id, provider.me) is not None
    assert provider.market.called("submit_result") == []
    # The executor is told whose job it runs: code that is not ours batches one client's jobs only.
    assert provider.pool.clients == [client.address]


async def test_can_take_a_second_voucher_job_only_with_a_raised_voucher(
    provider: ProviderSide, client: NodeKey
) -> None:
    fund(provider, client)
    result_of(await provider.handle(client, provider.voucher_request(client, PRICE)))

    again = provider.voucher_request(client, PRICE)
    assert rejection(await provider.handle(client, again)).code == "voucher_too_low"
    assert await provider.stored_job(again) is None

    raised = provider.voucher_request(client, 2 * PRICE)
    result_of(await provider.handle(client, raised))
    voucher = await provider.db.run(provider.db.vouchers.get, client.address, provider.me)
    assert voucher is not None
    assert voucher.voucher.cumulative_amount == 2 * PRICE
    assert len(provider.pool.runs) == 2


async def test_cannot_spend_one_voucher_on_two_concurrent_jobs(
    provider: ProviderSide, client: NodeKey
) -> None:
    fund(provider, client)
    first = provider.voucher_request(client, PRICE)
    second = provider.voucher_request(client, PRICE)
    answers = await asyncio.gather(provider.handle(client, first), provider.handle(client, second))
    codes = sorted(type(frames[-1]).__name__ for frames in answers)
    assert codes == ["JobRejected", "JobResult"]
    assert len(provider.pool.runs) == 1


async def test_can_run_an_escrow_job_and_put_its_result_on_chain_first(
    provider: ProviderSide, client: NodeKey
) -> None:
    request = await provider.escrow_request(client)
    result = result_of(await provider.handle(client, request))

    assert result.receipt.job_id == request.job_id
    assert verify_receipt(provider.market.domain(), result.receipt, result.signature, provider.me)
    assert provider.market.called("claim_job") == [(request.job_id, provider.me)]
    [(job_id, receipt, signature)] = provider.market.called("submit_result")
    assert (job_id, receipt, signature) == (request.job_id, result.receipt, result.signature)
    assert provider.market.jobs[request.job_id].status is ChainJobStatus.SUBMITTED
    stored = await provider.stored_job(request)
    assert stored is not None
    assert stored.state == JobState.DELIVERED
    assert await provider.db.run(provider.db.vouchers.get, client.address, provider.me) is None


# rejections -------------------------------------------------------------------------------------


async def test_cannot_have_a_model_run_that_the_provider_does_not_serve(
    provider: ProviderSide, client: NodeKey
) -> None:
    fund(provider, client)
    request = provider.voucher_request(client, PRICE, model=OTHER_MODEL)
    assert rejection(await provider.handle(client, request)).code == "unknown_model"
    await assert_nothing_taken(provider, client, request)


async def test_cannot_offer_less_than_the_providers_price(provider: ProviderSide, client: NodeKey) -> None:
    fund(provider, client)
    request = provider.voucher_request(client, PRICE, max_price=PRICE - 1)
    assert rejection(await provider.handle(client, request)).code == "price_too_low"
    await assert_nothing_taken(provider, client, request)


async def test_cannot_send_an_input_larger_than_the_provider_takes(tmp_path: Path, client: NodeKey) -> None:
    provider = new_provider(tmp_path, max_input_bytes=4)
    fund(provider, client)
    request = provider.voucher_request(client, PRICE)
    assert rejection(await provider.handle(client, request)).code == "input_too_large"
    await assert_nothing_taken(provider, client, request)


async def test_cannot_queue_a_job_past_a_full_queue(tmp_path: Path, client: NodeKey) -> None:
    provider = new_provider(tmp_path, max_queue=0)
    fund(provider, client)
    provider.pool.hold()
    first = asyncio.ensure_future(provider.handle(client, provider.voucher_request(client, PRICE)))
    await provider.pool.started.wait()

    second = provider.voucher_request(client, 2 * PRICE)
    assert rejection(await provider.handle(client, second)).code == "queue_full"
    assert await provider.stored_job(second) is None
    assert len(provider.pool.runs) == 1
    provider.pool.release()
    result_of(await first)


async def test_cannot_send_the_input_as_a_blob(provider: ProviderSide, client: NodeKey) -> None:
    fund(provider, client)
    request = dataclasses.replace(
        provider.voucher_request(client, PRICE), input=BlobRef(sha256(INPUT), len(INPUT))
    )
    assert rejection(await provider.handle(client, request)).code == "blob_input"
    await assert_nothing_taken(provider, client, request)


@pytest.mark.parametrize(
    ("forgery", "says"),
    [
        ("pays_someone_else", "not this provider"),
        ("from_someone_else", "but the request came from"),
        ("malformed_signature", "malformed"),
        ("signed_by_someone_else", "not by the client"),
    ],
)
async def test_cannot_pay_with_a_bad_voucher(
    provider: ProviderSide, client: NodeKey, stranger: NodeKey, forgery: str, says: str
) -> None:
    fund(provider, client)
    fund(provider, stranger)
    request = {
        "pays_someone_else": lambda: provider.voucher_request(client, PRICE, payee=stranger.address),
        "from_someone_else": lambda: provider.voucher_request(
            client, PRICE, payer=stranger.address, signer=stranger
        ),
        "malformed_signature": lambda: provider.voucher_request(client, PRICE, signature=b"\x01" * 65),
        "signed_by_someone_else": lambda: provider.voucher_request(client, PRICE, signer=stranger),
    }[forgery]()
    rejected = rejection(await provider.handle(client, request))
    assert rejected.code == "bad_voucher"
    assert says in rejected.reason
    await assert_nothing_taken(provider, client, request)
    assert await provider.db.run(provider.db.vouchers.get, stranger.address, provider.me) is None


async def test_cannot_pay_with_a_voucher_below_the_price(provider: ProviderSide, client: NodeKey) -> None:
    fund(provider, client)
    request = provider.voucher_request(client, PRICE - 1)
    assert rejection(await provider.handle(client, request)).code == "voucher_too_low"
    await assert_nothing_taken(provider, client, request)


async def test_cannot_pay_with_a_voucher_the_deposit_does_not_back(
    provider: ProviderSide, client: NodeKey
) -> None:
    fund(provider, client, PRICE - 1)
    request = provider.voucher_request(client, PRICE)
    assert rejection(await provider.handle(client, request)).code == "insufficient_deposit"
    await assert_nothing_taken(provider, client, request)


async def test_cannot_pay_with_a_voucher_that_only_the_deposit_or_another_reserve_backs(
    provider: ProviderSide, client: NodeKey, stranger: NodeKey
) -> None:
    # Unreserved money can be withdrawn, another provider's reserve redeemed by it: neither is ours.
    provider.market.balances[client.address] = 100 * PRICE
    provider.market.reserves[client.address, stranger.address] = 100 * PRICE
    request = provider.voucher_request(client, PRICE)
    rejected = rejection(await provider.handle(client, request))
    assert (rejected.code, "reserve for this provider" in rejected.reason) == ("insufficient_deposit", True)
    await assert_nothing_taken(provider, client, request)


async def test_cannot_pay_with_a_voucher_out_of_a_reserve_the_client_is_releasing(
    provider: ProviderSide, client: NodeKey
) -> None:
    fund(provider, client, 2 * PRICE)
    await provider.market.request_release(provider.me, PRICE + 1, sender=client.account)
    request = provider.voucher_request(client, PRICE)
    assert rejection(await provider.handle(client, request)).code == "insufficient_deposit"
    await assert_nothing_taken(provider, client, request)


async def test_can_run_a_voucher_job_the_reserve_and_earlier_payments_cover(
    provider: ProviderSide, client: NodeKey
) -> None:
    provider.market.paid_out[client.address, provider.me] = 5 * PRICE
    fund(provider, client, PRICE)
    request = provider.voucher_request(client, 6 * PRICE)
    result = result_of(await provider.handle(client, request))
    assert result.receipt.job_id == provider.signed_id(request)
    assert provider.pool.runs != []


async def test_cannot_be_paid_by_an_escrow_that_does_not_exist(
    provider: ProviderSide, client: NodeKey
) -> None:
    request = await provider.escrow_request(client)
    del provider.market.jobs[request.job_id]
    assert rejection(await provider.handle(client, request)).code == "not_escrowed"
    await assert_nothing_taken(provider, client, request)


async def test_cannot_be_paid_by_an_escrow_someone_else_requested(
    provider: ProviderSide, client: NodeKey, stranger: NodeKey
) -> None:
    request = await provider.escrow_request(stranger)
    rejected = rejection(await provider.handle(client, request))
    assert (rejected.code, "not requested by this client" in rejected.reason) == ("not_escrowed", True)
    await assert_nothing_taken(provider, client, request)


@pytest.mark.parametrize("named", ["stranger", None])
async def test_cannot_be_paid_by_an_escrow_that_does_not_name_the_provider(
    provider: ProviderSide, client: NodeKey, stranger: NodeKey, named: str | None
) -> None:
    request = await provider.escrow_request(client, named=stranger.address if named else None)
    assert rejection(await provider.handle(client, request)).code == "not_named"
    await assert_nothing_taken(provider, client, request)


async def test_cannot_be_paid_by_an_escrow_holding_less_than_the_price(
    provider: ProviderSide, client: NodeKey
) -> None:
    request = await provider.escrow_request(client, price=PRICE - GWEI)
    rejected = rejection(await provider.handle(client, request))
    assert (rejected.code, "the escrow holds" in rejected.reason) == ("price_too_low", True)
    await assert_nothing_taken(provider, client, request)


@pytest.mark.parametrize("differs", ["model", "input"])
async def test_cannot_send_a_job_other_than_the_escrowed_one(
    provider: ProviderSide, client: NodeKey, differs: str
) -> None:
    if differs == "model":
        request = await provider.escrow_request(client, model=OTHER_MODEL, sent_model=MODEL)
    else:
        request = await provider.escrow_request(client, sent_input=b"another input")
    assert rejection(await provider.handle(client, request)).code == "terms_mismatch"
    await assert_nothing_taken(provider, client, request)


async def test_cannot_hand_over_an_escrow_result_whose_claim_fails(
    provider: ProviderSide, client: NodeKey
) -> None:
    """A job named for this provider runs before it is claimed; a claim that fails (the client took
    its escrow back meanwhile) hands nothing over and puts nothing on chain."""
    request = await provider.escrow_request(client)
    provider.market.fail("claim_job", reverted("JobNotRequested"))
    frames = await provider.handle(client, request)
    assert not any(isinstance(frame, JobResult) for frame in frames)
    assert isinstance(frames[-1], JobFailed)
    assert frames[-1].code == "claim_failed"
    assert provider.market.called("submit_result") == []
    assert provider.market.jobs[request.job_id].status is ChainJobStatus.REQUESTED
    stored = await provider.stored_job(request)
    assert stored is not None
    assert stored.state == JobState.FAILED


async def test_can_keep_a_claim_whose_answer_was_lost(provider: ProviderSide, client: NodeKey) -> None:
    """The claim lands but its answer does not: the provider reads the chain and serves the job."""
    real = provider.market.claim_job

    async def landed_but_answer_lost(job_id: bytes, *, sender: object) -> object:
        await real(job_id, sender=sender)
        raise chain_down()

    provider.market.claim_job = landed_but_answer_lost  # type: ignore[method-assign]
    request = await provider.escrow_request(client)
    result_of(await provider.handle(client, request))
    assert provider.market.jobs[request.job_id].status is ChainJobStatus.SUBMITTED


async def test_cannot_lose_stake_over_an_input_the_model_refuses(
    provider: ProviderSide, client: NodeKey
) -> None:
    """The attacker escrows a job whose input the model refuses, hoping the provider claims it and
    lets the claim expire (which costs stake). The provider runs it before claiming: nothing claimed."""
    request = await provider.escrow_request(client)
    provider.pool.fail(ExecutorError("bad input: not a tensor"))
    frames = await provider.handle(client, request)
    assert isinstance(frames[-1], JobFailed)
    assert provider.market.called("claim_job") == []
    assert provider.market.jobs[request.job_id].status is ChainJobStatus.REQUESTED


async def test_cannot_cut_an_escrowed_run_short_with_the_clients_own_deadline(
    provider: ProviderSide, client: NodeKey
) -> None:
    """The attacker escrows with an hour of room but tells the provider the job is due now: only the
    chain's deadline counts for the run, so the provider does not time out and forfeit the claim."""
    request = await provider.escrow_request(client, deadline_s=3600)
    request = dataclasses.replace(request, deadline_ms=int(time.time() * 1000) - 1)
    result_of(await provider.handle(client, request))
    [(_, _, timeout_s)] = provider.pool.runs
    assert timeout_s is not None
    assert timeout_s > 3600 - provider_jobs.SUBMIT_ROOM_S - 60
    assert provider.market.jobs[request.job_id].status is ChainJobStatus.SUBMITTED


@pytest.mark.parametrize("payment", ["voucher", "escrow"])
async def test_cannot_take_a_job_while_the_chain_is_unreachable(
    provider: ProviderSide, client: NodeKey, payment: str
) -> None:
    fund(provider, client)
    if payment == "voucher":
        request = provider.voucher_request(client, PRICE)
        provider.market.fail("reserve_of", chain_down())
    else:
        request = await provider.escrow_request(client)
        provider.market.fail("job", chain_down())
    assert rejection(await provider.handle(client, request)).code == "unavailable"
    await assert_nothing_taken(provider, client, request)


# failed runs ------------------------------------------------------------------------------------


async def test_can_fail_a_voucher_job_and_free_what_its_voucher_covered(
    provider: ProviderSide, client: NodeKey
) -> None:
    fund(provider, client)
    provider.pool.fail(ExecutorError("the worker crashed"))
    failed = provider.voucher_request(client, PRICE)
    frames = await provider.handle(client, failed)

    assert isinstance(frames[-1], JobFailed)
    assert frames[-1].code == "execution"
    stored = await provider.stored_job(failed)
    assert stored is not None
    assert stored.state == JobState.FAILED
    # The amount the failed job took is free again: the same voucher pays for the next one.
    retry = provider.voucher_request(client, PRICE)
    result_of(await provider.handle(client, retry))


async def test_can_fail_an_escrow_job_without_submitting_anything(
    provider: ProviderSide, client: NodeKey
) -> None:
    provider.pool.fail(ExecutorError("out of memory"))
    request = await provider.escrow_request(client)
    frames = await provider.handle(client, request)
    assert isinstance(frames[-1], JobFailed)
    assert provider.market.called("submit_result") == []
    stored = await provider.stored_job(request)
    assert stored is not None
    assert stored.state == JobState.FAILED


async def test_can_hand_over_an_escrow_result_once_a_retried_submission_lands(
    provider: ProviderSide, client: NodeKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast_submission_retries(monkeypatch)
    request = await provider.escrow_request(client)
    provider.market.fail("submit_result", chain_down(), times=2)
    result_of(await provider.handle(client, request))
    assert provider.market.jobs[request.job_id].status is ChainJobStatus.SUBMITTED
    stored = await provider.stored_job(request)
    assert stored is not None
    assert stored.state == JobState.DELIVERED


async def test_cannot_hand_over_an_escrow_result_the_chain_does_not_hold(
    provider: ProviderSide, client: NodeKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast_submission_retries(monkeypatch)
    monkeypatch.setattr(provider_jobs, "SUBMIT_ROOM_S", 0.5)
    request = await provider.escrow_request(client, deadline_s=2)
    provider.market.fail("submit_result", chain_down(), times=1000)
    frames = await provider.handle(client, request)
    assert not any(isinstance(frame, JobResult) for frame in frames)
    assert isinstance(frames[-1], JobFailed)
    assert frames[-1].code == "submission_failed"
    assert "deadline" in frames[-1].reason
    stored = await provider.stored_job(request)
    assert stored is not None
    assert stored.state == JobState.FAILED
    assert "deadline" in (stored.status.reason or "")


async def test_cannot_hand_over_an_escrow_result_the_chain_refused(
    provider: ProviderSide, client: NodeKey
) -> None:
    request = await provider.escrow_request(client)
    provider.market.fail("submit_result", reverted("DeadlinePassed"))
    frames = await provider.handle(client, request)
    assert not any(isinstance(frame, JobResult) for frame in frames)
    assert isinstance(frames[-1], JobFailed)
    assert frames[-1].code == "submission_failed"
    stored = await provider.stored_job(request)
    assert stored is not None
    assert stored.state == JobState.FAILED
    assert "refused" in (stored.status.reason or "")


# restart ----------------------------------------------------------------------------------------


async def test_cannot_reuse_a_voucher_for_a_job_still_live_after_a_restart(
    provider: ProviderSide, client: NodeKey
) -> None:
    fund(provider, client)
    result_of(await provider.handle(client, provider.voucher_request(client, PRICE)))

    restarted = provider.restarted()
    await restarted.load_covered()
    again = restarted.voucher_request(client, PRICE)
    assert rejection(await restarted.handle(client, again)).code == "voucher_too_low"
    assert await restarted.stored_job(again) is None
    result_of(await restarted.handle(client, restarted.voucher_request(client, 2 * PRICE)))


async def test_can_free_a_job_whose_client_went_away_mid_run(provider: ProviderSide, client: NodeKey) -> None:
    fund(provider, client)
    provider.pool.hold()
    request = provider.voucher_request(client, PRICE)
    with provider.events.subscribe(request.job_id) as changes:
        frames = provider.jobs.handle(peer_of(client), request)
        assert isinstance(await anext(frames), JobAccepted)
        await provider.pool.started.wait()
        await frames.aclose()  # the client's stream closed
        provider.pool.release()
        with contextlib.suppress(TimeoutError):
            while not (await asyncio.wait_for(changes.get(), 1.0)).status.terminal:
                pass
    stored = await provider.stored_job(request)
    assert stored is not None
    assert stored.state == JobState.FAILED
    assert "client went away" in (stored.status.reason or "")
    result_of(await provider.handle(client, provider.voucher_request(client, PRICE)))


async def test_can_raise_the_price_for_the_next_jobs(provider: ProviderSide, client: NodeKey) -> None:
    fund(provider, client)
    provider.jobs.set_price(MODEL, 2 * PRICE)
    cheap = provider.voucher_request(client, 2 * PRICE, max_price=PRICE)
    assert rejection(await provider.handle(client, cheap)).code == "price_too_low"
    short = provider.voucher_request(client, PRICE, max_price=2 * PRICE)
    assert rejection(await provider.handle(client, short)).code == "voucher_too_low"
    paid = provider.voucher_request(client, 2 * PRICE, max_price=2 * PRICE)
    result_of(await provider.handle(client, paid))
    stored = await provider.stored_job(paid)
    assert stored is not None
    assert stored.price_wei == 2 * PRICE


# escrowed jobs outlive their stream and their process --------------------------------------------


async def test_can_serve_an_escrowed_job_to_the_end_when_its_client_goes_away(
    provider: ProviderSide, client: NodeKey
) -> None:
    """A claim left unfinished costs stake: the job runs and its result goes on chain anyway."""
    provider.pool.hold()
    request = await provider.escrow_request(client)
    frames = provider.jobs.handle(peer_of(client), request)
    assert isinstance(await anext(frames), JobAccepted)
    await provider.pool.started.wait()
    await frames.aclose()  # the client's stream closed
    provider.pool.release()
    await provider.settled()
    assert provider.market.jobs[request.job_id].status is ChainJobStatus.SUBMITTED
    stored = await provider.stored_job(request)
    assert stored is not None
    assert stored.state == JobState.DELIVERED


async def test_can_give_an_escrowed_result_again_to_its_requester_and_nobody_else(
    provider: ProviderSide, client: NodeKey, stranger: NodeKey
) -> None:
    request = await provider.escrow_request(client)
    first = result_of(await provider.handle(client, request))
    again = result_of(await provider.handle(client, request))
    assert (again.receipt, again.signature, again.output) == (first.receipt, first.signature, first.output)
    assert len(provider.pool.runs) == 1
    assert len(provider.market.called("claim_job")) == 1
    # A stranger who learnt the on-chain id gets neither the output nor a second run.
    rejected = rejection(await provider.handle(stranger, request))
    assert rejected.code == "not_escrowed"
    assert "not requested by this client" in rejected.reason
    assert len(provider.pool.runs) == 1


async def test_can_join_an_escrowed_run_under_way_when_sending_the_request_again(
    provider: ProviderSide, client: NodeKey
) -> None:
    provider.pool.hold()
    request = await provider.escrow_request(client)
    first = asyncio.create_task(provider.handle(client, request))
    await provider.pool.started.wait()
    second = asyncio.create_task(provider.handle(client, request))
    await asyncio.sleep(0.05)
    provider.pool.release()
    results = [result_of(frames) for frames in await asyncio.gather(first, second)]
    assert results[0].receipt == results[1].receipt
    assert len(provider.pool.runs) == 1


async def stop_mid_run(provider: ProviderSide, client: NodeKey) -> JobRequest:
    """An escrowed job claimed and running when the provider's process dies."""
    provider.pool.hold()
    request = await provider.escrow_request(client)
    frames = provider.jobs.handle(peer_of(client), request)
    assert isinstance(await anext(frames), JobAccepted)
    await provider.pool.started.wait()
    for task in provider.spawned:
        task.cancel()
    await asyncio.gather(*provider.spawned, return_exceptions=True)
    provider.spawned.clear()
    with contextlib.suppress(BaseException):
        await frames.aclose()
    provider.pool.release()
    return request


async def test_can_resume_an_escrowed_job_after_a_chain_hiccup_at_restart(
    provider: ProviderSide, client: NodeKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(provider_jobs, "RESUME_RETRY_S", (0.01,))
    request = await stop_mid_run(provider, client)
    restarted = provider.restarted()
    provider.market.fail("job", chain_down())  # one read fails, once
    await restarted.jobs.resume()
    await restarted.settled()
    assert provider.market.jobs[request.job_id].status is ChainJobStatus.SUBMITTED
    resumed = await restarted.stored_job(request)
    assert resumed is not None
    assert resumed.state == JobState.DELIVERED


async def test_can_resume_a_claimed_escrowed_job_after_a_restart(
    provider: ProviderSide, client: NodeKey
) -> None:
    request = await stop_mid_run(provider, client)
    stored = await provider.stored_job(request)
    assert stored is not None
    assert stored.state in (JobState.ACCEPTED, JobState.RUNNING)
    restarted = provider.restarted()
    await restarted.jobs.resume()
    await restarted.settled()
    assert provider.market.jobs[request.job_id].status is ChainJobStatus.SUBMITTED
    resumed = await restarted.stored_job(request)
    assert resumed is not None
    assert resumed.state == JobState.DELIVERED
    # The client that lost its stream asks again and gets the resumed run's result.
    result = result_of(await restarted.handle(client, request))
    assert result.output == b"out:" + INPUT
    assert result.receipt.job_id == request.job_id


async def test_cannot_resume_an_escrowed_job_whose_deadline_has_no_room_left(
    provider: ProviderSide, client: NodeKey
) -> None:
    request = await stop_mid_run(provider, client)
    provider.market.advance(3600 - 30)
    restarted = provider.restarted()
    await restarted.jobs.resume()
    await restarted.settled()
    stored = await restarted.stored_job(request)
    assert stored is not None
    assert stored.state == JobState.FAILED
    assert "too close to run and submit" in (stored.status.reason or "")
    # It was never claimed (a named job runs before its claim): no stake rides on it.
    assert provider.market.jobs[request.job_id].status is ChainJobStatus.REQUESTED


async def test_cannot_frame_a_provider_by_requesting_a_finished_job_again(
    provider: ProviderSide, client: NodeKey
) -> None:
    """The attacker reuses a finished job's salt, so the same on-chain id comes back. A second
    receipt for it with another output (GPU kernels are not bit-exact) would 'prove' equivocation
    against the first: the provider never signs one id twice."""
    first = await provider.escrow_request(client)
    result_of(await provider.handle(client, first))
    terms = provider.market.jobs[first.job_id].terms
    provider.market.advance(CHALLENGE_WINDOW_S + 1)
    await provider.market.finalize(first.job_id, sender=client.account)
    again = await provider.market.request_job(
        MODEL,
        price=PRICE,
        deadline=provider.market.now + 3600,
        input_hash=sha256(INPUT),
        provider=provider.me,
        salt=terms.salt,
        sender=client.account,
    )
    assert again.job_id == first.job_id
    rejected = rejection(await provider.handle(client, first))
    assert rejected.code == "duplicate_job"
    assert len(provider.pool.runs) == 1
    assert provider.market.called("claim_job") == [(first.job_id, provider.me)]
