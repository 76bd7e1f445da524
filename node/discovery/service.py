"""Discovery: announce our own advert, validate everyone else's, keep the directory current."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

from node.config import P2PSettings
from node.discovery.advert import (
    Offer,
    ProviderAdvert,
    Rejected,
    RejectReason,
    dht_key,
    open_advert,
    sign_advert,
)
from node.discovery.directory import Directory
from node.discovery.pacing import LoadPublication
from node.discovery.refresher import AdvertRefresher
from node.discovery.registry_view import RegistryView
from node.discovery.validation import AdvertValidator, check_binding
from node.errors import DiscoveryError, GpunodeError, P2PError
from node.logging import get_logger
from node.p2p.gossip import ADVERT_TOPIC
from node.p2p.host import P2PHost
from node.p2p.identity import PrivateKeyHolder
from node.p2p.subscription import Subscription
from node.types import Address, Hash32, sha256

log = get_logger(__name__)

# Stale adverts are swept this often; queries already ignore them in between.
EXPIRY_SWEEP_S = 1.0
# Peers newly subscribed to adverts are looked for this often; a greeting re-sends our advert.
GREET_INTERVAL_S = 1.0
GREET_AFTER_S = 1.5
# Greetings go out at most this often, however many peers come and go: on a busy overlay the
# subscribed peers churn with every reconnection, and each greeting costs every receiver a token
# of its flood limit.
GREET_MIN_GAP_S = 10.0
# A peer seen subscribed within this long is not new when it shows up again.
GREET_MEMORY_S = 600.0
# A new advert goes into the DHT this long after it was gossiped.
DHT_PUT_DELAY_S = 1.0
# Validated adverts waiting for the consumer, by message hash, so nothing is verified twice.
_STASH_SIZE = 4096


class DiscoveryService:
    """One node's view of the provider overlay: a component (`run()`, `ready`) opened with
    `DiscoveryService.subscribed(...)`, or on its own with `async with DiscoveryService.start(...)`."""

    def __init__(
        self,
        host: P2PHost,
        validator: AdvertValidator,
        directory: Directory,
        settings: P2PSettings,
        key: PrivateKeyHolder | None,
    ) -> None:
        self.host = host
        self.validator = validator
        self.directory = directory
        self._settings = settings
        self._key = key
        self._offer: Offer | None = None
        self._sequence = 0
        self._stash: OrderedDict[Hash32, ProviderAdvert] = OrderedDict()
        # The stash is filled from the p2p thread (quick validation) and emptied on the loop.
        self._stash_lock = threading.Lock()
        self._subscription: Subscription | None = None
        # Set by each announce; the DHT loop stores the advert then.
        self._announced = asyncio.Event()
        self.current: ProviderAdvert | None = None
        self.ready = asyncio.Event()
        # Free slots as last announced, and the pace of announcing their changes.
        self._publication = LoadPublication()
        self._refresher = AdvertRefresher(
            self._announce_offer, interval_s=settings.advert_refresh_s, due_in=self._load_due_in
        )

    @classmethod
    @asynccontextmanager
    async def subscribed(
        cls,
        host: P2PHost,
        registry: RegistryView,
        settings: P2PSettings,
        *,
        key: PrivateKeyHolder | None = None,
        offer: Offer | None = None,
        validator: AdvertValidator | None = None,
    ) -> AsyncIterator[DiscoveryService]:
        """Subscribe to adverts; `run()` then takes them in and, with `key`, announces our offer
        (once there is one) every `advert_refresh_s`. The node runs `run()` under its TaskGroup."""
        service = cls(host, validator or AdvertValidator(registry), Directory(), settings, key)
        service._offer = offer
        service._subscription = await host.subscribe(
            ADVERT_TOPIC, service._gossip_check, quick_validator=service._gossip_check_now
        )
        yield service

    @classmethod
    @asynccontextmanager
    async def start(
        cls,
        host: P2PHost,
        registry: RegistryView,
        settings: P2PSettings,
        *,
        key: PrivateKeyHolder | None = None,
        offer: Offer | None = None,
        validator: AdvertValidator | None = None,
    ) -> AsyncIterator[DiscoveryService]:
        """Discovery on its own (tools, tests): subscribed, and running until the block ends."""
        async with cls.subscribed(
            host, registry, settings, key=key, offer=offer, validator=validator
        ) as service:
            running = asyncio.create_task(service.run(), name="discovery")
            ready = asyncio.create_task(service.ready.wait())
            try:
                await asyncio.wait({running, ready}, return_when=asyncio.FIRST_COMPLETED)
                if running.done():
                    running.result()  # raises what stopped it
                yield service
            finally:
                for task in (ready, running):
                    task.cancel()
                await asyncio.gather(ready, running, return_exceptions=True)

    async def run(self) -> None:
        """Take adverts in, sweep expired ones, store ours in the DHT and (with a key) refresh it,
        until cancelled; `ready` is set once all of them run. A loop that fails is raised."""
        if self._subscription is None:
            raise DiscoveryError(
                "discovery is not subscribed", hint="open it with DiscoveryService.subscribed()"
            )
        async with asyncio.TaskGroup() as group:
            group.create_task(_logged(self._consume(self._subscription)), name="advert-intake")
            group.create_task(_logged(self._sweep()), name="advert-expiry")
            group.create_task(_logged(self._store_in_dht()), name="advert-dht")
            if self._key is not None:
                group.create_task(_logged(self._refresher.run()), name="advert-refresher")
                group.create_task(_logged(self._greet_newcomers()), name="advert-greeter")
            self.ready.set()

    # announcing -------------------------------------------------------------------------------

    async def announce(self, offer: Offer | None = None) -> ProviderAdvert:
        """Publish our advert now (call on every change of `offer`); also store it in the DHT."""
        if self._key is None:
            raise DiscoveryError(
                "this node has no key to sign adverts with", hint="start discovery with key="
            )
        if offer is not None:
            self._offer = offer
        if self._offer is None:
            raise DiscoveryError("nothing to announce yet", hint="pass the provider's offer")
        advert, signed = self._make_advert(self._key, self._offer)
        await self.host.publish(ADVERT_TOPIC, signed)
        self._publication.announced(_room(advert.offer), time.monotonic())
        self.current = advert
        self._announced.set()
        return advert

    def set_load(self, free_slots: int, queued: int) -> None:
        """The provider's load changed: its next advert carries it, and goes out early when the
        change is significant (paced below the receivers' flood limits, coalesced)."""
        offer = self._offer
        if offer is None or (offer.free_slots, offer.queued) == (free_slots, queued):
            return
        self._offer = replace(offer, free_slots=max(0, free_slots), queued=max(0, queued))
        if self._load_due_in() is not None:
            self._refresher.nudge()

    def _load_due_in(self) -> float | None:
        if self._offer is None:
            return None
        now = time.monotonic()
        due = self._publication.due(_room(self._offer), now)
        return None if due is None else due - now

    def _make_advert(self, key: PrivateKeyHolder, offer: Offer) -> tuple[ProviderAdvert, bytes]:
        now_ms = int(time.time() * 1000)
        # Milliseconds as the floor: the sequence keeps growing across restarts without storage.
        self._sequence = max(self._sequence + 1, now_ms)
        advert = ProviderAdvert(
            address=self.host.address,
            peer_id=self.host.peer_id,
            listen_addrs=tuple(self.host.addrs),
            offer=offer,
            sequence=self._sequence,
            issued_at_ms=now_ms,
            expires_at_ms=now_ms + int(self._settings.advert_ttl_s * 1000),
        )
        signed = sign_advert(advert, key.private_key)
        return replace(advert, signed=signed), signed

    async def _store_in_dht(self) -> None:
        """Keep our advert in the DHT, where a client that missed the gossip looks it up. A change
        of load alone (free slots, queue) is not stored again until the stored copy is half its
        life old: each store is a walk over the network, and load changes with every job."""
        stored: ProviderAdvert | None = None
        stored_at = 0.0
        while True:
            await self._announced.wait()
            # Gossip is the latency-sensitive path; the DHT lookup walk competes with it for the
            # same connections and CPU, so it starts once the gossip push has had time to spread.
            await asyncio.sleep(DHT_PUT_DELAY_S)
            self._announced.clear()
            advert = self.current
            if advert is None or advert is stored:
                continue
            fresh = time.monotonic() - stored_at < self._settings.advert_ttl_s / 2
            if stored is not None and fresh and _same_but_load(stored, advert):
                continue
            try:
                await self.host.dht_put(dht_key(advert.address), advert.signed)
            except P2PError as exc:
                log.warning("advert_dht_put_failed", error=str(exc))
            stored, stored_at = advert, time.monotonic()

    async def _greet_newcomers(self) -> None:
        """Send our advert again when peers join the advert topic: gossip does not replay old
        messages, and a client that just joined would otherwise wait for the next refresh to see
        us. Peers seen lately are not greeted again, and greetings are paced (`GREET_MIN_GAP_S`)."""
        seen: dict[str, float] = {}
        greeted_at = -GREET_MIN_GAP_S
        while True:
            await asyncio.sleep(GREET_INTERVAL_S)
            try:
                peers = set(await self.host.topic_peers(ADVERT_TOPIC))
            except P2PError:
                continue
            now = time.monotonic()
            newcomers = {p for p in peers if now - seen.get(p, -GREET_MEMORY_S) >= GREET_MEMORY_S}
            seen.update(dict.fromkeys(peers, now))
            for gone in [p for p, at in seen.items() if now - at >= GREET_MEMORY_S]:
                del seen[gone]
            if newcomers and self._offer is not None:
                # A newcomer joins our mesh at gossipsub's next heartbeat; a message published
                # before it would pass it by.
                await asyncio.sleep(max(GREET_AFTER_S, greeted_at + GREET_MIN_GAP_S - now))
                try:
                    await self._greet()
                except GpunodeError as exc:
                    log.info("advert_greeting_failed", error=str(exc))
                greeted_at = time.monotonic()

    async def _greet(self) -> None:
        """Our current advert again, as it was signed (no new sequence, nothing new for the DHT),
        while it has at least half its life left; otherwise a fresh one."""
        current = self.current
        half_life_ms = self._settings.advert_ttl_s * 500
        if current is not None and current.expires_at_ms - time.time() * 1000 > half_life_ms:
            await self.host.publish(ADVERT_TOPIC, current.signed)
            return
        await self.announce()

    async def _announce_offer(self) -> None:
        """The periodic refresh: our advert again, once there is an offer to announce."""
        if self._offer is not None:
            await self.announce()

    # receiving --------------------------------------------------------------------------------

    async def _gossip_check(self, source: str, data: bytes) -> bool:
        return self._stash_if_accepted(data, await self.validator.check(source, data))

    def _gossip_check_now(self, source: str, data: bytes) -> bool | None:
        # Runs in the p2p thread: only the validator's cached, non-blocking path.
        result = self.validator.check_now(source, data)
        return None if result is None else self._stash_if_accepted(data, result)

    def _stash_if_accepted(self, data: bytes, result: ProviderAdvert | Rejected) -> bool:
        if isinstance(result, Rejected):
            return False
        with self._stash_lock:
            self._stash[sha256(data)] = result
            while len(self._stash) > _STASH_SIZE:
                self._stash.popitem(last=False)
        return True

    @property
    def gossip_dropped(self) -> int:
        """Adverts gossip delivered that a full intake queue dropped."""
        return self._subscription.dropped if self._subscription is not None else 0

    async def _consume(self, subscription: Subscription) -> None:
        async for message in subscription:
            with self._stash_lock:
                stashed = self._stash.pop(sha256(message.data), None)
            advert = stashed or open_advert(message.data)
            if isinstance(advert, ProviderAdvert) and self.directory.upsert(advert):
                log.debug("provider_seen", address=advert.address, sequence=advert.sequence)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(EXPIRY_SWEEP_S)
            for address in self.directory.expire():
                log.info("provider_expired", address=address)

    # looking up -------------------------------------------------------------------------------

    async def lookup(self, address: Address, *, connect: bool = True) -> ProviderAdvert | None:
        """Find `address`'s latest advert in the DHT, check it, add it to the directory and
        (with `connect`) dial the provider so it rejoins our gossip mesh."""
        raw = await self.host.dht_get(dht_key(address))
        if raw is None:
            return None
        advert = open_advert(raw)
        if isinstance(advert, Rejected):
            log.info("dht_advert_rejected", address=address, reason=advert.reason.value)
            return None
        problem = check_binding(advert, advert.peer_id) or self.validator.check_times(advert)
        if problem is None and advert.address != address:
            problem = Rejected(RejectReason.PEER_MISMATCH, f"asked for {address}, got {advert.address}")
        if problem is None:
            checked = await self.validator.check_registered(advert)
            problem = checked if isinstance(checked, Rejected) else None
        if problem is not None:
            log.info(
                "dht_advert_rejected", address=address, reason=problem.reason.value, detail=problem.detail
            )
            return None
        self.directory.upsert(advert)
        if connect:
            await self._dial_any(advert)
        return advert

    async def _dial_any(self, advert: ProviderAdvert) -> None:
        if await self.host.connect_any(advert.listen_addrs, advert.peer_id) is not None:
            return
        log.info("provider_unreachable", address=advert.address, addrs=list(advert.listen_addrs))


def _room(offer: Offer) -> int:
    """Free slots, or minus the queue when there are none (see `node.discovery.pacing`)."""
    return offer.free_slots - offer.queued


async def _logged(loop: Coroutine[Any, Any, None]) -> None:
    # A background loop that dies must say so; nobody awaits it until shutdown.
    try:
        await loop
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("discovery_loop_failed")
        raise


def _same_but_load(a: ProviderAdvert, b: ProviderAdvert) -> bool:
    """Whether two of our adverts differ in nothing but load (free slots, queued jobs)."""
    unloaded = replace(b.offer, free_slots=a.offer.free_slots, queued=a.offer.queued)
    return a.listen_addrs == b.listen_addrs and a.offer == unloaded
