"""The agent executor's data plane: the SDK, the task loop, replicas, journal, telemetry.

from executor import Agent, run_task
from tools import python

result = run_task(Agent(name="calc", tools=[python]), "What is 1234 * 5678?")
"""

from executor.agent import Agent, AgentDefinitionError
from executor.errors import ExecutorError
from executor.result import CallStep, TaskResult, ToolStep
from executor.runtime import Executor, TaskHandle
from executor.sdk import arun_task, resume_task, run_task, shutdown

__all__ = [
    "Agent",
    "AgentDefinitionError",
    "CallStep",
    "Executor",
    "ExecutorError",
    "TaskHandle",
    "TaskResult",
    "ToolStep",
    "arun_task",
    "resume_task",
    "run_task",
    "shutdown",
]
