"""Models a job names that this provider does not hold: fetched over `/gpunode/blob/1` from the
job's client (or a peer that has them), checked, installed and warmed before the job runs.

The model id is the sha256 of the manifest, and the manifest pins every file's sha256: the
manifest is fetched by the id, each file by its hash, and nothing that does not hash right is
kept. The files then pass the checks `gpunode models add` runs (safetensors only, allowed
architectures, no remote code, the pickle scan) when the store installs them. Jobs for a model
being fetched wait on the one fetch under way.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from node.errors import ModelStoreError, P2PError
from node.executor.files import sha256_file
from node.executor.manifest import ModelManifest, parse_manifest
from node.executor.store import ModelStore
from node.logging import get_logger
from node.p2p.blob_protocol import fetch_blob, fetch_blob_to_file
from node.p2p.errors import BlobTooLarge
from node.p2p.host import P2PHost
from node.types import Hash32

log = get_logger(__name__)

# A manifest lists a few files; anything larger is not one.
MAX_MANIFEST_BYTES = 64 * 1024

# Called with a model id once it is installed: warms it and offers it (advert, price).
OfferModel = Callable[[str], Awaitable[None]]
# Peers (other than the job's client) that may hold a model.
Holders = Callable[[Hash32], Iterable[str]]


class ModelFetchFailed(ModelStoreError):
    """A model a job named could not be fetched, or its files failed a check: the fault of where
    it came from, never of this provider."""


@dataclass(frozen=True, slots=True)
class ColdStart:
    """Where a fetched model's cold start went, in seconds."""

    model_id: str
    size_bytes: int
    fetch_s: float
    verify_s: float
    install_s: float
    warm_s: float


