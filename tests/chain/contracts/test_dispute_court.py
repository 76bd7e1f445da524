"""DisputeCourt: a staked jury decides a challenged result; every defence with its attacker."""

from __future__ import annotations

import secrets
from collections.abc import Mapping

import pytest
import pytest_asyncio
from contract_helpers import (
    CHALLENGE_WINDOW_S,
    METADATA_HASH,
    MIN_STAKE,
    OUTPUT,
    PEER_ID,
    PRICE,
    UNSTAKE_COOLDOWN_S,
    AdvanceTime,
    Roles,
    key_of,
    receipt_for,
    sha,
    signed_voucher,
    submitted,
)
from eth_account import Account
from eth_account.signers.local import LocalAccount

from node.chain.client import ChainClient
from node.chain.court import DisputeOpened
from node.chain.deploy import (
    DEFAULT_COMMIT_PERIOD_S,
    DEFAULT_REVEAL_PERIOD_S,
    DEFAULT_VOUCHER_DISPUTE_WINDOW_S,
    Deployment,
)
from node.chain.eip712 import sign_receipt
from node.chain.market import JobStatus, voucher_job_id
from node.domain import disputes
from node.domain.disputes import Verdict, Vote
from node.errors import TransactionReverted
from node.types import Address, Hash32, ResultReceipt

POOL_SIZE = 8
WRONG = Vote(acceptable=False, output_hash=sha(b"the juror's output"))
# An honest provider on another thread count: the juror's hash differs, the values agree.
TOLERABLE = Vote(acceptable=True, output_hash=sha(b"the juror's output, other rounding"))


@pytest_asyncio.fixture
async def pool(client: ChainClient, deployment: Deployment, roles: Roles) -> list[LocalAccount]:
    """Eight staked providers besides the parties: enough for a jury of five."""
    jurors = [Account.create() for _ in range(POOL_SIZE)]
    for juror in jurors:
        await client.transfer(juror.address, 3 * MIN_STAKE, sender=roles.deployer)
        await deployment.registry.register(PEER_ID, METADATA_HASH, stake=MIN_STAKE, sender=juror)
    return jurors


async def open_on_escrowed_job(deployment: Deployment, roles: Roles, provider: LocalAccount) -> DisputeOpened:
    job = await submitted(deployment, roles.requester, provider, roles.relayer)
    receipt = receipt_for(job.terms, provider.address, OUTPUT)
    signature = sign_receipt(key_of(provider), deployment.market.domain(), receipt)
    bond = await deployment.court.bond()
    return await deployment.court.open_dispute(
        receipt, signature, evidence_peer=PEER_ID, bond=bond, sender=roles.requester
    )


def disputed_receipt(opened: DisputeOpened) -> ResultReceipt:
    """The receipt a dispute was opened on, rebuilt from its event."""
    return ResultReceipt(
        job_id=opened.job_id,
        model_id=opened.model_id,
        input_hash=opened.input_hash,
        output_hash=opened.output_hash,
        profile_hash=opened.profile_hash,
        provider=opened.provider,
    )


async def draw(
    client: ChainClient, deployment: Deployment, opened: DisputeOpened, sender: LocalAccount
) -> list[str]:
    await client.mine(disputes.DRAW_DELAY_BLOCKS + 1)
    drawn = await deployment.court.draw_jury(opened.dispute_id, sender=sender)
    return list(drawn.jurors)


async def vote(
    deployment: Deployment,
    opened: DisputeOpened,
    by_address: Mapping[str, LocalAccount],
    jurors: list[str],
    votes: list[Vote | None],
) -> None:
    """Each juror commits; those with a vote reveal it (None: commits, then stays silent)."""
    court = deployment.court
    salts = {juror: Hash32(secrets.token_bytes(32)) for juror in jurors}
    for juror, ballot in zip(jurors, votes, strict=True):
        choice = ballot or WRONG
        commitment = disputes.commitment(opened.dispute_id, juror, choice, salts[juror])
        await court.commit_vote(opened.dispute_id, commitment, sender=by_address[juror])
    for juror, ballot in zip(jurors, votes, strict=True):
        if ballot is not None:
            await court.reveal_vote(opened.dispute_id, ballot, salts[juror], sender=by_address[juror])


