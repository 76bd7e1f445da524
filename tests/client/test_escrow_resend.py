"""An escrowed attempt whose answer was lost is asked for again from the provider holding its
claim, never paid to a second provider; an escrow nobody claimed is taken back before moving on.

Each test is an attacker's or an accident's steps: a stream that breaks after the claim, a client
restarted mid-job, a provider that refuses a job and then claims it anyway."""

from __future__ import annotations

import pytest
from client_support import GWEI, INPUT, ClientSide, output_for

from node.chain.market import JobStatus as ChainJobStatus
from node.client import pipeline as pipeline_module
from node.domain.state import AttemptOutcome, JobState, PaymentPath
from node.errors import P2PError, PeerTimeout, TransactionReverted
from node.p2p.job_messages import JobFailed, JobRejected


def outcomes(view: object) -> list[tuple[str, AttemptOutcome | None]]:
    return [(a.provider, a.outcome) for a in view.attempts]  # type: ignore[attr-defined]


@pytest.mark.parametrize("lost", ["died", "timed_out", "rejected"])
async def test_can_get_an_escrowed_result_again_from_the_provider_holding_its_claim(
    client: ClientSide, lost: str
) -> None:
    first = client.provider(price=1 * GWEI)
    second = client.provider(price=2 * GWEI)
    answer = {
        "died": lambda r: P2PError("the stream was reset"),
        "timed_out": lambda r: PeerTimeout("the provider stayed silent"),
        "rejected": lambda r: JobRejected("queue_full", "refused, yet claimed"),
    }[lost]
    first.behaviour = first.claiming_then(answer)
    await client.start()
    view = await client.finished((await client.submit(PaymentPath.ESCROW)).job_id)
    await client.stop()

    assert view.state is JobState.VERIFIED
    assert view.output == output_for(INPUT)
    assert outcomes(view) == [(first.address, None)]
    assert len(client.requests_to(first)) == 2
    assert client.requests_to(second) == []
    # One escrow, paying the provider that ran the job; nothing cancelled, nothing paid twice.
    assert len(client.market.called("request_job")) == 1
    assert client.market.called("cancel_job") == []
    [onchain] = client.market.jobs.values()
    assert (onchain.status, onchain.provider) == (ChainJobStatus.SUBMITTED, first.address)


async def test_cannot_make_a_client_pay_twice_by_refusing_a_job_and_claiming_it_later(
    client: ClientSide,
) -> None:
    """The attacker refuses the escrowed job, hoping the client pays another provider, then claims
    the first escrow and puts a result on chain to be paid for it too. The client took the escrow
    back before moving on, so the claim finds nothing to claim."""
    attacker = client.provider(price=1 * GWEI)
    honest = client.provider(price=2 * GWEI)
    attacker.behaviour = attacker.rejecting("queue_full")
    await client.start()
    view = await client.finished((await client.submit(PaymentPath.ESCROW)).job_id)
    await client.stop()

    assert outcomes(view) == [(attacker.address, AttemptOutcome.REJECTED), (honest.address, None)]
    [(first_escrow,)] = client.market.called("cancel_job")
    assert first_escrow not in client.market.jobs
    with pytest.raises(TransactionReverted) as refused:
        await client.market.claim_job(first_escrow, sender=attacker.key.account)
    assert refused.value.error_name == "JobNotRequested"
    assert client.market.earnings[client.me] == 1 * GWEI  # the first escrow, back to the client


@pytest.mark.parametrize("state", [JobState.SENT, JobState.RUNNING, JobState.RESULT])
async def test_can_resume_an_escrowed_job_from_the_provider_holding_its_claim_after_a_restart(
    client: ClientSide, state: JobState
) -> None:
    first = client.provider(price=1 * GWEI)
    second = client.provider(price=2 * GWEI)
    record = await client.stored_job(state, PaymentPath.ESCROW, provider=first)
    await client.market.claim_job(client.onchain_id(record, 0), sender=first.key.account)

    await client.start()
    view = await client.finished(record.job_id.hex())
    await client.stop()

    assert view.state is JobState.VERIFIED
    assert view.output == output_for(INPUT)
    assert outcomes(view) == [(first.address, None)]
    assert len(client.requests_to(first)) == 1
    assert client.requests_to(second) == []
    assert len(client.market.jobs) == 1
    assert client.market.called("cancel_job") == []


async def test_cannot_make_a_client_pay_a_second_provider_by_claiming_and_failing(
    client: ClientSide, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The attacker claims the escrowed job, then answers that it failed, again and again, hoping
    the client pays an honest provider too while its own claim may still be paid (by a result it
    puts on chain). The client asks it again until the job runs out of time and pays nobody else."""
    monkeypatch.setattr(pipeline_module, "RESEND_WAIT_S", (0.05,))
    attacker = client.provider(price=1 * GWEI)
    honest = client.provider(price=2 * GWEI)
    attacker.behaviour = attacker.claiming_then(lambda r: JobFailed("execution", "it broke"), times=10**6)
    await client.start()
    view = await client.finished((await client.submit(PaymentPath.ESCROW, timeout_s=1.0)).job_id)
    await client.stop()

    assert view.state is JobState.FAILED
    assert "holds the escrowed job" in (view.error or "")
    assert client.requests_to(honest) == []
    assert len(client.requests_to(attacker)) > 1
    assert len(client.market.called("request_job")) == 1
