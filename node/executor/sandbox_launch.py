"""Between the node and bwrap: join the sandbox's cgroups, set its rlimits (inherited by bwrap and
all it starts), give up root for good, bind its life to the node's, then exec bwrap.

The node runs this file by path (`python -I -S sandbox_launch.py SPEC -- ARGV…`), with nothing of
the node imported, instead of doing the same in a `preexec_fn`: that would run Python between fork
and exec in a process with threads (gRPC, libp2p, mDNS), which is unsafe and was seen to crash the
child. Spawned without a `preexec_fn`, the launcher is started by vfork and exec alone.

PR_SET_PDEATHSIG: bwrap's own --die-with-parent arms it only once it has parsed its arguments and
cloned the sandbox, so a node killed before then left bwrap and its sandbox running under init.
Armed here, after the uid change (which disarms it) and before exec (which keeps it), it covers
bwrap from its first instruction; a node that died before it was armed is caught by the check
after. What bwrap starts inside is bound to bwrap by bwrap itself, once its mounts are made; a
sandbox orphaned before that is left in the dead node's cgroup, for the next node to kill
(`cgroups.remove_stale_scopes`).
"""

import ctypes
import json
import os
import resource
import signal
import sys

_PR_SET_PDEATHSIG = 1


def main(argv: list[str]) -> None:
    spec = json.loads(argv[1])
    if argv[2] != "--" or len(argv) < 4:
        raise SystemExit("usage: sandbox_launch.py SPEC -- PROGRAM [ARGS…]")
    for path in spec["cgroup_procs"]:
        with open(path, "w") as procs:
            procs.write(str(os.getpid()))
    for which, value in spec["rlimits"]:
        resource.setrlimit(which, (value, value))
    drop_to = spec["drop_to"]
    if drop_to is not None:
        os.setgroups([])
        os.setresgid(drop_to, drop_to, drop_to)
        os.setresuid(drop_to, drop_to, drop_to)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != spec["node_pid"]:
        os.kill(os.getpid(), signal.SIGKILL)
    os.execvp(argv[3], argv[3:])  # noqa: S606 -- the argv the node built for bwrap, no shell


if __name__ == "__main__":
    main(sys.argv)
