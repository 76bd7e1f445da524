"""Providers this node has seen: their last advert, and how they served us (the scheduler's memory)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, bindparam, select, update

from node.domain.records import KnownProvider
from node.storage.errors import InvalidRecord, UnknownProvider
from node.storage.models import PROVIDERS, AnyRow, ProviderRow
from node.storage.session import Transactions, retry_on_conflict
from node.storage.validation import checked_address
from node.types import Address

# Weight of the newest sample in the latency moving average.
LATENCY_EWMA_ALPHA = 0.2


class ProviderRepository:
    def __init__(self, tx: Transactions) -> None:
        self._tx = tx

    def seen(self, address: Address, peer_id: str, advert: Mapping[str, Any]) -> KnownProvider:
        """Record a provider's latest advert summary, keeping its history of successes and failures."""
        address = checked_address("address", address)
        if not isinstance(peer_id, str) or not peer_id or len(peer_id) > 128:
            raise InvalidRecord(
                f"a peer id must be a non-empty string of at most 128 characters, got {peer_id!r}"
            )
        summary = dict(advert)
        return retry_on_conflict(lambda: self._seen(address, peer_id, summary))

    def _seen(self, address: Address, peer_id: str, advert: dict[str, Any]) -> KnownProvider:
        now = self._tx.clock()
        with self._tx.write() as session:
            row = session.get(ProviderRow, address, with_for_update=True)
            if row is None:
                row = ProviderRow(
                    address=address,
                    peer_id=peer_id,
                    advert=advert,
                    successes=0,
                    failures=0,
                    consecutive_failures=0,
                    latency_ms=None,
                    backoff_until=0.0,
                    last_seen=now,
                )
                session.add(row)
            else:
                row.peer_id = peer_id
                row.advert = advert
                row.last_seen = now
            return _known(row)

    def record_success(self, address: Address, latency_ms: float) -> KnownProvider:
        """A job came back verified in `latency_ms`: count it, fold the latency in, lift any back-off."""
        if not latency_ms >= 0:
            raise InvalidRecord(f"latency must be a non-negative number of milliseconds, got {latency_ms!r}")
        with self._tx.writing() as connection:
            known = self._locked(connection, address)
            latency = (
                latency_ms
                if known.latency_ms is None
                else (1 - LATENCY_EWMA_ALPHA) * known.latency_ms + LATENCY_EWMA_ALPHA * latency_ms
            )
            return _update(
                connection,
                known,
                successes=known.successes + 1,
                consecutive_failures=0,
                backoff_until=0.0,
                latency_ms=latency,
            )

    def record_failure(self, address: Address, backoff_until: float) -> KnownProvider:
        """A try failed; skip the provider until `backoff_until` (the scheduler computes it)."""
        with self._tx.writing() as connection:
            known = self._locked(connection, address)
            return _update(
                connection,
                known,
                failures=known.failures + 1,
                consecutive_failures=known.consecutive_failures + 1,
                backoff_until=max(known.backoff_until, backoff_until),
            )

    def get(self, address: Address) -> KnownProvider | None:
        address = checked_address("address", address)
        with self._tx.read() as session:
            row = session.get(ProviderRow, address)
            return None if row is None else _known(row)

    def all(self) -> tuple[KnownProvider, ...]:
        with self._tx.read() as session:
            return tuple(
                _known(r) for r in session.scalars(select(ProviderRow).order_by(ProviderRow.address))
            )

    def _locked(self, connection: Connection, address: Address) -> KnownProvider:
        # Statements, not ORM loads: a client writes these after every job it gets back.
        address = checked_address("address", address)
        row = connection.execute(_SELECT_PROVIDER, {"address": address}).one_or_none()
        if row is None:
            raise UnknownProvider(
                f"provider {address} is not known", hint="a provider is known once its advert has been seen"
            )
        return _known(row)


_SELECT_PROVIDER = select(PROVIDERS).where(PROVIDERS.c.address == bindparam("address")).with_for_update()
_UPDATE_PROVIDER = update(PROVIDERS).where(PROVIDERS.c.address == bindparam("b_address"))


def _update(connection: Connection, known: KnownProvider, **values: Any) -> KnownProvider:
    connection.execute(_UPDATE_PROVIDER, {"b_address": known.address, **values})
    return dataclasses.replace(known, **values)


def _known(row: ProviderRow | AnyRow) -> KnownProvider:
    return KnownProvider(
        address=Address(row.address),
        peer_id=row.peer_id,
        advert=dict(row.advert),
        successes=row.successes,
        failures=row.failures,
        consecutive_failures=row.consecutive_failures,
        latency_ms=row.latency_ms,
        backoff_until=row.backoff_until,
        last_seen=row.last_seen,
    )
