"""What the scheduler knows about a provider and what a job asks for: frozen values, no I/O.

The discovery directory turns each live advert (plus this node's own record of how the provider
served it) into a `ProviderCandidate`; the client turns a job request into `JobRequirements`.
"""

from __future__ import annotations

from dataclasses import dataclass

from node.types import Address, Hash32

# Prior for the success rate of a provider never tried: one success and one failure imagined.
_PRIOR_SUCCESSES = 1
_PRIOR_TRIALS = 2


@dataclass(frozen=True, slots=True)
class ModelOffer:
    """A model a provider serves and its price per job."""

    model_id: Hash32
    price_wei: int
    warm: bool = False


@dataclass(frozen=True, slots=True)
class DeviceOffer:
    """One accelerator (or the CPU) a provider runs jobs on."""

    kind: str  # "cuda", "cpu", …
    name: str
    memory_bytes: int


@dataclass(frozen=True, slots=True)
class ProviderStats:
    """How a provider has served this node: counts, latency (moving average), back-off, and how
    many of this node's jobs it is running now."""

    successes: int = 0
    failures: int = 0
    latency_ms: float | None = None
    consecutive_failures: int = 0
    backoff_until: float = 0.0
    in_flight: int = 0

    @property
    def success_rate(self) -> float:
        """Laplace-smoothed, so a provider never tried scores 0.5 rather than 0 or 1."""
        return (self.successes + _PRIOR_SUCCESSES) / (self.successes + self.failures + _PRIOR_TRIALS)


@dataclass(frozen=True, slots=True)
class ProviderCandidate:
    """A provider the scheduler may pick: its advert's facts and this node's experience of it."""

    address: Address
    peer_id: str
    models: tuple[ModelOffer, ...]
    devices: tuple[DeviceOffer, ...]
    free_slots: int
    throughput: float  # benchmark jobs/s on its best device, as advertised
    stats: ProviderStats = ProviderStats()

    def offer(self, model_id: Hash32) -> ModelOffer | None:
        for offer in self.models:
            if offer.model_id == model_id:
                return offer
        return None

    def memory_for(self, device_kind: str | None) -> int:
        """The most memory on one device of `device_kind` (any kind when None); 0 if none."""
        sizes = [d.memory_bytes for d in self.devices if device_kind is None or d.kind == device_kind]
        return max(sizes, default=0)


@dataclass(frozen=True, slots=True)
class JobRequirements:
    """What a job needs from a provider."""

    model_id: Hash32
    max_price_wei: int
    device_kind: str | None = None  # None: any device will do
    min_memory_bytes: int = 0