def accounts_by_address(*groups: list[LocalAccount]) -> dict[str, LocalAccount]:
    return {account.address: account for group in groups for account in group}


async def test_can_slash_a_wrong_provider_through_a_jury(
    client: ChainClient,
    deployment: Deployment,
    roles: Roles,
    provider: LocalAccount,
    pool: list[LocalAccount],
) -> None:
    court, registry, market = deployment.court, deployment.registry, deployment.market
    opened = await open_on_escrowed_job(deployment, roles, provider)
    assert opened.escrowed
    # The held job cannot be finalized while the jury works, even after its window.
    assert (await market.job(opened.job_id)).status is JobStatus.CHALLENGED
    jurors = await draw(client, deployment, opened, roles.outsider)
    assert len(jurors) == disputes.JURY_SIZE
    votes: list[Vote | None] = [WRONG, WRONG, WRONG, TOLERABLE, WRONG]
    await vote(deployment, opened, accounts_by_address(pool), jurors, votes)
    resolved = await court.resolve(opened.dispute_id, sender=roles.outsider)
    expected = disputes.settle(
        votes,
        bond=await court.bond(),
        provider_stake=MIN_STAKE,
        slash_amount=await court.slash_amount(),
        juror_stakes=[MIN_STAKE] * len(jurors),
    )
    assert resolved.verdict is Verdict.PROVIDER_WRONG
    assert resolved.provider_slashed == expected.provider_slashed == MIN_STAKE
    assert (await registry.provider(provider.address)).stake == 0
    assert await court.withdrawable(roles.requester.address) == expected.challenger_paid
    for juror, pay in zip(jurors, expected.juror_pay, strict=True):
        assert await court.withdrawable(juror) == pay
    assert await court.withdrawable(jurors[3]) == 0  # voted with the minority
    # The job's price goes back to its requester; the provider is never paid for it.
    with pytest.raises(TransactionReverted) as finalize:
        await market.finalize(opened.job_id, sender=provider)
    assert finalize.value.error_name == "WrongJobStatus"
    job = await market.job(opened.job_id)
    assert job.status is JobStatus.DISPUTED
    paid = await court.withdraw(sender=pool[[p.address for p in pool].index(jurors[0])])
    assert paid == expected.juror_pay[0]


async def test_cannot_slash_an_honest_provider_for_a_tolerance_difference(
    client: ChainClient,
    deployment: Deployment,
    roles: Roles,
    provider: LocalAccount,
    pool: list[LocalAccount],
    advance_time: AdvanceTime,
) -> None:
    court, registry, market = deployment.court, deployment.registry, deployment.market
    opened = await open_on_escrowed_job(deployment, roles, provider)
    jurors = await draw(client, deployment, opened, roles.outsider)
    await vote(deployment, opened, accounts_by_address(pool), jurors, [TOLERABLE] * len(jurors))
    resolved = await court.resolve(opened.dispute_id, sender=roles.outsider)
    bond = await court.bond()
    expected = disputes.settle(
        [TOLERABLE] * len(jurors),
        bond=bond,
        provider_stake=MIN_STAKE,
        slash_amount=MIN_STAKE,
        juror_stakes=[MIN_STAKE] * len(jurors),
    )
    assert resolved.verdict is Verdict.PROVIDER_RIGHT
    assert resolved.provider_slashed == 0
    assert (await registry.provider(provider.address)).stake == MIN_STAKE
    # The frivolous challenger lost its bond: part to the provider, part to the jury, the rest burned.
    assert await court.withdrawable(roles.requester.address) == 0
    assert await court.withdrawable(provider.address) == expected.provider_paid > 0
    assert await court.burned() == expected.burned
    # The job is the provider's again once its window ends.
    await advance_time(client, CHALLENGE_WINDOW_S + 1)
    finalized = await market.finalize(opened.job_id, sender=roles.outsider)
    assert finalized.price == PRICE


