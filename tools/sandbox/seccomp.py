"""The seccomp filter every sandboxed command runs under, for both backends.

For bubblewrap it is built with libseccomp (through the ``pyseccomp`` ctypes
binding) and handed to ``bwrap --seccomp FD`` as a compiled BPF program; for
Docker the same rules are written as a profile (``--security-opt seccomp=``),
in place of Docker 20.10's default, which allows ``ptrace`` and io_uring (with
``cap-drop ALL`` and ``no-new-privileges`` kept beside it). Default allow; the calls
below fail with EPERM: those that change the kernel or the mount table, trace
or inspect other processes, create new namespaces (a way back to privileges
inside the sandbox), or widen the kernel's attack surface (io_uring runs
file and network operations that the filter never sees). ``clone3`` answers
ENOSYS so that libc falls back to ``clone``, whose flags a filter can see.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile

from tools.sandbox.base import SandboxUnavailable

DENIED = (
    # namespaces and mounts
    "unshare",
    "setns",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "open_tree",
    "move_mount",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    # the kernel itself
    "reboot",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "swapon",
    "swapoff",
    "acct",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "sethostname",
    "setdomainname",
    "syslog",
    "iopl",
    "ioperm",
    "quotactl",
    "lookup_dcookie",
    "vhangup",
    # other processes and kernel introspection
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "kcmp",
    "perf_event_open",
    "bpf",
    "userfaultfd",
    "open_by_handle_at",
    "name_to_handle_at",
    "keyctl",
    "add_key",
    "request_key",
    # a second way into the kernel that seccomp cannot see into, and x86 segment tables
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "modify_ldt",
)

CLONE_NS_FLAGS = (
    0x10000000,  # CLONE_NEWUSER
    0x00020000,  # CLONE_NEWNS
    0x40000000,  # CLONE_NEWNET
    0x20000000,  # CLONE_NEWPID
    0x08000000,  # CLONE_NEWIPC
    0x04000000,  # CLONE_NEWUTS
    0x02000000,  # CLONE_NEWCGROUP
)

_program: bytes | None = None


def program() -> bytes:
    """The compiled BPF program (built once per process)."""
    global _program
    if _program is not None:
        return _program
    try:
        import pyseccomp as sc
    except ImportError as exc:  # pragma: no cover - dependency of the project
        raise SandboxUnavailable("pyseccomp is not installed (pip install pyseccomp)") from exc
    try:
        filt = sc.SyscallFilter(sc.ALLOW)
        for name in DENIED:
            try:
                filt.add_rule(sc.ERRNO(errno.EPERM), name)
            except (ValueError, RuntimeError, OSError):
                continue  # a call this kernel/libseccomp does not know
        for flag in CLONE_NS_FLAGS:
            filt.add_rule(sc.ERRNO(errno.EPERM), "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
        filt.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
        with tempfile.TemporaryFile() as fh:
            filt.export_bpf(fh)
            fh.seek(0)
            _program = fh.read()
    except (OSError, RuntimeError) as exc:
        raise SandboxUnavailable(f"cannot build the seccomp filter (libseccomp): {exc}") from exc
    return _program


def open_filter() -> int:
    """A readable fd with the BPF program, for ``bwrap --seccomp FD`` (the caller closes it)."""
    data = program()
    read_fd, write_fd = os.pipe()
    try:
        os.write(write_fd, data)  # a few hundred bytes: fits the pipe buffer
    finally:
        os.close(write_fd)
    return read_fd


def docker_profile() -> str:
    """The same rules as a Docker seccomp profile (JSON, for ``seccomp=<profile>``)."""
    deny = {"action": "SCMP_ACT_ERRNO", "errnoRet": errno.EPERM}
    rules: list[dict[str, object]] = [{"names": list(DENIED), **deny}]
    rules += [
        {
            "names": ["clone"],
            **deny,
            "args": [{"index": 0, "value": flag, "valueTwo": flag, "op": "SCMP_CMP_MASKED_EQ"}],
        }
        for flag in CLONE_NS_FLAGS
    ]
    rules.append({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.ENOSYS})
    # No "architectures": the native one only, as in the bwrap filter, so a call made
    # through another ABI (int 0x80 on x86-64) is killed instead of escaping the rules.
    profile = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": rules}
    return json.dumps(profile)
