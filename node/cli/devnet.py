"""`gpunode devnet`: run a whole local marketplace and print what it did."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from node.cli.output import format_wei
from node.config import load_settings
from node.devnet import DevnetOptions, DevnetSummary, Serving, run_devnet
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
    serve: Annotated[
        bool, typer.Option("--serve", help="after the run, keep the marketplace up for the CLI until Ctrl-C")
    ] = False,
    api: Annotated[
        str, typer.Option(help="with --serve: where the client's gRPC API listens")
    ] = "127.0.0.1:50051",
    http: Annotated[
        str,
        typer.Option(help="with --serve: where the client's dashboard and OpenAI-compatible API listen"),
    ] = "127.0.0.1:8000",
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
        serve_api=api if serve else None,
        serve_http=http,
    )

    def progress(line: str) -> None:
        if not as_json:
            err_console.print(f"[dim]•[/dim] {line}")

    async def keep_serving(summary: DevnetSummary, serving: Serving) -> None:
        _report(summary, as_json)
        err_console.print(
            f"\nthe marketplace is up; the client's API listens on {serving.api}.\n"
            f"dashboard: {serving.http_url}/\n"
            "In another shell:\n"
            f"  export GPUNODE_HOME={serving.client_home}\n"
            "  gpunode node peers\n"
            "  gpunode job list\n"
            "OpenAI's clients (the README's example):\n"
            f"  export OPENAI_BASE_URL={serving.http_url}/v1\n"
            "  export OPENAI_API_KEY=unused\n"
            f"  export GPUNODE_MODEL={serving.chat_model_id}\n"
            "Ctrl-C stops every node.",
            soft_wrap=True,
            highlight=False,
        )
        await _until_interrupted()

    try:
        summary = asyncio.run(run_devnet(options, progress, keep_serving if serve else None))
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    if not serve:
        _report(summary, as_json)
    if not summary.ok:
        raise GpunodeError("the devnet finished with problems: " + "; ".join(summary.problems))


def _report(summary: DevnetSummary, as_json: bool) -> None:
    if as_json:
        typer.echo(summary.as_json())
    else:
        _print_summary(summary)


async def _until_interrupted() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


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
    if summary.spot_checks:
        console.print(
            f"spot checks: the client re-ran {summary.spot_checks} sampled jobs on other providers "
            "(paid, and counted in the jobs below)"
        )
    table = Table(title="provider earnings")
    table.add_column("provider")
    table.add_column("jobs", justify="right")
    table.add_column("earned", justify="right")
    table.add_column("paid", justify="right")
    table.add_column("advertised items/s", justify="right")
    for p in summary.provider_summaries:
        speed = f"{p.advertised_items_per_s:,.0f}" if p.advertised_items_per_s else "-"
        short = f"{p.address[:8]}…{p.address[-6:]}"
        table.add_row(short, str(p.jobs_served), format_wei(p.earned_wei), format_wei(p.paid_wei), speed)
    console.print(table)
    share = summary.max_share_vs_equal
    console.print(f"the busiest provider served {share:.2f} times an equal share of the jobs")
    balanced = (
        "[green]balanced[/green]"
        if summary.market_balance_wei == summary.market_owed_wei
        else "[red]off[/red]"
    )
    console.print(
        f"market holds {format_wei(summary.market_balance_wei)}, owes {format_wei(summary.market_owed_wei)}: "
        f"{balanced}"
    )
