"""The job protocol's messages as frozen values, and their protobuf encoding (pure)."""

from __future__ import annotations

from dataclasses import dataclass

from eth_utils.address import to_checksum_address
from google.protobuf.message import DecodeError

from node.errors import ProtocolViolation
from node.gen.gpunode.v1 import job_pb2
from node.types import Address, Hash32, ResultReceipt

JOB_PROTOCOL = "/gpunode/job/1"


@dataclass(frozen=True, slots=True)
class BlobRef:
    """A large input or output stored elsewhere, fetched over `/gpunode/blob/1`."""

    sha256: Hash32
    size: int


@dataclass(frozen=True, slots=True)
class VoucherPayment:
    """An EIP-712 voucher for the cumulative amount the client owes, with its signature."""

    client: Address
    provider: Address
    cumulative_amount: int
    signature: bytes


@dataclass(frozen=True, slots=True)
class OnchainPayment:
    """The job is escrowed in the JobMarket contract under this id."""

    job_id: Hash32


Payment = VoucherPayment | OnchainPayment


@dataclass(frozen=True, slots=True)
class JobRequest:
    job_id: Hash32
    model_id: Hash32
    input: bytes | BlobRef
    payment: Payment
    max_price_wei: int
    deadline_ms: int
    stream: bool = False  # send a generation's text as it comes (JobTokens)
    # The most jobs it may wait behind: 0 = start now or be refused `queue_full`; None: any.
    max_queue_position: int | None = None


@dataclass(frozen=True, slots=True)
class JobAccepted:
    queue_position: int = 0


@dataclass(frozen=True, slots=True)
class JobRejected:
    """The provider declined before running anything; `code` is machine-readable."""

    code: str
    reason: str


@dataclass(frozen=True, slots=True)
class JobProgress:
    stage: str
    fraction: float


@dataclass(frozen=True, slots=True)
class JobTokens:
    """Text a generation produced since the last; the result's output holds all of it."""

    text: str


@dataclass(frozen=True, slots=True)
class JobResult:
    """A signed result: the output inline, or, above `INLINE_LIMIT`, `output_ref` naming it for the
    client to fetch over `/gpunode/blob/1` (its sha256 is the receipt's output hash)."""

    receipt: ResultReceipt
    signature: bytes
    output: bytes
    output_ref: BlobRef | None = None


@dataclass(frozen=True, slots=True)
class JobFailed:
    """The provider accepted the job but could not finish it."""

    code: str
    reason: str


# The code of a rejection or failure caused by the job's input not fitting the model: the client's
# mistake, which another provider would refuse too.
INVALID_INPUT = "invalid_input"
# The code of a failure to fetch, check or install the model a job names that this provider did
# not hold: the model's source (the client, or the peers it named) is at fault, not the provider.
MODEL_UNAVAILABLE = "model_unavailable"

# Inputs and outputs up to this size travel inside job frames; larger ones by `BlobRef`.
INLINE_LIMIT = 4 * 2**20

JobResponse = JobAccepted | JobRejected | JobProgress | JobTokens | JobResult | JobFailed
JobOutcome = JobResult | JobRejected | JobFailed


def _uint(value: int) -> bytes:
    if value < 0 or value >= 2**256:
        raise ProtocolViolation(f"amount {value} does not fit a uint256")
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


def _read_uint(raw: bytes, what: str) -> int:
    if len(raw) > 32:
        raise ProtocolViolation(f"{what} is {len(raw)} bytes, longer than a uint256")
    return int.from_bytes(raw, "big")


def _hash32(raw: bytes, what: str) -> Hash32:
    if len(raw) != 32:
        raise ProtocolViolation(f"{what} must be 32 bytes, got {len(raw)}")
    return Hash32(raw)


def _address(raw: bytes, what: str) -> Address:
    if len(raw) != 20:
        raise ProtocolViolation(f"{what} must be a 20-byte address, got {len(raw)} bytes")
    return Address(to_checksum_address(raw))


def _address_bytes(address: str) -> bytes:
    return bytes.fromhex(address.removeprefix("0x"))


