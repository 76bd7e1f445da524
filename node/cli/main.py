"""The `gpunode` command: one typer app, each command group in its own module."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from node import __version__
from node.errors import GpunodeError

app = typer.Typer(
    name="gpunode",
    help="A node for a decentralized GPU inference marketplace.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True)


@app.command()
def version() -> None:
    """Print gpunode's version."""
    typer.echo(__version__)


# The module that defines each top-level command; a call loads only the one it names.
_COMMAND_MODULES = {
    "init": "init_cmd",
    "keys": "keys",
    "doctor": "doctor",
    "contracts": "contracts",
    "provider": "provider",
    "job": "job",
    "deposit": "job",
    "models": "models",
    "node": "node_cmd",
    "devnet": "devnet",
    "disputes": "disputes",
}


# Modules that add their commands themselves (top-level commands); the rest are one group each.
_REGISTERED_BY_HOOK = frozenset({"init_cmd", "doctor", "job", "devnet"})


def _register_groups(only: str | None = None) -> None:
    """Add the command groups (all of them, or the one module `only` names); imported here, so
    that a call pays for the libraries of its own command alone (`gpunode version`: none)."""
    import importlib

    names = [only] if only else list(dict.fromkeys(_COMMAND_MODULES.values()))
    for name in names:
        module = importlib.import_module(f"node.cli.{name}")
        if name in _REGISTERED_BY_HOOK:
            module.register(app)
        else:
            app.add_typer(module.app)


def main() -> None:
    """Console entry point: turn expected errors into one red line and exit status 1."""
    command = sys.argv[1] if len(sys.argv) > 1 else None
    if command != "version":
        _register_groups(_COMMAND_MODULES.get(command or ""))
    try:
        app()
    except GpunodeError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        sys.exit(1)
