"""Receiving a model upload: sizes and sha256 checked, limits enforced, nothing left behind on refusal."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import pytest

from node.api.errors import InvalidRequest, UploadCorrupt, UploadTooLarge
from node.api.upload import received_model
from node.errors import ModelStoreError
from node.executor.manifest import MANIFEST_FILE, ModelManifest, TensorSpec, parse_manifest
from node.executor.store import ModelStore
from node.gen.gpunode.v1 import api_pb2 as pb


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real built-in model (manifest + safetensors weights), written by the executor's generator."""
    out = tmp_path_factory.mktemp("mlp")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "node.executor.builtin_models",
            "mlp",
            "--out",
            str(out),
            "--set",
            "hidden=32",
        ],
        check=True,
        capture_output=True,
    )
    return out


def _header(model_dir: Path) -> pb.UploadModelHeader:
    manifest = (model_dir / MANIFEST_FILE).read_bytes()
    files = []
    for name in parse_manifest(manifest).files:
        data = (model_dir / name).read_bytes()
        files.append(pb.UploadedFile(name=name, size=len(data), sha256=hashlib.sha256(data).hexdigest()))
    return pb.UploadModelHeader(manifest=manifest, files=files)


def _payload(model_dir: Path) -> bytes:
    return b"".join(
        (model_dir / name).read_bytes()
        for name in parse_manifest((model_dir / MANIFEST_FILE).read_bytes()).files
    )


class Stream:
    """The request stream a client sends, remembering how much of it the server read."""

    def __init__(self, header: pb.UploadModelHeader | None, chunks: Iterable[bytes]) -> None:
        self.messages = ([pb.UploadModelRequest(header=header)] if header else []) + [
            pb.UploadModelRequest(chunk=c) for c in chunks
        ]
        self.read = 0

    async def __aiter__(self) -> AsyncIterator[pb.UploadModelRequest]:
        for message in self.messages:
            self.read += 1
            yield message