def encode_request(request: JobRequest) -> bytes:
    msg = job_pb2.JobRequest(
        job_id=request.job_id,
        model_id=request.model_id,
        max_price_wei=_uint(request.max_price_wei),
        deadline_ms=request.deadline_ms,
        stream=request.stream,
    )
    if request.max_queue_position is not None:
        if not 0 <= request.max_queue_position < 2**32:
            raise ProtocolViolation(f"max queue position {request.max_queue_position} does not fit a uint32")
        msg.max_queue_position = request.max_queue_position
    if isinstance(request.input, BlobRef):
        msg.input_blob.sha256 = request.input.sha256
        msg.input_blob.size = request.input.size
    else:
        msg.input_inline = request.input
    if isinstance(request.payment, VoucherPayment):
        voucher = request.payment
        msg.payment.voucher.client = _address_bytes(voucher.client)
        msg.payment.voucher.provider = _address_bytes(voucher.provider)
        msg.payment.voucher.cumulative_amount = _uint(voucher.cumulative_amount)
        msg.payment.voucher.signature = voucher.signature
    else:
        msg.payment.onchain_job_id = request.payment.job_id
    return bytes(msg.SerializeToString())


def decode_request(raw: bytes) -> JobRequest:
    msg = job_pb2.JobRequest()
    try:
        msg.ParseFromString(raw)
    except DecodeError as exc:
        raise ProtocolViolation(f"malformed job request: {exc}") from exc
    kind = msg.WhichOneof("input")
    if kind is None:
        raise ProtocolViolation("job request carries no input")
    job_input: bytes | BlobRef = (
        BlobRef(_hash32(msg.input_blob.sha256, "input blob sha256"), msg.input_blob.size)
        if kind == "input_blob"
        else bytes(msg.input_inline)
    )
    return JobRequest(
        job_id=_hash32(msg.job_id, "job id"),
        model_id=_hash32(msg.model_id, "model id"),
        input=job_input,
        payment=_decode_payment(msg.payment),
        max_price_wei=_read_uint(msg.max_price_wei, "max price"),
        deadline_ms=msg.deadline_ms,
        stream=msg.stream,
        max_queue_position=msg.max_queue_position if msg.HasField("max_queue_position") else None,
    )


def _decode_payment(msg: job_pb2.Payment) -> Payment:
    kind = msg.WhichOneof("kind")
    if kind == "voucher":
        v = msg.voucher
        if len(v.signature) != 65:
            raise ProtocolViolation(f"voucher signature must be 65 bytes, got {len(v.signature)}")
        return VoucherPayment(
            client=_address(v.client, "voucher client"),
            provider=_address(v.provider, "voucher provider"),
            cumulative_amount=_read_uint(v.cumulative_amount, "voucher amount"),
            signature=bytes(v.signature),
        )
    if kind == "onchain_job_id":
        return OnchainPayment(_hash32(msg.onchain_job_id, "on-chain job id"))
    raise ProtocolViolation("job request carries no payment")


def encode_response(response: JobResponse) -> bytes:
    msg = job_pb2.JobResponse()
    match response:
        case JobAccepted(queue_position=position):
            msg.accepted.queue_position = position
        case JobRejected(code=code, reason=reason):
            msg.rejected.code, msg.rejected.reason = code, reason
        case JobProgress(stage=stage, fraction=fraction):
            msg.progress.stage, msg.progress.fraction = stage, fraction
        case JobFailed(code=code, reason=reason):
            msg.failed.code, msg.failed.reason = code, reason
        case JobTokens(text=text):
            msg.tokens.text = text
        case JobResult(receipt=r, signature=signature, output=output, output_ref=ref):
            msg.result.receipt.CopyFrom(
                job_pb2.Receipt(
                    job_id=r.job_id,
                    model_id=r.model_id,
                    input_hash=r.input_hash,
                    output_hash=r.output_hash,
                    profile_hash=r.profile_hash,
                    provider=_address_bytes(r.provider),
                )
            )
            msg.result.signature, msg.result.output = signature, output
            if ref is not None:
                msg.result.output_blob.sha256, msg.result.output_blob.size = ref.sha256, ref.size
    return bytes(msg.SerializeToString())


def decode_response(raw: bytes) -> JobResponse:
    msg = job_pb2.JobResponse()
    try:
        msg.ParseFromString(raw)
    except DecodeError as exc:
        raise ProtocolViolation(f"malformed job response: {exc}") from exc
    kind = msg.WhichOneof("kind")
    if kind == "accepted":
        return JobAccepted(msg.accepted.queue_position)
    if kind == "rejected":
        return JobRejected(msg.rejected.code, msg.rejected.reason)
    if kind == "progress":
        return JobProgress(msg.progress.stage, msg.progress.fraction)
    if kind == "failed":
        return JobFailed(msg.failed.code, msg.failed.reason)
    if kind == "tokens":
        return JobTokens(msg.tokens.text)
    if kind == "result":
        return _decode_result(msg.result)
    raise ProtocolViolation("job response of unknown kind")


