"""The node's one secp256k1 key and its encrypted v3 keystore file.

The same key is the Ethereum account and the libp2p identity. The keystore is the standard v3
format (eth-keyfile) with scrypt at geth's strength (n = 2**18: about 0.8 s to create and 0.7 s to
unlock on a laptop-class core), written with mode 0600 and never silently overwritten.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import coincurve
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_keyfile.keyfile import create_keyfile_json, decode_keyfile_json

from node.chain.eip712 import public_key_to_address
from node.errors import KeyStoreError
from node.logging import get_logger
from node.types import Address

log = get_logger(__name__)

Kdf = Literal["scrypt", "pbkdf2"]
DEFAULT_KDF: Kdf = "scrypt"
KEYSTORE_MODE = 0o600


@dataclass(frozen=True, slots=True)
class NodeKey:
    """A secp256k1 private key with everything derived from it."""

    private_key: bytes = field(repr=False)
    address: Address
    account: LocalAccount = field(repr=False, compare=False)
    public_key_compressed: bytes

    @classmethod
    def from_private_key(cls, private_key: bytes) -> NodeKey:
        if len(private_key) != 32:
            raise KeyStoreError(f"a private key is 32 bytes, got {len(private_key)}")
        try:
            public = coincurve.PrivateKey(private_key).public_key.format(compressed=True)
        except ValueError as exc:
            raise KeyStoreError(f"not a valid secp256k1 private key: {exc}") from exc
        account: LocalAccount = Account.from_key(private_key)
        return cls(
            private_key=private_key,
            address=public_key_to_address(public),
            account=account,
            public_key_compressed=public,
        )

    @classmethod
    def generate(cls) -> NodeKey:
        while True:
            candidate = secrets.token_bytes(32)
            # Almost every 32-byte string is a valid key; retry the astronomically rare rest.
            try:
                return cls.from_private_key(candidate)
            except KeyStoreError:
                continue


def create_keystore(
    path: Path,
    password: str,
    *,
    force: bool = False,
    key: NodeKey | None = None,
    kdf: Kdf = DEFAULT_KDF,
    work_factor: int | None = None,
) -> NodeKey:
    """Encrypt a new (or the given) key into a v3 keystore at `path`, mode 0600.

    `work_factor` is scrypt's n or pbkdf2's iteration count; None keeps eth-keyfile's default.
    """
    if not password:
        raise KeyStoreError("the keystore password is empty", hint="choose a non-empty password")
    if path.exists() and not force:
        raise KeyStoreError(
            f"a keystore already exists at {path}",
            hint="pass --force to replace it (the old key is lost unless backed up)",
        )
    node_key = key or NodeKey.generate()
    document = create_keyfile_json(node_key.private_key, password.encode(), kdf=kdf, iterations=work_factor)
    try:
        _write_private(path, json.dumps(document))
    except OSError as exc:
        raise KeyStoreError(f"cannot write keystore {path}: {exc.strerror or exc}") from exc
    log.info("keystore_created", path=str(path), address=node_key.address, kdf=kdf)
    return node_key


def unlock_keystore(path: Path, password: str) -> NodeKey:
    """Decrypt the keystore at `path`; a wrong password raises KeyStoreError."""
    document = _read_keystore(path)
    try:
        private_key = decode_keyfile_json(document, password.encode())
    except ValueError as exc:
        if "MAC mismatch" in str(exc):
            raise KeyStoreError(f"wrong password for keystore {path}") from exc
        raise KeyStoreError(f"keystore {path} is malformed: {exc}") from exc
    except (KeyError, TypeError) as exc:
        raise KeyStoreError(f"keystore {path} is malformed: missing or bad field {exc}") from exc
    return NodeKey.from_private_key(bytes(private_key))


def _read_keystore(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except FileNotFoundError as exc:
        raise KeyStoreError(f"no keystore at {path}", hint="create one with `gpunode keys new`") from exc
    except OSError as exc:
        raise KeyStoreError(f"cannot read keystore {path}: {exc.strerror}") from exc
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise KeyStoreError(f"keystore {path} is not JSON: {exc}") from exc
    if not isinstance(document, dict) or ("crypto" not in document and "Crypto" not in document):
        raise KeyStoreError(f"keystore {path} is not a v3 keystore (no crypto section)")
    return document


def _write_private(path: Path, text: str) -> None:
    """Write atomically with mode 0600 from the start, so the secret is never world-readable."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, KEYSTORE_MODE)
    try:
        with os.fdopen(descriptor, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
