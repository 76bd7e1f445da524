"""Attacker programs, each run inside the pool's own sandbox recipe; each prints a JSON verdict."""

from __future__ import annotations

NETWORK = """
import errno, json, socket
verdict = {}
attempts = {
    "tcp": (socket.AF_INET, socket.SOCK_STREAM, ("127.0.0.1", PORT)),
    "tcp6": (socket.AF_INET6, socket.SOCK_STREAM, ("::1", PORT)),
    "udp": (socket.AF_INET, socket.SOCK_DGRAM, ("127.0.0.1", UDP_PORT)),
    "netlink": (socket.AF_NETLINK, socket.SOCK_RAW, None),
    "packet": (socket.AF_PACKET, socket.SOCK_RAW, None),
}
for name, (family, kind, address) in attempts.items():
    try:
        s = socket.socket(family, kind)
        if kind == socket.SOCK_DGRAM:
            s.sendto(b"leak", address)
        elif address is not None:
            s.connect(address)
        verdict[name] = "escaped"
    except OSError as e:
        verdict[name] = errno.errorcode.get(e.errno, str(e.errno))
try:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(ABSTRACT)
    verdict["abstract_unix"] = "escaped"
except OSError as e:
    verdict["abstract_unix"] = errno.errorcode.get(e.errno, str(e.errno))
print(json.dumps(verdict))
"""

WRITE_OUTSIDE = """
import errno, json, os, sys
verdict = {}
targets = ["/evil", "/usr/evil", "/opt/gpunode/node/evil.py", sys.prefix + "/evil", "/dev/evil", "/proc/evil",
           "/proc/sys/vm/drop_caches", "/proc/sys/kernel/core_pattern", "/proc/sysrq-trigger"]
for path in targets:
    # Opening for writing is the test; nothing is written, so a broken sandbox changes no host setting.
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o644))
        verdict[path] = "escaped"
    except OSError as e:
        verdict[path] = errno.errorcode.get(e.errno, str(e.errno))
with open("/tmp/allowed", "w") as f:
    f.write("scratch space works")
verdict["/tmp/allowed"] = "written"
print(json.dumps(verdict))
"""

READ_HOST = """
import errno, json, os
verdict = {}
targets = ["/root", "/home", "/etc/shadow", "/etc/passwd", "/work/main/pyproject.toml", "STORE", "/var/log"]
for path in targets:
    try:
        listed = os.path.isdir(path) and os.listdir(path)
        verdict[path] = "listed" if listed else open(path, "rb").read(64).hex()
    except OSError as e:
        verdict[path] = errno.errorcode.get(e.errno, str(e.errno))
verdict["proc1_environ"] = open("/proc/1/environ", "rb").read().decode(errors="replace")
verdict["own_environ"] = open("/proc/self/environ", "rb").read().decode(errors="replace")
verdict["processes"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
print(json.dumps(verdict))
"""

KERNEL_SURFACE = """
import ctypes, errno, json, os
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

def attempt(result):
    return "allowed" if result != -1 else errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))

verdict = {
    "ptrace_traceme": attempt(libc.ptrace(0, 0, None, None)),
    "ptrace_attach_pid1": attempt(libc.ptrace(16, 1, None, None)),
    "io_uring_setup": attempt(libc.syscall(425, 8, ctypes.create_string_buffer(120))),
    "unshare_user": attempt(libc.unshare(0x10000000)),
    "unshare_net": attempt(libc.unshare(0x40000000)),
    "clone_newuser": attempt(libc.syscall(56, 0x10000000 | 17, 0, 0, 0, 0)),
    "mount_tmpfs": attempt(libc.mount(b"none", b"/tmp", b"tmpfs", 0, None)),
    "keyctl": attempt(libc.syscall(250, 0, 0, 0, 0, 0)),
    "bpf": attempt(libc.syscall(321, 0, 0, 0)),
    "perf_event_open": attempt(libc.syscall(298, ctypes.create_string_buffer(128), 0, -1, -1, 0)),
}
print(json.dumps(verdict))
"""

FORK_BOMB = """
import errno, json, os, time
forked, failure = 0, None
try:
    while True:
        if os.fork() == 0:
            time.sleep(60)
            os._exit(0)
        forked += 1
except OSError as e:
    failure = errno.errorcode.get(e.errno, str(e.errno))
print(json.dumps({"forked": forked, "error": failure}), flush=True)
"""

EXHAUST_MEMORY = """
import json
chunks, allocated = [], 0
try:
    while True:
        chunks.append(bytearray(32 * 2**20))
        allocated += 32 * 2**20
except MemoryError:
    print(json.dumps({"allocated": allocated, "error": "MemoryError"}))
"""

FILL_DISK = """
import errno, json
verdict = {}
for path in ["/tmp/fill", "/dev/shm/fill"]:
    written = 0
    try:
        with open(path, "wb") as f:
            while True:
                f.write(b"x" * 2**20)
                f.flush()
                written += 2**20
    except OSError as e:
        verdict[path] = {"written": written, "error": errno.errorcode.get(e.errno, str(e.errno))}
print(json.dumps(verdict))
"""

SPIN_CPU = "while True:\n    pass\n"

SLEEP_FOREVER = "import time\ntime.sleep(10**6)\n"

LOAD_POISONED_PROGRAM = """
import io, json, os
import torch
data = os.read(FD, 2**24)
verdict = {}
try:
    torch.export.load(io.BytesIO(data))
    verdict["loaded"] = True
except Exception as e:
    verdict["refused"] = type(e).__name__
verdict["payload_ran"] = os.path.exists("/tmp/pwned")
print(json.dumps(verdict))
"""

LOAD_EXPLOITS = """
import io, json, logging, os, warnings
import torch
from node.executor.program_loader import load_program
logging.disable(logging.CRITICAL)
warnings.simplefilter("ignore")
verdict = {}
for name, fd in FILES.items():
    data = os.pread(fd, 2**24, 0)
    marker = MARKER.format(name)
    entry = {}
    try:
        load_program(data, inputs=1, outputs=1, device="cpu")
        entry["refused"] = None
    except Exception as e:
        entry["refused"] = type(e).__name__
        entry["message"] = str(e)[:300]
    entry["payload_ran"] = os.path.exists(marker)
    try:  # then torch's own loader, to show the file does attack it
        torch.export.load(io.BytesIO(data)).module()(torch.randn(2, 4))
    except Exception:
        pass
    entry["torch_ran_it"] = os.path.exists(marker)
    verdict[name] = entry
print(json.dumps(verdict))
"""

READ_PROC = """
import errno, json
verdict = {}
for path in PATHS:
    try:
        with open(path, "rb") as f:
            data = f.read(4096)
        verdict[path] = "read" if data.strip(b"0 \\n") else "empty"
    except OSError as e:
        verdict[path] = errno.errorcode.get(e.errno, str(e.errno))
print(json.dumps(verdict))
"""
