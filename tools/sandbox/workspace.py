"""Per-task workspace directories on the host, and the sweep of orphans.

Layout: ``<root>/<sandbox-id>/`` (root-only) holds ``workspace/`` (bound into
the sandbox, owned by the sandbox's user; with a disk quota, the mount point of
its own file system, whose image ``disk.img`` sits beside it: see
:mod:`tools.sandbox.disk`) and ``owner`` (``host:pid`` of the process that made
it). A sandbox id embeds nothing secret; the root is 0711 so
an unprivileged sandbox user can traverse to its own workspace but list none.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import tools.sandbox.disk as disk
from tools.sandbox.base import SandboxError

log = logging.getLogger(__name__)

ENV_ROOT = "AGENT_EXECUTOR_SANDBOX_ROOT"


def sandbox_root() -> Path:
    root = Path(
        os.environ.get(ENV_ROOT) or Path(tempfile.gettempdir()) / "agent-executor-sandboxes"
    )
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o711)
    return root


def owner_tag() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def owner_alive(tag: str) -> bool:
    """Whether the process named by an owner tag (``host:pid``) still runs here.

    A tag from another host is reported alive: it is not ours to sweep.
    """
    host, _, pid = tag.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def new_sandbox_id(task_id: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in task_id)[:40] or "task"
    return f"{safe}-{secrets.token_hex(4)}"


@dataclass
class Workspace:
    sandbox_id: str
    base: Path  # <root>/<sandbox-id>
    path: Path  # <base>/workspace
    owner: tuple[int, int]
    #: the size of the workspace's own file system; None: not capped
    quota_bytes: int | None = None

    @classmethod
    def create(
        cls, task_id: str, owner: tuple[int, int] | None = None, disk_bytes: int | None = None
    ) -> Workspace:
        """A fresh workspace; with ``disk_bytes``, on a file system of that size where
        this machine allows one (:func:`tools.sandbox.disk.unavailable`)."""
        sandbox_id = new_sandbox_id(task_id)
        base = sandbox_root() / sandbox_id
        base.mkdir(mode=0o711)
        (base / "owner").write_text(owner_tag())
        path = base / "workspace"
        path.mkdir(mode=0o700)
        uid_gid = owner or (os.getuid(), os.getgid())
        ws = cls(sandbox_id, base, path, uid_gid)
        try:
            if disk_bytes is not None and disk.unavailable() is None:
                disk.cap(base, path, disk_bytes, uid_gid)
                ws.quota_bytes = disk_bytes
            elif uid_gid != (os.getuid(), os.getgid()):
                os.chown(path, *uid_gid)
        except disk.QuotaError as exc:
            ws.remove()
            raise SandboxError(f"cannot give the workspace its disk quota: {exc}") from exc
        except BaseException:
            ws.remove()
            raise
        return ws

    def remove(self) -> None:
        remove_base(self.base)


def remove_base(base: Path) -> bool:
    """Unmount a workspace's file system and remove its base directory; never raises."""
    disk.release(base)
    return remove_tree(base)


def remove_tree(path: Path) -> bool:
    """Remove a directory tree; never raises. True when it is gone.

    Iterative and fd-based, so any depth works (a tree 5,000 levels deep has paths
    far past PATH_MAX and would exhaust a recursive walk): it goes down one
    directory at a time holding one descriptor, and back up through ``..``. It
    never follows a symlink (it is unlinked like a file), never crosses into
    another file system, and makes directories the sandbox left unwritable
    writable before emptying them. What cannot be removed is logged and skipped.
    """
    try:
        top = os.lstat(path)
    except FileNotFoundError:
        return True
    except OSError as exc:
        log.warning("cannot remove %s: %s", path, exc)
        return False
    if not stat.S_ISDIR(top.st_mode):
        return _try(lambda: os.unlink(path), path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        log.warning("cannot remove %s: %s", path, exc)
        return False
    names: list[str] = []  # the directories below ``path`` that ``fd`` is inside
    stuck: set[tuple[int, int]] = set()  # (dev, inode) of what could not be removed
    while True:
        child = _empty_or_descend(fd, top.st_dev, stuck, path, names)
        if child is not None:
            os.close(fd)
            fd, name = child
            names.append(name)
            continue
        if not names:
            os.close(fd)
            return _try(lambda: os.rmdir(path), path)
        name = names.pop()
        try:
            parent = os.open("..", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=fd)
        except OSError as exc:  # pragma: no cover - a directory always has a parent
            os.close(fd)
            log.warning("cannot remove %s: %s", path, exc)
            return False
        here = os.fstat(fd)
        os.close(fd)
        fd = parent
        try:
            os.rmdir(name, dir_fd=fd)
        except OSError as exc:
            stuck.add((here.st_dev, here.st_ino))
            log.warning("cannot remove %s/.../%s: %s", path, name, exc)


def _empty_or_descend(
    fd: int, dev: int, stuck: set[tuple[int, int]], top: Path, names: list[str]
) -> tuple[int, str] | None:
    """Remove what the directory at ``fd`` holds but subdirectories that are not empty;
    return the first of those (an fd and its name) to go into, or None when done."""
    with contextlib.suppress(OSError):
        os.chmod(fd, 0o700)  # (a directory the sandbox left read-only)
    try:
        with os.scandir(fd) as it:
            entries = [(e.name, e.stat(follow_symlinks=False)) for e in it]
    except OSError as exc:
        log.warning("cannot list a directory under %s: %s", top, exc)
        return None
    for name, st in entries:
        if (st.st_dev, st.st_ino) in stuck:
            continue
        if not stat.S_ISDIR(st.st_mode):
            try:
                os.unlink(name, dir_fd=fd)
            except OSError as exc:
                stuck.add((st.st_dev, st.st_ino))
                log.warning("cannot remove %s/.../%s: %s", top, name, exc)
            continue
        if st.st_dev != dev:  # another file system mounted here: not ours to empty
            stuck.add((st.st_dev, st.st_ino))
            log.warning("not removing %s/.../%s: another file system", top, name)
            continue
        try:
            os.rmdir(name, dir_fd=fd)  # empty already
            continue
        except OSError:
            pass
        try:
            flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
            return os.open(name, flags, dir_fd=fd), name
        except OSError as exc:
            stuck.add((st.st_dev, st.st_ino))
            log.warning("cannot remove %s/.../%s: %s", top, name, exc)
    return None


def _try(remove: Callable[[], None], path: Path) -> bool:
    try:
        remove()
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("cannot remove %s: %s", path, exc)
        return False
    return True


def sweep_workspaces() -> list[str]:
    """Remove workspaces left by processes of this host that are gone. Returns the ids
    removed. Never raises: an entry that cannot be removed is logged and left for
    the next sweep, so one bad directory never stops a start."""
    removed: list[str] = []
    try:
        entries = list(sandbox_root().iterdir())
    except OSError as exc:
        log.warning("cannot sweep the sandbox workspaces: %s", exc)
        return removed
    for entry in entries:
        try:
            tag = (entry / "owner").read_text().strip()
        except OSError:
            continue
        if not owner_alive(tag) and remove_base(entry):
            removed.append(entry.name)
    return removed
