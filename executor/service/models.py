"""The service's wire types: what a client sends and what it gets back (JSON)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from executor.agent import ANSWER_HINT
from executor.result import Step

# A task as a client sees it: the executor's outcomes, plus the states before one.
ServiceStatus = Literal["queued", "running", "succeeded", "step_limit", "failed", "cancelled"]
MAX_GOAL_CHARS = 16_000


class InlineAgent(BaseModel):
    """An agent defined in the request: built-in tools only (no code is imported)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    instructions: str = Field(
        "You are a helpful assistant that solves tasks with tools.", max_length=8_000
    )
    tools: list[str] = Field(default_factory=list, max_length=16)
    max_steps: int = Field(12, ge=1, le=200)
    sampling: dict[str, Any] = Field(default_factory=dict)
    tool_choice: str = "auto"
    max_answer_chars: int = Field(2000, ge=1, le=100_000)
    answer_hint: str = Field(ANSWER_HINT, max_length=500)
    """Shown to the model after each successful tool result ("" for none)."""


class SubmitRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agent: str | InlineAgent
    """A registered agent's name, or an inline agent of built-in tools."""
    goal: str = Field(min_length=1, max_length=MAX_GOAL_CHARS)
    max_steps: int | None = Field(None, ge=1, le=200)


class SubmitResponse(BaseModel):
    task_id: str
    status: ServiceStatus


class TaskView(BaseModel):
    """``TaskResult``'s fields, with the states a task has before it ends."""

    task_id: str
    agent: str
    goal: str
    status: ServiceStatus
    output: str | None = None
    error: str | None = None
    steps: list[Step] = []
    latency_s: float = 0.0
    resumed: bool = False


class TaskSummary(BaseModel):
    task_id: str
    agent: str
    goal: str
    status: ServiceStatus
    calls: int
    created_at: float
    updated_at: float


class TaskPage(BaseModel):
    tasks: list[TaskSummary]
    next_offset: int | None


class ReplicaView(BaseModel):
    replica_id: str
    state: str
    kv_capacity_tokens: int
    kv_reserved_tokens: int
    running_calls: int


class Problem(BaseModel):
    detail: str
