"""`gpunode doctor`'s checks of the node's own set-up: its key, its chain, the contracts, its ports.

Each says what to run when it fails; none is required for the sandbox checks' verdict, since a
machine can be ready to serve jobs before its node is configured.
"""

from __future__ import annotations

import asyncio
import os
import socket

from node.config import Settings
from node.errors import GpunodeError
from node.executor.checks import CheckResult, Status


def _check(name: str, status: Status, detail: str, fix: str = "") -> CheckResult:
    return CheckResult(name, status, detail, fix, required=False)


async def node_checks(settings: Settings) -> list[CheckResult]:
    return [check_key(settings), *await check_chain(settings), *check_ports(settings)]


def check_key(settings: Settings) -> CheckResult:
    from node.chain.keys import unlock_keystore

    keystore = settings.keys.keystore
    if not keystore.is_file():
        return _check("key", "fail", f"no keystore at {keystore}", "gpunode init")
    password = os.environ.get(settings.keys.password_env)
    if password is None:
        return _check("key", "warn", f"${settings.keys.password_env} is not set", "export it")
    try:
        key = unlock_keystore(keystore, password)
    except GpunodeError as exc:
        return _check("key", "fail", exc.message, f"check ${settings.keys.password_env}")
    return _check("key", "ok", str(key.address))


async def check_chain(settings: Settings) -> list[CheckResult]:
    chain = settings.chain
    if chain.rpc_url == "embedded":
        return [_check("chain", "warn", "the embedded chain: no one to trade with", "gpunode init --rpc-url")]
    from node.chain.client import ChainClient

    try:
        client = await asyncio.wait_for(ChainClient.connect(chain), timeout=10)
    except (GpunodeError, OSError, TimeoutError) as exc:
        return [_check("chain", "fail", f"{chain.rpc_url}: {exc}", "is the chain's node running?")]
    try:
        results = [_check("chain", "ok", f"{chain.rpc_url}, chain id {client.chain_id}")]
        missing = [n for n in ("registry_address", "market_address") if getattr(chain, n) is None]
        if missing:
            fix = "gpunode contracts deploy --write-config, or init --registry-address --market-address"
            results.append(_check("contracts", "fail", f"chain.{' and chain.'.join(missing)} not set", fix))
            return results
        addresses = [str(chain.registry_address), str(chain.market_address)]
        codes = [await client.w3.eth.get_code(client.w3.to_checksum_address(a)) for a in addresses]
        empty = [a for a, code in zip(addresses, codes, strict=True) if not code]
        if empty:
            detail = f"no contract at {', '.join(empty)} on this chain"
            results.append(_check("contracts", "fail", detail, "deploy them, or fix [chain]"))
        else:
            results.append(_check("contracts", "ok", f"registry {addresses[0]}, market {addresses[1]}"))
        return results
    finally:
        await client.close()


def check_ports(settings: Settings) -> list[CheckResult]:
    ports = [("p2p port", f"p2p.listen {a}", *_host_port_of_multiaddr(a)) for a in settings.p2p.listen]
    host, _, port = settings.api.listen.rpartition(":")
    ports.append(("API port", f"api.listen {settings.api.listen}", host, int(port)))
    results = []
    for name, what, bind_host, bind_port in ports:
        if bind_port is None or bind_port == 0:
            results.append(_check(name, "ok", f"{what}: any free port"))
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((bind_host, bind_port))
            except OSError as exc:
                detail = f"{what}: {exc.strerror} (this node already running, or another program?)"
                results.append(_check(name, "warn", detail, f"choose a free port in {what.split()[0]}"))
                continue
        results.append(_check(name, "ok", f"{what}: free"))
    return results


def _host_port_of_multiaddr(addr: str) -> tuple[str, int | None]:
    parts = addr.strip("/").split("/")
    try:
        return parts[1], int(parts[3])
    except (IndexError, ValueError):
        return "", None
