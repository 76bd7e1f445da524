"""What a model takes, learnt from a provider that serves it, so a client checks a job's input
before it pays: a client's own mistake costs nothing and is never blamed on a provider."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from node.errors import GpunodeError
from node.executor.errors import InvalidInput
from node.executor.hf_requests import parse_request
from node.executor.manifest import ModelManifest, parse_manifest
from node.executor.wire import parse_payload
from node.logging import get_logger
from node.p2p.blob_protocol import fetch_blob
from node.p2p.host import P2PHost
from node.types import Hash32

log = get_logger(__name__)

# A manifest lists a few tensors and files; anything larger is not one.
MAX_MANIFEST_BYTES = 64 * 1024
# Manifests kept; a model id names one manifest forever, so entries never go stale.
CACHE_SIZE = 1024


# This node's own copy of a model's manifest, if it holds the model.
LocalManifest = Callable[[Hash32], ModelManifest | None]


class ModelSpecs:
    def __init__(self, host: P2PHost, *, local: LocalManifest | None = None) -> None:
        self._host = host
        self._local = local
        self._known: dict[Hash32, ModelManifest] = {}

    async def manifest(self, model_id: Hash32, peer: str) -> ModelManifest | None:
        """The manifest `model_id` names: this node's own (a model it runs on a provider that
        fetches it), else `peer`'s; None when neither can say (an older provider, or
        unreachable): then the provider checks the input, as it always does."""
        known = self._known.get(model_id)
        if known is None and self._local is not None:
            known = await asyncio.to_thread(self._local, model_id)
        if known is not None:
            return known
        try:
            data = await fetch_blob(self._host, peer, model_id, max_size=MAX_MANIFEST_BYTES)
            manifest = parse_manifest(data)
        except GpunodeError as exc:
            log.info("model_manifest_unavailable", model_id=model_id.hex(), peer=peer, error=str(exc))
            return None
        if len(self._known) >= CACHE_SIZE:
            self._known.pop(next(iter(self._known)))
        self._known[model_id] = manifest
        return manifest


def check_input(manifest: ModelManifest, data: bytes, *, max_bytes: int) -> None:
    """Raise `InvalidInput` naming what does not fit: tensor names, dtypes, fixed dimensions, or
    for a Hugging Face model the request its task takes (a prompt, texts)."""
    if manifest.hf is not None:
        if len(data) > max_bytes:
            raise InvalidInput(f"the request is {len(data)} bytes, over the limit of {max_bytes}")
        parse_request(manifest, data)
        return
    manifest.check_input(parse_payload(data, max_bytes=max_bytes))
