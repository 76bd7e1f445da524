"""The seccomp policy every sandboxed process runs under, compiled to BPF for `bwrap --seccomp`.

Default allow (torch needs a broad syscall surface), with the kernel's attack surface and every
way out of the sandbox denied: sockets other than AF_UNIX, ptrace, io_uring, namespaces, mounts,
keyrings, BPF, perf, module loading. clone3 gets ENOSYS because its flags live in memory a filter
cannot read; libc then falls back to clone, whose flags it can.
"""

from __future__ import annotations

import errno
import functools
import os
import socket
import tempfile

import pyseccomp

from node.executor.errors import SandboxUnavailable

DENIED = (
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "unshare",
    "setns",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    "keyctl",
    "add_key",
    "request_key",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "open_by_handle_at",
    "name_to_handle_at",
    "swapon",
    "swapoff",
    "reboot",
    "syslog",
    "acct",
    "quotactl",
    "lookup_dcookie",
    "fanotify_init",
    "personality",
    "uselib",
    "vhangup",
    "iopl",
    "ioperm",
)
# Every CLONE_NEW* flag: CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET, NEWTIME.
CLONE_NAMESPACE_FLAGS = (
    0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000 | 0x00000080
)


@functools.cache
def seccomp_bpf() -> bytes:
    """The compiled filter (cached: it is the same for every worker)."""
    try:
        policy = pyseccomp.SyscallFilter(pyseccomp.ALLOW)
        for name in DENIED:
            policy.add_rule(pyseccomp.ERRNO(errno.EPERM), name)
        for call in ("socket", "socketpair"):
            policy.add_rule(
                pyseccomp.ERRNO(errno.EAFNOSUPPORT), call, pyseccomp.Arg(0, pyseccomp.NE, socket.AF_UNIX)
            )
        _deny_namespace_clones(policy)
        policy.add_rule(pyseccomp.ERRNO(errno.ENOSYS), "clone3")
        with tempfile.TemporaryFile() as out:
            policy.export_bpf(out)
            out.seek(0)
            return out.read()
    except OSError as exc:
        raise SandboxUnavailable(
            f"could not build the seccomp filter: {exc}",
            hint="install libseccomp2 (apt-get install libseccomp2)",
        ) from exc


def _deny_namespace_clones(policy: pyseccomp.SyscallFilter) -> None:
    # One rule per flag: libseccomp's MASKED_EQ tests (arg & mask) == value, so "any namespace flag
    # set" is the union of "this flag set" for each flag.
    for bit in range(32):
        flag = 1 << bit
        if CLONE_NAMESPACE_FLAGS & flag:
            policy.add_rule(
                pyseccomp.ERRNO(errno.EPERM), "clone", pyseccomp.Arg(0, pyseccomp.MASKED_EQ, flag, flag)
            )


def seccomp_fd() -> int:
    """A fresh readable fd holding the BPF program, for one `bwrap --seccomp FD` (bwrap reads it)."""
    fd = os.memfd_create("gpunode-seccomp", 0)
    os.write(fd, seccomp_bpf())
    os.lseek(fd, 0, os.SEEK_SET)
    return fd
