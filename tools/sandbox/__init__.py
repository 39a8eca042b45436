"""Sandboxes: one per task, behind one interface (:mod:`tools.sandbox.base`).

    backend = create_backend("bwrap")            # or "docker"; "local" = NO isolation
    async with await backend.open(task_id) as sandbox:
        result = await sandbox.exec(["python3", "-c", "print(1)"], timeout=10)
    await backend.close()

Backends: ``bwrap`` (default), ``docker``, and ``local`` (development only,
never chosen unless named).
"""

from __future__ import annotations

from typing import Any

from tools.sandbox.base import (
    WORKDIR,
    ExecResult,
    Limits,
    Sandbox,
    SandboxBackend,
    SandboxError,
    SandboxUnavailable,
)

DEFAULT_BACKEND = "bwrap"
BACKENDS = ("bwrap", "docker", "local")
ISOLATING_BACKENDS = ("bwrap", "docker")


def unknown_backend(name: str) -> SandboxError:
    return SandboxError(f"unknown sandbox backend {name!r}; choose one of {', '.join(BACKENDS)}")


def create_backend(
    name: str = DEFAULT_BACKEND, *, limits: Limits | None = None, **options: Any
) -> SandboxBackend:
    """The backend called ``name``; SandboxUnavailable (with the reason) if it cannot run here.

    Blocking (the docker backend pings the engine, builds its image, starts its
    pool): call it at start-up or through ``asyncio.to_thread``. There is no
    fallback to another backend, least of all to ``local``.
    """
    if name == "bwrap":
        from tools.sandbox.bwrap import BwrapBackend

        return BwrapBackend(limits, **options)
    if name == "docker":
        from tools.sandbox.docker import DockerBackend

        return DockerBackend(limits, **options)
    if name == "local":
        from tools.sandbox.local import LocalBackend

        return LocalBackend(limits, **options)
    raise unknown_backend(name)


def check_backend(name: str = DEFAULT_BACKEND) -> None:
    """Raise SandboxUnavailable (with the fix) unless backend ``name`` can run here.

    Cheap and side-effect free (no image build, no pool): the CLI calls it before it
    converts a model or starts Ray, so a missing sandbox is one line, not a traceback
    minutes later.
    """
    if name == "bwrap":
        from tools.sandbox.bwrap import require_host

        require_host()
    elif name == "docker":
        from tools.sandbox.docker.backend import connect

        connect().close()
    elif name != "local":
        raise unknown_backend(name)


__all__ = [
    "BACKENDS",
    "DEFAULT_BACKEND",
    "ISOLATING_BACKENDS",
    "WORKDIR",
    "ExecResult",
    "Limits",
    "Sandbox",
    "SandboxBackend",
    "SandboxError",
    "SandboxUnavailable",
    "check_backend",
    "create_backend",
]
