"""Running a CLI command against a node's gRPC API: shared options, connecting, turning errors into
one line on stderr and exit status 1."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from node.api.auth import read_token, token_path
from node.api.client import ApiClient
from node.cli.output import err_console, fail
from node.config import Settings, load_settings
from node.errors import GpunodeError
from node.logging import configure_logging

T = TypeVar("T")

ApiOption = Annotated[
    str | None,
    typer.Option("--api", help="host:port of the node's gRPC API (default: api.listen from the settings)"),
]
JsonOption = Annotated[bool, typer.Option("--json", help="print one JSON object (JSON lines for a stream)")]
ConfigOption = Annotated[
    Path | None, typer.Option("--config", help="config file (default: GPUNODE_CONFIG or <home>/config.toml)")
]


def describe(error: GpunodeError) -> str:
    return f"{error.message} — {error.hint}" if error.hint else error.message


@contextmanager
def exit_on_error() -> Iterator[None]:
    """Expected errors become one red line and exit status 1; Ctrl-C exits 130 without a traceback."""
    try:
        yield
    except GpunodeError as exc:
        fail(describe(exc))
        raise typer.Exit(code=1) from None
    except ExceptionGroup as group:
        # A node's TaskGroup reports the service that failed inside a group; an expected error
        # still deserves its one line, anything else its traceback.
        expected, rest = group.split(GpunodeError)
        if expected is None or rest is not None:
            raise
        for error in _leaves(expected):
            fail(describe(error))
        raise typer.Exit(code=1) from None
    except KeyboardInterrupt:
        raise typer.Exit(code=130) from None


def _leaves(group: BaseExceptionGroup[GpunodeError]) -> Iterator[GpunodeError]:
    for error in group.exceptions:
        if isinstance(error, BaseExceptionGroup):
            yield from _leaves(error)
        else:
            yield error


def cli_settings(config: Path | None) -> Settings:
    settings = load_settings(config)
    # Log records go to stderr so that stdout carries only the command's output.
    configure_logging(settings.log_level, json=settings.log_json)
    return settings


def call_node(api: str | None, config: Path | None, work: Callable[[ApiClient], Awaitable[T]]) -> T:
    """Connect to the node (`--api`, else the settings' api.listen), run `work`, close."""
    with exit_on_error():
        settings = cli_settings(config)
        target = api or settings.api.listen

        token_file = token_path(settings.home)
        token = read_token(token_file) if token_file.is_file() else None

        async def session() -> T:
            client = await ApiClient.connect(
                target, max_message_bytes=settings.api.max_message_bytes, token=token
            )
            async with client:
                return await work(client)

        return asyncio.run(session())


def run_node_in_foreground(settings: Settings, role: str) -> None:
    """Run a node until Ctrl-C or SIGTERM, saying on stderr where it can be reached once ready."""
    from node.app import Node, run_node

    def announce(node: Node) -> None:
        api = node.api.address if node.api is not None else "off"
        err_console.print(f"{role} {node.key.address} ready — API at {api}; Ctrl-C stops it")
        if node.http is not None:
            err_console.print(
                f"dashboard {node.http.url}/ — OpenAI-compatible API {node.http.url}/v1, metrics "
                f"{node.http.url}/metrics",
                soft_wrap=True,
                highlight=False,
            )
        err_console.print("other nodes join through (`gpunode init --bootstrap` or p2p.bootstrap):")
        for addr in node.host.addrs:
            # Never wrapped: a peer id cut in two is what a user would copy.
            err_console.print(f"  {addr}", soft_wrap=True, highlight=False)

    with exit_on_error():
        configure_logging(settings.log_level, json=settings.log_json)
        asyncio.run(run_node(settings, on_ready=announce))
