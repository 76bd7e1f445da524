"""The job store: every change is one transaction, then one published record per new state."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from node.domain.records import NewJob
from node.domain.state import ClientState, JobTransitionError, Matched, PaymentMade, PaymentPath, Role, Sent
from node.jobstore.blobs import JobBlobs
from node.jobstore.store import JobStore
from node.storage import Database
from node.types import Address, Hash32, sha256

JOB = Hash32(b"\x01" * 32)
PROVIDER = Address("0x" + "bb" * 20)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[JobStore]:
    db = Database.open(f"sqlite:///{tmp_path / 'gpunode.db'}")
    try:
        yield JobStore(db)
    finally:
        db.close()


def _new_job() -> NewJob:
    return NewJob(
        job_id=JOB,
        role=Role.CLIENT,
        payment=PaymentPath.VOUCHER,
        model_id=Hash32(b"\x02" * 32),
        input_hash=Hash32(b"\x03" * 32),
        price_wei=10,
        client=Address("0x" + "aa" * 20),
        deadline=None,
    )


async def test_can_publish_each_new_state_once_it_is_stored(store: JobStore) -> None:
    with store.watch(JOB) as queue:
        created = await store.create(_new_job())
        moved = await store.apply(JOB, Matched(PROVIDER), PaymentMade(), Sent(), known=created)
    published = [queue.get_nowait() for _ in range(queue.qsize())]
    assert [r.state for r in published] == [
        ClientState.SUBMITTED,
        ClientState.MATCHED,
        ClientState.PAID,
        ClientState.SENT,
    ]
    assert moved == published[-1] == await store.get(JOB)


async def test_cannot_publish_a_change_that_was_not_stored(store: JobStore) -> None:
    created = await store.create(_new_job())
    with store.watch(JOB) as queue, pytest.raises(JobTransitionError):
        # The first move is legal, the second is not: neither is stored, neither is published.
        await store.apply(JOB, Matched(PROVIDER), Sent(), known=created)
    assert queue.empty()
    assert (await store.get(JOB)).state is ClientState.SUBMITTED


async def test_can_write_a_file_before_the_transaction_that_names_it(store: JobStore, tmp_path: Path) -> None:
    blobs = JobBlobs(tmp_path / "blobs", fsync=False)
    seen: list[bool] = []

    def write_input() -> None:
        blobs.write(b"the input")
        seen.append(store.db.jobs.find(JOB) is None)  # on disk while the job is not stored yet

    await store.create(_new_job(), before=write_input)
    assert seen == [True]
    assert await blobs.get(sha256(b"the input")) == b"the input"


async def test_cannot_store_a_job_whose_file_was_not_written(store: JobStore) -> None:
    def fail() -> None:
        raise OSError("disk full")

    with store.watch(JOB) as queue, pytest.raises(OSError, match="disk full"):
        await store.create(_new_job(), before=fail)
    assert queue.empty()
    assert store.db.jobs.find(JOB) is None
