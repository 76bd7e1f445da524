"""`gpunode keys`: create and show the node's key (its Ethereum account and libp2p identity)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from node.chain.keys import NodeKey, create_keystore, unlock_keystore
from node.config import Settings, load_settings
from node.errors import KeyStoreError
from node.logging import configure_logging

app = typer.Typer(name="keys", help="Create and inspect the node's key.", no_args_is_help=True)
console = Console()
err_console = Console(stderr=True)

KeystoreOption = Annotated[
    Path | None, typer.Option("--keystore", help="keystore file (default: keys.keystore from the settings)")
]
JsonOption = Annotated[bool, typer.Option("--json", help="print one JSON object")]


def _writable_keystore(path: Path, *, force: bool) -> Path:
    # Checked before asking for a password or a key, so nobody types one for nothing.
    if path.exists() and not force:
        raise KeyStoreError(f"a keystore already exists at {path}", hint="pass --force to replace it")
    return path


@app.command("new")
def new(
    keystore: KeystoreOption = None,
    force: Annotated[bool, typer.Option("--force", help="replace an existing keystore")] = False,
    as_json: JsonOption = False,
) -> None:
    """Generate a key and save it to an encrypted keystore (mode 0600)."""
    settings = _settings()
    path = _writable_keystore(keystore or settings.keys.keystore, force=force)
    password = read_password(settings, confirm=True)
    if not as_json:
        err_console.print("encrypting the key with scrypt (about a second)…")
    key = create_keystore(path, password, force=force)
    _report(key, path, as_json)


@app.command("import")
def import_key(
    keystore: KeystoreOption = None,
    force: Annotated[bool, typer.Option("--force", help="replace an existing keystore")] = False,
    key_env: Annotated[
        str, typer.Option("--key-env", help="environment variable holding the hex private key")
    ] = "GPUNODE_IMPORT_KEY",
    as_json: JsonOption = False,
) -> None:
    """Encrypt an existing private key (hex, from --key-env or a prompt) into the keystore."""
    settings = _settings()
    path = _writable_keystore(keystore or settings.keys.keystore, force=force)
    raw = os.environ.get(key_env) or typer.prompt("Private key (hex)", hide_input=True)
    try:
        private_key = bytes.fromhex(raw.strip().removeprefix("0x"))
    except ValueError:
        raise KeyStoreError(
            "the private key is not hex", hint="give 64 hex digits, with or without 0x"
        ) from None
    if len(private_key) != 32:
        raise KeyStoreError(f"a private key has 32 bytes, this one has {len(private_key)}")
    node_key = NodeKey.from_private_key(private_key)
    key = create_keystore(path, read_password(settings, confirm=True), force=force, key=node_key)
    _report(key, path, as_json)


@app.command("show")
def show(keystore: KeystoreOption = None, as_json: JsonOption = False) -> None:
    """Unlock the keystore and print the address and compressed public key."""
    settings = _settings()
    path = keystore or settings.keys.keystore
    key = unlock_keystore(path, read_password(settings, confirm=False))
    _report(key, path, as_json)


DEV_FUNDING_WEI = 10 * 10**18


@app.command("fund")
def fund(
    from_dev: Annotated[
        bool,
        typer.Option("--from-dev", help="from the dev chain's first prefunded account (anvil, hardhat)"),
    ] = False,
    amount_wei: Annotated[int, typer.Option("--amount", min=1, help="wei to send")] = DEV_FUNDING_WEI,
    as_json: JsonOption = False,
) -> None:
    """Send ether to this node's address on a development chain (elsewhere: send it yourself)."""
    import asyncio

    from node.chain.client import ChainClient
    from node.errors import ChainError

    settings = _settings()
    if not from_dev:
        raise ChainError(
            "nothing to fund from",
            hint="on a dev chain pass --from-dev; else send ether to `gpunode keys show`'s address",
        )
    if settings.chain.rpc_url == "embedded":
        raise ChainError(
            "the embedded chain lives inside one process; there is nothing to fund",
            hint="run anvil and `gpunode init --rpc-url http://127.0.0.1:8545`, or use `gpunode devnet`",
        )
    key = unlock_keystore(settings.keys.keystore, read_password(settings, confirm=False))

    async def send() -> int:
        client = await ChainClient.connect(settings.chain)
        try:
            source = client.dev_accounts()[0]
            if await client.balance(source.address) < amount_wei:
                raise ChainError(
                    f"the dev account {source.address} cannot pay {amount_wei} wei on this chain",
                    hint="--from-dev works on anvil or hardhat with their default mnemonic",
                )
            await client.transfer(str(key.address), amount_wei, sender=source)
            balance: int = await client.balance(str(key.address))
            return balance
        finally:
            await client.close()

    balance = asyncio.run(send())
    summary = {"address": str(key.address), "sent_wei": amount_wei, "balance_wei": balance}
    if as_json:
        typer.echo(json.dumps(summary))
        return
    console.print(f"sent {amount_wei} wei to {key.address}; it holds {balance} wei")


def _settings() -> Settings:
    settings = load_settings()
    # Log records go to stderr, so that stdout carries only the command's output (`--json`).
    configure_logging(settings.log_level, json=settings.log_json)
    return settings


def read_password(settings: Settings, *, confirm: bool) -> str:
    """The keystore password from the environment variable the settings name, else a prompt."""
    from_env = os.environ.get(settings.keys.password_env)
    if from_env is not None:
        return from_env
    entered: str = typer.prompt(
        f"Keystore password (or set {settings.keys.password_env})",
        hide_input=True,
        confirmation_prompt=confirm,
    )
    return entered


def _report(key: NodeKey, path: Path, as_json: bool) -> None:
    summary = {
        "address": str(key.address),
        "public_key": "0x" + key.public_key_compressed.hex(),
        "keystore": str(path),
    }
    if as_json:
        typer.echo(json.dumps(summary))
        return
    console.print(f"address     {summary['address']}")
    console.print(f"public key  {summary['public_key']}")
    console.print(f"keystore    {summary['keystore']}")
