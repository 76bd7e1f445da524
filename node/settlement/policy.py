"""When redeeming vouchers is worth its gas: pure decisions over values."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from node.storage import StoredVoucher
from node.types import Address


@dataclass(frozen=True, slots=True)
class RedemptionPolicy:
    """Redeem once this much is owed or this many clients' vouchers wait, or when a client's
    withdrawal could leave before the provider is paid (`withdrawal_margin_s` ahead of it)."""

    min_amount_wei: int = 10**16
    min_vouchers: int = 50
    withdrawal_margin_s: float = 600.0


def due_vouchers(
    unredeemed: Sequence[StoredVoucher],
    *,
    withdrawals: Mapping[Address, int],
    now: float,
    policy: RedemptionPolicy,
    force: bool = False,
) -> tuple[StoredVoucher, ...]:
    """The vouchers to redeem now (all of them, batched in one call), or none yet.

    `withdrawals` maps clients to the unix time their requested withdrawal unlocks (absent: none).
    """
    if not unredeemed:
        return ()
    if force:
        return tuple(unredeemed)
    owed = sum(v.unredeemed_wei for v in unredeemed)
    leaving = any(
        at and at - policy.withdrawal_margin_s <= now
        for v in unredeemed
        if (at := withdrawals.get(v.voucher.client))
    )
    if leaving or owed >= policy.min_amount_wei or len(unredeemed) >= policy.min_vouchers:
        return tuple(unredeemed)
    return ()
