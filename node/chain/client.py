"""ChainClient: one AsyncWeb3 connection, the same on the embedded py-evm chain and on any RPC node.

Every state change is simulated first (eth_estimateGas executes it), signed locally, sent with a
nonce from a per-sender book (a lock plus a locally tracked nonce, resynced from the chain when
the node rejects it), and its receipt is awaited with a timeout. Transient RPC failures are
retried with back-off. Reverts, whether found in simulation or in a mined receipt, become
`TransactionReverted` with the error decoded from the ABIs of every contract the client knows.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial
from typing import Any, Protocol, TypeVar, cast

import aiohttp
from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from hexbytes import HexBytes
from web3 import AsyncWeb3
from web3.contract import AsyncContract
from web3.contract.async_contract import AsyncContractConstructor, AsyncContractFunction
from web3.exceptions import (
    ContractLogicError,
    ProviderConnectionError,
    TooManyRequests,
    TransactionNotFound,
)
from web3.providers.async_base import AsyncBaseProvider
from web3.providers.eth_tester import AsyncEthereumTesterProvider
from web3.providers.rpc import AsyncHTTPProvider
from web3.types import FilterParams, LogReceipt, RPCEndpoint, TxData, TxParams, TxReceipt, Wei

from node.chain.anvil import mnemonic_accounts
from node.chain.revert import DecodedRevert, ErrorDecoder
from node.config import ChainSettings
from node.errors import ChainError
from node.logging import get_logger

log = get_logger(__name__)

T = TypeVar("T")

EMBEDDED = "embedded"
# How far pinning moves the embedded chain ahead of the wall clock.
_PINNED_LEAD_S = 365 * 24 * 3600
# eth_estimateGas is exact on both backends; the margin covers state that changes before mining.
GAS_MARGIN_NUMERATOR, GAS_MARGIN_DENOMINATOR = 5, 4
TRANSFER_GAS = 21_000
_FIRST_BACKOFF_S = 0.1
_RECEIPT_FIRST_POLL_S = 0.02
_TRANSIENT = (
    aiohttp.ClientConnectionError,
    ConnectionError,
    TimeoutError,
    ProviderConnectionError,
    TooManyRequests,
)


class NonceBook:
    """Per-sender nonces tracked locally, so concurrent sends from one account never collide.

    Hold `lock(sender)` from `next()` until the transaction is accepted, then `advance()`; after
    any rejection `forget()` so the next send resyncs from the chain's pending count. Clients
    that share one chain and one sender must share one book.
    """

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._next: dict[str, int] = {}

    def lock(self, sender: str) -> asyncio.Lock:
        return self._locks.setdefault(sender.lower(), asyncio.Lock())

    async def next(self, sender: ChecksumAddress, fetch: Callable[[ChecksumAddress], Awaitable[int]]) -> int:
        key = sender.lower()
        if key not in self._next:
            self._next[key] = await fetch(sender)
        return self._next[key]

    def peek(self, sender: str) -> int | None:
        """The nonce the next send from `sender` will use, if known locally."""
        return self._next.get(sender.lower())

    def advance(self, sender: str, used: int) -> None:
        self._next[sender.lower()] = used + 1

    def forget(self, sender: str) -> None:
        self._next.pop(sender.lower(), None)

    def forget_all(self) -> None:
        self._next.clear()


class ContractArtifact(Protocol):
    """What the client needs of a compiled contract (`node.chain.artifacts.Artifact` fits)."""

    @property
    def name(self) -> str: ...

    @property
    def abi(self) -> Sequence[Mapping[str, Any]]: ...

    @property
    def bytecode(self) -> str: ...


class _Transactable(Protocol):
    """A contract function or constructor: anything that can be estimated and built."""

    async def estimate_gas(self, transaction: TxParams | None = None) -> int: ...

    async def build_transaction(self, transaction: TxParams | None = None) -> TxParams: ...


class ChainClient:
    """A connection to one chain; build it with `await ChainClient.connect(settings)`."""

    def __init__(
        self,
        w3: AsyncWeb3[Any],
        chain_id: int,
        settings: ChainSettings,
        *,
        nonces: NonceBook | None = None,
        decoder: ErrorDecoder | None = None,
        owns_provider: bool = True,
    ) -> None:
        self.w3 = w3
        self.chain_id = chain_id
        self.settings = settings
        self.nonces = nonces or NonceBook()
        self.errors = decoder or ErrorDecoder()
        self._owns_provider = owns_provider
        # RPC requests made and those that failed (after retries), for the node's metrics.
        self.rpc_calls = 0
        self.rpc_failures = 0

    @classmethod
    async def connect(
        cls,
        settings: ChainSettings,
        *,
        provider: AsyncBaseProvider | None = None,
        nonces: NonceBook | None = None,
        artifacts: Sequence[ContractArtifact] = (),
    ) -> ChainClient:
        """Connect to `settings.rpc_url` ("embedded" runs py-evm in process), or to `provider`.

        Passing the provider (and nonce book) of an existing embedded chain shares that chain
        between several clients in one process, as a devnet does.
        """
        owns_provider = provider is None
        chosen = provider or _provider_for(settings.rpc_url)
        w3 = AsyncWeb3(chosen)
        client = cls(w3, 0, settings, nonces=nonces, owns_provider=owns_provider)
        try:
            client.chain_id = await client._rpc("eth_chainId", lambda: w3.eth.chain_id)
        except BaseException:
            await client.close()
            raise
        for artifact in [*_packaged_artifacts(), *artifacts]:
            client.errors.add_abi(artifact.abi)
        log.info("chain_connected", rpc_url=_describe(chosen), chain_id=client.chain_id)
        return client

    @property
    def embedded(self) -> bool:
        return isinstance(self.w3.provider, AsyncEthereumTesterProvider)

    async def close(self) -> None:
        # The embedded chain holds no connection; an HTTP provider holds an aiohttp session.
        if self._owns_provider and isinstance(self.w3.provider, AsyncHTTPProvider):
            await self.w3.provider.disconnect()

    # Contracts ---------------------------------------------------------------------------------

    def contract(self, artifact: ContractArtifact, address: str) -> AsyncContract:
        """A contract handle; its ABI's custom errors become decodable by this client."""
        self.errors.add_abi(artifact.abi)
        return self.w3.eth.contract(address=AsyncWeb3.to_checksum_address(address), abi=list(artifact.abi))

    async def deploy(
        self, artifact: ContractArtifact, *ctor_args: Any, sender: LocalAccount, value: int = 0
    ) -> ChecksumAddress:
        self.errors.add_abi(artifact.abi)
        factory = self.w3.eth.contract(abi=list(artifact.abi), bytecode=artifact.bytecode)
        constructor: AsyncContractConstructor = factory.constructor(*ctor_args)
        receipt = await self._simulate_and_send(constructor, sender, value, f"deploying {artifact.name}")
        address = receipt["contractAddress"]
        if address is None:
            raise ChainError(f"deploying {artifact.name} mined without a contract address")
        log.info("contract_deployed", contract=artifact.name, address=address)
        return address

    async def transact(self, fn: AsyncContractFunction, *, sender: LocalAccount, value: int = 0) -> TxReceipt:
        """Simulate, sign, send and await one contract call; reverts raise TransactionReverted."""
        return await self._simulate_and_send(fn, sender, value, _action(fn))

    async def call(self, fn: AsyncContractFunction, *, sender: str | None = None) -> Any:
        """Run a view (or simulate any function) with eth_call; reverts raise TransactionReverted."""
        params: TxParams = {"from": AsyncWeb3.to_checksum_address(sender)} if sender else {}
        return await self._decoding(_action(fn), lambda: fn.call(params))

    async def transfer(self, to: str, value: int, *, sender: LocalAccount) -> TxReceipt:
        """Send plain ether."""
        tx: TxParams = {
            "to": AsyncWeb3.to_checksum_address(to),
            "value": Wei(value),
            "gas": TRANSFER_GAS,
            **await self._fees(),
        }
        return await self._send(tx, sender, f"transfer of {value} wei to {to}")

    async def balance(self, address: str) -> int:
        checksummed = AsyncWeb3.to_checksum_address(address)
        return int(await self._rpc("eth_getBalance", lambda: self.w3.eth.get_balance(checksummed)))

    async def block_number(self) -> int:
        return int(await self._rpc("eth_blockNumber", lambda: self.w3.eth.block_number))

    async def chain_time(self) -> float:
        """The chain's clock: the latest block's timestamp.

        Transient failures are retried like every read; when the chain stays away, or answers
        with something that is not a block, a `ChainError` says so, so a caller's round fails and
        the next one tries again instead of the node stopping.
        """
        try:
            block = await self._rpc("eth_getBlockByNumber", lambda: self.w3.eth.get_block("latest"))
        except ChainError:
            raise
        except Exception as exc:
            # web3 raises its transport's own errors (aiohttp, OSError, timeouts) for a plain read.
            raise ChainError(
                f"reading the chain's latest block failed: {type(exc).__name__}: {exc}",
                hint="is the chain node running? check chain.rpc_url",
            ) from exc
        if not block or "timestamp" not in block:
            raise ChainError("the chain answered without a latest block", hint="check chain.rpc_url")
        return float(block["timestamp"])

    async def get_logs(self, params: FilterParams) -> list[LogReceipt]:
        return list(await self._rpc("eth_getLogs", lambda: self.w3.eth.get_logs(params)))

    # Development chains ------------------------------------------------------------------------

    def dev_accounts(self) -> list[LocalAccount]:
        """The accounts a development chain funds at genesis: eth-tester's keys or anvil's mnemonic."""
        if isinstance(self.w3.provider, AsyncEthereumTesterProvider):
            from eth_account import Account

            keys = self.w3.provider.ethereum_tester.backend.account_keys
            return [Account.from_key(key.to_bytes()) for key in keys]
        return list(mnemonic_accounts())

    async def increase_time(self, seconds: int) -> None:
        """Move the chain's clock forward and mine a block (development chains only)."""
        if seconds < 0:
            raise ChainError(f"a chain's clock only moves forward; asked for {seconds} s")
        if isinstance(self.w3.provider, AsyncEthereumTesterProvider):
            tester = self.w3.provider.ethereum_tester
            target = int(tester.get_block_by_number("latest")["timestamp"]) + seconds
            pending = int(tester.get_block_by_number("pending")["timestamp"])
            # py-evm stamps the block that time_travel mines one second before the target.
            if target + 1 > pending:
                tester.time_travel(target + 1)
            else:
                tester.mine_blocks(1)
            return
        latest = await self._rpc("eth_getBlockByNumber", lambda: self.w3.eth.get_block("latest"))
        # Relative to the last block, like the embedded chain, and honoured while block times are
        # pinned (anvil ignores evm_increaseTime while it stamps blocks at an interval).
        await self._dev_rpc("evm_setNextBlockTimestamp", [int(latest["timestamp"]) + seconds])
        await self._dev_rpc("evm_mine", [])

    async def pin_block_times(self, pinned: bool = True) -> None:
        """Stamp each new block one second after the last, whatever the wall clock, so that only
        `increase_time` moves the chain's clock and a test sees the same times on every run
        (development chains only). The embedded chain's clock jumps a year ahead, which makes
        py-evm stamp parent + 1; unpinning leaves it there. Anvil stamps at an interval; unpinning
        lets its clock follow the wall clock again from the last block on."""
        if isinstance(self.w3.provider, AsyncEthereumTesterProvider):
            if pinned:
                await self.increase_time(_PINNED_LEAD_S)
            return
        if pinned:
            await self._dev_rpc("anvil_setBlockTimestampInterval", [1])
            return
        await self._dev_rpc("anvil_removeBlockTimestampInterval", [])
        await self.increase_time(1)

    async def mine(self, blocks: int = 1) -> None:
        """Mine empty blocks (development chains only)."""
        if isinstance(self.w3.provider, AsyncEthereumTesterProvider):
            self.w3.provider.ethereum_tester.mine_blocks(blocks)
            return
        for _ in range(blocks):
            await self._dev_rpc("evm_mine", [])

    async def set_automine(self, enabled: bool) -> None:
        """Mine each transaction as it arrives (the default) or only on `mine()`."""
        if isinstance(self.w3.provider, AsyncEthereumTesterProvider):
            tester = self.w3.provider.ethereum_tester
            if enabled:
                tester.enable_auto_mine_transactions()
            else:
                tester.disable_auto_mine_transactions()
            return
        await self._dev_rpc("evm_setAutomine", [enabled])

    async def _dev_rpc(self, method: str, params: list[Any]) -> Any:
        response = await self._rpc(method, lambda: self.w3.provider.make_request(RPCEndpoint(method), params))
        if "error" in response:
            raise ChainError(
                f"{method} failed: {response['error']}", hint="needs a development chain (anvil)"
            )
        return response.get("result")

    # Sending -----------------------------------------------------------------------------------

    async def _simulate_and_send(
        self, transactable: _Transactable, sender: LocalAccount, value: int, action: str
    ) -> TxReceipt:
        simulation: TxParams = {"from": sender.address, "value": Wei(value)}
        estimate = await self._decoding(action, lambda: transactable.estimate_gas(simulation))
        fees = await self._fees()
        gas = estimate * GAS_MARGIN_NUMERATOR // GAS_MARGIN_DENOMINATOR
        built = await self._decoding(
            action,
            lambda: transactable.build_transaction(
                {**simulation, "gas": gas, "chainId": self.chain_id, **fees}
            ),
        )
        built.pop("nonce", None)
        return await self._send(built, sender, action)

    async def _send(self, tx: TxParams, sender: LocalAccount, action: str) -> TxReceipt:
        tx_hash = await self._sign_and_submit(tx, sender, action)
        try:
            receipt = await self._wait_for_receipt(tx_hash, action)
        except ChainError:
            # The transaction may have been dropped, leaving a gap: resync before the next send.
            self.nonces.forget(sender.address)
            raise
        if receipt["status"] != 1:
            raise await self._explain_failure(tx, sender, receipt, action)
        return receipt

    async def _sign_and_submit(self, tx: TxParams, sender: LocalAccount, action: str) -> HexBytes:
        """Assign the sender's next nonce and submit; the lock keeps one sender's nonces in order."""
        address = sender.address
        async with self.nonces.lock(address):
            for attempt in range(2):
                nonce = await self.nonces.next(address, self._pending_nonce)
                unsigned = cast(dict[str, Any], {**tx, "nonce": nonce, "chainId": self.chain_id})
                signed = sender.sign_transaction(unsigned)
                raw = bytes(signed.raw_transaction)
                try:
                    await self._rpc("eth_sendRawTransaction", partial(self.w3.eth.send_raw_transaction, raw))
                except ChainError:
                    self.nonces.forget(address)
                    raise
                except Exception as exc:
                    self.nonces.forget(address)
                    if _is_nonce_error(exc) and await self._known(signed.hash):
                        # A retried send whose first attempt did reach the node: it is in.
                        self.nonces.advance(address, nonce)
                        return signed.hash
                    if _is_nonce_error(exc) and attempt == 0:
                        log.warning("nonce_resync", sender=address, nonce=nonce, error=str(exc))
                        continue
                    raise self._rejection(exc, action) from exc
                self.nonces.advance(address, nonce)
                log.debug(
                    "tx_sent", action=action, sender=address, nonce=nonce, tx_hash=signed.hash.to_0x_hex()
                )
                return signed.hash
        raise ChainError(f"{action}: the chain kept rejecting the nonce for {address}")

    def _rejection(self, exc: Exception, action: str) -> ChainError:
        decoded = self.errors.from_exception(exc)
        if decoded is not None:
            return decoded.to_exception(action)
        return ChainError(f"{action} was rejected by the chain: {exc}")

    async def transaction(self, tx_hash: bytes) -> TxData:
        """A transaction by its hash (mined or pending)."""
        found = HexBytes(tx_hash)
        return await self._rpc("eth_getTransactionByHash", lambda: self.w3.eth.get_transaction(found))

    async def _known(self, tx_hash: HexBytes) -> bool:
        try:
            await self._rpc("eth_getTransactionByHash", lambda: self.w3.eth.get_transaction(tx_hash))
        except TransactionNotFound:
            return False
        return True

    async def _pending_nonce(self, address: ChecksumAddress) -> int:
        return int(
            await self._rpc(
                "eth_getTransactionCount", lambda: self.w3.eth.get_transaction_count(address, "pending")
            )
        )

    async def _fees(self) -> TxParams:
        """EIP-1559 fees: the tip the node suggests plus twice the base fee, valid for several blocks."""
        priority = await self._rpc("eth_maxPriorityFeePerGas", lambda: self.w3.eth.max_priority_fee)
        block = await self._rpc("eth_getBlockByNumber", lambda: self.w3.eth.get_block("latest"))
        base_fee = int(block.get("baseFeePerGas", 0))
        return {"maxPriorityFeePerGas": priority, "maxFeePerGas": Wei(2 * base_fee + priority)}

    async def _wait_for_receipt(self, tx_hash: HexBytes, action: str) -> TxReceipt:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.receipt_timeout_s
        delay = _RECEIPT_FIRST_POLL_S
        while True:
            try:
                receipt = await self._rpc(
                    "eth_getTransactionReceipt", lambda: self.w3.eth.get_transaction_receipt(tx_hash)
                )
            except TransactionNotFound:
                receipt = None
            if receipt is not None and receipt.get("blockNumber") is not None:
                return receipt
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise ChainError(
                    f"{action}: transaction {tx_hash.to_0x_hex()} was not mined within "
                    f"{self.settings.receipt_timeout_s} s",
                    hint="the chain may be stalled or the fee too low; raise chain.receipt_timeout_s",
                )
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 2, self.settings.poll_interval_s)

    async def _explain_failure(
        self, tx: TxParams, sender: LocalAccount, receipt: TxReceipt, action: str
    ) -> ChainError:
        """Replay a failed transaction at its block to learn the revert reason."""
        tx_hash = receipt["transactionHash"].to_0x_hex()
        if receipt["gasUsed"] >= int(tx.get("gas", 0)):
            return ChainError(f"{action} ran out of gas in transaction {tx_hash}")
        replay: TxParams = {key: value for key, value in tx.items() if key in ("to", "data", "value", "gas")}  # type: ignore[assignment]
        replay["from"] = sender.address
        try:
            await self.w3.eth.call(replay, block_identifier=receipt["blockNumber"])
        except Exception as exc:
            decoded = self.errors.from_exception(exc)
            if decoded is not None:
                log.info("tx_reverted", action=action, tx_hash=tx_hash, error=decoded.describe())
                return decoded.to_exception(f"{action} (transaction {tx_hash})")
        return DecodedRevert("unknown", (), b"").to_exception(f"{action} (transaction {tx_hash})")

    # RPC plumbing ------------------------------------------------------------------------------

    async def _decoding(self, action: str, request: Callable[[], Awaitable[T]]) -> T:
        """Run an RPC request, turning a revert into TransactionReverted."""
        try:
            return await self._rpc(action, request)
        except ChainError:
            raise
        except Exception as exc:
            decoded = self.errors.from_exception(exc)
            if decoded is None:
                raise ChainError(f"{action} failed: {exc}") from exc
            raise decoded.to_exception(action) from exc

    async def _rpc(self, what: str, request: Callable[[], Awaitable[T]]) -> T:
        """Retry transient failures (refused, timed out, 5xx, 429) with exponential back-off."""
        attempts = self.settings.rpc_retries + 1
        self.rpc_calls += 1
        for attempt in range(attempts):
            try:
                return await request()
            except Exception as exc:
                if not _is_transient(exc) or attempt == attempts - 1:
                    self.rpc_failures += 1
                if not _is_transient(exc):
                    raise
                if attempt == attempts - 1:
                    # The node may come back as another chain (a restarted dev chain) or without
                    # our pending transactions: learn every nonce afresh.
                    self.nonces.forget_all()
                    raise ChainError(
                        f"the chain at {_describe(self.w3.provider)} is unreachable or failing "
                        f"({what} failed {attempts} times: {type(exc).__name__}: {exc})",
                        hint="is the chain node running? check chain.rpc_url",
                    ) from exc
                backoff = _FIRST_BACKOFF_S * 2**attempt
                log.warning("rpc_retry", what=what, attempt=attempt + 1, backoff_s=backoff, error=str(exc))
                await asyncio.sleep(backoff)
        raise ChainError(f"{what}: no attempt was made (chain.rpc_retries is negative?)")


