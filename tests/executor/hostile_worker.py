"""A compromised worker: a real process started the way the pool starts workers (same sandbox
recipe, same socket and fds), speaking the framing protocol with crafted frames.

`HostileSandbox` wraps a real sandbox and swaps the worker module for `SCRIPT`, which reads what
to do from `GPUNODE_HOSTILE`. Where a behaviour needs no lie it answers like an honest MLP worker
(zeros of the right shape), so a test can tell the lie from everything around it.
"""

from __future__ import annotations

import dataclasses
import sys

from node.executor.sandbox import Sandbox, SandboxedProcess, SandboxSpec

SCRIPT = r"""
import errno, fcntl, json, os, resource, signal, socket, struct, sys, time
from node.executor import framing
from node.executor.framing import Kind

sock = socket.socket(fileno=int(sys.argv[sys.argv.index("--fd") + 1]))
behaviour = os.environ["GPUNODE_HOSTILE"]
READY = {"torch_version": "2.13.0", "device": "cpu", "cpu_capability": "AVX2", "threads": 1,
         "interop_threads": 1, "deterministic": True, "torch_import_s": 0.0}
BAD_READY = {
    "ready_not_json": b"{not json",
    "ready_not_object": b"[1, 2]",
    "ready_missing_fields": b"{}",
    "ready_bad_number": json.dumps({**READY, "threads": "many"}).encode(),
    "ready_infinite": json.dumps({**READY, "torch_import_s": 1e999}).encode(),
    "ready_nested": b"[" * 30000,
}

def header(kind, flags, count, request_id, length):
    return framing.HEADER.pack(kind, flags, count, request_id, length)

def output_for(item):
    length = struct.unpack_from("<Q", item)[0]
    rows = json.loads(item[8:8 + length])["input"]["shape"][0]
    head = json.dumps({"output": {"dtype": "F32", "shape": [rows, 16], "data_offsets": [0, rows * 64]}})
    head = head.encode() + b" " * (-len(head) % 8)
    return struct.pack("<Q", len(head)) + head + bytes(rows * 64)

def biggest_memfd(seal=True):
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    size = min(8 * 2**30, resource.getrlimit(resource.RLIMIT_FSIZE)[0])
    fd = os.memfd_create("x", os.MFD_ALLOW_SEALING)
    os.ftruncate(fd, size)  # sparse: costs this worker nothing
    if seal:
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, framing._SEALS)
    return fd, size

def send_items_via(fd, items, request_id):
    body = b"".join(framing.pack_items(items))
    os.write(fd, body)
    socket.send_fds(sock, [header(Kind.RESULT, framing.FLAG_MEMFD, len(items), request_id, len(body))], [fd])

if behaviour in BAD_READY:
    sock.sendall(header(Kind.READY, 0, 0, 0, len(BAD_READY[behaviour])) + BAD_READY[behaviour])
    time.sleep(3600)
if behaviour == "stderr_flood":
    chunk = b"flood " * 10000
    for _ in range(25):
        os.write(2, chunk)
    sys.exit(3)
framing.send_blocking(sock, Kind.READY, 0, json.dumps(READY).encode())
if behaviour == "exit_after_ready":
    sys.exit(0)
if behaviour == "deaf":  # never reads its socket again, so never learns that the node is gone
    time.sleep(3600)
if behaviour == "stderr_flood_forever":
    chunk = b"x" * 65536
    while True:
        os.write(2, chunk)
while True:
    message = framing.recv_blocking(sock, max_body=2**30)
    if message is None or message.kind is Kind.SHUTDOWN:
        sys.exit(0)
    rid, items = message.request_id, message.items
    if behaviour.startswith("gen_"):  # a generation model's worker: one request per RUN
        if message.kind is Kind.CANCEL:
            continue
        done = json.dumps({"text": "", "token_ids": [], "finish_reason": "length", "prompt_tokens": 1,
                           "completion_tokens": 0}).encode()
        if behaviour == "gen_wrong_id":  # streams for a request that is not in flight
            framing.send_blocking(sock, Kind.TOKENS, rid + 7, json.dumps({"index": 0, "text": "x"}).encode())
        elif behaviour == "gen_answer_twice":
            framing.send_blocking(sock, Kind.RESULT, rid, framing.pack_items([done]), 1)
            framing.send_blocking(sock, Kind.RESULT, rid, framing.pack_items([done]), 1)
        elif behaviour == "gen_token_flood":  # more text than any output may hold
            body = json.dumps({"index": 0, "text": "x" * 4000}).encode()
            for _ in range(2000):
                framing.send_blocking(sock, Kind.TOKENS, rid, body)
        continue
    outputs = [output_for(item) for item in items]
    if behaviour == "slow":  # an honest model that takes a second per batch
        time.sleep(1.0)
    if behaviour in ("honest", "slow"):
        framing.send_blocking(sock, Kind.RESULT, rid, framing.pack_items(outputs), len(outputs))
    elif behaviour in ("tokens_wrong_id", "tokens_bad_index", "tokens_not_json"):
        body = {
            "tokens_wrong_id": json.dumps({"index": 0, "text": "x"}).encode(),
            "tokens_bad_index": json.dumps({"index": len(items), "text": "x"}).encode(),
            "tokens_not_json": b"\xff{",
        }[behaviour]
        streamed_for = rid + 1 if behaviour == "tokens_wrong_id" else rid
        framing.send_blocking(sock, Kind.TOKENS, streamed_for, body)
        framing.send_blocking(sock, Kind.RESULT, rid, framing.pack_items(outputs), len(outputs))
    elif behaviour == "wrong_id":
        framing.send_blocking(sock, Kind.RESULT, rid + 1, framing.pack_items(outputs), len(outputs))
    elif behaviour == "wrong_kind":
        framing.send_blocking(sock, Kind.RUN, rid, framing.pack_items(outputs), len(outputs))
    elif behaviour == "wrong_count":
        framing.send_blocking(sock, Kind.RESULT, rid, framing.pack_items(outputs + outputs), 2 * len(outputs))
    elif behaviour == "huge_error":
        fd, size = biggest_memfd()
        socket.send_fds(sock, [header(Kind.ERROR, framing.FLAG_MEMFD, 0, rid, size)], [fd])
    elif behaviour == "huge_result":
        fd, size = biggest_memfd(seal=False)
        os.pwrite(fd, struct.pack("<Q", size - 8), 0)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, framing._SEALS)
        socket.send_fds(sock, [header(Kind.RESULT, framing.FLAG_MEMFD, 1, rid, size)], [fd])
    elif behaviour == "unsealed_memfd":
        send_items_via(os.memfd_create("x"), outputs + [bytes(2**17)], rid)
    elif behaviour == "tmp_file":
        send_items_via(os.open("/tmp/body", os.O_RDWR | os.O_CREAT), outputs + [bytes(2**17)], rid)
    elif behaviour == "bad_error_body":
        framing.send_blocking(sock, Kind.ERROR, rid, b"[1]")
    elif behaviour == "fail_marked":
        if any(b"marked" in item for item in items):
            error = {"type": "ValueError", "message": "marked input"}
            framing.send_blocking(sock, Kind.ERROR, rid, json.dumps(error).encode())
        else:
            framing.send_blocking(sock, Kind.RESULT, rid, framing.pack_items(outputs), len(outputs))
    elif behaviour == "silent":
        continue
    elif behaviour == "leak_then_crash":  # one job's input, told to the next job's error
        if b"secret" in items[0]:
            framing.send_blocking(sock, Kind.RESULT, rid, framing.pack_items(outputs), len(outputs))
            seen = items[0]
        else:
            os.write(2, b"previous input: " + seen)
            sys.exit(1)
"""


class HostileSandbox(Sandbox):
    """The real recipe of `base`, running `SCRIPT` as `behaviour` in place of the worker module."""

    def __init__(self, base: Sandbox, behaviour: str) -> None:
        super().__init__(base.mode, uid_base=base.uid_base, cgroups=base.cgroups)
        self.behaviour = behaviour
        self.spawned: list[SandboxedProcess] = []

    async def spawn(self, spec: SandboxSpec, **popen: object) -> SandboxedProcess:
        worker_args = spec.argv[spec.argv.index("node.executor.worker") + 1 :]
        spec = dataclasses.replace(
            spec,
            argv=[sys.executable, "-B", "-s", "-c", SCRIPT, *worker_args],
            env={**spec.env, "GPUNODE_HOSTILE": self.behaviour},
        )
        proc = await super().spawn(spec, **popen)
        self.spawned.append(proc)
        return proc
