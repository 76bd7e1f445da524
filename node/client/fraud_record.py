"""Fraud records: a client's proof, self-contained and signed, that a provider's result lost a
spot check, gossiped on `gpunode/fraud/1` so that other clients re-check that provider more.

A record holds three results for one input, each under its provider's EIP-712 receipt signature:
the accused's, and two witnesses' (the checker's and the third run's) that agree with each other
and not with the accused. Results under the same execution profile must be identical; otherwise
the record carries the outputs, so a reader compares them with the model's tolerance itself, and
the model's manifest, which says what that tolerance is (its hash is the model id, so nobody can
swap in a looser one).
It travels as the reporter's 65-byte signature over keccak256(FRAUD_DOMAIN || body), then the
body (canonical JSON): the exact bytes signed are the bytes that travel.

A reader believes the receipts' signatures and what the outputs show, never the reporter: a
record whose receipts disagree only as honest runs may, name another input, or count the reporter
among the providers is rejected, and a valid one only makes its reader check the accused more.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from eth_utils.crypto import keccak
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from node.chain.eip712 import Eip712Domain, recover_digest_signer, sign_digest, verify_receipt
from node.errors import GpunodeError, SignatureError
from node.executor.compare import Comparison, RunResult, compare_runs
from node.executor.manifest import Tolerance, parse_manifest, tolerance_for
from node.types import Address, Hash32, ResultReceipt, checksum_address, sha256

FRAUD_TOPIC = "gpunode/fraud/1"
FRAUD_DOMAIN = b"gpunode/fraud/1"
SIGNATURE_BYTES = 65
# Three receipts and small outputs; a record with large outputs is sent without them (it then
# proves only a disagreement under one execution profile).
MAX_FRAUD_RECORD_BYTES = 96 * 1024
MAX_OUTPUT_BYTES = 24 * 1024
# A record is acted on for a day after it is issued; a reporter's clock may run a minute ahead.
FRAUD_RECORD_TTL_MS = 24 * 3600 * 1000
MAX_MANIFEST_CHARS = 16 * 1024
CLOCK_SKEW_MS = 60_000


class FraudRejectReason(StrEnum):
    OVERSIZE = "oversize"
    MALFORMED = "malformed"
    BAD_SIGNATURE = "bad_signature"
    PEER_MISMATCH = "peer_mismatch"
    EXPIRED = "expired"
    TOO_FAR_AHEAD = "too_far_ahead"
    BAD_RECEIPT = "bad_receipt"
    OTHER_INPUT = "other_input"
    SELF_SERVING = "self_serving"
    NOT_PROVEN = "not_proven"
    NOT_REGISTERED = "not_registered"


@dataclass(frozen=True, slots=True)
class FraudRejected:
    reason: FraudRejectReason
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Evidence:
    """One provider's signed result; `output` only when the record carries it."""

    receipt: ResultReceipt
    signature: bytes
    output: bytes | None = None

    def run(self) -> RunResult:
        return RunResult(self.receipt, self.signature, self.output or b"")


@dataclass(frozen=True, slots=True)
class FraudRecord:
    reporter: Address
    model_id: Hash32
    input_hash: Hash32
    accused: Evidence
    witnesses: tuple[Evidence, Evidence]
    issued_at_ms: int
    expires_at_ms: int
    # The model's canonical manifest (sha256 = model id), when the reporter had it.
    manifest: bytes | None = None
    signed: bytes = b""

    @property
    def key(self) -> tuple[Address, Hash32]:
        """One accused result counts once, however many records name it."""
        return self.accused.receipt.provider, self.accused.receipt.job_id


# wire form ---------------------------------------------------------------------------------------

_HEX32 = r"^[0-9a-f]{64}$"


