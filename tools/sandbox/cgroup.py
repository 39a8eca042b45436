"""cgroup v1 limits for one sandbox: memory, pids and cpu controllers.

The machines this project runs on have a hybrid cgroup v1 hierarchy
(``/sys/fs/cgroup/{memory,pids,cpu}``) and no v2 ``memory.max``. As root a
sandbox gets one group per controller under ``agent-executor/<sandbox-id>``;
every command of that sandbox is moved into them before it starts (the
supervisor's shell writes its own pid, then execs the sandbox), so nothing it
forks escapes. Elsewhere :func:`available` is False and the backends fall back
to rlimits.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from pathlib import Path

from tools.sandbox.base import Limits
from tools.sandbox.workspace import owner_alive

MOUNT = Path("/sys/fs/cgroup")
CONTROLLERS = ("memory", "pids", "cpu")
PARENT = "agent-executor"
CFS_PERIOD_US = 100_000


def available() -> bool:
    """cgroup v1 with the three controllers, writable by us (i.e. root)."""
    if os.geteuid() != 0:
        return False
    for ctl in CONTROLLERS:
        if not (MOUNT / ctl / "cgroup.procs").exists():
            return False
    if not (MOUNT / "memory" / "memory.limit_in_bytes").exists():
        return False
    try:
        for ctl in CONTROLLERS:
            (MOUNT / ctl / PARENT).mkdir(exist_ok=True)
    except OSError:
        return False
    return True


class CgroupV1:
    """One sandbox's groups. ``procs_files`` are what a new command writes its pid to."""

    def __init__(self, name: str, limits: Limits) -> None:
        self.name = name
        self.dirs = {ctl: MOUNT / ctl / PARENT / name for ctl in CONTROLLERS}
        for path in self.dirs.values():
            path.mkdir()
        mem = self.dirs["memory"]
        _write(mem / "memory.limit_in_bytes", str(limits.memory_bytes))
        memsw = mem / "memory.memsw.limit_in_bytes"
        if memsw.exists():
            _write(memsw, str(limits.memory_bytes), ignore_errors=True)
        _write(self.dirs["pids"] / "pids.max", str(limits.pids))
        quota = max(1000, int(limits.cpus * CFS_PERIOD_US))
        _write(self.dirs["cpu"] / "cpu.cfs_period_us", str(CFS_PERIOD_US))
        _write(self.dirs["cpu"] / "cpu.cfs_quota_us", str(quota))

    @property
    def procs_files(self) -> list[str]:
        return [str(path / "cgroup.procs") for path in self.dirs.values()]

    def oom_kills(self) -> int:
        """How many processes the kernel's OOM killer ended in this group so far."""
        try:
            text = (self.dirs["memory"] / "memory.oom_control").read_text()
        except OSError:
            return 0
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def pids(self) -> list[int]:
        return _pids(self.dirs["pids"])

    def kill_all(self, timeout_s: float = 2.0) -> bool:
        """SIGKILL every process in the group until it is empty. True when empty."""
        return kill_group(self.dirs["pids"], timeout_s)

    def remove(self) -> None:
        self.kill_all()
        for path in self.dirs.values():
            with contextlib.suppress(OSError):
                path.rmdir()


def kill_group(pids_dir: Path, timeout_s: float = 2.0, keep: frozenset[int] = frozenset()) -> bool:
    """SIGKILL the processes listed in ``pids_dir/cgroup.procs`` (except ``keep``) until gone."""
    deadline = time.monotonic() + timeout_s
    while True:
        pids = [p for p in _pids(pids_dir) if p not in keep]
        if not pids:
            return True
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)


def sweep() -> list[str]:
    """Remove the groups of sandboxes whose owner process is gone (name ``<pid>-...``)."""
    removed: list[str] = []
    parent = MOUNT / "pids" / PARENT
    if not parent.is_dir():
        return removed
    host = socket.gethostname()
    for entry in parent.iterdir():
        if not entry.is_dir():
            continue
        pid = entry.name.split("-", 1)[0]
        if pid.isdigit() and not owner_alive(f"{host}:{pid}"):
            kill_group(entry)
            for ctl in CONTROLLERS:
                with contextlib.suppress(OSError):
                    (MOUNT / ctl / PARENT / entry.name).rmdir()
            removed.append(entry.name)
    return removed


def _pids(path: Path) -> list[int]:
    try:
        text = (path / "cgroup.procs").read_text()
    except OSError:
        return []
    return [int(line) for line in text.split()]


def _write(path: Path, value: str, ignore_errors: bool = False) -> None:
    try:
        path.write_text(value)
    except OSError:
        if not ignore_errors:
            raise
