"""`gpunode devnet`: run a whole local marketplace and print what it did."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from node.config import load_settings
from node.devnet import DevnetOptions, DevnetSummary, run_devnet
from node.errors import GpunodeError
from node.logging import configure_logging

console = Console()
err_console = Console(stderr=True)


def register(app: typer.Typer) -> None:
    app.command("devnet")(devnet)


def devnet(
    providers: Annotated[int, typer.Option(min=1, max=20, help="provider nodes to start")] = 3,
    jobs: Annotated[int, typer.Option(min=0, max=10_000, help="jobs the client submits")] = 20,
    escrow_share: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="share of the client's jobs paid through on-chain escrow")
    ] = 0.5,
    dapp_jobs: Annotated[
        int, typer.Option(min=0, max=100, help="jobs a dApp's consumer contract asks for")
    ] = 2,
    chain: Annotated[
        str, typer.Option(help="'embedded' (in-process), 'anvil' (started here), or a dev chain's RPC URL")
    ] = "embedded",
    model: Annotated[
        str, typer.Option(help="built-in model: mlp, transformer_classifier or causal_lm")
    ] = "mlp",
    home: Annotated[
        Path | None, typer.Option(help="keep the nodes' homes here (default: a temp dir)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Deploy the contracts, start providers and a client as real nodes, run and settle jobs."""
    settings = load_settings()
    # The nodes' own records would drown the progress lines; problems still show.
    configure_logging("ERROR", json=settings.log_json)
    options = DevnetOptions(
        providers=providers,
        jobs=jobs,
        escrow_share=escrow_share,
        dapp_jobs=dapp_jobs,
        chain=chain,
        architecture=model,
        home=home,
    )

    def progress(line: str) -> None:
        if not as_json:
            err_console.print(f"[dim]•[/dim] {line}")

    summary = asyncio.run(run_devnet(options, progress))
    if as_json:
        typer.echo(summary.as_json())
    else:
        _print_summary(summary)
    if not summary.ok:
        raise GpunodeError("the devnet finished with problems: " + "; ".join(summary.problems))


def _print_summary(summary: DevnetSummary) -> None:
    paths = ", ".join(f"{n} {p}" for p, n in sorted(summary.by_path.items()))
    console.print(
        f"\n[bold]devnet[/bold] on {summary.chain}: {summary.completed}/{summary.jobs} jobs completed "
        f"({paths}) by {summary.providers} providers in {summary.elapsed_s:.1f} s"
    )
    console.print(
        f"receipts verified {summary.receipts_verified}   latency p50 {summary.latency_p50_ms:.1f} ms  "
        f"p99 {summary.latency_p99_ms:.1f} ms   gas per job: "
        + ", ".join(f"{path} {gas:,.0f}" for path, gas in summary.gas_per_job.items())
    )
    table = Table(title="provider earnings (wei)")
    table.add_column("provider")
    table.add_column("jobs", justify="right")
    table.add_column("earned", justify="right")
    table.add_column("paid", justify="right")
    for p in summary.provider_summaries:
        table.add_row(p.address, str(p.jobs_served), f"{p.earned_wei:,}", f"{p.paid_wei:,}")
    console.print(table)
    balanced = (
        "[green]balanced[/green]"
        if summary.market_balance_wei == summary.market_owed_wei
        else "[red]off[/red]"
    )
    console.print(
        f"market holds {summary.market_balance_wei:,} wei, owes {summary.market_owed_wei:,} wei: {balanced}"
    )
