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


def _register_groups() -> None:
    """Add every command group; imported here so that `node.cli.main` stays cheap to import."""
    from node.cli import contracts, devnet, doctor, init_cmd, job, keys, models, node_cmd, provider

    init_cmd.register(app)
    app.add_typer(keys.app)
    doctor.register(app)
    app.add_typer(contracts.app)
    app.add_typer(provider.app)
    job.register(app)
    app.add_typer(models.app)
    app.add_typer(node_cmd.app)
    devnet.register(app)


def main() -> None:
    """Console entry point: turn expected errors into one red line and exit status 1."""
    _register_groups()
    try:
        app()
    except GpunodeError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        sys.exit(1)
