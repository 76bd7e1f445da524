"""`gpunode job`: submit, watch, get, list and cancel jobs through a running node."""

from __future__ import annotations

import asyncio
import dataclasses
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from node.api.client import ApiClient
from node.api.errors import InvalidRequest
from node.cli.output import (
    console,
    err_console,
    fail,
    format_time,
    format_wei_exact,
    job_json,
    job_table,
    jobs_table,
    jsonable,
    print_json,
    styled_state,
    verification_table,
)
from node.cli.remote import ApiOption, ConfigOption, JsonOption, call_node
from node.domain.service import JobFilter, JobSpec, JobView
from node.domain.state import JobState, PaymentPath, Role
from node.errors import JobError
from node.executor.errors import InvalidInput
from node.executor.hf_requests import parse_generation
from node.types import Address

app = typer.Typer(name="job", help="Submit and follow inference jobs.", no_args_is_help=True)

JobIdArgument = Annotated[str, typer.Argument(help="the job's id (64 hex digits)")]
OutOption = Annotated[
    Path | None, typer.Option("--out", help="write the output (safetensors bytes) to this file")
]
_FAILED = (JobState.FAILED, JobState.CANCELLED, JobState.REFUNDED)
# `submit --wait` gives up this long after the job's own timeout.
WAIT_GRACE_S = 10.0
# A submit that takes longer than this says what the node may be waiting for.
SUBMIT_NOTICE_S = 1.0
# The façade's own defaults, so the CLI never drifts from what the SDK gets.
_SPEC_DEFAULTS: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(JobSpec)}


@app.command("submit")
def submit(
    model_id: Annotated[str, typer.Argument(help="the model id (64 hex digits; `gpunode models list`)")],
    input_file: Annotated[
        Path,
        typer.Argument(
            help="input tensors as a safetensors file, or a JSON request for a Hugging Face model "
            '(e.g. {"prompt": "Hi", "max_tokens": 32}); - for stdin'
        ),
    ],
    payment: Annotated[PaymentPath, typer.Option(help="pay by voucher or by on-chain escrow")] = (
        PaymentPath.VOUCHER
    ),
    max_price: Annotated[
        int, typer.Option("--max-price", help="the most to pay, in wei", min=0)
    ] = _SPEC_DEFAULTS["max_price_wei"],
    timeout: Annotated[
        float, typer.Option(help="seconds the job may take end to end", min=0.001)
    ] = _SPEC_DEFAULTS["timeout_s"],
    provider: Annotated[str | None, typer.Option(help="pin the job to this provider's address")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="follow the job until it finishes")] = False,
    stream: Annotated[
        bool, typer.Option("--stream", help="print a generation's text as it is produced (implies --wait)")
    ] = False,
    precision: Annotated[
        str | None,
        typer.Option(
            help="run the model's variant offered in this precision (int8, fp32 …; `models available`)"
        ),
    ] = None,
    out: OutOption = None,
    api: ApiOption = None,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Submit a job; with --wait, follow it to the end and save its output with --out."""
    data = _read_input(input_file)
    spec = JobSpec(
        model_id=model_id,
        input=data,
        payment=payment,
        max_price_wei=max_price,
        timeout_s=timeout,
        provider=Address(provider) if provider else None,
        stream=stream,
        precision=precision,
    )

    async def work(client: ApiClient) -> JobView:
        job = await _submit(client, spec, quiet=as_json)
        if not wait and not stream:
            return job
        if not as_json:
            err_console.print(f"submitted job [bold]{job.job_id}[/]")
        if stream:
            return await _stream(client, job.job_id, as_json=as_json)
        try:
            async with asyncio.timeout(timeout + WAIT_GRACE_S):
                # Done once the result is verified: an escrowed job's settlement (after the
                # challenge window) goes on in the node.
                last = await _follow(client, job.job_id, as_json=as_json, lines=as_json, until_result=True)
        except TimeoutError:
            raise JobError(
                f"job {job.job_id} did not finish within {timeout:g} s",
                hint=f"`gpunode job watch {job.job_id}` follows it further",
            ) from None
        return await client.get_job(job.job_id) if _has_result(last) else last

    job = call_node(api, config, work)
    _finish(job, out=out, as_json=as_json, waited=wait or stream, streamed=stream)


async def _submit(client: ApiClient, spec: JobSpec, *, quiet: bool) -> JobView:
    """Submit; when the node takes a while to answer, tell a person at a terminal what it may be
    waiting for (scripts get the reason in the error, if it fails)."""
    submitting = asyncio.ensure_future(client.submit_job(spec))
    done, _ = await asyncio.wait({submitting}, timeout=SUBMIT_NOTICE_S)
    if not done and not quiet and err_console.is_terminal:
        err_console.print(
            f"waiting for a provider of model {spec.model_id}: a node that has just started listens "
            f"for providers' adverts for up to client.discovery_wait_s (within --timeout {spec.timeout_s:g})",
            soft_wrap=True,
            highlight=False,
        )
    return await submitting


@app.command("watch")
def watch(
    job_id: JobIdArgument,
    out: OutOption = None,
    api: ApiOption = None,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Follow a job live until it finishes (--json: one JSON object per update)."""
    job = call_node(api, config, lambda client: _follow(client, job_id, as_json=as_json, lines=True))
    _finish(job, out=out, as_json=as_json, waited=True, printed=as_json)


