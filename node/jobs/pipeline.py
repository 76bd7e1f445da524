"""The client's pipeline: drives one job through the state machine, persisting every step.

    submitted → matched → paid → sent → running → result → verified → settled

Each step is written to the database (and published to watchers) before the next one starts, so
a restarted node resumes from the last durable step. A provider that rejects, times out, dies or
returns a result that does not verify is backed off and the job goes back to `submitted`, to be
matched with the next candidate.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from node.chain.eip712 import verify_receipt
from node.chain.keys import NodeKey
from node.chain.market import JobMarket
from node.errors import (
    ChainError,
    GpunodeError,
    P2PError,
    PeerTimeout,
    SchedulerError,
    StorageError,
    TransactionReverted,
)
from node.jobs.blobs import JobBlobs, ReceiptFiles
from node.jobs.events import JobEvents
from node.jobs.matching import Matchmaker
from node.jobs.payments import MAX_ATTEMPTS, VoucherBook, escrow_terms, receipt_job_id
from node.jobs.recent import RecentResults
from node.jobs.state import (
    AttemptOutcome,
    Failed,
    JobEvent,
    JobState,
    Matched,
    PaymentMade,
    PaymentPath,
    ProviderLost,
    ResultReceived,
    ResultVerified,
    Sent,
    Settled,
    Started,
)
from node.logging import get_logger
from node.p2p.host import P2PHost
from node.p2p.job_messages import (
    JobAccepted,
    JobFailed,
    JobProgress,
    JobRejected,
    JobRequest,
    JobResult,
    OnchainPayment,
    Payment,
    VoucherPayment,
)
from node.p2p.job_protocol import JobClient
from node.storage import Database, JobRecord, SignedReceipt, SignedVoucher, StoredReceipt
from node.types import Address, Hash32, sha256

log = get_logger(__name__)

# Room the provider needs after the job's own timeout to claim and submit on-chain.
ESCROW_MARGIN_S = 300
# Jobs' worth of money reserved ahead for a provider, so reserving is not a transaction per job.
RESERVE_AHEAD_JOBS = 15
# How long a provider's accepted/running reports wait before being written on their own.
PROGRESS_RECORD_DELAY_S = 0.005
# Retry spacing while the chain is unreachable.
CHAIN_RETRY_S = (0.5, 1.0, 2.0, 4.0)


@dataclass
class ClientPipeline:
    db: Database
    blobs: JobBlobs
    events: JobEvents
    matchmaker: Matchmaker
    jobs: JobClient
    host: P2PHost
    market: JobMarket
    key: NodeKey
    vouchers: VoucherBook
    receipts: ReceiptFiles
    # Peer ids of matched providers, learnt from their adverts.
    peers: dict[Address, str] = field(default_factory=dict)
    pinned: dict[Hash32, Address] = field(default_factory=dict)
    # What each attempt costs: the matched provider's advertised price (the job stores its budget).
    prices: dict[tuple[Hash32, Address], int] = field(default_factory=dict)
    # Inputs of jobs submitted in this run, kept so a send does not read them back from disk.
    inputs: dict[Hash32, bytes] = field(default_factory=dict)
    # Verified results, so watchers' views of a finished job need not read them back.
    results: RecentResults = field(default_factory=RecentResults)
    _seen: dict[Address, int] = field(default_factory=dict)
    _writes: set[asyncio.Task[None]] = field(default_factory=set)
    _last_error: dict[Hash32, str] = field(default_factory=dict)
    # What vouchers to each provider may total, as last reserved on chain for it.
    _reserved: dict[Address, int] = field(default_factory=dict)

    @property
    def me(self) -> Address:
        return self.key.address

    async def apply(
        self,
        job_id: Hash32,
        *events: JobEvent,
        known: JobRecord | None = None,
        receipt: SignedReceipt | None = None,
        voucher: SignedVoucher | None = None,
    ) -> JobRecord:
        """Persist `events` (moves in a row, one transaction), then tell watchers of each state.

        `known` is the job as the caller holds it, sparing a read; the write is still guarded by
        its version.
        """
        records = await self.db.run(
            self.db.jobs.apply_many, job_id, events, known=known, receipt=receipt, voucher=voucher
        )
        for record in records:
            self.events.publish(record)
        return records[-1]

    # driving ----------------------------------------------------------------------------------

    async def drive(self, job_id: Hash32, *, known: JobRecord | None = None) -> None:
        """Move the job until it is terminal or waits on the chain (escrow jobs, once verified).

        `known`, the job as just stored, spares reading it; every move is still checked against
        the stored version.
        """
        record = known if known is not None else await self.db.run(self.db.jobs.get, job_id)
        record = await self._recover(record)
        try:
            while not record.status.terminal:
                step = _STEPS.get(record.state)
                if step is None:
                    return
                moved = await step(self, record)
                if moved is None:
                    return
                record = moved
        finally:
            self.inputs.pop(job_id, None)
            self.matchmaker.released(job_id)

    async def _recover(self, record: JobRecord) -> JobRecord:
        """A job found mid-flight at start: the request and its answer were lost with the process."""
        if record.state in (JobState.SENT, JobState.RUNNING):
            return await self._lose(record, AttemptOutcome.DIED, "the client restarted while the job ran")
        if record.state is JobState.RESULT:
            return await self._lose(
                record, AttemptOutcome.BAD_RESULT, "the client restarted before checking the result"
            )
        return record

    async def _match(self, record: JobRecord) -> JobRecord | None:
        status = record.status
        if time.time() > (record.deadline or float("inf")):
            return await self._fail(record, "the job ran out of time before any provider finished it")
        if len(status.attempts) >= MAX_ATTEMPTS:
            return await self._fail(record, f"{MAX_ATTEMPTS} providers tried and none finished the job")
        try:
            choice = self.matchmaker.choose(
                record.model_id,
                record.price_wei,
                tried=status.tried_providers,
                pinned=self.pinned.get(record.job_id),
            )
        except GpunodeError as exc:
            return await self._fail(record, _no_provider_reason(exc, self._last_error.get(record.job_id)))
        provider = choice.candidate.address
        self.matchmaker.assigned(record.job_id, provider)
        self.peers[provider] = choice.candidate.peer_id
        self.prices[record.job_id, provider] = choice.offer.price_wei
        if record.status.payment is PaymentPath.VOUCHER:
            # Signing the voucher needs nothing from outside: matched and paid are written together.
            return await self._pay_by_voucher(record, provider, Matched(provider))
        return await self.apply(record.job_id, Matched(provider), known=record)

    async def _pay(self, record: JobRecord) -> JobRecord | None:
        provider = _current_provider(record)
        if record.status.payment is PaymentPath.VOUCHER:
            return await self._pay_by_voucher(record, provider)
        try:
            await self._escrow(record, provider)
        except TransactionReverted as exc:
            return await self._fail(record, f"the chain refused the escrow payment: {exc}")
        except ChainError as exc:
            return await self._fail(record, f"the chain stayed unreachable while paying: {exc}")
        return await self.apply(record.job_id, PaymentMade(), known=record)

    async def _pay_by_voucher(self, record: JobRecord, provider: Address, *before: JobEvent) -> JobRecord:
        async with self.vouchers.lock(provider):
            price = self.price_of(record, provider)
            voucher = self.vouchers.next_voucher(provider, price)
            await self._reserve_for(provider, voucher.voucher.cumulative_amount, price)
            moved = await self.apply(record.job_id, *before, PaymentMade(), known=record, voucher=voucher)
            self.vouchers.committed(voucher, price)
        return moved

    async def _reserve_for(self, provider: Address, cumulative: int, price: int) -> None:
        """Providers run voucher jobs only on money reserved for them alone: reserve it first."""
        if cumulative <= self._reserved.get(provider, 0):
            return
        try:
            self._reserved[provider] = await self.market.cover_vouchers(
                provider, cumulative, ahead=RESERVE_AHEAD_JOBS * price, sender=self.key.account
            )
        except ChainError as exc:
            log.warning("reserve_failed", provider=provider, error=str(exc))

    async def _escrow(self, record: JobRecord, provider: Address) -> None:
        attempt = len(record.status.attempts) - 1
        terms = escrow_terms(self.me, record, attempt)
        remaining = max(1.0, (record.deadline or time.time()) - time.time())
        for delay in (*CHAIN_RETRY_S, None):
            try:
                now = await self._chain_time()
                await self.market.request_job(
                    record.model_id,
                    price=self.price_of(record, provider),
                    deadline=now + int(remaining) + ESCROW_MARGIN_S,
                    input_hash=record.input_hash,
                    provider=provider,
                    salt=terms.salt,
                    sender=self.key.account,
                )
                return
            except TransactionReverted as exc:
                if exc.error_name == "JobExists":
                    return  # requested before a restart; the same salt names the same job
                raise
            except ChainError:
                if delay is None:
                    raise
                await asyncio.sleep(delay)

    async def _chain_time(self) -> int:
        block = await self.market.client.w3.eth.get_block("latest")
        return int(block["timestamp"])

    async def _send(self, record: JobRecord) -> JobRecord | None:
        provider = _current_provider(record)
        attempt = len(record.status.attempts) - 1
        peer = await self._peer_of(provider)
        if peer is None:
            return await self._lose(record, AttemptOutcome.DIED, "the provider's advert expired")
        payment = await self._payment_message(record, provider, attempt)
        request = JobRequest(
            job_id=record.job_id,
            model_id=record.model_id,
            input=self.inputs.get(record.job_id) or await self.blobs.require(record.input_hash, "job input"),
            payment=payment,
            max_price_wei=self.price_of(record, provider),
            deadline_ms=int((record.deadline or time.time() + 60) * 1000),
        )
        progress = _Progress(self, record)
        started = time.perf_counter()
        try:
            outcome = await self.jobs.request_job(peer, request, progress.on_event)
        except PeerTimeout as exc:
            return await self._lose(await progress.drain(), AttemptOutcome.TIMED_OUT, str(exc))
        except P2PError as exc:
            return await self._lose(await progress.drain(), AttemptOutcome.DIED, str(exc))
        record = await progress.drain()
        if isinstance(outcome, JobRejected):
            return await self._lose(record, AttemptOutcome.REJECTED, f"{outcome.code}: {outcome.reason}")
        if isinstance(outcome, JobFailed):
            return await self._lose(record, AttemptOutcome.DIED, f"{outcome.code}: {outcome.reason}")
        return await self._take_result(record, outcome, attempt, time.perf_counter() - started)

    async def _payment_message(self, record: JobRecord, provider: Address, attempt: int) -> Payment:
        if record.status.payment is PaymentPath.ESCROW:
            return OnchainPayment(receipt_job_id(self.me, record, attempt))
        latest = self.vouchers.latest(provider)
        if latest is None:
            stored = await self.db.run(self.db.vouchers.get, self.me, provider)
            if stored is None:
                raise SchedulerError(f"no voucher for provider {provider} is stored although the job is paid")
            latest = SignedVoucher(stored.voucher, stored.signature)
        voucher = latest.voucher
        return VoucherPayment(voucher.client, voucher.provider, voucher.cumulative_amount, latest.signature)

    async def _take_result(
        self, record: JobRecord, result: JobResult, attempt: int, elapsed_s: float
    ) -> JobRecord | None:
        provider = _current_provider(record)
        received = (*_to_running(record), ResultReceived())
        problem = self._check_result(record, result, provider, attempt)
        if problem is not None:
            log.warning("result_rejected", job_id=record.job_id.hex(), provider=provider, problem=problem)
            record = await self.apply(record.job_id, *received, known=record)
            return await self._lose(record, AttemptOutcome.BAD_RESULT, problem)
        # The output (and an escrow job's receipt) must be on disk before the job counts as verified.
        if record.status.payment is PaymentPath.VOUCHER:
            await self.blobs.put(result.output)
        else:
            await asyncio.gather(
                self.blobs.put(result.output), self.receipts.put(result.receipt, result.signature)
            )
        # Known to watchers from the moment the job is recorded as verified; gone if it is not.
        self.results.put(StoredReceipt(result.receipt, result.signature, time.time()), result.output)
        try:
            record = await self._record_verified(
                record, received, SignedReceipt(result.receipt, result.signature)
            )
        except BaseException:
            self.results.forget(result.receipt.job_id)
            raise
        self.matchmaker.succeeded(provider, elapsed_s * 1000)
        self._remember(provider, latency_ms=elapsed_s * 1000)
        return record

    async def _record_verified(
        self, record: JobRecord, received: tuple[JobEvent, ...], signed: SignedReceipt
    ) -> JobRecord:
        # Checking a result needs nothing from outside, so received and verified are one write.
        if record.status.payment is PaymentPath.VOUCHER:
            # The voucher covering the job was taken when the provider ran it: nothing is left to
            # wait for, so the job settles in the same write.
            moves = (*received, ResultVerified(), Settled())
            return await self.apply(record.job_id, *moves, known=record, receipt=signed)
        # An escrow receipt names the on-chain job; it was kept in the receipt files above.
        return await self.apply(record.job_id, *received, ResultVerified(), known=record)

    def _check_result(
        self, record: JobRecord, result: JobResult, provider: Address, attempt: int
    ) -> str | None:
        receipt = result.receipt
        if receipt.job_id != receipt_job_id(self.me, record, attempt):
            return "the receipt names another job"
        if receipt.model_id != record.model_id or receipt.input_hash != record.input_hash:
            return "the receipt names another model or input"
        if receipt.provider.lower() != provider.lower():
            return f"the receipt names provider {receipt.provider}, not {provider}"
        if sha256(result.output) != receipt.output_hash:
            return "the output does not hash to the receipt's output hash"
        if not verify_receipt(self.vouchers.domain, receipt, result.signature, provider):
            return "the receipt's signature is not the provider's"
        return None

    async def _settle_voucher_job(self, record: JobRecord) -> JobRecord | None:
        if record.status.payment is PaymentPath.VOUCHER:
            # The voucher covering this job was acknowledged when the provider ran it.
            return await self.apply(record.job_id, Settled(), known=record)
        return None  # escrow jobs settle when the chain finalizes them (node.settlement)

    # helpers ----------------------------------------------------------------------------------

    async def flush(self) -> None:
        """Wait for background writes (provider statistics) to land."""
        await asyncio.gather(*self._writes, return_exceptions=True)

    def _remember(
        self, provider: Address, *, latency_ms: float | None = None, backoff_until: float = 0.0
    ) -> None:
        """Keep how the provider served us in the database, off the job's critical path."""
        task = asyncio.create_task(self._record_service(provider, latency_ms, backoff_until))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _record_service(
        self, provider: Address, latency_ms: float | None, backoff_until: float
    ) -> None:
        providers = self.db.providers
        try:
            advert = self.matchmaker.directory.get(provider)
            if advert is not None and self._seen.get(provider) != advert.sequence:
                summary = {"listen_addrs": list(advert.listen_addrs), "sequence": advert.sequence}
                await self.db.run(providers.seen, provider, advert.peer_id, summary)
                self._seen[provider] = advert.sequence
            if latency_ms is not None:
                await self.db.run(providers.record_success, provider, latency_ms)
            else:
                await self.db.run(providers.record_failure, provider, backoff_until)
        except StorageError as exc:
            # Only the scheduler's memory is at stake; the job itself is already recorded.
            log.warning("provider_stats_not_saved", provider=provider, error=str(exc))

    def price_of(self, record: JobRecord, provider: Address) -> int:
        """The attempt's price: as matched, else the provider's current advert, else the budget."""
        known = self.prices.get((record.job_id, provider))
        if known is not None:
            return known
        advert = self.matchmaker.directory.get(provider)
        price = advert.price_for(record.model_id) if advert is not None else None
        if price is None or price > record.price_wei:
            price = record.price_wei
        self.prices[record.job_id, provider] = price
        return price

    async def _peer_of(self, provider: Address) -> str | None:
        """The provider's peer id, dialled at its advertised addresses if not connected yet."""
        advert = self.matchmaker.directory.get(provider)
        if advert is None:
            return self.peers.get(provider)
        self.peers[provider] = advert.peer_id
        if advert.peer_id not in self.host.connected_peers():
            for addr in advert.listen_addrs:
                try:
                    await self.host.connect(addr)
                    break
                except P2PError as exc:
                    log.info("provider_dial_failed", provider=provider, addr=addr, error=str(exc))
        return advert.peer_id

    async def _lose(self, record: JobRecord, outcome: AttemptOutcome, detail: str) -> JobRecord:
        provider = _current_provider(record)
        log.info(
            "provider_lost", job_id=record.job_id.hex(), provider=provider, outcome=outcome, detail=detail
        )
        self._last_error[record.job_id] = f"{provider}: {outcome}: {detail}"
        self._remember(provider, backoff_until=self.matchmaker.failed(provider))
        paid = record.status.current is not None and record.status.current.paid
        moved = await self.apply(record.job_id, ProviderLost(outcome, detail), known=record)
        price = self.prices.get((record.job_id, provider))
        # After a restart the attempt's price is unknown: its amount then stays promised.
        if paid and record.status.payment is PaymentPath.VOUCHER and price is not None:
            self.vouchers.released(provider, price)
        return moved

    async def _fail(self, record: JobRecord, reason: str) -> JobRecord:
        log.info("job_failed", job_id=record.job_id.hex(), reason=reason)
        self._last_error.pop(record.job_id, None)
        return await self.apply(record.job_id, Failed(reason), known=record)


