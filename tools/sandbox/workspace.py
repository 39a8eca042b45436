"""Per-task workspace directories on the host, and the sweep of orphans.

Layout: ``<root>/<sandbox-id>/`` (root-only) holds ``workspace/`` (bound into
the sandbox, owned by the sandbox's user) and ``owner`` (``host:pid`` of the
process that made it). A sandbox id embeds nothing secret; the root is 0711 so
an unprivileged sandbox user can traverse to its own workspace but list none.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

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

    @classmethod
    def create(cls, task_id: str, owner: tuple[int, int] | None = None) -> Workspace:
        sandbox_id = new_sandbox_id(task_id)
        base = sandbox_root() / sandbox_id
        base.mkdir(mode=0o711)
        (base / "owner").write_text(owner_tag())
        path = base / "workspace"
        path.mkdir(mode=0o700)
        uid_gid = owner or (os.getuid(), os.getgid())
        if uid_gid != (os.getuid(), os.getgid()):
            os.chown(path, *uid_gid)
        return cls(sandbox_id, base, path, uid_gid)

    def remove(self) -> None:
        remove_tree(self.base)


def remove_tree(path: Path) -> None:
    """Remove a directory tree without following symlinks; ignore what is gone."""
    if not path.exists():
        return
    # The sandbox may have left read-only directories behind: make them writable.
    for dirpath, dirnames, _ in os.walk(path):
        for name in dirnames:
            full = os.path.join(dirpath, name)
            if not os.path.islink(full):
                with contextlib.suppress(OSError):
                    os.chmod(full, 0o700)
    shutil.rmtree(path, ignore_errors=True)


def sweep_workspaces() -> list[str]:
    """Remove workspaces left by processes of this host that are gone. Returns their ids."""
    removed: list[str] = []
    root = sandbox_root()
    for entry in root.iterdir():
        owner = entry / "owner"
        try:
            tag = owner.read_text().strip()
        except OSError:
            continue
        if not owner_alive(tag):
            remove_tree(entry)
            removed.append(entry.name)
    return removed
