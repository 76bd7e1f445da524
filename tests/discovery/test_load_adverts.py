"""Adverts follow the provider's load: a significant change of free slots is announced early,
paced below the receivers' flood limit, and changes made meanwhile go out together."""

from __future__ import annotations

import asyncio

import pytest

from node.discovery.pacing import LoadPublication, significant
from node.discovery.refresher import AdvertRefresher
from node.discovery.validation import RateLimiter


@pytest.mark.parametrize(
    ("published", "current", "slots", "worth"),
    [
        (4, 0, 4, True),  # turned busy
        (0, -1, 8, False),  # one job queued of eight slots: not yet
        (0, -2, 8, True),  # a queue of a quarter of the slots
        (0, 1, 8, True),  # free again
        (8, 7, 8, False),  # one of eight: not yet
        (8, 6, 8, True),  # a quarter of the slots
        (2, 1, 2, True),
        (3, 3, 4, False),
        (-3, 1, 4, True),  # the queue drained and a slot is free
    ],
)
def test_can_tell_a_significant_change_of_free_slots(
    published: int, current: int, slots: int, worth: bool
) -> None:
    assert significant(published, current, slots) is worth


def test_can_pace_load_adverts_below_what_receivers_accept_from_one_peer() -> None:
    publication = LoadPublication()
    now = 0.0
    receiver = RateLimiter(per_s=0.5, burst=5, clock=lambda: now)  # the AdvertValidator's defaults
    publication.announced(4, now)
    assert receiver.allow("provider")
    assert publication.due(4, now) is None  # nothing changed
    sent = 1
    free = 4
    # The load swings between busy and idle every 10 ms for a minute: every swing is significant.
    while now < 60:
        now += 0.01
        free = 0 if free else 4
        due = publication.due(free, now)
        if due is not None and due <= now:
            publication.announced(free, now)
            assert receiver.allow("provider"), f"advert {sent} at {now:.2f} s would be dropped"
            sent += 1
    # Burst of three, then 0.4 a second: coalesced into a few dozen adverts, not 6,000.
    assert 20 <= sent <= 3 + 0.4 * 60 + 1


def test_can_say_when_a_paced_change_may_go_out() -> None:
    publication = LoadPublication(per_s=0.5, burst=1)
    publication.announced(2, 10.0)
    assert publication.due(0, 10.0) == pytest.approx(12.0)
    assert publication.due(0, 11.0) == pytest.approx(12.0)
    assert publication.due(0, 12.5) == 12.5
    with pytest.raises(ValueError, match="per_s must be > 0"):
        LoadPublication(per_s=0)


async def test_can_announce_early_when_nudged_and_not_when_the_change_is_not_due() -> None:
    announced = asyncio.Queue[int]()
    due: list[float | None] = [None]

    async def announce() -> None:
        announced.put_nowait(announced.qsize())

    refresher = AdvertRefresher(announce, interval_s=3600, due_in=lambda: due[0])
    task = asyncio.create_task(refresher.run())
    try:
        await asyncio.wait_for(announced.get(), 5)  # the first advert, at once
        refresher.nudge()  # not worth an advert: nothing goes out
        await asyncio.sleep(0.05)
        assert announced.empty()
        due[0] = 0.01
        refresher.nudge()
        refresher.nudge()  # coalesced with the one before
        await asyncio.wait_for(announced.get(), 5)
        await asyncio.sleep(0.05)
        assert announced.empty()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
