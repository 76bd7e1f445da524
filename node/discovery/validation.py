"""Validation of adverts on receipt. Rejections are values, counted per reason and logged."""

from __future__ import annotations

import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from node.discovery.advert import ProviderAdvert, Rejected, RejectReason, open_advert
from node.discovery.registry_view import RegistryView
from node.errors import ChainError, P2PError
from node.logging import get_logger
from node.p2p.identity import peer_id_to_address
from node.types import Address, Hash32, sha256

log = get_logger(__name__)

_RECENT = 4096


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """A token bucket per source peer: `burst` adverts at once, then `per_s` a second."""

    def __init__(self, *, per_s: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_s = per_s
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def allow(self, source: str) -> bool:
        now = self._clock()
        bucket = self._buckets.get(source)
        if bucket is None:
            bucket = self._buckets[source] = _Bucket(self.burst, now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.per_s)
        bucket.updated = now
        if bucket.tokens < 1:
            return False
        bucket.tokens -= 1
        return True


class AdvertValidator:
    """Checks an advert from gossip: size, rate, signature, peer binding, expiry, sequence, registry.

    Cheap checks run first so a flood costs as little as possible; the registry (a chain call
    behind a cache) runs last. Sequences are recorded only for adverts that pass everything.
    """

    def __init__(
        self,
        registry: RegistryView,
        *,
        max_ttl_s: float = 3600.0,
        clock_skew_s: float = 30.0,
        rate_per_s: float = 0.5,
        rate_burst: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._registry = registry
        self._max_ttl_ms = int(max_ttl_s * 1000)
        self._skew_ms = int(clock_skew_s * 1000)
        self._clock = clock
        self.rate = RateLimiter(per_s=rate_per_s, burst=rate_burst)
        # Latest accepted (sequence, sha256 of the signed bytes) per address.
        self._last: dict[str, tuple[int, Hash32]] = {}
        # Adverts accepted lately, by hash: the same advert relayed by several neighbours at once
        # is a duplicate, neither a replay nor a flood.
        self._recent: OrderedDict[Hash32, ProviderAdvert] = OrderedDict()
        self.rejected: Counter[RejectReason] = Counter()
        self.accepted = 0
        # The p2p thread (check_now) and the asyncio loop (check) share this state.
        self._lock = threading.Lock()

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    async def check(self, source: str, signed: bytes) -> ProviderAdvert | Rejected:
        """Validate an advert that `source` (the signed gossip originator) published."""
        digest = sha256(signed)
        with self._lock:
            seen = self._duplicate(source, digest)
            if seen is not None:
                return seen
            if not self.rate.allow(source):
                return self._record(source, digest, self._rate_limited())
        result = self._screen(source, open_advert(signed))
        if isinstance(result, ProviderAdvert):
            result = await self.check_registered(result)
        with self._lock:
            return self._record(source, digest, result)

    def check_now(self, source: str, signed: bytes) -> ProviderAdvert | Rejected | None:
        """The verdict without waiting, when the registry's answer is cached; None otherwise.

        The p2p thread calls this for every gossiped advert, so the common case (a provider we
        already know) needs no round trip to the asyncio side.
        """
        peek: Callable[[Address], bool | None] | None = getattr(self._registry, "peek", None)
        if peek is None:
            return None
        digest = sha256(signed)
        with self._lock:
            seen = self._duplicate(source, digest)
        if seen is not None:
            return seen
        advert = open_advert(signed)
        active = peek(advert.address) if isinstance(advert, ProviderAdvert) else False
        if active is None:
            return None
        with self._lock:
            if not self.rate.allow(source):
                return self._record(source, digest, self._rate_limited())
            result = self._screen(source, advert)
            if isinstance(result, ProviderAdvert) and not active:
                result = self._not_registered(result)
            return self._record(source, digest, result)

    def _duplicate(self, source: str, digest: Hash32) -> ProviderAdvert | None:
        seen = self._recent.get(digest)
        return seen if seen is not None and seen.peer_id == source else None

    def _rate_limited(self) -> Rejected:
        return Rejected(RejectReason.RATE_LIMITED, f"more than {self.rate.burst} adverts in a burst")

    def _screen(self, source: str, advert: ProviderAdvert | Rejected) -> ProviderAdvert | Rejected:
        """Every check but the registry's, on an advert already opened (signature checked)."""
        if isinstance(advert, Rejected):
            return advert
        problem = check_binding(advert, source) or self.check_times(advert)
        if problem is not None:
            return problem
        last = self._last.get(advert.address)
        if last is not None and advert.sequence <= last[0]:
            return Rejected(RejectReason.REPLAYED, f"sequence {advert.sequence} <= last seen {last[0]}")
        return advert

    def _record(
        self, source: str, digest: Hash32, result: ProviderAdvert | Rejected
    ) -> ProviderAdvert | Rejected:
        """Count the verdict and remember what was accepted; call with the lock held."""
        if isinstance(result, Rejected):
            self.rejected[result.reason] += 1
            # Gossip brings the same advert again by other routes all the time: counted, not told.
            report = log.debug if result.reason is RejectReason.REPLAYED else log.info
            report("advert_rejected", reason=result.reason.value, detail=result.detail, source=source)
            return result
        last = self._last.get(result.address)
        if last is not None and result.sequence <= last[0]:
            # A newer advert of the same provider was accepted while this one waited on the chain.
            return self._record(
                source, digest, Rejected(RejectReason.REPLAYED, "overtaken by a newer advert")
            )
        self.accepted += 1
        self._last[result.address] = (result.sequence, digest)
        self._recent[digest] = result
        while len(self._recent) > _RECENT:
            self._recent.popitem(last=False)
        return result

    def check_times(self, advert: ProviderAdvert) -> Rejected | None:
        now = self._now_ms()
        if advert.is_expired(now):
            return Rejected(RejectReason.EXPIRED, f"expired {now - advert.expires_at_ms} ms ago")
        if advert.expires_at_ms - now > self._max_ttl_ms or advert.issued_at_ms - now > self._skew_ms:
            return Rejected(RejectReason.TOO_FAR_AHEAD, "expiry or issue time too far in the future")
        return None

    async def check_registered(self, advert: ProviderAdvert) -> ProviderAdvert | Rejected:
        try:
            active = await self._registry.is_active(advert.address)
        except ChainError as exc:
            return Rejected(RejectReason.REGISTRY_UNAVAILABLE, str(exc))
        return advert if active else self._not_registered(advert)

    @staticmethod
    def _not_registered(advert: ProviderAdvert) -> Rejected:
        return Rejected(RejectReason.NOT_REGISTERED, f"{advert.address} is not an active provider")


def check_binding(advert: ProviderAdvert, source: str) -> Rejected | None:
    """The advert must come from the peer it names, and that peer id must prove its address."""
    if advert.peer_id != source:
        return Rejected(RejectReason.PEER_MISMATCH, f"advert names peer {advert.peer_id}, sent by {source}")
    try:
        proven = peer_id_to_address(source)
    except P2PError as exc:
        return Rejected(RejectReason.PEER_MISMATCH, str(exc))
    if proven != advert.address:
        return Rejected(
            RejectReason.PEER_MISMATCH, f"peer {source} is {proven}, advert claims {advert.address}"
        )
    return None
