"""Revert reasons decoded from contract ABIs into `TransactionReverted`, on every backend.

Backends report a revert in different shapes: anvil (any JSON-RPC node) gives web3's
`ContractLogicError` carrying the revert data as hex; the embedded py-evm chain raises eth-tester's
`TransactionFailed`, wrapping the raw revert bytes, their `repr`, or an already decoded
`Error(string)` reason, depending on the RPC method. `revert_payload` finds the payload in any of
them; `ErrorDecoder` turns it into a name and arguments using the ABIs of the known contracts.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from eth_abi import abi as eth_abi
from eth_abi.exceptions import DecodingError
from eth_utils.abi import abi_to_signature, function_signature_to_4byte_selector, get_abi_input_types
from eth_utils.address import to_checksum_address
from web3.exceptions import ContractLogicError

from node.errors import TransactionReverted

ERROR_STRING_SELECTOR = function_signature_to_4byte_selector("Error(string)")
PANIC_SELECTOR = function_signature_to_4byte_selector("Panic(uint256)")

# Solidity's panic codes (docs: "Panic via assert and Error via require").
PANIC_REASONS: Mapping[int, str] = {
    0x00: "generic compiler panic",
    0x01: "assert failed",
    0x11: "arithmetic overflow or underflow",
    0x12: "division or modulo by zero",
    0x21: "invalid enum value",
    0x22: "corrupt storage byte array",
    0x31: "pop on an empty array",
    0x32: "array index out of bounds",
    0x41: "out of memory",
    0x51: "call to an uninitialised function",
}

_REVERTED_PREFIX = "execution reverted"


@dataclass(frozen=True, slots=True)
class DecodedRevert:
    """One revert: the error's name (`Error`, `Panic`, a custom error, or `unknown`) and arguments."""

    error_name: str
    error_args: tuple[object, ...]
    data: bytes

    def describe(self) -> str:
        if self.error_name == "Error" and self.error_args:
            return f'Error("{self.error_args[0]}")'
        if self.error_name == "Panic" and self.error_args:
            code = int(self.error_args[0])  # type: ignore[call-overload]
            return f"Panic(0x{code:02x}: {PANIC_REASONS.get(code, 'unknown panic code')})"
        if self.error_name == "unknown":
            return f"unknown error 0x{self.data.hex()}" if self.data else "revert without reason"
        rendered = ", ".join(_render(arg) for arg in self.error_args)
        return f"{self.error_name}({rendered})"

    def to_exception(self, action: str) -> TransactionReverted:
        return TransactionReverted(
            f"{action} reverted: {self.describe()}",
            error_name=self.error_name,
            args=self.error_args,
            hint=_hint_for(self),
        )


@dataclass(frozen=True, slots=True)
class _ErrorAbi:
    name: str
    input_types: tuple[str, ...]


class ErrorDecoder:
    """Maps 4-byte selectors to the custom errors declared in every ABI it has been given."""

    def __init__(self, abis: Sequence[Sequence[Mapping[str, Any]]] = ()) -> None:
        self._errors: dict[bytes, _ErrorAbi] = {}
        for abi in abis:
            self.add_abi(abi)

    def add_abi(self, abi: Sequence[Mapping[str, Any]]) -> None:
        for element in abi:
            if element.get("type") != "error":
                continue
            signature = abi_to_signature(element)  # type: ignore[arg-type]
            selector = function_signature_to_4byte_selector(signature)
            types = tuple(get_abi_input_types(element))  # type: ignore[arg-type]
            self._errors[selector] = _ErrorAbi(str(element["name"]), types)

    def decode(self, data: bytes) -> DecodedRevert:
        """Decode revert data; data that matches no known error decodes as `unknown`."""
        selector, body = data[:4], data[4:]
        known = self._known(selector)
        if known is not None:
            try:
                values = eth_abi.decode(list(known.input_types), body)
            except DecodingError:
                return DecodedRevert("unknown", (), data)
            normalized = tuple(_checksummed(t, v) for t, v in zip(known.input_types, values, strict=True))
            return DecodedRevert(known.name, normalized, data)
        return DecodedRevert("unknown", (), data)

    def from_exception(self, exc: BaseException) -> DecodedRevert | None:
        """The revert behind `exc`, or None when `exc` is not a revert (a fault of another kind)."""
        payload = revert_payload(exc)
        if payload is None:
            return None
        if isinstance(payload, bytes):
            return self.decode(payload)
        data = ERROR_STRING_SELECTOR + eth_abi.encode(["string"], [payload])
        return DecodedRevert("Error", (payload,), data)

    def _known(self, selector: bytes) -> _ErrorAbi | None:
        if selector == ERROR_STRING_SELECTOR:
            return _ErrorAbi("Error", ("string",))
        if selector == PANIC_SELECTOR:
            return _ErrorAbi("Panic", ("uint256",))
        return self._errors.get(selector)


def revert_payload(exc: BaseException) -> bytes | str | None:
    """Raw revert data (bytes), an already decoded `Error(string)` reason (str), or None.

    Walks the exception chain because eth-tester re-raises with the raw bytes only in the context.
    """
    chain = list(_exception_chain(exc))
    if not any(_is_revert_exception(e) for e in chain):
        return None
    for candidate in chain:
        data = _raw_bytes(candidate)
        if data is not None:
            return data
    for candidate in chain:
        reason = _reason_text(candidate)
        if reason is not None:
            return reason
    return b""


def _exception_chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _is_revert_exception(exc: BaseException) -> bool:
    if isinstance(exc, ContractLogicError):
        return True
    # Import lazily: eth-tester is only needed by the embedded chain.
    from eth_tester.exceptions import TransactionFailed

    if isinstance(exc, TransactionFailed):
        return True
    return type(exc).__name__ == "Revert" and type(exc).__module__.startswith("eth.")


def _raw_bytes(exc: BaseException) -> bytes | None:
    if isinstance(exc, ContractLogicError):
        data = exc.data
        if isinstance(data, str) and data.startswith("0x"):
            return bytes.fromhex(data[2:])
        return None
    if not exc.args:
        return None
    first = exc.args[0]
    if isinstance(first, bytes):
        return first
    if isinstance(first, BaseException):
        return _raw_bytes(first)
    if isinstance(first, str):
        return _bytes_literal(first)
    return None


def _bytes_literal(text: str) -> bytes | None:
    """eth-tester's `call` reports custom errors as `str(Revert(b'...'))`, i.e. a bytes literal."""
    if text.startswith(_REVERTED_PREFIX):
        text = text[len(_REVERTED_PREFIX) :].lstrip(": ")
    if not (text.startswith("b'") or text.startswith('b"')):
        return None
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return None
    return value if isinstance(value, bytes) else None


def _reason_text(exc: BaseException) -> str | None:
    if not exc.args or not isinstance(exc.args[0], str):
        return None
    text: str = exc.args[0]
    if text.startswith(_REVERTED_PREFIX):
        text = text[len(_REVERTED_PREFIX) :].lstrip(": ")
    return text or None


def _checksummed(abi_type: str, value: Any) -> Any:
    """eth-abi decodes addresses in lower case; everywhere else gpunode uses checksummed ones."""
    if abi_type == "address":
        return to_checksum_address(value)
    if abi_type.startswith("address[") and isinstance(value, tuple | list):
        return tuple(to_checksum_address(item) for item in value)
    return value


def _render(value: object) -> str:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


def _hint_for(decoded: DecodedRevert) -> str | None:
    if decoded.error_name == "unknown" and decoded.data:
        return "the revert data matches no error in the known contract ABIs; is the address right?"
    return None
