"""`NodeMetrics` over real job records: each state entered counts once, attempts by outcome,
payments and earnings in wei, latencies from the records' own times; no GPU figures without NVML."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from node.domain.records import JobRecord
from node.domain.state import Attempt, AttemptOutcome, JobStatus, PaymentPath, Role
from node.metrics import GPU_METRICS, NodeMetrics, Sample, gpu_readings
from node.types import Address, Hash32

PROVIDER = Address("0x" + "11" * 20)


def record(
    role: Role, state: str, at: float, attempts: tuple[Attempt, ...] = (), version: int = 1
) -> JobRecord:
    return JobRecord(
        job_id=Hash32(b"\x01" * 32),
        model_id=Hash32(b"\x02" * 32),
        input_hash=Hash32(b"\x03" * 32),
        price_wei=1000,
        client=None,
        deadline=None,
        status=JobStatus(role=role, payment=PaymentPath.VOUCHER, state=state, attempts=attempts),  # type: ignore[arg-type]
        version=version,
        created_at=100.0,
        updated_at=at,
    )


def samples(metrics: NodeMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(metrics.export().decode()):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def test_can_count_a_client_job_through_its_states() -> None:
    metrics = NodeMetrics()
    paid = (Attempt(PROVIDER, paid=True, price_wei=700),)
    done = (Attempt(PROVIDER, paid=True, outcome=AttemptOutcome.COMPLETED, price_wei=700),)
    for state, at, attempts in [
        ("submitted", 100.0, ()),
        ("paid", 100.1, paid),
        ("paid", 100.1, paid),  # the same record again counts nothing
        ("running", 100.2, paid),
        ("verified", 100.5, done),
        ("settled", 100.6, done),
    ]:
        metrics.observe_job(record(Role.CLIENT, state, at, attempts))
    found = samples(metrics)
    assert found[("gpunode_jobs_total", (("role", "client"), ("state", "paid")))] == 1
    assert found[("gpunode_job_attempts_total", (("outcome", "completed"),))] == 1
    assert found[("gpunode_payments_wei_total", ())] == 700
    assert found[("gpunode_job_end_to_end_seconds_count", ())] == 1
    assert found[("gpunode_job_end_to_end_seconds_sum", ())] == 0.5


def test_can_time_a_provider_job_and_count_its_earnings() -> None:
    metrics = NodeMetrics()
    for state, at in [("accepted", 100.0), ("running", 100.25), ("signed", 101.25), ("paid", 102.0)]:
        metrics.observe_job(record(Role.PROVIDER, state, at))
    found = samples(metrics)
    assert found[("gpunode_job_queue_seconds_sum", ())] == 0.25
    assert found[("gpunode_job_execution_seconds_sum", ())] == 1.0
    assert found[("gpunode_earned_wei_total", ())] == 1000


def test_can_export_what_the_components_count_and_no_gpu_without_nvml() -> None:
    sample = Sample(peers_connected=3, adverts_rejected={"replayed": 2}, warm_workers={"ab" * 32: 2})
    found = samples(NodeMetrics(lambda: sample))
    assert found[("gpunode_peers_connected", ())] == 3
    assert found[("gpunode_adverts_rejected_total", (("reason", "replayed"),))] == 2
    assert found[("gpunode_warm_workers", (("model", "ab" * 32),))] == 2
    if not gpu_readings():  # this machine has no NVML: the GPU families are left out, nothing fails
        assert not {name for name, _ in found} & set(GPU_METRICS)
