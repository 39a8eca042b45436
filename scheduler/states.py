"""Task and replica lifecycles: every state and every transition lives here.

Rules of this file (after h11's ``_state.py``):

* Everything that changes a task's or a replica's lifecycle state is in the two
  tables below. The core never assigns ``.state`` itself; it calls
  :func:`next_task_state` / :func:`next_replica_state`, which raise
  :class:`~scheduler.errors.InvalidEvent` for a transition the table lacks.
* Which *external* events a state accepts is also a table
  (:data:`TASK_EVENTS_ALLOWED`); the core checks it before touching anything,
  so an invalid event leaves the core unchanged.

Theory of operation. A task is ``QUEUED`` until admission finds a replica with
KV room for its expected peak history; it is then pinned there and ``READY``
(its call waits for a compute slot), ``RUNNING`` (the call is on the engine),
``AWAITING`` (the call answered; the runtime decides: tool, next call or done)
and ``TOOL`` (a tool runs). Whether the task's KV is resident on its replica is
an attribute, not a state: a task in ``TOOL`` or ``AWAITING`` may have had its
KV released (retention policy, failover), and is then placed again, anywhere,
before its next call. ``DONE``, ``REJECTED``, ``FAILED`` and ``CANCELLED`` are
terminal. A replica is ``ACTIVE`` (takes new tasks), ``DRAINING`` (keeps its
tasks, takes no new ones) or ``DEAD`` (its KV and running calls are lost; a
replica may join again under the same id).
"""

from __future__ import annotations

import enum

from scheduler.errors import InvalidEvent
from scheduler.events import (
    CallFailed,
    CallFinished,
    NextCall,
    TaskCancelled,
    TaskFinished,
    ToolFinished,
    ToolStarted,
)


class TaskState(enum.Enum):
    NEW = "new"  # only before TaskArrived is processed
    QUEUED = "queued"
    READY = "ready"
    RUNNING = "running"
    AWAITING = "awaiting"
    TOOL = "tool"
    DONE = "done"
    REJECTED = "rejected"
    FAILED = "failed"
    CANCELLED = "cancelled"


class TaskTrigger(enum.Enum):
    QUEUE = "queue"  # wait for admission (no KV room anywhere)
    PLACE = "place"  # pinned on a replica with KV reserved; call waits for a slot
    START_CALL = "start_call"
    FINISH_CALL = "finish_call"
    START_TOOL = "start_tool"
    FINISH = "finish"
    REJECT = "reject"
    FAIL = "fail"
    CANCEL = "cancel"


class ReplicaState(enum.Enum):
    ABSENT = "absent"  # never joined
    ACTIVE = "active"
    DRAINING = "draining"
    DEAD = "dead"


class ReplicaTrigger(enum.Enum):
    JOIN = "join"
    DRAIN = "drain"
    DIE = "die"


TERMINAL: frozenset[TaskState] = frozenset(
    {TaskState.DONE, TaskState.REJECTED, TaskState.FAILED, TaskState.CANCELLED}
)
_LIVE = frozenset(TaskState) - TERMINAL - {TaskState.NEW}

S, T = TaskState, TaskTrigger
TASK_TRANSITIONS: dict[tuple[TaskState, TaskTrigger], TaskState] = {
    # admission
    (S.NEW, T.QUEUE): S.QUEUED,
    (S.NEW, T.PLACE): S.READY,
    (S.NEW, T.REJECT): S.REJECTED,
    (S.QUEUED, T.PLACE): S.READY,
    # a call waits for its slot, runs, answers
    (S.READY, T.START_CALL): S.RUNNING,
    (S.RUNNING, T.FINISH_CALL): S.AWAITING,
    # after a call: a tool, the next call (placed again if its KV is gone), or done
    (S.AWAITING, T.START_TOOL): S.TOOL,
    (S.AWAITING, T.PLACE): S.READY,
    (S.AWAITING, T.QUEUE): S.QUEUED,
    (S.AWAITING, T.FINISH): S.DONE,
    (S.TOOL, T.PLACE): S.READY,
    (S.TOOL, T.QUEUE): S.QUEUED,
    # failover / retry: the call goes back to waiting, here or elsewhere
    (S.READY, T.PLACE): S.READY,
    (S.READY, T.QUEUE): S.QUEUED,
    (S.RUNNING, T.PLACE): S.READY,
    (S.RUNNING, T.QUEUE): S.QUEUED,
}
for _s in _LIVE:
    TASK_TRANSITIONS[(_s, T.FAIL)] = S.FAILED
    TASK_TRANSITIONS[(_s, T.CANCEL)] = S.CANCELLED
del S, T

R, RT = ReplicaState, ReplicaTrigger
REPLICA_TRANSITIONS: dict[tuple[ReplicaState, ReplicaTrigger], ReplicaState] = {
    (R.ABSENT, RT.JOIN): R.ACTIVE,
    (R.DEAD, RT.JOIN): R.ACTIVE,
    (R.ACTIVE, RT.DRAIN): R.DRAINING,
    (R.ACTIVE, RT.DIE): R.DEAD,
    (R.DRAINING, RT.DIE): R.DEAD,
}
del R, RT

# External task events and the states that accept them (TaskArrived: only for
# an unknown task id).
TASK_EVENTS_ALLOWED: dict[type, frozenset[TaskState]] = {
    CallFinished: frozenset({TaskState.RUNNING}),
    CallFailed: frozenset({TaskState.RUNNING}),
    ToolStarted: frozenset({TaskState.AWAITING}),
    ToolFinished: frozenset({TaskState.TOOL}),
    NextCall: frozenset({TaskState.AWAITING}),
    TaskFinished: frozenset({TaskState.AWAITING}),
    TaskCancelled: _LIVE,
}


def next_task_state(state: TaskState, trigger: TaskTrigger) -> TaskState:
    try:
        return TASK_TRANSITIONS[(state, trigger)]
    except KeyError:
        raise InvalidEvent(
            f"task cannot {trigger.value} in state {state.value}", state=state
        ) from None


def next_replica_state(state: ReplicaState, trigger: ReplicaTrigger) -> ReplicaState:
    try:
        return REPLICA_TRANSITIONS[(state, trigger)]
    except KeyError:
        raise InvalidEvent(
            f"replica cannot {trigger.value} in state {state.value}", state=state
        ) from None
