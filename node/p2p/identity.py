"""One secp256k1 key is both the libp2p identity and the Ethereum account.

A secp256k1 public key is small enough that the peer id embeds it (identity multihash), so
anyone holding a peer id can derive the Ethereum address it speaks for without asking anybody.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Protocol

import coincurve
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from libp2p.crypto.keys import KeyPair, KeyType
from libp2p.crypto.secp256k1 import create_new_key_pair
from libp2p.peer.id import ID

from node.errors import P2PError
from node.types import Address


class PrivateKeyHolder(Protocol):
    """Anything carrying the node's raw 32-byte secp256k1 key (e.g. `node.chain.keys.NodeKey`)."""

    @property
    def private_key(self) -> bytes: ...


def _secret(key: PrivateKeyHolder | bytes) -> bytes:
    secret = key if isinstance(key, bytes) else key.private_key
    if len(secret) != 32:
        raise P2PError(
            f"a node key is 32 bytes, got {len(secret)}", hint="pass the raw secp256k1 private key"
        )
    return secret


def key_pair_from(key: PrivateKeyHolder | bytes) -> KeyPair:
    """The libp2p key pair for the node's secp256k1 key."""
    return create_new_key_pair(_secret(key))


def peer_id_from(key: PrivateKeyHolder | bytes) -> ID:
    return ID.from_pubkey(key_pair_from(key).public_key)


def address_from_public_key(public_key: bytes) -> Address:
    """Ethereum address of a compressed (33-byte) or uncompressed (65-byte) secp256k1 key."""
    try:
        point = coincurve.PublicKey(public_key).format(compressed=False)
    except ValueError as exc:
        raise P2PError(f"not a secp256k1 public key: {exc}") from exc
    return Address(to_checksum_address(keccak(point[1:])[-20:]))


def peer_id_to_address(peer_id: ID | bytes | str) -> Address:
    """The Ethereum address a peer id proves; `P2PError` when the peer id embeds no secp256k1 key."""
    if isinstance(peer_id, str):
        return _address_of_peer(peer_id)
    return _peer_address(peer_id)


# Every job request names its peer: the few peers a node talks to are not hashed again each time.
@lru_cache(maxsize=4096)
def _address_of_peer(peer_id: str) -> Address:
    return _peer_address(peer_id)


def _peer_address(peer_id: ID | bytes | str) -> Address:
    try:
        if isinstance(peer_id, ID):
            pid = peer_id
        elif isinstance(peer_id, bytes):
            pid = ID(peer_id)
        else:
            pid = ID.from_base58(peer_id)
    except ValueError as exc:
        raise P2PError(f"malformed peer id {peer_id!r}: {exc}") from exc
    public_key = pid.extract_public_key()
    if public_key is None or public_key.get_type() != KeyType.Secp256k1:
        raise P2PError(
            f"peer id {pid} does not embed a secp256k1 key",
            hint="gpunode peers use their Ethereum key as libp2p identity",
        )
    return address_from_public_key(public_key.to_bytes())


def peer_id_to_bytes(peer_id: str) -> bytes:
    """The binary (multihash) form of a base58 peer id."""
    try:
        return bytes(ID.from_base58(peer_id).to_bytes())
    except ValueError as exc:
        raise P2PError(f"malformed peer id {peer_id!r}: {exc}") from exc


def peer_id_from_bytes(raw: bytes) -> str:
    """The base58 form of a binary peer id."""
    try:
        return str(ID(raw).to_base58())
    except ValueError as exc:
        raise P2PError(f"malformed peer id bytes: {exc}") from exc