def _split(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


async def test_can_receive_a_model_directory_and_install_it(model_dir: Path, tmp_path: Path) -> None:
    stream = Stream(_header(model_dir), _split(_payload(model_dir), 1000))
    store = ModelStore(tmp_path / "store", 2**30)
    async with received_model(stream.__aiter__(), staging_root=tmp_path / "uploads", max_bytes=2**30) as got:
        assert got.upload is None
        manifest = store.import_dir(got.source)
    assert manifest.model_id == parse_manifest((model_dir / MANIFEST_FILE).read_bytes()).model_id
    assert store.verify(manifest.model_id) == manifest
    assert list((tmp_path / "uploads").iterdir()) == []


async def test_cannot_upload_files_the_manifest_does_not_pin(model_dir: Path, tmp_path: Path) -> None:
    header = _header(model_dir)
    header.files.add(name="empty.bin", size=0, sha256=hashlib.sha256(b"").hexdigest())
    stream = Stream(header, [_payload(model_dir)])
    with pytest.raises(InvalidRequest, match="do not match the manifest"):
        async with received_model(stream.__aiter__(), staging_root=tmp_path, max_bytes=2**30):
            pass
    assert stream.read == 1


async def test_cannot_upload_more_than_the_limit(model_dir: Path, tmp_path: Path) -> None:
    payload = _payload(model_dir)
    stream = Stream(_header(model_dir), _split(payload, 1000))
    with pytest.raises(UploadTooLarge, match=f"the model is {len(payload)} bytes") as caught:
        async with received_model(
            stream.__aiter__(), staging_root=tmp_path / "up", max_bytes=len(payload) - 1
        ):
            pass
    assert "api.max_upload_bytes" in (caught.value.hint or "")
    assert stream.read == 1, "refused from the header alone, before any chunk was read"
    assert list((tmp_path / "up").iterdir()) == []


async def test_cannot_upload_a_file_that_does_not_match_its_sha256(model_dir: Path, tmp_path: Path) -> None:
    payload = bytearray(_payload(model_dir))
    payload[-1] ^= 0xFF
    stream = Stream(_header(model_dir), _split(bytes(payload), 4096))
    with pytest.raises(UploadCorrupt, match="has sha256"):
        async with received_model(stream.__aiter__(), staging_root=tmp_path / "up", max_bytes=2**30):
            pass
    assert list((tmp_path / "up").iterdir()) == []


async def test_cannot_upload_a_truncated_or_overlong_stream(model_dir: Path, tmp_path: Path) -> None:
    payload = _payload(model_dir)
    short = Stream(_header(model_dir), [payload[:-10]])
    with pytest.raises(UploadCorrupt, match=f"ended after {len(payload) - 10} of the {len(payload)} bytes"):
        async with received_model(short.__aiter__(), staging_root=tmp_path, max_bytes=2**30):
            pass
    long = Stream(_header(model_dir), [payload, b"extra"])
    with pytest.raises(UploadCorrupt, match="more bytes than its files declare"):
        async with received_model(long.__aiter__(), staging_root=tmp_path, max_bytes=2**30):
            pass


async def test_cannot_start_an_upload_without_a_header_or_send_two(model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="must start with its header"):
        async with received_model(
            Stream(None, [b"data"]).__aiter__(), staging_root=tmp_path, max_bytes=2**30
        ):
            pass
    stream = Stream(_header(model_dir), [])
    stream.messages.append(pb.UploadModelRequest(header=_header(model_dir)))
    with pytest.raises(InvalidRequest, match="second header"):
        async with received_model(stream.__aiter__(), staging_root=tmp_path, max_bytes=2**30):
            pass


@pytest.mark.parametrize("name", ["../escape", "manifest.json", ".hidden", "a/b"])
async def test_cannot_name_a_file_outside_the_model(name: str, tmp_path: Path) -> None:
    header = pb.UploadModelHeader(
        manifest=b"{}", files=[pb.UploadedFile(name=name, size=1, sha256=hashlib.sha256(b"x").hexdigest())]
    )
    with pytest.raises(InvalidRequest, match="is not allowed"):
        async with received_model(Stream(header, [b"x"]).__aiter__(), staging_root=tmp_path, max_bytes=10):
            pass


async def test_cannot_upload_a_malformed_manifest(tmp_path: Path) -> None:
    header = pb.UploadModelHeader(
        manifest=b'{"name": "x"}',
        files=[pb.UploadedFile(name="w.bin", size=1, sha256=hashlib.sha256(b"x").hexdigest())],
    )
    with pytest.raises(ModelStoreError, match="manifest is invalid"):
        async with received_model(Stream(header, [b"x"]).__aiter__(), staging_root=tmp_path, max_bytes=10):
            pass


async def test_can_receive_a_program_with_its_input_specs(tmp_path: Path) -> None:
    program = b"PK\x03\x04 not checked here; the store checks the archive"
    header = pb.UploadModelHeader(
        program=pb.ProgramSpec(
            name="tiny", inputs=[pb.TensorSpec(name="input", dtype="F32", shape=[-1, 8])], batchable=True
        ),
        files=[
            pb.UploadedFile(name="tiny.pt2", size=len(program), sha256=hashlib.sha256(program).hexdigest())
        ],
    )
    async with received_model(
        Stream(header, [program]).__aiter__(), staging_root=tmp_path, max_bytes=2**20
    ) as got:
        assert got.source.read_bytes() == program
        assert got.upload is not None
        # Outputs left out are named by the store from the program (`output` for one).
        assert (got.upload.name, got.upload.outputs, got.upload.batchable) == ("tiny", (), True)
        assert got.upload.inputs[0].shape == (None, 8)


async def test_cannot_upload_a_program_with_a_bad_input_spec(tmp_path: Path) -> None:
    header = pb.UploadModelHeader(
        program=pb.ProgramSpec(name="tiny", inputs=[pb.TensorSpec(name="input", dtype="F33", shape=[8])]),
        files=[pb.UploadedFile(name="tiny.pt2", size=1, sha256=hashlib.sha256(b"x").hexdigest())],
    )
    with pytest.raises(InvalidRequest, match="input spec is invalid"):
        async with received_model(Stream(header, [b"x"]).__aiter__(), staging_root=tmp_path, max_bytes=10):
            pass


async def test_can_receive_chunks_that_span_files(tmp_path: Path) -> None:
    parts = {"a.bin": b"first file", "b.bin": b"", "c.bin": b"third"}
    manifest = ModelManifest(
        name="three",
        format="builtin",
        architecture="mlp",
        files={name: hashlib.sha256(data).hexdigest() for name, data in parts.items()},
        inputs=(TensorSpec(name="input", dtype="F32", shape=(None, 4)),),
        outputs=("output",),
    )
    header = pb.UploadModelHeader(
        manifest=manifest.canonical_bytes(),
        files=[
            pb.UploadedFile(name=n, size=len(d), sha256=hashlib.sha256(d).hexdigest())
            for n, d in parts.items()
        ],
    )
    joined = b"".join(parts.values())
    stream = Stream(header, [joined[:7], joined[7:]])
    async with received_model(stream.__aiter__(), staging_root=tmp_path, max_bytes=100) as got:
        assert {p.name: p.read_bytes() for p in got.source.iterdir() if p.name != MANIFEST_FILE} == parts
