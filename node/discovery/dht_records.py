"""The DHT record validator for `/gpunode/provider/<address>`: signed adverts only, newest wins.

It runs synchronously inside the p2p thread for every put and get, so it is pure: no chain
calls, no clocks beyond expiry, no shared state.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from node.discovery.advert import ProviderAdvert, Rejected, dht_key, open_advert
from node.discovery.validation import check_binding
from node.errors import DiscoveryError
from node.p2p.host import RecordValidator

DHT_NAMESPACE = "gpunode"


class AdvertRecordValidator:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock

    def validate(self, key: str, value: bytes) -> None:
        advert = self._open(value)
        if key != dht_key(advert.address):
            raise DiscoveryError(f"advert of {advert.address} stored under the wrong key {key!r}")

    def select(self, key: str, values: list[bytes]) -> int:
        best, best_sequence = 0, -1
        for index, value in enumerate(values):
            try:
                sequence = self._open(value).sequence
            except DiscoveryError:
                continue
            if sequence > best_sequence:
                best, best_sequence = index, sequence
        return best

    def _open(self, value: bytes) -> ProviderAdvert:
        advert = open_advert(value)
        if isinstance(advert, Rejected):
            raise DiscoveryError(f"invalid advert record: {advert.reason.value} {advert.detail}")
        binding = check_binding(advert, advert.peer_id)
        if binding is not None:
            raise DiscoveryError(f"invalid advert record: {binding.detail}")
        if advert.is_expired(int(self._clock() * 1000)):
            raise DiscoveryError(f"advert record of {advert.address} has expired")
        return advert


def dht_validators() -> dict[str, RecordValidator]:
    """The DHT validators a node must start its host with (`P2PHost.start(dht_validators=…)`)."""
    return {DHT_NAMESPACE: AdvertRecordValidator()}
