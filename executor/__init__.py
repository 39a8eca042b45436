"""The agent executor's data plane: the SDK on top of the task loop, the fleet of
replicas, the journal and the telemetry (see docs/ARCHITECTURE.md).

from executor import Agent, run_task
from tools import python

result = run_task(Agent(name="calc", tools=[python]), "What is 1234 * 5678?")
"""

from executor.agent import Agent, AgentDefinitionError
from executor.config import ExecutorConfig
from executor.errors import (
    ExecutorError,
    InvalidRequestError,
    ReplicaUnavailableError,
    ReplicaUnreachableError,
)
from executor.fleet.config import ReplicaConfig
from executor.fleet.generation import SamplingParams
from executor.fleet.health import HealthConfig
from executor.fleet.pool import ReplicaPool
from executor.remote import RemoteExecutor
from executor.result import CallStep, FailoverStep, Step, TaskResult, TaskStatus, ToolStep
from executor.runtime import Executor, TaskHandle
from executor.sdk import arun_task, resume_task, run_task, shutdown
from executor.telemetry import Telemetry, TelemetryExporter
from scheduler import SchedulerConfig
from tools.web.policy import WebPolicy

__all__ = [
    "Agent", "AgentDefinitionError", "CallStep", "Executor", "ExecutorConfig", "ExecutorError",
    "FailoverStep", "HealthConfig", "InvalidRequestError", "ReplicaConfig", "ReplicaPool",
    "RemoteExecutor", "ReplicaUnavailableError", "ReplicaUnreachableError", "SamplingParams",
    "SchedulerConfig",
    "Step", "TaskHandle", "TaskResult", "TaskStatus", "Telemetry", "TelemetryExporter",
    "ToolStep", "WebPolicy", "arun_task", "resume_task", "run_task", "shutdown",
]
