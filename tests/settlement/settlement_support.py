"""Both settlement services over a fake chain and a real SQLite database, and the stored states
they settle, written as the pipelines leave them.

Every construction of `ProviderSettlement` and `ClientSettlement`, and every stored state
written directly, lives here; tests talk to their run-once methods (`tick`, `settle`,
`reconcile`), the fake chain and the store.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from job_fakes import PROFILE, FakeMarket, sqlite_database

from node.chain.eip712 import sign_receipt, sign_voucher
from node.chain.keys import NodeKey
from node.chain.market import JobTerms
from node.domain.state import (
    AttemptOutcome,
    Cancelled,
    JobEvent,
    JobState,
    Matched,
    PaymentMade,
    PaymentPath,
    ProviderLost,
    ResultDelivered,
    ResultReceived,
    ResultSigned,
    ResultVerified,
    Role,
    Sent,
    Started,
)
from node.jobstore.events import JobEvents
from node.jobstore.store import JobStore
from node.settlement.client import ClientSettlement
from node.settlement.policy import RedemptionPolicy
from node.settlement.provider import ProviderSettlement
from node.settlement.terms import escrow_salt, escrow_terms
from node.storage import Database, JobRecord, NewJob, SignedReceipt, SignedVoucher
from node.types import Hash32, ResultReceipt, Voucher, sha256

MODEL = Hash32(b"\x05" * 32)
GWEI = 10**9
PRICE = 2 * GWEI
INPUT = b"input"
OUTPUT = b"output"
DEADLINE_S = 3600

_PROVIDER_PATH = {
    JobState.ACCEPTED: (),
    JobState.RUNNING: ("started",),
    JobState.SIGNED: ("started", "signed"),
    JobState.DELIVERED: ("started", "signed", "delivered"),
}


@dataclass
class Settlements:
    db: Database
    market: FakeMarket
    provider_key: NodeKey
    client_key: NodeKey
    provider: ProviderSettlement
    client: ClientSettlement

    def restarted(self) -> Settlements:
        """Both services built afresh over the same database and chain (the node restarted)."""
        return build_settlements(self.db, self.market, self.provider_key, self.client_key)

    async def state(self, job_id: Hash32) -> JobState:
        return JobState((await self.db.run(self.db.jobs.get, job_id)).state)

    async def stored_voucher(self, client: NodeKey) -> tuple[int, int] | None:
        """(cumulative amount, redeemed wei) of the latest voucher from `client` to the provider."""
        stored = await self.db.run(self.db.vouchers.get, client.address, self.provider_key.address)
        return None if stored is None else (stored.voucher.cumulative_amount, stored.redeemed_wei)

    def fund(self, client: NodeKey, wei: int = 100 * PRICE) -> None:
        self.market.reserves[client.address, self.provider_key.address] = wei

    # the provider's jobs ----------------------------------------------------------------------

    async def provider_voucher_job(
        self, client: NodeKey, cumulative: int, state: JobState = JobState.DELIVERED
    ) -> JobRecord:
        """A job taken with `client`'s voucher for `cumulative` wei, stored in `state`."""
        voucher = Voucher(client.address, self.provider_key.address, cumulative)
        signed = SignedVoucher(voucher, sign_voucher(client.private_key, self.market.domain(), voucher))
        job_id = Hash32(secrets.token_bytes(32))
        record = await self._provider_job(job_id, PaymentPath.VOUCHER, client, voucher=signed)
        return await self._provider_moves(record, state)

    async def provider_escrow_job(
        self, client: NodeKey, *, onchain: str = "submitted", state: JobState = JobState.DELIVERED
    ) -> tuple[JobRecord, JobTerms]:
        """A job escrowed on the chain by `client` for this provider, claimed, stored in `state`;
        `onchain` says how far the chain got: "claimed" or "submitted" (the window opens)."""
        requested = await self.market.request_job(
            MODEL,
            price=PRICE,
            deadline=self.market.now + DEADLINE_S,
            input_hash=sha256(INPUT),
            provider=self.provider_key.address,
            salt=secrets.randbits(64),
            sender=client.account,
        )
        await self.market.claim_job(requested.job_id, sender=self.provider_key.account)
        record = await self._provider_job(requested.job_id, PaymentPath.ESCROW, client)
        record = await self._provider_moves(record, state)
        if onchain == "submitted":
            receipt = self.receipt(requested.job_id)
            signature = sign_receipt(self.provider_key.private_key, self.market.domain(), receipt)
            await self.market.submit_result(
                requested.terms, receipt, signature, sender=self.provider_key.account
            )
        return record, requested.terms

    def receipt(self, job_id: Hash32) -> ResultReceipt:
        return ResultReceipt(
            job_id=job_id,
            model_id=MODEL,
            input_hash=sha256(INPUT),
            output_hash=sha256(OUTPUT),
            profile_hash=PROFILE.hash(),
            provider=self.provider_key.address,
        )

    async def _provider_job(
        self, job_id: Hash32, payment: PaymentPath, client: NodeKey, *, voucher: SignedVoucher | None = None
    ) -> JobRecord:
        job = NewJob(
            job_id=job_id,
            role=Role.PROVIDER,
            payment=payment,
            model_id=MODEL,
            input_hash=sha256(INPUT),
            price_wei=PRICE,
            client=client.address,
            deadline=time.time() + 60,
        )
        return await self.db.run(self.db.jobs.create, job, voucher=voucher)

    async def _provider_moves(self, record: JobRecord, state: JobState) -> JobRecord:
        steps = _PROVIDER_PATH[state]
        if not steps:
            return record
        events: dict[str, JobEvent] = {
            "started": Started(),
            "signed": ResultSigned(),
            "delivered": ResultDelivered(),
        }
        receipt = None
        if "signed" in steps:
            signed = self.receipt(record.job_id)
            receipt = SignedReceipt(
                signed, sign_receipt(self.provider_key.private_key, self.market.domain(), signed)
            )
        moved = await self.db.run(
            self.db.jobs.apply_many, record.job_id, tuple(events[s] for s in steps), receipt=receipt
        )
        return moved[-1]

    # the client's jobs ------------------------------------------------------------------------

    async def client_escrow_job(
        self, attempts: tuple[tuple[NodeKey, AttemptOutcome | None], ...], *, verified: bool = True
    ) -> JobRecord:
        """A client's escrow job whose attempts went to these providers and ended so (None: the
        attempt in flight, verified when `verified`; ABANDONED: cancelled while its escrow was
        being requested); each attempt's escrow is on the chain."""
        job = NewJob(
            job_id=Hash32(secrets.token_bytes(32)),
            role=Role.CLIENT,
            payment=PaymentPath.ESCROW,
            model_id=MODEL,
            input_hash=sha256(INPUT),
            price_wei=10 * PRICE,
            client=self.client_key.address,
            deadline=time.time() + 60,
        )
        await self.db.run(self.db.jobs.create, job)
        events: list[JobEvent] = []
        for number, (provider, outcome) in enumerate(attempts):
            await self.market.request_job(
                MODEL,
                price=PRICE,
                deadline=self.market.now + DEADLINE_S,
                input_hash=sha256(INPUT),
                provider=provider.address,
                salt=escrow_salt(job.job_id, number),
                sender=self.client_key.account,
            )
            if outcome is AttemptOutcome.ABANDONED:
                # Cancelled while the escrow was being requested: it reached the chain, unrecorded.
                events += [Matched(provider.address, price_wei=PRICE), Cancelled()]
                continue
            events += [Matched(provider.address, price_wei=PRICE), PaymentMade()]
            if outcome is not None:
                events.append(ProviderLost(outcome, "lost before settlement"))
            elif verified:
                events += [Sent(), Started(), ResultReceived(), ResultVerified()]
        moved = await self.db.run(self.db.jobs.apply_many, job.job_id, tuple(events))
        return moved[-1]

    def client_onchain(self, record: JobRecord, attempt: int) -> JobTerms:
        return escrow_terms(self.client_key.address, record, attempt)

    async def deliver_onchain(self, provider: NodeKey, terms: JobTerms) -> None:
        """`provider` claims the escrowed job and puts its result on the chain."""
        await self.market.claim_job(terms.job_id, sender=provider.account)
        receipt = dataclasses.replace(self.receipt(terms.job_id), provider=provider.address)
        signature = sign_receipt(provider.private_key, self.market.domain(), receipt)
        await self.market.submit_result(terms, receipt, signature, sender=provider.account)


def build_settlements(
    db: Database,
    market: FakeMarket,
    provider_key: NodeKey,
    client_key: NodeKey,
    *,
    policy: RedemptionPolicy | None = None,
) -> Settlements:
    store = JobStore(db, JobEvents())
    provider = ProviderSettlement(
        store,
        market,  # type: ignore[arg-type]
        provider_key,
        policy or RedemptionPolicy(min_amount_wei=10 * PRICE, min_vouchers=3),
    )
    client = ClientSettlement(store, market, client_key)  # type: ignore[arg-type]
    return Settlements(db, market, provider_key, client_key, provider, client)


def new_settlements(tmp_path: Path) -> Settlements:
    return build_settlements(sqlite_database(tmp_path), FakeMarket(), NodeKey.generate(), NodeKey.generate())
