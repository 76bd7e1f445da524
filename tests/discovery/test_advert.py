"""Advert encoding, signing and the validator's verdicts, each reason on its own."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING

import pytest
from discovery_support import MODEL, offer, register

from node.chain.keys import NodeKey
from node.discovery.advert import (
    MAX_ADVERT_BYTES,
    ProviderAdvert,
    Rejected,
    RejectReason,
    dht_key,
    open_advert,
    sign_advert,
)
from node.discovery.dht_records import AdvertRecordValidator
from node.discovery.directory import Directory
from node.discovery.registry_view import CachedRegistryView
from node.discovery.validation import AdvertValidator
from node.errors import DiscoveryError
from node.p2p.identity import peer_id_from
from node.types import FetchTerms, sha256

if TYPE_CHECKING:
    from discovery_support import Chain


def advert_of(key: NodeKey, *, sequence: int = 1, ttl_ms: int = 60_000, **changes: object) -> ProviderAdvert:
    now = int(time.time() * 1000)
    advert = ProviderAdvert(
        address=key.address,
        peer_id=str(peer_id_from(key)),
        listen_addrs=("/ip4/127.0.0.1/tcp/4001",),
        offer=offer(),
        sequence=sequence,
        issued_at_ms=now,
        expires_at_ms=now + ttl_ms,
    )
    return replace(advert, **changes)  # type: ignore[arg-type]


def test_can_sign_and_open_an_advert() -> None:
    key = NodeKey.generate()
    advert = advert_of(key)
    opened = open_advert(sign_advert(advert, key.private_key))
    assert opened == advert
    assert isinstance(opened, ProviderAdvert)
    assert opened.price_for(MODEL) == 10**15


def test_can_advertise_terms_for_models_fetched_over_the_overlay() -> None:
    key = NodeKey.generate()
    terms = FetchTerms(max_bytes=2**30, price_per_job_wei=10**15, cold_start_price_wei=10**16)
    advert = advert_of(key, offer=replace(offer(), fetch=terms))
    opened = open_advert(sign_advert(advert, key.private_key))
    assert isinstance(opened, ProviderAdvert)
    assert opened.offer.fetch == terms
    other = sha256(b"a model this provider does not hold")
    assert opened.cost_for(MODEL) == 10**15  # held: its listed price, no cold start
    assert opened.cost_for(other) == 10**15 + 10**16
    assert advert_of(key).cost_for(other) is None  # no terms: not taken at all


def test_cannot_open_an_advert_signed_by_someone_else() -> None:
    key, other = NodeKey.generate(), NodeKey.generate()
    opened = open_advert(sign_advert(advert_of(key), other.private_key))
    assert isinstance(opened, Rejected)
    assert opened.reason is RejectReason.BAD_SIGNATURE


def test_cannot_open_garbage_or_oversize() -> None:
    assert open_advert(b"\xff\x00garbage") == Rejected(
        RejectReason.MALFORMED, open_advert(b"\xff\x00garbage").detail
    )  # type: ignore[union-attr]
    big = open_advert(b"\x00" * (MAX_ADVERT_BYTES + 1))
    assert isinstance(big, Rejected)
    assert big.reason is RejectReason.OVERSIZE


async def test_validator_gives_each_reason(chain: Chain) -> None:
    honest, stranger = chain.keys[1], chain.keys[2]
    await register(chain, honest)
    validator = AdvertValidator(chain.registry, rate_per_s=0.0, rate_burst=100)
    source = str(peer_id_from(honest))

    accepted = await validator.check(source, sign_advert(advert_of(honest, sequence=5), honest.private_key))
    assert isinstance(accepted, ProviderAdvert)

    async def reason(signed: bytes, sender: str = source) -> RejectReason:
        result = await validator.check(sender, signed)
        assert isinstance(result, Rejected), result
        return result.reason

    assert (
        await reason(sign_advert(advert_of(honest, sequence=5), honest.private_key)) is RejectReason.REPLAYED
    )
    assert (
        await reason(sign_advert(advert_of(honest, sequence=4), honest.private_key)) is RejectReason.REPLAYED
    )
    assert (
        await reason(sign_advert(advert_of(honest, sequence=6, ttl_ms=-1), honest.private_key))
        is RejectReason.EXPIRED
    )
    assert (
        await reason(sign_advert(advert_of(honest, sequence=6, ttl_ms=10**9), honest.private_key))
        is RejectReason.TOO_FAR_AHEAD
    )
    forwarded = sign_advert(advert_of(honest, sequence=7), honest.private_key)
    assert await reason(forwarded, str(peer_id_from(stranger))) is RejectReason.PEER_MISMATCH
    unregistered = sign_advert(advert_of(stranger), stranger.private_key)
    assert await reason(unregistered, str(peer_id_from(stranger))) is RejectReason.NOT_REGISTERED
    assert validator.accepted == 1
    assert sum(validator.rejected.values()) == 6


async def test_unstaked_provider_is_rejected(chain: Chain) -> None:
    key = chain.keys[3]
    await register(chain, key)
    validator = AdvertValidator(chain.registry)
    source = str(peer_id_from(key))
    assert isinstance(
        await validator.check(source, sign_advert(advert_of(key), key.private_key)), ProviderAdvert
    )
    await chain.registry.request_unstake(sender=key.account)
    result = await validator.check(source, sign_advert(advert_of(key, sequence=2), key.private_key))
    assert result == Rejected(RejectReason.NOT_REGISTERED, f"{key.address} is not an active provider")


async def test_flood_from_one_peer_is_rate_limited(chain: Chain) -> None:
    key = chain.keys[4]
    await register(chain, key)
    validator = AdvertValidator(chain.registry, rate_per_s=0.0, rate_burst=3)
    source = str(peer_id_from(key))
    results = [
        await validator.check(source, sign_advert(advert_of(key, sequence=s), key.private_key))
        for s in range(1, 11)
    ]
    assert sum(isinstance(r, ProviderAdvert) for r in results) == 3
    assert validator.rejected[RejectReason.RATE_LIMITED] == 7


async def test_registry_cache_saves_chain_calls(chain: Chain) -> None:
    key = chain.keys[5]
    await register(chain, key)
    cached = CachedRegistryView(chain.registry)
    assert all([await cached.is_active(key.address) for _ in range(10)])
    assert cached.lookups == 1


def test_dht_record_validator_checks_key_and_prefers_newest() -> None:
    key = NodeKey.generate()
    validator = AdvertRecordValidator()
    old = sign_advert(advert_of(key, sequence=1), key.private_key)
    new = sign_advert(advert_of(key, sequence=2), key.private_key)
    validator.validate(dht_key(key.address), new)
    assert validator.select("k", [old, new, b"junk"]) == 1
    with pytest.raises(DiscoveryError, match="wrong key"):
        validator.validate(dht_key("0x0000000000000000000000000000000000000001"), new)
    with pytest.raises(DiscoveryError, match="invalid advert record"):
        validator.validate(dht_key(key.address), b"junk")


def test_dht_key_fits_what_py_libp2p_peers_route() -> None:
    key = dht_key(NodeKey.generate().address)
    assert key.startswith("/gpunode/provider/")
    assert 2 <= len(key.encode()) <= 50
    with pytest.raises(DiscoveryError, match="not an Ethereum address"):
        dht_key("0x1234")


async def test_directory_filters_and_expires() -> None:
    now = [1000.0]
    directory = Directory(clock=lambda: now[0])
    cheap, dear = NodeKey.generate(), NodeKey.generate()
    base = int(now[0] * 1000)

    def make(key: NodeKey, price: int, ttl_ms: int) -> ProviderAdvert:
        return replace(
            advert_of(key), offer=offer(price=price), issued_at_ms=base, expires_at_ms=base + ttl_ms
        )

    assert directory.upsert(make(dear, 10**16, 5000))
    assert directory.upsert(make(cheap, 10**14, 1000))
    assert [a.address for a in directory.find(model_id=MODEL)] == [cheap.address, dear.address]
    assert [a.address for a in directory.find(model_id=MODEL, max_price_wei=10**15)] == [cheap.address]
    assert directory.find(model_id=sha256(b"other model")) == []
    now[0] += 2.0
    assert directory.expire() == [cheap.address]
    assert [a.address for a in directory.live()] == [dear.address]


async def test_quick_check_decides_only_from_the_cache(chain: Chain) -> None:
    key = chain.keys[6]
    await register(chain, key)
    registry = CachedRegistryView(chain.registry)
    validator = AdvertValidator(registry)
    source = str(peer_id_from(key))
    first = sign_advert(advert_of(key, sequence=1), key.private_key)
    assert validator.check_now(source, first) is None  # unknown provider: the chain must answer
    assert isinstance(await validator.check(source, first), ProviderAdvert)
    second = sign_advert(advert_of(key, sequence=2), key.private_key)
    assert isinstance(validator.check_now(source, second), ProviderAdvert)
    assert validator.check_now(source, first) == await validator.check(source, first)  # a duplicate
    older = sign_advert(advert_of(key, sequence=1, ttl_ms=30_000), key.private_key)
    replayed = validator.check_now(source, older)
    assert isinstance(replayed, Rejected)
    assert replayed.reason is RejectReason.REPLAYED
    assert registry.lookups == 1
