"""The execution profile: everything that decides a job's output bits besides model and input.

CPU results are bit-identical across processes only with the same torch version, thread count,
`ATEN_CPU_CAPABILITY` and batch composition, so all of them are recorded; the receipt commits to
the profile's hash so a re-run can reproduce the output or show that it differs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from typing import Any

from node.types import Hash32

_DOMAIN = b"gpunode/execution-profile/1\n"


@dataclass(frozen=True, slots=True)
class ExecutionProfile:
    """How a job ran; `batch_size` is the number of rows in the batch the job was part of."""

    torch_version: str
    device: str
    cpu_capability: str
    threads: int
    interop_threads: int
    deterministic: bool
    batch_size: int
    # What quantized the weights at load (an int8 variant), else empty. Left out of the canonical
    # bytes when empty, so the profiles of unquantized models hash as they always have.
    quantizer: str = ""

    def canonical_bytes(self) -> bytes:
        fields = asdict(self)
        if not self.quantizer:
            del fields["quantizer"]
        return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()

    def hash(self) -> Hash32:
        """bytes32 for `ResultReceipt.profile_hash`."""
        return Hash32(hashlib.sha256(_DOMAIN + self.canonical_bytes()).digest())

    def with_batch(self, batch_size: int) -> ExecutionProfile:
        return replace(self, batch_size=batch_size)

    @classmethod
    def from_worker(cls, info: dict[str, Any]) -> ExecutionProfile:
        """Build from the READY message a worker sends once its model is loaded."""
        return cls(
            torch_version=str(info["torch_version"]),
            device=str(info["device"]),
            cpu_capability=str(info["cpu_capability"]),
            threads=int(info["threads"]),
            interop_threads=int(info["interop_threads"]),
            deterministic=bool(info["deterministic"]),
            batch_size=0,
            quantizer=str(info.get("quantizer", "")),
        )
