"""One warm sandbox container: how it is started, watched, replaced and removed.

A container runs ``docker-init -- sleep infinity`` (its *keeper*) with every
restriction (``--network none``, read-only root, tmpfs ``/tmp``, ``cap-drop
ALL``, ``no-new-privileges``, the project's seccomp profile, memory/pids/cpu
limits), the host's ``/usr`` read-only and the task's workspace at
``/workspace``. Commands arrive by ``docker exec`` as the unprivileged sandbox
user. The keeper runs as the container's root, which holds no capability: a
command cannot signal it (``kill -9 -1`` ends only the sandbox user's
processes), and cannot trace or write into it (another uid, and ``ptrace``
and ``process_vm_*`` are denied anyway), so nothing a command starts can live
on in it between calls. If the container stops all the same (the engine's
OOM killer, a restarted daemon), the task's next call gets a fresh container
on the same workspace.

Docker cannot kill an exec'd process. Where the daemon runs on this host (the
private daemon of ``infra/dockerd.sh``), the container's cgroups are visible
under ``/sys/fs/cgroup``: after each call (and at its time limit) every process
of the container but its init and sleeper gets SIGKILL from here, and the
memory group's ``oom_kill`` counter tells an out-of-memory end. Where they are
not visible (a remote daemon), a ``kill -9 -1`` exec does the same job and the
sleeper is restarted if it was hit.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tools.sandbox.cgroup as cgroup
from tools.sandbox.base import WORKDIR, Limits, SandboxError
from tools.sandbox.seccomp import docker_profile
from tools.sandbox.workspace import Workspace, owner_tag

LABEL = "agent-executor.sandbox"
LABEL_OWNER = "agent-executor.owner"
LABEL_BASE = "agent-executor.base"
SANDBOX_UID = 65534


@dataclass
class HostView:
    """The container's cgroups as seen from this host."""

    pids_dir: Path
    memory_dir: Path
    keep: frozenset[int] = field(default_factory=frozenset)

    def oom_kills(self) -> int:
        try:
            text = (self.memory_dir / "memory.oom_control").read_text()
        except OSError:
            return 0
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def kill_leftovers(self, timeout_s: float = 2.0) -> bool:
        return cgroup.kill_group(self.pids_dir, timeout_s, keep=self.keep)

    def keeper_alive(self) -> bool:
        return all(alive(pid) for pid in self.keep)


def alive(pid: int) -> bool:
    """Whether a host pid names a process that has not exited (zombies count as exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


@dataclass
class WarmContainer:
    container: Any  # docker.models.containers.Container
    workspace: Workspace
    limits: Limits
    host: HostView | None

    @property
    def id(self) -> str:
        return str(self.container.id)

    def running(self) -> bool:
        """Whether the container still runs (its keeper and init alive)."""
        if self.host is not None:
            return self.host.keeper_alive()
        try:
            self.container.reload()
        except Exception:
            return False
        return bool(self.container.status == "running")

    def discard(self) -> None:
        """Remove the container, keep the workspace."""
        with contextlib.suppress(Exception):
            self.container.remove(force=True)

    def remove(self) -> None:
        try:
            self.discard()
        finally:
            self.workspace.remove()


def start_container(
    client: Any, image: str, limits: Limits, task_id: str, workspace: Workspace | None = None
) -> WarmContainer:
    """Create and start one sandbox container, on ``workspace`` or a fresh one (which
    is removed again if the container cannot start)."""
    import os

    from docker.types import Ulimit

    root = os.geteuid() == 0
    ws = workspace or Workspace.create(
        task_id, (SANDBOX_UID, SANDBOX_UID) if root else None, limits.disk_bytes
    )
    if not root:
        os.chmod(ws.path, 0o777)  # the container's user must write it
    try:
        container = client.containers.run(
            image,
            command=["sleep", "infinity"],
            detach=True,
            init=True,
            user="0:0",  # the keeper: a root without capabilities, out of the commands' reach
            network_mode="none",
            read_only=True,
            tmpfs={"/tmp": f"rw,nosuid,nodev,size={limits.tmp_bytes},mode=1777"},
            cap_drop=["ALL"],
            security_opt=["no-new-privileges", f"seccomp={docker_profile()}"],
            mem_limit=limits.memory_bytes,
            memswap_limit=limits.memory_bytes,
            pids_limit=limits.pids,
            shm_size=limits.tmp_bytes,
            ulimits=[Ulimit(name="nofile", soft=limits.open_files, hard=limits.open_files)],
            nano_cpus=int(limits.cpus * 1e9),
            volumes={
                "/usr": {"bind": "/usr", "mode": "ro"},
                str(ws.path): {"bind": WORKDIR, "mode": "rw"},
            },
            working_dir=WORKDIR,
            hostname="sandbox",
            labels={LABEL: "1", LABEL_OWNER: owner_tag(), LABEL_BASE: str(ws.base)},
        )
    except Exception as exc:
        if workspace is None:
            ws.remove()
        raise SandboxError(f"cannot start a sandbox container: {exc}") from exc
    warm = WarmContainer(container, ws, limits, None)
    try:
        warm.host = _host_view(container)
    except Exception:
        if workspace is None:
            warm.remove()
        else:
            warm.discard()
        raise
    return warm


def _host_view(container: Any, wait_s: float = 2.0) -> HostView | None:
    container.reload()
    pid = int(container.attrs.get("State", {}).get("Pid") or 0)
    if not pid:
        raise SandboxError(f"sandbox container {container.short_id} did not start")
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return None  # the daemon's processes are not ours to see
    paths: dict[str, Path] = {}
    for line in lines:
        _, controllers, path = line.split(":", 2)
        for ctl in controllers.split(","):
            paths[ctl] = cgroup.MOUNT / ctl / path.lstrip("/")
    pids_dir, memory_dir = paths.get("pids"), paths.get("memory")
    if pids_dir is None or memory_dir is None or not (pids_dir / "cgroup.procs").exists():
        return None
    # init and its sleeper are the container's permanent residents
    deadline = time.monotonic() + wait_s
    while True:
        procs = [int(p) for p in (pids_dir / "cgroup.procs").read_text().split()]
        if len(procs) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.005)
    return HostView(pids_dir, memory_dir, frozenset(procs))
