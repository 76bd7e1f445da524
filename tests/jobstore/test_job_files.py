"""Job inputs, outputs and escrow receipts on disk: content-addressed, written whole, and a file
torn by a power cut (written without fsync) reads as missing, never as something else."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.chain.keys import NodeKey
from node.errors import JobError
from node.jobstore.blobs import JobBlobs, ReceiptFiles
from node.types import Address, Hash32, ResultReceipt, sha256


@pytest.mark.parametrize("fsync", [True, False])
async def test_can_store_and_read_a_blob_by_its_hash(tmp_path: Path, fsync: bool) -> None:
    blobs = JobBlobs(tmp_path / "blobs", fsync=fsync)
    data = b"\x01" * 100_000
    digest = await blobs.put(data)
    assert digest == sha256(data)
    assert await blobs.put(data) == digest  # stored once
    assert await blobs.get(digest) == data
    assert await blobs.require(digest, "input") == data
    assert [p.name for p in (tmp_path / "blobs").iterdir()] == [digest.hex()]  # no temporary left


async def test_cannot_read_a_torn_or_missing_blob(tmp_path: Path) -> None:
    blobs = JobBlobs(tmp_path / "blobs", fsync=False)
    digest = await blobs.put(b"the whole input")
    (tmp_path / "blobs" / digest.hex()).write_bytes(b"the whole")  # what a power cut may leave
    assert await blobs.get(digest) is None
    with pytest.raises(JobError, match="missing") as caught:
        await blobs.require(digest, "input")
    assert "submit the job again" in (caught.value.hint or "")
    assert await blobs.get(Hash32(b"\x00" * 32)) is None


@pytest.mark.parametrize("fsync", [True, False])
async def test_can_store_a_receipt_and_cannot_read_a_torn_one(tmp_path: Path, fsync: bool) -> None:
    files = ReceiptFiles(tmp_path / "receipts", fsync=fsync)
    provider = NodeKey.generate()
    receipt = ResultReceipt(
        job_id=Hash32(b"\x07" * 32),
        model_id=sha256(b"model"),
        input_hash=sha256(b"input"),
        output_hash=sha256(b"output"),
        profile_hash=sha256(b"profile"),
        provider=Address(provider.address),
    )
    await files.put(receipt, b"\x05" * 65)
    stored = await files.get(receipt.job_id)
    assert stored is not None
    assert (stored.receipt, stored.signature) == (receipt, b"\x05" * 65)
    (tmp_path / "receipts" / receipt.job_id.hex()).write_bytes(b"\x0a\xff\xff")
    assert await files.get(receipt.job_id) is None
