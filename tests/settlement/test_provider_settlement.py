"""A provider's settlement run once at a time over a fake chain: vouchers redeemed in one batch
and their jobs paid, escrow jobs finalized once the challenge window closes, jobs settled by
someone else recognised, chain errors leaving everything as it was for the next round, and the
start-up reconciliation with the chain."""

from __future__ import annotations

import pytest
from job_fakes import CHALLENGE_WINDOW_S, chain_down, reverted
from settlement_support import DEADLINE_S, PRICE, Settlements

from node.chain.keys import NodeKey
from node.chain.market import JobStatus as ChainJobStatus
from node.domain.state import JobState
from node.errors import ChainError, SettlementError


@pytest.fixture
def clients() -> tuple[NodeKey, NodeKey]:
    return NodeKey.generate(), NodeKey.generate()


# vouchers ---------------------------------------------------------------------------------------


async def test_can_redeem_every_voucher_in_one_call_and_mark_the_jobs_paid(
    settle: Settlements, clients: tuple[NodeKey, NodeKey]
) -> None:
    alice, bob = clients
    settle.fund(alice)
    settle.fund(bob)
    first = await settle.provider_voucher_job(alice, PRICE)
    second = await settle.provider_voucher_job(alice, 2 * PRICE)
    third = await settle.provider_voucher_job(bob, PRICE)

    report = await settle.provider.settle()

    [(batch,)] = settle.market.called("redeem_vouchers")
    assert sorted(v.cumulative_amount for v, _ in batch) == [PRICE, 2 * PRICE]
    assert (report.vouchers_redeemed, report.redeemed_wei) == (2, 3 * PRICE)
    assert report.withdrawn_wei == 3 * PRICE
    assert settle.market.paid_out[alice.address, settle.provider_key.address] == 2 * PRICE
    assert await settle.stored_voucher(alice) == (2 * PRICE, 2 * PRICE)
    assert await settle.stored_voucher(bob) == (PRICE, PRICE)
    for job in (first, second, third):
        assert await settle.state(job.job_id) is JobState.PAID

    again = await settle.provider.settle()
    assert again.vouchers_redeemed == 0
    assert len(settle.market.called("redeem_vouchers")) == 1


async def test_cannot_redeem_a_small_amount_until_it_is_worth_the_gas(
    settle: Settlements, clients: tuple[NodeKey, NodeKey]
) -> None:
    alice, _ = clients
    settle.fund(alice)
    job = await settle.provider_voucher_job(alice, PRICE)
    report = await settle.provider.tick()
    assert report.vouchers_redeemed == 0
    assert settle.market.called("redeem_vouchers") == []
    assert await settle.state(job.job_id) is JobState.DELIVERED

    # A withdrawal of the unreserved deposit cannot reach the provider's money: nothing hurries.
    settle.market.withdrawal_at[alice.address] = settle.market.now + 3600
    assert (await settle.provider.tick()).vouchers_redeemed == 0
    # A release of the reserve for this provider could: its voucher is due at once.
    await settle.market.request_release(settle.provider_key.address, PRICE, sender=alice.account)
    assert (await settle.provider.tick()).vouchers_redeemed == 1
    assert await settle.state(job.job_id) is JobState.PAID


async def test_can_redeem_again_after_the_chain_failed_a_round(
    settle: Settlements, clients: tuple[NodeKey, NodeKey]
) -> None:
    alice, _ = clients
    settle.fund(alice)
    job = await settle.provider_voucher_job(alice, PRICE)
    settle.market.fail("redeem_vouchers", chain_down())
    with pytest.raises(SettlementError, match="retry once the chain answers"):
        await settle.provider.settle()
    assert await settle.stored_voucher(alice) == (PRICE, 0)
    assert await settle.state(job.job_id) is JobState.DELIVERED

    assert (await settle.provider.settle()).redeemed_wei == PRICE
    assert await settle.state(job.job_id) is JobState.PAID


async def test_cannot_mark_a_job_paid_whose_client_has_no_funds_left(
    settle: Settlements, clients: tuple[NodeKey, NodeKey]
) -> None:
    alice, _ = clients
    job = await settle.provider_voucher_job(alice, PRICE)
    report = await settle.provider.settle()
    assert report.vouchers_redeemed == 0
    assert await settle.stored_voucher(alice) == (PRICE, 0)
    assert await settle.state(job.job_id) is JobState.DELIVERED


async def test_cannot_redeem_a_voucher_out_of_money_not_reserved_for_the_provider(
    settle: Settlements, clients: tuple[NodeKey, NodeKey]
) -> None:
    alice, bob = clients
    settle.market.balances[alice.address] = 100 * PRICE
    settle.market.reserves[alice.address, bob.address] = 100 * PRICE
    job = await settle.provider_voucher_job(alice, PRICE)
    report = await settle.provider.settle()
    assert report.vouchers_redeemed == 0
    assert settle.market.balances[alice.address] == 100 * PRICE
    assert settle.market.reserves[alice.address, bob.address] == 100 * PRICE
    assert await settle.stored_voucher(alice) == (PRICE, 0)
    assert await settle.state(job.job_id) is JobState.DELIVERED


# escrow -----------------------------------------------------------------------------------------


