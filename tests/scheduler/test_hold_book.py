"""A provider's holds (pure): granted oldest first as slots free, bounded per client and in all,
and a client that lets a granted slot lapse loses its other holds and is refused for a while."""

from __future__ import annotations

import pytest

from node.scheduler import HoldBook, Rejected, RejectionCode
from node.scheduler.holds import PENALTY_S
from node.types import Hash32


def key(client: str, n: int) -> tuple[str, Hash32]:
    return (client, Hash32(n.to_bytes(32, "big")))


def test_can_grant_holds_oldest_first_as_slots_free() -> None:
    book = HoldBook(grant_ttl_s=2.0)
    assert [book.ask(key("a", n), copies=3) for n in range(3)] == [0, 1, 2]
    assert book.expected_jobs == pytest.approx(1.0)  # three holds, each one of three copies
    assert book.grant(0, now=10.0) == []
    assert book.grant(2, now=10.0) == [key("a", 0), key("a", 1)]
    assert (book.waiting, book.granted) == (1, 2)
    assert book.take(key("a", 0))  # its job arrived: the slot is its own
    assert not book.take(key("a", 0))  # once
    assert book.cancel(key("a", 1))  # given up after it was granted: frees the slot
    assert not book.cancel(key("a", 2))  # given up while waiting: frees nothing
    assert (book.waiting, book.granted) == (0, 0)


def test_cannot_hold_one_job_twice_or_queue_past_the_bounds() -> None:
    book = HoldBook(max_waiting=3, max_waiting_per_client=2)
    assert book.ask(key("a", 1)) == 0
    duplicate = book.ask(key("a", 1))
    assert isinstance(duplicate, Rejected)
    assert duplicate.code is RejectionCode.DUPLICATE
    assert book.ask(key("a", 2)) == 1
    limited = book.ask(key("a", 3))
    assert isinstance(limited, Rejected)
    assert limited.code is RejectionCode.HOLD_LIMIT
    assert book.ask(key("b", 1)) == 2
    full = book.ask(key("c", 1))
    assert isinstance(full, Rejected)
    assert full.code is RejectionCode.QUEUE_FULL
    # A granted hold no longer counts against its client's waiting holds.
    book.grant(1, now=0.0)
    assert book.ask(key("a", 3)) == 2


def test_cannot_squat_slots_by_letting_granted_holds_lapse() -> None:
    """The attacker queues holds it never means to use: its first granted slot lapses, and with
    it go its other holds; it is refused holds for `PENALTY_S`, and the honest client behind it
    gets the next slot."""
    book = HoldBook(grant_ttl_s=2.0)
    for n in range(5):
        book.ask(key("squatter", n), now=0.0)
    book.ask(key("honest", 1), now=0.0)
    (first,) = book.grant(1, now=0.0)
    assert first == key("squatter", 0)
    dropped = book.lapse(first, now=2.0)
    assert dropped == [key("squatter", n) for n in range(1, 5)]
    assert book.grant(1, now=2.0) == [key("honest", 1)]
    refused = book.ask(key("squatter", 9), now=3.0)
    assert isinstance(refused, Rejected)
    assert refused.code is RejectionCode.HOLD_LIMIT
    assert "went unused" in refused.reason
    assert book.ask(key("squatter", 9), now=2.0 + PENALTY_S) == 0


def test_cannot_make_a_book_that_holds_nothing() -> None:
    with pytest.raises(ValueError, match="positive"):
        HoldBook(grant_ttl_s=0)


def test_cannot_make_a_provider_look_swamped_by_asking_holds_for_free() -> None:
    """A rival asks a provider for every hold it may, one copy each, to make it look busy: the
    market is told of one job per slot at most."""
    book = HoldBook()
    for n in range(book.max_waiting_per_client):
        book.ask(key("rival", n), copies=1)
    assert book.expected_jobs == book.max_waiting_per_client
    assert book.awaited(slots=2) == 2


def test_cannot_starve_a_hold_with_jobs_sent_without_one() -> None:
    """Jobs sent without a hold keep every slot busy: the hold waiting behind the two queued when
    it came is granted, with no slot free, once they and one more have started."""
    book = HoldBook()
    book.ask(key("a", 1), due=10 + 2 + 1)  # 10 such jobs started so far, 2 queued
    book.ask(key("a", 2))  # no due: only a free slot grants it
    assert book.grant(0, now=0.0, started=12) == []
    assert book.grant(0, now=0.0, started=13) == [key("a", 1)]
    assert book.grant(0, now=0.0, started=99) == []
    assert book.grant(1, now=0.0, started=99) == [key("a", 2)]
