"""JobMarket.proveEquivocation: two different receipts for one job, signed by one provider."""

from __future__ import annotations

from dataclasses import replace

import pytest
from contract_helpers import (
    MIN_STAKE,
    OUTPUT,
    PRICE,
    Roles,
    claimed,
    high_s,
    key_of,
    receipt_for,
    request,
    sha,
    signed_receipt,
)
from eth_account.signers.local import LocalAccount

from node.chain.deploy import Deployment
from node.chain.eip712 import sign_receipt
from node.chain.market import JobStatus
from node.errors import TransactionReverted


async def test_can_prove_equivocation_on_a_pending_job(
    deployment: Deployment, roles: Roles, provider: LocalAccount
) -> None:
    market, registry = deployment.market, deployment.registry
    job = await claimed(deployment, roles.requester, provider)
    receipt_a, sig_a = signed_receipt(market.domain(), job.terms, provider, OUTPUT)
    receipt_b, sig_b = signed_receipt(market.domain(), job.terms, provider, b"a different output")
    await market.submit_result(job.terms, receipt_a, sig_a, sender=provider)
    proven = await market.prove_equivocation(receipt_a, sig_a, receipt_b, sig_b, sender=roles.reporter)
    assert proven.provider == provider.address
    assert proven.slashed == MIN_STAKE
    assert proven.disputed
    # The reward is credited, not pushed: no reporter contract can make a proof revert.
    assert await market.withdrawable(roles.reporter.address) == MIN_STAKE // 2
    assert await registry.burned_stake() == MIN_STAKE - MIN_STAKE // 2
    assert (await registry.provider(provider.address)).stake == 0
    assert not await registry.is_active(provider.address)
    assert not await market.provider_active(provider.address)
    assert await market.equivocation_proven(job.job_id, provider.address)
    # The disputed job is never paid to the provider; its requester gets the price back at once.
    assert (await market.job(job.job_id)).status is JobStatus.DISPUTED
    with pytest.raises(TransactionReverted) as finalize:
        await market.finalize(job.job_id, sender=provider)
    assert finalize.value.error_name == "WrongJobStatus"
    refunded = await market.refund(job.terms, sender=roles.requester)
    assert refunded.price == PRICE


async def test_can_prove_equivocation_on_a_claimed_job_before_its_result(
    deployment: Deployment, roles: Roles, provider: LocalAccount
) -> None:
    market = deployment.market
    job = await claimed(deployment, roles.requester, provider)
    receipt_a, sig_a = signed_receipt(market.domain(), job.terms, provider, OUTPUT)
    receipt_b, sig_b = signed_receipt(market.domain(), job.terms, provider, b"a different output")
    proven = await market.prove_equivocation(receipt_a, sig_a, receipt_b, sig_b, sender=roles.reporter)
    assert proven.disputed
    with pytest.raises(TransactionReverted) as submit:
        await market.submit_result(job.terms, receipt_a, sig_a, sender=provider)
    assert submit.value.error_name == "WrongJobStatus"
    assert (await market.refund(job.terms, sender=roles.outsider)).price == PRICE


async def test_can_prove_equivocation_on_an_off_chain_job(
    deployment: Deployment, roles: Roles, provider: LocalAccount
) -> None:
    market = deployment.market
    job = await request(deployment, roles.requester)  # only its terms are used: an off-chain job id
    receipt_a, sig_a = signed_receipt(market.domain(), job.terms, provider, OUTPUT)
    receipt_b, sig_b = signed_receipt(
        market.domain(), job.terms, provider, OUTPUT, profile=sha(b"other profile")
    )
    proven = await market.prove_equivocation(receipt_a, sig_a, receipt_b, sig_b, sender=roles.reporter)
    assert proven.slashed == MIN_STAKE
    assert not proven.disputed
    assert (await market.job(job.job_id)).status is JobStatus.REQUESTED