async def test_can_finalize_an_escrow_job_only_after_the_challenge_window(
    settle: Settlements, clients: tuple[NodeKey, NodeKey]
) -> None:
    alice, _ = clients
    record, _ = await settle.provider_escrow_job(alice)
    assert (await settle.provider.tick()).jobs_finalized == 0
    assert settle.market.called("finalize") == []
    assert await settle.state(record.job_id) is JobState.DELIVERED

    settle.market.advance(CHALLENGE_WINDOW_S + 1)
    report = await settle.provider.tick()
    assert (report.jobs_finalized, report.finalized_wei) == (1, PRICE)
    assert await settle.state(record.job_id) is JobState.PAID
    assert settle.market.earnings[settle.provider_key.address] == PRICE


async def test_can_finalize_in_a_later_round_after_the_chain_failed(
    settle: Settlements, clients: tuple[NodeKey, NodeKey]
) -> None:
    alice, _ = clients
    record, _ = await settle.provider_escrow_job(alice)
    settle.market.advance(CHALLENGE_WINDOW_S + 1)
    settle.market.fail("finalize", reverted("NotFinalizable"))
    assert (await settle.provider.tick()).jobs_finalized == 0
    assert await settle.state(record.job_id) is JobState.DELIVERED

    assert (await settle.provider.tick()).jobs_finalized == 1
    assert await settle.state(record.job_id) is JobState.PAID


async def test_cannot_settle_anything_while_the_chains_clock_is_unreadable(
    settle: Settlements, clients: tuple[NodeKey, NodeKey]
) -> None:
    alice, _ = clients
    record, _ = await settle.provider_escrow_job(alice)
    settle.market.advance(CHALLENGE_WINDOW_S + 1)
    settle.market.fail("chain_time", chain_down())
    with pytest.raises(ChainError):
        await settle.provider.tick()
    assert await settle.state(record.job_id) is JobState.DELIVERED
    assert (await settle.provider.tick()).jobs_finalized == 1


async def test_can_recognise_a_job_finalized_by_someone_else(
    settle: Settlements, clients: tuple[NodeKey, NodeKey]
) -> None:
    alice, stranger = clients
    record, _ = await settle.provider_escrow_job(alice)
    settle.market.advance(CHALLENGE_WINDOW_S + 1)
    await settle.market.finalize(record.job_id, sender=stranger.account)

    await settle.provider.tick()
    assert await settle.state(record.job_id) is JobState.PAID
    assert len(settle.market.called("finalize")) == 1


async def test_can_recognise_a_job_refunded_to_its_client(
    settle: Settlements, clients: tuple[NodeKey, NodeKey]
) -> None:
    alice, _ = clients
    record, terms = await settle.provider_escrow_job(alice, onchain="claimed")
    settle.market.advance(DEADLINE_S + 1)
    await settle.market.refund(terms, sender=alice.account)

    await settle.provider.tick()
    stored = await settle.db.run(settle.db.jobs.get, record.job_id)
    assert stored.state == JobState.FAILED
    assert "refunded" in (stored.status.reason or "")


# start-up ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("state", [JobState.ACCEPTED, JobState.RUNNING, JobState.SIGNED])
async def test_can_fail_jobs_a_restart_cut_off(
    settle: Settlements, clients: tuple[NodeKey, NodeKey], state: JobState
) -> None:
    alice, _ = clients
    settle.fund(alice)
    cut_off = await settle.provider_voucher_job(alice, PRICE, state)
    delivered = await settle.provider_voucher_job(alice, 2 * PRICE)

    await settle.restarted().provider.reconcile()
    assert await settle.state(cut_off.job_id) is JobState.FAILED
    assert await settle.state(delivered.job_id) is JobState.DELIVERED


async def test_can_take_the_chains_word_for_vouchers_redeemed_while_stopped(
    settle: Settlements, clients: tuple[NodeKey, NodeKey]
) -> None:
    alice, bob = clients
    settle.fund(alice)
    settle.fund(bob)
    paid = await settle.provider_voucher_job(alice, PRICE)
    unpaid = await settle.provider_voucher_job(bob, PRICE)
    # Redeemed on-chain by the provider's previous run, which stopped before recording it.
    settle.market.paid_out[alice.address, settle.provider_key.address] = PRICE

    await settle.restarted().provider.reconcile()
    assert await settle.stored_voucher(alice) == (PRICE, PRICE)
    assert await settle.state(paid.job_id) is JobState.PAID
    assert await settle.stored_voucher(bob) == (PRICE, 0)
    assert await settle.state(unpaid.job_id) is JobState.DELIVERED
    assert settle.market.called("redeem_vouchers") == []


async def test_can_put_a_result_on_chain_again_when_its_transaction_was_dropped(
    settle: Settlements, clients: tuple[NodeKey, NodeKey]
) -> None:
    """A reorg dropped the submission: the job is delivered here, but the chain holds only the
    claim. Left alone, the claim would run out (stake lost) while the client already has the output."""
    record, terms = await settle.provider_escrow_job(clients[0], onchain="claimed")
    await settle.provider.tick()
    assert settle.market.jobs[terms.job_id].status is ChainJobStatus.SUBMITTED
    [(job_id, receipt, _)] = settle.market.called("submit_result")
    assert (job_id, receipt) == (terms.job_id, settle.receipt(terms.job_id))
    assert await settle.state(record.job_id) is JobState.DELIVERED
