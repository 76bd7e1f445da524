"""`JobRunner.run`: an accepted job moves running → signed (receipt stored with the move) →
delivered; a failed run marks the job failed; a restarted runner still records the hand-over."""

from __future__ import annotations

import asyncio

import pytest
from provider_support import INPUT, ProviderSide

from node.chain.eip712 import verify_receipt
from node.chain.keys import NodeKey
from node.domain.state import JobState, JobTransitionError
from node.errors import ExecutorError
from node.types import sha256


async def history(provider: ProviderSide, job_id: bytes) -> list[str]:
    return [entry.to_state.value for entry in await provider.db.run(provider.db.jobs.history, job_id)]


async def test_can_run_a_job_and_store_its_signed_receipt_with_the_move(
    provider: ProviderSide, client: NodeKey
) -> None:
    record = await provider.accepted_job(client)
    signed = await provider.runner.run(record, INPUT, timeout_s=5)

    assert provider.pool.runs == [(record.model_id, INPUT, 5)]
    assert signed.receipt.output_hash == sha256(signed.output)
    assert verify_receipt(provider.market.domain(), signed.receipt, signed.signature, provider.me)
    stored = await provider.db.run(provider.db.receipts.get, record.job_id, provider.me)
    assert stored is not None
    assert stored.signature == signed.signature
    assert (await provider.stored_job(record.job_id)).state == JobState.SIGNED  # type: ignore[union-attr]
    assert await history(provider, record.job_id) == ["running", "signed"]

    await provider.runner.delivered(record.job_id)
    assert (await provider.stored_job(record.job_id)).state == JobState.DELIVERED  # type: ignore[union-attr]


async def test_can_record_a_long_run_as_running_before_it_ends(
    provider: ProviderSide, client: NodeKey
) -> None:
    record = await provider.accepted_job(client)
    provider.pool.hold()
    seen = []
    with provider.events.subscribe(record.job_id) as changes:
        run = asyncio.ensure_future(provider.runner.run(record, INPUT))
        seen.append((await asyncio.wait_for(changes.get(), 5)).state)
        assert provider.runner.load.snapshot().running == 1
        provider.pool.release()
        await run
        seen.append((await asyncio.wait_for(changes.get(), 5)).state)
    assert seen == [JobState.RUNNING, JobState.SIGNED]
    assert provider.runner.load.snapshot().running == 0


async def test_cannot_leave_the_start_being_written_when_the_run_is_cancelled(
    provider: ProviderSide, client: NodeKey
) -> None:
    record = await provider.accepted_job(client)
    provider.pool.hold()
    writing, release = provider.hold_writes()
    run = asyncio.ensure_future(provider.runner.run(record, INPUT))
    await asyncio.wait_for(writing.wait(), 5)  # the run outlasted the delay: its start is being written
    run.cancel()
    await asyncio.wait({run}, timeout=0.05)
    assert not run.done()  # the cancelled run waits for the write it started
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []
    assert (await provider.stored_job(record.job_id)).state == JobState.RUNNING  # type: ignore[union-attr]
    assert provider.runner.load.snapshot().running == 0


@pytest.mark.parametrize("held", [False, True])
async def test_can_fail_a_job_whose_run_fails(provider: ProviderSide, client: NodeKey, held: bool) -> None:
    record = await provider.accepted_job(client)
    provider.pool.fail(ExecutorError("the sandbox ran out of memory"))
    if held:
        provider.pool.hold()
    with provider.events.subscribe(record.job_id) as changes:
        run = asyncio.ensure_future(provider.runner.run(record, INPUT))
        if held:
            # The run failing after its start was written on its own.
            assert (await asyncio.wait_for(changes.get(), 5)).state == JobState.RUNNING
            provider.pool.release()
        with pytest.raises(ExecutorError):
            await run
    stored = await provider.stored_job(record.job_id)
    assert stored is not None
    assert stored.state == JobState.FAILED
    assert "out of memory" in (stored.status.reason or "")
    assert await provider.db.run(provider.db.receipts.get, record.job_id, provider.me) is None
    assert provider.runner.load.snapshot().running == 0


async def test_can_record_a_delivery_after_a_restart(provider: ProviderSide, client: NodeKey) -> None:
    record = await provider.accepted_job(client)
    await provider.runner.run(record, INPUT)

    restarted = provider.restarted()
    await restarted.runner.delivered(record.job_id)
    assert (await restarted.stored_job(record.job_id)).state == JobState.DELIVERED  # type: ignore[union-attr]


async def test_cannot_deliver_a_job_twice_or_run_a_failed_one(
    provider: ProviderSide, client: NodeKey
) -> None:
    record = await provider.accepted_job(client)
    await provider.runner.run(record, INPUT)
    await provider.runner.delivered(record.job_id)
    with pytest.raises(JobTransitionError):
        await provider.runner.delivered(record.job_id)

    failed = await provider.accepted_job(client)
    provider.pool.fail(ExecutorError("crashed"))
    with pytest.raises(ExecutorError):
        await provider.runner.run(failed, INPUT)
    with pytest.raises(JobTransitionError):
        await provider.runner.run(failed, INPUT)
    assert (await provider.stored_job(failed.job_id)).state == JobState.FAILED  # type: ignore[union-attr]
