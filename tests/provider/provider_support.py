"""A provider node's job side built over fakes (chain, executor) and a real SQLite database.

Every construction of `ProviderJobs` and `JobRunner` lives here, so a change of their
constructors is a change of this file only; tests talk to `handle()`, `run()` and the fakes.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from job_fakes import MARKET_ADDRESS, FakeMarket, FakePool, sqlite_database

from node.chain.eip712 import sign_voucher
from node.chain.follower import ChainEvent
from node.chain.keys import NodeKey
from node.chain.market import voucher_job_id
from node.chain.registry import ZERO_ADDRESS
from node.domain.state import PaymentPath, Role
from node.jobstore.blobs import JobBlobs
from node.jobstore.events import JobEvents
from node.jobstore.store import JobStore
from node.p2p.identity import peer_id_from
from node.p2p.job_messages import JobRequest, JobResponse, OnchainPayment, VoucherPayment
from node.provider import delivery
from node.provider.jobs import ProviderJobs
from node.provider.onchain import OnchainJobs
from node.provider.runner import JobRunner
from node.scheduler import AdmissionPolicy
from node.storage import Database, JobRecord, NewJob
from node.types import Address, Hash32, Voucher, sha256

MODEL = Hash32(b"\x05" * 32)
OTHER_MODEL = Hash32(b"\x06" * 32)
GWEI = 10**9
PRICE = 2 * GWEI  # escrow holds whole gwei
INPUT = b"tensor-bytes"


def peer_of(key: NodeKey) -> str:
    return str(peer_id_from(key.private_key))


@dataclass
class ProviderSide:
    db: Database
    key: NodeKey
    market: FakeMarket
    pool: FakePool
    events: JobEvents
    runner: JobRunner
    jobs: ProviderJobs
    onchain: OnchainJobs
    root: Path
    spawned: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def me(self) -> Address:
        return self.key.address

    async def handle(self, client: NodeKey, request: JobRequest) -> list[JobResponse]:
        """Every frame the provider answers `request` from `client` with; background work done."""
        frames = [frame async for frame in self.jobs.handle(peer_of(client), request)]
        await self.settled()
        return frames

    async def settled(self) -> None:
        while self.spawned:
            await self.spawned.pop()

    def restarted(self) -> ProviderSide:
        """A fresh provider over the same database, chain and executor (the process restarted)."""
        return build_provider(self.db, self.key, self.market, self.pool, self.root)

    async def chain_requests(self, events: list[ChainEvent]) -> None:
        """The chain follower hands over a batch of events; the claims it starts run to the end."""
        await self.onchain.on_events(events)
        await self.settled()

    async def requested_onchain(
        self,
        requester: NodeKey,
        *,
        named: Address | None = None,
        price: int = PRICE,
        deadline_s: int = 3600,
        model: Hash32 = MODEL,
        with_input: bool = True,
        output_on_chain: bool = False,
        callback: Address | None = None,
        callback_gas: int | None = None,
    ) -> tuple[Hash32, list[ChainEvent]]:
        """A dApp requests a job on the chain: its id and the events the follower would see."""
        requested = await self.market.request_job(
            model,
            price=price,
            deadline=self.market.now + deadline_s,
            input_hash=sha256(INPUT),
            provider=named,
            salt=secrets.randbits(64),
            sender=requester.account,
            input=INPUT if with_input else b"",
            output_on_chain=output_on_chain,
            callback=callback,
            callback_gas=callback_gas,
        )
        args = {
            "jobId": requested.job_id,
            "requester": requester.address,
            "modelId": model,
            "inputHash": sha256(INPUT),
            "callback": callback or ZERO_ADDRESS,
            "salt": requested.terms.salt,
            "provider": named or ZERO_ADDRESS,
            "price": price,
            "deadline": requested.deadline,
        }
        events = [_event("JobRequested", args)]
        if with_input:
            events.append(_event("JobInput", {"jobId": requested.job_id, "input": INPUT}))
        return requested.job_id, events

    def hold_writes(self) -> tuple[asyncio.Event, asyncio.Event]:
        """The job store's next writes wait: the first event is set once one is waiting, the
        second lets them through."""
        store = self.runner.store
        apply = store.apply
        waiting, release = asyncio.Event(), asyncio.Event()

        async def held(*args: Any, **kwargs: Any) -> JobRecord:
            waiting.set()
            await release.wait()
            return await apply(*args, **kwargs)

        store.apply = held  # type: ignore[method-assign]
        return waiting, release

    async def load_covered(self) -> None:
        live = await self.db.run(self.db.jobs.live, Role.PROVIDER)
        self.jobs.load_covered(live)

    # requests a client would send -------------------------------------------------------------

    def voucher_request(
        self,
        client: NodeKey,
        cumulative: int,
        *,
        signer: NodeKey | None = None,
        payer: Address | None = None,
        payee: Address | None = None,
        model: Hash32 = MODEL,
        job_input: bytes = INPUT,
        max_price: int = PRICE,
        signature: bytes | None = None,
    ) -> JobRequest:
        voucher = Voucher(payer or client.address, payee or self.me, cumulative)
        if signature is None:
            signature = sign_voucher((signer or client).private_key, self.market.domain(), voucher)
        payment = VoucherPayment(voucher.client, voucher.provider, voucher.cumulative_amount, signature)
        return _request(Hash32(secrets.token_bytes(32)), model, job_input, payment, max_price)

    async def escrow_request(
        self,
        client: NodeKey,
        *,
        price: int = PRICE,
        named: Address | str | None = "me",
        model: Hash32 = MODEL,
        job_input: bytes = INPUT,
        sent_model: Hash32 | None = None,
        sent_input: bytes | None = None,
        max_price: int = PRICE,
        deadline_s: int = 3600,
    ) -> JobRequest:
        """Escrow `price` on the chain as `client`, due in `deadline_s`, and the request that goes with it."""
        requested = await self.market.request_job(
            model,
            price=price,
            deadline=self.market.now + deadline_s,
            input_hash=sha256(job_input),
            provider=self.me if named == "me" else named,  # type: ignore[arg-type]
            salt=secrets.randbits(64),
            sender=client.account,
        )
        payment = OnchainPayment(requested.job_id)
        return _request(
            requested.job_id,
            sent_model or model,
            job_input if sent_input is None else sent_input,
            payment,
            max_price,
        )

    # stored state -----------------------------------------------------------------------------

    async def stored_job(self, job: Hash32 | JobRequest) -> JobRecord | None:
        """The stored job of an id, or of a request (a voucher job is kept under its signed id)."""
        job_id = self.signed_id(job) if isinstance(job, JobRequest) else job
        return await self.db.run(self.db.jobs.find, job_id)

    @staticmethod
    def signed_id(request: JobRequest) -> Hash32:
        """The id the provider signs and stores a request under."""
        payment = request.payment
        if isinstance(payment, VoucherPayment):
            return voucher_job_id(payment.client, request.job_id)
        return request.job_id

    async def accepted_job(self, client: NodeKey, *, payment: PaymentPath = PaymentPath.VOUCHER) -> JobRecord:
        """A job stored as accepted, as if admitted before a restart."""
        job = NewJob(
            job_id=Hash32(secrets.token_bytes(32)),
            role=Role.PROVIDER,
            payment=payment,
            model_id=MODEL,
            input_hash=sha256(INPUT),
            price_wei=PRICE,
            client=client.address,
            deadline=time.time() + 60,
        )
        return await self.db.run(self.db.jobs.create, job)


def _request(job_id: Hash32, model: Hash32, job_input: bytes, payment: Any, max_price: int) -> JobRequest:
    return JobRequest(
        job_id=job_id,
        model_id=model,
        input=job_input,
        payment=payment,
        max_price_wei=max_price,
        deadline_ms=int((time.time() + 60) * 1000),
    )


def _event(name: str, args: dict[str, Any]) -> ChainEvent:
    return ChainEvent(name, args, MARKET_ADDRESS, 1, 0, "0x" + "00" * 32)


@dataclass
class _Follower:
    ready: asyncio.Event = field(default_factory=asyncio.Event)


def build_provider(
    db: Database,
    key: NodeKey,
    market: FakeMarket,
    pool: FakePool,
    root: Path,
    *,
    price: int = PRICE,
    slots: int = 1,
    max_queue: int = 64,
    max_input_bytes: int = 2**20,
) -> ProviderSide:
    events = JobEvents()
    policy = AdmissionPolicy(
        price_floor_wei={MODEL: price}, slots=slots, max_queue=max_queue, max_input_bytes=max_input_bytes
    )
    runner = JobRunner(JobStore(db, events), pool, key, market.domain(), slots=slots)  # type: ignore[arg-type]
    spawned: list[asyncio.Task[None]] = []

    def spawn(work: Coroutine[Any, Any, None]) -> None:
        spawned.append(asyncio.ensure_future(work))

    blobs = JobBlobs(root / "blobs", fsync=False)
    jobs = ProviderJobs(runner, market, policy, blobs, spawn=spawn)  # type: ignore[arg-type]
    onchain = OnchainJobs(runner, market, blobs, _Follower(), policy, spawn=spawn)  # type: ignore[arg-type]
    return ProviderSide(db, key, market, pool, events, runner, jobs, onchain, root, spawned)


def fast_submission_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """The waits between on-chain submissions, shortened so a test of them runs in milliseconds."""
    monkeypatch.setattr(delivery, "SUBMIT_RETRY_S", (0.05,))


def new_provider(tmp_path: Path, **options: Any) -> ProviderSide:
    db = sqlite_database(tmp_path)
    return build_provider(db, NodeKey.generate(), FakeMarket(), FakePool(), tmp_path, **options)
