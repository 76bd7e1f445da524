"""One overlay node in its own process, driven by scripts/bench_p2p.py over stdin/stdout.

Commands (one JSON object per line on stdin): {"cmd": "connect", "addrs": [...]},
{"cmd": "topic_peers"}, {"cmd": "announce"}, {"cmd": "quit"}. Replies and events are JSON lines
on stdout; every advert this node's directory accepts is reported as {"seen": address, "seq":
sequence, "t": unix time}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from node.chain.client import ChainClient
from node.chain.keys import NodeKey
from node.chain.registry import ProviderRegistry
from node.config import ChainSettings, P2PSettings
from node.discovery.advert import Device, DeviceKind, ModelPrice, Offer, ProviderAdvert
from node.discovery.dht_records import dht_validators
from node.discovery.registry_view import CachedRegistryView
from node.discovery.service import DiscoveryService
from node.discovery.validation import AdvertValidator
from node.logging import configure_logging
from node.p2p.gossip import ADVERT_TOPIC
from node.p2p.host import P2PHost
from node.types import Address, sha256

MODEL = sha256(b"bench-model")


def emit(**fields: object) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def offer() -> Offer:
    return Offer(
        devices=(Device(DeviceKind.CUDA, "bench gpu", 80 * 2**30, "9.0"),),
        warm_models=(MODEL,),
        prices=(ModelPrice(MODEL, 10**15),),
        free_slots=8,
    )


async def serve(key: NodeKey, rpc_url: str, registry_address: str, peers: list[str]) -> None:
    client = await ChainClient.connect(ChainSettings(rpc_url=rpc_url))
    registry = CachedRegistryView(ProviderRegistry(client, registry_address), active_ttl_s=3600)
    # Warm the registry cache so the timed part measures the overlay, not RPC round trips.
    for address in peers:
        await registry.is_active(Address(address))
    settings = P2PSettings(advert_refresh_s=3600, advert_ttl_s=600, read_timeout_s=10)
    validator = AdvertValidator(registry, rate_per_s=10.0, rate_burst=20)
    async with (
        P2PHost.start(key, settings, dht_validators=dht_validators()) as host,
        DiscoveryService.start(host, registry, settings, key=key, validator=validator) as discovery,
    ):

        def seen(advert: ProviderAdvert) -> None:
            emit(seen=advert.address, seq=advert.sequence, t=time.time())

        discovery.directory.on_upsert.append(seen)
        emit(addr=host.addrs[0], address=host.address)
        reader = asyncio.StreamReader()
        await asyncio.get_running_loop().connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
        )
        while line := await reader.readline():
            command = json.loads(line)
            match command["cmd"]:
                case "connect":
                    for addr in command["addrs"]:
                        await host.connect(addr)
                    emit(ok="connect")
                case "topic_peers":
                    emit(
                        topic_peers=len(await host.topic_peers(ADVERT_TOPIC)),
                        connected=len(host.connected_peers()),
                    )
                case "announce":
                    started = time.time()
                    advert = await discovery.announce(offer())
                    emit(announced=advert.sequence, t=started)
                case "quit":
                    break
    await client.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--key", required=True, help="hex private key")
    parser.add_argument("--rpc-url", required=True)
    parser.add_argument("--registry", required=True)
    parser.add_argument("--peers-file", required=True, help="file with every node's address, one a line")
    args = parser.parse_args()
    configure_logging("ERROR")
    logging.getLogger("libp2p").setLevel(logging.CRITICAL)
    peers = Path(args.peers_file).read_text().split()
    asyncio.run(serve(NodeKey.from_private_key(bytes.fromhex(args.key)), args.rpc_url, args.registry, peers))


if __name__ == "__main__":
    main()
