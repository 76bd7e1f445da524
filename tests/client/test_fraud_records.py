"""Fraud records: a true one proves itself to any reader; forged or self-serving ones are
rejected, each with its reason. Every attack test is the forger's steps, then the rejection."""

from __future__ import annotations

import dataclasses

import numpy as np
from safetensors.numpy import save

from node.chain.eip712 import Eip712Domain, sign_receipt
from node.chain.keys import NodeKey
from node.client.fraud_record import (
    CLOCK_SKEW_MS,
    FRAUD_RECORD_TTL_MS,
    MAX_FRAUD_RECORD_BYTES,
    Evidence,
    FraudRecord,
    FraudRejected,
    FraudRejectReason,
    check_fraud_record,
    issue_fraud_record,
    sign_fraud_record,
)
from node.executor.manifest import ModelManifest, Tolerance
from node.types import Hash32, ResultReceipt, sha256

DOMAIN = Eip712Domain(chain_id=31337, verifying_contract="0x" + "22" * 20)
NOW_MS = 1_800_000_000_000
MODEL = Hash32(b"\x05" * 32)
INPUT = Hash32(b"\x06" * 32)
REPORTER, ACCUSED, CHECKER, DECIDER, OUTSIDER = (NodeKey.generate() for _ in range(5))
VALUES = np.arange(8, dtype=np.float32)


def output(values: np.ndarray) -> bytes:
    return bytes(save({"output": values.astype(np.float32)}))


def evidence(key: NodeKey, data: bytes, *, profile: int = 1, input_hash: Hash32 = INPUT) -> Evidence:
    receipt = ResultReceipt(
        job_id=Hash32(sha256(key.address.encode() + data)),
        model_id=MODEL,
        input_hash=input_hash,
        output_hash=sha256(data),
        profile_hash=Hash32(bytes([profile]) * 32),
        provider=key.address,
    )
    return Evidence(receipt, sign_receipt(key.private_key, DOMAIN, receipt), data)


def check(record: FraudRecord | bytes, **kwargs: object) -> FraudRecord | FraudRejected:
    signed = record.signed if isinstance(record, FraudRecord) else record
    options: dict[str, object] = {"domain": DOMAIN, "now_ms": NOW_MS + 1000, "tolerance_of": lambda _: None}
    options.update(kwargs)
    return check_fraud_record(signed, **options)  # type: ignore[arg-type]


def issue(accused: Evidence, *witnesses: Evidence, reporter: NodeKey = REPORTER) -> FraudRecord:
    return issue_fraud_record(
        reporter.private_key,
        reporter.address,
        accused=accused,
        witnesses=(witnesses[0], witnesses[1]),
        now_ms=NOW_MS,
    )


HONEST = output(VALUES)
TRUE_RECORD = issue(
    evidence(ACCUSED, output(np.zeros(8))), evidence(CHECKER, HONEST), evidence(DECIDER, HONEST)
)


def rejected(result: FraudRecord | FraudRejected) -> FraudRejectReason:
    assert isinstance(result, FraudRejected), result
    return result.reason


def test_can_prove_a_result_wrong_to_any_reader() -> None:
    opened = check(TRUE_RECORD, source=REPORTER.address)
    assert isinstance(opened, FraudRecord)
    assert opened.accused.receipt.provider == ACCUSED.address
    assert opened.key == (ACCUSED.address, TRUE_RECORD.accused.receipt.job_id)


def test_can_prove_it_across_profiles_with_the_outputs_and_the_tolerance() -> None:
    nudged = output(VALUES * (1 + 1e-7))
    record = issue(
        evidence(ACCUSED, output(np.zeros(8)), profile=1),
        evidence(CHECKER, HONEST, profile=2),
        evidence(DECIDER, nudged, profile=3),
    )
    tensors = Tolerance(compare="tensors")
    assert isinstance(check(record, tolerance_of=lambda _: tensors), FraudRecord)
    # Without the model's tolerance nothing can tell an honest difference from a lie.
    assert rejected(check(record)) is FraudRejectReason.NOT_PROVEN


def manifest(tolerance: dict[str, object]) -> ModelManifest:
    return ModelManifest.model_validate(
        {
            "name": "m",
            "format": "builtin",
            "architecture": "mlp",
            "files": {},
            "inputs": [{"name": "input", "dtype": "F32", "shape": [None, 4]}],
            "outputs": ["output"],
            "tolerance": tolerance,
        }
    )


