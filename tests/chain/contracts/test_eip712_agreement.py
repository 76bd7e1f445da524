"""Python's EIP-712 digests (node.chain.eip712) equal the ones JobMarket computes on-chain."""

from __future__ import annotations

from dataclasses import replace

import pytest
from contract_helpers import Roles
from eth_utils.address import to_checksum_address
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.chain.client import ChainClient
from node.chain.deploy import Deployment
from node.chain.eip712 import (
    RECEIPT_TYPEHASH,
    VOUCHER_TYPEHASH,
    receipt_digest,
    recover_receipt_signer,
    sign_receipt,
    voucher_digest,
)
from node.types import Address, Hash32, ResultReceipt, Voucher

hashes = st.binary(min_size=32, max_size=32).map(Hash32)
addresses = st.binary(min_size=20, max_size=20).map(lambda raw: Address(to_checksum_address(raw)))
receipts = st.builds(
    ResultReceipt,
    job_id=hashes,
    model_id=hashes,
    input_hash=hashes,
    output_hash=hashes,
    profile_hash=hashes,
    provider=addresses,
)
vouchers = st.builds(
    Voucher, client=addresses, provider=addresses, cumulative_amount=st.integers(0, 2**256 - 1)
)
FEW = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


async def test_domain_separator_and_type_hashes_agree(deployment: Deployment) -> None:
    market = deployment.market
    call = market.client.call
    assert await call(market.contract.functions.domainSeparator()) == market.domain().separator()
    assert await call(market.contract.functions.RECEIPT_TYPEHASH()) == RECEIPT_TYPEHASH
    assert await call(market.contract.functions.VOUCHER_TYPEHASH()) == VOUCHER_TYPEHASH
    assert market.domain().chain_id == await market.client.w3.eth.chain_id


@FEW
@given(receipt=receipts)
async def test_receipt_digests_agree(deployment: Deployment, receipt: ResultReceipt) -> None:
    market = deployment.market
    assert await market.receipt_digest(receipt) == receipt_digest(market.domain(), receipt)


@FEW
@given(voucher=vouchers)
async def test_voucher_digests_agree(deployment: Deployment, voucher: Voucher) -> None:
    market = deployment.market
    assert await market.voucher_digest(voucher) == voucher_digest(market.domain(), voucher)


@pytest.mark.parametrize("other", ["chain", "contract"])
async def test_cannot_reuse_a_digest_in_another_domain(
    client: ChainClient, deployment: Deployment, roles: Roles, other: str
) -> None:
    """A receipt signed for one market recovers to someone else under another chain or contract."""
    market = deployment.market
    receipt = ResultReceipt(
        job_id=Hash32(b"\x01" * 32),
        model_id=Hash32(b"\x02" * 32),
        input_hash=Hash32(b"\x03" * 32),
        output_hash=Hash32(b"\x04" * 32),
        profile_hash=Hash32(b"\x05" * 32),
        provider=Address(roles.provider.address),
    )
    domain = market.domain()
    signature = sign_receipt(bytes(roles.provider.key), domain, receipt)
    assert recover_receipt_signer(domain, receipt, signature) == roles.provider.address
    elsewhere = (
        replace(domain, chain_id=domain.chain_id + 1)
        if other == "chain"
        else replace(domain, verifying_contract=deployment.registry.address)
    )
    assert receipt_digest(elsewhere, receipt) != await market.receipt_digest(receipt)
    assert recover_receipt_signer(elsewhere, receipt, signature) != roles.provider.address
