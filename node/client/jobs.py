"""`ClientJobs`: the façade over the client pipeline (submit, get, list, cancel, watch, deposit).

`run()` is the service: it resumes every live job found in the database, sets `ready`, then
drives each newly submitted job in its own task under one TaskGroup. A job's task that fails
marks the job failed with the reason; it never takes the node down.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import secrets
import time
from collections.abc import AsyncIterator

from node.chain.market import GWEI
from node.client.model_specs import ModelSpecs, check_input
from node.client.pipeline import ESCROW_MARGIN_S, ClientPipeline, Submission
from node.client.variants import variant_of
from node.client.views import has_result, job_view
from node.domain.service import (
    MAX_TIMEOUT_S,
    JobFilter,
    JobSpec,
    JobView,
    ModelInfoView,
    OfferedModelView,
    ProviderSeenView,
)
from node.domain.state import Cancelled, ClientState, Failed, JobTransitionError, PaymentPath, Role
from node.errors import ChainError, GpunodeError, JobError, SchedulerError, SettlementError
from node.executor.errors import InputTooLarge, UnknownModel
from node.executor.manifest import ModelManifest, normalize_model_id
from node.jobstore.events import records_until_terminal
from node.logging import get_logger
from node.scheduler import Choice, ProviderStats
from node.settlement.terms import receipt_job_id
from node.storage import Database, JobRecord, NewJob
from node.storage.errors import InvalidRecord, UnknownJob
from node.types import Address, Hash32, sha256

log = get_logger(__name__)

_ALL_JOBS = JobFilter()


class ClientJobs:
    def __init__(
        self,
        pipeline: ClientPipeline,
        *,
        max_input_bytes: int,
        specs: ModelSpecs | None = None,
        discovery_wait_s: float = 0.0,
    ) -> None:
        self.pipeline = pipeline
        # Until then the node may not have heard the market yet (see `_choose_first`).
        self._hearing_until = time.monotonic() + discovery_wait_s
        self.max_input_bytes = max_input_bytes
        self.specs = specs
        self.ready = asyncio.Event()
        self._queue: asyncio.Queue[Hash32] = asyncio.Queue()
        self._driving: set[Hash32] = set()
        # Jobs submitted and not yet picked up, as stored and as chosen, so driving one starts
        # without a read and without matching again.
        self._submitted: dict[Hash32, tuple[JobRecord, Submission]] = {}
        # Wei deposited minus withdrawn, as last read from the chain (unreserved balance, plus
        # reserved and paid out for each provider this client has paid).
        self._funded: int | None = None
        # The market's furthest escrow deadline ahead (fixed when it was deployed), once read.
        self._max_job_time: int | None = None

    @property
    def db(self) -> Database:
        return self.pipeline.db

    # service ----------------------------------------------------------------------------------

    async def run(self) -> None:
        db = self.pipeline.db
        live = await db.run(db.jobs.live, Role.CLIENT)
        latest = await db.run(db.vouchers.unredeemed)
        signed = {
            v.voucher.provider: v.voucher.cumulative_amount for v in latest if v.voucher.client == self.me
        }
        self.pipeline.vouchers.load(signed)
        self.pipeline.matchmaker.load(await db.run(db.providers.all))
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self.pipeline.record_service(), name="provider-service-records")
                for record in live:
                    self._start(group, record.job_id)
                self.ready.set()
                log.info("client_jobs_ready", resumed=len(live))
                while True:
                    self._start(group, await self._queue.get())
        finally:
            await self.pipeline.flush()

    def _start(self, group: asyncio.TaskGroup, job_id: Hash32) -> None:
        if job_id in self._driving:
            return
        self._driving.add(job_id)
        group.create_task(self._drive(job_id))

    async def _drive(self, job_id: Hash32) -> None:
        try:
            known, submitted = self._submitted.pop(job_id, (None, None))
            await self.pipeline.drive(job_id, known=known, submitted=submitted)
        except asyncio.CancelledError:
            raise
        except JobTransitionError as exc:
            if await self._finished(job_id):
                # Moved under us (cancelled by its client): nothing is left to drive.
                log.info("job_moved_elsewhere", job_id=job_id.hex(), reason=exc.message)
            else:
                log.exception("job_pipeline_failed", job_id=job_id.hex())
                await self._give_up(job_id, f"the node hit an error driving the job: {exc}")
        except Exception as exc:
            log.exception("job_pipeline_failed", job_id=job_id.hex())
            await self._give_up(job_id, f"the node hit an error driving the job: {exc}")
        finally:
            self._driving.discard(job_id)

    async def _finished(self, job_id: Hash32) -> bool:
        record = await self.db.run(self.db.jobs.get, job_id)
        return record.status.terminal

    async def _give_up(self, job_id: Hash32, reason: str) -> None:
        try:
            await self.pipeline.store.apply(job_id, Failed(reason))
        except GpunodeError as exc:
            log.error("job_not_marked_failed", job_id=job_id.hex(), error=str(exc))

    def resume(self, job_id: Hash32) -> None:
        """Drive a stored job again (the settlement service calls this after the chain moved it)."""
        self._queue.put_nowait(job_id)

    @property
    def me(self) -> Address:
        return self.pipeline.me

    # façade -----------------------------------------------------------------------------------

    async def submit(self, spec: JobSpec) -> JobView:
        submitted_at = time.time()
        model_id = Hash32(bytes.fromhex(normalize_model_id(spec.model_id)))
        self._check_spec(spec)
        if spec.precision is not None:
            model_id = await self._variant(model_id, spec.precision)
        # Chosen once: the first attempt goes to this provider, at the price checked here.
        choice = await self._choose_first(model_id, spec)
        price = choice.offer.price_wei
        await self._check_input(model_id, choice.candidate.address, spec.input)
        if spec.payment is PaymentPath.ESCROW and price % GWEI:
            raise JobError(
                f"provider {choice.candidate.address} asks {price} wei, not a whole number of gwei, "
                "which escrow cannot hold",
                hint="pay with a voucher, or pick another provider",
            )
        if spec.payment is PaymentPath.VOUCHER:
            await self._check_deposit(price)
        else:
            await self._check_escrow_time(spec.timeout_s)
        input_hash = sha256(spec.input)
        job = NewJob(
            job_id=Hash32(secrets.token_bytes(32)),
            role=Role.CLIENT,
            payment=spec.payment,
            model_id=model_id,
            input_hash=input_hash,
            price_wei=spec.max_price_wei,
            client=self.me,
            deadline=submitted_at + spec.timeout_s,
        )
        # Both are durable before the job is acknowledged, in one trip to the database's thread.
        record = await self.pipeline.store.create(
            job, before=functools.partial(self.pipeline.blobs.write, spec.input)
        )
        self._submitted[job.job_id] = record, Submission(choice, spec.input, pinned=spec.provider)
        if spec.stream:
            self.pipeline.text.open(job.job_id)
        self._queue.put_nowait(job.job_id)
        log.info("job_submitted", job_id=job.job_id.hex(), payment=spec.payment, price=price)
        return await self._view(record)

    async def _variant(self, model_id: Hash32, precision: str) -> Hash32:
        """The model to run for `model_id` in `precision`: itself, or its variant that providers
        offer in it, checked against both manifests."""
        specs = self.specs
        if specs is None:
            raise JobError(
                "this node cannot read models' manifests, so it cannot find a variant",
                hint="give the variant's own model id (`gpunode models available`)",
            )

        async def fetch(wanted: Hash32, provider: Address) -> ModelManifest | None:
            peer = await self.pipeline.reach(provider)
            return None if peer is None else await specs.manifest(wanted, peer)

        adverts = self.pipeline.matchmaker.directory.live()
        return await variant_of(adverts, model_id, precision.lower(), fetch)

    async def _choose_first(self, model_id: Hash32, spec: JobSpec) -> Choice:
        """The provider of the job's first attempt. A node that started moments ago may not have
        heard the market yet: until the first adverts arrive, wait for them (until the node's
        discovery time is over, and within the job's timeout); then the choice, or the reason
        none fits, says what was heard."""
        matchmaker = self.pipeline.matchmaker
        directory = matchmaker.directory
        wait_s = min(spec.timeout_s, self._hearing_until - time.monotonic())
        waited = 0.0
        if wait_s > 0 and not len(directory):
            log.info("waiting_for_providers", model_id=model_id.hex(), at_most_s=round(wait_s, 1))
            started = time.monotonic()
            with contextlib.suppress(TimeoutError):
                await directory.wait_for(lambda heard: len(heard) > 0, wait_s)
            waited = time.monotonic() - started
        try:
            return matchmaker.choose(model_id, spec.max_price_wei, pinned=spec.provider)
        except (SchedulerError, UnknownModel) as exc:
            if not waited:
                raise
            raise type(exc)(
                f"{exc.message}, after waiting {waited:.1f} s for adverts", hint=exc.hint
            ) from None

    async def _check_input(self, model_id: Hash32, provider: Address, data: bytes) -> None:
        """Refuse an input the model cannot take before anything is stored or paid for; the
        model's manifest comes from the chosen provider (the provider checks again)."""
        if self.specs is None:
            return
        peer = await self.pipeline.reach(provider)
        manifest = None if peer is None else await self.specs.manifest(model_id, peer)
        if manifest is not None:
            check_input(manifest, data, max_bytes=self.max_input_bytes)

    def _check_spec(self, spec: JobSpec) -> None:
        if len(spec.input) > self.max_input_bytes:
            raise InputTooLarge(
                f"the input is {len(spec.input)} bytes; at most {self.max_input_bytes} are accepted",
                hint="send a smaller input or split the job",
            )
        if not 0 < spec.timeout_s <= MAX_TIMEOUT_S:
            raise JobError(f"timeout must be between 0 and {MAX_TIMEOUT_S:.0f} s, got {spec.timeout_s}")
        if spec.max_price_wei < 0:
            raise JobError(f"max price must not be negative, got {spec.max_price_wei}")

    async def _check_escrow_time(self, timeout_s: float) -> None:
        """An escrow's deadline may lie at most the market's `max_job_time` ahead (so a claimer's
        stake outlasts the job): refuse a longer job now rather than have the chain refuse it
        later. When the chain cannot be read, the chain decides when the job is paid."""
        if self._max_job_time is None:
            try:
                self._max_job_time = await self.pipeline.market.max_job_time()
            except ChainError as exc:
                log.warning("max_job_time_unread", error=str(exc))
                return
        longest = self._max_job_time - ESCROW_MARGIN_S
        if timeout_s > longest:
            raise JobError(
                f"an escrowed job may run at most {longest} s on this market, not {timeout_s:.0f} s",
                hint="set a shorter timeout, or pay with a voucher",
            )

    async def _check_deposit(self, price: int) -> None:
        promised = self.pipeline.vouchers.total_promised() + price
        if self._funded is None or self._funded < promised:
            self._funded = await self._read_funded()
        if self._funded < promised:
            raise SettlementError(
                f"the voucher deposit ({self._funded} wei) does not cover {promised} wei promised "
                "with this job",
                hint="deposit more into the JobMarket (ClientJobs.deposit / gpunode deposit)",
            )

    async def _read_funded(self) -> int:
        market = self.pipeline.market
        account = await market.client_account(self.me)
        reserved_and_paid = 0
        for provider in self.pipeline.vouchers.providers():
            held = await market.reserve_of(self.me, provider)
            reserved_and_paid += held.amount + held.paid
        return account.balance + reserved_and_paid

    async def deposit(self, amount_wei: int) -> int:
        """Add `amount_wei` to this client's voucher deposit; returns the deposit's balance."""
        deposited = await self.pipeline.market.deposit(amount_wei, sender=self.pipeline.key.account)
        self._funded = None
        return deposited.balance

    async def deposit_balance(self) -> int:
        """This client's unreserved voucher deposit in the JobMarket (wei)."""
        return (await self.pipeline.market.client_account(self.me)).balance

    def providers_seen(self) -> tuple[ProviderSeenView, ...]:
        """Every live provider advert, with how each provider has served this client."""
        matchmaker = self.pipeline.matchmaker
        seen = []
        for advert in matchmaker.directory.live():
            stats = matchmaker.stats.get(advert.address, ProviderStats())
            offer = advert.offer
            warm = set(offer.warm_models)
            fastest = max(offer.benchmarks, key=lambda b: b.throughput_per_s, default=None)
            seen.append(
                ProviderSeenView(
                    address=advert.address,
                    models=tuple(
                        OfferedModelView(p.model_id.hex(), p.price_per_job_wei, p.model_id in warm)
                        for p in offer.prices
                    ),
                    devices=tuple(f"{d.kind.value}: {d.model}" for d in offer.devices),
                    throughput_per_s=fastest.throughput_per_s if fastest else None,
                    benchmark_latency_ms=fastest.latency_p50_ms if fastest else None,
                    latency_ms=stats.latency_ms,
                    reputation=stats.success_rate,
                    successes=stats.successes,
                    failures=stats.failures,
                    free_slots=offer.free_slots,
                )
            )
        return tuple(sorted(seen, key=lambda v: v.address))

    async def get(self, job_id: str) -> JobView:
        return await self._view(await self._record(job_id))

    async def list(self, query: JobFilter = _ALL_JOBS) -> tuple[JobView, ...]:
        records = await self.db.run(
            self.db.jobs.list,
            role=query.role,
            states=query.states or None,
            limit=query.limit,
            offset=query.offset,
        )
        return tuple([await self._view(r) for r in records])

    async def cancel(self, job_id: str) -> JobView:
        record = await self._record(job_id)
        if record.role is not Role.CLIENT:
            raise JobError(f"job {job_id} was sent to this node to run; only its client can cancel it")
        try:
            moved = await self.pipeline.store.apply(record.job_id, Cancelled())
        except JobTransitionError as exc:
            raise JobError(exc.message, hint="a paid job finishes, fails or is refunded") from exc
        return await self._view(moved)

    async def watch(self, job_id: str) -> AsyncIterator[JobView]:
        # Subscribed before reading, so no change between the read and the first event is missed.
        with self.pipeline.store.watch(_job_key(job_id)) as queue:
            first = await self._record(job_id)
            async for latest in records_until_terminal(first, queue):
                yield await self._view(latest)

    async def model_info(self, model_id: str) -> ModelInfoView | None:
        """The name and task of a model providers offer, from the manifest of one that serves
        it (kept once learnt); None when none can say."""
        key = Hash32(bytes.fromhex(normalize_model_id(model_id)))
        if self.specs is None:
            return None
        for advert in self.pipeline.matchmaker.directory.find(model_id=key):
            peer = await self.pipeline.reach(advert.address)
            manifest = None if peer is None else await self.specs.manifest(key, peer)
            if manifest is not None:
                return ModelInfoView(key.hex(), manifest.name, manifest.task)
        return None

    def streamed_text(self, job_id: str) -> str:
        """What a streaming job's provider has streamed so far ("" once its attempt ended)."""
        return self.pipeline.text.text(_job_key(job_id))

    async def follow_text(self, job_id: str) -> AsyncIterator[str]:
        async for piece in self.pipeline.text.follow(_job_key(job_id)):
            yield piece

    # helpers ----------------------------------------------------------------------------------

    async def _record(self, job_id: str) -> JobRecord:
        raw = _job_key(job_id)
        try:
            return await self.db.run(self.db.jobs.get, raw)
        except (UnknownJob, InvalidRecord) as exc:
            raise JobError(
                f"no job {raw.hex()} is known to this node", hint="check the id with `job list`"
            ) from exc

    async def _view(self, record: JobRecord) -> JobView:
        receipt = None
        output = None
        status = record.status
        if status.attempts and record.role is Role.CLIENT and has_result(record):
            attempt = len(status.attempts) - 1
            receipt_id = receipt_job_id(self.me, record, attempt)
            recent = self.pipeline.results.get(receipt_id)
            if recent is not None:
                receipt, output = recent
            elif status.payment is PaymentPath.ESCROW:
                receipt = await self.pipeline.receipts.get(receipt_id)
            elif record.state is not ClientState.RESULT:
                # A voucher job's receipt is stored with its verification, never before.
                receipt = await self.db.run(self.db.receipts.get, record.job_id, status.attempts[-1].provider)
            if receipt is not None and output is None:
                output = await self.pipeline.blobs.get(receipt.receipt.output_hash)
        verified = record.state in (ClientState.VERIFIED, ClientState.SETTLED)
        price = None
        if status.attempts and record.role is Role.CLIENT:
            price = status.attempts[-1].price_wei
        return job_view(
            record, client=self.me, receipt=receipt, verified=verified, output=output, price_wei=price
        )


def _job_key(job_id: str) -> Hash32:
    try:
        raw = bytes.fromhex(job_id.lower().removeprefix("0x"))
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise JobError(f"{job_id!r} is not a job id", hint="a job id is 64 hex digits")
    return Hash32(raw)