class _Progress:
    """Records accepted/running as the provider reports them, in order, without blocking the stream.

    Recording waits `PROGRESS_RECORD_DELAY_S` first: a job whose result comes back sooner has
    its accepted/running steps written with the result, in one transaction, and never alone.
    """

    def __init__(self, pipeline: ClientPipeline, sent: JobRecord) -> None:
        self._pipeline = pipeline
        self._job_id = sent.job_id
        self._queue: asyncio.Queue[JobEvent] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._writing = False
        self._latest = sent
        self._sent = False
        self._started = False

    def on_event(self, event: JobAccepted | JobProgress) -> None:
        if isinstance(event, JobAccepted) and not self._sent:
            self._sent = True
            self._queue.put_nowait(Sent())
        elif isinstance(event, JobProgress) and not self._started:
            if not self._sent:
                self._sent = True
                self._queue.put_nowait(Sent())
            self._started = True
            self._queue.put_nowait(Started())
        if self._task is None and not self._queue.empty():
            self._task = asyncio.create_task(self._record())

    async def _record(self) -> None:
        await asyncio.sleep(PROGRESS_RECORD_DELAY_S)
        self._writing = True
        while not self._queue.empty():
            events = [self._queue.get_nowait() for _ in range(self._queue.qsize())]
            self._latest = await self._pipeline.apply(self._job_id, *events, known=self._latest)
        self._task = None
        self._writing = False

    async def drain(self) -> JobRecord:
        """The job as recorded once no step the provider reported is being written; steps still
        waiting to be written are dropped (the caller writes them with what comes next)."""
        if self._task is not None and not self._writing:
            self._task.cancel()
            self._task = None
        while self._task is not None:
            await self._task
        return self._latest


def _to_running(record: JobRecord) -> tuple[JobEvent, ...]:
    """The moves a job still needs to be running: a fast job may finish before its accepted and
    progress frames were recorded."""
    if record.state is JobState.PAID:
        return (Sent(), Started())
    if record.state is JobState.SENT:
        return (Started(),)
    return ()


def _current_provider(record: JobRecord) -> Address:
    current = record.status.current
    if current is None:
        raise SchedulerError(f"job {record.job_id.hex()} has no provider attempt in flight")
    return current.provider


def _no_provider_reason(exc: GpunodeError, last_error: str | None) -> str:
    if last_error is None:
        return str(exc)
    return f"{exc}; the last provider tried failed with {last_error}"


_STEPS = {
    JobState.SUBMITTED: ClientPipeline._match,
    JobState.MATCHED: ClientPipeline._pay,
    JobState.PAID: ClientPipeline._send,
    JobState.VERIFIED: ClientPipeline._settle_voucher_job,
}
