"""Receiving a model upload: one header, then the files' bytes, each checked against its size and sha256.

The header is checked in full before a byte is written, so an upload over the size limit or with a
malformed manifest is refused at once. Files land in a private directory under the node's home;
the caller installs from there and removes it whatever happens, so a refused upload leaves nothing.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pydantic import ValidationError

from node.api.errors import InvalidRequest, UploadCorrupt, UploadTooLarge
from node.domain.service import ModelUpload
from node.executor.manifest import MANIFEST_FILE, TensorSpec, parse_manifest
from node.gen.gpunode.v1 import api_pb2 as pb

_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
MAX_FILES = 64


@dataclass(frozen=True, slots=True)
class ReceivedModel:
    """A checked upload on disk: `source` is a model directory, or a program file with `upload`."""

    source: Path
    upload: ModelUpload | None


@dataclass(frozen=True, slots=True)
class _Expected:
    name: str
    size: int
    sha256: str


@asynccontextmanager
async def received_model(
    requests: AsyncIterator[pb.UploadModelRequest], *, staging_root: Path, max_bytes: int
) -> AsyncIterator[ReceivedModel]:
    """Receive and check an upload; the files exist only inside the `async with` block."""
    directory = _new_upload_dir(staging_root)
    try:
        header = await _first_header(requests)
        expected = _check_files(header, max_bytes)
        received = _plan(header, expected, directory)
        await _receive_files(requests, expected, directory)
        yield received
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _new_upload_dir(staging_root: Path) -> Path:
    staging_root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="upload-", dir=staging_root))


async def _first_header(requests: AsyncIterator[pb.UploadModelRequest]) -> pb.UploadModelHeader:
    async for request in requests:
        if request.WhichOneof("part") != "header":
            break
        return request.header
    raise InvalidRequest(
        "a model upload must start with its header", hint="send the header (manifest and file list) first"
    )


def _check_files(header: pb.UploadModelHeader, max_bytes: int) -> list[_Expected]:
    if not header.files:
        raise InvalidRequest("the upload lists no files", hint="list every file of the model in the header")
    if len(header.files) > MAX_FILES:
        raise InvalidRequest(f"the upload lists {len(header.files)} files; a model has at most {MAX_FILES}")
    names = [f.name for f in header.files]
    if len(set(names)) != len(names):
        raise InvalidRequest("the upload lists a file twice", hint=f"files: {', '.join(names)}")
    for f in header.files:
        if not _FILE_NAME.match(f.name) or f.name == MANIFEST_FILE:
            raise InvalidRequest(
                f"file name {f.name!r} is not allowed", hint="use a plain name: letters, digits, . _ -"
            )
        if not _SHA256.match(f.sha256):
            raise InvalidRequest(f"file {f.name}: sha256 {f.sha256!r} is not 64 lowercase hex digits")
    total = sum(f.size for f in header.files)
    if total > max_bytes:
        raise UploadTooLarge(
            f"the model is {total} bytes, more than the {max_bytes} this node accepts",
            hint="raise api.max_upload_bytes in the node's settings, or upload a smaller model",
        )
    return [_Expected(f.name, f.size, f.sha256) for f in header.files]


def _plan(header: pb.UploadModelHeader, expected: list[_Expected], directory: Path) -> ReceivedModel:
    kind = header.WhichOneof("kind")
    if kind == "manifest":
        manifest = parse_manifest(header.manifest)
        declared = {f.name: f.sha256 for f in expected}
        if declared != manifest.files:
            raise InvalidRequest(
                "the uploaded files do not match the manifest",
                hint=f"the manifest pins {sorted(manifest.files)}; send exactly those, with those sha256",
            )
        (directory / MANIFEST_FILE).write_bytes(header.manifest)
        return ReceivedModel(source=directory, upload=None)
    if kind == "program":
        if len(expected) != 1:
            raise InvalidRequest("a torch.export program is uploaded as exactly one file")
        return ReceivedModel(source=directory / expected[0].name, upload=_model_upload(header.program))
    raise InvalidRequest(
        "the upload header carries neither a manifest nor a program description",
        hint="upload a model directory (with manifest.json) or a .pt2 program with its input specs",
    )


def _model_upload(program: pb.ProgramSpec) -> ModelUpload:
    # Inputs and outputs left out are read from the program itself by the store.
    try:
        inputs = tuple(
            TensorSpec(name=t.name, dtype=t.dtype, shape=tuple(None if d < 0 else d for d in t.shape))
            for t in program.inputs
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        raise InvalidRequest(
            f"input spec is invalid: {first['msg']} at {'.'.join(str(p) for p in first['loc'])}"
        ) from exc
    return ModelUpload(
        name=program.name,
        inputs=inputs,
        outputs=tuple(program.outputs),
        batchable=program.batchable,
    )


async def _receive_files(
    requests: AsyncIterator[pb.UploadModelRequest], expected: list[_Expected], directory: Path
) -> None:
    pending = iter(expected)
    current = next(pending, None)
    sink = _FileSink(directory, current) if current else None
    async for request in requests:
        if request.WhichOneof("part") != "chunk":
            raise InvalidRequest("the upload sent a second header", hint="send one header, then only chunks")
        chunk = request.chunk
        while chunk:
            if sink is None:
                raise UploadCorrupt("the upload sent more bytes than its files declare")
            chunk = sink.write(chunk)
            if sink.full:
                sink.finish()
                current = next(pending, None)
                sink = _FileSink(directory, current) if current else None
    # Files of zero bytes after the last chunk are complete without any data.
    while sink is not None and sink.full:
        sink.finish()
        current = next(pending, None)
        sink = _FileSink(directory, current) if current else None
    if sink is not None:
        sink.abandon()
        raise UploadCorrupt(
            f"the upload ended after {sink.received} of the {sink.expected.size} bytes "
            f"of {sink.expected.name}",
            hint="the connection may have dropped; upload again",
        )


class _FileSink:
    """One file being received: bytes are written and hashed as they come."""

    def __init__(self, directory: Path, expected: _Expected) -> None:
        self.expected = expected
        self.received = 0
        self._digest = hashlib.sha256()
        self._file: BinaryIO = (directory / expected.name).open("wb")

    @property
    def full(self) -> bool:
        return self.received == self.expected.size

    def write(self, chunk: bytes) -> bytes:
        """Take what fits this file; return the rest (which belongs to the next file)."""
        room = self.expected.size - self.received
        taken, rest = chunk[:room], chunk[room:]
        self._file.write(taken)
        self._digest.update(taken)
        self.received += len(taken)
        return rest

    def finish(self) -> None:
        self._file.close()
        got = self._digest.hexdigest()
        if got != self.expected.sha256:
            raise UploadCorrupt(
                f"file {self.expected.name} has sha256 {got}, "
                f"not the {self.expected.sha256} its header declared",
                hint="the file changed or was damaged in transit; upload again",
            )

    def abandon(self) -> None:
        self._file.close()
