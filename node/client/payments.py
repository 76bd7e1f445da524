"""Client-side payment: cumulative vouchers per provider (escrow terms: `node.settlement.terms`).

Vouchers: the amount promised to a provider is the sum of the prices of its attempts that are in
flight or completed. An attempt that failed drops out of that sum, so the next job to the same
provider is covered by the amount already signed before anything new is promised: a failed
attempt is never paid on top of a later one.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict

from node.chain.eip712 import Eip712Domain, sign_voucher
from node.storage import SignedVoucher
from node.types import Address, Voucher


class VoucherBook:
    """The amount promised to each provider, and the next voucher for a new attempt."""

    def __init__(self, client: Address, private_key: bytes, domain: Eip712Domain) -> None:
        self.client = client
        self._key = private_key
        self.domain = domain
        self._committed: defaultdict[Address, int] = defaultdict(int)
        self._signed: dict[Address, int] = {}
        # The highest voucher persisted for each provider in this run, ready to be sent again.
        self._latest: dict[Address, SignedVoucher] = {}
        self._locks: defaultdict[Address, asyncio.Lock] = defaultdict(asyncio.Lock)

    def load(self, latest: dict[Address, int]) -> None:
        """Start from the latest stored voucher amounts: after a restart, everything signed counts
        as promised (the prices of attempts that failed before the restart are not known)."""
        self._committed = defaultdict(int, latest)
        self._signed = dict(latest)
        self._latest = {}

    def lock(self, provider: Address) -> asyncio.Lock:
        """Held while a voucher for `provider` is made and persisted, so amounts never interleave."""
        return self._locks[provider]

    def next_voucher(self, provider: Address, price_wei: int) -> SignedVoucher:
        """The voucher covering everything promised to `provider` plus `price_wei`."""
        owed = self._committed[provider] + price_wei
        cumulative = max(owed, self._signed.get(provider, 0))
        voucher = Voucher(client=self.client, provider=provider, cumulative_amount=cumulative)
        return SignedVoucher(voucher, sign_voucher(self._key, self.domain, voucher))

    def committed(self, voucher: SignedVoucher, price_wei: int) -> None:
        """Call once the voucher is persisted with the job's payment."""
        provider = voucher.voucher.provider
        self._committed[provider] += price_wei
        self._signed[provider] = max(self._signed.get(provider, 0), voucher.voucher.cumulative_amount)
        kept = self._latest.get(provider)
        if kept is None or voucher.voucher.cumulative_amount >= kept.voucher.cumulative_amount:
            self._latest[provider] = voucher

    def latest(self, provider: Address) -> SignedVoucher | None:
        """The highest voucher for `provider` persisted since start (None: read the database)."""
        return self._latest.get(provider)

    def providers(self) -> tuple[Address, ...]:
        return tuple(set(self._committed) | set(self._signed))

    def owed(self, provider: Address) -> int:
        """Wei of the attempts sent to `provider` that are in flight or completed."""
        return self._committed.get(provider, 0)

    def total_promised(self) -> int:
        """Wei this client may owe across every provider: the most of signed and committed each."""
        return sum(max(self._committed.get(p, 0), self._signed.get(p, 0)) for p in self.providers())

    def released(self, provider: Address, price_wei: int) -> None:
        """An attempt failed: its amount may cover the next job to this provider."""
        self._committed[provider] = max(0, self._committed[provider] - price_wei)
