"""Client-side payment: cumulative vouchers per provider, and escrowed on-chain jobs per attempt.

Vouchers: the amount promised to a provider is the sum of the prices of its attempts that are in
flight or completed. An attempt that failed drops out of that sum, so the next job to the same
provider is covered by the amount already signed before anything new is promised: a failed
attempt is never paid on top of a later one.

Escrow: each attempt is its own on-chain job. Its salt is derived from the client's job id and the
attempt's number, so its terms (and id) can be rebuilt from the database alone — after a restart
a second `requestJob` for the same attempt reverts with `JobExists` instead of paying twice.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict

from node.chain.eip712 import Eip712Domain, sign_voucher
from node.chain.market import JobTerms
from node.chain.registry import ZERO_ADDRESS
from node.domain.state import PaymentPath
from node.storage import JobRecord, SignedVoucher
from node.types import Address, Hash32, Voucher

# Attempts per job are numbered 0..255 inside the salt.
MAX_ATTEMPTS = 256


def escrow_salt(job_id: Hash32, attempt: int) -> int:
    return (int.from_bytes(job_id[:24], "big") << 8) | attempt


def escrow_terms(client: Address, record: JobRecord, attempt: int) -> JobTerms:
    """The on-chain terms of `attempt` (0-based) of a client's escrow-paid job."""
    return JobTerms(
        requester=client,
        model_id=record.model_id,
        input_hash=record.input_hash,
        callback=Address(ZERO_ADDRESS),
        salt=escrow_salt(record.job_id, attempt),
    )


def receipt_job_id(client: Address, record: JobRecord, attempt: int) -> Hash32:
    """The job id the provider's receipt names: the on-chain id for escrow, else the client's."""
    if record.status.payment is PaymentPath.ESCROW:
        return escrow_terms(client, record, attempt).job_id
    return record.job_id


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

    def total_promised(self) -> int:
        """Wei this client may owe across every provider: the most of signed and committed each."""
        return sum(max(self._committed.get(p, 0), self._signed.get(p, 0)) for p in self.providers())

    def released(self, provider: Address, price_wei: int) -> None:
        """An attempt failed: its amount may cover the next job to this provider."""
        self._committed[provider] = max(0, self._committed[provider] - price_wei)
