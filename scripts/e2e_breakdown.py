"""Where one job's time goes, for `bench_e2e.py --breakdown`.

While jobs run one after the other, the client and each provider stamp `time.perf_counter()` at
the edges of the job's steps (store writes, voucher signing and checking, the request, the
execution, signing and checking the receipt, the frames). The stamps are taken by wrapping the
nodes' parts from outside, so the node's code carries no timing of its own. `perf_counter` is
CLOCK_MONOTONIC, one clock for every process on the machine, so client and provider stamps of a
job interleave into one timeline; each gap between two consecutive stamps is one step.
"""

from __future__ import annotations

import functools
import inspect
import statistics
import time
from collections.abc import Callable
from typing import Any

Label = str | Callable[..., str | None]
Stamps = dict[str, list[tuple[str, float]]]


class Timeline:
    """Stamps of the job in flight, by job id (one job at a time is stamped)."""

    def __init__(self) -> None:
        self.jobs: Stamps = {}
        self._current: list[tuple[str, float]] | None = None

    def begin(self, job_id: str) -> None:
        self._current = self.jobs.setdefault(job_id, [])

    def rename(self, old: str, new: str) -> None:
        self.jobs[new] = self.jobs.pop(old)

    def end(self) -> None:
        self._current = None

    def mark(self, label: str | None) -> None:
        if self._current is not None and label is not None:
            self._current.append((label, time.perf_counter()))

    def around(
        self, owner: Any, name: str, *, before: Label | None = None, after: Label | None = None
    ) -> None:
        """Stamp `before` as `owner.name` is called and `after` once it returns (labels may be
        functions of the call's arguments)."""
        inner = getattr(owner, name)

        def label(which: Label | None, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
            return which(*args, **kwargs) if callable(which) else which

        if inspect.iscoroutinefunction(inner):

            @functools.wraps(inner)
            async def stamped_async(*args: Any, **kwargs: Any) -> Any:
                self.mark(label(before, args, kwargs))
                result = await inner(*args, **kwargs)
                self.mark(label(after, args, kwargs))
                return result

            setattr(owner, name, stamped_async)
            return

        @functools.wraps(inner)
        def stamped(*args: Any, **kwargs: Any) -> Any:
            self.mark(label(before, args, kwargs))
            result = inner(*args, **kwargs)
            self.mark(label(after, args, kwargs))
            return result

        setattr(owner, name, stamped)


def _moves(prefix: str) -> Callable[..., str]:
    def label(_job_id: Any, *events: Any, **_: Any) -> str:
        return f"{prefix} write {'+'.join(e.kind for e in events)}"

    return label


def stamp_client(timeline: Timeline, client: Any) -> None:
    import node.client.pipeline as pipeline_module

    pipeline = client.client_jobs.pipeline
    timeline.around(pipeline.store, "create", after="client job stored")
    timeline.around(pipeline.store, "apply", before=_moves("client start"), after=_moves("client"))
    timeline.around(
        pipeline.vouchers, "next_voucher", before="client voucher sign start", after="client voucher signed"
    )
    timeline.around(pipeline.jobs, "request_job", before="client request start", after="client result in")
    timeline.around(pipeline.blobs, "put", after="client blob stored")
    timeline.around(
        pipeline.db.jobs, "apply_many", before="client db thread in", after="client db thread out"
    )
    timeline.around(pipeline_module, "verify_receipt", before="client verify start", after="client verified")


def stamp_provider(timeline: Timeline, parts: Any) -> None:
    import node.p2p.job_protocol as protocol_module
    import node.p2p.stream as stream_module
    import node.provider.runner as runner_module

    def request_in(request: Any, *_: Any) -> str:
        # Called with (peer, request) on the instance: the job's stamps start here.
        timeline.begin(request.job_id.hex())
        return "provider request in"

    timeline.around(
        parts.jobs, "_accept", before=lambda _peer, request: request_in(request), after="provider accepted"
    )
    timeline.around(parts.jobs, "_voucher_problem", after="provider voucher checked")
    timeline.around(parts.runner.store, "create", after="provider job stored")
    timeline.around(parts.runner.store, "apply", before=_moves("provider start"), after=_moves("provider"))
    timeline.around(parts.pool, "run", before="provider exec start", after="provider exec end")
    timeline.around(runner_module, "sign_receipt", after="provider receipt signed")
    last: list[str] = [""]

    def encoded(response: Any) -> str:
        last[0] = type(response).__name__
        return f"provider {last[0]} encoded"

    timeline.around(protocol_module, "encode_response", before=encoded)
    timeline.around(
        stream_module.P2PStream, "write_frames", after=lambda *_a, **_k: f"provider {last[0]} written"
    )


# The job's critical path, in order: (step ending at this stamp, the stamp). A stamp given as a
# prefix matches the last stamp that starts with it.
CRITICAL_PATH = (
    ("submit: input blob and job row stored", "client submitted"),
    ("client task picks the job up", "client voucher sign start"),
    ("sign the voucher (EIP-712)", "client voucher signed"),
    ("write matched+paid with the voucher", "client write matched"),
    ("build the request", "client request start"),
    ("request to the provider (bridge, yamux/noise, bridge)", "provider request in"),
    ("check the voucher's signature", "provider voucher checked"),
    ("check the deposit, store the job and voucher", "provider job stored"),
    ("start the execution", "provider exec start"),
    ("execution in the sandbox (incl. worker round trip)", "provider exec end"),
    ("sign the receipt (EIP-712)", "provider receipt signed"),
    ("write started+signed with the receipt", "provider write started+result_signed"),
    ("hand the result to the stream", "provider JobResult encoded"),
    ("result to the client (bridge, yamux/noise, bridge)", "client result in"),
    ("check the result (hash, receipt signature)", "client verified"),
    ("store the output blob (on its own)", "client blob stored"),
    ("write received+verified+settled with the receipt", "client write "),  # (and the output)
    ("watcher sees settled", "client settled seen"),
)
# Work beside the critical path: (what, first stamp, last stamp).
BESIDE = (
    ("provider: JobAccepted frame written", "provider JobAccepted encoded", "provider JobAccepted written"),
    ("provider: JobProgress frame written", "provider JobProgress encoded", "provider JobProgress written"),
    ("provider: JobResult frame written", "provider JobResult encoded", "provider JobResult written"),
    ("provider: write delivered", "provider start write result_delivered", "provider write result_delivered"),
    ("client: final write, in the database thread", "client db thread in", "client db thread out"),
    ("client: write sent alone", "client start write sent", "client write sent"),
    ("client: write sent+started alone", "client start write sent+started", "client write sent+started"),
)


def _last(marks: list[tuple[str, float]], prefix: str) -> float | None:
    found = [at for label, at in marks if label.startswith(prefix)]
    return found[-1] if found else None


def _exact(marks: list[tuple[str, float]], label: str) -> float | None:
    found = [at for each, at in marks if each == label]
    return found[-1] if found else None


def report(stamps: Stamps, run_s: dict[str, float]) -> list[str]:
    """The p50 of each step of the critical path, then of the work beside it."""
    steps: dict[str, list[float]] = {name: [] for name, _ in CRITICAL_PATH}
    beside: dict[str, list[float]] = {name: [] for name, _, _ in BESIDE}
    totals: list[float] = []
    for marks in stamps.values():
        start = _last(marks, "client submit called")
        previous = start
        for name, prefix in CRITICAL_PATH:
            at = _last(marks, prefix)
            if at is None:
                continue  # a step this job (or this version of the node) does not take
            if previous is not None:
                steps[name].append((at - previous) * 1000)
            previous = at
        if start is not None and previous is not None:
            totals.append((previous - start) * 1000)
        for name, first, last in BESIDE:
            begun, ended = _exact(marks, first), _exact(marks, last)
            if begun is not None and ended is not None:
                beside[name].append((ended - begun) * 1000)
    jobs = len(stamps)
    lines = [f"{'step of one job (critical path)':<56} {'p50 ms':>7} {'jobs':>5}"]
    for name, values in steps.items():
        if values:
            lines.append(f"{name:<56} {statistics.median(values):7.3f} {len(values):5d}")
    lines.append(f"{'sum of the p50s':<56} {sum(statistics.median(v) for v in steps.values() if v):7.3f}")
    lines.append(f"{'submit to settled seen':<56} {statistics.median(totals):7.3f} {len(totals):5d}")
    runs = [run_s[j] * 1000 for j in stamps if j in run_s]
    if runs:
        lines.append(f"{'of which execution (run_s, inside the sandbox)':<56} {statistics.median(runs):7.3f}")
    lines.append(f"{'beside the critical path':<56} {'p50 ms':>7} {'jobs':>5}")
    for name, values in beside.items():
        if values:
            lines.append(f"{name:<56} {statistics.median(values):7.3f} {len(values):5d}")
    lines.append(f"({jobs} jobs stamped)")
    return lines
