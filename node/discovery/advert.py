"""Provider adverts: typed values, their protobuf encoding, signing and verification (pure).

An advert travels as a SignedAdvert: the serialized ProviderAdvert plus a recoverable
secp256k1 signature over keccak256(ADVERT_DOMAIN || advert bytes). Signing the exact bytes that
travel means no canonical re-encoding is needed to verify, in any language.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

import base58
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from google.protobuf.message import DecodeError

from node.chain.eip712 import recover_digest_signer, sign_digest
from node.errors import DiscoveryError, P2PError, SignatureError
from node.gen.gpunode.v1 import advert_pb2
from node.p2p.identity import peer_id_from_bytes, peer_id_to_bytes
from node.types import Address, FetchTerms, Hash32

ADVERT_DOMAIN = b"gpunode/advert/1"
# A provider with 8 GPUs, 100 priced models and benchmarks stays well below this; anything
# larger is an attempt to make every node on the overlay relay garbage.
MAX_ADVERT_BYTES = 16 * 1024


class DeviceKind(StrEnum):
    CPU = "cpu"
    CUDA = "cuda"


@dataclass(frozen=True, slots=True)
class Device:
    kind: DeviceKind
    model: str
    memory_bytes: int
    compute_capability: str = ""


@dataclass(frozen=True, slots=True)
class ModelPrice:
    model_id: Hash32
    price_per_job_wei: int
    price_per_unit_wei: int = 0
    unit: str = ""


@dataclass(frozen=True, slots=True)
class Benchmark:
    model_id: Hash32
    device_index: int
    throughput_per_s: float
    latency_p50_ms: float


@dataclass(frozen=True, slots=True)
class Offer:
    """What a provider offers right now: the part of an advert that it decides."""

    devices: tuple[Device, ...] = ()
    warm_models: tuple[Hash32, ...] = ()
    prices: tuple[ModelPrice, ...] = ()
    free_slots: int = 0
    benchmarks: tuple[Benchmark, ...] = ()
    # Jobs admitted and waiting for a slot (free_slots is 0 then).
    queued: int = 0
    # Models it fetches over the overlay when a job names one it does not hold; None: it does not.
    fetch: FetchTerms | None = None


@dataclass(frozen=True, slots=True)
class ProviderAdvert:
    address: Address
    peer_id: str
    listen_addrs: tuple[str, ...]
    offer: Offer
    sequence: int
    issued_at_ms: int
    expires_at_ms: int
    # The signed bytes as they travelled, so the advert can be relayed or stored unchanged.
    signed: bytes = field(default=b"", compare=False, repr=False)

    def price_for(self, model_id: Hash32) -> int | None:
        """Price per job in wei for `model_id`, or None when the provider does not serve it."""
        for price in self.offer.prices:
            if price.model_id == model_id:
                return price.price_per_job_wei
        return None

    def cost_for(self, model_id: Hash32) -> int | None:
        """What a job for `model_id` costs here: its listed price, or the price of a first job
        for a model fetched over the overlay (cold start included); None when it takes neither."""
        listed = self.price_for(model_id)
        if listed is not None:
            return listed
        return None if self.offer.fetch is None else self.offer.fetch.first_job_wei

    def is_expired(self, now_ms: int) -> bool:
        return now_ms >= self.expires_at_ms


class RejectReason(StrEnum):
    """Why an advert was dropped; each has its own counter."""

    OVERSIZE = "oversize"
    MALFORMED = "malformed"
    BAD_SIGNATURE = "bad_signature"
    PEER_MISMATCH = "peer_mismatch"
    EXPIRED = "expired"
    TOO_FAR_AHEAD = "too_far_ahead"
    REPLAYED = "replayed"
    RATE_LIMITED = "rate_limited"
    NOT_REGISTERED = "not_registered"
    REGISTRY_UNAVAILABLE = "registry_unavailable"


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: RejectReason
    detail: str = ""


# encoding -------------------------------------------------------------------------------------


def _uint_bytes(value: int) -> bytes:
    if value < 0 or value >= 2**256:
        raise DiscoveryError(f"price {value} does not fit a uint256")
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


def _address_bytes(address: str) -> bytes:
    raw = bytes.fromhex(address.removeprefix("0x"))
    if len(raw) != 20:
        raise DiscoveryError(f"{address!r} is not a 20-byte address")
    return raw


def encode_advert(advert: ProviderAdvert) -> bytes:
    offer = advert.offer
    msg = advert_pb2.ProviderAdvert(
        address=_address_bytes(advert.address),
        peer_id=peer_id_to_bytes(advert.peer_id),
        listen_addrs=list(advert.listen_addrs),
        devices=[
            advert_pb2.Device(
                kind=advert_pb2.Device.KIND_CUDA if d.kind is DeviceKind.CUDA else advert_pb2.Device.KIND_CPU,
                model=d.model,
                memory_bytes=d.memory_bytes,
                compute_capability=d.compute_capability,
            )
            for d in offer.devices
        ],
        warm_models=list(offer.warm_models),
        prices=[
            advert_pb2.ModelPrice(
                model_id=p.model_id,
                price_per_job_wei=_uint_bytes(p.price_per_job_wei),
                price_per_unit_wei=_uint_bytes(p.price_per_unit_wei),
                unit=p.unit,
            )
            for p in offer.prices
        ],
        free_slots=offer.free_slots,
        queued=offer.queued,
        benchmarks=[
            advert_pb2.Benchmark(
                model_id=b.model_id,
                device_index=b.device_index,
                throughput_per_s=b.throughput_per_s,
                latency_p50_ms=b.latency_p50_ms,
            )
            for b in offer.benchmarks
        ],
        sequence=advert.sequence,
        expires_at_ms=advert.expires_at_ms,
        issued_at_ms=advert.issued_at_ms,
    )
    if offer.fetch is not None:
        msg.fetch_max_bytes = offer.fetch.max_bytes
        msg.fetch_price_per_job_wei = _uint_bytes(offer.fetch.price_per_job_wei)
        msg.cold_start_price_wei = _uint_bytes(offer.fetch.cold_start_price_wei)
    return bytes(msg.SerializeToString())


def _signing_digest(advert_bytes: bytes) -> bytes:
    return bytes(keccak(ADVERT_DOMAIN + advert_bytes))


def sign_advert(advert: ProviderAdvert, private_key: bytes) -> bytes:
    """The SignedAdvert bytes for `advert`, signed with the provider's key."""
    body = encode_advert(advert)
    signature = sign_digest(private_key, _signing_digest(body))
    signed = bytes(advert_pb2.SignedAdvert(advert=body, signature=signature).SerializeToString())
    if len(signed) > MAX_ADVERT_BYTES:
        raise DiscoveryError(
            f"advert is {len(signed)} bytes; the limit is {MAX_ADVERT_BYTES}",
            hint="advertise fewer models, prices or benchmarks",
        )
    return signed


