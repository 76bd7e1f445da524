"""A provider cannot get a competitor excluded by reporting it: clients verify fraud records on the
real embedded chain's registry and act on a valid one only by re-checking the accused more.
Each test is the attacker's steps, then the assertion that the attacker lost."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio
from safetensors.numpy import save

from node.chain.client import ChainClient
from node.chain.deploy import deploy_contracts
from node.chain.eip712 import sign_receipt
from node.chain.keys import NodeKey
from node.client.fraud_gossip import FraudRecords
from node.client.fraud_record import (
    Evidence,
    FraudRecord,
    FraudRejected,
    FraudRejectReason,
    issue_fraud_record,
)
from node.client.model_specs import ModelSpecs
from node.client.reputation import ReputationBook
from node.config import ChainSettings
from node.discovery.registry_view import CachedRegistryView
from node.domain.records import ProviderReputation
from node.p2p.identity import peer_id_from, peer_id_to_bytes
from node.scheduler.spot import RECHECKS_PER_RECORD, SUSPECT_SHARE, check_passed, check_share
from node.storage import Database
from node.types import Hash32, ResultReceipt, sha256

MIN_STAKE = 10**18
MODEL = sha256(b"model")
INPUT = b"the victim's input"


@dataclass
class Market:
    records: FraudRecords
    book: ReputationBook
    db: Database
    keys: list[NodeKey]
    domain: object

    @property
    def victim(self) -> NodeKey:
        return self.keys[1]

    @property
    def attacker(self) -> NodeKey:
        return self.keys[2]


@pytest_asyncio.fixture
async def market(tmp_path: Path) -> AsyncIterator[Market]:
    chain = await ChainClient.connect(ChainSettings(rpc_url="embedded", receipt_timeout_s=20.0))
    try:
        accounts = chain.dev_accounts()
        deployment = await deploy_contracts(
            chain,
            accounts[0],
            min_stake=MIN_STAKE,
            unstake_cooldown_s=3600,
            challenge_window_s=600,
            withdrawal_delay_s=600,
        )
        keys = [NodeKey.from_private_key(bytes(a.key)) for a in accounts]
        # Registered, staked providers: the victim, the attacker and the attacker's two sybils.
        for key in keys[1:5]:
            peer_id = peer_id_to_bytes(str(peer_id_from(key)))
            await deployment.registry.register(peer_id, sha256(b"meta"), stake=MIN_STAKE, sender=key.account)
        db = Database.open(f"sqlite:///{tmp_path / 'client.db'}")
        book = ReputationBook(db)
        domain = deployment.market.domain()
        records = FraudRecords(
            None,  # type: ignore[arg-type]  # records are handed in directly, as the overlay would
            book,
            ModelSpecs(None),  # type: ignore[arg-type]
            domain,
            keys[8].address,
            registry=CachedRegistryView(deployment.registry),
        )
        yield Market(records, book, db, keys, domain)
        db.close()
    finally:
        await chain.close()


def signed(market: Market, key: NodeKey, output: bytes, job: bytes) -> Evidence:
    receipt = ResultReceipt(
        job_id=sha256(job),
        model_id=MODEL,
        input_hash=sha256(INPUT),
        output_hash=sha256(output),
        profile_hash=Hash32(b"\x01" * 32),
        provider=key.address,
    )
    return Evidence(receipt, sign_receipt(key.private_key, market.domain, receipt), output)  # type: ignore[arg-type]


HONEST = bytes(save({"output": np.arange(4, dtype=np.float32)}))
MADE_UP = bytes(save({"output": np.ones(4, dtype=np.float32)}))


def report(market: Market, reporter: NodeKey, *witnesses: NodeKey, now_ms: int) -> FraudRecord:
    """The attacker bought a job from the victim (an honest, signed result) and has `witnesses`
    sign a made-up 'right' output for the same input."""
    victims = signed(market, market.victim, HONEST, b"bought from the victim")
    made_up = [signed(market, w, MADE_UP, w.address.encode()) for w in witnesses]
    return issue_fraud_record(
        reporter.private_key,
        reporter.address,
        accused=victims,
        witnesses=(made_up[0], made_up[1]),
        now_ms=now_ms,
    )


def now_ms() -> int:
    return int(time.time() * 1000)


async def test_cannot_witness_against_a_competitor_with_its_own_results(market: Market) -> None:
    record = report(market, market.attacker, market.attacker, market.keys[3], now_ms=now_ms())
    outcome = await market.records.admit(market.attacker.address, record.signed)
    assert isinstance(outcome, FraudRejected)
    assert outcome.reason is FraudRejectReason.SELF_SERVING
    assert market.book.known(market.victim.address) is None


async def test_cannot_witness_with_keys_that_hold_no_stake(market: Market) -> None:
    """The attacker makes two fresh keys to sign the 'right' output."""
    fresh = [NodeKey.generate(), NodeKey.generate()]
    record = report(market, market.attacker, *fresh, now_ms=now_ms())
    outcome = await market.records.admit(market.attacker.address, record.signed)
    assert isinstance(outcome, FraudRejected)
    assert outcome.reason is FraudRejectReason.NOT_REGISTERED
    assert market.book.known(market.victim.address) is None


async def test_cannot_send_a_record_as_another_reporter_or_tampered(market: Market) -> None:
    record = report(market, market.attacker, market.keys[3], market.keys[4], now_ms=now_ms())
    relayed_as = await market.records.admit(market.keys[6].address, record.signed)
    assert isinstance(relayed_as, FraudRejected)
    assert relayed_as.reason is FraudRejectReason.PEER_MISMATCH
    tampered = record.signed[:70] + bytes([record.signed[70] ^ 1]) + record.signed[71:]
    garbled = await market.records.admit(market.attacker.address, tampered)
    assert isinstance(garbled, FraudRejected)
    assert market.book.known(market.victim.address) is None


async def test_cannot_get_a_competitor_excluded_even_with_staked_sybils(market: Market) -> None:
    """The attacker stakes two sybils, has them sign a made-up output, and reports the victim,
    twice, then once more through another reporter. Every client checks the victim a few more
    times, counts the victim's result once, and excludes nobody; the victim passes the re-checks
    and is back to the usual share."""
    record = report(market, market.attacker, market.keys[3], market.keys[4], now_ms=now_ms())
    admitted = await market.records.admit(market.attacker.address, record.signed)
    assert isinstance(admitted, FraudRecord)
    assert await market.records.take(admitted)
    assert not await market.records.take(admitted)
    again = report(market, market.keys[6], market.keys[3], market.keys[4], now_ms=now_ms())
    relayed = await market.records.admit(market.keys[6].address, again.signed)
    assert isinstance(relayed, FraudRecord)
    assert not await market.records.take(relayed)  # the same result of the victim's: counted once

    victim = market.book.get(market.victim.address)
    assert victim.fraud_records_seen == 1
    assert victim.rechecks_due == RECHECKS_PER_RECORD
    assert not victim.excluded
    stored = await market.db.run(market.db.reputation.get, market.victim.address)
    assert stored is not None
    assert not stored.excluded
    assert check_share(0.06, victim) == SUSPECT_SHARE
    for _ in range(RECHECKS_PER_RECORD):  # the victim's results agree with the checkers'
        victim = await market.book.update(market.victim.address, check_passed)
    assert check_share(0.06, victim) == check_share(0.06, ProviderReputation(victim.address))
    assert not victim.excluded


@pytest.mark.parametrize("skew_ms", [-25 * 3600 * 1000, 5 * 60 * 1000])
async def test_cannot_act_on_a_record_outside_its_time(market: Market, skew_ms: int) -> None:
    record = report(market, market.attacker, market.keys[3], market.keys[4], now_ms=now_ms() + skew_ms)
    outcome = await market.records.admit(market.attacker.address, record.signed)
    assert isinstance(outcome, FraudRejected)
    assert outcome.reason in (FraudRejectReason.EXPIRED, FraudRejectReason.TOO_FAR_AHEAD)
