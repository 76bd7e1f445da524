"""`gpunode disputes`: the disputes this node takes part in at the DisputeCourt; open one."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table

from node.cli.output import console, jsonable, key_value_table, print_json
from node.cli.remote import ApiOption, ConfigOption, JsonOption, call_node
from node.domain.service import DisputeView

app = typer.Typer(
    name="disputes",
    help="Disputes this node takes part in: as challenger, disputed provider or juror.",
    no_args_is_help=True,
)


@app.command("list")
def list_disputes(api: ApiOption = None, as_json: JsonOption = False, config: ConfigOption = None) -> None:
    """Every dispute this node is the challenger, the provider or a juror of, newest first."""
    views = call_node(api, config, lambda client: client.list_disputes())
    if as_json:
        print_json([jsonable(view) for view in views])
        return
    if not views:
        console.print("no disputes")
        return
    table = Table("dispute", "role", "provider", "phase", "verdict", "votes")
    for view in views:
        table.add_row(view.dispute_id[:16], view.role, view.provider, view.phase, view.verdict, _votes(view))
    console.print(table)


@app.command("show")
def show(
    dispute_id: Annotated[str, typer.Argument(help="the dispute's id (64 hex digits)")],
    api: ApiOption = None,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """One dispute: its parties, jury, votes so far, deadlines and verdict."""
    view = call_node(api, config, lambda client: client.get_dispute(dispute_id))
    if as_json:
        print_json(jsonable(view))
        return
    console.print(dispute_table(view))


@app.command("open")
def open_dispute(
    job_id: Annotated[str, typer.Argument(help="this node's id of a job it paid for (64 hex digits)")],
    api: ApiOption = None,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Dispute the result of a job this node paid for, posting the court's bond: a staked jury
    re-runs the job; a provider found wrong is slashed, a challenge found frivolous loses the bond."""
    view = call_node(api, config, lambda client: client.open_dispute(job_id))
    if as_json:
        print_json(jsonable(view))
        return
    console.print(dispute_table(view))
    console.print(f"dispute {view.dispute_id} opened; the jury is drawn in a few blocks")


def dispute_table(view: DisputeView) -> Table:
    return key_value_table(
        f"dispute {view.dispute_id}",
        {
            "job": view.job_id,
            "model": view.model_id,
            "provider": view.provider,
            "challenger": view.challenger,
            "this node is": view.role,
            "payment": "escrowed on chain (held)" if view.escrowed else "voucher",
            "phase": view.phase,
            "verdict": view.verdict,
            "jurors": "\n".join(view.jurors) or "-",
            "votes": _votes(view),
            "commit by": _time(view.commit_deadline),
            "reveal by": _time(view.reveal_deadline),
            "disputed output": view.output_hash,
            "under profile": view.profile_hash,
        },
    )


def _votes(view: DisputeView) -> str:
    return f"{view.commits} committed, {view.reveals} revealed of {len(view.jurors)}"


def _time(unix_s: int) -> str:
    return "-" if unix_s == 0 else datetime.fromtimestamp(unix_s, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