class _WireReceipt(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    job_id: str = Field(pattern=_HEX32)
    model_id: str = Field(pattern=_HEX32)
    input_hash: str = Field(pattern=_HEX32)
    output_hash: str = Field(pattern=_HEX32)
    profile_hash: str = Field(pattern=_HEX32)
    provider: str = Field(pattern=r"^0x[0-9a-fA-F]{40}$")
    signature: str = Field(pattern=r"^[0-9a-f]{130}$")


class _WireRecord(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: str = Field(pattern=r"^gpunode/fraud/1$")
    reporter: str = Field(pattern=r"^0x[0-9a-fA-F]{40}$")
    model_id: str = Field(pattern=_HEX32)
    input_hash: str = Field(pattern=_HEX32)
    accused: _WireReceipt
    witnesses: tuple[_WireReceipt, _WireReceipt]
    # output hash (hex) → output (base64)
    outputs: dict[str, str] = Field(default_factory=dict, max_length=3)
    issued_at_ms: int = Field(ge=0)
    expires_at_ms: int = Field(ge=0)
    manifest: str = Field(default="", max_length=MAX_MANIFEST_CHARS)


def _wire_receipt(evidence: Evidence) -> _WireReceipt:
    r = evidence.receipt
    return _WireReceipt(
        job_id=r.job_id.hex(),
        model_id=r.model_id.hex(),
        input_hash=r.input_hash.hex(),
        output_hash=r.output_hash.hex(),
        profile_hash=r.profile_hash.hex(),
        provider=r.provider,
        signature=evidence.signature.hex(),
    )


def _digest(body: bytes) -> bytes:
    return bytes(keccak(FRAUD_DOMAIN + body))


def issue_fraud_record(
    private_key: bytes,
    reporter: Address,
    *,
    accused: Evidence,
    witnesses: tuple[Evidence, Evidence],
    now_ms: int,
    manifest: bytes | None = None,
) -> FraudRecord:
    """A signed record, valid for a day, accusing `accused` on the witnesses' word; `manifest`,
    the model's canonical manifest, tells readers how the model's results may differ."""
    record = FraudRecord(
        reporter=reporter,
        model_id=accused.receipt.model_id,
        input_hash=accused.receipt.input_hash,
        accused=accused,
        witnesses=witnesses,
        issued_at_ms=now_ms,
        expires_at_ms=now_ms + FRAUD_RECORD_TTL_MS,
        manifest=manifest if manifest is not None and len(manifest) <= MAX_MANIFEST_CHARS else None,
    )
    return dataclasses.replace(record, signed=sign_fraud_record(record, private_key))


def sign_fraud_record(record: FraudRecord, private_key: bytes) -> bytes:
    """The bytes that travel: the reporter's signature, then the body. Outputs go along when the
    record stays within its size limit with them."""
    evidence = (record.accused, *record.witnesses)
    outputs = {
        e.receipt.output_hash.hex(): base64.b64encode(e.output).decode()
        for e in evidence
        if e.output is not None and len(e.output) <= MAX_OUTPUT_BYTES
    }
    for carried in (outputs, {}):
        body = _body(record, evidence, carried)
        signed = sign_digest(private_key, _digest(body)) + body
        if len(signed) <= MAX_FRAUD_RECORD_BYTES:
            return signed
    raise SignatureError(f"a fraud record without outputs is over {MAX_FRAUD_RECORD_BYTES} bytes")


def _body(record: FraudRecord, evidence: Sequence[Evidence], outputs: dict[str, str]) -> bytes:
    wire = _WireRecord(
        schema_version="gpunode/fraud/1",
        reporter=record.reporter,
        model_id=record.model_id.hex(),
        input_hash=record.input_hash.hex(),
        accused=_wire_receipt(evidence[0]),
        witnesses=(_wire_receipt(evidence[1]), _wire_receipt(evidence[2])),
        outputs=outputs,
        issued_at_ms=record.issued_at_ms,
        expires_at_ms=record.expires_at_ms,
        manifest=(record.manifest or b"").decode(),
    )
    return json.dumps(wire.model_dump(mode="json"), sort_keys=True, separators=(",", ":")).encode()


def open_fraud_record(signed: bytes) -> FraudRecord | FraudRejected:
    """Parse a record and check its reporter's signature (nothing about its receipts yet)."""
    if len(signed) > MAX_FRAUD_RECORD_BYTES:
        return FraudRejected(FraudRejectReason.OVERSIZE, f"{len(signed)} bytes > {MAX_FRAUD_RECORD_BYTES}")
    signature, body = signed[:SIGNATURE_BYTES], signed[SIGNATURE_BYTES:]
    try:
        wire = _WireRecord.model_validate_json(body)
        record = _record(wire, signed)
    except (ValidationError, ValueError, binascii.Error) as exc:
        return FraudRejected(FraudRejectReason.MALFORMED, str(exc)[:300])
    try:
        signer = recover_digest_signer(_digest(body), signature)
    except SignatureError as exc:
        return FraudRejected(FraudRejectReason.BAD_SIGNATURE, str(exc))
    if signer != record.reporter:
        return FraudRejected(FraudRejectReason.BAD_SIGNATURE, f"signed by {signer}, claims {record.reporter}")
    return record


def _record(wire: _WireRecord, signed: bytes) -> FraudRecord:
    manifest = wire.manifest.encode() or None
    if manifest is not None and sha256(manifest).hex() != wire.model_id:
        raise ValueError("the manifest carried is not the model's (its hash is not the model id)")
    outputs = {bytes.fromhex(h): base64.b64decode(o, validate=True) for h, o in wire.outputs.items()}
    for digest, output in outputs.items():
        if sha256(output) != digest:
            raise ValueError("an output does not hash to the hash it is filed under")

    def evidence(w: _WireReceipt) -> Evidence:
        receipt = ResultReceipt(
            job_id=Hash32(bytes.fromhex(w.job_id)),
            model_id=Hash32(bytes.fromhex(w.model_id)),
            input_hash=Hash32(bytes.fromhex(w.input_hash)),
            output_hash=Hash32(bytes.fromhex(w.output_hash)),
            profile_hash=Hash32(bytes.fromhex(w.profile_hash)),
            provider=checksum_address(w.provider),
        )
        return Evidence(receipt, bytes.fromhex(w.signature), outputs.get(receipt.output_hash))

    return FraudRecord(
        reporter=checksum_address(wire.reporter),
        model_id=Hash32(bytes.fromhex(wire.model_id)),
        input_hash=Hash32(bytes.fromhex(wire.input_hash)),
        accused=evidence(wire.accused),
        witnesses=(evidence(wire.witnesses[0]), evidence(wire.witnesses[1])),
        issued_at_ms=wire.issued_at_ms,
        expires_at_ms=wire.expires_at_ms,
        manifest=manifest,
        signed=signed,
    )


# checking --------------------------------------------------------------------------------------


def check_fraud_record(
    signed: bytes,
    *,
    domain: Eip712Domain,
    now_ms: int,
    tolerance_of: Callable[[Hash32], Tolerance | None],
    source: Address | None = None,
) -> FraudRecord | FraudRejected:
    """The record if it proves what it claims: signed by its reporter (the gossip `source`, when
    given), current, three receipts signed under `domain` by three providers other than the
    reporter for the record's one input, the witnesses agreeing and the accused disagreeing with
    both beyond what the model's tolerance (`tolerance_of`) allows honest runs."""
    opened = open_fraud_record(signed)
    if isinstance(opened, FraudRejected):
        return opened
    record = opened
    if source is not None and source != record.reporter:
        return FraudRejected(FraudRejectReason.PEER_MISMATCH, f"sent by {source}, claims {record.reporter}")
    timing = _timing(record, now_ms)
    if timing is not None:
        return timing
    evidence = (record.accused, *record.witnesses)
    for item in evidence:
        r = item.receipt
        if r.model_id != record.model_id or r.input_hash != record.input_hash:
            return FraudRejected(
                FraudRejectReason.OTHER_INPUT, f"{r.provider}'s receipt is for another model or input"
            )
        if not verify_receipt(domain, r, item.signature, r.provider):
            return FraudRejected(FraudRejectReason.BAD_RECEIPT, f"{r.provider}'s receipt is not signed by it")
    providers = [item.receipt.provider for item in evidence]
    if len(set(providers)) != 3:
        return FraudRejected(FraudRejectReason.SELF_SERVING, "three different providers must have signed")
    if record.reporter in providers:
        return FraudRejected(FraudRejectReason.SELF_SERVING, "the reporter signed one of the results itself")
    return _proven(record, _tolerance(record) or tolerance_of(record.model_id))


def _tolerance(record: FraudRecord) -> Tolerance | None:
    if record.manifest is None:
        return None
    try:
        return tolerance_for(parse_manifest(record.manifest))
    except GpunodeError:
        return None


def _timing(record: FraudRecord, now_ms: int) -> FraudRejected | None:
    if record.expires_at_ms <= now_ms:
        return FraudRejected(FraudRejectReason.EXPIRED, f"expired at {record.expires_at_ms}")
    if record.issued_at_ms > now_ms + CLOCK_SKEW_MS:
        return FraudRejected(FraudRejectReason.TOO_FAR_AHEAD, f"issued at {record.issued_at_ms}")
    if record.expires_at_ms - record.issued_at_ms > FRAUD_RECORD_TTL_MS:
        return FraudRejected(FraudRejectReason.TOO_FAR_AHEAD, "valid for longer than a day")
    return None


def _proven(record: FraudRecord, tolerance: Tolerance | None) -> FraudRecord | FraudRejected:
    first, second = record.witnesses
    if not _compare(first, second, tolerance, unknown=False).agree:
        return FraudRejected(FraudRejectReason.NOT_PROVEN, "the witnesses do not agree with each other")
    for witness in record.witnesses:
        compared = _compare(record.accused, witness, tolerance, unknown=True)
        if compared.agree:
            return FraudRejected(
                FraudRejectReason.NOT_PROVEN, f"the accused agrees with a witness: {compared.why}"
            )
    return record


def _compare(a: Evidence, b: Evidence, tolerance: Tolerance | None, *, unknown: bool) -> Comparison:
    """Same profile: the hashes say it. Otherwise the outputs must be there and the model's
    tolerance known; if not, the comparison is `unknown` (whichever reading proves nothing)."""
    same_profile = a.receipt.profile_hash == b.receipt.profile_hash
    if a.receipt.output_hash == b.receipt.output_hash or same_profile:
        return compare_runs(a.run(), b.run(), tolerance or Tolerance(compare="exact"))
    if tolerance is None or a.output is None or b.output is None:
        return Comparison(unknown, "different profiles, and no outputs or tolerance to compare them with")
    return compare_runs(a.run(), b.run(), tolerance)
