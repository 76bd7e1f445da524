"""A client's settlement of escrow-paid jobs, run once at a time over a fake chain: a verified job
settles when the chain finalizes it, escrow of lost attempts and of results never put on-chain
comes back after the deadline, chain errors are retried next round, and a restart refunds
nothing twice."""

from __future__ import annotations

import pytest
from job_fakes import CHALLENGE_WINDOW_S, chain_down, reverted
from settlement_support import DEADLINE_S, PRICE, Settlements

from node.chain.keys import NodeKey
from node.chain.market import JobStatus as ChainJobStatus
from node.domain.state import AttemptOutcome, JobState
from node.errors import ChainError


@pytest.fixture
def providers() -> tuple[NodeKey, NodeKey]:
    return NodeKey.generate(), NodeKey.generate()


async def test_can_settle_a_verified_job_once_the_chain_finalizes_it(
    settle: Settlements, providers: tuple[NodeKey, NodeKey]
) -> None:
    good, _ = providers
    record = await settle.client_escrow_job(((good, None),))
    terms = settle.client_onchain(record, 0)
    await settle.deliver_onchain(good, terms)

    await settle.client.tick()
    assert await settle.state(record.job_id) is JobState.VERIFIED

    settle.market.advance(CHALLENGE_WINDOW_S + 1)
    await settle.market.finalize(terms.job_id, sender=good.account)
    await settle.client.tick()
    stored = await settle.db.run(settle.db.jobs.get, record.job_id)
    assert stored.state == JobState.SETTLED
    assert stored.status.attempts[-1].outcome is AttemptOutcome.COMPLETED
    assert settle.market.called("refund") == []


async def test_can_take_back_the_escrow_of_a_result_never_put_on_chain(
    settle: Settlements, providers: tuple[NodeKey, NodeKey]
) -> None:
    good, _ = providers
    record = await settle.client_escrow_job(((good, None),))
    terms = settle.client_onchain(record, 0)
    await settle.market.claim_job(terms.job_id, sender=good.account)

    await settle.client.tick()
    assert settle.market.called("refund") == []
    settle.market.advance(DEADLINE_S + 1)
    await settle.client.tick()
    assert await settle.state(record.job_id) is JobState.REFUNDED
    assert terms.job_id not in settle.market.jobs
    # The refund was credited, then withdrawn in the same round.
    assert settle.market.called("withdraw_earnings") == [(settle.client_key.address,)]
    assert settle.market.earnings[settle.client_key.address] == 0


async def test_can_take_back_a_lost_attempt_nobody_claimed_at_once(
    settle: Settlements, providers: tuple[NodeKey, NodeKey]
) -> None:
    """An escrow nobody claimed is cancelled at once: no later claim can make it pay its provider
    for a job another provider ran."""
    lost, good = providers
    record = await settle.client_escrow_job(((lost, AttemptOutcome.REJECTED), (good, None)))
    lost_terms = settle.client_onchain(record, 0)
    await settle.deliver_onchain(good, settle.client_onchain(record, 1))

    assert await settle.client.tick() == PRICE
    assert lost_terms.job_id not in settle.market.jobs
    assert settle.market.called("cancel_job") == [(lost_terms.job_id,)]
    assert settle.market.called("refund") == []
    assert await settle.state(record.job_id) is JobState.VERIFIED
    await settle.client.tick()
    await settle.restarted().client.tick()
    assert settle.market.called("cancel_job") == [(lost_terms.job_id,)]


async def test_can_refund_a_lost_attempt_its_provider_claimed_after_the_deadline_once(
    settle: Settlements, providers: tuple[NodeKey, NodeKey]
) -> None:
    lost, good = providers
    record = await settle.client_escrow_job(((lost, AttemptOutcome.REJECTED), (good, None)))
    lost_terms = settle.client_onchain(record, 0)
    await settle.market.claim_job(lost_terms.job_id, sender=lost.account)
    await settle.deliver_onchain(good, settle.client_onchain(record, 1))

    assert await settle.client.tick() == 0
    assert lost_terms.job_id in settle.market.jobs

    settle.market.advance(DEADLINE_S + 1)
    assert await settle.client.tick() == PRICE
    assert lost_terms.job_id not in settle.market.jobs
    assert settle.market.called("refund") == [(lost_terms.job_id,)]
    assert await settle.state(record.job_id) is JobState.VERIFIED

    # Neither this run nor a restarted one asks for it again.
    await settle.client.tick()
    await settle.restarted().client.tick()
    assert settle.market.called("refund") == [(lost_terms.job_id,)]