def _packaged_artifacts() -> list[ContractArtifact]:
    """gpunode's own contracts: their custom errors are decodable before any handle is made."""
    from node.chain.artifacts import artifact_names, load_artifact

    return [load_artifact(name) for name in artifact_names()]


def _provider_for(rpc_url: str) -> AsyncBaseProvider:
    if rpc_url == EMBEDDED:
        return AsyncEthereumTesterProvider()
    if rpc_url.startswith(("http://", "https://")):
        # The client retries itself, once per operation, with its own back-off and error message.
        return AsyncHTTPProvider(rpc_url, exception_retry_configuration=None)
    raise ChainError(
        f"unsupported chain.rpc_url {rpc_url!r}", hint='use "embedded" or an http(s):// JSON-RPC URL'
    )


def _describe(provider: AsyncBaseProvider) -> str:
    if isinstance(provider, AsyncHTTPProvider):
        return str(provider.endpoint_uri)
    return EMBEDDED if isinstance(provider, AsyncEthereumTesterProvider) else type(provider).__name__


def _action(fn: AsyncContractFunction) -> str:
    return f"{fn.fn_name}()"


def _is_transient(exc: BaseException) -> bool:
    """Failures worth retrying: the node unreachable, slow, overloaded or briefly failing."""
    if isinstance(exc, _TRANSIENT):
        return True
    return isinstance(exc, aiohttp.ClientResponseError) and (exc.status >= 500 or exc.status == 429)


def _is_nonce_error(exc: BaseException) -> bool:
    if isinstance(exc, ContractLogicError):
        return False
    text = str(exc).lower()
    return "nonce" in text
