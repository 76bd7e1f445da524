# mypy: ignore-errors
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PaymentPath(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PAYMENT_PATH_UNSPECIFIED: _ClassVar[PaymentPath]
    PAYMENT_PATH_VOUCHER: _ClassVar[PaymentPath]
    PAYMENT_PATH_ESCROW: _ClassVar[PaymentPath]

class Role(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROLE_UNSPECIFIED: _ClassVar[Role]
    ROLE_CLIENT: _ClassVar[Role]
    ROLE_PROVIDER: _ClassVar[Role]
PAYMENT_PATH_UNSPECIFIED: PaymentPath
PAYMENT_PATH_VOUCHER: PaymentPath
PAYMENT_PATH_ESCROW: PaymentPath
ROLE_UNSPECIFIED: Role
ROLE_CLIENT: Role
ROLE_PROVIDER: Role

class VerifyJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class CheckRun(_message.Message):
    __slots__ = ("provider", "job_id", "output_hash", "profile_hash")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_HASH_FIELD_NUMBER: _ClassVar[int]
    PROFILE_HASH_FIELD_NUMBER: _ClassVar[int]
    provider: str
    job_id: str
    output_hash: str
    profile_hash: str
    def __init__(self, provider: _Optional[str] = ..., job_id: _Optional[str] = ..., output_hash: _Optional[str] = ..., profile_hash: _Optional[str] = ...) -> None: ...

class Verification(_message.Message):
    __slots__ = ("job_id", "verdict", "why", "runs", "loser")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    WHY_FIELD_NUMBER: _ClassVar[int]
    RUNS_FIELD_NUMBER: _ClassVar[int]
    LOSER_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    verdict: str
    why: str
    runs: _containers.RepeatedCompositeFieldContainer[CheckRun]
    loser: str
    def __init__(self, job_id: _Optional[str] = ..., verdict: _Optional[str] = ..., why: _Optional[str] = ..., runs: _Optional[_Iterable[_Union[CheckRun, _Mapping]]] = ..., loser: _Optional[str] = ...) -> None: ...

class SubmitJobRequest(_message.Message):
    __slots__ = ("model_id", "input", "payment", "max_price_wei", "timeout_ms", "provider", "stream", "precision")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_FIELD_NUMBER: _ClassVar[int]
    MAX_PRICE_WEI_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    input: bytes
    payment: PaymentPath
    max_price_wei: str
    timeout_ms: int
    provider: str
    stream: bool
    precision: str
    def __init__(self, model_id: _Optional[str] = ..., input: _Optional[bytes] = ..., payment: _Optional[_Union[PaymentPath, str]] = ..., max_price_wei: _Optional[str] = ..., timeout_ms: _Optional[int] = ..., provider: _Optional[str] = ..., stream: _Optional[bool] = ..., precision: _Optional[str] = ...) -> None: ...

class FollowJobTextRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class JobText(_message.Message):
    __slots__ = ("text",)
    TEXT_FIELD_NUMBER: _ClassVar[int]
    text: str
    def __init__(self, text: _Optional[str] = ...) -> None: ...

class Attempt(_message.Message):
    __slots__ = ("provider", "paid", "outcome")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    PAID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    provider: str
    paid: bool
    outcome: str
    def __init__(self, provider: _Optional[str] = ..., paid: _Optional[bool] = ..., outcome: _Optional[str] = ...) -> None: ...

class ResultReceipt(_message.Message):
    __slots__ = ("job_id", "model_id", "input_hash", "output_hash", "profile_hash", "provider", "signature", "verified")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    INPUT_HASH_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_HASH_FIELD_NUMBER: _ClassVar[int]
    PROFILE_HASH_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    VERIFIED_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    model_id: str
    input_hash: str
    output_hash: str
    profile_hash: str
    provider: str
    signature: str
    verified: bool
    def __init__(self, job_id: _Optional[str] = ..., model_id: _Optional[str] = ..., input_hash: _Optional[str] = ..., output_hash: _Optional[str] = ..., profile_hash: _Optional[str] = ..., provider: _Optional[str] = ..., signature: _Optional[str] = ..., verified: _Optional[bool] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("job_id", "role", "model_id", "payment", "state", "terminal", "attempts", "provider", "price_wei", "output", "has_output", "receipt", "error", "created_at_ms", "updated_at_ms", "onchain_job_id", "output_size")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    TERMINAL_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    PRICE_WEI_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    HAS_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    ONCHAIN_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_SIZE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    role: Role
    model_id: str
    payment: PaymentPath
    state: str
    terminal: bool
    attempts: _containers.RepeatedCompositeFieldContainer[Attempt]
    provider: str
    price_wei: str
    output: bytes
    has_output: bool
    receipt: ResultReceipt
    error: str
    created_at_ms: int
    updated_at_ms: int
    onchain_job_id: str
    output_size: int
    def __init__(self, job_id: _Optional[str] = ..., role: _Optional[_Union[Role, str]] = ..., model_id: _Optional[str] = ..., payment: _Optional[_Union[PaymentPath, str]] = ..., state: _Optional[str] = ..., terminal: _Optional[bool] = ..., attempts: _Optional[_Iterable[_Union[Attempt, _Mapping]]] = ..., provider: _Optional[str] = ..., price_wei: _Optional[str] = ..., output: _Optional[bytes] = ..., has_output: _Optional[bool] = ..., receipt: _Optional[_Union[ResultReceipt, _Mapping]] = ..., error: _Optional[str] = ..., created_at_ms: _Optional[int] = ..., updated_at_ms: _Optional[int] = ..., onchain_job_id: _Optional[str] = ..., output_size: _Optional[int] = ...) -> None: ...

class WatchJobRequest(_message.Message):
    __slots__ = ("job_id", "omit_output")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    OMIT_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    omit_output: bool
    def __init__(self, job_id: _Optional[str] = ..., omit_output: _Optional[bool] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("job_id", "omit_output")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    OMIT_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    omit_output: bool
    def __init__(self, job_id: _Optional[str] = ..., omit_output: _Optional[bool] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("role", "states", "limit", "offset")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    STATES_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    role: Role
    states: _containers.RepeatedScalarFieldContainer[str]
    limit: int
    offset: int
    def __init__(self, role: _Optional[_Union[Role, str]] = ..., states: _Optional[_Iterable[str]] = ..., limit: _Optional[int] = ..., offset: _Optional[int] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class DepositRequest(_message.Message):
    __slots__ = ("amount_wei",)
    AMOUNT_WEI_FIELD_NUMBER: _ClassVar[int]
    amount_wei: str
    def __init__(self, amount_wei: _Optional[str] = ...) -> None: ...

class DepositResponse(_message.Message):
    __slots__ = ("balance_wei",)
    BALANCE_WEI_FIELD_NUMBER: _ClassVar[int]
    balance_wei: str
    def __init__(self, balance_wei: _Optional[str] = ...) -> None: ...

class ProviderStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ProviderStatus(_message.Message):
    __slots__ = ("address", "enabled", "registered", "active", "stake_wei", "price_per_job_wei", "models", "warm_models", "running", "queued", "jobs_served", "open_disputes", "jury_duties_served", "holds_waiting", "holds_granted")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    STAKE_WEI_FIELD_NUMBER: _ClassVar[int]
    PRICE_PER_JOB_WEI_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    WARM_MODELS_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    JOBS_SERVED_FIELD_NUMBER: _ClassVar[int]
    OPEN_DISPUTES_FIELD_NUMBER: _ClassVar[int]
    JURY_DUTIES_SERVED_FIELD_NUMBER: _ClassVar[int]
    HOLDS_WAITING_FIELD_NUMBER: _ClassVar[int]
    HOLDS_GRANTED_FIELD_NUMBER: _ClassVar[int]
    address: str
    enabled: bool
    registered: bool
    active: bool
    stake_wei: str
    price_per_job_wei: str
    models: _containers.RepeatedScalarFieldContainer[str]
    warm_models: _containers.RepeatedScalarFieldContainer[str]
    running: int
    queued: int
    jobs_served: int
    open_disputes: int
    jury_duties_served: int
    holds_waiting: int
    holds_granted: int
    def __init__(self, address: _Optional[str] = ..., enabled: _Optional[bool] = ..., registered: _Optional[bool] = ..., active: _Optional[bool] = ..., stake_wei: _Optional[str] = ..., price_per_job_wei: _Optional[str] = ..., models: _Optional[_Iterable[str]] = ..., warm_models: _Optional[_Iterable[str]] = ..., running: _Optional[int] = ..., queued: _Optional[int] = ..., jobs_served: _Optional[int] = ..., open_disputes: _Optional[int] = ..., jury_duties_served: _Optional[int] = ..., holds_waiting: _Optional[int] = ..., holds_granted: _Optional[int] = ...) -> None: ...

class EarningsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Earnings(_message.Message):
    __slots__ = ("unredeemed_voucher_wei", "redeemed_voucher_wei", "pending_onchain_wei", "withdrawable_wei", "paid_jobs")
    UNREDEEMED_VOUCHER_WEI_FIELD_NUMBER: _ClassVar[int]
    REDEEMED_VOUCHER_WEI_FIELD_NUMBER: _ClassVar[int]
    PENDING_ONCHAIN_WEI_FIELD_NUMBER: _ClassVar[int]
    WITHDRAWABLE_WEI_FIELD_NUMBER: _ClassVar[int]
    PAID_JOBS_FIELD_NUMBER: _ClassVar[int]
    unredeemed_voucher_wei: str
    redeemed_voucher_wei: str
    pending_onchain_wei: str
    withdrawable_wei: str
    paid_jobs: int
    def __init__(self, unredeemed_voucher_wei: _Optional[str] = ..., redeemed_voucher_wei: _Optional[str] = ..., pending_onchain_wei: _Optional[str] = ..., withdrawable_wei: _Optional[str] = ..., paid_jobs: _Optional[int] = ...) -> None: ...

class SettleRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SettleResponse(_message.Message):
    __slots__ = ("vouchers_redeemed", "redeemed_wei", "jobs_finalized", "finalized_wei", "withdrawn_wei", "transactions")
    VOUCHERS_REDEEMED_FIELD_NUMBER: _ClassVar[int]
    REDEEMED_WEI_FIELD_NUMBER: _ClassVar[int]
    JOBS_FINALIZED_FIELD_NUMBER: _ClassVar[int]
    FINALIZED_WEI_FIELD_NUMBER: _ClassVar[int]
    WITHDRAWN_WEI_FIELD_NUMBER: _ClassVar[int]
    TRANSACTIONS_FIELD_NUMBER: _ClassVar[int]
    vouchers_redeemed: int
    redeemed_wei: str
    jobs_finalized: int
    finalized_wei: str
    withdrawn_wei: str
    transactions: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, vouchers_redeemed: _Optional[int] = ..., redeemed_wei: _Optional[str] = ..., jobs_finalized: _Optional[int] = ..., finalized_wei: _Optional[str] = ..., withdrawn_wei: _Optional[str] = ..., transactions: _Optional[_Iterable[str]] = ...) -> None: ...

class RemoveModelRequest(_message.Message):
    __slots__ = ("model_id", "delete_files")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    DELETE_FILES_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    delete_files: bool
    def __init__(self, model_id: _Optional[str] = ..., delete_files: _Optional[bool] = ...) -> None: ...

class UploadedFile(_message.Message):
    __slots__ = ("name", "size", "sha256")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    name: str
    size: int
    sha256: str
    def __init__(self, name: _Optional[str] = ..., size: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class TensorSpec(_message.Message):
    __slots__ = ("name", "dtype", "shape")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, name: _Optional[str] = ..., dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ...) -> None: ...

class ProgramSpec(_message.Message):
    __slots__ = ("name", "inputs", "outputs", "batchable")
    NAME_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    BATCHABLE_FIELD_NUMBER: _ClassVar[int]
    name: str
    inputs: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    outputs: _containers.RepeatedScalarFieldContainer[str]
    batchable: bool
    def __init__(self, name: _Optional[str] = ..., inputs: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ..., outputs: _Optional[_Iterable[str]] = ..., batchable: _Optional[bool] = ...) -> None: ...

class UploadModelHeader(_message.Message):
    __slots__ = ("manifest", "program", "files")
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    PROGRAM_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    manifest: bytes
    program: ProgramSpec
    files: _containers.RepeatedCompositeFieldContainer[UploadedFile]
    def __init__(self, manifest: _Optional[bytes] = ..., program: _Optional[_Union[ProgramSpec, _Mapping]] = ..., files: _Optional[_Iterable[_Union[UploadedFile, _Mapping]]] = ...) -> None: ...

class UploadModelRequest(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: UploadModelHeader
    chunk: bytes
    def __init__(self, header: _Optional[_Union[UploadModelHeader, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class Model(_message.Message):
    __slots__ = ("model_id", "name", "format", "size_bytes", "batchable", "warm")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    BATCHABLE_FIELD_NUMBER: _ClassVar[int]
    WARM_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    name: str
    format: str
    size_bytes: int
    batchable: bool
    warm: bool
    def __init__(self, model_id: _Optional[str] = ..., name: _Optional[str] = ..., format: _Optional[str] = ..., size_bytes: _Optional[int] = ..., batchable: _Optional[bool] = ..., warm: _Optional[bool] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[Model]
    def __init__(self, models: _Optional[_Iterable[_Union[Model, _Mapping]]] = ...) -> None: ...

class NodeStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class NodeStatus(_message.Message):
    __slots__ = ("version", "address", "peer_id", "listen_addrs", "chain_id", "rpc_url", "registry_address", "market_address", "block_number", "provider", "database")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PEER_ID_FIELD_NUMBER: _ClassVar[int]
    LISTEN_ADDRS_FIELD_NUMBER: _ClassVar[int]
    CHAIN_ID_FIELD_NUMBER: _ClassVar[int]
    RPC_URL_FIELD_NUMBER: _ClassVar[int]
    REGISTRY_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    MARKET_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    BLOCK_NUMBER_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    version: str
    address: str
    peer_id: str
    listen_addrs: _containers.RepeatedScalarFieldContainer[str]
    chain_id: int
    rpc_url: str
    registry_address: str
    market_address: str
    block_number: int
    provider: bool
    database: str
    def __init__(self, version: _Optional[str] = ..., address: _Optional[str] = ..., peer_id: _Optional[str] = ..., listen_addrs: _Optional[_Iterable[str]] = ..., chain_id: _Optional[int] = ..., rpc_url: _Optional[str] = ..., registry_address: _Optional[str] = ..., market_address: _Optional[str] = ..., block_number: _Optional[int] = ..., provider: _Optional[bool] = ..., database: _Optional[str] = ...) -> None: ...

class ListPeersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Peer(_message.Message):
    __slots__ = ("peer_id", "address", "connected", "provider", "listen_addrs", "models", "devices", "reputation", "fetch")
    PEER_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    LISTEN_ADDRS_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    REPUTATION_FIELD_NUMBER: _ClassVar[int]
    FETCH_FIELD_NUMBER: _ClassVar[int]
    peer_id: str
    address: str
    connected: bool
    provider: bool
    listen_addrs: _containers.RepeatedScalarFieldContainer[str]
    models: _containers.RepeatedCompositeFieldContainer[OfferedModel]
    devices: _containers.RepeatedScalarFieldContainer[str]
    reputation: Reputation
    fetch: FetchTerms
    def __init__(self, peer_id: _Optional[str] = ..., address: _Optional[str] = ..., connected: _Optional[bool] = ..., provider: _Optional[bool] = ..., listen_addrs: _Optional[_Iterable[str]] = ..., models: _Optional[_Iterable[_Union[OfferedModel, _Mapping]]] = ..., devices: _Optional[_Iterable[str]] = ..., reputation: _Optional[_Union[Reputation, _Mapping]] = ..., fetch: _Optional[_Union[FetchTerms, _Mapping]] = ...) -> None: ...

class FetchTerms(_message.Message):
    __slots__ = ("max_bytes", "price_per_job_wei", "cold_start_price_wei")
    MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    PRICE_PER_JOB_WEI_FIELD_NUMBER: _ClassVar[int]
    COLD_START_PRICE_WEI_FIELD_NUMBER: _ClassVar[int]
    max_bytes: int
    price_per_job_wei: str
    cold_start_price_wei: str
    def __init__(self, max_bytes: _Optional[int] = ..., price_per_job_wei: _Optional[str] = ..., cold_start_price_wei: _Optional[str] = ...) -> None: ...

class Reputation(_message.Message):
    __slots__ = ("jobs_seen", "checks_passed", "checks_failed", "fraud_records_seen", "excluded", "excluded_reason")
    JOBS_SEEN_FIELD_NUMBER: _ClassVar[int]
    CHECKS_PASSED_FIELD_NUMBER: _ClassVar[int]
    CHECKS_FAILED_FIELD_NUMBER: _ClassVar[int]
    FRAUD_RECORDS_SEEN_FIELD_NUMBER: _ClassVar[int]
    EXCLUDED_FIELD_NUMBER: _ClassVar[int]
    EXCLUDED_REASON_FIELD_NUMBER: _ClassVar[int]
    jobs_seen: int
    checks_passed: int
    checks_failed: int
    fraud_records_seen: int
    excluded: bool
    excluded_reason: str
    def __init__(self, jobs_seen: _Optional[int] = ..., checks_passed: _Optional[int] = ..., checks_failed: _Optional[int] = ..., fraud_records_seen: _Optional[int] = ..., excluded: _Optional[bool] = ..., excluded_reason: _Optional[str] = ...) -> None: ...

class OfferedModel(_message.Message):
    __slots__ = ("model_id", "price_per_job_wei", "warm", "task", "precision")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    PRICE_PER_JOB_WEI_FIELD_NUMBER: _ClassVar[int]
    WARM_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    price_per_job_wei: str
    warm: bool
    task: str
    precision: str
    def __init__(self, model_id: _Optional[str] = ..., price_per_job_wei: _Optional[str] = ..., warm: _Optional[bool] = ..., task: _Optional[str] = ..., precision: _Optional[str] = ...) -> None: ...

class ListPeersResponse(_message.Message):
    __slots__ = ("peers",)
    PEERS_FIELD_NUMBER: _ClassVar[int]
    peers: _containers.RepeatedCompositeFieldContainer[Peer]
    def __init__(self, peers: _Optional[_Iterable[_Union[Peer, _Mapping]]] = ...) -> None: ...

class ListDisputesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListDisputesResponse(_message.Message):
    __slots__ = ("disputes",)
    DISPUTES_FIELD_NUMBER: _ClassVar[int]
    disputes: _containers.RepeatedCompositeFieldContainer[Dispute]
    def __init__(self, disputes: _Optional[_Iterable[_Union[Dispute, _Mapping]]] = ...) -> None: ...

class GetDisputeRequest(_message.Message):
    __slots__ = ("dispute_id",)
    DISPUTE_ID_FIELD_NUMBER: _ClassVar[int]
    dispute_id: str
    def __init__(self, dispute_id: _Optional[str] = ...) -> None: ...

class OpenDisputeRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class Dispute(_message.Message):
    __slots__ = ("dispute_id", "job_id", "model_id", "provider", "challenger", "role", "escrowed", "phase", "verdict", "jurors", "commits", "reveals", "commit_deadline", "reveal_deadline", "output_hash", "profile_hash")
    DISPUTE_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    CHALLENGER_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    ESCROWED_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    JURORS_FIELD_NUMBER: _ClassVar[int]
    COMMITS_FIELD_NUMBER: _ClassVar[int]
    REVEALS_FIELD_NUMBER: _ClassVar[int]
    COMMIT_DEADLINE_FIELD_NUMBER: _ClassVar[int]
    REVEAL_DEADLINE_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_HASH_FIELD_NUMBER: _ClassVar[int]
    PROFILE_HASH_FIELD_NUMBER: _ClassVar[int]
    dispute_id: str
    job_id: str
    model_id: str
    provider: str
    challenger: str
    role: str
    escrowed: bool
    phase: str
    verdict: str
    jurors: _containers.RepeatedScalarFieldContainer[str]
    commits: int
    reveals: int
    commit_deadline: int
    reveal_deadline: int
    output_hash: str
    profile_hash: str
    def __init__(self, dispute_id: _Optional[str] = ..., job_id: _Optional[str] = ..., model_id: _Optional[str] = ..., provider: _Optional[str] = ..., challenger: _Optional[str] = ..., role: _Optional[str] = ..., escrowed: _Optional[bool] = ..., phase: _Optional[str] = ..., verdict: _Optional[str] = ..., jurors: _Optional[_Iterable[str]] = ..., commits: _Optional[int] = ..., reveals: _Optional[int] = ..., commit_deadline: _Optional[int] = ..., reveal_deadline: _Optional[int] = ..., output_hash: _Optional[str] = ..., profile_hash: _Optional[str] = ...) -> None: ...
