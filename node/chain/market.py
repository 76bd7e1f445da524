"""Typed wrapper of the JobMarket contract: on-chain jobs, vouchers, withdrawals, disputes.

A job's id is `keccak256(abi.encode(JobTerms))`; `JobRequested` carries every term.
`submit_result` and `refund` pass the terms back, so callers keep the `JobTerms` returned by
`request_job` or rebuilt from the event by `job_requested_from_log`. Input and output bytes, when
a job carries them, come in their own events (`JobInput`, `ResultOutput`) in the same transaction,
so jobs published by hash pay no gas for them.

Vouchers are paid only out of what a client reserved for the provider (`reserve`); a provider
reads `reserve_of(client, me).available` before running a voucher job.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import IntEnum
from typing import Any

from eth_abi import abi as eth_abi
from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from hexbytes import HexBytes
from web3.contract import AsyncContract
from web3.types import EventData, LogReceipt, TxReceipt

from node.chain.artifacts import load_artifact
from node.chain.client import ChainClient
from node.chain.eip712 import Eip712Domain
from node.chain.registry import (
    ZERO_ADDRESS,
    ContractInputError,
    TxInfo,
    bytes32,
    checksum,
    events_in,
    single_event,
    wei,
)
from node.types import Address, Hash32, ResultReceipt, Voucher

GWEI = 10**9
# Callback gas a job with a callback asks for when its requester names none.
DEFAULT_CALLBACK_GAS = 200_000
# Random salts only have to differ between one requester's jobs with equal terms; 64 bits is plenty
# and keeps calldata small.
SALT_BITS = 64
ZERO_HASH32 = Hash32(b"\x00" * 32)
_TERMS_TYPES = ["address", "bytes32", "bytes32", "address", "uint256"]


class JobStatus(IntEnum):
    """`JobMarket.JobStatus`; settled jobs read as NONE (their slot is cleared)."""

    NONE = 0
    REQUESTED = 1
    CLAIMED = 2
    SUBMITTED = 3
    DISPUTED = 4
    CHALLENGED = 5  # held by the DisputeCourt until its jury decides


class SkipReason(IntEnum):
    """Why `redeemVouchers` skipped a voucher."""

    BAD_SIGNATURE = 0
    ALREADY_PAID = 1
    NO_FUNDS = 2


# Tags the preimage of a voucher job's id: on-chain ids hash five words of `JobTerms`, these three,
# so no id a client picks for a voucher job can name an escrowed job (or another client's job).
_VOUCHER_JOB_TAG = keccak(text="gpunode voucher job")


def voucher_job_id(client: str, request_id: bytes) -> Hash32:
    """The id a provider's receipt names for a voucher job: bound to the paying client, and in a
    namespace apart from on-chain job ids, whatever `request_id` the client sends."""
    return Hash32(
        keccak(
            eth_abi.encode(
                ["bytes32", "address", "bytes32"],
                [_VOUCHER_JOB_TAG, checksum(client, "client"), bytes32(request_id, "request_id")],
            )
        )
    )


@dataclass(frozen=True, slots=True)
class JobTerms:
    """A job's immutable terms; they hash to its id."""

    requester: Address
    model_id: Hash32
    input_hash: Hash32
    callback: Address
    salt: int

    @property
    def job_id(self) -> Hash32:
        return Hash32(keccak(eth_abi.encode(_TERMS_TYPES, list(self.as_tuple()))))

    def as_tuple(self) -> tuple[str, bytes, bytes, str, int]:
        return (self.requester, self.model_id, self.input_hash, self.callback, self.salt)

    @property
    def has_callback(self) -> bool:
        """Whether a consumer contract is called back with the result (which then carries it)."""
        return int(self.callback, 16) != 0


@dataclass(frozen=True, slots=True)
class JobRecord:
    """A live job as stored: `time` is the deadline until a result, then the end of the challenge window."""

    job_id: Hash32
    status: JobStatus
    provider: Address | None
    time: int
    price: int
    callback_gas: int = 0
    output_on_chain: bool = False  # a result must carry the output bytes


