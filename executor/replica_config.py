"""Deprecated: ``executor.replica_config`` moved to ``executor.fleet.config``; import
``ReplicaConfig`` from ``executor`` instead. This shim will be removed in a later release."""

import warnings

from executor.fleet.config import ReplicaConfig

warnings.warn(
    "executor.replica_config is deprecated; use: from executor import ReplicaConfig",
    DeprecationWarning, stacklevel=2,
)

__all__ = ["ReplicaConfig"]
