"""A client node restarted with a job in each state it can stop in: the state is written to the
store as a stopped node leaves it, a fresh `ClientJobs` resumes it, and the job ends where it
should without paying any provider twice."""

from __future__ import annotations

import pytest
from client_support import GWEI, INPUT, ClientSide, output_for

from node.domain.state import AttemptOutcome, JobState, PaymentPath
from node.p2p.job_messages import VoucherPayment

CHEAP = 1 * GWEI
DEAR = 2 * GWEI

# state stopped in -> how the attempt in flight ends, and who finishes the job
RESUMED = {
    # not yet sent: the same provider carries on
    JobState.SUBMITTED: (None, "first"),
    JobState.MATCHED: (None, "first"),
    JobState.PAID: (None, "first"),
    # the request or its answer died with the process: that provider is lost, the next one runs it
    JobState.SENT: (AttemptOutcome.DIED, "second"),
    JobState.RUNNING: (AttemptOutcome.DIED, "second"),
    JobState.RESULT: (AttemptOutcome.BAD_RESULT, "second"),
    # checked before the stop: nothing is sent again
    JobState.VERIFIED: (None, None),
}


@pytest.mark.parametrize("payment", [PaymentPath.VOUCHER, PaymentPath.ESCROW])
@pytest.mark.parametrize("state", list(RESUMED))
async def test_can_resume_a_job_stopped_in_any_live_state(
    client: ClientSide, state: JobState, payment: PaymentPath
) -> None:
    first = client.provider(price=CHEAP)
    second = client.provider(price=DEAR)
    record = await client.stored_job(state, payment, provider=first)
    escrows_before = len(client.market.jobs)

    await client.start()
    view = await client.finished(record.job_id.hex())
    await client.stop()

    lost, finisher = RESUMED[state]
    settled = JobState.SETTLED if payment is PaymentPath.VOUCHER else JobState.VERIFIED
    assert view.state is settled
    assert view.output == output_for(INPUT)
    done = AttemptOutcome.COMPLETED if payment is PaymentPath.VOUCHER else None
    if finisher == "first" or finisher is None:
        assert [(a.provider, a.outcome) for a in view.attempts] == [(first.address, done)]
        assert len(client.requests_to(first)) == (1 if finisher else 0)
        assert client.requests_to(second) == []
    else:
        assert [(a.provider, a.outcome) for a in view.attempts] == [
            (first.address, lost),
            (second.address, done),
        ]
        assert client.requests_to(first) == []
        assert len(client.requests_to(second)) == 1

    if payment is PaymentPath.VOUCHER:
        # Whatever was signed before the stop stays the most promised: nothing signed twice.
        assert await client.stored_voucher(first) == CHEAP
        if finisher == "second":
            assert await client.stored_voucher(second) == DEAR
        for _, request in client.overlay.requests:
            assert isinstance(request.payment, VoucherPayment)
            assert request.payment.cumulative_amount == (
                CHEAP if request.payment.provider == first.address else DEAR
            )
    else:
        # One escrow per attempt: none requested again for an attempt paid before the stop.
        paid_before = state not in (JobState.SUBMITTED, JobState.MATCHED)
        assert escrows_before == (1 if paid_before else 0)
        assert len(client.market.called("request_job")) - escrows_before + (1 if paid_before else 0) == len(
            view.attempts
        )
        # A lost attempt's escrow that nobody claimed was taken back: only one can pay.
        lost_escrows = len(view.attempts) - 1
        assert len(client.market.called("cancel_job")) == lost_escrows
        assert len(client.market.jobs) == 1


async def test_cannot_escrow_twice_for_an_attempt_requested_just_before_a_stop(client: ClientSide) -> None:
    provider = client.provider(price=CHEAP)
    record = await client.stored_job(JobState.MATCHED, PaymentPath.ESCROW, provider=provider)
    # The request reached the chain; the node stopped before recording the payment.
    onchain = await client.escrow(record, provider, 0)

    await client.start()
    view = await client.finished(record.job_id.hex())
    assert view.state is JobState.VERIFIED
    assert view.onchain_job_id == onchain.hex()
    assert list(client.market.jobs) == [onchain]
    assert len(client.requests_to(provider)) == 1


async def test_can_read_a_settled_job_and_its_result_after_a_restart(client: ClientSide) -> None:
    first = client.provider(price=CHEAP)
    second = client.provider(price=DEAR)
    await client.start()
    job_id = (await client.submit()).job_id
    view = await client.finished(job_id)
    assert view.state is JobState.SETTLED

    await client.restart()
    again = await client.jobs.get(job_id)
    assert (again.state, again.output) == (JobState.SETTLED, output_for(INPUT))
    assert again.receipt is not None
    assert again.receipt.receipt.provider == first.address
    assert client.requests_to(second) == []
