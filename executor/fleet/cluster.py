"""Connecting to Ray: an embedded local cluster by default, or an existing one."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass

import ray


@dataclass
class RayConnection:
    """What ``connect`` did, so ``close`` undoes exactly that."""

    started: bool  # this process called ray.init (and must call ray.shutdown)
    embedded: bool  # ... and the cluster is a local one it created
    temp_dir: str | None

    def close(self) -> None:
        if self.started and ray.is_initialized():
            ray.shutdown()
        if self.temp_dir:
            shutil.rmtree(self.temp_dir, ignore_errors=True)


def connect(address: str | None = None, num_cpus: int | None = None) -> RayConnection:
    """Join ``address`` (e.g. "ray://head:10001" or "auto"), or start a local cluster.

    Reuses a connection this process already has.
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if ray.is_initialized():
        return RayConnection(started=False, embedded=False, temp_dir=None)
    if address:
        ray.init(address=address, logging_level="WARNING")
        return RayConnection(started=True, embedded=False, temp_dir=None)
    # A short private temp dir: Ray's socket paths must stay under ~107 characters.
    temp_dir = tempfile.mkdtemp(prefix="aex-ray-")
    ray.init(
        num_cpus=num_cpus if num_cpus is not None else os.cpu_count(),
        include_dashboard=False,
        logging_level="WARNING",
        _temp_dir=temp_dir,
    )
    return RayConnection(started=True, embedded=True, temp_dir=temp_dir)
