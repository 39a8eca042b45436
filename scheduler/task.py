"""The core's record of one live task (plain slotted class: it is on the hot path)."""

from __future__ import annotations

from dataclasses import dataclass

from scheduler.decisions import MoveCause
from scheduler.events import ReplicaId, TaskId
from scheduler.states import TaskState


class Task:
    __slots__ = (
        "id",
        "agent",
        "state",
        "arrival",
        "deadline",
        "expected_calls",
        "expected_peak",
        "replica",
        "last_replica",
        "kv_held",
        "reserved",
        "history",
        "calls_done",
        "attained_s",
        "migrations",
        "retries",
        "tool",
        "tool_started",
        "expected_return",
        "ready_seq",
        "ready_since",
        "cold",
        "lost_kv",
        "dead_replica",
        "prompt",
        "pauses",
        "queued_since",
        "admission_wait_s",
        "slot_wait_s",
        "warm_tool",
    )

    def __init__(
        self,
        task_id: TaskId,
        agent: str,
        arrival: float,
        deadline: float,
        expected_calls: int,
        expected_peak: int,
    ) -> None:
        self.id = task_id
        self.agent = agent
        self.state = TaskState.NEW
        self.arrival = arrival
        self.deadline = deadline
        self.expected_calls = expected_calls
        self.expected_peak = expected_peak
        self.replica: ReplicaId | None = None  # pinned replica (KV reserved there)
        self.last_replica: ReplicaId | None = None  # where its KV was last
        self.kv_held = False  # reservation counted on `replica`
        self.reserved = 0  # tokens counted against `replica` while kv_held
        self.history = 0  # prompt + output of its last call (engine-reported)
        self.calls_done = 0
        self.attained_s = 0.0  # least-attained-service key
        self.migrations = 0
        self.retries = 0
        self.tool = ""
        self.tool_started = 0.0
        self.expected_return = 0.0
        self.ready_seq = 0  # invalidates stale run-queue entries
        self.ready_since = 0.0
        self.cold = True  # next call expects a full prefill
        self.lost_kv = MoveCause.KV_RELEASED  # why its KV left last_replica
        self.dead_replica: ReplicaId | None = None  # the last replica that died under it
        self.prompt = 0  # its first call's prompt (tokens), when the driver said
        self.pauses = 0  # KV releases under pressure (tool wait, waiting cap, over budget)
        self.queued_since = 0.0  # when it last entered the admission queue
        self.admission_wait_s = 0.0  # time queued for admission (KV room), in all
        self.slot_wait_s = 0.0  # time ready on its replica waiting for a compute slot
        self.warm_tool: float | None = None  # tool_started of the wait it was warmed in

    def __repr__(self) -> str:
        return (
            f"Task({self.id!r}, {self.state.value}, replica={self.replica!r}, "
            f"kv_held={self.kv_held}, reserved={self.reserved}, history={self.history})"
        )


@dataclass(frozen=True, slots=True)
class TaskView:
    """A read-only snapshot of a task, for drivers, tests and telemetry."""

    task_id: TaskId
    state: TaskState
    replica_id: ReplicaId | None
    kv_held: bool
    reserved_tokens: int
    history_tokens: int
    calls_done: int
    migrations: int


def task_view(t: Task) -> TaskView:
    return TaskView(
        t.id, t.state, t.replica, t.kv_held, t.reserved, t.history, t.calls_done, t.migrations
    )
