"""NodeKey and the encrypted v3 keystore."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from eth_account import Account

from node.chain.eip712 import public_key_to_address
from node.chain.keys import NodeKey, create_keystore, unlock_keystore
from node.errors import KeyStoreError

# scrypt at a lower cost than the default keeps these tests quick; the format is the same.
FAST = {"work_factor": 2**12}


def test_can_derive_a_key_consistently() -> None:
    key = NodeKey.generate()
    assert key.account.address == key.address == Account.from_key(key.private_key).address
    assert len(key.public_key_compressed) == 33
    assert public_key_to_address(key.public_key_compressed) == key.address
    assert NodeKey.from_private_key(key.private_key) == key
    assert key.private_key.hex() not in repr(key)


def test_cannot_build_a_key_from_bad_bytes() -> None:
    with pytest.raises(KeyStoreError, match="32 bytes"):
        NodeKey.from_private_key(b"\x01" * 31)
    with pytest.raises(KeyStoreError, match="not a valid secp256k1 private key"):
        NodeKey.from_private_key(b"\x00" * 32)


def test_can_round_trip_a_keystore(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "keystore.json"
    created = create_keystore(path, "correct horse", **FAST)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    document = json.loads(path.read_text())
    assert document["version"] == 3
    assert document["crypto"]["kdf"] == "scrypt"
    assert created.private_key.hex() not in path.read_text()
    assert unlock_keystore(path, "correct horse") == created


def test_can_round_trip_a_keystore_at_full_strength(tmp_path: Path) -> None:
    path = tmp_path / "keystore.json"
    created = create_keystore(path, "pw")
    assert json.loads(path.read_text())["crypto"]["kdfparams"]["n"] == 2**18
    assert unlock_keystore(path, "pw").address == created.address


def test_can_store_a_given_key_with_pbkdf2(tmp_path: Path) -> None:
    key = NodeKey.generate()
    path = tmp_path / "keystore.json"
    create_keystore(path, "pw", key=key, kdf="pbkdf2", work_factor=1000)
    assert json.loads(path.read_text())["crypto"]["kdf"] == "pbkdf2"
    assert unlock_keystore(path, "pw") == key


def test_cannot_unlock_with_a_wrong_password(tmp_path: Path) -> None:
    path = tmp_path / "keystore.json"
    create_keystore(path, "right", **FAST)
    before = path.read_bytes()
    with pytest.raises(KeyStoreError, match="wrong password"):
        unlock_keystore(path, "wrong")
    assert path.read_bytes() == before


def test_cannot_overwrite_a_keystore_without_force(tmp_path: Path) -> None:
    path = tmp_path / "keystore.json"
    original = create_keystore(path, "pw", **FAST)
    with pytest.raises(KeyStoreError, match="already exists") as caught:
        create_keystore(path, "pw", **FAST)
    assert "--force" in str(caught.value)
    assert unlock_keystore(path, "pw") == original
    replaced = create_keystore(path, "pw", force=True, **FAST)
    assert replaced != original
    assert unlock_keystore(path, "pw") == replaced
    assert [p.name for p in tmp_path.iterdir()] == ["keystore.json"]


def test_cannot_create_a_keystore_with_an_empty_password(tmp_path: Path) -> None:
    path = tmp_path / "keystore.json"
    with pytest.raises(KeyStoreError, match="password is empty"):
        create_keystore(path, "", **FAST)
    assert not path.exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no keystore at"),
        ("not json", "is not JSON"),
        ("[1, 2]", "not a v3 keystore"),
        ('{"version": 3}', "not a v3 keystore"),
        ('{"version": 3, "crypto": {"kdf": "scrypt"}}', "malformed"),
    ],
)
def test_cannot_unlock_a_missing_or_malformed_keystore(
    tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / "keystore.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(KeyStoreError, match=message):
        unlock_keystore(path, "pw")


def test_cannot_write_a_keystore_where_a_file_blocks_the_path(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("occupied")
    with pytest.raises(KeyStoreError, match="cannot write keystore"):
        create_keystore(blocker / "keystore.json", "pw", **FAST)
    assert blocker.read_text() == "occupied"
