"""The worker: runs inside the sandbox, keeps one model loaded, serves batches over its socket.

Started as `python -m node.executor.worker --fd N --model-file NAME=FD ...`: the node opens the
model's files and passes them in, so the sandbox needs no view of the model store. It holds no
key; it never hashes or signs (the node does both outside the sandbox). Model errors go back as
ERROR messages and the worker keeps serving; anything worse ends it.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from typing import Any

_STARTED = time.perf_counter()

import torch  # noqa: E402  (timed: the READY message reports how long the import took)

_TORCH_IMPORTED = time.perf_counter()

from safetensors.torch import load as load_tensors  # noqa: E402
from safetensors.torch import save as save_tensors  # noqa: E402

from node.executor import framing  # noqa: E402
from node.executor.framing import Kind  # noqa: E402

Model = Any  # a callable taking named tensors, returning named tensors
Runner = Any  # a callable taking a batch of job inputs (bytes), returning one output each


def _configure(threads: int, deterministic: bool) -> None:
    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    # torch.use_deterministic_algorithms does exactly this plus importing inductor's config to set
    # its flag too: ~1 s of cold start for a compiler workers never use.
    torch._C._set_deterministic_algorithms(deterministic, warn_only=False)
    torch.set_grad_enabled(False)


def _read_fd(fd: int) -> bytes:
    with os.fdopen(fd, "rb") as f:
        return f.read()


def _load_runner(files: dict[str, int], device: str) -> tuple[Runner, dict[str, Any]]:
    manifest = json.loads(_read_fd(files.pop("manifest.json")))
    blobs = {name: _read_fd(fd) for name, fd in files.items()}
    if manifest["format"] == "huggingface":
        # Built from bytes: transformers is given no path to read, import or unpickle from.
        from node.executor import hf_runtime

        return hf_runtime.load(manifest, blobs, device), manifest
    model = _load_model(manifest, blobs, device)
    batchable = bool(manifest.get("batchable"))
    return _TensorRunner(lambda items: _run_batch(model, items, device, batchable)), manifest


class _TensorRunner:
    """A tensor model's batches: one forward pass each."""

    def __init__(self, run_batch: Any) -> None:
        self._run_batch = run_batch

    def run(self, items: list[bytes]) -> list[bytes]:
        return list(self._run_batch(items))


def _load_model(manifest: dict[str, Any], blobs: dict[str, bytes], device: str) -> Model:
    if manifest["format"] == "builtin":
        from node.executor.builtin_models import build

        module = build(manifest["architecture"], manifest["config"])
        module.load_state_dict(load_tensors(blobs["weights.safetensors"]), strict=True)
        module.eval().to(device)
        return lambda inputs: module(**inputs)
    # Never torch.export.load: it can unpickle, import, eval and exec from the file.
    from node.executor.program_loader import load_program

    names = [spec["name"] for spec in manifest["inputs"]]
    outputs = manifest["outputs"]
    program = load_program(blobs["program.pt2"], inputs=len(names), outputs=len(outputs), device=device)

    def run_exported(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return dict(zip(outputs, program(*(inputs[name] for name in names)), strict=True))

    return run_exported


def _run_batch(model: Model, items: list[bytes], device: str, batchable: bool) -> list[bytes]:
    inputs = [load_tensors(item) for item in items]
    if len(inputs) == 1 or not batchable:
        return [_encode(model(_to(one, device))) for one in inputs]
    rows = [next(iter(one.values())).shape[0] for one in inputs]
    stacked = {name: torch.cat([one[name] for one in inputs]) for name in inputs[0]}
    outputs = model(_to(stacked, device))
    parts = {name: torch.split(tensor, rows) for name, tensor in outputs.items()}
    return [_encode({name: chunks[i] for name, chunks in parts.items()}) for i in range(len(items))]


def _to(tensors: dict[str, torch.Tensor], device: str) -> dict[str, torch.Tensor]:
    if device != "cpu":
        return {k: v.to(device) for k, v in tensors.items()}
    # safetensors places data right after its header, at any 8-byte offset; CPU kernels want the
    # 64-byte alignment torch's allocator gives (a copy, cheap next to the compute it speeds up).
    return {k: v if v.data_ptr() % 64 == 0 else v.clone() for k, v in tensors.items()}


def _encode(outputs: dict[str, torch.Tensor]) -> bytes:
    # No copy beyond what contiguity needs: a batch's split chunks are contiguous slices of it.
    return bytes(save_tensors({name: t.detach().to("cpu").contiguous() for name, t in outputs.items()}))


def _describe(error: BaseException) -> dict[str, str]:
    kind = "out_of_memory" if isinstance(error, MemoryError) or "out of memory" in str(error) else "model"
    if getattr(error, "refused_input", False):  # the request, not the model, is at fault
        kind = "input"
    # Kept well under framing.CONTROL_LIMIT even when JSON escapes every character.
    return {"kind": kind, "type": type(error).__name__[:100], "message": str(error)[:2000]}


def _serve(sock: socket.socket, runner: Runner, args: argparse.Namespace) -> None:
    while True:
        message = framing.recv_blocking(sock, max_body=args.max_body)
        if message is None or message.kind is Kind.SHUTDOWN:
            return
        if message.kind is not Kind.RUN:
            raise framing.FramingError(f"worker got an unexpected {message.kind.name} message")
        try:
            outputs = runner.run(message.items)
        except (framing.FramingError, KeyboardInterrupt):
            raise
        except Exception as error:  # the model's fault, reported to the node; the worker stays warm
            framing.send_blocking(sock, Kind.ERROR, message.request_id, json.dumps(_describe(error)).encode())
            continue
        framing.send_blocking(
            sock, Kind.RESULT, message.request_id, framing.pack_items(outputs), len(outputs)
        )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--model-file", action="append", default=[], metavar="NAME=FD")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--deterministic", action="store_true")
    parser.add_argument("--stream-interval-ms", type=float, default=0.0)
    parser.add_argument("--max-body", type=int, required=True)
    parser.add_argument("--prefill-chunk", type=int, default=512)
    args = parser.parse_args(argv)
    sock = socket.socket(fileno=args.fd)
    _configure(args.threads, args.deterministic)
    files = {name: int(fd) for name, _, fd in (item.partition("=") for item in args.model_file)}
    runner, manifest = _load_runner(files, args.device)
    ready = {
        "torch_version": torch.__version__,
        "device": args.device
        if args.device == "cpu"
        else f"{args.device}:{torch.cuda.get_device_name(args.device)}",
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "torch_import_s": _TORCH_IMPORTED - _STARTED,
        "startup_s": time.perf_counter() - _STARTED,
        "pid_in_sandbox": os.getpid(),
    }
    if manifest["format"] == "huggingface" and manifest["hf"].get("quantization") == "int8":
        from node.executor.hf_runtime import int8_quantizer

        ready["quantizer"] = int8_quantizer(args.device)
    framing.send_blocking(sock, Kind.READY, 0, json.dumps(ready).encode())
    if manifest["format"] == "huggingface" and manifest["hf"]["task"] == "generate":
        from node.executor import hf_batching

        hf_batching.serve(
            sock,
            runner,
            args.max_body,
            _describe,
            prefill_chunk=args.prefill_chunk,
            stream_interval_s=args.stream_interval_ms / 1000,
        )
    else:
        _serve(sock, runner, args)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
