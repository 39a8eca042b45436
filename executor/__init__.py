"""The agent executor's data plane: the SDK on top of the task loop, the fleet of
replicas, the journal and the telemetry (see docs/ARCHITECTURE.md).

from executor import Agent, run_task
from tools import python

result = run_task(Agent(name="calc", tools=[python]), "What is 1234 * 5678?")


Exports load on first use (PEP 562), so ``python -m executor`` can say in one line which
package a half-finished install lacks instead of failing inside this file.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from executor.agent import Agent, AgentDefinitionError
    from executor.config import ExecutorConfig
    from executor.errors import (
        ExecutorError,
        InvalidRequestError,
        ReplicaUnavailableError,
        ReplicaUnreachableError,
    )
    from executor.fleet.config import ReplicaConfig
    from executor.fleet.health import HealthConfig
    from executor.fleet.pool import ReplicaPool
    from executor.remote import RemoteExecutor
    from executor.result import CallStep, FailoverStep, Step, TaskResult, TaskStatus, ToolStep
    from executor.runtime import Executor, TaskHandle
    from executor.sampling import SamplingParams
    from executor.sdk import arun_task, resume_task, run_task, shutdown
    from executor.telemetry import Telemetry, TelemetryExporter
    from scheduler import SchedulerConfig
    from tools.web.policy import WebPolicy

_EXPORTS = {
    "Agent": "executor.agent",
    "AgentDefinitionError": "executor.agent",
    "ExecutorConfig": "executor.config",
    "ExecutorError": "executor.errors",
    "InvalidRequestError": "executor.errors",
    "ReplicaUnavailableError": "executor.errors",
    "ReplicaUnreachableError": "executor.errors",
    "ReplicaConfig": "executor.fleet.config",
    "SamplingParams": "executor.sampling",
    "HealthConfig": "executor.fleet.health",
    "ReplicaPool": "executor.fleet.pool",
    "RemoteExecutor": "executor.remote",
    "CallStep": "executor.result",
    "FailoverStep": "executor.result",
    "Step": "executor.result",
    "TaskResult": "executor.result",
    "TaskStatus": "executor.result",
    "ToolStep": "executor.result",
    "Executor": "executor.runtime",
    "TaskHandle": "executor.runtime",
    "arun_task": "executor.sdk",
    "resume_task": "executor.sdk",
    "run_task": "executor.sdk",
    "shutdown": "executor.sdk",
    "Telemetry": "executor.telemetry",
    "TelemetryExporter": "executor.telemetry",
    "SchedulerConfig": "scheduler",
    "WebPolicy": "tools.web.policy",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'executor' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "Agent",
    "AgentDefinitionError",
    "CallStep",
    "Executor",
    "ExecutorConfig",
    "ExecutorError",
    "FailoverStep",
    "HealthConfig",
    "InvalidRequestError",
    "ReplicaConfig",
    "ReplicaPool",
    "RemoteExecutor",
    "ReplicaUnavailableError",
    "ReplicaUnreachableError",
    "SamplingParams",
    "SchedulerConfig",
    "Step",
    "TaskHandle",
    "TaskResult",
    "TaskStatus",
    "Telemetry",
    "TelemetryExporter",
    "ToolStep",
    "WebPolicy",
    "arun_task",
    "resume_task",
    "run_task",
    "shutdown",
]
