"""What a hostile client or worker costs the node, in figures (printed, never asserted).

    PYTHONPATH=$PWD .venv/bin/python scripts/measure_executor_abuse.py

- event-loop stall while the node checks a job input whose safetensors header is 64 MiB;
- node RSS growth from one ERROR frame: a 16-byte header and a sparse, sealed 1 GiB memfd, decoded
  under the body cap a pool with default settings gives its channel.

Run with PYTHONPATH pointing at an older checkout to see the figures before a change.
"""

from __future__ import annotations

import asyncio
import fcntl
import importlib
import json
import os
import struct
import time

from node.config import ExecutorSettings
from node.executor import framing
from node.executor.errors import InvalidInput
from node.executor.wire import parse_payload

_SEALS = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


async def huge_header_stall_s() -> tuple[float, str]:
    """The longest gap between 1 ms ticks of the event loop while the input is admitted as the
    pool admits it (in a thread when the input is large, where that is done)."""
    pad = b"0," * (32 * 2**20) + b"0"  # 64 MiB of small numbers: the costliest JSON to parse
    header = b'{"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "p": [' + pad + b"]}"
    data = struct.pack("<Q", len(header)) + header + bytes(4)
    settings = ExecutorSettings()
    worst, stop = 0.0, False

    async def ticker() -> None:
        nonlocal worst
        last = time.perf_counter()
        while not stop:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            worst, last = max(worst, now - last), now

    admit = getattr(importlib.import_module("node.executor.pool"), "_off_loop_if_large", None)
    ticks = asyncio.ensure_future(ticker())
    await asyncio.sleep(0.01)
    verdict = "accepted"
    try:
        if admit is None:  # an older node: parsed on the loop
            parse_payload(data, max_bytes=settings.max_input_bytes + len(data))
        else:
            await admit(data, parse_payload, data, max_bytes=settings.max_input_bytes + len(data))
    except InvalidInput as exc:
        verdict = exc.message
    except Exception as exc:  # an older node raised the wrong error: shown as is
        verdict = f"{type(exc).__name__}: {exc}"
    await asyncio.sleep(0.01)
    stop = True
    await ticks
    return worst, verdict[:100]


def huge_control_frame_rss_mib() -> tuple[float, str]:
    settings = ExecutorSettings()
    size = 2**30
    fd = os.memfd_create("hostile", os.MFD_ALLOW_SEALING)
    os.ftruncate(fd, size)
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
    packet = framing.HEADER.pack(framing.Kind.ERROR, framing.FLAG_MEMFD, 0, 1, size)
    before = _rss_mib()
    try:
        message = framing.decode(
            packet, [fd], max_body=settings.max_output_bytes * settings.max_batch + 2**20
        )
        grown = _rss_mib() - before
        del message
        return grown, "read whole"
    except framing.FramingError as exc:
        return _rss_mib() - before, str(exc)


def main() -> None:
    stall, verdict = asyncio.run(huge_header_stall_s())
    grown, outcome = huge_control_frame_rss_mib()
    print(
        json.dumps(
            {
                "huge_header_event_loop_stall_ms": round(stall * 1000, 1),
                "huge_header_verdict": verdict,
                "huge_error_frame_rss_growth_mib": round(grown, 1),
                "huge_error_frame_verdict": outcome,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
