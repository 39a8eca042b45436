"""The control-plane core of the agent executor: a sans-I/O scheduler (events
in, decisions out), its policies and the baselines behind the same interface.
The simulator (``sim/``) and the runtime (``executor/``) drive it; nothing here
imports them.

Drive it::

    core = SchedulerCore(SchedulerConfig(max_running_calls=16))
    core.handle(ReplicaJoined(0.0, "r0", kv_capacity_tokens=500_000))
    for decision in core.handle(TaskArrived(0.1, "t1", "coder", 20, 30_000)):
        ...  # RunCall("t1", "r0", cold=True): start the call there
"""

from scheduler.config import SchedulerConfig
from scheduler.core import SchedulerCore
from scheduler.decisions import (
    Decision,
    Fail,
    MoveCause,
    Queue,
    Reject,
    ReleaseCause,
    ReleaseKV,
    Replace,
    ReplicaDrained,
    RunCall,
    WarmUp,
)
from scheduler.errors import InvalidEvent, SchedulerError
from scheduler.events import (
    CallFailed,
    CallFinished,
    Event,
    NextCall,
    ReplacementFailed,
    ReplicaDied,
    ReplicaDraining,
    ReplicaJoined,
    TaskArrived,
    TaskCancelled,
    TaskFinished,
    Tick,
    ToolFinished,
    ToolStarted,
    WarmedUp,
)
from scheduler.replica import ReplicaView
from scheduler.states import ReplicaState, TaskState
from scheduler.task import TaskView

__all__ = [
    "SchedulerCore",
    "SchedulerConfig",
    "TaskView",
    "ReplicaView",
    "Event",
    "TaskArrived",
    "CallFinished",
    "CallFailed",
    "ToolStarted",
    "ToolFinished",
    "NextCall",
    "TaskFinished",
    "TaskCancelled",
    "ReplicaJoined",
    "ReplicaDraining",
    "ReplicaDied",
    "ReplacementFailed",
    "WarmedUp",
    "Tick",
    "Decision",
    "ReleaseCause",
    "MoveCause",
    "RunCall",
    "Queue",
    "ReleaseKV",
    "Replace",
    "Reject",
    "Fail",
    "ReplicaDrained",
    "WarmUp",
    "SchedulerError",
    "InvalidEvent",
    "TaskState",
    "ReplicaState",
]
