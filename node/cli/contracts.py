"""`gpunode contracts deploy`: put ProviderRegistry and JobMarket on a chain, from the node's key."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from node.chain.client import ChainClient
from node.chain.deploy import Deployment, deploy_contracts
from node.chain.keys import unlock_keystore
from node.cli.config_file import set_in_section
from node.cli.keys import read_password
from node.cli.remote import ConfigOption, JsonOption, cli_settings, exit_on_error

app = typer.Typer(name="contracts", help="Deploy gpunode's contracts.", no_args_is_help=True)
console = Console()

DAY_S = 24 * 3600
WEEK_S = 7 * DAY_S
# `--dev`: a chain whose clock is the wall clock can finalize and withdraw within minutes.
DEV_CHALLENGE_WINDOW_S = 60
DEV_WITHDRAWAL_DELAY_S = 60
DEV_UNSTAKE_COOLDOWN_S = 7200


@app.command("deploy")
def deploy(
    rpc_url: Annotated[str | None, typer.Option(help="chain JSON-RPC URL (default: chain.rpc_url)")] = None,
    min_stake_wei: Annotated[
        int, typer.Option(min=1, help="smallest stake a provider may register with")
    ] = 10**18,
    unstake_cooldown_s: Annotated[
        int, typer.Option(min=0, help="wait between unstake request and withdrawal")
    ] = 7 * 24 * 3600,
    challenge_window_s: Annotated[
        int, typer.Option(min=1, help="time to prove equivocation before payment")
    ] = 3600,
    withdrawal_delay_s: Annotated[
        int, typer.Option(min=0, help="wait before a client's deposit leaves, so providers can redeem first")
    ] = DAY_S,
    dev: Annotated[
        bool,
        typer.Option(
            "--dev",
            help=f"a dev chain's short times: {DEV_CHALLENGE_WINDOW_S} s challenge window and "
            f"withdrawal delay, {DEV_UNSTAKE_COOLDOWN_S} s unstake cooldown",
        ),
    ] = False,
    write_config: Annotated[
        bool, typer.Option("--write-config", help="write the addresses into [chain] of this node's config")
    ] = False,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Deploy both contracts from this node's key and print the addresses to put in the config."""
    if dev:
        unstake_cooldown_s = DEV_UNSTAKE_COOLDOWN_S
        challenge_window_s = DEV_CHALLENGE_WINDOW_S
        withdrawal_delay_s = DEV_WITHDRAWAL_DELAY_S
    with exit_on_error():
        settings = cli_settings(config)
        chain_settings = settings.chain.model_copy(update={"rpc_url": rpc_url or settings.chain.rpc_url})
        key = unlock_keystore(settings.keys.keystore, read_password(settings, confirm=False))

        async def run() -> tuple[int, Deployment]:
            client = await ChainClient.connect(chain_settings)
            try:
                deployment = await deploy_contracts(
                    client,
                    key.account,
                    min_stake=min_stake_wei,
                    unstake_cooldown_s=unstake_cooldown_s,
                    challenge_window_s=challenge_window_s,
                    withdrawal_delay_s=withdrawal_delay_s,
                )
                return client.chain_id, deployment
            finally:
                await client.close()

        chain_id, deployment = asyncio.run(run())
    summary = {
        "chain_id": chain_id,
        "registry_address": deployment.registry.address,
        "market_address": deployment.market.address,
    }
    config_path = config or Path(settings.home) / "config.toml"
    if write_config:
        with exit_on_error():
            set_in_section(
                config_path,
                "chain",
                {
                    "rpc_url": chain_settings.rpc_url,
                    "registry_address": str(summary["registry_address"]),
                    "market_address": str(summary["market_address"]),
                },
            )
    if as_json:
        typer.echo(json.dumps(summary))
        return
    registry, market = summary["registry_address"], summary["market_address"]
    if write_config:
        console.print(f"deployed on chain {chain_id}; written to [chain] of {config_path}")
    else:
        console.print(f"deployed on chain {chain_id}; add to [chain] of {config_path}:\n")
        console.print(f'registry_address = "{registry}"\nmarket_address = "{market}"\n')
    # Unwrapped, so that it can be copied as one line.
    console.print(
        f"other nodes on this chain: gpunode init … --registry-address {registry} --market-address {market}",
        soft_wrap=True,
    )
