"""Constants and helpers shared by the contract tests: roles, requests, signed receipts and vouchers."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from eth_account.signers.local import LocalAccount
from hexbytes import HexBytes
from web3.contract import AsyncContract

from node.chain.artifacts import Artifact, load_artifact_file
from node.chain.client import ChainClient
from node.chain.deploy import Deployment
from node.chain.eip712 import SECP256K1_N, Eip712Domain, sign_receipt, sign_voucher
from node.chain.market import JobRequested, JobTerms
from node.types import Address, Hash32, ResultReceipt, Voucher

MIN_STAKE = 10**18
UNSTAKE_COOLDOWN_S = 7_200
CHALLENGE_WINDOW_S = 600
WITHDRAWAL_DELAY_S = 1_800
PRICE = 10**15
MODEL_ID = Hash32(hashlib.sha256(b"model:resnet18").digest())
PROFILE_HASH = Hash32(hashlib.sha256(b"profile:torch-2.13-cpu-1thread").digest())
PEER_ID = bytes.fromhex("0025") + bytes(range(35))
METADATA_HASH = Hash32(hashlib.sha256(b"metadata").digest())
TEST_ARTIFACTS = Path(__file__).with_name("artifacts")

AdvanceTime = Callable[[ChainClient, int], Awaitable[None]]


def load_test_artifact(name: str) -> Artifact:
    return load_artifact_file(TEST_ARTIFACTS / f"{name}.json")


def sha(data: bytes) -> Hash32:
    return Hash32(hashlib.sha256(data).digest())


def key_of(account: LocalAccount) -> bytes:
    return bytes(account.key)


def high_s(signature: bytes) -> bytes:
    """The malleable twin of a valid signature: s -> n - s, v flipped; recovers the same signer."""
    s = int.from_bytes(signature[32:64], "big")
    v = signature[64]
    return signature[:32] + (SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - v])


@dataclass(frozen=True)
class Roles:
    deployer: LocalAccount
    provider: LocalAccount  # registered and staked by the `provider` fixture
    other_provider: LocalAccount  # staked too where a test needs two providers
    requester: LocalAccount
    payer: LocalAccount  # a voucher client
    relayer: LocalAccount
    outsider: LocalAccount
    reporter: LocalAccount


async def now(client: ChainClient) -> int:
    block = await client.w3.eth.get_block("latest")
    return int(block["timestamp"])


async def request(
    deployment: Deployment,
    requester: LocalAccount,
    *,
    input: bytes = b"an input tensor",
    price: int = PRICE,
    deadline_in_s: int = 3_600,
    provider: str | None = None,
    callback: str | None = None,
) -> JobRequested:
    deadline = await now(deployment.market.client) + deadline_in_s
    return await deployment.market.request_job(
        MODEL_ID,
        price=price,
        deadline=deadline,
        input=input,
        provider=provider,
        callback=callback,
        sender=requester,
    )


def receipt_for(
    terms: JobTerms, provider: str, output: bytes, *, profile: Hash32 = PROFILE_HASH
) -> ResultReceipt:
    return ResultReceipt(
        job_id=terms.job_id,
        model_id=terms.model_id,
        input_hash=terms.input_hash,
        output_hash=sha(output),
        profile_hash=profile,
        provider=Address(provider),
    )


def signed_receipt(
    domain: Eip712Domain,
    terms: JobTerms,
    signer: LocalAccount,
    output: bytes,
    *,
    profile: Hash32 = PROFILE_HASH,
) -> tuple[ResultReceipt, bytes]:
    receipt = receipt_for(terms, signer.address, output, profile=profile)
    return receipt, sign_receipt(key_of(signer), domain, receipt)


def signed_voucher(
    domain: Eip712Domain, payer: LocalAccount, provider: str, cumulative: int
) -> tuple[Voucher, bytes]:
    voucher = Voucher(client=Address(payer.address), provider=Address(provider), cumulative_amount=cumulative)
    return voucher, sign_voucher(key_of(payer), domain, voucher)


OUTPUT = b"the output tensor"


async def claimed(deployment: Deployment, requester: LocalAccount, provider: LocalAccount) -> JobRequested:
    job = await request(deployment, requester)
    await deployment.market.claim_job(job.job_id, sender=provider)
    return job


async def submitted(
    deployment: Deployment,
    requester: LocalAccount,
    provider: LocalAccount,
    relayer: LocalAccount,
    *,
    output: bytes = OUTPUT,
) -> JobRequested:
    job = await claimed(deployment, requester, provider)
    market = deployment.market
    receipt, signature = signed_receipt(market.domain(), job.terms, provider, output)
    await market.submit_result(job.terms, receipt, signature, output=output, sender=relayer)
    return job


async def deploy_test_contract(
    client: ChainClient, name: str, *args: object, sender: LocalAccount
) -> AsyncContract:
    artifact = load_test_artifact(name)
    address = await client.deploy(artifact, *args, sender=sender)
    return client.contract(artifact, address)


async def gas_cost(client: ChainClient, tx_hash: str) -> int:
    receipt = await client.w3.eth.get_transaction_receipt(HexBytes(tx_hash))
    return int(receipt["gasUsed"]) * int(receipt["effectiveGasPrice"])