def test_can_prove_it_across_profiles_with_the_manifest_it_carries() -> None:
    """A reader that never saw the model learns its tolerance from the record: the manifest's hash
    is the model id, so a reporter cannot swap in another."""
    model = manifest({"compare": "tensors", "atol": 1e-5})
    model_id = Hash32(bytes.fromhex(model.model_id))

    def run(key: NodeKey, data: bytes, profile: int) -> Evidence:
        made = evidence(key, data, profile=profile)
        receipt = dataclasses.replace(made.receipt, model_id=model_id)
        return Evidence(receipt, sign_receipt(key.private_key, DOMAIN, receipt), data)

    accused = run(ACCUSED, output(np.zeros(8)), 1)
    witnesses = (run(CHECKER, HONEST, 2), run(DECIDER, output(VALUES * (1 + 1e-7)), 3))
    carried = issue_fraud_record(
        REPORTER.private_key,
        REPORTER.address,
        accused=accused,
        witnesses=witnesses,
        now_ms=NOW_MS,
        manifest=model.canonical_bytes(),
    )
    assert isinstance(check(carried), FraudRecord)
    # A looser manifest, under the model's id, is a forgery.
    looser = manifest({"compare": "tensors", "atol": 1.0}).canonical_bytes()
    swapped = dataclasses.replace(carried, manifest=looser)
    assert rejected(check(sign_fraud_record(swapped, REPORTER.private_key))) is FraudRejectReason.MALFORMED


def test_cannot_accuse_an_honest_difference() -> None:
    """The forger names a provider whose output differs from the witnesses' only as another
    execution profile's rounding does."""
    nudged = output(VALUES * (1 + 1e-7))
    record = issue(evidence(ACCUSED, nudged, profile=2), evidence(CHECKER, HONEST), evidence(DECIDER, HONEST))
    assert (
        rejected(check(record, tolerance_of=lambda _: Tolerance(compare="tensors")))
        is FraudRejectReason.NOT_PROVEN
    )


def test_cannot_forge_the_reporters_signature() -> None:
    """The forger takes a true record and claims it for another reporter, or flips a byte."""
    body = TRUE_RECORD.signed[65:]
    other = sign_fraud_record(
        dataclasses.replace(TRUE_RECORD, reporter=OUTSIDER.address), REPORTER.private_key
    )
    assert rejected(check(other)) is FraudRejectReason.BAD_SIGNATURE
    assert rejected(check(bytes(65) + body)) is FraudRejectReason.BAD_SIGNATURE
    assert rejected(check(TRUE_RECORD, source=OUTSIDER.address)) is FraudRejectReason.PEER_MISMATCH


def test_cannot_forge_a_providers_receipt() -> None:
    """The forger signs the accused's 'wrong' receipt with its own key."""
    forged = evidence(OUTSIDER, output(np.zeros(8)))
    receipt = dataclasses.replace(forged.receipt, provider=ACCUSED.address)
    record = issue(
        Evidence(receipt, forged.signature, forged.output),
        evidence(CHECKER, HONEST),
        evidence(DECIDER, HONEST),
    )
    assert rejected(check(record)) is FraudRejectReason.BAD_RECEIPT
    # A receipt signed on another market (another EIP-712 domain) proves nothing here either.
    assert (
        rejected(check(TRUE_RECORD, domain=dataclasses.replace(DOMAIN, chain_id=1)))
        is FraudRejectReason.BAD_RECEIPT
    )


def test_cannot_accuse_with_receipts_of_different_inputs() -> None:
    """The forger pairs the accused's honest result for one input with results for another."""
    accused = evidence(ACCUSED, output(np.zeros(8)), input_hash=Hash32(b"\x07" * 32))
    record = issue(accused, evidence(CHECKER, HONEST), evidence(DECIDER, HONEST))
    assert rejected(check(record)) is FraudRejectReason.OTHER_INPUT


def test_cannot_witness_against_a_competitor_itself() -> None:
    """A provider reports a competitor with its own results as the witnesses, or as one of them."""
    lying = evidence(ACCUSED, output(np.zeros(8)))
    own = issue(lying, evidence(REPORTER, HONEST), evidence(DECIDER, HONEST))
    assert rejected(check(own)) is FraudRejectReason.SELF_SERVING
    twice = issue(lying, evidence(CHECKER, HONEST), evidence(CHECKER, HONEST, profile=2))
    assert rejected(check(twice)) is FraudRejectReason.SELF_SERVING


def test_cannot_accuse_when_the_witnesses_disagree_or_agree_with_the_accused() -> None:
    split = issue(
        evidence(ACCUSED, output(np.zeros(8))),
        evidence(CHECKER, HONEST),
        evidence(DECIDER, output(np.ones(8))),
    )
    assert rejected(check(split)) is FraudRejectReason.NOT_PROVEN
    same = issue(evidence(ACCUSED, HONEST), evidence(CHECKER, HONEST), evidence(DECIDER, HONEST))
    assert rejected(check(same)) is FraudRejectReason.NOT_PROVEN


def test_cannot_act_on_a_stale_early_oversized_or_garbled_record() -> None:
    assert rejected(check(TRUE_RECORD, now_ms=NOW_MS + FRAUD_RECORD_TTL_MS)) is FraudRejectReason.EXPIRED
    assert rejected(check(TRUE_RECORD, now_ms=NOW_MS - CLOCK_SKEW_MS - 1)) is FraudRejectReason.TOO_FAR_AHEAD
    assert rejected(check(b"\x00" * (MAX_FRAUD_RECORD_BYTES + 1))) is FraudRejectReason.OVERSIZE
    assert rejected(check(TRUE_RECORD.signed[:65] + b"{not json")) is FraudRejectReason.MALFORMED
    assert rejected(check(b"")) is FraudRejectReason.MALFORMED
