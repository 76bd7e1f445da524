"""ErrorDecoder: revert data and backend exceptions into error names and arguments."""

from __future__ import annotations

import pytest
from eth_abi import abi as eth_abi
from eth_tester.exceptions import TransactionFailed
from eth_utils.abi import function_signature_to_4byte_selector
from web3.exceptions import ContractCustomError, ContractLogicError

from node.chain.revert import ERROR_STRING_SELECTOR, PANIC_SELECTOR, ErrorDecoder, revert_payload

ADDRESS = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
ABI = [
    {
        "type": "error",
        "name": "StakeTooLow",
        "inputs": [{"name": "sent", "type": "uint256"}, {"name": "minimum", "type": "uint256"}],
    },
    {"type": "error", "name": "NotProvider", "inputs": [{"name": "caller", "type": "address"}]},
    {"type": "function", "name": "register", "inputs": [], "outputs": [], "stateMutability": "payable"},
]


def encoded(signature: str, types: list[str], values: list[object]) -> bytes:
    return function_signature_to_4byte_selector(signature) + eth_abi.encode(types, values)


@pytest.fixture
def decoder() -> ErrorDecoder:
    return ErrorDecoder([ABI])


def test_can_decode_a_custom_error_with_parameters(decoder: ErrorDecoder) -> None:
    decoded = decoder.decode(encoded("StakeTooLow(uint256,uint256)", ["uint256", "uint256"], [5, 10]))
    assert (decoded.error_name, decoded.error_args) == ("StakeTooLow", (5, 10))
    assert decoded.describe() == "StakeTooLow(5, 10)"


def test_can_decode_addresses_checksummed(decoder: ErrorDecoder) -> None:
    decoded = decoder.decode(encoded("NotProvider(address)", ["address"], [ADDRESS]))
    assert decoded.error_args == (ADDRESS,)


def test_can_decode_error_string_and_panic(decoder: ErrorDecoder) -> None:
    reason = decoder.decode(ERROR_STRING_SELECTOR + eth_abi.encode(["string"], ["too late"]))
    assert (reason.error_name, reason.error_args) == ("Error", ("too late",))
    panic = decoder.decode(PANIC_SELECTOR + eth_abi.encode(["uint256"], [0x11]))
    assert (panic.error_name, panic.error_args) == ("Panic", (0x11,))
    assert "overflow" in panic.describe()


def test_cannot_name_an_undeclared_error(decoder: ErrorDecoder) -> None:
    data = encoded("Mystery(uint256)", ["uint256"], [1])
    decoded = decoder.decode(data)
    assert (decoded.error_name, decoded.error_args) == ("unknown", ())
    error = decoded.to_exception("register()")
    assert data.hex() in str(error)
    assert "known contract ABIs" in str(error.hint)


def test_cannot_decode_truncated_arguments(decoder: ErrorDecoder) -> None:
    data = encoded("StakeTooLow(uint256,uint256)", ["uint256", "uint256"], [5, 10])[:40]
    assert decoder.decode(data).error_name == "unknown"


def test_can_read_every_backend_shape(decoder: ErrorDecoder) -> None:
    data = encoded("StakeTooLow(uint256,uint256)", ["uint256", "uint256"], [1, 2])
    # anvil (JSON-RPC): web3 carries the hex data.
    assert revert_payload(ContractCustomError(data.hex(), data="0x" + data.hex())) == data
    # eth-tester's eth_call: the raw bytes rendered as a bytes literal in the message.
    assert revert_payload(TransactionFailed(f"execution reverted: {data!r}")) == data
    # eth-tester's eth_estimateGas: the raw bytes in the exception the message wraps.
    outer = TransactionFailed("execution reverted: <bytes>")
    outer.__context__ = TransactionFailed(data)
    assert revert_payload(outer) == data
    # eth-tester's Error(string): an already decoded reason.
    assert revert_payload(TransactionFailed("execution reverted: too late")) == "too late"
    assert decoder.from_exception(TransactionFailed("execution reverted: too late")) is not None


def test_cannot_mistake_other_failures_for_reverts(decoder: ErrorDecoder) -> None:
    assert decoder.from_exception(ConnectionRefusedError("refused")) is None
    assert decoder.from_exception(ValueError("nonce too low")) is None
    plain = decoder.from_exception(ContractLogicError("execution reverted", data=None))
    assert plain is not None
    assert plain.describe() == "revert without reason"
