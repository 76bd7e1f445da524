"""`gpunode provider`: run a provider node, register it on-chain, see its standing, settle earnings."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Annotated

import typer
from rich.table import Table

from node.api.client import ApiClient
from node.cli.output import (
    console,
    format_wei,
    format_wei_exact,
    jsonable,
    key_value_table,
    print_json,
)
from node.cli.remote import (
    ApiOption,
    ConfigOption,
    JsonOption,
    call_node,
    cli_settings,
    exit_on_error,
    run_node_in_foreground,
)
from node.config import Settings, load_settings
from node.domain.service import EarningsView, ProviderStatusView
from node.logging import get_logger
from node.types import sha256

app = typer.Typer(name="provider", help="Run and manage a provider node.", no_args_is_help=True)
log = get_logger(__name__)


@app.command("start")
def start(config: ConfigOption = None) -> None:
    """Run a provider node in the foreground until Ctrl-C (SIGINT) or SIGTERM."""
    with exit_on_error():
        # Deep-merged over the file: only `enabled` is forced, every other provider setting stays.
        settings = load_settings(config, provider={"enabled": True})
    run_node_in_foreground(settings, "provider")


@dataclass(frozen=True, slots=True)
class Registration:
    address: str
    peer_id: str
    stake_wei: int
    newly_registered: bool
    tx_hash: str | None


@app.command("register")
def register(
    stake: Annotated[
        int | None, typer.Option(help="stake in wei (default: provider.stake_wei from the settings)", min=0)
    ] = None,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Register this node's key as a provider in the on-chain registry, with a stake."""
    with exit_on_error():
        settings = cli_settings(config)
        done = asyncio.run(_register(settings, settings.provider.stake_wei if stake is None else stake))
    if as_json:
        print_json(jsonable(done))
    elif done.newly_registered:
        console.print(
            f"registered {done.address} with a stake of {format_wei(done.stake_wei)} (tx {done.tx_hash})"
        )
    else:
        console.print(f"{done.address} is already registered, stake {format_wei(done.stake_wei)}")


async def _register(settings: Settings, stake_wei: int) -> Registration:
    # The node's whole stack (libp2p, web3, the executor) loads only for the commands that need it,
    # so `gpunode --help` and the API commands start quickly.
    from node.app import build_chain, load_key
    from node.chain.registry import ContractInputError
    from node.p2p.identity import peer_id_from, peer_id_to_bytes

    key = load_key(settings)
    contracts = await build_chain(settings)
    try:
        registry = contracts.registry
        peer_id = str(peer_id_from(key))
        record = await registry.provider(key.address)
        if record.registered:
            return Registration(key.address, peer_id, record.stake, newly_registered=False, tx_hash=None)
        minimum = await registry.min_stake()
        if stake_wei < minimum:
            raise ContractInputError(
                f"a stake of {stake_wei} wei is below the registry's minimum of {minimum} wei",
                hint=f"pass --stake {minimum} (or more), or raise provider.stake_wei",
            )
        event = await registry.register(
            peer_id_to_bytes(peer_id), sha256(peer_id.encode()), stake=stake_wei, sender=key.account
        )
        log.info("provider_registered", address=key.address, stake=stake_wei, tx=event.tx.tx_hash)
        return Registration(
            key.address, peer_id, event.stake, newly_registered=True, tx_hash=event.tx.tx_hash
        )
    finally:
        await contracts.client.close()


@app.command("status")
def status(api: ApiOption = None, as_json: JsonOption = False, config: ConfigOption = None) -> None:
    """The provider's registration, stake, models, load and earnings."""

    async def work(client: ApiClient) -> tuple[ProviderStatusView, EarningsView]:
        return await client.provider_status(), await client.earnings()

    view, earnings = call_node(api, config, work)
    if as_json:
        print_json({"status": jsonable(view), "earnings": jsonable(earnings)})
        return
    console.print(_status_table(view, earnings))


def _status_table(view: ProviderStatusView, earnings: EarningsView) -> Table:
    standing = "active" if view.active else "registered, not active" if view.registered else "not registered"
    return key_value_table(
        f"provider {view.address}",
        {
            "standing": standing,
            "serving jobs": "yes" if view.enabled else "no",
            "stake": format_wei(view.stake_wei),
            "price per job": format_wei_exact(view.price_per_job_wei),
            "models": "\n".join(view.models) or "-",
            "warm models": "\n".join(view.warm_models) or "-",
            "running / queued": f"{view.running} / {view.queued}",
            "holds waiting / granted": f"{view.holds_waiting} / {view.holds_granted}",
            "jobs served": str(view.jobs_served),
            "open disputes (stake locked)": str(view.open_disputes),
            "jury duties served": str(view.jury_duties_served),
            "vouchers to redeem": format_wei(earnings.unredeemed_voucher_wei),
            "vouchers redeemed": format_wei(earnings.redeemed_voucher_wei),
            "on-chain, in challenge window": format_wei(earnings.pending_onchain_wei),
            "withdrawable": format_wei(earnings.withdrawable_wei),
            "paid jobs": str(earnings.paid_jobs),
        },
    )


@app.command("settle")
def settle(api: ApiOption = None, as_json: JsonOption = False, config: ConfigOption = None) -> None:
    """Redeem vouchers, finalize on-chain jobs past their window and withdraw, now."""
    report = call_node(api, config, lambda client: client.settle())
    if as_json:
        print_json(jsonable(report))
        return
    console.print(
        key_value_table(
            "settlement",
            {
                "vouchers redeemed": f"{report.vouchers_redeemed} ({format_wei(report.redeemed_wei)})",
                "on-chain jobs finalized": f"{report.jobs_finalized} ({format_wei(report.finalized_wei)})",
                "withdrawn": format_wei(report.withdrawn_wei),
                "transactions": "\n".join(report.transactions) or "none",
            },
        )
    )
