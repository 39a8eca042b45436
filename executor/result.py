"""What a task gives back: its outcome, its answer, and every step with its figures."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

TaskStatus = Literal["succeeded", "step_limit", "failed"]


class CallStep(BaseModel):
    """One model call, with SGLang's own token accounting."""

    kind: Literal["call"] = "call"
    step: int
    replica_id: str
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    latency_s: float
    queue_wait_s: float
    finish_reason: str
    reply: str

    @property
    def prefilled_tokens(self) -> int:
        return self.prompt_tokens - self.cached_tokens


class ToolStep(BaseModel):
    """One tool call: what the model asked, what the tool returned."""

    kind: Literal["tool"] = "tool"
    step: int
    call_id: str
    tool: str
    arguments: dict[str, Any]
    ok: bool
    output: str
    duration_s: float
    replayed: bool = False  # taken from the journal on resume, not run again
    interrupted: bool = False  # started before a crash, result unknown: never run again


class FailoverStep(BaseModel):
    """A call lost with its replica: the task moved and replays its history elsewhere."""

    kind: Literal["failover"] = "failover"
    step: int
    replica_id: str  # the replica that died
    reason: str


Step = CallStep | ToolStep | FailoverStep


class TaskResult(BaseModel):
    task_id: str
    agent: str
    goal: str
    status: TaskStatus
    output: str | None = None
    error: str | None = None
    steps: list[Step] = []
    latency_s: float = 0.0
    resumed: bool = False

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"

    @property
    def calls(self) -> list[CallStep]:
        return [s for s in self.steps if isinstance(s, CallStep)]

    @property
    def tools(self) -> list[ToolStep]:
        return [s for s in self.steps if isinstance(s, ToolStep)]

    @property
    def failovers(self) -> list[FailoverStep]:
        return [s for s in self.steps if isinstance(s, FailoverStep)]
