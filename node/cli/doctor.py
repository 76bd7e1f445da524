"""`gpunode doctor`: can this machine serve jobs safely? Says what is missing and how to fix it."""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from node.config import Settings, load_settings
from node.executor.checks import CheckResult, run_checks
from node.logging import configure_logging

_STYLE = {"ok": "green", "warn": "yellow", "fail": "red"}


def doctor(
    as_json: Annotated[bool, typer.Option("--json", help="print the checks as one JSON object")] = False,
    config: Annotated[
        Path | None, typer.Option(help="config file (default: GPUNODE_CONFIG or ~/.gpunode)")
    ] = None,
) -> None:
    """Check the sandbox (bubblewrap, namespaces, seccomp, cgroups), GPU, disk; key, chain, ports."""
    settings = load_settings(config)
    # Checks log what they find (a cgroup left busy by another process): on stderr, so stdout
    # holds nothing but the report; unconfigured, structlog would print to stdout.
    configure_logging(settings.log_level, json=settings.log_json)
    results = asyncio.run(_all_checks(settings))
    failed = any(r.status == "fail" and r.required for r in results)
    if as_json:
        typer.echo(json.dumps({"ok": not failed, "checks": [asdict(r) for r in results]}))
    else:
        _render(results, failed)
    if failed:
        raise typer.Exit(code=1)


async def _all_checks(settings: Settings) -> list[CheckResult]:
    from node.cli.node_checks import node_checks

    return [*await run_checks(settings.executor), *await node_checks(settings)]


def _render(results: list[CheckResult], failed: bool) -> None:
    table = Table(title="gpunode doctor")
    for column in ("check", "status", "detail", "how to fix"):
        table.add_column(column, overflow="fold")
    for r in results:
        status = f"[{_STYLE[r.status]}]{r.status}[/]" + ("" if r.required else " (optional)")
        table.add_row(r.name, status, r.detail, r.fix)
    console = Console()
    console.print(table)
    console.print("[red]a required check failed[/]" if failed else "[green]ready to serve jobs[/]")


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor)
