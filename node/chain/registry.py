"""Typed wrapper of the ProviderRegistry contract: stake, register, unstake, look providers up.

State-changing methods simulate, send and wait through `ChainClient.transact` and return the
decoded event the contract emitted, with the transaction's hash, block and gas.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from eth_account.signers.local import LocalAccount
from eth_utils.address import is_address, to_checksum_address
from web3.contract import AsyncContract
from web3.contract.async_contract import AsyncContractEvent
from web3.logs import DISCARD
from web3.types import EventData, TxReceipt

from node.chain.artifacts import load_artifact
from node.chain.client import ChainClient
from node.errors import ChainError
from node.types import Address, Hash32

ZERO_ADDRESS = Address("0x" + "00" * 20)

E = TypeVar("E")


class ContractInputError(ChainError):
    """A contract call was refused before anything was sent: an argument is malformed."""


@dataclass(frozen=True, slots=True)
class TxInfo:
    """Where a state change landed."""

    tx_hash: str
    block_number: int
    gas_used: int

    @classmethod
    def of(cls, receipt: TxReceipt) -> TxInfo:
        return cls(
            tx_hash=receipt["transactionHash"].to_0x_hex(),
            block_number=int(receipt["blockNumber"]),
            gas_used=int(receipt["gasUsed"]),
        )


@dataclass(frozen=True, slots=True)
class ProviderRecord:
    """What the registry holds about one provider."""

    address: Address
    registered: bool
    stake: int
    unstake_at: int  # unix time the stake can be withdrawn; 0 while not unstaking
    peer_id: bytes
    metadata_hash: Hash32

    @property
    def unstaking(self) -> bool:
        return self.unstake_at != 0


@dataclass(frozen=True, slots=True)
class ProviderRegistered:
    provider: Address
    peer_id: bytes
    metadata_hash: Hash32
    stake: int
    tx: TxInfo


@dataclass(frozen=True, slots=True)
class StakeAdded:
    provider: Address
    amount: int
    stake: int
    tx: TxInfo


@dataclass(frozen=True, slots=True)
class MetadataUpdated:
    provider: Address
    metadata_hash: Hash32
    tx: TxInfo


@dataclass(frozen=True, slots=True)
class UnstakeRequested:
    provider: Address
    unstake_at: int
    tx: TxInfo


@dataclass(frozen=True, slots=True)
class StakeWithdrawn:
    provider: Address
    amount: int
    tx: TxInfo


def checksum(value: str, what: str) -> Address:
    """A checksummed address, or a ContractInputError naming `what`."""
    if not isinstance(value, str) or not is_address(value):
        raise ContractInputError(f"{what} {value!r} is not an Ethereum address")
    return Address(to_checksum_address(value))


def bytes32(value: bytes, what: str) -> Hash32:
    if not isinstance(value, bytes | bytearray) or len(value) != 32:
        size = len(value) if isinstance(value, bytes | bytearray) else type(value).__name__
        raise ContractInputError(f"{what} must be 32 bytes, got {size}")
    return Hash32(bytes(value))


def wei(value: int, what: str, *, positive: bool = True) -> int:
    if not isinstance(value, int) or value < (1 if positive else 0) or value >= 2**256:
        raise ContractInputError(
            f"{what} must be {'a positive' if positive else 'a'} wei amount, got {value!r}"
        )
    return value


def single_event(event: AsyncContractEvent, receipt: TxReceipt) -> EventData:
    """The one `event` log in `receipt`; its absence means the ABI and the contract disagree."""
    found = events_in(event, receipt)
    if len(found) != 1:
        raise ChainError(
            f"expected one {event.event_name} event in {receipt['transactionHash'].to_0x_hex()}, "
            f"found {len(found)}",
            hint="the contract at this address may not be the one the artifact describes",
        )
    return found[0]


def events_in(event: AsyncContractEvent, receipt: TxReceipt) -> Sequence[EventData]:
    """Every `event` log in `receipt` emitted by this contract (other logs are skipped)."""
    return [
        entry
        for entry in event.process_receipt(receipt, errors=DISCARD)
        if entry["address"].lower() == str(event.address).lower()
    ]


class ProviderRegistry:
    """The ProviderRegistry at `address`, spoken to through `client`."""

    def __init__(self, client: ChainClient, address: str) -> None:
        self.client = client
        self.address = checksum(address, "registry address")
        self.contract: AsyncContract = client.contract(load_artifact("ProviderRegistry"), self.address)

    # State changes -----------------------------------------------------------------------------

    async def set_market(self, market: str, *, sender: LocalAccount) -> TxInfo:
        """Name the JobMarket allowed to slash; once, by the deployer (see `deploy_contracts`)."""
        fn = self.contract.functions.setMarket(checksum(market, "market address"))
        return TxInfo.of(await self.client.transact(fn, sender=sender))

    async def set_court(self, court: str, *, sender: LocalAccount) -> TxInfo:
        """Name the DisputeCourt; once, by the deployer (see `deploy_contracts`)."""
        fn = self.contract.functions.setCourt(checksum(court, "court address"))
        return TxInfo.of(await self.client.transact(fn, sender=sender))

    async def register(
        self, peer_id: bytes, metadata_hash: bytes, *, stake: int, sender: LocalAccount
    ) -> ProviderRegistered:
        """Register `sender` as a provider with `stake` wei (at least `min_stake()`)."""
        if not isinstance(peer_id, bytes | bytearray) or not 0 < len(peer_id) <= 64:
            raise ContractInputError("peer_id must be 1 to 64 bytes (a libp2p peer id multihash)")
        fn = self.contract.functions.register(bytes(peer_id), bytes32(metadata_hash, "metadata_hash"))
        receipt = await self.client.transact(fn, sender=sender, value=wei(stake, "stake"))
        args = self._event("ProviderRegistered", receipt)
        return ProviderRegistered(
            provider=Address(args["provider"]),
            peer_id=bytes(args["peerId"]),
            metadata_hash=Hash32(bytes(args["metadataHash"])),
            stake=int(args["stake"]),
            tx=TxInfo.of(receipt),
        )

    async def update_metadata(self, metadata_hash: bytes, *, sender: LocalAccount) -> MetadataUpdated:
        fn = self.contract.functions.updateMetadata(bytes32(metadata_hash, "metadata_hash"))
        receipt = await self.client.transact(fn, sender=sender)
        args = self._event("MetadataUpdated", receipt)
        return MetadataUpdated(
            provider=Address(args["provider"]),
            metadata_hash=Hash32(bytes(args["metadataHash"])),
            tx=TxInfo.of(receipt),
        )

    async def add_stake(self, amount: int, *, sender: LocalAccount) -> StakeAdded:
        receipt = await self.client.transact(
            self.contract.functions.addStake(), sender=sender, value=wei(amount, "amount")
        )
        args = self._event("StakeAdded", receipt)
        return StakeAdded(
            provider=Address(args["provider"]),
            amount=int(args["amount"]),
            stake=int(args["stake"]),
            tx=TxInfo.of(receipt),
        )

    async def request_unstake(self, *, sender: LocalAccount) -> UnstakeRequested:
        """Start the cooldown; the provider stops being active at once."""
        receipt = await self.client.transact(self.contract.functions.requestUnstake(), sender=sender)
        args = self._event("UnstakeRequested", receipt)
        return UnstakeRequested(
            provider=Address(args["provider"]), unstake_at=int(args["unstakeAt"]), tx=TxInfo.of(receipt)
        )

    async def withdraw_stake(self, *, sender: LocalAccount) -> StakeWithdrawn:
        """Take the whole stake back after the cooldown; deregisters `sender`."""
        receipt = await self.client.transact(self.contract.functions.withdrawStake(), sender=sender)
        args = self._event("StakeWithdrawn", receipt)
        return StakeWithdrawn(
            provider=Address(args["provider"]), amount=int(args["amount"]), tx=TxInfo.of(receipt)
        )

    # Views ---------------------------------------------------------------------------------------

    async def is_active(self, address: str) -> bool:
        return bool(await self.client.call(self.contract.functions.isActive(checksum(address, "provider"))))

    async def provider(self, address: str) -> ProviderRecord:
        account = checksum(address, "provider")
        registered, stake, unstake_at, peer_id, metadata_hash = await self.client.call(
            self.contract.functions.providerRecord(account)
        )
        return ProviderRecord(
            address=account,
            registered=bool(registered),
            stake=int(stake),
            unstake_at=int(unstake_at),
            peer_id=bytes(peer_id),
            metadata_hash=Hash32(bytes(metadata_hash)),
        )

    async def min_stake(self) -> int:
        return int(await self.client.call(self.contract.functions.minStake()))

    async def unstake_cooldown(self) -> int:
        return int(await self.client.call(self.contract.functions.unstakeCooldown()))

    async def court(self) -> Address | None:
        """The DisputeCourt the deployer named, or None before one is."""
        court = Address(await self.client.call(self.contract.functions.court()))
        return None if int(court, 16) == 0 else court

    async def market(self) -> Address:
        return Address(await self.client.call(self.contract.functions.market()))

    async def open_disputes(self, address: str) -> int:
        """Open disputes `address` is a party or juror of: its stake cannot leave while nonzero."""
        return int(
            await self.client.call(self.contract.functions.openDisputes(checksum(address, "provider")))
        )

    async def weight_of(self, address: str) -> int:
        """The stake `address` is drawn as a juror by: its stake while active, else zero."""
        return int(await self.client.call(self.contract.functions.weightOf(checksum(address, "provider"))))

    async def total_weight(self) -> int:
        return int(await self.client.call(self.contract.functions.totalWeight()))

    async def burned_stake(self) -> int:
        return int(await self.client.call(self.contract.functions.burnedStake()))

    def _event(self, name: str, receipt: TxReceipt) -> Any:
        return single_event(self.contract.events[name](), receipt)["args"]
