"""A client node's job side built over fakes (chain, overlay) and the real rest: SQLite, blob and
receipt files, the directory of signed adverts, the matchmaker, EIP-712 vouchers and receipts.

Every construction of `ClientPipeline` and `ClientJobs`, and every stored state written
directly, lives here, so a change of their constructors or of the store is a change of this file
only; tests talk to `ClientJobs` (submit, get, cancel, watch, run) and to the fakes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from job_fakes import FakeMarket, FakeOverlay, ProviderBehaviour, accepted_then, sqlite_database

from node.chain.eip712 import sign_receipt, sign_voucher
from node.chain.keys import NodeKey
from node.chain.market import JobStatus as ChainJobStatus
from node.chain.market import voucher_job_id
from node.client import pipeline as pipeline_module
from node.client.jobs import ClientJobs
from node.client.matching import Matchmaker
from node.client.payments import VoucherBook
from node.client.pipeline import ClientPipeline
from node.discovery.advert import (
    Device,
    DeviceKind,
    ModelPrice,
    Offer,
    ProviderAdvert,
    open_advert,
    sign_advert,
)
from node.discovery.directory import Directory
from node.domain.service import JobSpec, JobView
from node.domain.state import (
    AttemptOutcome,
    JobEvent,
    JobState,
    Matched,
    PaymentMade,
    PaymentPath,
    ProviderLost,
    ResultReceived,
    ResultVerified,
    Role,
    Sent,
    Started,
)
from node.errors import P2PError, PeerTimeout
from node.jobstore.blobs import JobBlobs, ReceiptFiles
from node.jobstore.events import JobEvents
from node.jobstore.store import JobStore
from node.p2p.identity import peer_id_from
from node.p2p.job_messages import (
    JobFailed,
    JobRejected,
    JobRequest,
    JobResult,
    OnchainPayment,
    VoucherPayment,
)
from node.scheduler import Choice
from node.settlement.terms import escrow_salt, escrow_terms
from node.storage import Database, JobRecord, NewJob, SignedReceipt, SignedVoucher
from node.types import Address, Hash32, ResultReceipt, Voucher, sha256

MODEL = Hash32(b"\x05" * 32)
GWEI = 10**9
INPUT = b"the client's tensor"
BUDGET = 10 * GWEI
WAIT_S = 10.0


def output_for(job_input: bytes) -> bytes:
    return b"out:" + job_input


# providers the client can meet ------------------------------------------------------------------


@dataclass
class Provider:
    """A provider as the client meets it: a key, a signed advert, and how it answers."""

    key: NodeKey
    price: int
    market: FakeMarket
    behaviour: ProviderBehaviour | None = None

    @property
    def address(self) -> Address:
        return self.key.address

    @property
    def peer(self) -> str:
        return str(peer_id_from(self.key.private_key))

    def advert(self) -> ProviderAdvert:
        now_ms = int(time.time() * 1000)
        advert = ProviderAdvert(
            address=self.address,
            peer_id=self.peer,
            listen_addrs=("/ip4/127.0.0.1/tcp/4001",),
            offer=Offer(
                devices=(Device(DeviceKind.CPU, "cpu", 2**33),),
                warm_models=(MODEL,),
                prices=(ModelPrice(MODEL, self.price),),
                free_slots=4,
            ),
            sequence=1,
            issued_at_ms=now_ms,
            expires_at_ms=now_ms + 600_000,
        )
        opened = open_advert(sign_advert(advert, self.key.private_key))
        assert isinstance(opened, ProviderAdvert), opened
        return opened

    # what it signs --------------------------------------------------------------------------------

    def receipt(self, request: JobRequest, output: bytes, **changes: Any) -> ResultReceipt:
        payment = request.payment
        if isinstance(payment, OnchainPayment):
            job_id = payment.job_id
        else:  # a voucher job is signed in the voucher namespace, bound to the paying client
            job_id = voucher_job_id(payment.client, request.job_id)
        receipt = ResultReceipt(
            job_id=job_id,
            model_id=request.model_id,
            input_hash=sha256(request.input),  # type: ignore[arg-type]
            output_hash=sha256(output),
            profile_hash=Hash32(b"\x07" * 32),
            provider=self.address,
        )
        return dataclasses.replace(receipt, **changes)

    def result(
        self,
        request: JobRequest,
        *,
        signer: NodeKey | None = None,
        output: bytes | None = None,
        **changes: Any,
    ) -> JobResult:
        """The signed result of running `request`; `output` replaces the bytes sent (not those signed)."""
        real = output_for(request.input)  # type: ignore[arg-type]
        receipt = self.receipt(request, real, **changes)
        signature = sign_receipt((signer or self.key).private_key, self.market.domain(), receipt)
        return JobResult(receipt, signature, real if output is None else output)

    # how it answers -------------------------------------------------------------------------------

    def honest(self) -> ProviderBehaviour:
        """Runs the job, as a real provider would only on a voucher its reserve covers; an escrow
        job is claimed and its result submitted on-chain first."""

        async def behave(request: JobRequest, on_event: Callable[[Any], None]) -> Any:
            payment = request.payment
            if isinstance(payment, VoucherPayment) and not self.covers(payment):
                return JobRejected("insufficient_deposit", "the voucher is not covered by a reserve")
            inner = accepted_then(lambda r: self.result(r))
            result = await inner(request, on_event)
            if isinstance(request.payment, OnchainPayment):
                # Sent again, a job it holds is not claimed again: it is served to the end once.
                onchain = self.market.jobs[request.payment.job_id]
                if onchain.status is ChainJobStatus.REQUESTED:
                    await self.market.claim_job(request.payment.job_id, sender=self.key.account)
                if onchain.status is ChainJobStatus.CLAIMED:
                    await self.market.submit_result(
                        onchain.terms, result.receipt, result.signature, sender=self.key.account
                    )
            return result

        return behave

    def covers(self, payment: VoucherPayment) -> bool:
        """Whether the client's reserve for this provider, less releases, plus what was paid
        already, backs `payment` (what provider admission checks)."""
        key = (payment.client, self.address)
        releasing = self.market.releases.get(key, (0, 0))[0]
        available = max(0, self.market.reserves[key] - releasing)
        return payment.cumulative_amount <= available + self.market.paid_out[key]

    def rejecting(self, code: str = "queue_full") -> ProviderBehaviour:
        async def behave(request: JobRequest, on_event: Callable[[Any], None]) -> Any:
            return JobRejected(code, "scripted rejection")

        return behave

    def failing(self) -> ProviderBehaviour:
        return accepted_then(lambda r: JobFailed("execution", "the worker crashed"))

    def timing_out(self) -> ProviderBehaviour:
        return accepted_then(lambda r: PeerTimeout("the provider stayed silent"))

    def dying(self) -> ProviderBehaviour:
        return accepted_then(lambda r: P2PError("the stream was reset"))

    def claiming_then(self, answer: Callable[[JobRequest], Any], *, times: int = 1) -> ProviderBehaviour:
        """Claims the escrowed job, then answers `answer(request)` (the first `times` requests);
        honest from then on."""
        honest = self.honest()
        answered = 0

        async def behave(request: JobRequest, on_event: Callable[[Any], None]) -> Any:
            nonlocal answered
            if answered >= times:
                return await honest(request, on_event)
            answered += 1
            assert isinstance(request.payment, OnchainPayment)
            if self.market.jobs[request.payment.job_id].status is ChainJobStatus.REQUESTED:
                await self.market.claim_job(request.payment.job_id, sender=self.key.account)
            return await accepted_then(answer)(request, on_event)

        return behave

    def cheating(self, how: str, stranger: NodeKey) -> ProviderBehaviour:
        """Returns a result that must not verify, in one of the ways a result can be wrong."""

        def bad(request: JobRequest) -> JobResult:
            if how == "job_id":
                return self.result(request, job_id=Hash32(secrets.token_bytes(32)))
            if how == "model":
                return self.result(request, model_id=Hash32(b"\x09" * 32))
            if how == "input":
                return self.result(request, input_hash=sha256(b"another input"))
            if how == "provider":
                return self.result(request, provider=stranger.address, signer=stranger)
            if how == "hash":
                return self.result(request, output=b"not what was hashed")
            if how == "signature":
                return self.result(request, signer=stranger)
            raise ValueError(how)

        return accepted_then(bad)


# the client -------------------------------------------------------------------------------------


@dataclass
class ClientSide:
    root: Path
    db: Database
    key: NodeKey
    market: FakeMarket
    overlay: FakeOverlay
    directory: Directory
    providers: list[Provider] = field(default_factory=list)
    jobs: ClientJobs = field(init=False)
    _service: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        self.jobs = _client_jobs(self)

    @property
    def me(self) -> Address:
        return self.key.address

    def provider(self, price: int = GWEI, *, advertised: bool = True) -> Provider:
        provider = Provider(NodeKey.generate(), price, self.market)
        provider.behaviour = provider.honest()
        self.providers.append(provider)
        self.overlay.behaviours[provider.peer] = lambda req, ev: provider.behaviour(req, ev)  # type: ignore[misc]
        if advertised:
            self.directory.upsert(provider.advert())
        return provider

    def forgive(self, provider: Provider) -> None:
        """Lift the back-off a lost attempt put on `provider` (as time would)."""
        self.jobs.pipeline.matchmaker.succeeded(provider.address, latency_ms=1.0)

    def matches(self) -> list[Choice]:
        """Every provider the matchmaker chooses from now on, in order (the real choice is kept)."""
        matchmaker = self.jobs.pipeline.matchmaker
        choose = matchmaker.choose
        chosen: list[Choice] = []

        def counted(*args: Any, **kwargs: Any) -> Choice:
            choice = choose(*args, **kwargs)
            chosen.append(choice)
            return choice

        matchmaker.choose = counted  # type: ignore[method-assign]
        return chosen

    def fund(self, wei: int = 1000 * GWEI) -> None:
        self.market.balances[self.me] = wei

    # the service ----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Run `ClientJobs` (resuming stored jobs) until `stop()`."""
        self._service = asyncio.create_task(self.jobs.run())
        await asyncio.wait_for(self.jobs.ready.wait(), WAIT_S)

    async def stop(self) -> None:
        if self._service is not None:
            self._service.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._service
            self._service = None

    def changes(self, job_id: str) -> contextlib.AbstractContextManager[asyncio.Queue[JobRecord]]:
        """Every stored move of the job from now on, as the pipeline publishes it."""
        return self.jobs.pipeline.store.watch(Hash32(bytes.fromhex(job_id)))

    async def drive(self, job_id: str) -> None:
        """Drive one stored job through the pipeline, outside the service, until it ends or waits."""
        await self.jobs.pipeline.drive(Hash32(bytes.fromhex(job_id)))

    async def restart(self) -> None:
        """The node stops and starts again over the same database, files, chain and overlay."""
        await self.stop()
        self.jobs = _client_jobs(self)
        await self.start()

    async def submit(
        self,
        payment: PaymentPath = PaymentPath.VOUCHER,
        *,
        provider: Address | None = None,
        timeout_s: float = 60.0,
        budget: int = BUDGET,
    ) -> JobView:
        spec = JobSpec(
            model_id=MODEL.hex(),
            input=INPUT,
            payment=payment,
            max_price_wei=budget,
            timeout_s=timeout_s,
            provider=provider,
        )
        return await self.jobs.submit(spec)

    async def until(self, job_id: str, *states: JobState, escrow_verified: bool = False) -> JobView:
        """The job's view once it reaches one of `states` (or ends), as watchers see it."""

        async def watch() -> JobView:
            view = None
            async for view in self.jobs.watch(job_id):
                if view.state in states:
                    return view
                if escrow_verified and view.payment is PaymentPath.ESCROW and view.state is JobState.VERIFIED:
                    return view
            assert view is not None
            return view

        return await asyncio.wait_for(watch(), WAIT_S)

    async def finished(self, job_id: str) -> JobView:
        """The job once it is done: settled (voucher), verified and waiting on the chain (escrow),
        or ended some other way."""
        return await self.until(job_id, JobState.SETTLED, escrow_verified=True)

    def requests_to(self, provider: Provider) -> list[JobRequest]:
        return [request for peer, request in self.overlay.requests if peer == provider.peer]

    async def stored_voucher(self, provider: Provider) -> int | None:
        stored = await self.db.run(self.db.vouchers.get, self.me, provider.address)
        return None if stored is None else stored.voucher.cumulative_amount

    # stored state, as a node that stopped would have left it -------------------------------------

    async def stored_job(
        self,
        state: JobState,
        payment: PaymentPath = PaymentPath.VOUCHER,
        *,
        provider: Provider | None = None,
        deadline: float | None = None,
        lost: tuple[Address, ...] = (),
        voucher_kept: bool = True,
    ) -> JobRecord:
        """A client job written straight to the store in `state`, its attempt (if any) with
        `provider`, after one lost attempt per address in `lost`; payments made on the way are
        stored (voucher, unless not `voucher_kept`) or escrowed on the chain (escrow), and the
        input is on disk."""
        blobs = JobBlobs(self.root / "blobs", fsync=False)
        await blobs.put(INPUT)
        job = NewJob(
            job_id=Hash32(secrets.token_bytes(32)),
            role=Role.CLIENT,
            payment=payment,
            model_id=MODEL,
            input_hash=sha256(INPUT),
            price_wei=BUDGET,
            client=self.me,
            deadline=time.time() + 60 if deadline is None else deadline,
        )
        record = await self.db.run(self.db.jobs.create, job)
        events: list[JobEvent] = []
        for address in lost:
            events += [
                Matched(address, price_wei=GWEI),
                ProviderLost(AttemptOutcome.REJECTED, "before the restart"),
            ]
        if events:
            record = (await self.db.run(self.db.jobs.apply_many, job.job_id, tuple(events)))[-1]
        if state is JobState.SUBMITTED:
            return record
        assert provider is not None
        order = [
            JobState.MATCHED,
            JobState.PAID,
            JobState.SENT,
            JobState.RUNNING,
            JobState.RESULT,
            JobState.VERIFIED,
        ]
        moves: dict[JobState, JobEvent] = {
            JobState.MATCHED: Matched(provider.address, price_wei=provider.price),
            JobState.PAID: PaymentMade(),
            JobState.SENT: Sent(),
            JobState.RUNNING: Started(),
            JobState.RESULT: ResultReceived(),
            JobState.VERIFIED: ResultVerified(),
        }
        path = order[: order.index(state) + 1]
        attempt = len(record.status.attempts)
        voucher = None
        receipt = None
        if JobState.PAID in path:
            if payment is PaymentPath.VOUCHER and voucher_kept:
                amount = (await self.stored_voucher(provider) or 0) + provider.price
                # The run before reserved for the provider before it signed, as the pipeline does.
                await self.market.cover_vouchers(provider.address, amount, sender=self.key.account)
                signed = Voucher(self.me, provider.address, amount)
                voucher = SignedVoucher(
                    signed, sign_voucher(self.key.private_key, self.market.domain(), signed)
                )
            elif payment is PaymentPath.ESCROW:
                await self.escrow(record, provider, attempt)
        if JobState.VERIFIED in path:
            request = self._request_for(record, provider, attempt)
            result = provider.result(request)
            await blobs.put(result.output)
            if payment is PaymentPath.VOUCHER:
                receipt = SignedReceipt(result.receipt, result.signature)
            else:
                if provider.behaviour is not None:
                    await provider.behaviour(request, lambda _e: None)
                await ReceiptFiles(self.root / "receipts", fsync=False).put(result.receipt, result.signature)
        moved = await self.db.run(
            self.db.jobs.apply_many,
            job.job_id,
            tuple(moves[s] for s in path),
            voucher=voucher,
            receipt=receipt,
            receipt_signs=None if receipt is None else receipt.receipt.job_id,
        )
        return moved[-1]

    async def escrow(self, record: JobRecord, provider: Provider, attempt: int) -> Hash32:
        """Request the attempt's on-chain job as the client's pipeline would."""
        requested = await self.market.request_job(
            record.model_id,
            price=provider.price,
            deadline=self.market.now + 3600,
            input_hash=record.input_hash,
            provider=provider.address,
            salt=escrow_salt(record.job_id, attempt),
            sender=self.key.account,
        )
        return requested.job_id

    def onchain_id(self, record: JobRecord, attempt: int) -> Hash32:
        return escrow_terms(self.me, record, attempt).job_id

    def _request_for(self, record: JobRecord, provider: Provider, attempt: int) -> JobRequest:
        if record.status.payment is PaymentPath.ESCROW:
            payment: Any = OnchainPayment(self.onchain_id(record, attempt))
        else:  # the voucher's amount does not enter the receipt
            payment = VoucherPayment(self.me, provider.address, 0, b"")
        return JobRequest(record.job_id, record.model_id, INPUT, payment, provider.price, 0)


