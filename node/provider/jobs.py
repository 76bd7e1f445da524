"""Provider side of `/gpunode/job/1`: admission, payment checks, execution, the signed result.

A voucher is checked before anything runs: signed by the client the stream comes from, naming
this provider, covering every job this provider has taken from that client plus this one, and
backed by the client's deposit. An escrow payment is checked on the chain (requested, naming
this provider, at this provider's price, due late enough for the work and its submission) and
claimed. The voucher and the job are persisted before the job is accepted.

An escrowed job, once claimed, runs to the end (on chain) whether or not its client stays: a
claim left unfinished costs stake. The client may send the same request again (its stream broke,
or it restarted) and gets the same run's result; a provider restarted mid-job resumes its claimed
escrowed jobs (`resume`). Nobody but the job's requester gets its result.

A voucher job is stored, run and signed under `voucher_job_id(client, request id)`: an id bound to
the client and apart from on-chain ids, so no request id a client picks makes this provider sign a
result for an escrowed job (a second receipt for a job it holds would be equivocation), and a
request id it already holds from that client is refused rather than served twice.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from node.chain.eip712 import Eip712Domain, recover_voucher_signer
from node.chain.job_logs import find_terms
from node.chain.market import JobMarket, voucher_job_id
from node.chain.market import JobStatus as ChainJobStatus
from node.domain.state import Failed, PaymentPath, ProviderState, Role
from node.errors import ChainError, ExecutorError, GpunodeError, P2PError, SignatureError
from node.executor.errors import InvalidInput
from node.executor.manifest import normalize_model_id
from node.jobstore.blobs import JobBlobs
from node.logging import get_logger
from node.p2p.blob_protocol import fetch_blob
from node.p2p.blob_store import SharedBlobs
from node.p2p.errors import BlobTooLarge
from node.p2p.host import P2PHost
from node.p2p.identity import peer_id_to_address
from node.p2p.job_messages import (
    INLINE_LIMIT,
    INVALID_INPUT,
    MODEL_UNAVAILABLE,
    BlobRef,
    JobAccepted,
    JobFailed,
    JobProgress,
    JobRejected,
    JobRequest,
    JobResponse,
    JobResult,
    JobTokens,
    OnchainPayment,
    VoucherPayment,
)
from node.provider.delivery import MIN_RUN_S, SUBMIT_ROOM_S, Escrowed, Served, serve_escrowed
from node.provider.holds import HoldDesk
from node.provider.model_fetch import ModelFetcher, ModelFetchFailed
from node.provider.runner import JobRunner, SignedResult
from node.scheduler import AdmissionPolicy, JobOffer, Rejected, admit
from node.storage import JobRecord, NewJob, SignedVoucher
from node.storage.errors import DuplicateRecord
from node.types import Address, Hash32, Voucher, sha256

log = get_logger(__name__)

_LIVE = frozenset(
    {
        ProviderState.ACCEPTED,
        ProviderState.RUNNING,
        ProviderState.SIGNED,
        ProviderState.DELIVERED,
        ProviderState.PAID,
    }
)

CLIENT_GONE = "the client went away before the result was delivered"

# How long a client's deposit, read from the chain, is trusted to back its next vouchers.
DEPOSIT_READ_S = 2.0
# Escrowed jobs a restart found cut off, in these states, are resumed when still claimed.
_RESUMABLE = (ProviderState.ACCEPTED, ProviderState.RUNNING, ProviderState.SIGNED)
# Waits between tries to resume such a job while the chain does not answer.
RESUME_RETRY_S = (2.0, 5.0, 10.0, 30.0, 60.0)

Spawn = Callable[[Coroutine[Any, Any, None]], None]


@dataclass(frozen=True, slots=True)
class _Attach:
    """A request for an escrowed job this provider already holds for the same client."""

    served: asyncio.Future[Served]
    position: int


class ProviderJobs:
    """Answers job requests from clients over the overlay."""

    def __init__(
        self,
        runner: JobRunner,
        market: JobMarket,
        policy: AdmissionPolicy,
        blobs: JobBlobs,
        *,
        spawn: Spawn,
        host: P2PHost | None = None,
        shared: SharedBlobs | None = None,
        fetcher: ModelFetcher | None = None,
    ) -> None:
        self.runner = runner
        self.market = market
        self.policy = policy
        self.blobs = blobs
        self._spawn = spawn
        # Large inputs are fetched from their client and large outputs shared with it, over
        # `/gpunode/blob/1`; models a job names that this provider lacks are fetched the same way.
        self.host = host
        self.shared = shared
        self.fetcher = fetcher
        self.domain: Eip712Domain = runner.domain
        # Wei of the jobs taken from each client by voucher (live or done): what vouchers must cover.
        self._covered: defaultdict[Address, int] = defaultdict(int)
        # Per client: the most its vouchers may add up to, as read from the chain, and when.
        self._deposit_ceiling: dict[Address, tuple[int, float]] = {}
        # Per client: the amount of the latest voucher stored (only this node stores them).
        self._held: dict[Address, int] = {}
        self._locks: defaultdict[Address, asyncio.Lock] = defaultdict(asyncio.Lock)
        # Escrowed jobs being served in this run, by on-chain id: a request sent again waits on it.
        self._escrowed: dict[Hash32, asyncio.Future[Served]] = {}
        # Holds clients asked for (`/gpunode/hold/1`), granted as slots free: set by the node.
        self.holds: HoldDesk | None = None
        # Jobs admitted into a slot reserved for them by a granted hold, until they start.
        self._reserved: set[Hash32] = set()

    @property
    def me(self) -> Address:
        return self.runner.key.address

    def load_covered(self, jobs: tuple[JobRecord, ...]) -> None:
        self._covered.clear()
        for job in jobs:
            voucher_paid = job.role is Role.PROVIDER and job.status.payment is PaymentPath.VOUCHER
            if voucher_paid and job.client and job.state in _LIVE:
                self._covered[job.client] += job.price_wei

    def withdraw(self, model_id: Hash32) -> None:
        """Stop taking jobs for `model_id` (they are refused as `unknown_model` from now on)."""
        floors = {m: p for m, p in self.policy.price_floor_wei.items() if m != model_id}
        self.policy = dataclasses.replace(self.policy, price_floor_wei=floors)

    def stop_fetching(self) -> None:
        """Take no more jobs for models this provider lacks (adverts drop the fetch terms)."""
        self.policy = dataclasses.replace(self.policy, fetch=None)

    def set_price(self, model_id: Hash32, price_wei: int) -> None:
        """Ask `price_wei` for `model_id` from now on (adverts carry it from their next refresh)."""
        floors = dict(self.policy.price_floor_wei)
        floors[model_id] = price_wei
        self.policy = dataclasses.replace(self.policy, price_floor_wei=floors)

    # the protocol handler ---------------------------------------------------------------------

    async def handle(self, peer: str, request: JobRequest) -> AsyncIterator[JobResponse]:
        try:
            accepted = await self._accept(peer, request)
        except GpunodeError as exc:
            log.warning("job_request_failed", job_id=request.job_id.hex(), error=str(exc))
            yield JobRejected("unavailable", str(exc))
            return
        if isinstance(accepted, JobRejected):
            log.info("job_rejected", job_id=request.job_id.hex(), code=accepted.code, reason=accepted.reason)
            yield accepted
            return
        if isinstance(accepted, _Attach):
            async for frame in self._escrowed_frames(peer, accepted):
                yield frame
            return
        record, job_input, escrow, position = accepted
        if escrow is not None:
            # The client's own deadline does not shorten it: only the chain's counts for escrow.
            served = self._serve(record, job_input, escrow, peer=peer)
            async for frame in self._escrowed_frames(peer, _Attach(served, position)):
                yield frame
            return
        # The job is stored: it runs while the frames saying so travel to the client.
        text: asyncio.Queue[str] | None = asyncio.Queue() if request.stream else None
        stop = asyncio.Event()
        execution = asyncio.ensure_future(
            self._fetch_and_run(
                peer,
                record,
                job_input,
                request.deadline_ms / 1000,
                on_tokens=text.put_nowait if text is not None else None,
                stop=stop,
            )
        )
        streamed = False
        try:
            yield JobAccepted(queue_position=position)
            yield JobProgress("running", 0.0)
            if text is not None:
                async for piece in _text_until(execution, text):
                    streamed = True
                    yield JobTokens(piece)
            signed = await execution
        except ExecutorError as exc:
            self._release(record)
            # The client's own mistake is told apart, so that it is not blamed on this provider.
            yield JobFailed(_failure_code(exc), str(exc))
            return
        except BaseException:
            # The client went away (the stream closed this generator) or the node is stopping.
            if streamed and self._keep_partial(record, execution, stop):
                raise
            execution.cancel()
            self._release(record)
            self._abandon(record, execution)
            raise
        # The signed receipt is durable already: the hand-over is recorded once the result has
        # left, so that its write does not compete with sending it. The protocol resumes this
        # generator after the result was written, and closes it here if it could not be.
        handed_over = False
        try:
            yield self._result_frame(peer, signed)
            handed_over = True
        finally:
            if handed_over or streamed:  # streamed text was the client's already: it pays for it
                self._record_delivery(record)
            else:
                self._release(record)
                self._abandon(record, execution)

    async def _fetch_and_run(
        self,
        peer: str,
        record: JobRecord,
        job_input: bytes,
        deadline: float,
        *,
        on_tokens: Callable[[str], None] | None,
        stop: asyncio.Event | None = None,
    ) -> SignedResult:
        """Run the job, once its model is here: a model this provider does not serve yet is
        fetched from the client (or a peer holding it), checked, installed and warmed first."""
        reserved = record.job_id in self._reserved
        self._reserved.discard(record.job_id)
        try:
            if self.fetcher is not None and record.model_id not in self.policy.price_floor_wei:
                try:
                    await self.fetcher.ensure(record.model_id, peer)
                except ModelFetchFailed as exc:
                    await self.runner.store.apply(record.job_id, Failed(f"model unavailable: {exc}"))
                    raise
        except BaseException:
            if reserved:
                self.runner.load.unreserve()
            raise
        timeout = max(0.1, deadline - _now())
        return await self.runner.run(
            record, job_input, timeout_s=timeout, on_tokens=on_tokens, stop=stop, reserved=reserved
        )

    def _result_frame(self, peer: str, signed: SignedResult) -> JobResult:
        """The result, its output inline or, above the inline limit, shared with the client alone
        for it to fetch by reference (the receipt signs its hash either way)."""
        if len(signed.output) <= INLINE_LIMIT or self.shared is None:
            return JobResult(signed.receipt, signed.signature, signed.output)
        digest = self.shared.share(signed.output, peer)
        return JobResult(signed.receipt, signed.signature, b"", BlobRef(digest, len(signed.output)))

    async def _escrowed_frames(self, peer: str, attach: _Attach) -> AsyncIterator[JobResponse]:
        """The frames of an escrowed job: the result goes out only once the chain holds it. A
        client that goes away stops only its frames: the job is served to the end."""
        yield JobAccepted(queue_position=attach.position)
        yield JobProgress("running", 0.0)
        served = await asyncio.shield(attach.served)
        if served.result is None:
            yield JobFailed(served.code, served.failure or "the job failed")
            return
        yield self._result_frame(peer, served.result)

    def _record_delivery(self, record: JobRecord) -> None:
        delivered = self.runner.delivered(record.job_id)
        try:
            self._spawn(delivered)
        except RuntimeError as exc:  # the node is stopping: the job stays signed, its restart sees it
            delivered.close()
            log.info("job_delivery_left_for_restart", job_id=record.job_id.hex(), error=str(exc))

    def _keep_partial(
        self, record: JobRecord, execution: asyncio.Future[SignedResult], stop: asyncio.Event
    ) -> bool:
        """A client that leaves a generation it has been streaming pays for it: the generation
        stops at once, the receipt signs what was made (what the client was sent), and the job
        stays covered by the client's voucher. False if the node is stopping (a restart fails it)."""
        stop.set()

        async def keep() -> None:
            try:
                await execution
            except ExecutorError:
                self._release(record)  # failed, and recorded so by the runner: nothing was made
                return
            log.info("job_left_mid_stream", job_id=record.job_id.hex())
            await self.runner.delivered(record.job_id)

        try:
            self._spawn(keep())
        except RuntimeError:
            return False
        return True

    def _release(self, record: JobRecord) -> None:
        """The job will not be paid for: its price no longer counts against the client's vouchers."""
        if record.status.payment is PaymentPath.VOUCHER and record.client is not None:
            self._covered[record.client] -= record.price_wei

    def _abandon(self, record: JobRecord, execution: asyncio.Future[SignedResult]) -> None:
        """Record the job failed once its cancelled run has unwound (a restart does it otherwise)."""

        async def fail() -> None:
            await asyncio.wait({execution})
            if not execution.cancelled() and isinstance(execution.exception(), ExecutorError):
                return  # the runner recorded the failure itself
            await self.runner.undelivered(record.job_id, CLIENT_GONE)

        try:
            self._spawn(fail())
        except RuntimeError as exc:  # the node is stopping: its restart fails the job instead
            log.info("job_left_for_restart", job_id=record.job_id.hex(), error=str(exc))

    def _serve(
        self,
        record: JobRecord,
        job_input: bytes,
        escrow: Escrowed,
        *,
        signed: SignedResult | None = None,
        peer: str | None = None,
    ) -> asyncio.Future[Served]:
        """Serve an escrowed job to the end under the node's tasks; the future tells how it ended,
        to whoever asks for the job. A model this provider lacks is fetched first, from `peer`
        (the client) or the peers that hold it."""
        job_id = record.job_id
        served: asyncio.Future[Served] = asyncio.get_running_loop().create_future()
        self._escrowed[job_id] = served

        async def serve() -> None:
            try:
                unfetched = None if signed is not None else await self._fetch_escrowed(record, escrow, peer)
                served.set_result(
                    unfetched
                    or await serve_escrowed(
                        self.runner,
                        self.market,
                        self.blobs,
                        record,
                        job_input,
                        escrow,
                        signed=signed,
                    )
                )
            except asyncio.CancelledError:
                served.cancel()  # the node is stopping: a restart resumes the job
                raise
            except BaseException as exc:
                served.set_exception(exc)
                served.exception()  # reported by the node's task; waiters get it too
                raise
            finally:
                self._escrowed.pop(job_id, None)

        self._spawn(serve())
        return served

    async def _fetch_escrowed(self, record: JobRecord, escrow: Escrowed, peer: str | None) -> Served | None:
        """Fetch, check, install and warm the model of an escrowed job this provider lacks, within
        the room its on-chain deadline leaves to run it; None once the model is here.

        A job that names this provider is claimed only after it ran, so a fetch that fails costs
        no stake: the job fails as `model_unavailable` and its client takes its escrow back. No
        result, no pay, whoever is at fault: the chain cannot tell a tampered model from a
        provider that says so, and paying a cold start on the provider's word would pay for failing.
        """
        if self.fetcher is None or record.model_id in self.policy.price_floor_wei:
            return None
        room = escrow.deadline - SUBMIT_ROOM_S - MIN_RUN_S - time.time()
        try:
            async with asyncio.timeout(max(0.1, room)):
                await self.fetcher.ensure(record.model_id, peer)
            return None
        except TimeoutError:
            problem = ModelFetchFailed(
                f"model {record.model_id.hex()} was not fetched, checked and warmed within the "
                f"{max(0.0, room):.0f} s the escrow's deadline leaves to run it"
            )
        except ModelFetchFailed as exc:
            problem = exc
        log.info("escrowed_model_not_fetched", job_id=record.job_id.hex(), error=str(problem))
        await self.runner.store.apply(record.job_id, Failed(f"model unavailable: {problem}"))
        return Served(None, str(problem), MODEL_UNAVAILABLE)

    async def resume(self) -> None:
        """At start: escrowed jobs a restart cut off are served to the end while this provider
        still holds their claim and the deadline leaves room; the others failed."""
        db = self.runner.db
        cut_off = await db.run(
            db.jobs.list, role=Role.PROVIDER, states=_RESUMABLE, payment=PaymentPath.ESCROW, limit=2**31 - 1
        )
        for record in cut_off:
            try:
                why = await self._resume(record)
            except ChainError as exc:
                # Only the chain's word may fail a claimed job: ask it again in a while.
                log.warning("escrowed_job_resume_retry", job_id=record.job_id.hex(), error=str(exc))
                self._spawn(self._resume_later(record))
                continue
            except GpunodeError as exc:
                why = f"it could not be resumed: {exc}"
            if why is not None:
                log.warning("escrowed_job_not_resumed", job_id=record.job_id.hex(), reason=why)
                await self.runner.store.apply(record.job_id, Failed(f"the provider restarted; {why}"))

    async def _resume_later(self, record: JobRecord) -> None:
        for wait in RESUME_RETRY_S:
            await asyncio.sleep(wait)
            try:
                why = await self._resume(record)
            except ChainError as exc:
                log.warning("escrowed_job_resume_retry", job_id=record.job_id.hex(), error=str(exc))
                continue
            if why is not None:
                await self.runner.store.apply(record.job_id, Failed(f"the provider restarted; {why}"))
            return
        # The chain stayed away: the job stays as it is for the next start to try again.
        log.error("escrowed_job_not_resumed", job_id=record.job_id.hex(), reason="the chain did not answer")

    async def _resume(self, record: JobRecord) -> str | None:
        onchain = await self.market.job(record.job_id)
        if onchain.provider is None or onchain.provider.lower() != self.me.lower():
            return f"the on-chain job is {onchain.status.name} and not held by this provider"
        if onchain.status is ChainJobStatus.SUBMITTED and record.state is ProviderState.SIGNED:
            await self.runner.delivered(record.job_id)  # it landed; its answer was lost with the process
            return None
        # Claimed by this provider, or named for it and not claimed yet (run before its claim).
        if onchain.status not in (ChainJobStatus.CLAIMED, ChainJobStatus.REQUESTED):
            return f"the on-chain job is {onchain.status.name}"
        terms = await find_terms(self.market, record.job_id)
        if terms is None:
            return "its terms are not found on chain"
        room = onchain.time - await self.market.client.chain_time()
        claimed = onchain.status is ChainJobStatus.CLAIMED
        on_chain = onchain.output_on_chain or terms.has_callback
        escrow = Escrowed.due_in(terms, room, output_on_chain=on_chain, claimed=claimed)
        signed = None
        if record.state is ProviderState.SIGNED:
            signed = await self._kept_result(record.job_id)
            if signed is None:
                return "its signed receipt was not kept"
            if not signed.output and on_chain:
                return "its output, which must go on chain, was not kept"
            # A signed result goes on chain whatever the room: trying costs nothing.
        elif room < SUBMIT_ROOM_S + MIN_RUN_S:
            return f"its on-chain deadline is {room:.0f} s away, too close to run and submit it"
        job_input = await self.blobs.get(record.input_hash)
        if job_input is None and signed is None:
            return "its input was not kept"
        log.info("escrowed_job_resumed", job_id=record.job_id.hex(), state=record.state.value)
        self._serve(record, job_input or b"", escrow, signed=signed)
        return None

    async def _accept(
        self, peer: str, request: JobRequest
    ) -> tuple[JobRecord, bytes, Escrowed | None, int] | _Attach | JobRejected:
        """The job stored and admitted, or why not. A voucher job whose hold was granted takes the
        slot kept for it (reserved until it starts; given back if the job is refused)."""
        held = (
            isinstance(request.payment, VoucherPayment)
            and self.holds is not None
            and self.holds.take(peer, request.job_id)
        )
        accepted: tuple[JobRecord, bytes, Escrowed | None, int] | _Attach | JobRejected | None = None
        try:
            accepted = await self._admit(peer, request, held=held)
            return accepted
        finally:
            if held:
                if isinstance(accepted, tuple):
                    self._reserved.add(accepted[0].job_id)  # stored under its own id
                else:
                    self.runner.load.unreserve()

    def model_refusal(self, model_id: Hash32) -> JobRejected | None:
        """Why a job for `model_id` is refused whatever its price and this provider's load (also
        asked before a hold is queued, node.provider.holds); None when it is not."""
        model_key = normalize_model_id(model_id)
        if self.policy.price_of(model_id) is None:
            return JobRejected("unknown_model", f"this provider does not serve model {model_key}")
        to_fetch = model_id not in self.policy.price_floor_wei
        if to_fetch and self.fetcher is not None and not self.fetcher.takes(model_id):
            return JobRejected(
                "fetch_limit",
                f"this provider does not hold model {model_key} and runs as many fetched models as it "
                f"takes ({self.fetcher.max_models})",
            )
        return None

    async def _admit(
        self, peer: str, request: JobRequest, *, held: bool
    ) -> tuple[JobRecord, bytes, Escrowed | None, int] | _Attach | JobRejected:
        client = peer_id_to_address(peer)
        price = self.policy.price_of(request.model_id)
        refused = self.model_refusal(request.model_id)
        if refused is not None or price is None:  # no price: refused as an unknown model
            return refused or JobRejected("unknown_model", "this provider does not serve the model")
        size = request.input.size if isinstance(request.input, BlobRef) else len(request.input)
        admitted = admit(
            JobOffer(request.model_id, request.max_price_wei, size, request.max_queue_position),
            self.runner.load.snapshot(reserved_for_it=held),
            self.policy,
        )
        if isinstance(admitted, Rejected):
            return JobRejected(admitted.code.value, admitted.reason)
        job_input = request.input
        if isinstance(job_input, BlobRef):
            fetched = await self._fetch_input(peer, job_input)
            if isinstance(fetched, JobRejected):
                return fetched
            job_input = fetched
        payment = request.payment
        if isinstance(payment, VoucherPayment):
            async with self._locks[client]:
                taken = await self._take_voucher(client, request, job_input, payment, price)
            if isinstance(taken, JobRejected):
                return taken
            return taken, job_input, None, admitted.queue_position
        position = admitted.queue_position
        escrowed = await self._take_escrow(client, request, job_input, payment, price, position)
        if isinstance(escrowed, (JobRejected, _Attach)):
            return escrowed
        record, escrow = escrowed
        return record, job_input, escrow, admitted.queue_position

    async def _fetch_input(self, peer: str, ref: BlobRef) -> bytes | JobRejected:
        """An input sent by reference, fetched from the client and checked against its hash."""
        if self.host is None:
            return JobRejected("blob_input", "this provider takes inputs inline only")
        try:
            return await fetch_blob(self.host, peer, ref.sha256, max_size=ref.size)
        except BlobTooLarge:
            return JobRejected(
                INVALID_INPUT, f"the input blob {ref.sha256.hex()} is larger than its reference says"
            )
        except P2PError as exc:
            # The client serves its own input: what goes wrong here is its fault, and costs nothing.
            return JobRejected(INVALID_INPUT, f"the input blob could not be fetched from the client: {exc}")

    # vouchers ---------------------------------------------------------------------------------

    async def _take_voucher(
        self, client: Address, request: JobRequest, job_input: bytes, payment: VoucherPayment, price: int
    ) -> JobRecord | JobRejected:
        voucher = Voucher(payment.client, payment.provider, payment.cumulative_amount)
        problem = self._voucher_problem(client, voucher, payment.signature)
        if problem is not None:
            return JobRejected("bad_voucher", problem)
        stored = await self._stored_voucher(client)
        held = max(voucher.cumulative_amount, 0 if stored is None else stored)
        needed = self._covered[client] + price
        if held < needed:
            return JobRejected(
                "voucher_too_low",
                f"the voucher for {voucher.cumulative_amount} wei does not cover the {needed} wei "
                f"owed with this job",
            )
        shortfall = await self._deposit_shortfall(client, held)
        if shortfall:
            return JobRejected("insufficient_deposit", shortfall)
        raised = stored is None or voucher.cumulative_amount > stored
        try:
            record = await self._create(
                request,
                PaymentPath.VOUCHER,
                voucher_job_id(client, request.job_id),
                job_input,
                client,
                price,
                voucher=SignedVoucher(voucher, payment.signature) if raised else None,
            )
        except DuplicateRecord:
            return JobRejected("duplicate_job", f"job {request.job_id.hex()} was sent before; it runs once")
        if raised:
            self._held[client] = voucher.cumulative_amount
        self._covered[client] += price
        return record

    async def _stored_voucher(self, client: Address) -> int | None:
        """The amount of the latest voucher stored from `client`, read once per run."""
        if client not in self._held:
            db = self.runner.db
            stored = await db.run(db.vouchers.get, client, self.me)
            if stored is None:
                return None
            self._held[client] = stored.voucher.cumulative_amount
        return self._held[client]

    def _voucher_problem(self, client: Address, voucher: Voucher, signature: bytes) -> str | None:
        if voucher.provider.lower() != self.me.lower():
            return f"the voucher pays {voucher.provider}, not this provider ({self.me})"
        if voucher.client.lower() != client.lower():
            return f"the voucher is from {voucher.client}, but the request came from {client}"
        try:
            signer = recover_voucher_signer(self.domain, voucher, signature)
        except SignatureError as exc:
            return f"the voucher signature is malformed: {exc}"
        if signer.lower() != client.lower():
            return f"the voucher was signed by {signer}, not by the client {client}"
        return None

    async def _deposit_shortfall(self, client: Address, cumulative: int) -> str | None:
        """Why the client's reserve for this provider does not back `cumulative` wei of vouchers,
        or None if it does.

        Only money the client reserved for this provider alone counts (no other provider can
        redeem it), less any release the client asked for: vouchers are covered up to that plus
        what this provider has already been paid. That ceiling, once read, is trusted for
        `DEPOSIT_READ_S`: reading the chain on every job cost more than the rest of the job's
        overhead together. A ceiling that does not cover a voucher is read again at once; a reserve
        shrinks only by this provider's redemptions or after a release delay far longer than that.
        """
        known = self._deposit_ceiling.get(client)
        if known is not None and known[0] >= cumulative and _monotonic() - known[1] < DEPOSIT_READ_S:
            return None
        read_at = _monotonic()
        held = await self.market.reserve_of(client, self.me)
        self._deposit_ceiling[client] = (held.available + held.paid, read_at)
        if held.available < cumulative - held.paid:
            return (
                f"the client's reserve for this provider ({held.available} wei) does not cover the "
                f"{cumulative - held.paid} wei its vouchers owe it"
            )
        return None

    # escrow -----------------------------------------------------------------------------------

    async def _take_escrow(
        self,
        client: Address,
        request: JobRequest,
        job_input: bytes,
        payment: OnchainPayment,
        price: int,
        position: int,
    ) -> tuple[JobRecord, Escrowed] | _Attach | JobRejected:
        onchain = await self.market.job(payment.job_id)
        mine = onchain.provider is not None and onchain.provider.lower() == self.me.lower()
        held = mine and onchain.status in (ChainJobStatus.CLAIMED, ChainJobStatus.SUBMITTED)
        # Asked again: the run under way, or a result on chain (or paid for and gone from it).
        if payment.job_id in self._escrowed or held or onchain.status is ChainJobStatus.NONE:
            return await self._attach(client, payment.job_id, position)
        if onchain.status is not ChainJobStatus.REQUESTED:
            return JobRejected(
                "not_escrowed", f"on-chain job {payment.job_id.hex()} is {onchain.status.name}"
            )
        if onchain.provider is None or onchain.provider.lower() != self.me.lower():
            return JobRejected("not_named", "the escrowed job does not name this provider")
        if onchain.price < price:
            return JobRejected("price_too_low", f"the escrow holds {onchain.price} wei, the price is {price}")
        terms = await find_terms(self.market, payment.job_id)
        if terms is None or terms.requester.lower() != client.lower():
            return JobRejected("not_escrowed", "the escrowed job was not requested by this client")
        if terms.input_hash != sha256(job_input) or terms.model_id != request.model_id:
            return JobRejected("terms_mismatch", "the input or model differs from the escrowed job's terms")
        if await self.runner.took(payment.job_id):
            return JobRejected("duplicate_job", _SERVED_BEFORE.format(job_id=payment.job_id.hex()))
        # A claim not delivered by the deadline costs stake: take only what there is room to deliver.
        room = onchain.time - await self.market.client.chain_time()
        if room < SUBMIT_ROOM_S + MIN_RUN_S:
            return JobRejected(
                "no_room",
                f"the escrowed job is due on chain in {room:.0f} s; running it and putting its result "
                f"on chain needs at least {SUBMIT_ROOM_S + MIN_RUN_S:.0f} s",
            )
        # Named for this provider alone, it is run before it is claimed (`serve_escrowed`). The job
        # and its input are stored first: a restart resumes it instead of forfeiting a claim.
        record = await self._create(
            request,
            PaymentPath.ESCROW,
            payment.job_id,
            job_input,
            client,
            onchain.price,
            before=functools.partial(self.blobs.write, job_input),
        )
        return record, Escrowed.due_in(terms, room, output_on_chain=onchain.output_on_chain, claimed=False)

    async def _attach(self, client: Address, job_id: Hash32, position: int) -> _Attach | JobRejected:
        """The requester asks again for an escrowed job this provider holds: the run under way, or
        the result the chain already holds."""
        db = self.runner.db
        record = await db.run(db.jobs.find, job_id)
        if record is None or record.role is not Role.PROVIDER:
            return JobRejected("not_escrowed", f"on-chain job {job_id.hex()} is not held by this provider")
        if record.client is None or record.client.lower() != client.lower():
            return JobRejected("not_escrowed", "the escrowed job was not requested by this client")
        served = self._escrowed.get(job_id)
        if served is not None:
            return _Attach(served, position)
        if record.state in (ProviderState.DELIVERED, ProviderState.PAID):
            kept = await self._kept_result(job_id)
            if kept is not None and kept.output:
                done: asyncio.Future[Served] = asyncio.get_running_loop().create_future()
                done.set_result(Served(kept))
                return _Attach(done, position)
        return JobRejected(
            "not_escrowed",
            f"on-chain job {job_id.hex()} is {record.state.value} here, with no result to give",
        )

    async def _kept_result(self, job_id: Hash32) -> SignedResult | None:
        """An escrowed job's signed result as stored, with its output if it was kept (else empty)."""
        db = self.runner.db
        stored = await db.run(db.receipts.get, job_id, self.me)
        if stored is None:
            return None
        output = await self.blobs.get(stored.receipt.output_hash)
        return SignedResult(stored.receipt, stored.signature, output or b"", 0.0)

    # shared -----------------------------------------------------------------------------------

    async def _create(
        self,
        request: JobRequest,
        payment: PaymentPath,
        job_id: Hash32,
        job_input: bytes,
        client: Address,
        price: int,
        *,
        voucher: SignedVoucher | None = None,
        before: Callable[[], object] | None = None,
    ) -> JobRecord:
        input_hash = sha256(job_input)
        job = NewJob(
            job_id=job_id,
            role=Role.PROVIDER,
            payment=payment,
            model_id=request.model_id,
            input_hash=input_hash,
            price_wei=price,
            client=client,
            deadline=request.deadline_ms / 1000,
        )
        return await self.runner.store.create(job, voucher=voucher, before=before)


def _failure_code(exc: ExecutorError) -> str:
    if isinstance(exc, InvalidInput):
        return INVALID_INPUT
    return MODEL_UNAVAILABLE if isinstance(exc, ModelFetchFailed) else "execution"


# Why a recurring on-chain id is refused: see `JobRunner.took`.
_SERVED_BEFORE = "this provider already took on-chain job {job_id}; it never signs one job id twice"


def _now() -> float:
    return time.time()


def _monotonic() -> float:
    return time.monotonic()


async def _text_until(
    execution: asyncio.Future[SignedResult], text: asyncio.Queue[str]
) -> AsyncIterator[str]:
    """A generation's text as the worker streams it, until its run ends: what is ready at once
    goes as one piece (one frame instead of one per token)."""
    while True:
        getter = asyncio.ensure_future(text.get())
        either: list[asyncio.Future[Any]] = [getter, execution]
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        if not getter.done():
            getter.cancel()
            rest = "".join(_ready(text))
            if rest:
                yield rest
            return
        yield getter.result() + "".join(_ready(text))


def _ready(text: asyncio.Queue[str]) -> list[str]:
    pieces = []
    while not text.empty():
        pieces.append(text.get_nowait())
    return pieces
