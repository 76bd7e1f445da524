"""`gpunode init`: create a node's home — a config file with the defaults spelled out, and a key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from node.chain.keys import create_keystore, unlock_keystore
from node.cli.keys import read_password
from node.config import load_settings
from node.errors import ConfigError
from node.logging import configure_logging

console = Console()

CONFIG_TEMPLATE = """\
# gpunode settings. Every key can also be set from the environment, nested with "__":
# GPUNODE_CHAIN__RPC_URL=http://127.0.0.1:8545 overrides [chain] rpc_url below.

[chain]
# "embedded" runs an in-process chain; otherwise the JSON-RPC URL of an Ethereum node.
rpc_url = "{rpc_url}"
# registry_address = "0x…"
# market_address = "0x…"
confirmations = 0

[keys]
keystore = "keystore.json"          # relative to this node's home
password_env = "GPUNODE_KEY_PASSWORD"

[p2p]
listen = ["/ip4/0.0.0.0/tcp/4001"]
bootstrap = []

[api]
listen = "127.0.0.1:50051"

[storage]
url = "sqlite:///gpunode.db"        # or postgresql+psycopg://user@host/db

[executor]
model_dir = "models"

[client]
exploration = 0.05                  # share of jobs sent to a free provider this node never used

[provider]
enabled = {provider}
price_per_job_wei = {price}
"""


def register(app: typer.Typer) -> None:
    app.command("init")(init)


def init(
    home: Annotated[
        Path | None, typer.Option("--home", help="the node's home (default: $GPUNODE_HOME or ~/.gpunode)")
    ] = None,
    rpc_url: Annotated[str, typer.Option("--rpc-url", help="chain JSON-RPC URL, or 'embedded'")] = "embedded",
    provider: Annotated[bool, typer.Option("--provider", help="set this node up to serve jobs")] = False,
    force: Annotated[bool, typer.Option("--force", help="overwrite an existing config file")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Create the node's home: config.toml and an encrypted key (kept if one exists)."""
    settings = load_settings(home=home) if home else load_settings()
    # Log records go to stderr, so that stdout carries only the command's output (`--json`).
    configure_logging(settings.log_level, json=settings.log_json)
    config_path = settings.home / "config.toml"
    if config_path.exists() and not force:
        raise ConfigError(f"{config_path} already exists", hint="pass --force to overwrite it")
    settings.home.mkdir(parents=True, exist_ok=True, mode=0o700)
    config_path.write_text(
        CONFIG_TEMPLATE.format(
            rpc_url=rpc_url,
            provider="true" if provider else "false",
            price=settings.provider.price_per_job_wei,
        )
    )
    keystore = settings.keys.keystore
    password = read_password(settings, confirm=not keystore.exists())
    key = unlock_keystore(keystore, password) if keystore.exists() else create_keystore(keystore, password)
    summary = {"home": str(settings.home), "config": str(config_path), "address": str(key.address)}
    if as_json:
        typer.echo(json.dumps(summary))
        return
    console.print(f"home     {summary['home']}")
    console.print(f"config   {summary['config']}")
    console.print(f"address  {summary['address']}")
    next_step = "gpunode provider register" if provider else "gpunode job submit"
    console.print(f"next: fund the address, then [bold]{next_step}[/bold]")
