"""The error tree: one root, one base per layer, each message something a user can act on.

Expected rejections (a provider declining a job, an invalid advert) are values, not exceptions;
these classes are for faults. The API maps each base to a gRPC status code in one table.
"""

from __future__ import annotations


class GpunodeError(Exception):
    """Root of every error gpunode raises on purpose."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class ConfigError(GpunodeError):
    """Settings are missing, malformed or contradictory."""


class KeyStoreError(GpunodeError):
    """A key could not be created, found or unlocked."""


class ChainError(GpunodeError):
    """Talking to the chain failed: RPC down, timeout, nonce trouble."""


class TransactionReverted(ChainError):
    """A transaction or call reverted; `error_name` and `args` are decoded from the contract ABI."""

    def __init__(
        self, message: str, *, error_name: str = "", args: tuple[object, ...] = (), hint: str | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.error_name = error_name
        self.error_args = args


class SignatureError(GpunodeError):
    """A signature is malformed, has high s, or was made by someone else."""


class P2PError(GpunodeError):
    """The overlay failed: dial, stream, protocol or peer trouble."""


class PeerTimeout(P2PError):
    """A peer did not answer in time."""


class ProtocolViolation(P2PError):
    """A peer sent a malformed, oversize or out-of-order message."""


class BlobNotFound(P2PError):
    """The peer does not hold the requested blob."""


class DiscoveryError(GpunodeError):
    """Adverts could not be built, published or looked up."""


class ExecutorError(GpunodeError):
    """A job could not be run: unknown model, bad input, worker crash, limit hit."""


class SandboxError(ExecutorError):
    """The sandbox could not be set up, or a job broke one of its limits."""


class ModelStoreError(ExecutorError):
    """A model is unknown, corrupt, of an unsupported format or too large."""


class StorageError(GpunodeError):
    """The database could not be read or written."""


class SchedulerError(GpunodeError):
    """No provider can take a job, or every candidate failed."""


class JobError(GpunodeError):
    """A job cannot make the asked-for transition (unknown, finished, cancelled)."""


class SettlementError(GpunodeError):
    """Vouchers or on-chain jobs could not be settled."""
