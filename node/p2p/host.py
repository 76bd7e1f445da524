"""The libp2p host: TCP, Noise only, yamux, identify, ping, gossipsub, Kademlia DHT.

It runs in its own trio thread (see `bridge`); everything public here is asyncio-facing and
speaks plain strings and bytes, so nothing above `node.p2p` ever sees trio or libp2p types.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager

import trio
from libp2p.abc import INetStream
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.pubsub.pb import rpc_pb2
from libp2p.tools.anyio_service import background_trio_service

from node.config import P2PSettings
from node.errors import P2PError, PeerTimeout
from node.logging import get_logger
from node.p2p.addresses import dial_candidates
from node.p2p.bridge import TrioBridge
from node.p2p.errors import HostShuttingDown
from node.p2p.framing import DEFAULT_MAX_FRAME
from node.p2p.identity import PrivateKeyHolder, peer_id_to_address
from node.p2p.mdns import local_peer_discovery
from node.p2p.stack import (
    DIAL_TIMEOUT_S,
    RecordValidator,
    Stack,
    build_stack,
    check_port_free,
    drain_subscription,
    feed_routing_table,
    keep_bootstrap_connected,
    parse_multiaddr,
    still_valid,
    unblock,
)
from node.p2p.stream import FramedStream, P2PStream
from node.p2p.subscription import Subscription
from node.types import Address

__all__ = [
    "P2PHost",
    "QuickTopicValidator",
    "RecordValidator",
    "StreamHandler",
    "TopicValidator",
    "TrioStreamHandler",
]

log = get_logger(__name__)

# Inbound streams served by asyncio handlers at once (a job or blob request each).
INBOUND_HANDLER_CREDITS = 256
# Closing connections on shutdown may take this long before we just drop them.
SHUTDOWN_TIMEOUT_S = 5.0

StreamHandler = Callable[[P2PStream], Awaitable[None]]
TopicValidator = Callable[[str, bytes], Awaitable[bool]]
QuickTopicValidator = Callable[[str, bytes], bool | None]
TrioStreamHandler = Callable[[FramedStream], Awaitable[None]]


class P2PHost:
    """The node's libp2p host. Create with `async with P2PHost.start(key, settings) as host:`."""

    def __init__(self, bridge: TrioBridge, stack: Stack, settings: P2PSettings) -> None:
        self._bridge = bridge
        self._stack = stack
        self._settings = settings
        self._inbound_credits = trio.CapacityLimiter(INBOUND_HANDLER_CREDITS)
        self.peer_id: str = str(stack.host.get_id())
        self.address: Address = peer_id_to_address(stack.host.get_id())

    @classmethod
    @asynccontextmanager
    async def start(
        cls,
        key: PrivateKeyHolder | bytes,
        settings: P2PSettings,
        *,
        dht_validators: Mapping[str, RecordValidator] | None = None,
    ) -> AsyncIterator[P2PHost]:
        """Listen on `settings.listen`, join the DHT, dial the bootstrap peers; stop cleanly on exit."""
        for addr in settings.listen:
            check_port_free(addr)
        stack = build_stack(key, settings, dht_validators or {})
        listen = [parse_multiaddr(a) for a in settings.listen]

        @asynccontextmanager
        async def serve(bridge: TrioBridge) -> AsyncIterator[None]:
            async with (
                stack.host.run(listen),
                background_trio_service(stack.pubsub),
                background_trio_service(stack.gossipsub),
                background_trio_service(stack.dht),
            ):
                if not stack.host.get_transport_addrs():
                    # py-libp2p logs a failed bind and carries on without a listener.
                    raise P2PError(
                        f"cannot listen on {settings.listen}",
                        hint="is the port taken? choose a free one in p2p.listen of the config",
                    )
                async with trio.open_nursery() as nursery:
                    stack.nursery = nursery
                    await stack.pubsub.wait_until_ready()
                    nursery.start_soon(keep_bootstrap_connected, stack, settings.bootstrap)
                    nursery.start_soon(feed_routing_table, stack)
                    async with AsyncExitStack() as extras:
                        if settings.mdns:
                            stack.mdns = await extras.enter_async_context(
                                local_peer_discovery(stack.host, nursery)
                            )
                        try:
                            yield
                        finally:
                            nursery.cancel_scope.cancel()
                # Close connections explicitly: cancelled tasks leave sockets open, and peers
                # would keep us in their pubsub and DHT state until the sockets time out.
                with trio.move_on_after(SHUTDOWN_TIMEOUT_S):
                    await stack.host.close()

        running = TrioBridge.running(serve)
        try:
            bridge = await running.__aenter__()
        except OSError as exc:
            raise P2PError(
                f"cannot listen on {settings.listen}: {exc}",
                hint="choose a free port in p2p.listen of the config",
            ) from exc
        try:
            host = cls(bridge, stack, settings)
            log.info("p2p_host_started", peer_id=host.peer_id, address=host.address, addrs=host.addrs)
            yield host
        except BaseException as exc:
            if not await running.__aexit__(type(exc), exc, exc.__traceback__):
                raise
        else:
            await running.__aexit__(None, None, None)
        log.info("p2p_host_stopped", peer_id=stack.host.get_id().to_base58())

    @property
    def read_timeout_s(self) -> float:
        return self._settings.read_timeout_s

    @property
    def job_timeout_s(self) -> float:
        return self._settings.job_timeout_s

    # identity and connections -----------------------------------------------------------------

    @property
    def addrs(self) -> list[str]:
        """Dialable multiaddrs, each ending in /p2p/<peer id>."""
        return [str(a) for a in self._stack.host.get_addrs()]

    async def connect(self, addr: str) -> str:
        """Dial a full multiaddr (…/p2p/<peer id>); returns the peer id."""
        info = info_from_p2p_addr(parse_multiaddr(addr))

        async def dial() -> None:
            with trio.move_on_after(DIAL_TIMEOUT_S):
                unblock(self._stack, info.peer_id)
                if info.peer_id not in self._stack.host.get_connected_peers():
                    # The swarm dials only the first TCP address it knows for a peer: forget the
                    # others, so that this address is the one tried.
                    self._stack.host.get_peerstore().clear_addrs(info.peer_id)
                await self._stack.host.connect(info)
                await self._stack.dht.add_peer(info.peer_id, skip_server_mode_check=True)
                return
            raise PeerTimeout(f"dialling {addr} took longer than {DIAL_TIMEOUT_S} s")

        try:
            await self._bridge.call(dial)
        except P2PError:
            raise
        except Exception as exc:
            raise P2PError(
                f"cannot connect to {addr}: {exc}", hint="is the peer running and reachable?"
            ) from exc
        return str(info.peer_id)

    @property
    def bootstrap(self) -> list[str]:
        return list(self._settings.bootstrap)

    @property
    def mdns(self) -> bool:
        """Whether this node looks for peers on the local network (and could start doing so)."""
        return self._stack.mdns

    async def connect_any(self, addrs: Iterable[str], peer_id: str) -> str | None:
        """Dial `peer_id` at the first of its advertised `addrs` that answers; the address, or
        None when none did. Only `dial_candidates` are tried: a peer's garbage costs nothing."""
        if peer_id in self.connected_peers():
            return "connected"
        for addr in dial_candidates(addrs, peer_id):
            try:
                await self.connect(addr)
            except P2PError as exc:
                log.info("peer_dial_failed", peer=peer_id, addr=addr, error=str(exc))
                continue
            return addr
        return None

    def connected_peers(self) -> list[str]:
        return [str(p) for p in self._stack.host.get_connected_peers()]

    async def disconnect(self, peer: str) -> None:
        await self._bridge.call(self._stack.host.disconnect, ID.from_base58(peer))

    async def ping(self, peer: str) -> float:
        """Round trip to `peer` in milliseconds over /ipfs/ping/1.0.0."""
        from libp2p.host.ping import PingService

        async def ping() -> list[int]:
            with trio.move_on_after(DIAL_TIMEOUT_S):
                return await PingService(self._stack.host).ping(ID.from_base58(peer))
            raise PeerTimeout(f"peer {peer} did not answer a ping within {DIAL_TIMEOUT_S} s")

        rtts = await self._bridge.call(ping)
        return float(rtts[0]) if rtts else float("nan")

    # streams ----------------------------------------------------------------------------------

    def set_stream_handler(
        self, protocol: str, handler: StreamHandler, *, max_frame: int = DEFAULT_MAX_FRAME
    ) -> None:
        """Serve `protocol` with an asyncio handler; its exceptions are logged, never swallowed.

        At most `INBOUND_HANDLER_CREDITS` handlers run at once on the asyncio side; further
        streams wait in the p2p thread, which pushes back on the peers opening them.
        """
        bridge, read_timeout, credits = self._bridge, self._settings.read_timeout_s, self._inbound_credits

        async def on_stream(framed: FramedStream) -> None:
            async with credits:
                await bridge.to_asyncio(handler, P2PStream(framed, bridge, read_timeout=read_timeout))

        self.set_trio_stream_handler(protocol, on_stream, max_frame=max_frame)

    def set_trio_stream_handler(
        self, protocol: str, handler: TrioStreamHandler, *, max_frame: int = DEFAULT_MAX_FRAME
    ) -> None:
        """Serve `protocol` with a handler that runs in the p2p thread (bulk transfers)."""

        async def on_stream(stream: INetStream) -> None:
            framed = FramedStream(stream, max_frame=max_frame)
            try:
                await handler(framed)
            except HostShuttingDown:
                # A stream cut by our own shutdown is expected; its peer sees the reset.
                log.debug("stream_closed_by_shutdown", protocol=protocol, peer=framed.remote_peer)
                await framed.reset()
                return
            except Exception as exc:
                # py-libp2p drops handler exceptions silently; the stream must not just hang.
                log.warning(
                    "stream_handler_failed", protocol=protocol, peer=framed.remote_peer, error=str(exc)
                )
                await framed.reset()
                return
            await framed.close()

        self._bridge.call_soon(self._stack.host.set_stream_handler, TProtocol(protocol), on_stream)

    async def open_stream(self, peer: str, protocol: str, *, max_frame: int = DEFAULT_MAX_FRAME) -> P2PStream:
        framed = await self._bridge.call(self.open_trio_stream, peer, protocol, max_frame)
        return P2PStream(framed, self._bridge, read_timeout=self._settings.read_timeout_s)

    async def open_trio_stream(
        self, peer: str, protocol: str, max_frame: int = DEFAULT_MAX_FRAME
    ) -> FramedStream:
        """In the p2p thread: a framed stream to `peer` speaking `protocol`."""
        with trio.move_on_after(DIAL_TIMEOUT_S):
            try:
                stream = await self._stack.host.new_stream(ID.from_base58(peer), [TProtocol(protocol)])
            except Exception as exc:
                raise P2PError(
                    f"cannot open {protocol} to {peer}: {exc}", hint="is the peer up and serving it?"
                ) from exc
            return FramedStream(stream, max_frame=max_frame)
        raise PeerTimeout(f"opening {protocol} to {peer} took longer than {DIAL_TIMEOUT_S} s")

    async def run_in_p2p_thread(self, fn: Callable[..., Awaitable[object]], *args: object) -> object:
        """Run a coroutine function in the p2p thread (for bulk work over trio streams)."""
        return await self._bridge.call(fn, *args)

    # gossip -----------------------------------------------------------------------------------

    async def publish(self, topic: str, data: bytes) -> None:
        try:
            await self._bridge.call(self._stack.pubsub.publish, topic, data)
        except P2PError:
            raise
        except Exception as exc:
            raise P2PError(f"cannot publish on {topic}: {exc}") from exc

    async def subscribe(
        self,
        topic: str,
        validator: TopicValidator | None = None,
        *,
        quick_validator: QuickTopicValidator | None = None,
        queue_size: int = 4096,
    ) -> Subscription:
        """Join `topic`. `validator(source, data)` runs before a message is relayed or delivered.

        `quick_validator(source, data)`, if given, runs first in the p2p thread and must not
        block: True or False is the verdict, None hands the message to `validator` on the
        asyncio side. It saves two thread hops per message in the common case.
        """
        loop = asyncio.get_running_loop()
        subscription = Subscription(topic, queue_size)
        bridge = self._bridge

        async def join() -> None:
            if validator is not None:

                async def check(_forwarder: ID, msg: rpc_pb2.Message) -> bool:
                    source, data = str(ID(msg.from_id)), bytes(msg.data)
                    try:
                        verdict = quick_validator(source, data) if quick_validator is not None else None
                        if verdict is None:
                            verdict = await bridge.to_asyncio(validator, source, data)
                    except Exception as exc:
                        log.warning("topic_validator_failed", topic=topic, error=str(exc))
                        return False
                    return verdict

                self._stack.pubsub.set_topic_validator(topic, check, True)
            sub = await self._stack.pubsub.subscribe(topic)
            if self._stack.nursery is None:
                raise HostShuttingDown
            self._stack.nursery.start_soon(drain_subscription, sub, subscription, loop)

        await self._bridge.call(join)
        return subscription

    async def topic_peers(self, topic: str) -> list[str]:
        """Peers known to be subscribed to `topic` (those our gossip can reach directly)."""

        async def read() -> list[str]:
            return [str(p) for p in self._stack.pubsub.peer_topics.get(topic, ())]

        return await self._bridge.call(read)

    # DHT --------------------------------------------------------------------------------------

    async def dht_put(self, key: str, value: bytes) -> None:
        try:
            await self._bridge.call(self._stack.dht.put_value, key, value)
        except Exception as exc:
            raise P2PError(f"cannot store {key} in the DHT: {exc}") from exc

    async def dht_get(self, key: str, *, timeout_s: float = DIAL_TIMEOUT_S) -> bytes | None:
        """The best valid value stored under `key`, or None when no peer has one."""

        dht = self._stack.dht

        async def get() -> bytes | None:
            with trio.move_on_after(timeout_s):
                value: bytes | None = await dht.get_value(key)
                if value is not None and not still_valid(dht, key, value):
                    # get_value answers from the local store first, even with a record that
                    # has expired since; drop it so the lookup goes to the network.
                    dht.value_store.remove(key.encode())
                    value = await dht.get_value(key)
                return value
            raise PeerTimeout(f"DHT lookup of {key} took longer than {timeout_s} s")

        try:
            return await self._bridge.call(get)
        except P2PError:
            raise
        except Exception as exc:
            raise P2PError(f"DHT lookup of {key} failed: {exc}") from exc