def _decode_result(msg: job_pb2.JobResult) -> JobResult:
    r = msg.receipt
    if len(msg.signature) != 65:
        raise ProtocolViolation(f"receipt signature must be 65 bytes, got {len(msg.signature)}")
    receipt = ResultReceipt(
        job_id=_hash32(r.job_id, "receipt job id"),
        model_id=_hash32(r.model_id, "receipt model id"),
        input_hash=_hash32(r.input_hash, "receipt input hash"),
        output_hash=_hash32(r.output_hash, "receipt output hash"),
        profile_hash=_hash32(r.profile_hash, "receipt profile hash"),
        provider=_address(r.provider, "receipt provider"),
    )
    ref = None
    if msg.HasField("output_blob"):
        ref = BlobRef(_hash32(msg.output_blob.sha256, "output blob sha256"), msg.output_blob.size)
        if ref.sha256 != receipt.output_hash or msg.output:
            raise ProtocolViolation("an output sent by reference is the receipt's output, and only that")
    return JobResult(receipt, bytes(msg.signature), bytes(msg.output), ref)


# holds (`/gpunode/hold/1`, node.scheduler.holds) ---------------------------------------------

HOLD_PROTOCOL = "/gpunode/hold/1"


@dataclass(frozen=True, slots=True)
class HoldRequest:
    """Keep a slot for this job when one frees; no payment is sent until one is kept."""

    job_id: Hash32
    model_id: Hash32
    max_price_wei: int
    input_bytes: int
    copies: int = 1  # providers asked to hold this job at once


@dataclass(frozen=True, slots=True)
class HoldQueued:
    position: int  # holds ahead of this one


@dataclass(frozen=True, slots=True)
class HoldReady:
    ttl_ms: int  # the slot is kept for the job this long


@dataclass(frozen=True, slots=True)
class HoldRelease:
    """The client ends its hold (given up, or its job was accepted)."""


@dataclass(frozen=True, slots=True)
class HoldReleased:
    """The provider ended the hold: nothing more of it follows on the stream."""


HoldResponse = HoldQueued | HoldReady | JobRejected
HoldClientFrame = HoldRequest | HoldRelease


def encode_hold_frame(frame: HoldClientFrame) -> bytes:
    msg = job_pb2.HoldClientFrame()
    if isinstance(frame, HoldRelease):
        msg.release = True
        return bytes(msg.SerializeToString())
    if not 0 <= frame.input_bytes < 2**64 or not 1 <= frame.copies < 2**32:
        raise ProtocolViolation(
            f"hold request out of range: {frame.input_bytes} bytes, {frame.copies} copies"
        )
    msg.request.job_id = frame.job_id
    msg.request.model_id = frame.model_id
    msg.request.max_price_wei = _uint(frame.max_price_wei)
    msg.request.input_bytes = frame.input_bytes
    msg.request.copies = frame.copies
    return bytes(msg.SerializeToString())


def decode_hold_frame(raw: bytes) -> HoldClientFrame:
    msg = job_pb2.HoldClientFrame()
    try:
        msg.ParseFromString(raw)
    except DecodeError as exc:
        raise ProtocolViolation(f"malformed hold frame: {exc}") from exc
    kind = msg.WhichOneof("kind")
    if kind == "release":
        return HoldRelease()
    if kind != "request":
        raise ProtocolViolation("hold frame carries nothing")
    request = msg.request
    return HoldRequest(
        job_id=_hash32(request.job_id, "job id"),
        model_id=_hash32(request.model_id, "model id"),
        max_price_wei=_read_uint(request.max_price_wei, "max price"),
        input_bytes=request.input_bytes,
        copies=max(1, request.copies),
    )


def encode_hold_response(response: HoldResponse | HoldReleased) -> bytes:
    msg = job_pb2.HoldResponse()
    match response:
        case HoldReleased():
            msg.released = True
        case HoldQueued(position=position):
            msg.queued = position
        case HoldReady(ttl_ms=ttl_ms):
            msg.ready_ms = ttl_ms
        case JobRejected(code=code, reason=reason):
            msg.refused.code, msg.refused.reason = code, reason
    return bytes(msg.SerializeToString())


def decode_hold_response(raw: bytes) -> HoldResponse | HoldReleased:
    msg = job_pb2.HoldResponse()
    try:
        msg.ParseFromString(raw)
    except DecodeError as exc:
        raise ProtocolViolation(f"malformed hold response: {exc}") from exc
    kind = msg.WhichOneof("kind")
    if kind == "queued":
        return HoldQueued(msg.queued)
    if kind == "ready_ms":
        return HoldReady(msg.ready_ms)
    if kind == "refused":
        return JobRejected(msg.refused.code, msg.refused.reason)
    if kind == "released":
        return HoldReleased()
    raise ProtocolViolation("hold response carries nothing")
