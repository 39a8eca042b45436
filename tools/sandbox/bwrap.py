"""The ``bwrap`` backend (default): bubblewrap namespaces + cgroup v1 limits + seccomp.

Each ``exec`` is a fresh ``bwrap`` with: every namespace unshared (no network
at all, own pid namespace whose init dies with the command so that nothing
outlives the call, own mount namespace), ``/usr`` read-only and nothing else of
the host but a few harmless ``/etc`` files, the workspace read-write at
``/workspace``, a private ``/tmp``, a seccomp filter, no capabilities, no
further user namespaces, and ``--die-with-parent``.

As root the command runs as an unprivileged user (65534 by default) inside
cgroup v1 groups that cap its memory, processes and CPU: the supervisor shell
writes its pid into the groups, drops to that user with ``setpriv`` and execs
bwrap, so nothing is forked before the limits apply. Not as root it runs as
the calling user with rlimits (``prlimit``): RLIMIT_AS for memory, and
RLIMIT_NPROC, which counts all of that user's processes (coarser).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import shutil
import signal
from collections.abc import Mapping, Sequence
from pathlib import Path

import tools.sandbox.cgroup as cgroup
import tools.sandbox.seccomp as seccomp
from tools.sandbox.base import (
    WORKDIR,
    ExecResult,
    Limits,
    Sandbox,
    SandboxBackend,
    SandboxError,
    SandboxUnavailable,
    as_bytes,
    default_env,
)
from tools.sandbox.supervise import supervise
from tools.sandbox.workspace import Workspace, sweep_workspaces

SANDBOX_UID = 65534
#: host /etc entries a dynamically linked program may need; nothing secret
ETC_FILES = (
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/alternatives",
    "/etc/localtime",
    "/etc/ssl/certs",
    "/etc/mime.types",
)
ENTER = (
    'for f in "$@"; do [ "$f" = -- ] && break; echo $$ > "$f" || exit 125; shift; done; '
    'shift; exec "$@"'
)
OOM_HINTS = (b"MemoryError", b"Cannot allocate memory", b"out of memory")


def require_host() -> str:
    """The path of ``bwrap`` once every host tool the backend needs is there (bubblewrap;
    setpriv as root; prlimit; libseccomp's filter, built now rather than on the first
    call); else SandboxUnavailable with the fix. Cheap: the CLI calls it before it
    starts anything."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise SandboxUnavailable(
            "bubblewrap (bwrap) is not installed: run `bash infra/install.sh` as root "
            "(or `apt-get install bubblewrap`), or choose another sandbox with --sandbox"
        )
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        raise SandboxUnavailable("setpriv (util-linux) is needed to drop root for bwrap")
    if shutil.which("prlimit") is None:
        raise SandboxUnavailable("prlimit (util-linux) is needed for the sandbox's rlimits")
    seccomp.program()
    return bwrap