async def test_cannot_sit_on_the_jury_of_ones_own_dispute(
    client: ChainClient,
    deployment: Deployment,
    roles: Roles,
    provider: LocalAccount,
    pool: list[LocalAccount],
) -> None:
    registry = deployment.registry
    # Attacker: the provider stakes heavily (and its challenger is a provider too) to be drawn.
    await registry.add_stake(2 * MIN_STAKE, sender=provider)
    await registry.register(PEER_ID, METADATA_HASH, stake=3 * MIN_STAKE, sender=roles.requester)
    opened = await open_on_escrowed_job(deployment, roles, provider)
    jurors = await draw(client, deployment, opened, roles.outsider)
    assert len(jurors) == disputes.JURY_SIZE
    assert provider.address not in jurors
    assert roles.requester.address not in jurors
    assert len(set(jurors)) == len(jurors)


async def test_cannot_copy_another_jurors_vote(
    client: ChainClient,
    deployment: Deployment,
    roles: Roles,
    provider: LocalAccount,
    pool: list[LocalAccount],
    advance_time: AdvanceTime,
) -> None:
    court, registry = deployment.court, deployment.registry
    by_address = accounts_by_address(pool)
    opened = await open_on_escrowed_job(deployment, roles, provider)
    jurors = await draw(client, deployment, opened, roles.outsider)
    honest, copier = by_address[jurors[0]], by_address[jurors[1]]
    salt = Hash32(secrets.token_bytes(32))
    commitment = disputes.commitment(opened.dispute_id, honest.address, WRONG, salt)
    await court.commit_vote(opened.dispute_id, commitment, sender=honest)
    # Attacker: a lazy juror commits the honest juror's commitment, then replays its reveal.
    await court.commit_vote(opened.dispute_id, commitment, sender=copier)
    with pytest.raises(TransactionReverted) as early:
        await court.reveal_vote(opened.dispute_id, WRONG, salt, sender=honest)
    assert early.value.error_name == "RevealNotOpen"
    await advance_time(client, DEFAULT_COMMIT_PERIOD_S + 1)
    await court.reveal_vote(opened.dispute_id, WRONG, salt, sender=honest)
    with pytest.raises(TransactionReverted) as copied:
        await court.reveal_vote(opened.dispute_id, WRONG, salt, sender=copier)
    assert copied.value.error_name == "CommitmentMismatch"
    with pytest.raises(TransactionReverted) as too_soon:
        await court.resolve(opened.dispute_id, sender=roles.outsider)
    assert too_soon.value.error_name == "RevealStillOpen"
    await advance_time(client, DEFAULT_REVEAL_PERIOD_S + 1)
    resolved = await court.resolve(opened.dispute_id, sender=roles.outsider)
    # One reveal is no quorum: nobody is slashed for the job, the bond goes back, the copier and
    # the jurors who never committed lose stake, and the one juror who did its work is paid.
    assert resolved.verdict is Verdict.UNDECIDED
    penalty = disputes.no_reveal_penalty(await court.bond())
    assert resolved.penalized == {juror: penalty for juror in jurors[1:]}
    assert (await registry.provider(copier.address)).stake == MIN_STAKE - penalty
    assert await court.withdrawable(copier.address) == 0
    assert await court.withdrawable(honest.address) > 0
    assert await court.withdrawable(roles.requester.address) == await court.bond()


async def test_cannot_keep_a_silent_jurors_stake_whole(
    client: ChainClient,
    deployment: Deployment,
    roles: Roles,
    provider: LocalAccount,
    pool: list[LocalAccount],
    advance_time: AdvanceTime,
) -> None:
    court, registry = deployment.court, deployment.registry
    opened = await open_on_escrowed_job(deployment, roles, provider)
    jurors = await draw(client, deployment, opened, roles.outsider)
    # Attacker: a juror commits and then never reveals, hoping to be paid without re-running.
    await vote(deployment, opened, accounts_by_address(pool), jurors, [WRONG, WRONG, WRONG, WRONG, None])
    with pytest.raises(TransactionReverted):
        await court.resolve(opened.dispute_id, sender=roles.outsider)
    await advance_time(client, DEFAULT_COMMIT_PERIOD_S + DEFAULT_REVEAL_PERIOD_S + 1)
    resolved = await court.resolve(opened.dispute_id, sender=roles.outsider)
    assert resolved.verdict is Verdict.PROVIDER_WRONG
    penalty = disputes.no_reveal_penalty(await court.bond())
    assert resolved.penalized == {jurors[4]: penalty}
    assert (await registry.provider(jurors[4])).stake == MIN_STAKE - penalty
    assert await court.withdrawable(jurors[4]) == 0
    assert await registry.open_disputes(jurors[4]) == 0


