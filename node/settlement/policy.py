"""When redeeming vouchers is worth its gas: pure decisions over values."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from node.storage import StoredVoucher
from node.types import Address


@dataclass(frozen=True, slots=True)
class RedemptionPolicy:
    """Redeem once this much is owed or this many clients' vouchers wait, and at once when a
    client whose voucher is held has asked to withdraw its deposit: its unlock delay is the
    provider's only window to be paid, and a leaving client makes waiting for more pointless."""

    min_amount_wei: int = 10**16
    min_vouchers: int = 50


def due_vouchers(
    unredeemed: Sequence[StoredVoucher],
    *,
    withdrawals: Mapping[Address, int],
    policy: RedemptionPolicy,
    force: bool = False,
) -> tuple[StoredVoucher, ...]:
    """The vouchers to redeem now (all of them, batched in one call), or none yet.

    `withdrawals` maps clients to the unix time their requested withdrawal unlocks (0 or absent:
    none requested); one past its unlock still counts, the client may not have taken the money.
    """
    if not unredeemed:
        return ()
    if force:
        return tuple(unredeemed)
    owed = sum(v.unredeemed_wei for v in unredeemed)
    leaving = any(withdrawals.get(v.voucher.client, 0) > 0 for v in unredeemed)
    if leaving or owed >= policy.min_amount_wei or len(unredeemed) >= policy.min_vouchers:
        return tuple(unredeemed)
    return ()
