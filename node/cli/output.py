"""What the CLI prints: rich tables and panels for people, one JSON document for scripts.

Results go to stdout, everything else (progress, logs, errors) to stderr, so `--json` output can
be piped straight into `jq`. Output bytes never go into JSON; their size and sha256 do.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from node.domain.service import JobView, ModelView, PeerView, ReputationView, VerificationView
from node.types import FetchTerms

console = Console()
err_console = Console(stderr=True)

WEI_PER_ETH = 10**18
GWEI = 10**9


def jsonable(value: Any) -> Any:
    """Views (frozen dataclasses) as plain JSON values: enums by value, bytes as 0x hex."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def job_json(view: JobView) -> dict[str, Any]:
    """A job for scripts: the output's bytes are replaced by their size and sha256."""
    data: dict[str, Any] = jsonable(dataclasses.replace(view, output=None))
    data.pop("output")
    data.pop("output_size")
    # The same figures whether or not the bytes came along (`job list` leaves them out).
    data["output_bytes"] = len(view.output) if view.output is not None else view.output_size
    if view.output is not None:
        data["output_sha256"] = hashlib.sha256(view.output).hexdigest()
    elif view.output_size is not None and view.receipt is not None:
        data["output_sha256"] = view.receipt.receipt.output_hash.hex()
    else:
        data["output_sha256"] = None
    return data


def print_json(value: Any) -> None:
    typer.echo(json.dumps(value, sort_keys=True))


def fail(message: str) -> None:
    """One red line on stderr; the caller exits with status 1."""
    err_console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)


def format_wei(wei: int) -> str:
    """An amount in the unit that reads best: ETH for large amounts, gwei for whole gwei, else wei."""
    if wei == 0:
        return "0"
    if wei >= 10**14:
        return f"{wei / WEI_PER_ETH:.6f} ETH"
    if wei % GWEI == 0:
        return f"{wei // GWEI} gwei"
    return f"{wei} wei"


def format_bytes(size: int) -> str:
    """A size in the binary unit that reads best: 4 GiB, 64 KiB, 1.5 MiB, 900 B."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:.1f}".removesuffix(".0") + f" {unit}"
    return f"{size} B"


def fetch_terms_text(terms: FetchTerms | None) -> str:
    """A provider's terms for models it lacks, in two short lines (fits a narrow column)."""
    if terms is None:
        return "fetches no model"
    return (
        f"fetches up to {format_bytes(terms.max_bytes)}\ncold start {format_wei(terms.cold_start_price_wei)}"
    )


def format_wei_exact(wei: int) -> str:
    """Readable, with the exact wei alongside when the readable form rounds or changes unit."""
    readable = format_wei(wei)
    return readable if readable in (f"{wei} wei", "0") else f"{readable} ({wei} wei)"


def format_time(seconds: float) -> str:
    if seconds <= 0:
        return "-"
    moment = datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


_STATE_STYLE = {
    "settled": "green",
    "verified": "green",
    "paid": "cyan",
    "delivered": "green",
    "failed": "red",
    "cancelled": "yellow",
    "refunded": "yellow",
}


def styled_state(state: str) -> str:
    style = _STATE_STYLE.get(state)
    return f"[{style}]{state}[/]" if style else state


def short(text: str | None, keep: int = 10) -> str:
    if not text:
        return "-"
    return text if len(text) <= 2 * keep + 1 else f"{text[:keep]}…{text[-4:]}"


# Below this many columns `job list` drops the columns a glance does without, and folds the id.
WIDE_JOBS_TABLE = 150


def jobs_table(jobs: Iterable[JobView], *, width: int | None = None) -> Table:
    if (width if width is not None else console.width) < WIDE_JOBS_TABLE:
        return _narrow_jobs_table(jobs)
    table = Table(title="jobs")
    # The full id, unbroken: it is what `job get` and `job cancel` take.
    table.add_column("job id", no_wrap=True, min_width=64)
    for column in ("state", "role", "payment", "model", "provider", "price", "tries", "updated"):
        table.add_column(column, overflow="fold")
    for job in jobs:
        table.add_row(
            job.job_id,
            styled_state(job.state.value),
            job.role.value,
            job.payment.value,
            short(job.model_id),
            short(job.provider),
            format_wei(job.price_wei),
            str(len(job.attempts)),
            format_time(job.updated_at),
        )
    return table


def _narrow_jobs_table(jobs: Iterable[JobView]) -> Table:
    # The id folds over two lines of 32 digits: whole, yet the row still fits 80 columns.
    table = Table(title="jobs")
    table.add_column("job id", overflow="fold", width=32)
    for column in ("state", "payment", "price", "updated"):
        table.add_column(column, overflow="fold")
    for job in jobs:
        table.add_row(
            job.job_id,
            styled_state(job.state.value),
            job.payment.value,
            format_wei(job.price_wei),
            format_time(job.updated_at).split(" ")[-1],
        )
    return table