async def test_cannot_unstake_to_escape_an_open_dispute(
    client: ChainClient,
    deployment: Deployment,
    roles: Roles,
    provider: LocalAccount,
    pool: list[LocalAccount],
    advance_time: AdvanceTime,
) -> None:
    registry = deployment.registry
    opened = await open_on_escrowed_job(deployment, roles, provider)
    # Attacker: the challenged provider leaves before the jury can decide.
    await registry.request_unstake(sender=provider)
    await advance_time(client, UNSTAKE_COOLDOWN_S + 1)
    with pytest.raises(TransactionReverted) as locked:
        await registry.withdraw_stake(sender=provider)
    assert locked.value.error_name == "StakeLocked"
    jurors = await draw(client, deployment, opened, roles.outsider)
    await vote(deployment, opened, accounts_by_address(pool), jurors, [WRONG] * len(jurors))
    resolved = await deployment.court.resolve(opened.dispute_id, sender=roles.outsider)
    assert resolved.provider_slashed == MIN_STAKE
    assert (await registry.provider(provider.address)).stake == 0


async def test_cannot_challenge_after_the_window(
    client: ChainClient,
    deployment: Deployment,
    roles: Roles,
    provider: LocalAccount,
    advance_time: AdvanceTime,
) -> None:
    court, market = deployment.court, deployment.market
    job = await submitted(deployment, roles.requester, provider, roles.relayer)
    receipt = receipt_for(job.terms, provider.address, OUTPUT)
    signature = sign_receipt(key_of(provider), market.domain(), receipt)
    bond = await court.bond()
    await advance_time(client, CHALLENGE_WINDOW_S + 1)
    with pytest.raises(TransactionReverted) as late:
        await court.open_dispute(receipt, signature, bond=bond, sender=roles.requester)
    assert late.value.error_name == "ChallengeWindowClosed"
    assert (await market.finalize(job.job_id, sender=provider)).price == PRICE
    # Once settled, the job reads as unknown; a provider that never redeemed vouchers is past reach.
    with pytest.raises(TransactionReverted) as settled:
        await court.open_dispute(receipt, signature, bond=bond, sender=roles.requester)
    assert settled.value.error_name == "ChallengeTooLate"
    assert await client.balance(court.address) == 0


async def test_cannot_dispute_one_job_twice(
    client: ChainClient,
    deployment: Deployment,
    roles: Roles,
    provider: LocalAccount,
    pool: list[LocalAccount],
) -> None:
    court, market = deployment.court, deployment.market
    opened = await open_on_escrowed_job(deployment, roles, provider)
    job_receipt = disputed_receipt(opened)
    signature = sign_receipt(key_of(provider), market.domain(), job_receipt)
    # Attacker: another account re-opens the same dispute to keep the provider's stake locked.
    with pytest.raises(TransactionReverted) as again:
        await court.open_dispute(job_receipt, signature, bond=await court.bond(), sender=roles.outsider)
    assert again.value.error_name == "AlreadyDisputed"
    jurors = await draw(client, deployment, opened, roles.outsider)
    await vote(deployment, opened, accounts_by_address(pool), jurors, [TOLERABLE] * len(jurors))
    await court.resolve(opened.dispute_id, sender=roles.outsider)
    with pytest.raises(TransactionReverted) as after:
        await court.open_dispute(job_receipt, signature, bond=await court.bond(), sender=roles.outsider)
    assert after.value.error_name == "AlreadyDisputed"


async def test_cannot_open_a_dispute_with_a_bad_receipt_or_bond(
    deployment: Deployment, roles: Roles, provider: LocalAccount
) -> None:
    court, market = deployment.court, deployment.market
    job = await submitted(deployment, roles.requester, provider, roles.relayer)
    receipt = receipt_for(job.terms, provider.address, OUTPUT)
    forged = sign_receipt(key_of(roles.outsider), market.domain(), receipt)
    bond = await court.bond()
    with pytest.raises(TransactionReverted) as wrong_signer:
        await court.open_dispute(receipt, forged, bond=bond, sender=roles.requester)
    assert wrong_signer.value.error_name == "WrongSigner"
    signature = sign_receipt(key_of(provider), market.domain(), receipt)
    with pytest.raises(TransactionReverted) as cheap:
        await court.open_dispute(receipt, signature, bond=bond - 1, sender=roles.requester)
    assert cheap.value.error_name == "WrongBond"
    with pytest.raises(TransactionReverted) as itself:
        await court.open_dispute(receipt, signature, bond=bond, sender=provider)
    assert itself.value.error_name == "SelfChallenge"
    assert (await market.job(job.job_id)).status is JobStatus.SUBMITTED


