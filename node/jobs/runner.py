"""Provider side: run an accepted job in the executor and sign its receipt, persisting each step.

    accepted → running → signed → delivered → paid      (| failed)

The output hash is computed by the executor outside the sandbox; the key that signs the receipt
never reaches a worker.
"""

from __future__ import annotations

from dataclasses import dataclass

from node.chain.eip712 import Eip712Domain, sign_receipt
from node.chain.keys import NodeKey
from node.errors import ExecutorError
from node.executor.pool import ExecutorPool
from node.executor.result import build_receipt
from node.jobs.events import JobEvents
from node.jobs.state import Failed, JobEvent, ResultDelivered, ResultSigned, Started
from node.logging import get_logger
from node.scheduler import ProviderLoad
from node.storage import Database, JobRecord, SignedReceipt
from node.types import Hash32, ResultReceipt

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class SignedResult:
    receipt: ResultReceipt
    signature: bytes
    output: bytes
    run_s: float


@dataclass
class Load:
    """Jobs running and waiting on this provider, for admission."""

    running: int = 0
    queued: int = 0

    def snapshot(self) -> ProviderLoad:
        return ProviderLoad(running=self.running, queued=self.queued)


class JobRunner:
    def __init__(
        self,
        db: Database,
        pool: ExecutorPool,
        key: NodeKey,
        domain: Eip712Domain,
        events: JobEvents,
        *,
        slots: int,
    ) -> None:
        self.db = db
        self.pool = pool
        self.key = key
        self.domain = domain
        self.events = events
        self.slots = slots
        self.load = Load()
        self.served = 0

    async def apply(self, job_id: Hash32, event: JobEvent, **attached: object) -> JobRecord:
        record = await self.db.run(self.db.jobs.apply, job_id, event, **attached)  # type: ignore[arg-type]
        self.events.publish(record)
        return record

    async def run(
        self, record: JobRecord, job_input: bytes, *, timeout_s: float | None = None
    ) -> SignedResult:
        """Run an accepted job; the result is signed and recorded as delivered before it returns.

        An `ExecutorError` marks the job failed and is raised again for the caller to report.
        """
        self.load.queued += 1
        try:
            await self.apply(record.job_id, Started())
        finally:
            self.load.queued -= 1
        self.load.running += 1
        try:
            result = await self.pool.run(record.model_id, job_input, timeout_s=timeout_s)
        except ExecutorError as exc:
            await self.apply(record.job_id, Failed(f"execution failed: {exc}"))
            raise
        finally:
            self.load.running -= 1
        receipt = build_receipt(
            job_id=record.job_id,
            model_id=record.model_id,
            input_hash=record.input_hash,
            result=result,
            provider=self.key.address,
        )
        signature = sign_receipt(self.key.private_key, self.domain, receipt)
        await self.apply(record.job_id, ResultSigned(), receipt=SignedReceipt(receipt, signature))
        # Recorded before the bytes go out: a lost stream must not leave the job looking unsigned.
        await self.apply(record.job_id, ResultDelivered())
        self.served += 1
        log.info("job_served", job_id=record.job_id.hex(), run_ms=round(result.run_s * 1000, 2))
        return SignedResult(receipt, signature, result.output, result.run_s)