@dataclass(frozen=True, slots=True)
class JobRequested:
    job_id: Hash32
    terms: JobTerms
    provider: Address | None  # the only provider allowed to claim, if one was named
    price: int
    deadline: int
    input: bytes
    tx: TxInfo
    callback_gas: int = 0  # gas the submitter must forward to the callback (the price pays for it)
    output_on_chain: bool = False  # the result must carry the output bytes


@dataclass(frozen=True, slots=True)
class JobClaimed:
    job_id: Hash32
    provider: Address
    tx: TxInfo


@dataclass(frozen=True, slots=True)
class ResultSubmitted:
    job_id: Hash32
    output_hash: Hash32
    profile_hash: Hash32
    output: bytes
    callback_failed: bool
    tx: TxInfo


@dataclass(frozen=True, slots=True)
class JobFinalized:
    job_id: Hash32
    provider: Address
    price: int
    tx: TxInfo


@dataclass(frozen=True, slots=True)
class JobRefunded:
    job_id: Hash32
    requester: Address
    price: int
    tx: TxInfo


@dataclass(frozen=True, slots=True)
class EarningsWithdrawn:
    account: Address
    amount: int
    tx: TxInfo


@dataclass(frozen=True, slots=True)
class ClientAccount:
    """A client's voucher deposit and pending withdrawal request."""

    balance: int
    withdrawal_amount: int
    withdrawable_at: int


@dataclass(frozen=True, slots=True)
class Reserve:
    """What a client set aside for one provider's vouchers.

    `amount` is unpaid; `releasing` of it leaves at `releasable_at` (unless redeemed first);
    `paid` was redeemed already. `available` is what the provider can count on for vouchers it
    has not redeemed: the reserve less what is leaving.
    """

    amount: int
    paid: int
    releasing: int
    releasable_at: int

    @property
    def available(self) -> int:
        return max(0, self.amount - self.releasing)


@dataclass(frozen=True, slots=True)
class Reserved:
    client: Address
    provider: Address
    amount: int
    reserve: int
    tx: TxInfo


@dataclass(frozen=True, slots=True)
class ReleaseRequested:
    client: Address
    provider: Address
    amount: int
    releasable_at: int
    tx: TxInfo


@dataclass(frozen=True, slots=True)
class Released:
    client: Address
    provider: Address
    amount: int
    reserve: int
    tx: TxInfo


@dataclass(frozen=True, slots=True)
class Deposited:
    client: Address
    amount: int
    balance: int
    tx: TxInfo


@dataclass(frozen=True, slots=True)
class WithdrawalRequested:
    client: Address
    amount: int
    withdrawable_at: int
    tx: TxInfo


@dataclass(frozen=True, slots=True)
class Withdrawn:
    client: Address
    amount: int
    tx: TxInfo


@dataclass(frozen=True, slots=True)
class VoucherRedeemed:
    client: Address
    amount: int
    total_paid: int
    cumulative_amount: int


@dataclass(frozen=True, slots=True)
class VoucherSkipped:
    client: Address
    cumulative_amount: int
    reason: SkipReason


@dataclass(frozen=True, slots=True)
class Redemption:
    """The outcome of one `redeem_vouchers` call."""

    provider: Address
    total: int
    redeemed: tuple[VoucherRedeemed, ...]
    skipped: tuple[VoucherSkipped, ...]
    tx: TxInfo


@dataclass(frozen=True, slots=True)
class EquivocationProven:
    job_id: Hash32
    provider: Address
    reporter: Address
    slashed: int
    disputed: bool  # the on-chain job this provider held was disputed: never paid, refundable at once
    tx: TxInfo


def _optional_address(value: str) -> Address | None:
    return None if int(value, 16) == 0 else Address(value)


