"""Providers' reputation survives a reopening of the database; bad values are refused whole."""

from __future__ import annotations

import pytest

from node.domain.records import ProviderReputation
from node.storage import Database
from node.storage.errors import InvalidRecord
from node.types import Address, checksum_address

PROVIDER = checksum_address("0x" + "ab" * 20)


def test_can_keep_an_exclusion_across_a_reopening(database_url: str) -> None:
    with Database.open(database_url) as db:
        assert db.reputation.get(PROVIDER) is None
        db.reputation.save(ProviderReputation(PROVIDER, jobs_seen=3))
        db.reputation.save(
            ProviderReputation(PROVIDER, jobs_seen=4, checks_failed=1, excluded=True, excluded_reason="lied")
        )
    with Database.open(database_url) as db:
        (kept,) = db.reputation.all()
    assert kept == ProviderReputation(
        PROVIDER, jobs_seen=4, checks_failed=1, excluded=True, excluded_reason="lied"
    )


def test_cannot_store_negative_counts_or_a_bad_address(db: Database) -> None:
    db.reputation.save(ProviderReputation(PROVIDER, jobs_seen=1))
    for bad in (
        ProviderReputation(PROVIDER, jobs_seen=-1),
        ProviderReputation(PROVIDER, excluded_reason="x" * 501),
        ProviderReputation(Address("0xnot-an-address")),
    ):
        with pytest.raises(InvalidRecord):
            db.reputation.save(bad)
    assert db.reputation.all() == (ProviderReputation(PROVIDER, jobs_seen=1),)
