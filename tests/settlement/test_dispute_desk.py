"""The dispute desk on the embedded chain: a client disputes a job it paid for, its node draws the
jury and resolves the dispute when due, lists and shows it, and collects its bond and reward."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from node.api.convert import dispute_from_pb, dispute_to_pb
from node.chain.client import ChainClient
from node.chain.deploy import Deployment, deploy_contracts
from node.chain.eip712 import sign_receipt
from node.chain.keys import NodeKey
from node.chain.registry import ContractInputError
from node.config import ChainSettings
from node.domain import disputes
from node.domain.disputes import Vote
from node.settlement.disputes import DisputeDesk
from node.types import Hash32, ResultReceipt, sha256

MIN_STAKE = 10**18
PRICE = 10**15


@dataclass
class Market:
    client: ChainClient
    deployment: Deployment
    provider: NodeKey
    challenger: NodeKey
    jurors: list[NodeKey]


async def funded(client: ChainClient, key: NodeKey) -> NodeKey:
    await client.transfer(key.address, 3 * MIN_STAKE, sender=client.dev_accounts()[0])
    return key


@pytest.fixture
async def market() -> AsyncIterator[Market]:
    client = await ChainClient.connect(ChainSettings(rpc_url="embedded", poll_interval_s=0.05))
    deployment = await deploy_contracts(
        client,
        client.dev_accounts()[0],
        min_stake=MIN_STAKE,
        unstake_cooldown_s=7_200,
        challenge_window_s=600,
        withdrawal_delay_s=1_800,
    )
    provider = await funded(client, NodeKey.generate())
    challenger = await funded(client, NodeKey.generate())
    jurors = [await funded(client, NodeKey.generate()) for _ in range(8)]
    for key in [provider, *jurors]:
        await deployment.registry.register(bytes(37), sha256(b"meta"), stake=MIN_STAKE, sender=key.account)
    try:
        yield Market(client, deployment, provider, challenger, jurors)
    finally:
        await client.close()


async def paid_job(market: Market) -> tuple[ResultReceipt, bytes]:
    """An on-chain job the challenger paid for and the provider answered (wrongly, it will turn out)."""
    chain = market.deployment.market
    deadline = int(await market.client.chain_time()) + 3_600
    job = await chain.request_job(
        sha256(b"model"), price=PRICE, deadline=deadline, input=b"input", sender=market.challenger.account
    )
    await chain.claim_job(job.job_id, sender=market.provider.account)
    receipt = ResultReceipt(
        job_id=job.terms.job_id,
        model_id=job.terms.model_id,
        input_hash=job.terms.input_hash,
        output_hash=sha256(b"zeros"),
        profile_hash=sha256(b"profile"),
        provider=market.provider.address,
    )
    signature = sign_receipt(market.provider.private_key, chain.domain(), receipt)
    await chain.submit_result(job.terms, receipt, signature, sender=market.provider.account)
    return receipt, signature


def desk_of(market: Market, key: NodeKey, receipts: dict[str, tuple[ResultReceipt, bytes]]) -> DisputeDesk:
    async def lookup(job_id: str) -> tuple[ResultReceipt, bytes]:
        return receipts[job_id]

    return DisputeDesk(market.deployment.court, key, lookup, evidence_peer=b"\x00\x25" + bytes(35))


async def test_can_open_follow_and_collect_a_dispute(market: Market) -> None:
    receipt, signature = await paid_job(market)
    desk = desk_of(market, market.challenger, {"my-job": (receipt, signature)})
    opened = await desk.open("my-job")
    assert opened.role == "challenger"
    assert opened.phase == "drawing the jury"
    assert opened.escrowed
    # Too early to draw: nothing is sent.
    assert await desk.advance() == ()
    await market.client.mine(disputes.DRAW_DELAY_BLOCKS + 1)
    assert len(await desk.advance()) == 1
    view = await desk.show(opened.dispute_id)
    assert view.phase == "jurors committing"
    assert len(view.jurors) == disputes.JURY_SIZE
    court = market.deployment.court
    by_address = {key.address: key for key in market.jurors}
    dispute_id = Hash32(bytes.fromhex(opened.dispute_id))
    wrong = Vote(acceptable=False, output_hash=sha256(b"the right output"))
    salts = {juror: Hash32(secrets.token_bytes(32)) for juror in view.jurors}
    for juror in view.jurors:
        commitment = disputes.commitment(dispute_id, juror, wrong, salts[juror])
        await court.commit_vote(dispute_id, commitment, sender=by_address[juror].account)
    for juror in view.jurors:
        await court.reveal_vote(dispute_id, wrong, salts[juror], sender=by_address[juror].account)
    assert len(await desk.advance()) == 1
    (listed,) = await desk.list()
    assert listed.verdict == "provider_wrong"
    assert listed.phase == "resolved"
    # The provider's node sees the same dispute, as the provider; a juror's as a juror.
    (seen,) = await desk_of(market, market.provider, {}).list()
    assert seen.role == "provider"
    (judged,) = await desk_of(market, by_address[view.jurors[0]], {}).list()
    assert judged.role == "juror"
    before = await market.client.balance(market.challenger.address)
    collected = await desk.collect()
    assert collected > await court.bond()
    assert await market.client.balance(market.challenger.address) > before
    assert dispute_from_pb(dispute_to_pb(listed)) == listed


async def test_cannot_show_a_malformed_dispute_id(market: Market) -> None:
    desk = desk_of(market, market.challenger, {})
    with pytest.raises(ContractInputError, match="not a dispute id"):
        await desk.show("not hex")
    assert await desk.list() == ()