def job_requested_from_log(
    entry: EventData, input: bytes = b"", delivery: EventData | None = None
) -> JobRequested:
    """Decode a `JobRequested` log (from `events_in` or an event follower) into terms and price.

    `input` is the job's `JobInput` log's bytes, if the transaction emitted one; `delivery` its
    `JobDelivery` log (callback gas, output on chain), if it emitted one.
    """
    args = entry["args"]
    terms = JobTerms(
        requester=Address(args["requester"]),
        model_id=Hash32(bytes(args["modelId"])),
        input_hash=Hash32(bytes(args["inputHash"])),
        callback=Address(args["callback"]),
        salt=int(args["salt"]),
    )
    return JobRequested(
        job_id=Hash32(bytes(args["jobId"])),
        terms=terms,
        provider=_optional_address(args["provider"]),
        price=int(args["price"]),
        deadline=int(args["deadline"]),
        input=bytes(input),
        tx=TxInfo(
            tx_hash=entry["transactionHash"].to_0x_hex(), block_number=int(entry["blockNumber"]), gas_used=0
        ),
        callback_gas=0 if delivery is None else int(delivery["args"]["callbackGas"]),
        output_on_chain=False if delivery is None else bool(delivery["args"]["outputOnChain"]),
    )


def receipt_tuple(receipt: ResultReceipt) -> tuple[bytes, bytes, bytes, bytes, bytes, str]:
    return (
        bytes32(receipt.job_id, "receipt job_id"),
        bytes32(receipt.model_id, "receipt model_id"),
        bytes32(receipt.input_hash, "receipt input_hash"),
        bytes32(receipt.output_hash, "receipt output_hash"),
        bytes32(receipt.profile_hash, "receipt profile_hash"),
        checksum(receipt.provider, "receipt provider"),
    )


def signature_bytes(signature: bytes, what: str) -> bytes:
    if not isinstance(signature, bytes | bytearray) or len(signature) != 65:
        raise ContractInputError(f"{what} must be 65 bytes (r || s || v)")
    return bytes(signature)