def open_advert(signed: bytes) -> ProviderAdvert | Rejected:
    """Parse and authenticate a SignedAdvert: size, encoding, and a signature by its own address."""
    if len(signed) > MAX_ADVERT_BYTES:
        return Rejected(RejectReason.OVERSIZE, f"{len(signed)} bytes > {MAX_ADVERT_BYTES}")
    envelope = advert_pb2.SignedAdvert()
    try:
        envelope.ParseFromString(signed)
        advert = _decode(bytes(envelope.advert), signed)
    except (DecodeError, ValueError, P2PError) as exc:
        return Rejected(RejectReason.MALFORMED, str(exc))
    try:
        signer = recover_digest_signer(_signing_digest(bytes(envelope.advert)), bytes(envelope.signature))
    except SignatureError as exc:
        return Rejected(RejectReason.BAD_SIGNATURE, str(exc))
    if signer != advert.address:
        return Rejected(RejectReason.BAD_SIGNATURE, f"signed by {signer}, claims {advert.address}")
    return advert


def _decode(body: bytes, signed: bytes) -> ProviderAdvert:
    msg = advert_pb2.ProviderAdvert()
    msg.ParseFromString(body)
    if len(msg.address) != 20:
        raise ValueError(f"address is {len(msg.address)} bytes, not 20")
    offer = Offer(
        devices=tuple(
            Device(
                kind=DeviceKind.CUDA if d.kind == advert_pb2.Device.KIND_CUDA else DeviceKind.CPU,
                model=d.model,
                memory_bytes=d.memory_bytes,
                compute_capability=d.compute_capability,
            )
            for d in msg.devices
        ),
        warm_models=tuple(_hash32(m) for m in msg.warm_models),
        prices=tuple(
            ModelPrice(
                model_id=_hash32(p.model_id),
                price_per_job_wei=_uint(p.price_per_job_wei),
                price_per_unit_wei=_uint(p.price_per_unit_wei),
                unit=p.unit,
            )
            for p in msg.prices
        ),
        free_slots=msg.free_slots,
        queued=msg.queued,
        benchmarks=tuple(
            Benchmark(_hash32(b.model_id), b.device_index, b.throughput_per_s, b.latency_p50_ms)
            for b in msg.benchmarks
        ),
        fetch=_fetch_terms(msg),
    )
    return ProviderAdvert(
        address=Address(to_checksum_address(bytes(msg.address))),
        peer_id=peer_id_from_bytes(bytes(msg.peer_id)),
        listen_addrs=tuple(msg.listen_addrs),
        offer=offer,
        sequence=msg.sequence,
        issued_at_ms=msg.issued_at_ms,
        expires_at_ms=msg.expires_at_ms,
        signed=signed,
    )


def _fetch_terms(msg: advert_pb2.ProviderAdvert) -> FetchTerms | None:
    if not msg.fetch_max_bytes:
        return None
    return FetchTerms(
        msg.fetch_max_bytes, _uint(msg.fetch_price_per_job_wei), _uint(msg.cold_start_price_wei)
    )


def _hash32(raw: bytes) -> Hash32:
    if len(raw) != 32:
        raise ValueError(f"model id is {len(raw)} bytes, not 32")
    return Hash32(bytes(raw))


def _uint(raw: bytes) -> int:
    if len(raw) > 32:
        raise ValueError("price longer than a uint256")
    return int.from_bytes(raw, "big")


def dht_key(address: str) -> str:
    """Where a provider's latest advert lives in the DHT: `/gpunode/provider/<address in base58>`.

    Base58 of the 20 address bytes, not 0x-hex: py-libp2p peers drop a FIND_NODE whose key is
    longer than 50 bytes, and the hex form (60 bytes) would confine lookups to known peers.
    """
    raw = bytes.fromhex(address.removeprefix("0x"))
    if len(raw) != 20:
        raise DiscoveryError(f"{address!r} is not an Ethereum address")
    return f"/gpunode/provider/{base58.b58encode(raw).decode()}"
