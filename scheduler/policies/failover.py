"""Failover: a dead replica's tasks are placed again on survivors (cold: they
replay their history), at most ``max_migrations`` times per task; one more
death fails the task with a clear reason (migration disabled: 0)."""

from __future__ import annotations

from typing import Protocol

from scheduler.task import Task


class FailoverPolicy(Protocol):
    def may_migrate(self, task: Task) -> bool:
        """Called after ``task.migrations`` was incremented for a lost replica."""
        ...


class MigrationLimitedFailover:
    def __init__(self, max_migrations: int = 3) -> None:
        if max_migrations < 0:
            raise ValueError("max_migrations must be >= 0")
        self.max_migrations = max_migrations

    def may_migrate(self, task: Task) -> bool:
        return task.migrations <= self.max_migrations