class JobMarket:
    """The JobMarket at `address`, spoken to through `client`."""

    def __init__(self, client: ChainClient, address: str) -> None:
        self.client = client
        self.address = checksum(address, "market address")
        self.contract: AsyncContract = client.contract(load_artifact("JobMarket"), self.address)

    def domain(self) -> Eip712Domain:
        """The EIP-712 domain receipts and vouchers for this market are signed in."""
        return Eip712Domain(chain_id=self.client.chain_id, verifying_contract=self.address)

    # On-chain jobs -------------------------------------------------------------------------------

    async def request_job(
        self,
        model_id: bytes,
        *,
        price: int,
        deadline: int,
        input: bytes = b"",
        input_hash: bytes | None = None,
        provider: str | None = None,
        callback: str | None = None,
        callback_gas: int | None = None,
        output_on_chain: bool = False,
        salt: int | None = None,
        sender: LocalAccount,
    ) -> JobRequested:
        """Escrow `price` wei (whole gwei) for a job on `input` (or on `input_hash` alone).

        `callback_gas` is what the callback gets (default `DEFAULT_CALLBACK_GAS` with a callback,
        none without); `output_on_chain` makes the result carry the output bytes. `salt` tells apart
        jobs with the same model, input and callback; by default a random one (never reuse one).
        """
        if callback_gas is None:
            callback_gas = 0 if callback is None else DEFAULT_CALLBACK_GAS
        if wei(price, "price") % GWEI != 0:
            raise ContractInputError(f"price {price} wei is not a whole number of gwei")
        if not input and input_hash is None:
            raise ContractInputError("a job needs its input bytes or their sha256 (input_hash)")
        fn = self.contract.functions.requestJob(
            bytes32(model_id, "model_id"),
            ZERO_HASH32 if input_hash is None else bytes32(input_hash, "input_hash"),
            bytes(input),
            deadline,
            ZERO_ADDRESS if provider is None else checksum(provider, "provider"),
            ZERO_ADDRESS if callback is None else checksum(callback, "callback"),
            wei(callback_gas, "callback_gas", positive=False),
            bool(output_on_chain),
            secrets.randbits(SALT_BITS) if salt is None else wei(salt, "salt", positive=False),
        )
        receipt = await self.client.transact(fn, sender=sender, value=price)
        found = single_event(self.contract.events.JobRequested(), receipt)
        inputs = events_in(self.contract.events.JobInput(), receipt)
        given = bytes(inputs[0]["args"]["input"]) if inputs else b""
        deliveries = events_in(self.contract.events.JobDelivery(), receipt)
        delivery = deliveries[0] if deliveries else None
        return replace(job_requested_from_log(found, given, delivery), tx=TxInfo.of(receipt))

    async def claim_job(self, job_id: bytes, *, sender: LocalAccount) -> JobClaimed:
        receipt = await self.client.transact(
            self.contract.functions.claimJob(bytes32(job_id, "job_id")), sender=sender
        )
        args = self._event("JobClaimed", receipt)
        return JobClaimed(
            job_id=Hash32(bytes(args["jobId"])), provider=Address(args["provider"]), tx=TxInfo.of(receipt)
        )

    async def submit_result(
        self,
        terms: JobTerms,
        receipt: ResultReceipt,
        signature: bytes,
        *,
        output: bytes = b"",
        sender: LocalAccount,
    ) -> ResultSubmitted:
        """Relay a provider's signed result for the job with `terms`; any account may send it."""
        if bytes(receipt.job_id) != terms.job_id:
            raise ContractInputError("the receipt's job_id is not the id of these terms")
        if bytes(receipt.model_id) != terms.model_id or bytes(receipt.input_hash) != terms.input_hash:
            raise ContractInputError("the receipt's model_id or input_hash differs from the job's terms")
        fn = self.contract.functions.submitResult(
            terms.as_tuple(),
            bytes32(receipt.output_hash, "output_hash"),
            bytes32(receipt.profile_hash, "profile_hash"),
            signature_bytes(signature, "signature"),
            bytes(output),
        )
        tx = await self.client.transact(fn, sender=sender)
        args = self._event("ResultSubmitted", tx)
        failed = events_in(self.contract.events.CallbackFailed(), tx)
        return ResultSubmitted(
            job_id=Hash32(bytes(args["jobId"])),
            output_hash=Hash32(bytes(args["outputHash"])),
            profile_hash=Hash32(bytes(args["profileHash"])),
            output=b"".join(
                bytes(e["args"]["output"]) for e in events_in(self.contract.events.ResultOutput(), tx)
            ),
            callback_failed=bool(failed),
            tx=TxInfo.of(tx),
        )

    async def finalize(self, job_id: bytes, *, sender: LocalAccount) -> JobFinalized:
        """Credit the provider of a job whose challenge window is over; any account may send it."""
        receipt = await self.client.transact(
            self.contract.functions.finalize(bytes32(job_id, "job_id")), sender=sender
        )
        args = self._event("JobFinalized", receipt)
        return JobFinalized(
            job_id=Hash32(bytes(args["jobId"])),
            provider=Address(args["provider"]),
            price=int(args["price"]),
            tx=TxInfo.of(receipt),
        )

    async def refund(self, terms: JobTerms, *, sender: LocalAccount) -> JobRefunded:
        """Credit the requester of a job that got no result by its deadline (or was disputed)."""
        receipt = await self.client.transact(self.contract.functions.refund(terms.as_tuple()), sender=sender)
        args = self._event("JobRefunded", receipt)
        return JobRefunded(
            job_id=Hash32(bytes(args["jobId"])),
            requester=Address(args["requester"]),
            price=int(args["price"]),
            tx=TxInfo.of(receipt),
        )

    async def cancel_job(self, terms: JobTerms, *, sender: LocalAccount) -> JobRefunded:
        """Take back a job nobody has claimed (its requester only): the price is credited at once."""
        cancel = self.contract.functions.cancelJob(terms.as_tuple())
        receipt = await self.client.transact(cancel, sender=sender)
        args = self._event("JobRefunded", receipt)
        return JobRefunded(
            job_id=Hash32(bytes(args["jobId"])),
            requester=Address(args["requester"]),
            price=int(args["price"]),
            tx=TxInfo.of(receipt),
        )

    async def withdraw_earnings(self, *, sender: LocalAccount) -> EarningsWithdrawn:
        """Pay out what finalized jobs earned `sender` and what refunds credited it."""
        receipt = await self.client.transact(self.contract.functions.withdrawEarnings(), sender=sender)
        args = self._event("EarningsWithdrawn", receipt)
        return EarningsWithdrawn(
            account=Address(args["account"]), amount=int(args["amount"]), tx=TxInfo.of(receipt)
        )

    async def job(self, job_id: bytes) -> JobRecord:
        key = bytes32(job_id, "job_id")
        status, provider, time, price, callback_gas, output_on_chain = await self.client.call(
            self.contract.functions.job(key)
        )
        return JobRecord(
            job_id=key,
            status=JobStatus(status),
            provider=_optional_address(provider),
            time=int(time),
            price=int(price),
            callback_gas=int(callback_gas),
            output_on_chain=bool(output_on_chain),
        )

    async def withdrawable(self, account: str) -> int:
        return int(await self.client.call(self.contract.functions.withdrawable(checksum(account, "account"))))

    async def provider_active(self, provider: str) -> bool:
        """The market's copy of the registry's `isActive`, which `claimJob` checks."""
        fn = self.contract.functions.providerActive(checksum(provider, "provider"))
        return bool(await self.client.call(fn))

    async def max_job_time(self) -> int:
        """The furthest ahead (seconds) a job's deadline may be: the registry's unstake cooldown
        less the challenge window, so a claimer's stake outlasts every job it holds."""
        return int(await self.client.call(self.contract.functions.maxJobTime()))

    async def callback_gas_limit(self) -> int:
        """The most callback gas a job may ask for."""
        return int(await self.client.call(self.contract.functions.callbackGasLimit()))

    async def withdrawal_delay(self) -> int:
        """Seconds between asking for a withdrawal or a release and making it."""
        return int(await self.client.call(self.contract.functions.withdrawalDelay()))

    # Vouchers ----------------------------------------------------------------------------------

    async def deposit(self, amount: int, *, sender: LocalAccount) -> Deposited:
        receipt = await self.client.transact(
            self.contract.functions.deposit(), sender=sender, value=wei(amount, "amount")
        )
        args = self._event("Deposited", receipt)
        return Deposited(
            client=Address(args["client"]),
            amount=int(args["amount"]),
            balance=int(args["balance"]),
            tx=TxInfo.of(receipt),
        )

    async def reserve(
        self, provider: str, amount: int, *, deposit: int = 0, sender: LocalAccount
    ) -> Reserved:
        """Set `amount` of `sender`'s deposit aside for `provider`'s vouchers, first adding `deposit`
        wei to the deposit (one transaction for both)."""
        fn = self.contract.functions.reserve(checksum(provider, "provider"), wei(amount, "amount"))
        receipt = await self.client.transact(fn, sender=sender, value=wei(deposit, "deposit", positive=False))
        args = self._event("Reserved", receipt)
        return Reserved(
            client=Address(args["client"]),
            provider=Address(args["provider"]),
            amount=int(args["amount"]),
            reserve=int(args["reserve"]),
            tx=TxInfo.of(receipt),
        )

    async def cover_vouchers(
        self, provider: str, cumulative: int, *, ahead: int = 0, sender: LocalAccount
    ) -> int:
        """Make vouchers from `sender` to `provider` worth `cumulative` wei in all payable, topping
        the reserve up from the unreserved deposit with `ahead` wei more where the deposit allows
        (fewer transactions for the jobs that follow). Returns what such vouchers may total now:
        paid plus available; less than `cumulative` when the deposit is short."""
        held = await self.reserve_of(sender.address, provider)
        ceiling = held.paid + held.available
        if cumulative <= ceiling:
            return ceiling
        balance = (await self.client_account(sender.address)).balance
        top_up = min(balance, cumulative - ceiling + max(0, ahead))
        if top_up > 0:
            await self.reserve(provider, top_up, sender=sender)
        return ceiling + top_up

    async def reserve_of(self, client: str, provider: str) -> Reserve:
        """What `client` reserved for `provider`; `.available` is what admission may count on."""
        fn = self.contract.functions.reserveOf(checksum(client, "client"), checksum(provider, "provider"))
        amount, paid, releasing, releasable_at = await self.client.call(fn)
        return Reserve(
            amount=int(amount), paid=int(paid), releasing=int(releasing), releasable_at=int(releasable_at)
        )

    async def reserved(self, client: str, provider: str) -> int:
        """Wei `provider` can still be paid out of `client`'s reserve for it, requested releases
        excluded: what a voucher beyond `paid(client, provider)` may count on."""
        return (await self.reserve_of(client, provider)).available

    async def request_release(self, provider: str, amount: int, *, sender: LocalAccount) -> ReleaseRequested:
        """Ask to move `amount` of the reserve for `provider` back to the deposit after the delay."""
        fn = self.contract.functions.requestRelease(checksum(provider, "provider"), wei(amount, "amount"))
        receipt = await self.client.transact(fn, sender=sender)
        args = self._event("ReleaseRequested", receipt)
        return ReleaseRequested(
            client=Address(args["client"]),
            provider=Address(args["provider"]),
            amount=int(args["amount"]),
            releasable_at=int(args["releasableAt"]),
            tx=TxInfo.of(receipt),
        )

    async def release(self, provider: str, *, sender: LocalAccount) -> Released:
        fn = self.contract.functions.release(checksum(provider, "provider"))
        receipt = await self.client.transact(fn, sender=sender)
        args = self._event("Released", receipt)
        return Released(
            client=Address(args["client"]),
            provider=Address(args["provider"]),
            amount=int(args["amount"]),
            reserve=int(args["reserve"]),
            tx=TxInfo.of(receipt),
        )

    async def request_withdrawal(self, amount: int, *, sender: LocalAccount) -> WithdrawalRequested:
        fn = self.contract.functions.requestWithdrawal(wei(amount, "amount"))
        receipt = await self.client.transact(fn, sender=sender)
        args = self._event("WithdrawalRequested", receipt)
        return WithdrawalRequested(
            client=Address(args["client"]),
            amount=int(args["amount"]),
            withdrawable_at=int(args["withdrawableAt"]),
            tx=TxInfo.of(receipt),
        )

    async def withdraw(self, *, sender: LocalAccount) -> Withdrawn:
        receipt = await self.client.transact(self.contract.functions.withdraw(), sender=sender)
        args = self._event("Withdrawn", receipt)
        return Withdrawn(client=Address(args["client"]), amount=int(args["amount"]), tx=TxInfo.of(receipt))

    async def redeem_vouchers(
        self, vouchers: Sequence[tuple[Voucher, bytes]], *, sender: LocalAccount
    ) -> Redemption:
        """Redeem the latest voucher of each client for `sender`, the provider they name.

        Vouchers the contract cannot pay (bad signature, already paid, no reserve left for `sender`)
        come back in `skipped`; they never make the whole batch fail.
        """
        if not vouchers:
            raise ContractInputError("redeem_vouchers needs at least one voucher")
        entries = []
        for voucher, signature in vouchers:
            if str(checksum(voucher.provider, "voucher provider")) != str(sender.address):
                raise ContractInputError(
                    f"a voucher for provider {voucher.provider} cannot be redeemed by {sender.address}",
                    hint="each provider redeems its own vouchers",
                )
            entries.append(
                (
                    checksum(voucher.client, "voucher client"),
                    wei(voucher.cumulative_amount, "cumulative_amount"),
                    signature_bytes(signature, "voucher signature"),
                )
            )
        receipt = await self.client.transact(self.contract.functions.redeemVouchers(entries), sender=sender)
        redeemed = tuple(
            VoucherRedeemed(
                client=Address(e["args"]["client"]),
                amount=int(e["args"]["amount"]),
                total_paid=int(e["args"]["totalPaid"]),
                cumulative_amount=int(e["args"]["cumulativeAmount"]),
            )
            for e in events_in(self.contract.events.VoucherRedeemed(), receipt)
        )
        skipped = tuple(
            VoucherSkipped(
                client=Address(e["args"]["client"]),
                cumulative_amount=int(e["args"]["cumulativeAmount"]),
                reason=SkipReason(e["args"]["reason"]),
            )
            for e in events_in(self.contract.events.VoucherSkipped(), receipt)
        )
        return Redemption(
            provider=Address(sender.address),
            total=sum(r.amount for r in redeemed),
            redeemed=redeemed,
            skipped=skipped,
            tx=TxInfo.of(receipt),
        )

    async def client_account(self, client: str) -> ClientAccount:
        fn = self.contract.functions.clientAccount(checksum(client, "client"))
        balance, withdrawal_amount, withdrawable_at = await self.client.call(fn)
        return ClientAccount(
            balance=int(balance),
            withdrawal_amount=int(withdrawal_amount),
            withdrawable_at=int(withdrawable_at),
        )

    async def paid(self, client: str, provider: str) -> int:
        """Wei already paid from `client` to `provider` through vouchers."""
        fn = self.contract.functions.paid(checksum(client, "client"), checksum(provider, "provider"))
        return int(await self.client.call(fn))

    # Disputes and digests ----------------------------------------------------------------------

    async def prove_equivocation(
        self,
        receipt_a: ResultReceipt,
        signature_a: bytes,
        receipt_b: ResultReceipt,
        signature_b: bytes,
        *,
        sender: LocalAccount,
        commit_first: bool = True,
    ) -> EquivocationProven:
        """Slash a provider that signed two different receipts for one job and dispute the job.

        With `commit_first` (the default), `sender` first commits to the proof in its own block, so
        the reward is credited to it and nobody who copies the proof from the mempool can take it.
        """
        if commit_first:
            commitment = await self.client.call(
                self.contract.functions.proofCommitment(
                    checksum(sender.address, "sender"), receipt_tuple(receipt_a), receipt_tuple(receipt_b)
                )
            )
            await self.client.transact(self.contract.functions.commitProof(commitment), sender=sender)
        fn = self.contract.functions.proveEquivocation(
            receipt_tuple(receipt_a),
            signature_bytes(signature_a, "signature_a"),
            receipt_tuple(receipt_b),
            signature_bytes(signature_b, "signature_b"),
        )
        receipt = await self.client.transact(fn, sender=sender)
        args = self._event("EquivocationProven", receipt)
        return EquivocationProven(
            job_id=Hash32(bytes(args["jobId"])),
            provider=Address(args["provider"]),
            reporter=Address(args["reporter"]),
            slashed=int(args["slashed"]),
            disputed=bool(events_in(self.contract.events.JobDisputed(), receipt)),
            tx=TxInfo.of(receipt),
        )

    async def last_redeemed_at(self, provider: str) -> int:
        """When `provider` last redeemed vouchers that paid something (0: never)."""
        fn = self.contract.functions.lastRedeemedAt(checksum(provider, "provider"))
        return int(await self.client.call(fn))

    async def unclaimed_rewards(self) -> int:
        """Rewards of proofs sent without a commitment: locked in the market for good."""
        return int(await self.client.call(self.contract.functions.unclaimedRewards()))

    async def equivocation_proven(self, job_id: bytes, provider: str) -> bool:
        fn = self.contract.functions.equivocationProven(
            bytes32(job_id, "job_id"), checksum(provider, "provider")
        )
        return bool(await self.client.call(fn))

    async def receipt_digest(self, receipt: ResultReceipt) -> bytes:
        """The digest the contract computes for `receipt` (must equal `eip712.receipt_digest`)."""
        return bytes(await self.client.call(self.contract.functions.receiptDigest(receipt_tuple(receipt))))

    async def voucher_digest(self, voucher: Voucher) -> bytes:
        fn = self.contract.functions.voucherDigest(
            (
                checksum(voucher.client, "voucher client"),
                checksum(voucher.provider, "voucher provider"),
                wei(voucher.cumulative_amount, "cumulative_amount", positive=False),
            )
        )
        return bytes(await self.client.call(fn))

    async def job_requests(self, from_block: int, to_block: int | str = "latest") -> list[JobRequested]:
        """`JobRequested` events in a block range, with their inputs and delivery terms (for
        catching up; see follower)."""
        requested = self.contract.events.JobRequested()
        given = self.contract.events.JobInput()
        delivered = self.contract.events.JobDelivery()
        logs: Sequence[LogReceipt] = await self.client.get_logs(
            {
                "address": to_checksum_address(self.address),
                "fromBlock": from_block,
                "toBlock": to_block,  # type: ignore[typeddict-item]
                "topics": [[requested.topic, given.topic, delivered.topic]],
            }
        )
        inputs = {
            bytes(entry["topics"][1]): bytes(given.process_log(entry)["args"]["input"])
            for entry in logs
            if bytes(entry["topics"][0]) == HexBytes(given.topic)
        }
        deliveries = {
            bytes(entry["topics"][1]): delivered.process_log(entry)
            for entry in logs
            if bytes(entry["topics"][0]) == HexBytes(delivered.topic)
        }
        return [
            job_requested_from_log(
                decoded,
                inputs.get(bytes(decoded["args"]["jobId"]), b""),
                deliveries.get(bytes(decoded["args"]["jobId"])),
            )
            for decoded in (
                requested.process_log(e) for e in logs if bytes(e["topics"][0]) == HexBytes(requested.topic)
            )
        ]

    async def job_payloads(self, job_id: bytes) -> tuple[bytes | None, bytes | None]:
        """A job's input and output bytes as published in `JobInput` and `ResultOutput`; None for
        what was published by hash only."""
        given, produced = self.contract.events.JobInput(), self.contract.events.ResultOutput()
        logs: Sequence[LogReceipt] = await self.client.get_logs(
            {
                "address": to_checksum_address(self.address),
                "fromBlock": 0,
                "toBlock": "latest",
                "topics": [[given.topic, produced.topic], "0x" + bytes32(job_id, "job_id").hex()],
            }
        )
        found: dict[str, bytes] = {}
        for entry in logs:
            if bytes(entry["topics"][0]) == HexBytes(given.topic):
                found["input"] = bytes(given.process_log(entry)["args"]["input"])
            else:
                found["output"] = bytes(produced.process_log(entry)["args"]["output"])
        return found.get("input"), found.get("output")

    async def credited(self, from_block: int, to_block: int | str = "latest") -> dict[Address, int]:
        """Wei the market credited to each provider in a block range: escrowed jobs finalized and
        vouchers redeemed, whoever sent the transaction (anyone may finalize a job)."""
        finalized = self.contract.events.JobFinalized()
        redeemed = self.contract.events.VoucherRedeemed()
        logs: Sequence[LogReceipt] = await self.client.get_logs(
            {
                "address": to_checksum_address(self.address),
                "fromBlock": from_block,
                "toBlock": to_block,  # type: ignore[typeddict-item]
                "topics": [[finalized.topic, redeemed.topic]],
            }
        )
        credited: dict[Address, int] = {}
        for entry in logs:
            if bytes(entry["topics"][0]) == HexBytes(finalized.topic):
                args = finalized.process_log(entry)["args"]
                provider, amount = Address(args["provider"]), int(args["price"])
            else:
                args = redeemed.process_log(entry)["args"]
                provider, amount = Address(args["provider"]), int(args["amount"])
            credited[provider] = credited.get(provider, 0) + amount
        return credited

    def _event(self, name: str, receipt: TxReceipt) -> Any:
        return single_event(self.contract.events[name](), receipt)["args"]
