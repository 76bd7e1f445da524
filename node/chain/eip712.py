"""EIP-712 digests, signatures and recovery for result receipts and vouchers.

The digests must equal what JobMarket computes on-chain, so the type strings below are the
contract's. Signatures are 65 bytes `r || s || v` with v in {27, 28}; high-s signatures are
rejected here exactly as the contract rejects them, so a signature Python accepts is one the chain
accepts too.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import coincurve
from eth_abi import abi as eth_abi
from eth_utils.address import to_canonical_address
from eth_utils.crypto import keccak

from node.errors import SignatureError
from node.types import Address, ResultReceipt, Voucher, checksum_address

DOMAIN_NAME = "gpunode"
DOMAIN_VERSION = "1"

DOMAIN_TYPE = "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
RECEIPT_TYPE = (
    "ResultReceipt(bytes32 jobId,bytes32 modelId,bytes32 inputHash,bytes32 outputHash,"
    "bytes32 profileHash,address provider)"
)
VOUCHER_TYPE = "Voucher(address client,address provider,uint256 cumulativeAmount)"

DOMAIN_TYPEHASH = keccak(text=DOMAIN_TYPE)
RECEIPT_TYPEHASH = keccak(text=RECEIPT_TYPE)
VOUCHER_TYPEHASH = keccak(text=VOUCHER_TYPE)

SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
SECP256K1_HALF_N = SECP256K1_N // 2
SIGNATURE_LENGTH = 65


@dataclass(frozen=True, slots=True)
class Eip712Domain:
    """The gpunode domain on one chain, bound to one JobMarket deployment."""

    chain_id: int
    verifying_contract: str
    name: str = DOMAIN_NAME
    version: str = DOMAIN_VERSION

    def separator(self) -> bytes:
        return _domain_separator(self.name, self.version, self.chain_id, self.verifying_contract)


@lru_cache(maxsize=64)
def _domain_separator(name: str, version: str, chain_id: int, verifying_contract: str) -> bytes:
    # A node signs and checks under one or two domains; hashing each once saves a third of a signature.
    return keccak(
        eth_abi.encode(
            ["bytes32", "bytes32", "bytes32", "uint256", "address"],
            [
                DOMAIN_TYPEHASH,
                keccak(text=name),
                keccak(text=version),
                chain_id,
                _address(verifying_contract, "domain verifying contract"),
            ],
        )
    )


def receipt_struct_hash(receipt: ResultReceipt) -> bytes:
    hashes = (receipt.job_id, receipt.model_id, receipt.input_hash, receipt.output_hash, receipt.profile_hash)
    for field, value in zip(
        ("job_id", "model_id", "input_hash", "output_hash", "profile_hash"), hashes, strict=True
    ):
        if len(value) != 32:
            raise SignatureError(f"receipt {field} must be 32 bytes, got {len(value)}")
    return keccak(
        eth_abi.encode(
            ["bytes32", "bytes32", "bytes32", "bytes32", "bytes32", "bytes32", "address"],
            [RECEIPT_TYPEHASH, *hashes, _address(receipt.provider, "receipt provider")],
        )
    )


def voucher_struct_hash(voucher: Voucher) -> bytes:
    if not 0 <= voucher.cumulative_amount < 2**256:
        raise SignatureError(f"voucher amount {voucher.cumulative_amount} does not fit a uint256")
    return keccak(
        eth_abi.encode(
            ["bytes32", "address", "address", "uint256"],
            [
                VOUCHER_TYPEHASH,
                _address(voucher.client, "voucher client"),
                _address(voucher.provider, "voucher provider"),
                voucher.cumulative_amount,
            ],
        )
    )


def typed_digest(domain: Eip712Domain, struct_hash: bytes) -> bytes:
    return keccak(b"\x19\x01" + domain.separator() + struct_hash)


def receipt_digest(domain: Eip712Domain, receipt: ResultReceipt) -> bytes:
    return typed_digest(domain, receipt_struct_hash(receipt))


def voucher_digest(domain: Eip712Domain, voucher: Voucher) -> bytes:
    return typed_digest(domain, voucher_struct_hash(voucher))


def sign_digest(private_key: bytes, digest: bytes) -> bytes:
    """Sign a 32-byte digest; libsecp256k1 always produces low-s signatures."""
    if len(private_key) != 32:
        raise SignatureError(f"a private key is 32 bytes, got {len(private_key)}")
    if len(digest) != 32:
        raise SignatureError(f"a digest is 32 bytes, got {len(digest)}")
    try:
        recoverable = coincurve.PrivateKey(private_key).sign_recoverable(digest, hasher=None)
    except ValueError as exc:
        raise SignatureError(f"invalid private key: {exc}") from exc
    return recoverable[:64] + bytes([recoverable[64] + 27])


def recover_digest_signer(digest: bytes, signature: bytes) -> Address:
    """The address that signed `digest`; malformed, high-s or bad-v signatures raise SignatureError."""
    r, s, v = _split(signature)
    try:
        public_key = coincurve.PublicKey.from_signature_and_message(
            r.to_bytes(32, "big") + s.to_bytes(32, "big") + bytes([v - 27]), digest, hasher=None
        )
    except ValueError as exc:
        raise SignatureError(f"signature does not recover to a public key: {exc}") from exc
    return public_key_to_address(public_key.format(compressed=False))


def public_key_to_address(public_key: bytes) -> Address:
    """Ethereum address of a public key, given compressed (33 bytes) or uncompressed (65 bytes)."""
    if len(public_key) == 33:
        public_key = coincurve.PublicKey(public_key).format(compressed=False)
    if len(public_key) != 65:
        raise SignatureError(f"a secp256k1 public key is 33 or 65 bytes, got {len(public_key)}")
    return checksum_address(keccak(public_key[1:])[-20:])


def sign_receipt(private_key: bytes, domain: Eip712Domain, receipt: ResultReceipt) -> bytes:
    return sign_digest(private_key, receipt_digest(domain, receipt))


def sign_voucher(private_key: bytes, domain: Eip712Domain, voucher: Voucher) -> bytes:
    return sign_digest(private_key, voucher_digest(domain, voucher))


def recover_receipt_signer(domain: Eip712Domain, receipt: ResultReceipt, signature: bytes) -> Address:
    return recover_digest_signer(receipt_digest(domain, receipt), signature)


def recover_voucher_signer(domain: Eip712Domain, voucher: Voucher, signature: bytes) -> Address:
    return recover_digest_signer(voucher_digest(domain, voucher), signature)


def verify_receipt(domain: Eip712Domain, receipt: ResultReceipt, signature: bytes, expected: Address) -> bool:
    """True when `expected` signed this receipt; False for another signer or a malformed signature."""
    return _verify(receipt_digest(domain, receipt), signature, expected)


def verify_voucher(domain: Eip712Domain, voucher: Voucher, signature: bytes, expected: Address) -> bool:
    return _verify(voucher_digest(domain, voucher), signature, expected)


def _verify(digest: bytes, signature: bytes, expected: Address) -> bool:
    try:
        signer = recover_digest_signer(digest, signature)
    except SignatureError:
        return False
    return signer.lower() == str(expected).lower()


def _split(signature: bytes) -> tuple[int, int, int]:
    if len(signature) != SIGNATURE_LENGTH:
        raise SignatureError(f"a signature is {SIGNATURE_LENGTH} bytes (r || s || v), got {len(signature)}")
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:64], "big")
    v = signature[64]
    if v not in (27, 28):
        raise SignatureError(f"signature v must be 27 or 28, got {v}")
    if not 0 < r < SECP256K1_N:
        raise SignatureError("signature r is out of range")
    if not 0 < s <= SECP256K1_HALF_N:
        raise SignatureError("signature s is zero or in the upper half of the curve order (high-s)")
    return r, s, v


def _address(value: str, what: str) -> bytes:
    try:
        return to_canonical_address(value)
    except ValueError as exc:
        raise SignatureError(f"{what} {value!r} is not an Ethereum address") from exc
