"""The node's Prometheus metrics: one `NodeMetrics` per node (its own registry, no globals).

Most figures are read when scraped, from counters the components keep anyway (`Sample`, built by
the composition root); the job metrics follow every persisted job record (`observe_job`, which
`JobEvents` calls), so no pipeline carries metrics code of its own. GPU figures come from NVML
where it is available and are left out cleanly where it is not.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from node.domain.records import JobRecord
from node.domain.state import ClientState, ProviderState, Role

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Exported only where NVML answers.
GPU_METRICS = (
    "gpunode_gpu_utilization_ratio",
    "gpunode_gpu_memory_used_bytes",
    "gpunode_gpu_memory_total_bytes",
)
# Seconds, from a warm sub-millisecond job to a long generation.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


@dataclass(frozen=True, slots=True)
class Sample:
    """What the node's components count, read at scrape time."""

    peers_connected: int = 0
    adverts_live: int = 0
    adverts_accepted: int = 0
    adverts_rejected: Mapping[str, int] = field(default_factory=dict)  # by reason
    gossip_dropped: int = 0
    chain_calls: int = 0
    chain_errors: int = 0
    warm_workers: Mapping[str, int] = field(default_factory=dict)  # model id → workers
    vouchers_promised_wei: int = 0  # client: the cumulative amounts of the vouchers it signed


@dataclass(slots=True)
class _Seen:
    """Where a job stood when last seen, and when it entered each state (unix seconds)."""

    state: str
    entered: dict[str, float]
    paid_attempts: int = 0
    outcomes: int = 0


