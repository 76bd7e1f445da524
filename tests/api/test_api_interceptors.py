"""The error interceptor on a real grpc.aio server: layer errors become their status with message,
hint and type; anything unexpected becomes INTERNAL with a correlation id that the log also has."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from node.api.interceptors import CORRELATION_KEY, ERROR_TYPE_KEY, HINT_KEY, ErrorStatusInterceptor
from node.errors import SettlementError
from node.executor.errors import UnknownModel

SERVICE = "gpunode.test.Probe"


async def _unary(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    if request == b"settlement":
        raise SettlementError("the deposit does not cover 5 wei", hint="deposit more into the JobMarket")
    if request == b"bug":
        raise RuntimeError("a bug nobody expected")
    return request


async def _stream(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    yield b"first"
    raise UnknownModel("model ab is not in the store")


@pytest.fixture
async def target() -> AsyncIterator[str]:
    server = grpc.aio.server(interceptors=[ErrorStatusInterceptor()])
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                SERVICE,
                {
                    "Unary": grpc.unary_unary_rpc_method_handler(_unary),
                    "Stream": grpc.unary_stream_rpc_method_handler(_stream),
                },
            )
        ]
    )
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(0)


def _metadata(error: grpc.aio.AioRpcError) -> dict[str, str | bytes]:
    return dict(error.trailing_metadata() or ())


async def test_can_send_a_layer_error_as_its_status_with_message_and_hint(target: str) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await channel.unary_unary(f"/{SERVICE}/Unary")(b"settlement")
    assert caught.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert caught.value.details() == "the deposit does not cover 5 wei — deposit more into the JobMarket"
    metadata = _metadata(caught.value)
    assert metadata[ERROR_TYPE_KEY] == "SettlementError"
    assert metadata[HINT_KEY] == b"deposit more into the JobMarket"


async def test_can_hide_an_unexpected_error_behind_a_correlation_id(
    target: str, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    with caplog.at_level(logging.ERROR):
        async with grpc.aio.insecure_channel(target) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await channel.unary_unary(f"/{SERVICE}/Unary")(b"bug")
    assert caught.value.code() is grpc.StatusCode.INTERNAL
    correlation = _metadata(caught.value)[CORRELATION_KEY]
    assert isinstance(correlation, str)
    assert f"correlation id {correlation}" in (caught.value.details() or "")
    assert "a bug nobody expected" not in (caught.value.details() or "")
    # Wherever logging is configured to go (stdlib handlers or structlog's own printer), the record
    # with the id carries the traceback of the bug.
    captured = capsys.readouterr()
    log_text = caplog.text + captured.out + captured.err
    assert correlation in log_text
    assert "a bug nobody expected" in log_text


async def test_can_end_a_stream_with_the_status_of_the_error_that_stopped_it(target: str) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_stream(f"/{SERVICE}/Stream")(b"")
        assert await call.read() == b"first"
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call.read()
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND
    assert caught.value.details() == "model ab is not in the store"


async def test_can_let_a_servicers_own_status_through_unchanged(target: str) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="no.such.Service")
            )
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND
    assert ERROR_TYPE_KEY not in _metadata(caught.value)
