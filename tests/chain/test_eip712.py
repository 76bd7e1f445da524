"""EIP-712 receipts and vouchers: digests agree with eth_account; bad signatures are refused."""

from __future__ import annotations

from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import SignableMessage, encode_typed_data
from eth_utils.crypto import keccak
from hypothesis import given, settings
from hypothesis import strategies as st

from node.chain.eip712 import (
    SECP256K1_N,
    Eip712Domain,
    receipt_digest,
    recover_receipt_signer,
    recover_voucher_signer,
    sign_receipt,
    sign_voucher,
    verify_receipt,
    verify_voucher,
    voucher_digest,
)
from node.chain.keys import NodeKey
from node.errors import SignatureError
from node.types import Address, Hash32, ResultReceipt, Voucher, sha256

MARKET = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
OTHER_MARKET = "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512"
CHAIN_ID = 31337

hashes = st.binary(min_size=32, max_size=32).map(Hash32)
private_keys = st.integers(min_value=1, max_value=SECP256K1_N - 1).map(lambda k: k.to_bytes(32, "big"))
chain_ids = st.integers(min_value=1, max_value=2**64)


def any_address(raw: bytes) -> Address:
    return Address(Account.from_key(keccak(raw)).address)


address_strategy = st.binary(min_size=1, max_size=8).map(any_address)


def eip712_domain_data(domain: Eip712Domain) -> dict[str, Any]:
    return {
        "name": "gpunode",
        "version": "1",
        "chainId": domain.chain_id,
        "verifyingContract": domain.verifying_contract,
    }


def eth_account_receipt(domain: Eip712Domain, receipt: ResultReceipt) -> SignableMessage:
    return encode_typed_data(
        full_message={
            "types": {
                "EIP712Domain": [
                    {"name": "name", "type": "string"},
                    {"name": "version", "type": "string"},
                    {"name": "chainId", "type": "uint256"},
                    {"name": "verifyingContract", "type": "address"},
                ],
                "ResultReceipt": [
                    {"name": "jobId", "type": "bytes32"},
                    {"name": "modelId", "type": "bytes32"},
                    {"name": "inputHash", "type": "bytes32"},
                    {"name": "outputHash", "type": "bytes32"},
                    {"name": "profileHash", "type": "bytes32"},
                    {"name": "provider", "type": "address"},
                ],
            },
            "primaryType": "ResultReceipt",
            "domain": eip712_domain_data(domain),
            "message": {
                "jobId": receipt.job_id,
                "modelId": receipt.model_id,
                "inputHash": receipt.input_hash,
                "outputHash": receipt.output_hash,
                "profileHash": receipt.profile_hash,
                "provider": receipt.provider,
            },
        }
    )


def eth_account_voucher(domain: Eip712Domain, voucher: Voucher) -> SignableMessage:
    return encode_typed_data(
        domain_data=eip712_domain_data(domain),
        message_types={
            "Voucher": [
                {"name": "client", "type": "address"},
                {"name": "provider", "type": "address"},
                {"name": "cumulativeAmount", "type": "uint256"},
            ]
        },
        message_data={
            "client": voucher.client,
            "provider": voucher.provider,
            "cumulativeAmount": voucher.cumulative_amount,
        },
    )


def signable_digest(message: SignableMessage) -> bytes:
    return keccak(b"\x19" + message.version + message.header + message.body)


receipts = st.builds(
    ResultReceipt,
    job_id=hashes,
    model_id=hashes,
    input_hash=hashes,
    output_hash=hashes,
    profile_hash=hashes,
    provider=address_strategy,
)
vouchers = st.builds(
    Voucher,
    client=address_strategy,
    provider=address_strategy,
    cumulative_amount=st.integers(min_value=0, max_value=2**256 - 1),
)
domains = st.builds(Eip712Domain, chain_id=chain_ids, verifying_contract=address_strategy)


@settings(max_examples=60, deadline=None)
@given(domain=domains, receipt=receipts, key=private_keys)
def test_can_sign_receipts_as_eth_account_does(
    domain: Eip712Domain, receipt: ResultReceipt, key: bytes
) -> None:
    message = eth_account_receipt(domain, receipt)
    assert receipt_digest(domain, receipt) == signable_digest(message)
    signature = sign_receipt(key, domain, receipt)
    # Both use RFC 6979 nonces and low-s, so the signatures are byte-identical.
    assert signature == bytes(Account.sign_message(message, key).signature)
    assert recover_receipt_signer(domain, receipt, signature) == Account.from_key(key).address


@settings(max_examples=60, deadline=None)
@given(domain=domains, voucher=vouchers, key=private_keys)
def test_can_sign_vouchers_as_eth_account_does(domain: Eip712Domain, voucher: Voucher, key: bytes) -> None:
    message = eth_account_voucher(domain, voucher)
    assert voucher_digest(domain, voucher) == signable_digest(message)
    signature = sign_voucher(key, domain, voucher)
    assert signature == bytes(Account.sign_message(message, key).signature)
    assert recover_voucher_signer(domain, voucher, signature) == Account.from_key(key).address


@pytest.fixture
def provider_key() -> NodeKey:
    return NodeKey.generate()


@pytest.fixture
def receipt(provider_key: NodeKey) -> ResultReceipt:
    return ResultReceipt(
        job_id=sha256(b"job"),
        model_id=sha256(b"model"),
        input_hash=sha256(b"input"),
        output_hash=sha256(b"output"),
        profile_hash=sha256(b"profile"),
        provider=provider_key.address,
    )


