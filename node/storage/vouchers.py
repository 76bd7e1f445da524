"""The latest cumulative voucher per (client, provider) and how much of it has been redeemed.

A voucher only ever raises the amount owed, so a stored voucher is replaced only by a higher one;
redemption marks how much the chain has paid out, never more than the voucher covers.
"""

from __future__ import annotations

from sqlalchemy import Connection, bindparam, insert, select, update

from node.domain.records import StoredVoucher
from node.storage.errors import InvalidRecord, RecordNotFound, StaleVoucher
from node.storage.models import VOUCHERS, AnyRow, VoucherRow
from node.storage.session import Transactions, retry_on_conflict
from node.storage.validation import check_signature, check_wei, checked_address
from node.types import Address, Voucher


class VoucherRepository:
    def __init__(self, tx: Transactions) -> None:
        self._tx = tx

    def record(self, voucher: Voucher, signature: bytes) -> StoredVoucher:
        """Keep `voucher` as the latest for its pair; a voucher that does not raise the amount fails."""
        voucher = checked_voucher(voucher, signature)
        return retry_on_conflict(lambda: self._record(voucher, signature))

    def _record(self, voucher: Voucher, signature: bytes) -> StoredVoucher:
        with self._tx.write() as session:
            return record_voucher(session.connection(), voucher, signature, self._tx.clock())

    def get(self, client: Address, provider: Address) -> StoredVoucher | None:
        client = checked_address("client", client)
        provider = checked_address("provider", provider)
        with self._tx.read() as session:
            row = session.get(VoucherRow, (client, provider))
            return None if row is None else _stored(row)

    def mark_redeemed(self, client: Address, provider: Address, redeemed_wei: int) -> StoredVoucher:
        """Record that the chain has paid `redeemed_wei` in total on this pair's vouchers."""
        check_wei("redeemed_wei", redeemed_wei)
        client = checked_address("client", client)
        provider = checked_address("provider", provider)
        with self._tx.write() as session:
            row = session.get(VoucherRow, (client, provider), with_for_update=True)
            if row is None:
                raise RecordNotFound(f"no voucher from {client} to {provider} is stored")
            stored = _stored(row)
            if redeemed_wei > stored.voucher.cumulative_amount:
                raise InvalidRecord(
                    f"cannot mark {redeemed_wei} wei redeemed: the voucher covers only "
                    f"{stored.voucher.cumulative_amount} wei"
                )
            if redeemed_wei < stored.redeemed_wei:
                raise InvalidRecord(
                    f"cannot lower the redeemed amount from {stored.redeemed_wei} to {redeemed_wei} wei",
                    hint="redemptions only add up; reconcile with the chain instead",
                )
            row.redeemed_wei = str(redeemed_wei)
            row.updated_at = self._tx.clock()
            return _stored(row)

    def unredeemed(self, provider: Address | None = None) -> tuple[StoredVoucher, ...]:
        """Vouchers with an amount still to redeem, optionally only those paying `provider`."""
        query = select(VoucherRow).order_by(VoucherRow.updated_at)
        if provider is not None:
            query = query.where(VoucherRow.provider == checked_address("provider", provider))
        with self._tx.read() as session:
            stored = [_stored(r) for r in session.scalars(query).all()]
        # Amounts are decimal strings (they exceed 64 bits), so the comparison happens here.
        return tuple(v for v in stored if v.unredeemed_wei > 0)


_SELECT_VOUCHER = (
    select(VOUCHERS)
    .where(VOUCHERS.c.client == bindparam("client"), VOUCHERS.c.provider == bindparam("provider"))
    .with_for_update()
)
_INSERT_VOUCHER = insert(VOUCHERS)
_RAISE_VOUCHER = update(VOUCHERS).where(
    VOUCHERS.c.client == bindparam("b_client"), VOUCHERS.c.provider == bindparam("b_provider")
)


def record_voucher(connection: Connection, voucher: Voucher, signature: bytes, now: float) -> StoredVoucher:
    """Keep a checked voucher as the latest for its pair, in the caller's transaction."""
    pair = {"client": voucher.client, "provider": voucher.provider}
    row = connection.execute(_SELECT_VOUCHER, pair).one_or_none()
    if row is None:
        values = {"cumulative_wei": str(voucher.cumulative_amount), "signature": signature}
        connection.execute(_INSERT_VOUCHER, {**pair, **values, "redeemed_wei": "0", "updated_at": now})
        return StoredVoucher(voucher=voucher, signature=signature, redeemed_wei=0, updated_at=now)
    stored = _stored(row)
    if stored.voucher == voucher and stored.signature == signature:
        return stored
    if voucher.cumulative_amount <= stored.voucher.cumulative_amount:
        raise StaleVoucher(
            f"a voucher from {voucher.client} to {voucher.provider} for {voucher.cumulative_amount} wei "
            f"does not exceed the stored {stored.voucher.cumulative_amount} wei",
            hint="vouchers are cumulative: each must carry the total owed so far",
        )
    connection.execute(
        _RAISE_VOUCHER,
        {
            "b_client": voucher.client,
            "b_provider": voucher.provider,
            "cumulative_wei": str(voucher.cumulative_amount),
            "signature": signature,
            "updated_at": now,
        },
    )
    return StoredVoucher(
        voucher=voucher, signature=signature, redeemed_wei=stored.redeemed_wei, updated_at=now
    )


def checked_voucher(voucher: Voucher, signature: bytes) -> Voucher:
    check_wei("cumulative_amount", voucher.cumulative_amount)
    check_signature(signature)
    return Voucher(
        client=checked_address("client", voucher.client),
        provider=checked_address("provider", voucher.provider),
        cumulative_amount=voucher.cumulative_amount,
    )


def _stored(row: VoucherRow | AnyRow) -> StoredVoucher:
    return StoredVoucher(
        voucher=Voucher(
            client=Address(row.client),
            provider=Address(row.provider),
            cumulative_amount=int(row.cumulative_wei),
        ),
        signature=row.signature,
        redeemed_wei=int(row.redeemed_wei),
        updated_at=row.updated_at,
    )