async def test_can_refund_in_a_later_round_after_the_chain_failed(
    settle: Settlements, providers: tuple[NodeKey, NodeKey]
) -> None:
    lost, good = providers
    record = await settle.client_escrow_job(((lost, AttemptOutcome.TIMED_OUT), (good, None)))
    lost_terms = settle.client_onchain(record, 0)
    await settle.deliver_onchain(good, settle.client_onchain(record, 1))
    await settle.market.claim_job(lost_terms.job_id, sender=lost.account)
    settle.market.advance(DEADLINE_S + 1)
    settle.market.fail("refund", reverted("NotRefundable"))

    assert await settle.client.tick() == 0
    assert settle.market.jobs[lost_terms.job_id].status is ChainJobStatus.CLAIMED
    assert await settle.client.tick() == PRICE
    assert lost_terms.job_id not in settle.market.jobs


async def test_cannot_settle_anything_while_the_chain_is_unreachable(
    settle: Settlements, providers: tuple[NodeKey, NodeKey]
) -> None:
    lost, good = providers
    record = await settle.client_escrow_job(((lost, AttemptOutcome.DIED), (good, None)))
    settle.market.advance(DEADLINE_S + 1)
    settle.market.fail("chain_time", chain_down())
    with pytest.raises(ChainError):
        await settle.client.tick()
    assert settle.market.called("refund") == []
    assert await settle.state(record.job_id) is JobState.VERIFIED

    assert await settle.client.tick() == PRICE


async def test_cannot_refund_an_attempt_whose_result_is_on_chain(
    settle: Settlements, providers: tuple[NodeKey, NodeKey]
) -> None:
    good, _ = providers
    record = await settle.client_escrow_job(((good, None),))
    await settle.deliver_onchain(good, settle.client_onchain(record, 0))
    settle.market.advance(DEADLINE_S + 1)
    await settle.client.tick()
    assert settle.market.called("refund") == []
    assert await settle.state(record.job_id) is JobState.VERIFIED


async def test_can_take_back_an_abandoned_escrow_in_a_later_round_after_the_chain_failed(
    settle: Settlements, providers: tuple[NodeKey, NodeKey]
) -> None:
    good, _ = providers
    record = await settle.client_escrow_job(((good, None),))
    settle.market.advance(DEADLINE_S + 1)
    settle.market.fail("refund", chain_down())
    await settle.client.tick()  # the failure is logged; the round goes on
    assert await settle.state(record.job_id) is JobState.VERIFIED

    await settle.client.tick()
    assert await settle.state(record.job_id) is JobState.REFUNDED


async def test_cannot_let_one_failing_refund_hold_back_other_jobs(
    settle: Settlements, providers: tuple[NodeKey, NodeKey]
) -> None:
    good, idle = providers
    finalized = await settle.client_escrow_job(((good, None),))
    finalized_terms = settle.client_onchain(finalized, 0)
    await settle.deliver_onchain(good, finalized_terms)
    abandoned = await settle.client_escrow_job(((idle, None),))  # moved last: listed first
    settle.market.advance(DEADLINE_S + 1)
    await settle.market.finalize(finalized_terms.job_id, sender=good.account)
    settle.market.fail("refund", reverted("NotRefundable"), times=10)

    await settle.client.tick()
    assert await settle.state(abandoned.job_id) is JobState.VERIFIED
    assert await settle.state(finalized.job_id) is JobState.SETTLED


async def test_can_refund_an_escrow_that_reached_the_chain_after_a_cancel(
    settle: Settlements, providers: tuple[NodeKey, NodeKey]
) -> None:
    named, _ = providers
    record = await settle.client_escrow_job(((named, AttemptOutcome.ABANDONED),))
    assert record.state == JobState.CANCELLED
    settle.market.advance(DEADLINE_S + 1)
    assert await settle.client.tick() == PRICE
    assert settle.client_onchain(record, 0).job_id not in settle.market.jobs
    assert await settle.state(record.job_id) is JobState.CANCELLED
