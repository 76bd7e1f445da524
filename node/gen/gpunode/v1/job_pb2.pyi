# mypy: ignore-errors
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class BlobRef(_message.Message):
    __slots__ = ("sha256", "size")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    sha256: bytes
    size: int
    def __init__(self, sha256: _Optional[bytes] = ..., size: _Optional[int] = ...) -> None: ...

class VoucherPayment(_message.Message):
    __slots__ = ("client", "provider", "cumulative_amount", "signature")
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    CUMULATIVE_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    client: bytes
    provider: bytes
    cumulative_amount: bytes
    signature: bytes
    def __init__(self, client: _Optional[bytes] = ..., provider: _Optional[bytes] = ..., cumulative_amount: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class Payment(_message.Message):
    __slots__ = ("voucher", "onchain_job_id")
    VOUCHER_FIELD_NUMBER: _ClassVar[int]
    ONCHAIN_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    voucher: VoucherPayment
    onchain_job_id: bytes
    def __init__(self, voucher: _Optional[_Union[VoucherPayment, _Mapping]] = ..., onchain_job_id: _Optional[bytes] = ...) -> None: ...

class JobRequest(_message.Message):
    __slots__ = ("job_id", "model_id", "input_inline", "input_blob", "payment", "max_price_wei", "deadline_ms", "stream", "max_queue_position")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    INPUT_INLINE_FIELD_NUMBER: _ClassVar[int]
    INPUT_BLOB_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_FIELD_NUMBER: _ClassVar[int]
    MAX_PRICE_WEI_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUE_POSITION_FIELD_NUMBER: _ClassVar[int]
    job_id: bytes
    model_id: bytes
    input_inline: bytes
    input_blob: BlobRef
    payment: Payment
    max_price_wei: bytes
    deadline_ms: int
    stream: bool
    max_queue_position: int
    def __init__(self, job_id: _Optional[bytes] = ..., model_id: _Optional[bytes] = ..., input_inline: _Optional[bytes] = ..., input_blob: _Optional[_Union[BlobRef, _Mapping]] = ..., payment: _Optional[_Union[Payment, _Mapping]] = ..., max_price_wei: _Optional[bytes] = ..., deadline_ms: _Optional[int] = ..., stream: _Optional[bool] = ..., max_queue_position: _Optional[int] = ...) -> None: ...

class JobAccepted(_message.Message):
    __slots__ = ("queue_position",)
    QUEUE_POSITION_FIELD_NUMBER: _ClassVar[int]
    queue_position: int
    def __init__(self, queue_position: _Optional[int] = ...) -> None: ...

class JobRejected(_message.Message):
    __slots__ = ("code", "reason")
    CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    code: str
    reason: str
    def __init__(self, code: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class JobProgress(_message.Message):
    __slots__ = ("stage", "fraction")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    FRACTION_FIELD_NUMBER: _ClassVar[int]
    stage: str
    fraction: float
    def __init__(self, stage: _Optional[str] = ..., fraction: _Optional[float] = ...) -> None: ...

class Receipt(_message.Message):
    __slots__ = ("job_id", "model_id", "input_hash", "output_hash", "profile_hash", "provider")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    INPUT_HASH_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_HASH_FIELD_NUMBER: _ClassVar[int]
    PROFILE_HASH_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    job_id: bytes
    model_id: bytes
    input_hash: bytes
    output_hash: bytes
    profile_hash: bytes
    provider: bytes
    def __init__(self, job_id: _Optional[bytes] = ..., model_id: _Optional[bytes] = ..., input_hash: _Optional[bytes] = ..., output_hash: _Optional[bytes] = ..., profile_hash: _Optional[bytes] = ..., provider: _Optional[bytes] = ...) -> None: ...

class JobResult(_message.Message):
    __slots__ = ("receipt", "signature", "output", "output_blob")
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_BLOB_FIELD_NUMBER: _ClassVar[int]
    receipt: Receipt
    signature: bytes
    output: bytes
    output_blob: BlobRef
    def __init__(self, receipt: _Optional[_Union[Receipt, _Mapping]] = ..., signature: _Optional[bytes] = ..., output: _Optional[bytes] = ..., output_blob: _Optional[_Union[BlobRef, _Mapping]] = ...) -> None: ...

class JobFailed(_message.Message):
    __slots__ = ("code", "reason")
    CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    code: str
    reason: str
    def __init__(self, code: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class JobTokens(_message.Message):
    __slots__ = ("text",)
    TEXT_FIELD_NUMBER: _ClassVar[int]
    text: str
    def __init__(self, text: _Optional[str] = ...) -> None: ...

class JobResponse(_message.Message):
    __slots__ = ("accepted", "rejected", "progress", "result", "failed", "tokens")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    accepted: JobAccepted
    rejected: JobRejected
    progress: JobProgress
    result: JobResult
    failed: JobFailed
    tokens: JobTokens
    def __init__(self, accepted: _Optional[_Union[JobAccepted, _Mapping]] = ..., rejected: _Optional[_Union[JobRejected, _Mapping]] = ..., progress: _Optional[_Union[JobProgress, _Mapping]] = ..., result: _Optional[_Union[JobResult, _Mapping]] = ..., failed: _Optional[_Union[JobFailed, _Mapping]] = ..., tokens: _Optional[_Union[JobTokens, _Mapping]] = ...) -> None: ...

class HoldClientFrame(_message.Message):
    __slots__ = ("request", "release")
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    request: HoldRequest
    release: bool
    def __init__(self, request: _Optional[_Union[HoldRequest, _Mapping]] = ..., release: _Optional[bool] = ...) -> None: ...

class HoldRequest(_message.Message):
    __slots__ = ("job_id", "model_id", "max_price_wei", "input_bytes", "copies")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    MAX_PRICE_WEI_FIELD_NUMBER: _ClassVar[int]
    INPUT_BYTES_FIELD_NUMBER: _ClassVar[int]
    COPIES_FIELD_NUMBER: _ClassVar[int]
    job_id: bytes
    model_id: bytes
    max_price_wei: bytes
    input_bytes: int
    copies: int
    def __init__(self, job_id: _Optional[bytes] = ..., model_id: _Optional[bytes] = ..., max_price_wei: _Optional[bytes] = ..., input_bytes: _Optional[int] = ..., copies: _Optional[int] = ...) -> None: ...

class HoldResponse(_message.Message):
    __slots__ = ("queued", "ready_ms", "refused", "released")
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    READY_MS_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    RELEASED_FIELD_NUMBER: _ClassVar[int]
    queued: int
    ready_ms: int
    refused: JobRejected
    released: bool
    def __init__(self, queued: _Optional[int] = ..., ready_ms: _Optional[int] = ..., refused: _Optional[_Union[JobRejected, _Mapping]] = ..., released: _Optional[bool] = ...) -> None: ...