@app.command("get")
def get(
    job_id: JobIdArgument,
    out: OutOption = None,
    api: ApiOption = None,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Show one job: state, attempts, receipt; --out saves its output."""
    job = call_node(api, config, lambda client: client.get_job(job_id))
    _finish(job, out=out, as_json=as_json, waited=False)


@app.command("list")
def list_jobs(
    state: Annotated[list[JobState] | None, typer.Option(help="only jobs in this state (repeatable)")] = None,
    role: Annotated[Role | None, typer.Option(help="only jobs this node submitted (client) or ran")] = None,
    limit: Annotated[int, typer.Option(help="at most this many", min=1, max=1000)] = 50,
    offset: Annotated[int, typer.Option(help="skip this many first", min=0)] = 0,
    api: ApiOption = None,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """List jobs, most recently moved first."""
    query = JobFilter(role=role, states=tuple(state or ()), limit=limit, offset=offset)
    jobs = call_node(api, config, lambda client: client.list_jobs(query))
    if as_json:
        print_json({"jobs": [job_json(j) for j in jobs]})
    elif jobs:
        console.print(jobs_table(jobs))
    else:
        console.print("no jobs")


@app.command("cancel")
def cancel(
    job_id: JobIdArgument,
    api: ApiOption = None,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Cancel a job that has not been paid for yet."""
    job = call_node(api, config, lambda client: client.cancel_job(job_id))
    if as_json:
        print_json(job_json(job))
    else:
        console.print(f"job {job.job_id} is {styled_state(job.state.value)}")


@app.command("verify")
def verify(
    job_id: JobIdArgument,
    api: ApiOption = None,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Re-run a verified job now on another provider (a new paid job) and compare the results;
    a mismatch goes to a third provider, and the one proven wrong is excluded by this node."""
    view = call_node(api, config, lambda client: client.verify_job(job_id))
    if as_json:
        print_json(jsonable(view))
        return
    console.print(verification_table(view))
    console.print(f"{view.verdict}: {view.why}")
    if view.loser is not None:
        console.print(f"provider {view.loser} is excluded by this node from now on")


def deposit(
    amount: Annotated[int, typer.Argument(help="wei to add to the node's voucher deposit", min=1)],
    api: ApiOption = None,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Add to the node's voucher deposit in the JobMarket (vouchers for jobs are paid out of it)."""
    balance = call_node(api, config, lambda client: client.deposit(amount))
    if as_json:
        print_json({"deposited_wei": amount, "balance_wei": balance})
    else:
        console.print(f"deposited {format_wei_exact(amount)}; the deposit holds {format_wei_exact(balance)}")


def register(root: typer.Typer) -> None:
    """Add `gpunode job …` and the top-level `gpunode deposit` to the root command."""
    root.add_typer(app)
    root.command("deposit")(deposit)


def _read_input(path: Path) -> bytes:
    if str(path) == "-":
        return sys.stdin.buffer.read()
    try:
        return path.read_bytes()
    except OSError as exc:
        fail(f"cannot read the input {path}: {exc.strerror}")
        raise typer.Exit(code=1) from None


async def _stream(client: ApiClient, job_id: str, *, as_json: bool) -> JobView:
    """Print the job's text to stdout as it comes (--json: one {"text": …} line a piece), then
    follow the job to its end; the text of the signed output is printed if none streamed."""
    printed = False
    async for piece in client.follow_job_text(job_id):
        if as_json:
            print_json({"text": piece})
        else:
            sys.stdout.write(piece)
            sys.stdout.flush()
        printed = True
    job = await _follow(client, job_id, as_json=True, lines=False)
    text = _generated_text(job.output) if not printed and job.output is not None else None
    if text and as_json:
        print_json({"text": text})
    elif text:
        sys.stdout.write(text)
    if not as_json:
        sys.stdout.write("\n")
    return job


def _generated_text(output: bytes) -> str | None:
    try:
        return parse_generation(output).text
    except InvalidInput:
        return None


async def _follow(
    client: ApiClient, job_id: str, *, as_json: bool, lines: bool, until_result: bool = False
) -> JobView:
    """Follow a job to its end (with `until_result`, to its verified result): JSON lines (one per
    update on watch, one per state change on submit), or a live status line on stderr."""
    last: JobView | None = None
    if as_json:
        async for update in client.watch_job(job_id, omit_output=True):
            final = update.terminal or (until_result and _has_result(update))
            if not until_result and lines:
                print_json(job_json(update))
            elif until_result and lines and not final and (last is None or update.state is not last.state):
                # One line per state; the last one, with the output's details, comes from the caller.
                print_json(job_json(update))
            last = update
            if until_result and _has_result(update):
                break
    else:
        with err_console.status(f"job {job_id[:12]}… waiting") as status:
            async for update in client.watch_job(job_id, omit_output=True):
                if last is None or update.state is not last.state:
                    err_console.print(
                        f"{format_time(update.updated_at)}  {styled_state(update.state.value)}"
                        + (f"  provider {update.provider}" if update.provider else "")
                    )
                status.update(f"job {job_id[:12]}… {update.state.value}")
                last = update
                if until_result and _has_result(update):
                    break
    if last is None:
        raise InvalidRequest(f"the node sent no update for job {job_id}")
    return last


def _has_result(job: JobView) -> bool:
    """The job holds its verified output, and all that is left is the chain's challenge window
    (escrow); a voucher job settles in the same step, so it is followed to settled."""
    return job.state == JobState.SETTLED or (
        job.state == JobState.VERIFIED and job.payment == PaymentPath.ESCROW
    )


def _finish(
    job: JobView,
    *,
    out: Path | None,
    as_json: bool,
    waited: bool,
    printed: bool = False,
    streamed: bool = False,
) -> None:
    failed = waited and job.state in _FAILED
    if failed and not as_json:
        # The cause first: it is what the user came for when a job fails.
        fail(f"job {job.job_id} ended {job.state.value}" + (f": {job.error}" if job.error else ""))
    if out is not None and not failed:
        if job.output is None:
            fail(f"job {job.job_id} has no output ({job.state.value})")
            raise typer.Exit(code=1)
        out.write_bytes(job.output)
    if as_json and not printed:
        print_json(job_json(job))
    elif not as_json:
        # After streamed text, stdout holds the text alone: the job's table goes to stderr.
        shown = err_console if streamed else console
        shown.print(job_table(job))
        if out is not None:
            shown.print(f"output written to {out}")
    if failed:
        raise typer.Exit(code=1)
