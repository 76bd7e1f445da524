"""Spot checks: a client re-runs a sampled share of its jobs on a second provider and compares.

After a job's result is verified, the client draws from its own secret randomness whether to
check it (`node.scheduler.spot.should_check`): the provider cannot know beforehand. A check is an
ordinary job submitted again (a fresh id, the same request, paid as usual) to a provider the
matchmaker chooses among the others, so to either provider it looks like any other job. When the
two results disagree beyond the model's tolerance a third provider decides; the one it proves
wrong is excluded by this client at once (persisted), a signed fraud record goes out on the
overlay, and the `on_confirmed` port (the composition root's) may open a dispute on chain.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from node.chain.keys import NodeKey
from node.client.fraud_record import Evidence, FraudRecord, issue_fraud_record
from node.client.jobs import ClientJobs
from node.client.matching import Matchmaker
from node.client.model_specs import ModelSpecs
from node.client.reputation import ReputationBook
from node.domain.service import CheckRunView, JobSpec, JobView, VerificationView
from node.domain.state import JobState, PaymentPath
from node.errors import GpunodeError, JobError
from node.executor.compare import Comparison, RunResult, compare_runs
from node.executor.manifest import ModelManifest, Tolerance, tolerance_for
from node.logging import get_logger
from node.scheduler.spot import (
    Verdict,
    check_lost,
    check_passed,
    decide,
    job_seen,
    should_check,
)
from node.storage import JobRecord
from node.types import Address, Hash32

log = get_logger(__name__)

# The longest a check's run may take when its job's own time is unknown.
DEFAULT_CHECK_TIMEOUT_S = 120.0
_HAS_RESULT = (JobState.VERIFIED, JobState.SETTLED)
_REPORTS_KEPT = 256
JOBS_SEEN_WRITE_EVERY = 16


@dataclass(frozen=True, slots=True)
class CheckReport:
    """What a spot check found: each run (provider, job id, result) in order, the verdict, and
    the provider proven wrong, if any."""

    job_id: str
    verdict: Verdict
    runs: tuple[tuple[Address, str, RunResult], ...]
    why: str
    loser: Address | None = None


@dataclass(frozen=True, slots=True)
class ConfirmedFraud:
    """A provider's result lost a spot check to two others: what a dispute on chain needs. The
    job the accused ran (`job_id`, this client's id) and its payment path name what to
    challenge; `record` holds the three signed receipts and their outputs."""

    job_id: str
    payment: PaymentPath
    record: FraudRecord


FraudHook = Callable[[ConfirmedFraud], Awaitable[None]]
Publish = Callable[[FraudRecord], Awaitable[None]]


class SpotChecker:
    """A component: `run()` takes in verified jobs (`verified()`, the pipeline's hook), decides,
    and checks the sampled ones, each in its own task."""

    def __init__(
        self,
        jobs: ClientJobs,
        book: ReputationBook,
        specs: ModelSpecs,
        key: NodeKey,
        *,
        share: float,
        rng: random.Random | None = None,
        publish: Publish | None = None,
        on_confirmed: FraudHook | None = None,
    ) -> None:
        self.jobs = jobs
        self.book = book
        self.specs = specs
        self.key = key
        self.share = share
        # The client's own secret source: a provider that could predict the draws would cheat
        # only on the jobs nobody checks.
        self.rng = rng if rng is not None else random.SystemRandom()
        self.publish = publish
        self.on_confirmed = on_confirmed
        self.ready = asyncio.Event()
        self._queue: asyncio.Queue[tuple[JobRecord, RunResult]] = asyncio.Queue()
        # Jobs this checker submitted: their results are compared, never sampled again.
        self._own: set[str] = set()
        # Reports of the checks sampled here, latest last (`wait_for_report`).
        self.reports: dict[str, CheckReport] = {}
        self._reported = asyncio.Condition()
        # Verified results not yet sampled or checked, and an event set while there are none.
        self._pending = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def matchmaker(self) -> Matchmaker:
        return self.jobs.pipeline.matchmaker

    def verified(self, record: JobRecord, result: RunResult) -> None:
        """The pipeline verified `record`'s result (never blocks the job)."""
        self._pending += 1
        self._idle.clear()
        self._queue.put_nowait((record, result))

    async def until_idle(self) -> None:
        """Return once every verified result so far was sampled, and each one drawn was checked
        (its re-runs submitted, paid and compared)."""
        await self._idle.wait()

    async def run(self) -> None:
        await self.book.load()
        self.matchmaker.excluded.update(self.book.excluded())
        self.ready.set()
        async with asyncio.TaskGroup() as group:
            while True:
                record, result = await self._queue.get()
                group.create_task(self._after(record, result))

    async def _after(self, record: JobRecord, result: RunResult) -> None:
        provider = result.receipt.provider
        try:
            if record.job_id.hex() in self._own:
                return
            if await self._sampled(provider):
                await self._keep(await self.check(record, result))
        except GpunodeError as exc:
            log.warning("spot_check_not_done", job_id=record.job_id.hex(), provider=provider, error=str(exc))
        except Exception:
            # Only this check is at stake, never the node.
            log.exception("spot_check_failed", job_id=record.job_id.hex(), provider=provider)
        finally:
            self._pending -= 1
            if not self._pending:
                self._idle.set()

    async def _sampled(self, provider: Address) -> bool:
        """Count the provider's job and draw whether to check it."""
        seen = job_seen(self.book.get(provider))
        checking = should_check(self.rng.random(), self.share, seen)
        # Jobs seen are written now and then, not on every job (a count, not money).
        write = checking or seen.jobs_seen % JOBS_SEEN_WRITE_EVERY == 0
        await self.book.update(provider, job_seen, durable=False, write=write)
        return checking

    async def _keep(self, report: CheckReport) -> None:
        async with self._reported:
            self.reports[report.job_id] = report
            while len(self.reports) > _REPORTS_KEPT:
                self.reports.pop(next(iter(self.reports)))
            self._reported.notify_all()

    async def wait_for_report(self, job_id: str, *, timeout_s: float) -> CheckReport:
        """The report of the sampled check of `job_id`, once done; `TimeoutError` after `timeout_s`."""
        async with asyncio.timeout(timeout_s), self._reported:
            await self._reported.wait_for(lambda: job_id in self.reports)
            return self.reports[job_id]

    # checking ------------------------------------------------------------------------------------

    async def verify(self, job_id: str) -> CheckReport:
        """`job verify`: re-run a finished job of this client's on another provider now."""
        view = await self.jobs.get(job_id)
        if view.receipt is None or view.output is None or view.state not in _HAS_RESULT:
            raise JobError(
                f"job {view.job_id} has no verified result to check", hint="wait until it is verified"
            )
        record = await self.jobs.pipeline.store.get(Hash32(bytes.fromhex(view.job_id)))
        return await self.check(record, RunResult(view.receipt.receipt, view.receipt.signature, view.output))

    async def verify_job(self, job_id: str) -> VerificationView:
        report = await self.verify(job_id)
        return VerificationView(
            job_id=report.job_id,
            verdict=report.verdict.value,
            why=report.why,
            runs=tuple(
                CheckRunView(provider, run_job, r.receipt.output_hash.hex(), r.receipt.profile_hash.hex())
                for provider, run_job, r in report.runs
            ),
            loser=report.loser,
        )

    async def check(self, record: JobRecord, first: RunResult) -> CheckReport:
        job_id = record.job_id.hex()
        data = await self.jobs.pipeline.blobs.require(record.input_hash, "job input")
        accused = first.receipt.provider
        log.info("spot_check_started", job_id=job_id, provider=accused)
        runs: list[tuple[Address, str, RunResult]] = [(accused, job_id, first)]
        second = await self._rerun(record, data, runs)
        manifest = await self._manifest(record.model_id, [runs[1][0], accused])
        tolerance = tolerance_for(manifest) if manifest is not None else guess_tolerance(first.output)
        c12 = compare_runs(first, second, tolerance)
        if c12.agree:
            await self.book.update(accused, check_passed, durable=False)
            return self._report(record, Verdict.AGREED, runs, c12)
        log.warning("spot_check_mismatch", job_id=job_id, provider=accused, why=c12.why)
        try:
            third = await self._rerun(record, data, runs)
        except GpunodeError as exc:
            return self._report(record, Verdict.UNDECIDED, runs, Comparison(False, f"no third run: {exc}"))
        c13, c23 = compare_runs(first, third, tolerance), compare_runs(second, third, tolerance)
        verdict = decide(False, c13.agree, c23.agree)
        if verdict is Verdict.UNDECIDED:
            return self._report(
                record, verdict, runs, Comparison(False, f"{c12.why}; the third run: {c13.why}")
            )
        loser_index = 0 if verdict is Verdict.FIRST_WRONG else 1
        report = self._report(record, verdict, runs, c13 if loser_index == 0 else c23, loser=loser_index)
        await self._convict(record, report, loser_index, manifest)
        return report

    async def _rerun(
        self, record: JobRecord, data: bytes, runs: list[tuple[Address, str, RunResult]]
    ) -> RunResult:
        """The job run again, as a new job, on a provider none of `runs` came from."""
        tried = frozenset(provider for provider, _, _ in runs)
        choice = self.matchmaker.choose(record.model_id, record.price_wei, tried=tried)
        spec = JobSpec(
            model_id=record.model_id.hex(),
            input=data,
            payment=record.status.payment,
            max_price_wei=record.price_wei,
            timeout_s=_timeout_of(record),
            provider=choice.candidate.address,
        )
        view = await self.jobs.submit(spec)
        self._own.add(view.job_id)
        final = await self._result_of(view)
        if final.receipt is None or final.output is None:
            raise JobError(f"the check's run on {choice.candidate.address} failed: {final.error}")
        result = RunResult(final.receipt.receipt, final.receipt.signature, final.output)
        runs.append((choice.candidate.address, final.job_id, result))
        return result

    async def _result_of(self, view: JobView) -> JobView:
        async for update in self.jobs.watch(view.job_id):
            if update.terminal or update.state in _HAS_RESULT:
                break
        return await self.jobs.get(view.job_id)

    async def _manifest(self, model_id: Hash32, providers: list[Address]) -> ModelManifest | None:
        """The model's manifest, as one of `providers` serves it (the same from anyone: its id is
        its hash); it says how the model's results may differ."""
        for provider in providers:
            peer = await self.jobs.pipeline.reach(provider)
            manifest = None if peer is None else await self.specs.manifest(model_id, peer)
            if manifest is not None:
                return manifest
        return None

    def _report(
        self,
        record: JobRecord,
        verdict: Verdict,
        runs: list[tuple[Address, str, RunResult]],
        comparison: Comparison,
        *,
        loser: int | None = None,
    ) -> CheckReport:
        log.info("spot_check_done", job_id=record.job_id.hex(), verdict=verdict, why=comparison.why)
        return CheckReport(
            record.job_id.hex(),
            verdict,
            tuple(runs),
            comparison.why,
            loser=None if loser is None else runs[loser][0],
        )

    async def _convict(
        self, record: JobRecord, report: CheckReport, loser: int, manifest: ModelManifest | None
    ) -> None:
        """Exclude the provider proven wrong, tell the overlay, and hand the case to a dispute."""
        accused, accused_job, lost = report.runs[loser]
        reason = f"lost a spot check of job {report.job_id}: {report.why}"
        self.matchmaker.excluded.add(accused)
        await self.book.update(accused, lambda r: check_lost(r, reason))
        for index, (provider, _, _) in enumerate(report.runs):
            if index != loser:
                await self.book.update(provider, check_passed, durable=False)
        log.warning("provider_excluded", provider=accused, job_id=report.job_id, reason=reason)
        witnesses = [
            Evidence(r.receipt, r.signature, r.output)
            for i, (_, _, r) in enumerate(report.runs)
            if i != loser
        ]
        fraud = issue_fraud_record(
            self.key.private_key,
            self.key.address,
            accused=Evidence(lost.receipt, lost.signature, lost.output),
            witnesses=(witnesses[0], witnesses[1]),
            now_ms=int(time.time() * 1000),
            manifest=None if manifest is None else manifest.canonical_bytes(),
        )
        if self.publish is not None:
            try:
                await self.publish(fraud)
            except GpunodeError as exc:
                log.warning("fraud_record_not_published", provider=accused, error=str(exc))
        if self.on_confirmed is not None:
            await self.on_confirmed(ConfirmedFraud(accused_job, record.status.payment, fraud))


def guess_tolerance(output: bytes) -> Tolerance:
    """How to compare when the model's manifest cannot be had: by what the output looks like."""
    return Tolerance(compare="tokens" if output[:1] == b"{" else "tensors")


def _timeout_of(record: JobRecord) -> float:
    if record.deadline is None:
        return DEFAULT_CHECK_TIMEOUT_S
    return max(10.0, min(record.deadline - record.created_at, DEFAULT_CHECK_TIMEOUT_S))