def offered_models_table(peers: Iterable[PeerView]) -> Table:
    """`models available`: each model offered on the network, what it does and runs in, its
    providers and their prices."""
    table = Table(title="models offered on the network")
    table.add_column("model id", overflow="fold", width=16)
    for column in ("task, precision", "providers", "lowest price", "warm", "devices"):
        table.add_column(column, overflow="fold")
    offers: dict[str, list[tuple[PeerView, int, bool]]] = {}
    traits: dict[str, tuple[str, str]] = {}
    for peer in peers:
        for model in peer.models:
            offers.setdefault(model.model_id, []).append((peer, model.price_per_job_wei, model.warm))
            if model.task or model.precision:
                traits.setdefault(model.model_id, (model.task, model.precision))
    for model_id, found in sorted(offers.items()):
        devices = sorted({device for peer, _, _ in found for device in peer.devices})
        task, precision = traits.get(model_id, ("", ""))
        table.add_row(
            model_id,
            f"{task or '-'}\n{precision or '-'}",
            str(len(found)),
            format_wei(min(price for _, price, _ in found)),
            f"{sum(warm for _, _, warm in found)} of {len(found)}",
            "\n".join(devices) or "-",
        )
    return table


def fetching_providers_table(peers: Iterable[PeerView]) -> Table:
    """`models available`: the providers that run a model they do not hold (fetched from the
    client or a peer holding it), the largest they fetch and what its first job costs."""
    table = Table(title="providers that fetch models they lack (a model's first job adds its cold start)")
    table.add_column("provider", overflow="fold")
    for column in ("largest model", "job price", "cold start"):
        table.add_column(column, overflow="fold")
    for peer in sorted(peers, key=lambda p: p.address):
        if peer.fetch is None:
            continue
        table.add_row(
            peer.address,
            format_bytes(peer.fetch.max_bytes),
            format_wei(peer.fetch.price_per_job_wei),
            format_wei(peer.fetch.cold_start_price_wei),
        )
    return table


def job_table(job: JobView) -> Table:
    """One job in detail: a two-column table of its fields, its receipt and its attempts."""
    table = key_value_table(
        f"job {job.job_id}",
        {
            "state": styled_state(job.state.value) + (" (final)" if job.terminal else ""),
            "role": job.role.value,
            "payment": job.payment.value,
            "model": job.model_id,
            "provider": job.provider or "-",
            "price": format_wei_exact(job.price_wei),
            "created": format_time(job.created_at),
            "updated": format_time(job.updated_at),
        },
    )
    if job.onchain_job_id:
        table.add_row("on-chain job", job.onchain_job_id)
    if job.error:
        table.add_row("error", f"[red]{job.error}[/]")
    for i, attempt in enumerate(job.attempts, 1):
        outcome = attempt.outcome.value if attempt.outcome else "in flight"
        table.add_row(f"attempt {i}", f"{attempt.provider} {outcome}{' (paid)' if attempt.paid else ''}")
    if job.receipt is not None:
        r = job.receipt
        verdict = "[green]verified[/]" if r.verified else "[yellow]not verified yet[/]"
        table.add_row("receipt", f"{verdict}, signed by {r.receipt.provider}")
        table.add_row("output sha256", "0x" + r.receipt.output_hash.hex())
    if job.output is not None:
        table.add_row("output", f"{len(job.output)} bytes")
    return table


def key_value_table(title: str, rows: Mapping[str, str]) -> Table:
    table = Table(title=title, show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for key, value in rows.items():
        table.add_row(key, value)
    return table


def models_table(models: Iterable[ModelView]) -> Table:
    table = Table(title="models")
    for column in ("model id", "name", "format", "size", "batchable", "warm"):
        table.add_column(column, overflow="fold")
    for m in models:
        table.add_row(m.model_id, m.name, m.format, f"{m.size_bytes:,} B", _yes(m.batchable), _yes(m.warm))
    return table


def reputation_text(reputation: ReputationView | None) -> str:
    """How a provider's results fared here: jobs, spot checks, fraud records, exclusion."""
    if reputation is None:
        return ""
    text = (
        f"{reputation.jobs_seen} jobs, checks {reputation.checks_passed} passed "
        f"{reputation.checks_failed} failed, {reputation.fraud_records_seen} fraud records"
    )
    if reputation.excluded:
        text += f"\n[red]excluded[/red]: {reputation.excluded_reason}"
    return text


def verification_table(view: VerificationView) -> Table:
    table = Table(title=f"spot check of job {view.job_id}: {view.verdict}")
    for column in ("run", "provider", "job", "output sha256", "profile"):
        table.add_column(column)
    for number, run in enumerate(view.runs, start=1):
        loser = view.loser is not None and run.provider == view.loser
        provider = f"[red]{run.provider} (wrong)[/red]" if loser else run.provider
        table.add_row(str(number), provider, run.job_id, run.output_hash, run.profile_hash[:16])
    return table


def peers_table(peers: Iterable[PeerView]) -> Table:
    table = Table(title="peers")
    for column in ("peer id", "address", "connected", "provider", "listen addresses", "results"):
        table.add_column(column, overflow="fold")
    for p in peers:
        table.add_row(
            p.peer_id,
            p.address,
            _yes(p.connected),
            f"yes\n{fetch_terms_text(p.fetch)}" if p.provider else "no",
            "\n".join(p.listen_addrs),
            reputation_text(p.reputation),
        )
    return table


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"