class ModelFetcher:
    def __init__(
        self,
        host: P2PHost,
        store: ModelStore,
        *,
        max_bytes: int,
        offer: OfferModel,
        holders: Holders = lambda _model_id: (),
        max_models: int = 4,
    ) -> None:
        self.host = host
        self.store = store
        self.max_bytes = max_bytes
        # Each fetched model keeps a warm worker: at most this many are fetched in one run.
        self.max_models = max_models
        self._fetched: set[Hash32] = set()
        self._offer = offer
        self._holders = holders
        self._fetching: dict[Hash32, asyncio.Future[ColdStart]] = {}
        self.cold_starts: list[ColdStart] = []

    def takes(self, model_id: Hash32) -> bool:
        """Whether a job for `model_id` may start (or share) a fetch: fewer than `max_models`
        models fetched or being fetched in this run, or this one among them."""
        started = self._fetched | set(self._fetching)
        return model_id in started or len(started) < self.max_models

    @property
    def full(self) -> bool:
        """No other model will be fetched in this run (adverts stop offering to)."""
        return len(self._fetched) >= self.max_models

    async def ensure(self, model_id: Hash32, client: str | None) -> ColdStart:
        """Fetch, check, install and warm `model_id` (once for all the jobs that ask meanwhile),
        from `client` first when its peer is known, then from the peers that hold it;
        `ModelFetchFailed` says why it cannot run here."""
        running = self._fetching.get(model_id)
        if running is None:
            running = asyncio.ensure_future(self._cold_start(model_id, client))
            self._fetching[model_id] = running
            running.add_done_callback(lambda _: self._fetching.pop(model_id, None))
        return await asyncio.shield(running)

    async def _cold_start(self, model_id: Hash32, client: str | None) -> ColdStart:
        started = time.perf_counter()
        key = model_id.hex()
        if await asyncio.to_thread(self._installed, key):
            fetched: tuple[float, float, float, int] = (0.0, 0.0, 0.0, 0)
        else:
            fetched = await self._fetch_and_install(model_id, client)
        self._fetched.add(model_id)
        warm_started = time.perf_counter()
        await self._offer(key)
        fetch_s, verify_s, install_s, size = fetched
        done = ColdStart(key, size, fetch_s, verify_s, install_s, time.perf_counter() - warm_started)
        self.cold_starts.append(done)
        log.info(
            "model_fetched",
            model_id=key,
            size_bytes=size,
            total_s=round(time.perf_counter() - started, 3),
            fetch_s=round(fetch_s, 3),
            verify_s=round(verify_s, 3),
            install_s=round(install_s, 3),
            warm_s=round(done.warm_s, 3),
        )
        return done

    def _installed(self, key: str) -> bool:
        try:
            self.store.path(key)
        except ModelStoreError:
            return False
        return True

    async def _fetch_and_install(
        self, model_id: Hash32, client: str | None
    ) -> tuple[float, float, float, int]:
        first = [] if client is None else [client]
        sources = [*first, *(p for p in self._holders(model_id) if p != client)]
        problems: list[str] = []
        with tempfile.TemporaryDirectory(dir=self.store.root, prefix=".fetch-") as tmp:
            for peer in sources:
                started = time.perf_counter()
                try:
                    manifest, size = await self._fetch_files(model_id, peer, Path(tmp))
                except ModelFetchFailed:
                    raise  # the model itself is refused: no peer can make it acceptable
                except P2PError as exc:
                    problems.append(f"{peer}: {exc.message}")
                    log.info(
                        "model_fetch_from_peer_failed", model_id=model_id.hex(), peer=peer, error=str(exc)
                    )
                    continue
                fetch_s = time.perf_counter() - started
                files = {name: Path(tmp) / name for name in manifest.files}
                verify_s = await asyncio.to_thread(_verify, manifest, files)
                install_s = await asyncio.to_thread(self._install, manifest, files)
                return fetch_s, verify_s, install_s, size
        raise ModelFetchFailed(
            f"model {model_id.hex()} could not be fetched from any peer that might hold it "
            f"({'; '.join(problems) or 'none known'})",
            hint="keep the model installed on the submitting node (`gpunode models add`) while its jobs run",
        )

    async def _fetch_files(self, model_id: Hash32, peer: str, into: Path) -> tuple[ModelManifest, int]:
        raw = await fetch_blob(self.host, peer, model_id, max_size=MAX_MANIFEST_BYTES)
        try:
            manifest = parse_manifest(raw)
        except ModelStoreError as exc:
            raise ModelFetchFailed(f"model {model_id.hex()}: {exc.message}") from exc
        if manifest.model_id != model_id.hex():  # the bytes hash to the id: this cannot differ
            raise ModelFetchFailed(f"the manifest fetched for model {model_id.hex()} is not canonical")
        left = self.max_bytes
        for name, digest in sorted(manifest.files.items()):
            blob = Hash32(bytes.fromhex(digest))
            try:
                left -= await fetch_blob_to_file(self.host, peer, blob, into / name, max_size=left)
            except BlobTooLarge as exc:
                raise self._too_large(manifest) from exc
        return manifest, self.max_bytes - left

    def _too_large(self, manifest: ModelManifest) -> ModelFetchFailed:
        return ModelFetchFailed(
            f"model {manifest.name} ({manifest.model_id}) is larger than the {self.max_bytes} bytes "
            "this provider fetches",
            hint="choose a provider that advertises a larger fetch limit",
        )

    def _install(self, manifest: ModelManifest, files: dict[str, Path]) -> float:
        started = time.perf_counter()
        try:
            self.store.install(manifest, files)
        except ModelStoreError as exc:
            raise ModelFetchFailed(
                f"model {manifest.name} ({manifest.model_id}) is refused: {exc.message}", hint=exc.hint
            ) from exc
        return time.perf_counter() - started


def _verify(manifest: ModelManifest, files: dict[str, Path]) -> float:
    """Each file written to disk hashes to what the manifest pins (every chunk was checked on the
    way in; this checks what landed on disk)."""
    started = time.perf_counter()
    for name, path in files.items():
        if sha256_file(path) != manifest.files[name]:
            raise ModelFetchFailed(f"model {manifest.name}: {name} changed on disk after it was fetched")
    return time.perf_counter() - started
