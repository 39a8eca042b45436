"""Events: what the runtime (or the simulator) tells the core.

Every event carries ``time`` (seconds, any monotonic origin). The core never
reads a clock; it only compares the times it is given. Events are immutable.
"""

from __future__ import annotations

from dataclasses import dataclass

TaskId = str
ReplicaId = str


@dataclass(frozen=True, slots=True)
class TaskArrived:
    """A new task wants to run. ``expected_history_tokens`` is its expected peak
    history (what peak admission reserves); ``prompt_tokens`` the exact size of its
    first call's prompt, when the driver knows it (what usage admission reserves,
    with the growth to the next call); ``agent`` names the shared system prompt
    (tasks of the same agent share a prefix). ``deadline`` defaults to
    ``time + config.slo_s``."""

    time: float
    task_id: TaskId
    agent: str = ""
    expected_calls: int = 1
    expected_history_tokens: int = 0
    deadline: float | None = None
    prompt_tokens: int = 0


@dataclass(frozen=True, slots=True)
class CallFinished:
    """A model call ended. Token counts are SGLang's own (``prompt_tokens``,
    ``cached_tokens`` from the response meta info). After it the task's history
    is ``prompt_tokens + output_tokens`` and, in the core's book, resident on
    ``replica_id``."""

    time: float
    task_id: TaskId
    replica_id: ReplicaId
    prompt_tokens: int
    cached_tokens: int
    output_tokens: int
    latency_s: float


@dataclass(frozen=True, slots=True)
class CallFailed:
    """A model call failed on a live replica (engine error, timeout). The call is
    retried on the same replica, up to ``config.max_call_retries`` times."""

    time: float
    task_id: TaskId
    replica_id: ReplicaId
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ToolStarted:
    """The task's call asked for a tool and the tool started. ``expected_s`` is an
    optional hint; the core prefers its own moving average for ``tool``."""

    time: float
    task_id: TaskId
    tool: str
    expected_s: float | None = None


@dataclass(frozen=True, slots=True)
class ToolFinished:
    """The tool returned; the task's next call is ready."""

    time: float
    task_id: TaskId


@dataclass(frozen=True, slots=True)
class NextCall:
    """The task's next call is ready without a tool in between."""

    time: float
    task_id: TaskId


@dataclass(frozen=True, slots=True)
class WarmedUp:
    """A ``WarmUp``'s generate ended on ``replica_id``: its history is cached there
    (``ok``) or not (it failed or was aborted). A report that no longer matches the
    task (it returned, moved, ended) is ignored."""

    time: float
    task_id: TaskId
    replica_id: ReplicaId
    ok: bool = True


@dataclass(frozen=True, slots=True)
class TaskFinished:
    """The task's last call answered; the task is done."""

    time: float
    task_id: TaskId


@dataclass(frozen=True, slots=True)
class TaskCancelled:
    """The task is abandoned in whatever state it is in (a running call was
    aborted by the runtime)."""

    time: float
    task_id: TaskId
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ReplicaJoined:
    """A replica is ready. ``kv_capacity_tokens`` is read from the engine
    (SGLang's ``max_total_num_tokens``); ``max_running_calls`` overrides the
    configured number of concurrent calls the core lets it run."""

    time: float
    replica_id: ReplicaId
    kv_capacity_tokens: int
    max_running_calls: int | None = None
    replaces: ReplicaId | None = None
    """The dead replica this one was started in place of (see ``ReplicaDied.replacing``)."""


@dataclass(frozen=True, slots=True)
class ReplicaDraining:
    """No new task may be placed on the replica; its tasks finish there."""

    time: float
    replica_id: ReplicaId


@dataclass(frozen=True, slots=True)
class ReplicaDied:
    """The replica and its KV are gone; its running calls are lost. ``replacing``:
    the runtime is starting a replica in its place (``ReplicaJoined(replaces=...)``
    or ``ReplacementFailed`` follows), so its tasks wait for it instead of failing
    when no other replica is left."""

    time: float
    replica_id: ReplicaId
    replacing: bool = False


@dataclass(frozen=True, slots=True)
class ReplacementFailed:
    """The replica started in place of the dead ``replica_id`` did not come up."""

    time: float
    replica_id: ReplicaId
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Tick:
    """Time passed and nothing else happened. The driver sends it at
    ``SchedulerCore.wake_at()``: a decision that depends on time alone (a queued task
    that has waited as long as the room it can buy costs) is not left waiting for
    an unrelated event."""

    time: float


TaskEvent = (
    TaskArrived
    | CallFinished
    | CallFailed
    | ToolStarted
    | ToolFinished
    | NextCall
    | TaskFinished
    | TaskCancelled
    | WarmedUp
)
ReplicaEvent = ReplicaJoined | ReplicaDraining | ReplicaDied | ReplacementFailed
Event = TaskEvent | ReplicaEvent | Tick
