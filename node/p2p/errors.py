"""Overlay errors beyond the shared tree in `node.errors`."""

from __future__ import annotations

from node.errors import BlobNotFound, P2PError, ProtocolViolation

__all__ = ["BlobIntegrityError", "BlobNotFound", "BlobTooLarge", "HostShuttingDown"]


class BlobIntegrityError(ProtocolViolation):
    """A blob's chunk or whole did not hash to what was promised: tampered or truncated."""


class BlobTooLarge(ProtocolViolation):
    """A blob's manifest announces more bytes than the fetcher takes."""


class HostShuttingDown(P2PError):
    """The host stopped while a call or a stream was in flight."""

    def __init__(self) -> None:
        super().__init__("the p2p host is shutting down")
