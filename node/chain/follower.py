"""Follows contract events with a confirmation depth, in bounded block ranges, from a saved cursor.

Delivery is at least once: a batch is handed to the handler first and the cursor (the last block
fully handled) is saved only after the handler returns, so a crash in between re-delivers that
batch on restart and never skips one. Only blocks at least `confirmations` deep are read, so a
shallow reorganisation cannot retract a delivered event. Waiting for new blocks polls the RPC at
`chain.poll_interval_s` (JSON-RPC over HTTP offers nothing to wait on), never in a tight loop.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from eth_utils.abi import event_abi_to_log_topic
from web3.contract import AsyncContract
from web3.contract.async_contract import AsyncContractEvent
from web3.types import FilterParams, LogReceipt

from node.chain.client import ChainClient
from node.errors import ChainError, StorageError
from node.logging import get_logger

log = get_logger(__name__)

DEFAULT_MAX_BLOCK_RANGE = 1_000


@dataclass(frozen=True, slots=True)
class ChainEvent:
    """One decoded contract event."""

    name: str
    args: Mapping[str, Any]
    address: str
    block_number: int
    log_index: int
    transaction_hash: str


@dataclass(frozen=True, slots=True)
class EventBatch:
    """The events of blocks `from_block..to_block` (inclusive), in chain order."""

    from_block: int
    to_block: int
    events: tuple[ChainEvent, ...]


class CursorStore(Protocol):
    """Where a follower keeps the last block it has fully handled, by follower name."""

    def load(self, name: str) -> int | None: ...

    def save(self, name: str, block: int) -> None: ...


EventHandler = Callable[[Sequence[ChainEvent]], Awaitable[None]]


class JsonCursorStore:
    """Cursors in one small JSON file, replaced atomically on each save."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self, name: str) -> int | None:
        value = self._read().get(name)
        if value is not None and (not isinstance(value, int) or value < 0):
            raise StorageError(f"cursor {name!r} in {self.path} is {value!r}, not a block number")
        return value

    def save(self, name: str, block: int) -> None:
        if block < 0:
            raise StorageError(f"cursor {name!r} cannot be saved as block {block}")
        cursors = self._read()
        cursors[name] = block
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}.tmp")
        temporary.write_text(json.dumps(cursors, sort_keys=True))
        os.replace(temporary, self.path)

    def _read(self) -> dict[str, Any]:
        try:
            document = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, json.JSONDecodeError) as exc:
            raise StorageError(
                f"cursor file {self.path} is unreadable: {exc}",
                hint="delete it to re-read events from the follower's start block",
            ) from exc
        if not isinstance(document, dict):
            raise StorageError(f"cursor file {self.path} does not hold a JSON object")
        return document


class EventFollower:
    """Delivers the events of one or more contracts to a handler, batch by batch."""

    def __init__(
        self,
        client: ChainClient,
        contracts: AsyncContract | Sequence[AsyncContract],
        *,
        name: str,
        cursors: CursorStore,
        confirmations: int | None = None,
        poll_interval_s: float | None = None,
        start_block: int = 0,
        max_block_range: int = DEFAULT_MAX_BLOCK_RANGE,
        events: Collection[str] | None = None,
    ) -> None:
        if max_block_range < 1:
            raise ChainError(f"max_block_range must be at least 1, got {max_block_range}")
        self.client = client
        self.name = name
        self.cursors = cursors
        self.confirmations = client.settings.confirmations if confirmations is None else confirmations
        self.poll_interval_s = client.settings.poll_interval_s if poll_interval_s is None else poll_interval_s
        self.start_block = start_block
        self.max_block_range = max_block_range
        chosen = [contracts] if isinstance(contracts, AsyncContract) else list(contracts)
        self._addresses = [contract.address for contract in chosen]
        self._decoders = _event_decoders(chosen, events)
        self.ready = asyncio.Event()
        self._stopping = asyncio.Event()

    async def next_batch(self) -> EventBatch | None:
        """The next range of confirmed blocks and its events, or None when there is none yet."""
        cursor = self.cursors.load(self.name)
        first = self.start_block if cursor is None else cursor + 1
        safe_head = await self.client.block_number() - self.confirmations
        if safe_head < first:
            return None
        last = min(safe_head, first + self.max_block_range - 1)
        logs = await self._logs(first, last)
        return EventBatch(first, last, tuple(self._decode(entry) for entry in logs))

    def commit(self, batch: EventBatch) -> None:
        """Record that `batch` has been handled; call only after handling it."""
        self.cursors.save(self.name, batch.to_block)

    async def catch_up(self, handler: EventHandler) -> int:
        """Handle every confirmed batch there is now; returns the number of events delivered."""
        delivered = 0
        while (batch := await self.next_batch()) is not None:
            if batch.events:
                await handler(batch.events)
            self.commit(batch)
            delivered += len(batch.events)
            log.debug(
                "follower_batch",
                follower=self.name,
                blocks=(batch.from_block, batch.to_block),
                events=len(batch.events),
            )
        return delivered

    async def run(self, handler: EventHandler) -> None:
        """Catch up, set `ready`, then keep delivering new events until `stop()` or cancellation."""
        log.info("follower_started", follower=self.name, confirmations=self.confirmations)
        while not self._stopping.is_set():
            await self.catch_up(handler)
            self.ready.set()
            try:
                await asyncio.wait_for(self._stopping.wait(), self.poll_interval_s)
            except TimeoutError:
                continue
        log.info("follower_stopped", follower=self.name)

    def stop(self) -> None:
        self._stopping.set()

    async def _logs(self, first: int, last: int) -> list[LogReceipt]:
        params: FilterParams = {"fromBlock": first, "toBlock": last, "address": self._addresses}
        entries = await self.client.get_logs(params)
        kept = [entry for entry in entries if not entry.get("removed", False) and self._known(entry)]
        return sorted(kept, key=lambda entry: (entry["blockNumber"], entry["logIndex"]))

    def _known(self, entry: LogReceipt) -> bool:
        topics = entry["topics"]
        return bool(topics) and bytes(topics[0]) in self._decoders

    def _decode(self, entry: LogReceipt) -> ChainEvent:
        event = self._decoders[bytes(entry["topics"][0])]
        data = event.process_log(entry)
        return ChainEvent(
            name=data["event"],
            args=dict(data["args"]),
            address=data["address"],
            block_number=data["blockNumber"],
            log_index=data["logIndex"],
            transaction_hash=data["transactionHash"].to_0x_hex(),
        )


def _event_decoders(
    contracts: Sequence[AsyncContract], names: Collection[str] | None
) -> dict[bytes, AsyncContractEvent]:
    decoders: dict[bytes, AsyncContractEvent] = {}
    for contract in contracts:
        for event in contract.all_events():
            if names is None or event.name in names:
                decoders[event_abi_to_log_topic(event.abi)] = event
    if names is not None:
        missing = set(names) - {event.name for event in decoders.values()}
        if missing:
            raise ChainError(f"the followed contracts declare no event named {', '.join(sorted(missing))}")
    return decoders
