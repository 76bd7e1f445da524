"""The client's pipeline: drives one job through the state machine, persisting every step.

    submitted → matched → paid → sent → running → result → verified → settled

Each step is written to the database (and published to watchers) before the next one starts, so
a restarted node resumes from the last durable step. A provider that rejects, times out, dies or
returns a result that does not verify is backed off and the job goes back to `submitted`, to be
matched with the next candidate.

A voucher job is bound late: each attempt first asks a few good providers at once to hold it a
slot (`/gpunode/hold/1`, node.scheduler.holds), sending no payment, and goes to the first that
keeps one; the other holds are given up. Its voucher is signed only then, so no voucher goes to a
provider that would not start the job. When none of them holds it (all refuse, or none keeps a
slot within `HOLD_WAIT_S`), the attempt goes where `Matchmaker.choose` puts it, to queue there.

An escrowed attempt whose answer was lost (the stream broke, or this node restarted while it ran)
is not given up while its escrow can still pay that provider: the request goes to the same
provider again, which serves a claimed job to the end and gives its requester the result again.
Moving on would pay a second provider for one job.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

from node.chain.eip712 import verify_receipt
from node.chain.job_logs import ChainOutcome, chain_outcome, submitted_receipt
from node.chain.keys import NodeKey
from node.chain.market import JobMarket
from node.chain.market import JobStatus as ChainJobStatus
from node.client.matching import Matchmaker
from node.client.payments import VoucherBook
from node.client.recent import RecentResults
from node.client.text_feed import TextFeeds
from node.domain.state import (
    AttemptOutcome,
    ClientState,
    Failed,
    JobEvent,
    Matched,
    PaymentMade,
    PaymentPath,
    ProviderLost,
    ResultReceived,
    ResultVerified,
    Sent,
    Settled,
    Started,
    State,
)
from node.errors import (
    ChainError,
    GpunodeError,
    P2PError,
    PeerTimeout,
    SchedulerError,
    StorageError,
    TransactionReverted,
)
from node.executor.compare import RunResult
from node.executor.errors import InvalidInput
from node.executor.hf_requests import parse_generation
from node.jobstore.blobs import JobBlobs, ReceiptFiles
from node.jobstore.store import JobStore
from node.logging import get_logger
from node.p2p.blob_protocol import fetch_blob
from node.p2p.blob_store import SharedBlobs
from node.p2p.errors import BlobIntegrityError, BlobTooLarge
from node.p2p.hold_protocol import Hold, HoldClient
from node.p2p.host import P2PHost
from node.p2p.job_messages import (
    INLINE_LIMIT,
    INVALID_INPUT,
    MODEL_UNAVAILABLE,
    BlobRef,
    HoldReady,
    HoldRequest,
    JobAccepted,
    JobFailed,
    JobProgress,
    JobRejected,
    JobRequest,
    JobResult,
    JobTokens,
    OnchainPayment,
    Payment,
    VoucherPayment,
)
from node.p2p.job_protocol import JobClient
from node.scheduler import Choice
from node.settlement.terms import MAX_ATTEMPTS, escrow_terms, receipt_job_id
from node.storage import Database, JobRecord, SignedReceipt, SignedVoucher, StoredReceipt
from node.types import Address, Hash32, sha256

log = get_logger(__name__)

# Room the provider needs after the job's own timeout to claim and submit on-chain.
ESCROW_MARGIN_S = 300
# Jobs' worth of money reserved ahead for a provider, so reserving is not a transaction per job.
RESERVE_AHEAD_JOBS = 15
# How long a provider's accepted/running reports wait before being written on their own.
PROGRESS_RECORD_DELAY_S = 0.005
# The longest a job waits for a slot from the providers asked to hold one (less when its deadline
# is nearer) before it is sent to queue at one of them.
HOLD_WAIT_S = 30.0
# Retry spacing while the chain is unreachable.
CHAIN_RETRY_S = (0.5, 1.0, 2.0, 4.0)
# Waits before asking a provider again for an escrowed job it holds; the last one repeats.
RESEND_WAIT_S = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


@dataclass(frozen=True, slots=True)
class Submission:
    """What a job's submitter already holds: the provider it chose (and checked the price of),
    the provider it pinned the job to, if any, and the input."""

    choice: Choice
    input: bytes
    pinned: Address | None = None


@dataclass
class ClientPipeline:
    store: JobStore
    blobs: JobBlobs
    matchmaker: Matchmaker
    jobs: JobClient
    host: P2PHost
    market: JobMarket
    key: NodeKey
    vouchers: VoucherBook
    receipts: ReceiptFiles
    # Verified results, so watchers' views of a finished job need not read them back.
    results: RecentResults = field(default_factory=RecentResults)
    # The text of jobs submitted to stream, as providers stream it.
    text: TextFeeds = field(default_factory=TextFeeds)
    # Peer ids of matched providers, learnt from their adverts.
    _peers: dict[Address, str] = field(default_factory=dict)
    # Jobs pinned to one provider by their submitter (never reassigned elsewhere).
    _pinned: dict[Hash32, Address] = field(default_factory=dict)
    # The provider chosen when the job was submitted: its first attempt goes there, unmatched again.
    _chosen: dict[Hash32, Choice] = field(default_factory=dict)
    # Inputs of jobs driven now, kept so that holds and sends do not read them back from disk.
    _inputs: dict[Hash32, bytes] = field(default_factory=dict)
    # Attempts stored before prices were: the price first used, so pay and send agree.
    _unrecorded_prices: dict[tuple[Hash32, Address], int] = field(default_factory=dict)
    # Attempts priced in this run (a lost voucher attempt gives its amount back; see `_lose`).
    _priced_here: dict[Hash32, set[Address]] = field(default_factory=dict)
    _seen: dict[Address, int] = field(default_factory=dict)
    # How providers served us, waiting to be written by `record_service()`.
    _served: asyncio.Queue[tuple[Address, float | None, float]] = field(default_factory=asyncio.Queue)
    _last_error: dict[Hash32, str] = field(default_factory=dict)
    # What vouchers to each provider may total, as last reserved on chain for it.
    _reserved: dict[Address, int] = field(default_factory=dict)
    # Escrowed jobs asked for again after a lost answer: how many times so far.
    _resent: dict[Hash32, int] = field(default_factory=dict)
    # The hold a provider granted for the job's current attempt, released when the attempt ends
    # (not when the job is accepted: the release would compete with the job's first answers).
    _holds: dict[Hash32, Hold] = field(default_factory=dict)
    _closing: set[asyncio.Task[None]] = field(default_factory=set)
    # Asks providers for holds, keeping released hold streams for the next ones.
    hold_client: HoldClient = field(init=False)
    # Inputs above the inline limit, shared with the provider of the attempt to fetch by reference.
    shared: SharedBlobs = field(default_factory=SharedBlobs)
    # The largest output fetched by reference.
    max_output_bytes: int = 256 * 2**20
    # Told of every result verified (the spot checker's intake); must not block.
    on_verified: Callable[[JobRecord, RunResult], None] | None = None

    def __post_init__(self) -> None:
        self.hold_client = HoldClient(self.host)

    @property
    def me(self) -> Address:
        return self.key.address

    @property
    def db(self) -> Database:
        return self.store.db

    # driving ----------------------------------------------------------------------------------

    async def drive(
        self, job_id: Hash32, *, known: JobRecord | None = None, submitted: Submission | None = None
    ) -> None:
        """Move the job until it is terminal or waits on the chain (escrow jobs, once verified).

        `known`, the job as just stored, spares reading it; every move is still checked against
        the stored version. `submitted` carries what its submitter already chose and holds.
        """
        if submitted is not None:
            self._chosen[job_id] = submitted.choice
            self._inputs[job_id] = submitted.input
            if submitted.pinned is not None:
                self._pinned[job_id] = submitted.pinned
        record = known if known is not None else await self.store.get(job_id)
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
            self.text.close(job_id)
            self._inputs.pop(job_id, None)
            self._chosen.pop(job_id, None)
            self._priced_here.pop(job_id, None)
            self._resent.pop(job_id, None)
            self._release_hold(job_id)
            self.matchmaker.released(job_id)

    async def _recover(self, record: JobRecord) -> JobRecord:
        """A job found mid-flight at start: the request and its answer were lost with the process.
        An escrowed one is asked for again (`_resend`)."""
        sent = record.state in (ClientState.SENT, ClientState.RUNNING)
        if record.status.payment is PaymentPath.ESCROW and (sent or record.state is ClientState.RESULT):
            return record
        if sent:
            return await self._lose(record, AttemptOutcome.DIED, "the client restarted while the job ran")
        if record.state is ClientState.RESULT:
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
        choice = self._chosen.pop(record.job_id, None)
        if self._holds_first(record):
            held = await self._hold_slot(record)
            if held is None and (await self.store.get(record.job_id)).status.terminal:
                return None  # cancelled while its holds waited
            choice = held or choice
        if choice is None or choice.candidate.address in status.tried_providers:
            try:
                choice = self.matchmaker.choose(
                    record.model_id,
                    record.price_wei,
                    tried=status.tried_providers,
                    pinned=self._pinned.get(record.job_id),
                )
            except GpunodeError as exc:
                return await self._fail(record, _no_provider_reason(exc, self._last_error.get(record.job_id)))
        provider = choice.candidate.address
        self.matchmaker.assigned(record.job_id, provider)
        self._peers[provider] = choice.candidate.peer_id
        matched = Matched(provider, price_wei=choice.offer.price_wei)
        self._priced_here.setdefault(record.job_id, set()).add(provider)
        if record.status.payment is PaymentPath.VOUCHER:
            # Signing the voucher needs nothing from outside: matched and paid are written together.
            return await self._pay_by_voucher(record, provider, matched, price=matched.price_wei)
        return await self.store.apply(record.job_id, matched, known=record)

    def _holds_first(self, record: JobRecord) -> bool:
        """Whether the job's attempt asks providers to hold it a slot first. Voucher jobs only:
        an escrowed job names its provider in a transaction. A pinned job has nowhere else to go."""
        return record.status.payment is PaymentPath.VOUCHER and record.job_id not in self._pinned

    async def _hold_slot(self, record: JobRecord) -> Choice | None:
        """Ask a few good providers at once to hold the job a slot; the one that keeps one first,
        with its hold kept until the attempt ends, or None when none did in time."""
        try:
            choices = self.matchmaker.holds(
                record.model_id, record.price_wei, tried=record.status.tried_providers
            )
        except GpunodeError:
            return None  # `choose` says why, in the same terms
        size = len(await self._input_of(record))
        wait_s = min(HOLD_WAIT_S, max(0.0, ((record.deadline or time.time() + 60) - time.time()) / 2))
        asks = {
            asyncio.ensure_future(self._ask_hold(record, choice, size, len(choices), wait_s)): choice
            for choice in choices
        }
        granted: tuple[Choice, Hold] | None = None
        pending = set(asks)
        with self.store.watch(record.job_id) as changes:
            ended = asyncio.ensure_future(_until_terminal(changes))
            try:
                while pending and granted is None and not ended.done():
                    done, pending = await asyncio.wait({*pending, ended}, return_when=asyncio.FIRST_COMPLETED)
                    pending.discard(ended)
                    for task in done - {ended}:
                        hold = task.result()
                        if hold is not None and granted is None:
                            granted = (asks[task], hold)
                        elif hold is not None:
                            self._background(hold.release())
                if ended.done() and granted is not None:
                    # Cancelled (or ended) while its holds waited: the slot is given back.
                    self._background(granted[1].release())
                    granted = None
            except BaseException:
                if granted is not None:
                    await granted[1].close()
                raise
            finally:
                ended.cancel()
                if pending:  # the other holds are given up off the job's path
                    self._background(_give_up(pending))
        if granted is None:
            return None
        self._holds[record.job_id] = granted[1]
        return granted[0]

    async def _ask_hold(
        self, record: JobRecord, choice: Choice, size: int, copies: int, wait_s: float
    ) -> Hold | None:
        """One provider's hold: open once it keeps a slot, None when it refused, went away or
        kept none within `wait_s` (that hold is then released)."""
        provider = choice.candidate.address
        request = HoldRequest(record.job_id, record.model_id, choice.offer.price_wei, size, copies)
        hold: Hold | None = None
        clean = False  # whether the stream is in a known state (a release keeps it for reuse)
        try:
            peer = await self._peer_of(provider)
            if peer is None:
                return None
            hold = await self.hold_client.ask(peer, request)
            deadline = time.monotonic() + wait_s
            while (left := deadline - time.monotonic()) > 0:
                answer = await hold.next(left)
                if isinstance(answer, HoldReady):
                    kept, hold = hold, None
                    return kept
                if isinstance(answer, JobRejected):
                    log.info("hold_refused", job_id=record.job_id.hex(), provider=provider, code=answer.code)
                    clean = True
                    return None
                self.matchmaker.waited(provider, answer.position)
            clean = True
            return None
        except PeerTimeout:
            clean = True  # it kept no slot in time
            return None
        except GpunodeError as exc:
            log.info("hold_failed", job_id=record.job_id.hex(), provider=provider, error=str(exc))
            return None
        finally:
            if hold is not None:
                await (hold.release() if clean else hold.close())

    async def _input_of(self, record: JobRecord) -> bytes:
        """The job's input: as submitted in this run, or read once from disk and kept while the
        job is driven (its holds and its attempts need it)."""
        job_input = self._inputs.get(record.job_id)
        if job_input is None:
            job_input = await self.blobs.require(record.input_hash, "job input")
            self._inputs[record.job_id] = job_input
        return job_input

    def _release_hold(self, job_id: Hash32) -> None:
        """The job's attempt is over: its hold is released (a slot the job took stays its own)."""
        hold = self._holds.pop(job_id, None)
        if hold is not None:
            self._background(hold.release())

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

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
        return await self.store.apply(record.job_id, PaymentMade(), known=record)

    async def _pay_by_voucher(
        self, record: JobRecord, provider: Address, *before: JobEvent, price: int | None = None
    ) -> JobRecord:
        """Sign the next voucher to `provider` and record it paid (after `before`, when given, in
        the same transaction); `price` is the attempt's, when `record` does not hold it yet."""
        async with self.vouchers.lock(provider):
            if price is None:
                price = self.price_of(record, provider)
            voucher = self.vouchers.next_voucher(provider, price)
            await self._reserve_for(provider, voucher.voucher.cumulative_amount, price)
            moved = await self.store.apply(
                record.job_id, *before, PaymentMade(), known=record, voucher=voucher
            )
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
                now = int(await self.market.client.chain_time())
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

    async def _send(self, record: JobRecord) -> JobRecord | None:
        try:
            return await self._send_attempt(record)
        finally:
            self._release_hold(record.job_id)

    async def _send_attempt(self, record: JobRecord) -> JobRecord | None:
        provider = _current_provider(record)
        attempt = len(record.status.attempts) - 1
        peer = await self._peer_of(provider)
        if peer is None:
            return await self._lose(record, AttemptOutcome.DIED, "the provider's advert expired")
        payment = await self._payment_message(record, provider, attempt)
        job_input = await self._input_of(record)
        sent_input: bytes | BlobRef = job_input
        if len(job_input) > INLINE_LIMIT:
            # The provider fetches it from this node, which gives it to that provider alone.
            sent_input = BlobRef(self.shared.share(job_input, peer), len(job_input))
        request = JobRequest(
            job_id=record.job_id,
            model_id=record.model_id,
            input=sent_input,
            payment=payment,
            max_price_wei=self.price_of(record, provider),
            deadline_ms=int((record.deadline or time.time() + 60) * 1000),
            stream=self.text.streams(record.job_id),
        )
        if request.stream:
            self.text.open(record.job_id)  # an attempt after a lost one starts its text over
        progress = _Progress(self, record)
        started = time.perf_counter()
        try:
            outcome = await self.jobs.request_job(peer, request, progress.on_event)
            if isinstance(outcome, JobResult) and outcome.output_ref is not None:
                outcome = await self._fetch_output(peer, outcome, outcome.output_ref)
        except (BlobIntegrityError, BlobTooLarge) as exc:
            record = await progress.drain()
            detail = f"the output it referred to is not the signed one: {exc}"
            return await self._lost_attempt(record, provider, attempt, AttemptOutcome.BAD_RESULT, detail)
        except (PeerTimeout, P2PError) as exc:
            record = await progress.drain()
            lost = AttemptOutcome.TIMED_OUT if isinstance(exc, PeerTimeout) else AttemptOutcome.DIED
            return await self._lost_attempt(record, provider, attempt, lost, str(exc))
        except BaseException:
            # Cancelled (the node is stopping): no write of the provider's reports outlives the send.
            await progress.drain()
            raise
        finally:
            if isinstance(sent_input, BlobRef):
                self.shared.unshare(sent_input.sha256, peer)
        record = await progress.drain()
        if isinstance(outcome, JobRejected | JobFailed) and outcome.code == INVALID_INPUT:
            # Our input, not the provider, is at fault: another provider would refuse it too.
            return await self._fail_unpaid(
                record, provider, f"the input does not fit the model: {outcome.reason}"
            )
        if isinstance(outcome, JobFailed) and outcome.code == MODEL_UNAVAILABLE:
            # The model (served by this node or the peers holding it) is at fault, not the provider.
            return await self._fail_unpaid(record, provider, f"the model could not be used: {outcome.reason}")
        if isinstance(outcome, JobRejected):
            detail = f"{outcome.code}: {outcome.reason}"
            return await self._lost_attempt(record, provider, attempt, AttemptOutcome.REJECTED, detail)
        if isinstance(outcome, JobFailed):
            detail = f"{outcome.code}: {outcome.reason}"
            return await self._lost_attempt(record, provider, attempt, AttemptOutcome.DIED, detail)
        return await self._take_result(record, outcome, attempt, time.perf_counter() - started)

    async def _fetch_output(self, peer: str, result: JobResult, ref: BlobRef) -> JobResult:
        """The output a result refers to, fetched from its provider; it must hash to the receipt's
        output hash (the reference names nothing else), so the signature covers it."""
        if ref.size > self.max_output_bytes:
            raise BlobTooLarge(
                f"the output is {ref.size} bytes; this node takes at most {self.max_output_bytes}"
            )
        output = await fetch_blob(self.host, peer, result.receipt.output_hash, max_size=ref.size)
        return dataclasses.replace(result, output=output, output_ref=None)

    async def _resend(self, record: JobRecord) -> JobRecord | None:
        """Ask again for an escrowed job whose answer was lost (the step of a job left sent or
        running), while its escrow can still pay that provider."""
        provider = _current_provider(record)
        attempt = len(record.status.attempts) - 1
        if not await self._escrow_held(record, provider, attempt):
            return await self._lose(record, AttemptOutcome.DIED, "the escrowed job's answer was lost")
        return await self._send(record)

    async def _lost_attempt(
        self, record: JobRecord, provider: Address, attempt: int, outcome: AttemptOutcome, detail: str
    ) -> JobRecord:
        """An attempt that brought no good result. An escrowed one whose escrow may still pay that
        provider is asked for again instead: paying another provider would pay twice for one job."""
        if record.status.payment is PaymentPath.ESCROW and await self._escrow_held(record, provider, attempt):
            log.info(
                "escrow_held", job_id=record.job_id.hex(), provider=provider, outcome=outcome, detail=detail
            )
            return await self._wait_to_resend(record, provider, detail)
        return await self._lose(record, outcome, detail)

    async def _wait_to_resend(self, record: JobRecord, provider: Address, detail: str) -> JobRecord:
        """Wait before asking again (longer each time), unless the job runs out of time first."""
        tries = self._resent.get(record.job_id, 0)
        self._resent[record.job_id] = tries + 1
        wait = RESEND_WAIT_S[min(tries, len(RESEND_WAIT_S) - 1)]
        if time.time() + wait > (record.deadline or float("inf")):
            # Its escrow ends in the provider's pay (a result on chain) or a refund: never in both.
            return await self._fail(
                record,
                f"provider {provider} holds the escrowed job but gave no good result in time (last: "
                f"{detail}); the escrow is refunded unless the provider puts a result on chain",
            )
        await asyncio.sleep(wait)
        return record

    async def _escrow_held(self, record: JobRecord, provider: Address, attempt: int) -> bool:
        """Whether the attempt's escrow may still pay `provider`, whose answer did not come: it
        claimed the job or put a result on chain. An escrow nobody claimed is cancelled first (its
        price is the client's again at once), so that no later claim can make it pay for a job
        another provider runs. A chain that does not answer counts as held."""
        terms = escrow_terms(self.me, record, attempt)
        try:
            onchain = await self.market.job(terms.job_id)
            if onchain.status is ChainJobStatus.REQUESTED:
                try:
                    await self.market.cancel_job(terms, sender=self.key.account)
                    log.info("escrow_cancelled", job_id=record.job_id.hex(), onchain=terms.job_id.hex())
                    return False
                except TransactionReverted:
                    onchain = await self.market.job(terms.job_id)  # claimed meanwhile
            if onchain.status is ChainJobStatus.NONE:
                # Gone from the chain: paid to its provider (ask it for the result) or refunded.
                return await chain_outcome(self.market, terms.job_id) is ChainOutcome.FINALIZED
        except ChainError as exc:
            log.warning("escrow_unread", job_id=record.job_id.hex(), error=str(exc))
            return True
        named = onchain.provider is not None and onchain.provider.lower() == provider.lower()
        return onchain.status in (ChainJobStatus.CLAIMED, ChainJobStatus.SUBMITTED) and named

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
        # A result asked for again may follow one this node stopped before checking.
        received = () if record.state is ClientState.RESULT else (*_to_running(record), ResultReceived())
        problem = self._check_result(record, result, provider, attempt)
        if problem is None and record.status.payment is PaymentPath.ESCROW:
            problem = await self._check_against_chain(record, result, provider, attempt)
        if problem is not None:
            log.warning("result_rejected", job_id=record.job_id.hex(), provider=provider, problem=problem)
            record = await self.store.apply(record.job_id, *received, known=record)
            return await self._lost_attempt(record, provider, attempt, AttemptOutcome.BAD_RESULT, problem)
        # The output (and an escrow job's receipt) must be on disk before the job counts as
        # verified: a voucher job's output is written on the database's thread, just before it.
        if record.status.payment is PaymentPath.ESCROW:
            await asyncio.gather(
                self.blobs.put(result.output), self.receipts.put(result.receipt, result.signature)
            )
        # Known to watchers from the moment the job is recorded as verified; gone if it is not.
        self.results.put(StoredReceipt(result.receipt, result.signature, time.time()), result.output)
        try:
            record = await self._record_verified(
                record, received, SignedReceipt(result.receipt, result.signature), result.output
            )
        except BaseException:
            self.results.forget(result.receipt.job_id)
            raise
        # An escrowed result is handed over once the chain holds it: its latency times the chain.
        timed = record.status.payment is PaymentPath.VOUCHER
        self.matchmaker.succeeded(provider, elapsed_s * 1000, job_id=record.job_id, timed=timed)
        self._remember(provider, latency_ms=elapsed_s * 1000)
        if self.on_verified is not None:
            self.on_verified(record, RunResult(result.receipt, result.signature, result.output))
        return record

    async def _record_verified(
        self, record: JobRecord, received: tuple[JobEvent, ...], signed: SignedReceipt, output: bytes
    ) -> JobRecord:
        # Checking a result needs nothing from outside, so received and verified are one write.
        if record.status.payment is PaymentPath.VOUCHER:
            # The voucher covering the job was taken when the provider ran it: nothing is left to
            # wait for, so the job settles in the same write.
            moves = (*received, ResultVerified(), Settled())
            write_output = functools.partial(self.blobs.write, output)
            return await self.store.apply(
                record.job_id,
                *moves,
                known=record,
                receipt=signed,
                before=write_output,
                receipt_signs=signed.receipt.job_id,
            )
        # An escrow receipt names the on-chain job; it was kept in the receipt files above.
        return await self.store.apply(record.job_id, *received, ResultVerified(), known=record)

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
        if self.text.streams(record.job_id) and self.text.text(record.job_id) != _generated_text(
            result.output
        ):
            return "the text streamed is not the text of the signed output"
        return None

    async def _check_against_chain(
        self, record: JobRecord, result: JobResult, provider: Address, attempt: int
    ) -> str | None:
        """An escrowed result must be the one its provider put on chain (that one is what the escrow
        pays for). Another one signed for the same job is equivocation: proven on chain at once,
        which slashes the provider and disputes the job, so the escrow comes back."""
        terms = escrow_terms(self.me, record, attempt)
        try:
            onchain = await submitted_receipt(self.market, terms, provider)
        except ChainError as exc:
            # The settlement watches the job on chain; the result stands on its signature.
            log.warning("submitted_result_unread", job_id=record.job_id.hex(), error=str(exc))
            return None
        if onchain is None or onchain[0] == result.receipt:
            return None
        receipt, signature = onchain
        try:
            await self.market.prove_equivocation(
                receipt, signature, result.receipt, result.signature, sender=self.key.account
            )
        except ChainError as exc:
            log.error(
                "equivocation_not_proven", job_id=record.job_id.hex(), provider=provider, error=str(exc)
            )
        else:
            log.warning("equivocation_proven", job_id=record.job_id.hex(), provider=provider)
        return "the provider put another result on chain for this job (equivocation, proven on chain)"

    async def _settle_voucher_job(self, record: JobRecord) -> JobRecord | None:
        if record.status.payment is PaymentPath.VOUCHER:
            # The voucher covering this job was acknowledged when the provider ran it.
            return await self.store.apply(record.job_id, Settled(), known=record)
        return None  # escrow jobs settle when the chain finalizes them (node.settlement)

    # helpers ----------------------------------------------------------------------------------

    async def record_service(self) -> None:
        """Write how providers served us, off the jobs' critical path, until cancelled (a
        long-running part: `ClientJobs.run` runs it next to the jobs it drives)."""
        while True:
            served = await self._served.get()
            try:
                await self._record_service(*served)
            except Exception:
                # Only the scheduler's memory is at stake: never a reason to stop the node.
                log.exception("provider_stats_not_saved", provider=served[0])
            finally:
                self._served.task_done()

    async def flush(self) -> None:
        """Write what `record_service()` has not written yet (at shutdown, after it stopped)."""
        while not self._served.empty():
            served = self._served.get_nowait()
            try:
                await self._record_service(*served)
            finally:
                self._served.task_done()

    def _remember(
        self, provider: Address, *, latency_ms: float | None = None, backoff_until: float = 0.0
    ) -> None:
        """Keep how the provider served us in the database, off the job's critical path."""
        self._served.put_nowait((provider, latency_ms, backoff_until))

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
        """The attempt's price as matched and stored with it; for an attempt stored without one,
        the provider's current advert, else the job's budget."""
        self._priced_here.setdefault(record.job_id, set()).add(provider)
        current = record.status.current
        if current is not None and current.provider == provider and current.price_wei is not None:
            return current.price_wei
        key = (record.job_id, provider)
        known = self._unrecorded_prices.get(key)
        if known is not None:
            return known
        advert = self.matchmaker.directory.get(provider)
        price = advert.price_for(record.model_id) if advert is not None else None
        if price is None or price > record.price_wei:
            price = record.price_wei
        self._unrecorded_prices[key] = price
        return price

    async def reach(self, provider: Address) -> str | None:
        """The provider's peer id, connected if it can be; None when it never advertised."""
        return await self._peer_of(provider)

    async def _peer_of(self, provider: Address) -> str | None:
        """The provider's peer id, dialled at its advertised addresses if not connected yet."""
        advert = self.matchmaker.directory.get(provider)
        if advert is None:
            return self._peers.get(provider)
        self._peers[provider] = advert.peer_id
        if advert.peer_id not in self.host.connected_peers():
            await self.host.connect_any(advert.listen_addrs, advert.peer_id)
        return advert.peer_id

    async def _lose(
        self, record: JobRecord, outcome: AttemptOutcome, detail: str, *, blame: bool = True
    ) -> JobRecord:
        provider = _current_provider(record)
        if record.state is ClientState.RESULT:
            # A result was received and never checked (this node stopped): it counts as bad.
            outcome = AttemptOutcome.BAD_RESULT
        log.info(
            "provider_lost", job_id=record.job_id.hex(), provider=provider, outcome=outcome, detail=detail
        )
        self._last_error[record.job_id] = f"{provider}: {outcome}: {detail}"
        if blame:
            self._remember(provider, backoff_until=self.matchmaker.failed(provider))
        current = record.status.current
        paid = current is not None and current.paid
        moved = await self.store.apply(record.job_id, ProviderLost(outcome, detail), known=record)
        # A voucher attempt lost before this run used its price (a restart found it sent or
        # running) may have run at the provider, which then counts it as spent: it stays promised.
        priced_here = self._priced_here.get(record.job_id, set())
        if paid and record.status.payment is PaymentPath.VOUCHER and provider in priced_here:
            self.vouchers.released(provider, self.price_of(record, provider))
        priced_here.discard(provider)
        self._unrecorded_prices.pop((record.job_id, provider), None)
        return moved

    async def _fail_unpaid(self, record: JobRecord, provider: Address, reason: str) -> JobRecord:
        """Fail a job the provider did not run through the client's own fault (its input or its
        model): the provider is not blamed, and a voucher attempt's amount is not spent."""
        current = record.status.current
        paid = current is not None and current.paid
        if (
            paid
            and record.status.payment is PaymentPath.VOUCHER
            and provider in self._priced_here.get(record.job_id, set())
        ):
            self.vouchers.released(provider, self.price_of(record, provider))
        return await self._fail(record, reason)

    async def _fail(self, record: JobRecord, reason: str) -> JobRecord:
        log.info("job_failed", job_id=record.job_id.hex(), reason=reason)
        self._last_error.pop(record.job_id, None)
        return await self.store.apply(record.job_id, Failed(reason), known=record)


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
        # A request sent again (its answer was lost) may already be recorded as sent or running.
        self._sent = sent.state in (ClientState.SENT, ClientState.RUNNING)
        self._started = sent.state is ClientState.RUNNING

    def on_event(self, event: JobAccepted | JobProgress | JobTokens) -> None:
        if isinstance(event, JobTokens):
            self._pipeline.text.publish(self._job_id, event.text)
            return
        if isinstance(event, JobAccepted) and not self._sent:
            # The provider's queue, as it reports it: the scheduler's freshest view of its load.
            self._pipeline.matchmaker.accepted(self._job_id, event.queue_position)
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
            self._latest = await self._pipeline.store.apply(self._job_id, *events, known=self._latest)
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
    if record.state is ClientState.PAID:
        return (Sent(), Started())
    if record.state is ClientState.SENT:
        return (Started(),)
    return ()