class BwrapBackend(SandboxBackend):
    name = "bwrap"

    def __init__(
        self,
        limits: Limits | None = None,
        *,
        sandbox_uid: int = SANDBOX_UID,
        use_cgroups: bool | None = None,
    ) -> None:
        super().__init__(limits)
        self.bwrap = require_host()
        self.privileged = os.geteuid() == 0
        self.uid = sandbox_uid if self.privileged else os.getuid()
        self.gid = sandbox_uid if self.privileged else os.getgid()
        self.wrapper: list[str] = []
        if self.privileged:
            setpriv = str(shutil.which("setpriv"))  # require_host checked it
            self.wrapper = [setpriv, f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups"]
        self.cgroups = cgroup.available() if use_cgroups is None else use_cgroups
        if self.cgroups and not self.privileged:
            raise SandboxUnavailable("cgroup limits need root")
        sweep_workspaces()
        if self.cgroups:
            cgroup.sweep()

    @property
    def limit_mode(self) -> str:
        return "cgroup-v1" if self.cgroups else "rlimit"

    async def open(self, task_id: str, limits: Limits | None = None) -> BwrapSandbox:
        limits = limits or self.limits
        return await asyncio.to_thread(self._open, task_id, limits)

    def _open(self, task_id: str, limits: Limits) -> BwrapSandbox:
        ws = Workspace.create(task_id, (self.uid, self.gid), limits.disk_bytes)
        try:
            group = (
                cgroup.CgroupV1(f"{os.getpid()}-{ws.sandbox_id}", limits) if self.cgroups else None
            )
        except BaseException:
            ws.remove()
            raise
        return BwrapSandbox(self, task_id, ws, limits, group)

    @functools.cached_property
    def etc_files(self) -> dict[str, bytes]:
        """The sandbox's own /etc/passwd, group and hosts (its user, no one else)."""
        return {
            "passwd": (
                f"root:x:0:0:root:/root:/usr/sbin/nologin\n"
                f"sandbox:x:{self.uid}:{self.gid}:sandbox:{WORKDIR}:/bin/sh\n"
            ).encode(),
            "group": f"root:x:0:\nsandbox:x:{self.gid}:\n".encode(),
            "hosts": b"127.0.0.1 localhost sandbox\n::1 localhost\n",
        }


class BwrapSandbox(Sandbox):
    backend_name = "bwrap"

    def __init__(
        self,
        backend: BwrapBackend,
        task_id: str,
        ws: Workspace,
        limits: Limits,
        group: cgroup.CgroupV1 | None,
    ) -> None:
        super().__init__(task_id, ws.path, limits)
        self._backend = backend
        self._ws = ws
        self.quota_bytes = ws.quota_bytes
        self._group = group
        self._lock = asyncio.Lock()
        self.owner = (backend.uid, backend.gid)

    def _command(self, fds: list[int]) -> tuple[list[str], list[str]]:
        """What runs bwrap on the host (limits, the drop to the sandbox's user) and
        bwrap's options. The options go to bwrap in a file (``--args FD``), off its
        command line, which the sandbox can read as /proc/1/cmdline: they name host
        paths. The descriptors bwrap reads (the seccomp filter, the /etc files, given
        as data so that no host path shows in the sandbox's mountinfo) are appended to
        ``fds``; the caller closes them."""
        b = self._backend
        lim = self.limits
        cmd: list[str] = []
        if self._group is not None:
            cmd += ["/bin/sh", "-c", ENTER, "sandbox-enter", *self._group.procs_files, "--"]
        cmd += ["prlimit", f"--nofile={lim.open_files}"]
        if self._group is None:
            cmd += [f"--as={lim.memory_bytes}", f"--nproc={_nproc_limit(lim.pids)}"]
        cmd += ["--", *b.wrapper]
        opts: list[str] = [
            "--unshare-all",
            "--unshare-user",
            "--disable-userns",
            "--die-with-parent",
            "--new-session",
            "--cap-drop",
            "ALL",
            "--hostname",
            "sandbox",
            "--seccomp",
            _keep(fds, seccomp.open_filter()),
            "--ro-bind",
            "/usr",
            "/usr",
        ]
        for top in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
            host = Path("/") / top
            if host.is_symlink():
                opts += ["--symlink", os.readlink(host), f"/{top}"]
            elif host.is_dir():
                opts += ["--ro-bind", str(host), f"/{top}"]
        for path in ETC_FILES:
            opts += ["--ro-bind-try", path, path]
        for name, data in b.etc_files.items():
            opts += ["--ro-bind-data", _keep(fds, _memfd(name, data)), f"/etc/{name}"]
        opts += [
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--size",
            str(self.limits.tmp_bytes),
            "--tmpfs",
            "/dev/shm",
            "--remount-ro",
            "/dev",
            "--size",
            str(self.limits.tmp_bytes),
            "--tmpfs",
            "/tmp",
            "--bind",
            str(self.workspace),
            WORKDIR,
            "--remount-ro",
            "/",
            "--chdir",
            WORKDIR,
            "--unsetenv",
            "PWD",
        ]
        return [*cmd, str(b.bwrap)], opts

    def _kill_tree(self, pid: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        if self._group is not None:
            self._group.kill_all()

    async def exec(
        self,
        argv: Sequence[str],
        *,
        stdin: bytes | str | None = None,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
    ) -> ExecResult:
        args = self._check_open(argv)
        timeout = self.limits.timeout_s if timeout is None else float(timeout)
        full_env = default_env(WORKDIR, env)
        async with self._lock:
            oom_before = self._group.oom_kills() if self._group else 0
            fds: list[int] = []
            try:
                bwrap, options = self._command(fds)
                opts_fd = _keep(
                    fds, _memfd("bwrap-args", b"".join(os.fsencode(o) + b"\0" for o in options))
                )
                run = await supervise(
                    [*bwrap, "--args", opts_fd, "--", *args],
                    stdin=as_bytes(stdin),
                    timeout=timeout,
                    env=full_env,
                    max_output_bytes=self.limits.max_output_bytes,
                    kill_tree=self._kill_tree,
                    pass_fds=tuple(fds),
                    cwd="/",  # (no host directory in the environment bwrap starts with)
                )
            finally:
                for fd in fds:
                    os.close(fd)
            if self._group is not None:
                oom = self._group.oom_kills() > oom_before
            else:
                oom = any(h in run.stderr.getvalue() for h in OOM_HINTS) and run.exit_code != 0
        code = run.exit_code
        if code is not None and code < 0:
            code = 128 - code
        if code == 125 and not run.stdout.total and b"sandbox-enter" in run.stderr.getvalue():
            raise SandboxError(f"could not enter the sandbox's cgroups: {run.stderr.getvalue()!r}")
        return ExecResult(
            exit_code=code,
            stdout=run.stdout.getvalue(),
            stderr=run.stderr.getvalue(),
            timed_out=run.timed_out,
            oom=oom and not run.timed_out,
            truncated=run.stdout.truncated or run.stderr.truncated,
            duration_s=run.duration_s,
            stdout_bytes=run.stdout.total,
            stderr_bytes=run.stderr.total,
        )

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        async with self._lock:
            await asyncio.to_thread(self._cleanup)

    def _cleanup(self) -> None:
        try:
            if self._group is not None:
                self._group.remove()
        finally:
            self._ws.remove()


def _memfd(name: str, data: bytes) -> int:
    """A readable fd holding ``data``, for bwrap's options that take one."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    try:
        os.write(fd, data)
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _keep(fds: list[int], fd: int) -> str:
    """Note ``fd`` for closing, and give it as bwrap's options want it."""
    fds.append(fd)
    return str(fd)


def _nproc_limit(pids: int) -> int:
    """RLIMIT_NPROC counts every process of the user: allow what exists plus ``pids``."""
    uid = os.getuid()
    count = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if entry.stat().st_uid == uid:
                    count += 1
    return count + pids
