"""`gpunode models`: upload models into a node's store and list what it holds."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

from node.api.client import ApiClient
from node.cli.output import (
    console,
    err_console,
    fetching_providers_table,
    jsonable,
    models_table,
    offered_models_table,
    print_json,
)
from node.cli.remote import ApiOption, ConfigOption, JsonOption, call_node
from node.domain.service import ModelUpload, ModelView
from node.executor.hf_model import is_hf_dir
from node.executor.manifest import TensorSpec

app = typer.Typer(name="models", help="Upload and list the node's models.", no_args_is_help=True)


@app.command("add")
def add(
    path: Annotated[
        Path, typer.Argument(help="a model directory (manifest.json + files) or a torch.export .pt2 file")
    ],
    name: Annotated[str | None, typer.Option(help="name of a .pt2 model (default: the file's stem)")] = None,
    input_spec: Annotated[
        list[str] | None,
        typer.Option(
            "--input", help="a .pt2 model's input as name:dtype:shape (default: read from the program)"
        ),
    ] = None,
    output: Annotated[
        list[str] | None, typer.Option("--output", help="a .pt2 model's output name (default: output)")
    ] = None,
    batchable: Annotated[bool, typer.Option(help="a .pt2 model takes a batch along dim 0")] = False,
    quantization: Annotated[
        str | None,
        typer.Option(
            help="int8: add a Hugging Face model's variant quantized at load (its own id and price)"
        ),
    ] = None,
    api: ApiOption = None,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Upload a model to the node; every file is checked by size and sha256 on arrival."""
    upload = None if path.is_dir() else _program_upload(path, name, input_spec or [], output or [], batchable)
    if quantization is not None and (quantization != "int8" or not is_hf_dir(path)):
        raise _usage("--quantization int8 applies to a Hugging Face model directory")

    async def work(client: ApiClient) -> ModelView:
        with Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=err_console,
            disable=as_json,
            transient=True,
        ) as progress:
            task = progress.add_task(f"uploading {path.name}", total=None)

            def advance(sent: int, total: int) -> None:
                progress.update(task, completed=sent, total=total)

            if upload is None:
                return await client.upload_model_dir(
                    path, progress=advance, quantization="int8" if quantization else None
                )
            return await client.upload_program(path, upload, progress=advance)

    model = call_node(api, config, work)
    if as_json:
        print_json(jsonable(model))
    else:
        console.print(f"model [bold]{model.name}[/] installed as {model.model_id}", soft_wrap=True)


@app.command("remove")
def remove(
    model_id: Annotated[str, typer.Argument(help="the model's id (see `gpunode models list`)")],
    keep_files: Annotated[
        bool, typer.Option(help="only stop offering it; it is offered again after a restart")
    ] = False,
    api: ApiOption = None,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Stop offering a model (a running provider's advert drops it at once) and delete it."""
    model = call_node(api, config, lambda client: client.remove_model(model_id, delete_files=not keep_files))
    if as_json:
        print_json(jsonable(model))
    else:
        done = "no longer offered" if keep_files else "removed"
        console.print(f"model [bold]{model.name}[/] ({model.model_id}) {done}", soft_wrap=True)


@app.command("list")
def list_models(api: ApiOption = None, as_json: JsonOption = False, config: ConfigOption = None) -> None:
    """List the models in the node's store."""
    models = call_node(api, config, lambda client: client.list_models())
    if as_json:
        print_json({"models": jsonable(models)})
    elif models:
        console.print(models_table(models))
    else:
        console.print("no models; add one with `gpunode models add`")


@app.command("available")
def available(api: ApiOption = None, as_json: JsonOption = False, config: ConfigOption = None) -> None:
    """The models providers offer on the network, with their prices and devices, and the providers
    that fetch models they lack, with their size limit and cold-start price (a running node's view)."""
    peers = call_node(api, config, lambda client: client.peers())
    offering = [p for p in peers if p.provider]
    if as_json:
        print_json({"providers": jsonable(offering)})
        return
    if any(p.models for p in offering):
        console.print(offered_models_table(offering))
    else:
        console.print("no provider offers a model yet; `gpunode node peers` shows who this node knows")
    if any(p.fetch for p in offering):
        console.print(fetching_providers_table(offering))


def _program_upload(
    path: Path, name: str | None, inputs: list[str], outputs: list[str], batchable: bool
) -> ModelUpload:
    if path.suffix != ".pt2":
        raise _usage(f"{path} is neither a model directory nor a .pt2 file")
    # Inputs and outputs left out are read from the program by the node, which also refuses
    # declared ones that disagree with it.
    return ModelUpload(
        name=name or path.stem,
        inputs=tuple(parse_tensor_spec(text) for text in inputs),
        outputs=tuple(outputs),
        batchable=batchable,
    )


def parse_tensor_spec(text: str) -> TensorSpec:
    """`name:dtype:shape`, the shape comma-separated with `*` (or -1) for a free dimension."""
    parts = text.split(":")
    if len(parts) != 3:
        raise _usage(f"input {text!r} is not name:dtype:shape (e.g. input:F32:*,64)")
    name, dtype, shape_text = parts
    try:
        shape = tuple(
            None if d.strip() in ("*", "-1") else int(d) for d in shape_text.split(",") if d.strip()
        )
        return TensorSpec(name=name, dtype=dtype.upper(), shape=shape)
    except ValueError as exc:
        reason = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
        raise _usage(f"input {text!r}: {reason}") from exc


def _usage(message: str) -> typer.BadParameter:
    return typer.BadParameter(message)