def _generated_text(output: bytes) -> str | None:
    try:
        return parse_generation(output).text
    except InvalidInput:
        return None


async def _give_up(asks: set[asyncio.Task[Hold | None]]) -> None:
    """Stop waiting on these holds and give up any that were granted meanwhile."""
    for task in asks:
        task.cancel()
    for other in await asyncio.gather(*asks, return_exceptions=True):
        if isinstance(other, Hold):
            await other.release()


async def _until_terminal(changes: asyncio.Queue[JobRecord]) -> None:
    """Returns once a published record of the job is terminal (cancelled, say)."""
    while not (await changes.get()).status.terminal:
        pass


def _current_provider(record: JobRecord) -> Address:
    current = record.status.current
    if current is None:
        raise SchedulerError(f"job {record.job_id.hex()} has no provider attempt in flight")
    return current.provider


def _no_provider_reason(exc: GpunodeError, last_error: str | None) -> str:
    if last_error is None:
        return str(exc)
    return f"{exc}; the last provider tried failed with {last_error}"


_Step = Callable[["ClientPipeline", JobRecord], Awaitable[JobRecord | None]]
_STEPS: Mapping[State, _Step] = {
    ClientState.SUBMITTED: ClientPipeline._match,
    ClientState.MATCHED: ClientPipeline._pay,
    ClientState.PAID: ClientPipeline._send,
    ClientState.SENT: ClientPipeline._resend,
    ClientState.RUNNING: ClientPipeline._resend,
    ClientState.RESULT: ClientPipeline._resend,
    ClientState.VERIFIED: ClientPipeline._settle_voucher_job,
}