class NodeMetrics:
    def __init__(self, sample: Callable[[], Sample] = Sample) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.jobs = Counter(
            "gpunode_jobs", "Job transitions, by role and the state entered", ["role", "state"], registry=r
        )
        self.attempts = Counter(
            "gpunode_job_attempts",
            "Finished attempts of this client's jobs, by outcome",
            ["outcome"],
            registry=r,
        )
        self.queue_seconds = Histogram(
            "gpunode_job_queue_seconds",
            "Provider: from accepting a job to running it",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.execution_seconds = Histogram(
            "gpunode_job_execution_seconds",
            "Provider: from running a job to its signed result",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.end_to_end_seconds = Histogram(
            "gpunode_job_end_to_end_seconds",
            "Client: from submitting a job to its verified result",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.first_token_seconds = Histogram(
            "gpunode_time_to_first_token_seconds",
            "Client: from a streamed request to its first token",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = Counter("gpunode_tokens_generated", "Tokens of generations received", registry=r)
        self.payments_wei = Counter("gpunode_payments_wei", "Client: wei paid for job attempts", registry=r)
        self.earned_wei = Counter("gpunode_earned_wei", "Provider: wei received for jobs", registry=r)
        self.http_requests = Counter(
            "gpunode_http_requests", "HTTP requests, by route and status", ["route", "status"], registry=r
        )
        self.provider_wei = Gauge(
            "gpunode_provider_wei", "Provider: wei by where the money stands", ["standing"], registry=r
        )
        self.stake_wei = Gauge("gpunode_stake_wei", "Provider: stake in the registry", registry=r)
        self.deposit_wei = Gauge("gpunode_deposit_wei", "Client: voucher deposit as last read", registry=r)
        r.register(_Sampled(sample))
        self._seen: dict[bytes, _Seen] = {}

    def export(self) -> bytes:
        return generate_latest(self.registry)

    # jobs --------------------------------------------------------------------------------------

    def observe_job(self, record: JobRecord) -> None:
        """Count a persisted job record: the state it entered, paid attempts, outcomes, latencies."""
        status = record.status
        state = str(status.state)
        seen = self._seen.get(record.job_id)
        if seen is None:
            seen = self._seen[record.job_id] = _Seen("", {})
        if state != seen.state:
            seen.state = state
            seen.entered.setdefault(state, record.updated_at)
            self.jobs.labels(status.role.value, state).inc()
            self._latencies(record, seen)
        if status.role is Role.CLIENT:
            self._attempts(record, seen)
        if status.terminal:
            del self._seen[record.job_id]

    def _latencies(self, record: JobRecord, seen: _Seen) -> None:
        state, now = seen.state, record.updated_at
        if record.status.role is Role.CLIENT:
            if state == ClientState.VERIFIED:
                self.end_to_end_seconds.observe(max(0.0, now - record.created_at))
            return
        if state == ProviderState.RUNNING:
            self.queue_seconds.observe(max(0.0, now - seen.entered.get(ProviderState.ACCEPTED, now)))
        elif state == ProviderState.SIGNED:
            self.execution_seconds.observe(max(0.0, now - seen.entered.get(ProviderState.RUNNING, now)))
        elif state == ProviderState.PAID:
            self.earned_wei.inc(record.price_wei)

    def _attempts(self, record: JobRecord, seen: _Seen) -> None:
        attempts = record.status.attempts
        paid = [a for a in attempts if a.paid]
        for attempt in paid[seen.paid_attempts :]:
            self.payments_wei.inc(attempt.price_wei or 0)
        seen.paid_attempts = len(paid)
        finished = [a for a in attempts if a.outcome is not None]
        for attempt in finished[seen.outcomes :]:
            self.attempts.labels(str(attempt.outcome)).inc()
        seen.outcomes = len(finished)


class _Sampled(Collector):
    """Figures read from the components when scraped, and the GPUs' where NVML answers."""

    def __init__(self, sample: Callable[[], Sample]) -> None:
        self._sample = sample

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        s = self._sample()
        yield _gauge("gpunode_peers_connected", "Peers connected on the overlay", s.peers_connected)
        yield _gauge("gpunode_adverts_live", "Live provider adverts in the directory", s.adverts_live)
        yield _counter("gpunode_adverts_accepted", "Provider adverts accepted", s.adverts_accepted)
        rejected = CounterMetricFamily(
            "gpunode_adverts_rejected", "Adverts rejected, by reason", labels=["reason"]
        )
        for reason, count in sorted(s.adverts_rejected.items()):
            rejected.add_metric([reason], count)
        yield rejected
        yield _counter("gpunode_gossip_dropped", "Gossip messages dropped on a full queue", s.gossip_dropped)
        yield _counter("gpunode_chain_calls", "Chain RPC requests", s.chain_calls)
        yield _counter("gpunode_chain_errors", "Chain RPC requests that failed", s.chain_errors)
        warm = GaugeMetricFamily("gpunode_warm_workers", "Warm sandboxed workers, by model", labels=["model"])
        for model, workers in sorted(s.warm_workers.items()):
            warm.add_metric([model], workers)
        yield warm
        yield _gauge(
            "gpunode_vouchers_promised_wei",
            "Client: cumulative amount of its vouchers",
            s.vouchers_promised_wei,
        )
        yield from _gpu_metrics()


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)


def _gpu_metrics() -> Iterator[Metric]:
    readings = gpu_readings()
    if not readings:
        return
    names = dict(zip(("utilization", "used", "total"), GPU_METRICS, strict=True))
    utilization = GaugeMetricFamily(names["utilization"], "GPU busy share", labels=["gpu"])
    used = GaugeMetricFamily(names["used"], "GPU memory in use", labels=["gpu"])
    total = GaugeMetricFamily(names["total"], "GPU memory", labels=["gpu"])
    for index, reading in readings.items():
        utilization.add_metric([index], reading["utilization"])
        used.add_metric([index], reading["used"])
        total.add_metric([index], reading["total"])
    yield from (utilization, used, total)


def gpu_readings() -> dict[str, dict[str, float]]:
    """Utilization (0 to 1) and memory (bytes) of each GPU by index; empty without NVML."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        return {}
    try:
        readings: dict[str, dict[str, float]] = {}
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle: Any = pynvml.nvmlDeviceGetHandleByIndex(index)
            rates = pynvml.nvmlDeviceGetUtilizationRates(handle)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            readings[str(index)] = {
                "utilization": rates.gpu / 100,
                "used": float(memory.used),
                "total": float(memory.total),
            }
        return readings
    except Exception:
        return {}
    finally:
        pynvml.nvmlShutdown()