async def test_cannot_prove_equivocation_twice(
    deployment: Deployment, roles: Roles, provider: LocalAccount
) -> None:
    market = deployment.market
    job = await request(deployment, roles.requester)
    receipt_a, sig_a = signed_receipt(market.domain(), job.terms, provider, OUTPUT)
    receipt_b, sig_b = signed_receipt(market.domain(), job.terms, provider, b"other")
    await market.prove_equivocation(receipt_a, sig_a, receipt_b, sig_b, sender=roles.reporter)
    with pytest.raises(TransactionReverted) as caught:
        await market.prove_equivocation(receipt_b, sig_b, receipt_a, sig_a, sender=roles.outsider)
    assert caught.value.error_name == "AlreadyProven"


async def test_cannot_prove_equivocation_without_two_different_receipts(
    deployment: Deployment, roles: Roles, provider: LocalAccount
) -> None:
    market = deployment.market
    job = await request(deployment, roles.requester)
    other_job = await request(deployment, roles.requester)
    receipt_a, sig_a = signed_receipt(market.domain(), job.terms, provider, OUTPUT)
    with pytest.raises(TransactionReverted) as same:
        await market.prove_equivocation(receipt_a, sig_a, receipt_a, sig_a, sender=roles.reporter)
    assert same.value.error_name == "SameReceipt"
    receipt_c, sig_c = signed_receipt(market.domain(), other_job.terms, provider, b"other")
    with pytest.raises(TransactionReverted) as jobs:
        await market.prove_equivocation(receipt_a, sig_a, receipt_c, sig_c, sender=roles.reporter)
    assert jobs.value.error_name == "DifferentJobs"
    assert (await deployment.registry.provider(provider.address)).stake == MIN_STAKE


@pytest.mark.parametrize("forgery", ["other-signer", "other-provider", "high-s", "v=29"])
async def test_cannot_prove_equivocation_with_a_bad_signature(
    deployment: Deployment, roles: Roles, provider: LocalAccount, forgery: str
) -> None:
    market = deployment.market
    job = await request(deployment, roles.requester)
    receipt_a, sig_a = signed_receipt(market.domain(), job.terms, provider, OUTPUT)
    receipt_b = receipt_for(job.terms, provider.address, b"other")
    sig_b = sign_receipt(key_of(provider), market.domain(), receipt_b)
    expected = "WrongSigner"
    if forgery == "other-signer":
        sig_b = sign_receipt(key_of(roles.outsider), market.domain(), receipt_b)
    elif forgery == "other-provider":
        receipt_b = replace(receipt_b, provider=roles.outsider.address)  # type: ignore[arg-type]
        sig_b = sign_receipt(key_of(roles.outsider), market.domain(), receipt_b)
        expected = "DifferentProviders"
    elif forgery == "high-s":
        sig_b, expected = high_s(sig_b), "InvalidSignature"
    else:
        sig_b, expected = sig_b[:64] + bytes([29]), "InvalidSignature"
    with pytest.raises(TransactionReverted) as caught:
        await market.prove_equivocation(receipt_a, sig_a, receipt_b, sig_b, sender=roles.reporter)
    assert caught.value.error_name == expected
    assert (await deployment.registry.provider(provider.address)).stake == MIN_STAKE


async def test_can_prove_equivocation_of_an_unregistered_signer_for_nothing(
    deployment: Deployment, roles: Roles
) -> None:
    market = deployment.market
    job = await request(deployment, roles.requester)
    stranger = roles.outsider
    receipt_a, sig_a = signed_receipt(market.domain(), job.terms, stranger, OUTPUT)
    receipt_b, sig_b = signed_receipt(market.domain(), job.terms, stranger, b"other")
    proven = await market.prove_equivocation(receipt_a, sig_a, receipt_b, sig_b, sender=roles.reporter)
    assert proven.slashed == 0
    assert not proven.disputed  # the job was never this signer's
    assert await market.withdrawable(roles.reporter.address) == 0
    assert (await market.job(job.job_id)).status is JobStatus.REQUESTED
