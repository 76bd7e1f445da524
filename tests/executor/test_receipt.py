"""Profiles hash canonically; receipts built from results verify, and a changed output or profile does not."""

from __future__ import annotations

import dataclasses
import json

import pytest

from node.chain.eip712 import Eip712Domain, sign_receipt, verify_receipt
from node.chain.keys import NodeKey
from node.errors import ExecutorError
from node.executor.profile import ExecutionProfile
from node.executor.result import ExecutionResult, build_receipt, receipt_matches
from node.types import Hash32, sha256

PROFILE = ExecutionProfile(
    torch_version="2.13.0+cpu",
    device="cpu",
    cpu_capability="AVX2",
    threads=1,
    interop_threads=1,
    deterministic=True,
    batch_size=2,
)
DOMAIN = Eip712Domain(chain_id=1, verifying_contract="0x" + "11" * 20)


def _result(output: bytes = b"output bytes", profile: ExecutionProfile = PROFILE) -> ExecutionResult:
    return ExecutionResult(
        model_id=Hash32(b"\x01" * 32),
        input_hash=sha256(b"input"),
        output=output,
        output_hash=sha256(output),
        profile=profile,
        queued_s=0.0,
        run_s=0.0,
    )


def test_profile_hash_is_canonical_and_covers_every_field() -> None:
    assert PROFILE.hash() == dataclasses.replace(PROFILE).hash()
    assert len(PROFILE.hash()) == 32
    changes = {
        "torch_version": "2.12.0",
        "device": "cuda:0",
        "cpu_capability": "AVX512",
        "threads": 2,
        "interop_threads": 2,
        "deterministic": False,
        "batch_size": 3,
        "quantizer": "torchao-0.18.0-int8-weight-only",
    }
    hashes = {dataclasses.replace(PROFILE, **{field: value}).hash() for field, value in changes.items()}  # type: ignore[arg-type]
    assert len(hashes) == len(changes)
    assert PROFILE.hash() not in hashes
    assert PROFILE.with_batch(7).batch_size == 7


def test_can_hash_an_unquantized_profile_as_before_the_quantizer_was_recorded() -> None:
    fields = dataclasses.asdict(PROFILE)
    del fields["quantizer"]
    assert PROFILE.canonical_bytes() == json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
    quantized = dataclasses.replace(PROFILE, quantizer="torch-2.13.0-dynamic-int8")
    assert b'"quantizer":"torch-2.13.0-dynamic-int8"' in quantized.canonical_bytes()


def test_can_sign_and_verify_a_receipt_built_from_a_result() -> None:
    key = NodeKey.generate()
    result = _result()
    receipt = build_receipt(
        job_id=Hash32(b"\x02" * 32),
        model_id=result.model_id,
        input_hash=result.input_hash,
        result=result,
        provider=key.address,
    )
    assert receipt.output_hash == sha256(b"output bytes")
    assert receipt.profile_hash == PROFILE.hash()
    signature = sign_receipt(key.private_key, DOMAIN, receipt)
    assert verify_receipt(DOMAIN, receipt, signature, key.address)
    assert receipt_matches(receipt, result.output, result.profile)


def test_cannot_verify_a_receipt_after_changing_output_or_profile() -> None:
    key = NodeKey.generate()
    result = _result()
    receipt = build_receipt(
        job_id=Hash32(b"\x02" * 32),
        model_id=result.model_id,
        input_hash=result.input_hash,
        result=result,
        provider=key.address,
    )
    signature = sign_receipt(key.private_key, DOMAIN, receipt)
    changed_output = dataclasses.replace(receipt, output_hash=sha256(b"other output"))
    changed_profile = dataclasses.replace(receipt, profile_hash=PROFILE.with_batch(3).hash())
    assert not verify_receipt(DOMAIN, changed_output, signature, key.address)
    assert not verify_receipt(DOMAIN, changed_profile, signature, key.address)
    assert not receipt_matches(receipt, b"other output", result.profile)
    assert not receipt_matches(receipt, result.output, PROFILE.with_batch(3))


def test_cannot_build_a_receipt_for_another_jobs_result() -> None:
    result = _result()
    with pytest.raises(ExecutorError, match="different model or input"):
        build_receipt(
            job_id=Hash32(b"\x02" * 32),
            model_id=result.model_id,
            input_hash=sha256(b"other input"),
            result=result,
            provider=NodeKey.generate().address,
        )
