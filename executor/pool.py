"""Deprecated: ``executor.pool`` moved to ``executor.fleet.pool``; import ``ReplicaPool`` from
``executor`` instead. This shim will be removed in a later release."""

import warnings

from executor.fleet.pool import ReplicaPool

warnings.warn(
    "executor.pool is deprecated; use: from executor import ReplicaPool", DeprecationWarning,
    stacklevel=2,
)

__all__ = ["ReplicaPool"]
