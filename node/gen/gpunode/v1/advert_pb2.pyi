# mypy: ignore-errors
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ProviderAdvert(_message.Message):
    __slots__ = ("address", "peer_id", "listen_addrs", "devices", "warm_models", "prices", "free_slots", "benchmarks", "sequence", "expires_at_ms", "issued_at_ms", "queued", "fetch_max_bytes", "fetch_price_per_job_wei", "cold_start_price_wei")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PEER_ID_FIELD_NUMBER: _ClassVar[int]
    LISTEN_ADDRS_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    WARM_MODELS_FIELD_NUMBER: _ClassVar[int]
    PRICES_FIELD_NUMBER: _ClassVar[int]
    FREE_SLOTS_FIELD_NUMBER: _ClassVar[int]
    BENCHMARKS_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    FETCH_MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    FETCH_PRICE_PER_JOB_WEI_FIELD_NUMBER: _ClassVar[int]
    COLD_START_PRICE_WEI_FIELD_NUMBER: _ClassVar[int]
    address: bytes
    peer_id: bytes
    listen_addrs: _containers.RepeatedScalarFieldContainer[str]
    devices: _containers.RepeatedCompositeFieldContainer[Device]
    warm_models: _containers.RepeatedScalarFieldContainer[bytes]
    prices: _containers.RepeatedCompositeFieldContainer[ModelPrice]
    free_slots: int
    benchmarks: _containers.RepeatedCompositeFieldContainer[Benchmark]
    sequence: int
    expires_at_ms: int
    issued_at_ms: int
    queued: int
    fetch_max_bytes: int
    fetch_price_per_job_wei: bytes
    cold_start_price_wei: bytes
    def __init__(self, address: _Optional[bytes] = ..., peer_id: _Optional[bytes] = ..., listen_addrs: _Optional[_Iterable[str]] = ..., devices: _Optional[_Iterable[_Union[Device, _Mapping]]] = ..., warm_models: _Optional[_Iterable[bytes]] = ..., prices: _Optional[_Iterable[_Union[ModelPrice, _Mapping]]] = ..., free_slots: _Optional[int] = ..., benchmarks: _Optional[_Iterable[_Union[Benchmark, _Mapping]]] = ..., sequence: _Optional[int] = ..., expires_at_ms: _Optional[int] = ..., issued_at_ms: _Optional[int] = ..., queued: _Optional[int] = ..., fetch_max_bytes: _Optional[int] = ..., fetch_price_per_job_wei: _Optional[bytes] = ..., cold_start_price_wei: _Optional[bytes] = ...) -> None: ...

class Device(_message.Message):
    __slots__ = ("kind", "model", "memory_bytes", "compute_capability")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[Device.Kind]
        KIND_CPU: _ClassVar[Device.Kind]
        KIND_CUDA: _ClassVar[Device.Kind]
    KIND_UNSPECIFIED: Device.Kind
    KIND_CPU: Device.Kind
    KIND_CUDA: Device.Kind
    KIND_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_CAPABILITY_FIELD_NUMBER: _ClassVar[int]
    kind: Device.Kind
    model: str
    memory_bytes: int
    compute_capability: str
    def __init__(self, kind: _Optional[_Union[Device.Kind, str]] = ..., model: _Optional[str] = ..., memory_bytes: _Optional[int] = ..., compute_capability: _Optional[str] = ...) -> None: ...

class ModelPrice(_message.Message):
    __slots__ = ("model_id", "price_per_job_wei", "price_per_unit_wei", "unit")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    PRICE_PER_JOB_WEI_FIELD_NUMBER: _ClassVar[int]
    PRICE_PER_UNIT_WEI_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    model_id: bytes
    price_per_job_wei: bytes
    price_per_unit_wei: bytes
    unit: str
    def __init__(self, model_id: _Optional[bytes] = ..., price_per_job_wei: _Optional[bytes] = ..., price_per_unit_wei: _Optional[bytes] = ..., unit: _Optional[str] = ...) -> None: ...

class Benchmark(_message.Message):
    __slots__ = ("model_id", "device_index", "throughput_per_s", "latency_p50_ms")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_INDEX_FIELD_NUMBER: _ClassVar[int]
    THROUGHPUT_PER_S_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P50_MS_FIELD_NUMBER: _ClassVar[int]
    model_id: bytes
    device_index: int
    throughput_per_s: float
    latency_p50_ms: float
    def __init__(self, model_id: _Optional[bytes] = ..., device_index: _Optional[int] = ..., throughput_per_s: _Optional[float] = ..., latency_p50_ms: _Optional[float] = ...) -> None: ...

class SignedAdvert(_message.Message):
    __slots__ = ("advert", "signature")
    ADVERT_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    advert: bytes
    signature: bytes
    def __init__(self, advert: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...
