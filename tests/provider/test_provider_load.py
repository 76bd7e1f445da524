"""A provider's load: jobs beyond its slots wait, admission reports their queue position, and
each change of free slots reaches the listeners that put it in adverts."""

from __future__ import annotations

from node.provider.runner import Load
from node.scheduler import AdmissionPolicy, Admitted, JobOffer, admit
from node.types import Hash32

MODEL = Hash32(b"\x07" * 32)


def test_can_count_running_and_queued_jobs_and_report_free_slots_to_listeners() -> None:
    load = Load(slots=2)
    seen: list[tuple[int, int]] = []
    load.listeners.append(lambda free, queued: seen.append((free, queued)))
    policy = AdmissionPolicy(price_floor_wei={MODEL: 1}, slots=2, max_queue=8)
    positions = []
    for _ in range(4):
        admitted = admit(JobOffer(MODEL, 1, 10), load.snapshot(), policy)
        assert isinstance(admitted, Admitted)
        positions.append(admitted.queue_position)
        load.started()
    assert positions == [0, 0, 1, 2]
    assert (load.running, load.queued, load.free_slots) == (2, 2, 0)
    for _ in range(5):  # one more than started: never below zero
        load.finished()
    assert (load.running, load.queued, load.free_slots) == (0, 0, 2)
    assert seen == [(1, 0), (0, 0), (0, 1), (0, 2), (0, 1), (0, 0), (1, 0), (2, 0), (2, 0)]
