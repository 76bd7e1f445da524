"""Job inputs and outputs on disk, addressed by sha256, so a restarted node can resend an input
and still show a finished job's output.

Files are as durable as the database that names them (`Database.survives_power_loss`): always
written in full and renamed into place before the state change that refers to them commits, so
they survive a crash of the node; fsynced as well only when the database's commits also survive
a power cut. A file torn by a power cut reads as missing, never as a wrong blob or receipt.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from pathlib import Path

from node.errors import GpunodeError, JobError
from node.p2p.job_messages import JobResult, decode_response, encode_response
from node.storage import StoredReceipt
from node.types import Hash32, ResultReceipt, sha256


def _write_atomically(directory: Path, name: str, data: bytes, *, fsync: bool) -> None:
    # A unique temporary name: two jobs with the same input may be stored at once.
    tmp = directory / f".{name}.{secrets.token_hex(4)}.part"
    with tmp.open("wb") as f:
        f.write(data)
        if fsync:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, directory / name)


class JobBlobs:
    def __init__(self, directory: Path, *, fsync: bool = True) -> None:
        self.directory = directory
        self.fsync = fsync
        directory.mkdir(parents=True, exist_ok=True)

    async def put(self, data: bytes) -> Hash32:
        return await asyncio.to_thread(self.write, data)

    async def get(self, digest: Hash32) -> bytes | None:
        return await asyncio.to_thread(self._read, digest)

    async def require(self, digest: Hash32, what: str) -> bytes:
        data = await self.get(digest)
        if data is None:
            raise JobError(
                f"the {what} with sha256 {digest.hex()} is missing from {self.directory}",
                hint="the node's blob directory was removed; submit the job again",
            )
        return data

    def write(self, data: bytes) -> Hash32:
        """`put` for a caller already off the event loop (`JobStore`'s `before=`)."""
        digest = sha256(data)
        if not (self.directory / digest.hex()).is_file():
            _write_atomically(self.directory, digest.hex(), data, fsync=self.fsync)
        return digest

    def read(self, digest: Hash32) -> bytes | None:
        """`get` for a caller already off the event loop (the blob server's worker thread)."""
        return self._read(digest)

    def _read(self, digest: Hash32) -> bytes | None:
        try:
            data = (self.directory / digest.hex()).read_bytes()
        except FileNotFoundError:
            return None
        # A torn or tampered file must not pass for the blob it is named after.
        return data if sha256(data) == digest else None


class ReceiptFiles:
    """Signed receipts of escrow-paid attempts, by on-chain job id.

    The database keeps receipts next to the job they belong to; an escrow receipt names the
    on-chain job of one attempt, which the client does not store as a job of its own.
    """

    def __init__(self, directory: Path, *, fsync: bool = True) -> None:
        self.directory = directory
        self.fsync = fsync
        directory.mkdir(parents=True, exist_ok=True)

    async def put(self, receipt: ResultReceipt, signature: bytes) -> None:
        data = encode_response(JobResult(receipt, signature, b""))
        await asyncio.to_thread(self._write, receipt.job_id, data)

    async def get(self, onchain_job_id: Hash32) -> StoredReceipt | None:
        found = await asyncio.to_thread(self._read, onchain_job_id)
        if found is None:
            return None
        data, stored_at = found
        try:
            decoded = decode_response(data)
        except GpunodeError:
            return None  # torn by a power cut: as good as missing
        if not isinstance(decoded, JobResult) or decoded.receipt.job_id != onchain_job_id:
            return None
        return StoredReceipt(decoded.receipt, decoded.signature, stored_at)

    def _write(self, job_id: Hash32, data: bytes) -> None:
        _write_atomically(self.directory, job_id.hex(), data, fsync=self.fsync)

    def _read(self, job_id: Hash32) -> tuple[bytes, float] | None:
        path = self.directory / job_id.hex()
        try:
            return path.read_bytes(), path.stat().st_mtime
        except FileNotFoundError:
            return None