@pytest.fixture
def domain() -> Eip712Domain:
    return Eip712Domain(chain_id=CHAIN_ID, verifying_contract=MARKET)


def high_s(signature: bytes) -> bytes:
    """The same signature with s' = n - s and v flipped: valid for ecrecover, refused by gpunode."""
    s = int.from_bytes(signature[32:64], "big")
    flipped_v = 55 - signature[64]
    return signature[:32] + (SECP256K1_N - s).to_bytes(32, "big") + bytes([flipped_v])


def test_can_verify_a_receipt(domain: Eip712Domain, receipt: ResultReceipt, provider_key: NodeKey) -> None:
    signature = sign_receipt(provider_key.private_key, domain, receipt)
    assert len(signature) == 65
    assert signature[64] in (27, 28)
    assert verify_receipt(domain, receipt, signature, provider_key.address)


def test_cannot_verify_a_high_s_signature(
    domain: Eip712Domain, receipt: ResultReceipt, provider_key: NodeKey
) -> None:
    malleated = high_s(sign_receipt(provider_key.private_key, domain, receipt))
    # eth_account (like a bare ecrecover) still recovers the signer from the malleated form...
    recovered = Account._recover_hash(receipt_digest(domain, receipt), signature=malleated)
    assert recovered == provider_key.address
    # ...gpunode, like the contract, refuses it.
    with pytest.raises(SignatureError, match="high-s"):
        recover_receipt_signer(domain, receipt, malleated)
    assert not verify_receipt(domain, receipt, malleated, provider_key.address)


def test_cannot_verify_under_another_chain_id(
    domain: Eip712Domain, receipt: ResultReceipt, provider_key: NodeKey
) -> None:
    signature = sign_receipt(provider_key.private_key, domain, receipt)
    other_chain = Eip712Domain(chain_id=CHAIN_ID + 1, verifying_contract=MARKET)
    assert receipt_digest(other_chain, receipt) != receipt_digest(domain, receipt)
    assert recover_receipt_signer(other_chain, receipt, signature) != provider_key.address
    assert not verify_receipt(other_chain, receipt, signature, provider_key.address)


def test_cannot_verify_for_another_contract(
    domain: Eip712Domain, receipt: ResultReceipt, provider_key: NodeKey
) -> None:
    signature = sign_receipt(provider_key.private_key, domain, receipt)
    other_market = Eip712Domain(chain_id=CHAIN_ID, verifying_contract=OTHER_MARKET)
    assert not verify_receipt(other_market, receipt, signature, provider_key.address)


def test_cannot_verify_a_changed_receipt(
    domain: Eip712Domain, receipt: ResultReceipt, provider_key: NodeKey
) -> None:
    signature = sign_receipt(provider_key.private_key, domain, receipt)
    forged = ResultReceipt(
        job_id=receipt.job_id,
        model_id=receipt.model_id,
        input_hash=receipt.input_hash,
        output_hash=sha256(b"another output"),
        profile_hash=receipt.profile_hash,
        provider=receipt.provider,
    )
    assert not verify_receipt(domain, forged, signature, provider_key.address)


def test_cannot_verify_another_signers_voucher(domain: Eip712Domain, provider_key: NodeKey) -> None:
    client_key, impostor = NodeKey.generate(), NodeKey.generate()
    voucher = Voucher(client=client_key.address, provider=provider_key.address, cumulative_amount=10**15)
    signature = sign_voucher(impostor.private_key, domain, voucher)
    assert not verify_voucher(domain, voucher, signature, client_key.address)
    assert verify_voucher(domain, voucher, signature, impostor.address)


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda sig: sig[:64], "65 bytes"),
        (lambda sig: sig + b"\x00", "65 bytes"),
        (lambda sig: sig[:64] + b"\x01", "v must be 27 or 28"),
        (lambda sig: sig[:64] + b"\x00", "v must be 27 or 28"),
        (lambda sig: b"\x00" * 32 + sig[32:], "r is out of range"),
        (lambda sig: sig[:32] + b"\x00" * 32 + sig[64:], "high-s"),
    ],
)
def test_cannot_recover_a_malformed_signature(
    domain: Eip712Domain, receipt: ResultReceipt, provider_key: NodeKey, mangle: Any, message: str
) -> None:
    signature = sign_receipt(provider_key.private_key, domain, receipt)
    with pytest.raises(SignatureError, match=message):
        recover_receipt_signer(domain, receipt, mangle(signature))
    assert not verify_receipt(domain, receipt, mangle(signature), provider_key.address)


def test_cannot_hash_a_receipt_with_a_short_field(domain: Eip712Domain, receipt: ResultReceipt) -> None:
    short = ResultReceipt(
        job_id=Hash32(b"\x01" * 31),
        model_id=receipt.model_id,
        input_hash=receipt.input_hash,
        output_hash=receipt.output_hash,
        profile_hash=receipt.profile_hash,
        provider=receipt.provider,
    )
    with pytest.raises(SignatureError, match="job_id must be 32 bytes"):
        receipt_digest(domain, short)


def test_cannot_hash_a_voucher_with_a_bad_address_or_amount(domain: Eip712Domain) -> None:
    provider = NodeKey.generate().address
    with pytest.raises(SignatureError, match="not an Ethereum address"):
        voucher_digest(domain, Voucher(client=Address("0x1234"), provider=provider, cumulative_amount=1))
    with pytest.raises(SignatureError, match="does not fit a uint256"):
        voucher_digest(domain, Voucher(client=provider, provider=provider, cumulative_amount=-1))
