"""`gpunode node`: a running node's identity, chain and overlay."""

from __future__ import annotations

from collections.abc import Sequence

import typer

from node.api.client import ApiClient
from node.cli.output import console, jsonable, key_value_table, peers_table, print_json
from node.cli.remote import (
    ApiOption,
    ConfigOption,
    JsonOption,
    call_node,
    cli_settings,
    exit_on_error,
    run_node_in_foreground,
)
from node.config import P2PSettings, load_settings
from node.domain.service import NodeStatusView, PeerView

app = typer.Typer(name="node", help="Run a node and inspect a running one.", no_args_is_help=True)


@app.command("start")
def start(config: ConfigOption = None) -> None:
    """Run this node in the foreground (a client; a provider too if provider.enabled) until Ctrl-C."""
    with exit_on_error():
        settings = load_settings(config)
    run_node_in_foreground(settings, "provider" if settings.provider.enabled else "client")


@app.command("status")
def status(api: ApiOption = None, as_json: JsonOption = False, config: ConfigOption = None) -> None:
    """The node's address, peer id, listen addresses, chain and contracts."""

    async def work(client: ApiClient) -> NodeStatusView:
        return await client.node_status()

    view = call_node(api, config, work)
    if as_json:
        print_json(jsonable(view))
        return
    console.print(
        key_value_table(
            "node",
            {
                "address": view.address,
                "peer id": view.peer_id,
                "listening on": "\n".join(view.listen_addrs) or "-",
                "role": "provider and client" if view.provider else "client",
                "chain id": str(view.chain_id),
                "rpc": view.rpc_url,
                "block": str(view.block_number),
                "registry": view.registry_address,
                "market": view.market_address,
                "database": view.database,
            },
        )
    )


@app.command("peers")
def peers(api: ApiOption = None, as_json: JsonOption = False, config: ConfigOption = None) -> None:
    """The peers this node knows on the overlay, and which of them advertise as providers."""

    async def work(client: ApiClient) -> tuple[list[PeerView], NodeStatusView]:
        return list(await client.peers()), await client.node_status()

    found, view = call_node(api, config, work)
    if as_json:
        print_json({"peers": jsonable(found)})
    elif found:
        console.print(peers_table(found))
    else:
        console.print("no peers yet:")
        for reason in why_no_peers(view.listen_addrs, cli_settings(config).p2p):
            console.print(f"  {reason}")


def why_no_peers(listen_addrs: Sequence[str], p2p: P2PSettings) -> list[str]:
    """What stands between a node without peers and the overlay, and what to do about it."""
    reasons = [f"this node is reachable at {', '.join(listen_addrs) or 'no address'}"]
    if p2p.bootstrap:
        reasons.append(
            f"none of p2p.bootstrap answers ({', '.join(p2p.bootstrap)}): are those nodes running, "
            "and is their port open to this machine?"
        )
    else:
        reasons.append(
            "p2p.bootstrap is empty: add a running node's address (`gpunode node status` on it "
            "prints them) to p2p.bootstrap, or pass it to `gpunode init --bootstrap`"
        )
    if not p2p.mdns:
        reasons.append("p2p.mdns is off: set it to true to find nodes on this local network")
    else:
        reasons.append("mDNS found no node on this local network (it does not cross routers)")
    return reasons
