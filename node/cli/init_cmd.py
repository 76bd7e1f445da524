"""`gpunode init`: create a node's home — a config file with the defaults spelled out, and a key."""

from __future__ import annotations

import json
import socket
import tempfile
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

DEFAULT_P2P_PORT = 4001
DEFAULT_API_PORT = 50051
DEFAULT_HTTP_PORT = 8000
# How many ports from the default `init` tries before it asks for one.
PORT_SEARCH = 200

CONFIG_TEMPLATE = """\
# gpunode settings. Every key can also be set from the environment, nested with "__":
# GPUNODE_CHAIN__RPC_URL=http://127.0.0.1:8545 overrides [chain] rpc_url below.

[chain]
# "embedded" runs an in-process chain; otherwise the JSON-RPC URL of an Ethereum node.
rpc_url = "{rpc_url}"
{registry}
{market}
confirmations = 0

[keys]
keystore = "keystore.json"          # relative to this node's home
password_env = "GPUNODE_KEY_PASSWORD"

[p2p]
# Every interface; peers are told this machine's concrete addresses, never 0.0.0.0.
listen = ["/ip4/0.0.0.0/tcp/{p2p_port}"]
# A public address to advertise first when peers reach this node through NAT or a port forward,
# e.g. ["/ip4/203.0.113.7/tcp/{p2p_port}"] or ["/dns4/gpu.example.org/tcp/{p2p_port}"].
announce = {announce}
# Nodes to join the overlay through: the addresses `gpunode node status` prints on them.
bootstrap = {bootstrap}
# Find nodes on the local network by multicast DNS (it does not cross routers).
mdns = true

[api]
listen = "127.0.0.1:{api_port}"

[http]
# The dashboard at /, OpenAI's API under /v1, Prometheus metrics at /metrics. On for a client; a
# provider turns it on with `enabled = true`. Anything but loopback needs `require_token = true`.
listen = "127.0.0.1:{http_port}"

[storage]
url = "sqlite:///gpunode.db"        # or postgresql+psycopg://user@host/db

[executor]
model_dir = "models"

[client]
exploration = 0.05                  # share of jobs sent to a free provider this node never used
spot_check_share = 0.06             # share of results re-run on another provider and compared
discovery_wait_s = 10.0             # a job submitted this soon after start waits for adverts

[provider]
enabled = {provider}
price_per_job_wei = {price}
# Fetch models that jobs name and this node lacks, from the client (or a peer holding them), up to
# max_fetch_bytes; the first job of such a model pays cold_start_price_wei on top.
fetch_models = true
max_fetch_bytes = 4294967296
cold_start_price_wei = 10000000000000
max_fetched_models = 4               # each keeps a warm worker until the node stops
"""


def register(app: typer.Typer) -> None:
    app.command("init")(init)


def init(
    home: Annotated[
        Path | None, typer.Option("--home", help="the node's home (default: $GPUNODE_HOME or ~/.gpunode)")
    ] = None,
    rpc_url: Annotated[str, typer.Option("--rpc-url", help="chain JSON-RPC URL, or 'embedded'")] = "embedded",
    provider: Annotated[bool, typer.Option("--provider", help="set this node up to serve jobs")] = False,
    bootstrap: Annotated[
        list[str] | None,
        typer.Option("--bootstrap", help="a node to join through: /ip4/…/tcp/…/p2p/… (repeatable)"),
    ] = None,
    announce: Annotated[
        list[str] | None,
        typer.Option("--announce", help="a public address to advertise, e.g. /ip4/203.0.113.7/tcp/4001"),
    ] = None,
    p2p_port: Annotated[
        int | None, typer.Option("--p2p-port", min=1, max=65535, help="p2p port (default 4001, else free)")
    ] = None,
    api_port: Annotated[
        int | None, typer.Option("--api-port", min=1, max=65535, help="API port (default 50051, else free)")
    ] = None,
    http_port: Annotated[
        int | None,
        typer.Option("--http-port", min=1, max=65535, help="HTTP port (default 8000, else free)"),
    ] = None,
    registry_address: Annotated[
        str | None, typer.Option("--registry-address", help="the chain's ProviderRegistry, if deployed")
    ] = None,
    market_address: Annotated[
        str | None, typer.Option("--market-address", help="the chain's JobMarket, if deployed")
    ] = None,
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
    p2p = p2p_port or free_port(DEFAULT_P2P_PORT, "0.0.0.0")  # noqa: S104 (the p2p port is public)
    api = api_port or free_port(DEFAULT_API_PORT, "127.0.0.1", taken=frozenset({p2p}))
    text = CONFIG_TEMPLATE.format(
        rpc_url=rpc_url,
        provider="true" if provider else "false",
        price=settings.provider.price_per_job_wei,
        p2p_port=p2p,
        api_port=api,
        http_port=http_port or free_port(DEFAULT_HTTP_PORT, "127.0.0.1", taken=frozenset({p2p, api})),
        announce=_toml_list(announce or []),
        bootstrap=_toml_list(bootstrap or []),
        registry=_setting_line("registry_address", registry_address),
        market=_setting_line("market_address", market_address),
    )
    _check_config(text, settings.home)
    # The key first: a refused or interrupted password prompt leaves no home without a key.
    keystore = settings.keys.keystore
    password = read_password(settings, confirm=not keystore.exists())
    settings.home.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = unlock_keystore(keystore, password) if keystore.exists() else create_keystore(keystore, password)
    config_path.write_text(text)
    summary = {"home": str(settings.home), "config": str(config_path), "address": str(key.address)}
    if as_json:
        typer.echo(json.dumps(summary))
        return
    console.print(f"home     {summary['home']}")
    console.print(f"config   {summary['config']}")
    console.print(f"address  {summary['address']}")
    console.print("next:")
    deployed = registry_address is not None and market_address is not None
    for step in next_steps(provider=provider, rpc_url=rpc_url, deployed=deployed):
        console.print(f"  {step}")


def next_steps(*, provider: bool, rpc_url: str, deployed: bool = False) -> list[str]:
    """What to run after `init`, in order, as the README's "Using a node" shows it."""
    steps = []
    if rpc_url != "embedded":
        steps.append("gpunode keys fund --from-dev      # a dev chain; elsewhere send it ETH")
    if not deployed:
        steps.append("gpunode contracts deploy --dev --write-config   # once per chain")
    steps.append("gpunode doctor")
    if provider:
        steps += ["gpunode provider register", "gpunode provider start"]
    else:
        steps += ["gpunode node start", "gpunode deposit 100000000000000000"]
    return steps


def free_port(preferred: int, host: str, *, taken: frozenset[int] = frozenset()) -> int:
    """The first port from `preferred` up that nothing listens on and `taken` does not hold, so a
    second home on one machine does not clash with the first. Never one the system hands out for
    the moment: such a port is soon some connection's source port, or the next pick."""
    for port in range(preferred, preferred + PORT_SEARCH):
        if port in taken:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((host, port))
            except OSError:
                continue
        return port
    raise ConfigError(
        f"no free TCP port from {preferred} to {preferred + PORT_SEARCH - 1}",
        hint="pass --p2p-port and --api-port",
    )


def _setting_line(key: str, value: str | None) -> str:
    return f'{key} = "{value}"' if value else f'# {key} = "0x…"'


def _toml_list(values: list[str]) -> str:
    return json.dumps(values)


def _check_config(text: str, home: Path) -> None:
    """Refuse bad options before anything is written, naming the option."""
    with tempfile.TemporaryDirectory() as scratch:
        candidate = Path(scratch) / "config.toml"
        candidate.write_text(text)
        load_settings(candidate, home=home)
