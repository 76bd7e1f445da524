"""Typed wrapper of the DisputeCourt contract: open a dispute, draw the jury, vote, resolve, withdraw.

State-changing methods simulate, send and wait through `ChainClient.transact` and return the decoded
event the contract emitted. `dispute_logs` and `juror_draws` read the court's logs for followers.
The numbers the court uses (jury size, shares) are `node.domain.disputes`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address
from web3.contract import AsyncContract
from web3.types import EventData, LogReceipt, TxReceipt

from node.chain.artifacts import load_artifact
from node.chain.client import ChainClient
from node.chain.market import receipt_tuple, signature_bytes
from node.chain.registry import ContractInputError, TxInfo, bytes32, checksum, events_in, single_event
from node.domain.disputes import Verdict, Vote
from node.errors import ChainError
from node.types import Address, Hash32, ResultReceipt

MAX_EVIDENCE_PEER_LENGTH = 64


@dataclass(frozen=True, slots=True)
class DisputeOpened:
    dispute_id: Hash32
    job_id: Hash32
    provider: Address
    challenger: Address
    model_id: Hash32
    input_hash: Hash32
    output_hash: Hash32
    profile_hash: Hash32
    escrowed: bool
    draw_block: int
    evidence_peer: bytes
    tx: TxInfo


@dataclass(frozen=True, slots=True)
class JuryDrawn:
    dispute_id: Hash32
    jurors: tuple[Address, ...]
    commit_deadline: int
    reveal_deadline: int
    delayed_to_block: int | None  # set when the draw block was forgotten and the draw moved on
    tx: TxInfo


@dataclass(frozen=True, slots=True)
class DisputeResolved:
    dispute_id: Hash32
    verdict: Verdict
    provider_slashed: int
    juror_pay: int
    penalized: dict[Address, int]
    credited: dict[Address, int]
    tx: TxInfo


@dataclass(frozen=True, slots=True)
class DisputeRecord:
    """What the court holds about one dispute."""

    dispute_id: Hash32
    job_id: Hash32
    provider: Address
    challenger: Address
    escrowed: bool
    verdict: Verdict
    draw_block: int
    commit_deadline: int  # 0 until the jury is drawn
    reveal_deadline: int
    juror_count: int
    commits: int
    reveals: int
    accepting: int

    @property
    def exists(self) -> bool:
        return int(self.provider, 16) != 0

    @property
    def jury_drawn(self) -> bool:
        return self.commit_deadline != 0


@dataclass(frozen=True, slots=True)
class Ballot:
    drawn: bool
    committed: bool
    revealed: bool
    acceptable: bool
    output_hash: Hash32


def dispute_opened_from_log(entry: EventData, tx: TxInfo) -> DisputeOpened:
    args = entry["args"]
    return DisputeOpened(
        dispute_id=Hash32(bytes(args["disputeId"])),
        job_id=Hash32(bytes(args["jobId"])),
        provider=Address(args["provider"]),
        challenger=Address(args["challenger"]),
        model_id=Hash32(bytes(args["modelId"])),
        input_hash=Hash32(bytes(args["inputHash"])),
        output_hash=Hash32(bytes(args["outputHash"])),
        profile_hash=Hash32(bytes(args["profileHash"])),
        escrowed=bool(args["escrowed"]),
        draw_block=int(args["drawBlock"]),
        evidence_peer=bytes(args["evidencePeer"]),
        tx=tx,
    )


class DisputeCourt:
    """The DisputeCourt at `address`, spoken to through `client`."""

    def __init__(self, client: ChainClient, address: str) -> None:
        self.client = client
        self.address = checksum(address, "court address")
        self.contract: AsyncContract = client.contract(load_artifact("DisputeCourt"), self.address)

    # State changes -----------------------------------------------------------------------------

    async def open_dispute(
        self,
        receipt: ResultReceipt,
        signature: bytes,
        *,
        evidence_peer: bytes = b"",
        bond: int,
        sender: LocalAccount,
    ) -> DisputeOpened:
        """Dispute `receipt` (signed by its provider), posting `bond` wei (`bond()`)."""
        if not isinstance(evidence_peer, bytes) or len(evidence_peer) > MAX_EVIDENCE_PEER_LENGTH:
            raise ContractInputError(f"evidence_peer must be at most {MAX_EVIDENCE_PEER_LENGTH} bytes")
        fn = self.contract.functions.openDispute(
            receipt_tuple(receipt), signature_bytes(signature, "signature"), evidence_peer
        )
        receipt_ = await self.client.transact(fn, sender=sender, value=bond)
        return dispute_opened_from_log(
            single_event(self.contract.events.DisputeOpened(), receipt_), TxInfo.of(receipt_)
        )

    async def draw_jury(self, dispute_id: bytes, *, sender: LocalAccount) -> JuryDrawn:
        """Draw the jury once the dispute's draw block is mined (anyone may)."""
        fn = self.contract.functions.drawJury(bytes32(dispute_id, "dispute_id"))
        receipt = await self.client.transact(fn, sender=sender)
        delayed = events_in(self.contract.events.DrawDelayed(), receipt)
        if delayed:
            return JuryDrawn(
                dispute_id=Hash32(bytes(dispute_id)),
                jurors=(),
                commit_deadline=0,
                reveal_deadline=0,
                delayed_to_block=int(delayed[0]["args"]["drawBlock"]),
                tx=TxInfo.of(receipt),
            )
        args = self._event("JuryDrawn", receipt)
        jurors = tuple(
            Address(e["args"]["juror"]) for e in events_in(self.contract.events.JurorDrawn(), receipt)
        )
        return JuryDrawn(
            dispute_id=Hash32(bytes(dispute_id)),
            jurors=jurors,
            commit_deadline=int(args["commitDeadline"]),
            reveal_deadline=int(args["revealDeadline"]),
            delayed_to_block=None,
            tx=TxInfo.of(receipt),
        )

    async def commit_vote(self, dispute_id: bytes, commitment: bytes, *, sender: LocalAccount) -> TxInfo:
        fn = self.contract.functions.commitVote(
            bytes32(dispute_id, "dispute_id"), bytes32(commitment, "commitment")
        )
        return TxInfo.of(await self.client.transact(fn, sender=sender))

    async def reveal_vote(
        self, dispute_id: bytes, vote: Vote, salt: bytes, *, sender: LocalAccount
    ) -> TxInfo:
        fn = self.contract.functions.revealVote(
            bytes32(dispute_id, "dispute_id"),
            bool(vote.acceptable),
            bytes32(vote.output_hash, "output_hash"),
            bytes32(salt, "salt"),
        )
        return TxInfo.of(await self.client.transact(fn, sender=sender))

    async def resolve(self, dispute_id: bytes, *, sender: LocalAccount) -> DisputeResolved:
        """Tally and settle once every juror revealed or the reveal period ended (anyone may)."""
        fn = self.contract.functions.resolve(bytes32(dispute_id, "dispute_id"))
        receipt = await self.client.transact(fn, sender=sender)
        args = self._event("DisputeResolved", receipt)
        return DisputeResolved(
            dispute_id=Hash32(bytes(dispute_id)),
            verdict=Verdict(int(args["verdict"])),
            provider_slashed=int(args["providerSlashed"]),
            juror_pay=int(args["jurorPay"]),
            penalized=_amounts(events_in(self.contract.events.JurorPenalized(), receipt), "juror", "slashed"),
            credited=_amounts(events_in(self.contract.events.Credited(), receipt), "account", "amount"),
            tx=TxInfo.of(receipt),
        )

    async def withdraw(self, *, sender: LocalAccount) -> int:
        """Take out everything credited to `sender`; returns the wei paid."""
        receipt = await self.client.transact(self.contract.functions.withdraw(), sender=sender)
        return int(self._event("Withdrawn", receipt)["amount"])

    # Views ---------------------------------------------------------------------------------------

    async def dispute(self, dispute_id: bytes) -> DisputeRecord:
        fields = await self.client.call(self.contract.functions.disputeOf(bytes32(dispute_id, "dispute_id")))
        job_id, provider, challenger, escrowed, verdict, draw_block, commit_dl, reveal_dl, n, c, r, a = fields
        return DisputeRecord(
            dispute_id=Hash32(bytes(dispute_id)),
            job_id=Hash32(bytes(job_id)),
            provider=Address(provider),
            challenger=Address(challenger),
            escrowed=bool(escrowed),
            verdict=Verdict(int(verdict)),
            draw_block=int(draw_block),
            commit_deadline=int(commit_dl),
            reveal_deadline=int(reveal_dl),
            juror_count=int(n),
            commits=int(c),
            reveals=int(r),
            accepting=int(a),
        )

    async def jurors(self, dispute_id: bytes) -> tuple[Address, ...]:
        found = await self.client.call(self.contract.functions.jurors(bytes32(dispute_id, "dispute_id")))
        return tuple(Address(a) for a in found)

    async def ballot(self, dispute_id: bytes, juror: str) -> Ballot:
        fn = self.contract.functions.ballotOf(bytes32(dispute_id, "dispute_id"), checksum(juror, "juror"))
        drawn, committed, revealed, acceptable, output_hash = await self.client.call(fn)
        return Ballot(
            bool(drawn), bool(committed), bool(revealed), bool(acceptable), Hash32(bytes(output_hash))
        )

    async def dispute_id_of(self, job_id: bytes, provider: str) -> Hash32:
        fn = self.contract.functions.disputeIdOf(bytes32(job_id, "job_id"), checksum(provider, "provider"))
        return Hash32(bytes(await self.client.call(fn)))

    async def vote_commitment(self, dispute_id: bytes, juror: str, vote: Vote, salt: bytes) -> Hash32:
        fn = self.contract.functions.voteCommitment(
            bytes32(dispute_id, "dispute_id"),
            checksum(juror, "juror"),
            bool(vote.acceptable),
            bytes32(vote.output_hash, "output_hash"),
            bytes32(salt, "salt"),
        )
        return Hash32(bytes(await self.client.call(fn)))

    async def withdrawable(self, account: str) -> int:
        return int(await self.client.call(self.contract.functions.withdrawable(checksum(account, "account"))))

    async def bond(self) -> int:
        return int(await self.client.call(self.contract.functions.bond()))

    async def slash_amount(self) -> int:
        return int(await self.client.call(self.contract.functions.slashAmount()))

    async def burned(self) -> int:
        return int(await self.client.call(self.contract.functions.burned()))

    async def voucher_lock_until(self, provider: str) -> int:
        fn = self.contract.functions.voucherLockUntil(checksum(provider, "provider"))
        return int(await self.client.call(fn))

    async def constant(self, name: str) -> int:
        """One of the court's public numeric constants or immutables, by its Solidity name."""
        return int(await self.client.call(getattr(self.contract.functions, name)()))

    # Logs ----------------------------------------------------------------------------------------

    async def disputes_opened(self, from_block: int, to_block: int | str = "latest") -> list[DisputeOpened]:
        """Every `DisputeOpened` in a block range, oldest first."""
        event = self.contract.events.DisputeOpened()
        logs = await self._logs([event.topic], from_block, to_block)
        return [dispute_opened_from_log(event.process_log(entry), _tx_of_log(entry)) for entry in logs]

    async def opened(self, dispute_id: bytes) -> DisputeOpened:
        """The `DisputeOpened` event of one dispute: every field of the disputed receipt."""
        event = self.contract.events.DisputeOpened()
        logs = await self._logs([event.topic, "0x" + bytes32(dispute_id, "dispute_id").hex()], 0, "latest")
        if not logs:
            raise ChainError(f"no dispute 0x{bytes(dispute_id).hex()} was opened at this court")
        return dispute_opened_from_log(event.process_log(logs[0]), _tx_of_log(logs[0]))

    async def credited(self, dispute_id: bytes, account: str) -> int:
        """Wei the court credited `account` when it resolved `dispute_id` (bond back, reward, pay)."""
        event = self.contract.events.Credited()
        topic = "0x" + bytes(12).hex() + checksum(account, "account")[2:].lower()
        logs = await self._logs(
            [event.topic, "0x" + bytes32(dispute_id, "dispute_id").hex(), topic], 0, "latest"
        )
        return sum(int(event.process_log(entry)["args"]["amount"]) for entry in logs)

    async def juror_draws(self, juror: str, from_block: int, to_block: int | str = "latest") -> list[Hash32]:
        """Ids of the disputes `juror` was drawn for in a block range, oldest first."""
        event = self.contract.events.JurorDrawn()
        juror_topic = "0x" + bytes(12).hex() + checksum(juror, "juror")[2:].lower()
        logs = await self._logs([event.topic, None, juror_topic], from_block, to_block)
        return [Hash32(bytes(event.process_log(entry)["args"]["disputeId"])) for entry in logs]

    async def _logs(
        self, topics: Sequence[str | None], from_block: int, to_block: int | str
    ) -> list[LogReceipt]:
        return await self.client.get_logs(
            {
                "address": to_checksum_address(self.address),
                "fromBlock": from_block,
                "toBlock": to_block,  # type: ignore[typeddict-item]
                "topics": list(topics),
            }
        )

    def _event(self, name: str, receipt: TxReceipt) -> Any:
        return single_event(self.contract.events[name](), receipt)["args"]


def _tx_of_log(entry: LogReceipt) -> TxInfo:
    return TxInfo(
        tx_hash=entry["transactionHash"].to_0x_hex(), block_number=int(entry["blockNumber"]), gas_used=0
    )


def _amounts(entries: Sequence[EventData], who: str, field: str) -> dict[Address, int]:
    found: dict[Address, int] = {}
    for entry in entries:
        account = Address(entry["args"][who])
        found[account] = found.get(account, 0) + int(entry["args"][field])
    return found