async def test_can_dispute_a_voucher_job_after_its_redemption(
    client: ChainClient,
    deployment: Deployment,
    roles: Roles,
    provider: LocalAccount,
    pool: list[LocalAccount],
    advance_time: AdvanceTime,
) -> None:
    court, market, registry = deployment.court, deployment.market, deployment.registry
    await market.reserve(provider.address, PRICE, deposit=PRICE, sender=roles.payer)
    voucher = signed_voucher(market.domain(), roles.payer, provider.address, PRICE)
    job_id = voucher_job_id(roles.payer.address, secrets.token_bytes(32))
    receipt = ResultReceipt(
        job_id=job_id,
        model_id=sha(b"model"),
        input_hash=sha(b"input"),
        output_hash=sha(b"a wrong output"),
        profile_hash=sha(b"profile"),
        provider=Address(provider.address),
    )
    signature = sign_receipt(key_of(provider), market.domain(), receipt)
    bond = await court.bond()
    with pytest.raises(TransactionReverted) as unpaid:
        await court.open_dispute(receipt, signature, bond=bond, sender=roles.payer)
    assert unpaid.value.error_name == "ChallengeTooLate"
    # Attacker: the provider asks to unstake first, then redeems just before its cooldown ends and
    # tries to leave before anyone can dispute the jobs those vouchers paid for.
    await registry.request_unstake(sender=provider)
    await advance_time(client, UNSTAKE_COOLDOWN_S - 10)
    await market.redeem_vouchers([voucher], sender=provider)
    await advance_time(client, 20)
    with pytest.raises(TransactionReverted) as locked:
        await registry.withdraw_stake(sender=provider)
    assert locked.value.error_name == "StakeLocked"
    await advance_time(client, DEFAULT_VOUCHER_DISPUTE_WINDOW_S // 2)
    opened = await court.open_dispute(
        receipt, signature, evidence_peer=PEER_ID, bond=bond, sender=roles.payer
    )
    assert not opened.escrowed
    jurors = await draw(client, deployment, opened, roles.outsider)
    await vote(deployment, opened, accounts_by_address(pool), jurors, [WRONG] * len(jurors))
    resolved = await court.resolve(opened.dispute_id, sender=roles.outsider)
    assert resolved.verdict is Verdict.PROVIDER_WRONG
    assert resolved.provider_slashed == MIN_STAKE


async def test_can_read_back_the_rules_the_node_uses(deployment: Deployment) -> None:
    court = deployment.court
    for name in (
        "JURY_SIZE",
        "QUORUM",
        "DRAW_DELAY_BLOCKS",
        "MAX_DRAW_ATTEMPTS",
        "SLASH_REWARD_BPS",
        "JURY_SHARE_BPS",
        "NO_REVEAL_PENALTY_BPS",
        "BPS",
    ):
        assert await court.constant(name) == getattr(disputes, name), name
    registry_reward = await deployment.registry.client.call(
        deployment.registry.contract.functions.SLASH_REWARD_BPS()
    )
    assert registry_reward == disputes.SLASH_REWARD_BPS
    assert await court.slash_amount() == MIN_STAKE


async def test_can_weigh_jurors_by_active_stake(
    deployment: Deployment, roles: Roles, provider: LocalAccount
) -> None:
    registry = deployment.registry
    assert await registry.weight_of(provider.address) == MIN_STAKE
    await registry.register(PEER_ID, METADATA_HASH, stake=2 * MIN_STAKE, sender=roles.other_provider)
    await registry.add_stake(MIN_STAKE, sender=provider)
    assert await registry.total_weight() == 4 * MIN_STAKE
    await registry.request_unstake(sender=roles.other_provider)
    assert await registry.weight_of(roles.other_provider.address) == 0
    assert await registry.total_weight() == 2 * MIN_STAKE
