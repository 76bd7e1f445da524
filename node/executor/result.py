"""What a job run produces, and the unsigned receipt a provider signs for it (the executor holds no key)."""

from __future__ import annotations

from dataclasses import dataclass

from node.errors import ExecutorError
from node.executor.profile import ExecutionProfile
from node.types import Address, Hash32, ResultReceipt, sha256


@dataclass(frozen=True, slots=True)
class ExecutionResult:
    """A finished job: output bytes (safetensors), hashes computed outside the sandbox, the profile."""

    model_id: Hash32
    input_hash: Hash32
    output: bytes
    output_hash: Hash32
    profile: ExecutionProfile
    queued_s: float
    run_s: float

    @property
    def profile_hash(self) -> Hash32:
        return self.profile.hash()


def build_receipt(
    *, job_id: Hash32, model_id: Hash32, input_hash: Hash32, result: ExecutionResult, provider: Address
) -> ResultReceipt:
    """The unsigned `ResultReceipt`; refuses a result that belongs to another model or input."""
    if result.model_id != model_id or result.input_hash != input_hash:
        raise ExecutorError(
            "the execution result was produced for a different model or input than the job's",
            hint="build the receipt from the result of this job's own run",
        )
    if len(job_id) != 32:
        raise ExecutorError(f"job id must be 32 bytes, got {len(job_id)}")
    return ResultReceipt(
        job_id=job_id,
        model_id=model_id,
        input_hash=input_hash,
        output_hash=result.output_hash,
        profile_hash=result.profile_hash,
        provider=provider,
    )


def receipt_matches(receipt: ResultReceipt, output: bytes, profile: ExecutionProfile) -> bool:
    """Whether `output` and `profile` are the ones the receipt commits to (signature checked elsewhere)."""
    return receipt.output_hash == sha256(output) and receipt.profile_hash == profile.hash()