def _client_jobs(side: ClientSide) -> ClientJobs:
    pipeline = ClientPipeline(
        store=JobStore(side.db, JobEvents()),
        blobs=JobBlobs(side.root / "blobs", fsync=False),
        matchmaker=Matchmaker(side.directory, rng=random.Random(7), exploration=0.0),
        jobs=side.overlay,  # type: ignore[arg-type]
        host=side.overlay,  # type: ignore[arg-type]
        market=side.market,  # type: ignore[arg-type]
        key=side.key,
        vouchers=VoucherBook(side.key.address, side.key.private_key, side.market.domain()),
        receipts=ReceiptFiles(side.root / "receipts", fsync=False),
    )
    return ClientJobs(pipeline, max_input_bytes=2**20)


def new_client(tmp_path: Path) -> ClientSide:
    return ClientSide(
        tmp_path, sqlite_database(tmp_path), NodeKey.generate(), FakeMarket(), FakeOverlay(), Directory()
    )


def fast_chain_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pipeline's waits between chain retries, shortened so a test of them runs in milliseconds."""
    monkeypatch.setattr(pipeline_module, "CHAIN_RETRY_S", (0.001, 0.001, 0.001, 0.001))


@contextlib.asynccontextmanager
async def running(side: ClientSide) -> AsyncIterator[ClientSide]:
    await side.start()
    try:
        yield side
    finally:
        await side.stop()
