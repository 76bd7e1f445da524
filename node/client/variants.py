"""A model in another precision: the variant providers offer that is made of the same files.

A quantized variant (`int8`) has a model id of its own; adverts list each model with its precision
and the id of the files it is made of (`weights_id`), which a model and its variants share. What an
advert says is a provider's claim: the client keeps a variant only once the variant's manifest
(content-addressed, so it cannot lie about itself) shows the same files as the model asked for and
the precision asked for.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Iterable

from node.discovery.advert import ProviderAdvert
from node.executor.errors import UnknownModel
from node.executor.manifest import ModelManifest
from node.types import Address, Hash32

# The manifest a model id names, fetched from a provider offering it; None when it cannot say.
FetchManifest = Callable[[Hash32, Address], Awaitable[ModelManifest | None]]


def precisions_of(adverts: Iterable[ProviderAdvert], model_id: Hash32) -> set[str]:
    """The precisions providers say they run `model_id` in."""
    return {p.precision for a in adverts for p in a.offer.prices if p.model_id == model_id and p.precision}


def variant_offers(
    adverts: Iterable[ProviderAdvert], weights_id: Hash32, precision: str
) -> list[tuple[Hash32, Address]]:
    """(model id, a provider offering it) of each model said to be made of `weights_id` and to run in
    `precision`, the most offered first."""
    offered: Counter[Hash32] = Counter()
    peers: dict[Hash32, Address] = {}
    for advert in adverts:
        for price in advert.offer.prices:
            if price.weights_id == weights_id and price.precision == precision:
                offered[price.model_id] += 1
                peers.setdefault(price.model_id, advert.address)
    return [(model_id, peers[model_id]) for model_id, _ in offered.most_common()]


async def variant_of(
    adverts: list[ProviderAdvert], model_id: Hash32, precision: str, fetch: FetchManifest
) -> Hash32:
    """The id of the model to run for `model_id` in `precision`; `UnknownModel` saying what is
    offered when no provider offers it so."""
    base = await _manifest_from_any(adverts, model_id, fetch)
    if base is None:
        raise UnknownModel(
            f"no live provider offers model {model_id.hex()}, so no variant of it can be found",
            hint="give the variant's own model id (`gpunode models available`)",
        )
    if base.precision == precision:
        return model_id
    for candidate, peer in variant_offers(adverts, Hash32(bytes.fromhex(base.weights_id)), precision):
        manifest = await fetch(candidate, peer)
        if (
            manifest is not None
            and manifest.weights_id == base.weights_id
            and manifest.precision == precision
        ):
            return candidate
    offered = sorted(precisions_of(adverts, model_id)) or ["not stated"]
    raise UnknownModel(
        f"no live provider offers model {model_id.hex()} in {precision} (offered: {', '.join(offered)})",
        hint="leave the precision out, or wait for a provider offering that variant",
    )


async def _manifest_from_any(
    adverts: list[ProviderAdvert], model_id: Hash32, fetch: FetchManifest
) -> ModelManifest | None:
    for advert in adverts:
        if advert.price_for(model_id) is not None:
            manifest = await fetch(model_id, advert.address)
            if manifest is not None:
                return manifest
    return None
