"""The discrete-event loop: workload -> events -> scheduler -> decisions ->
simulated engines -> events. The scheduler is the production core (or a
baseline router with the same ``handle(event) -> list[Decision]`` interface).
"""

from __future__ import annotations

import heapq
import time as wallclock
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol, assert_never

from scheduler.baselines import (
    CacheAwareRouter,
    ContinuumScheduler,
    PinKV,
    RoundRobinRouter,
    StickyRouter,
    ThunderAgentScheduler,
)
from scheduler.config import SchedulerConfig, v1
from scheduler.core import SchedulerCore
from scheduler.decisions import Decision, Fail, Reject, ReleaseCause, ReleaseKV, RunCall, WarmUp
from scheduler.events import (
    CallFinished,
    Event,
    ReplicaDied,
    ReplicaJoined,
    TaskArrived,
    TaskFinished,
    Tick,
    ToolFinished,
    ToolStarted,
    WarmedUp,
)
from scheduler.policies.ordering import ordering_by_name
from sim.engine import SimCall, SimEngine
from sim.metrics import RunData, SimResult, summarize
from sim.model import EngineSpec
from sim.workload import TaskPlan, WorkloadGenerator, WorkloadSpec

DEFAULT_ORDERING = "edf"  # EDF and LAS gave the same p95 (README, "A simulated 64-replica fleet")
POLICIES = (
    "ours",
    "ours-v1",
    "ours-las",
    "ours-edf",
    "sticky",
    "thunderagent",
    "continuum",
    "cache_aware",
    "round_robin",
)
_ENDED = (ReleaseCause.TASK_DONE, ReleaseCause.TASK_FAILED, ReleaseCause.CANCELLED)


class Scheduler(Protocol):
    def handle(self, event: Event) -> Sequence[Decision | PinKV]: ...


# ------------------------------------------------ the simulator's own events


@dataclass(frozen=True, slots=True)
class Arrival:
    """A task arrives (the workload's next one is pushed when it is handled)."""

    plan: TaskPlan


@dataclass(frozen=True, slots=True)
class Wake:
    """An engine's next phase change is due; stale when the engine's ``version``
    moved on since (its work changed) or it died."""

    engine: SimEngine
    version: int


@dataclass(frozen=True, slots=True)
class ToolDone:
    """The task's tool call returns."""

    task_id: str


@dataclass(frozen=True, slots=True)
class Kill:
    """The replica fails (``SimConfig.kills``)."""

    replica_id: str


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Record the engines' cumulative counters under ``label`` ("start", "end")."""

    label: str


SimEvent = Arrival | Wake | ToolDone | Kill | Snapshot | Tick


@dataclass(frozen=True, slots=True)
class SimConfig:
    replicas: int = 8
    rate: float = 1.0  # task arrivals per second
    duration_s: float = 900.0  # arrivals stop here
    warmup_s: float = 120.0  # tasks arriving earlier are not measured
    drain_s: float = 1200.0  # after duration: wait at most this for measured tasks
    seed: int = 0
    engine: EngineSpec = field(default_factory=EngineSpec)
    workload: WorkloadSpec = field(default_factory=WorkloadSpec)
    scheduler: SchedulerConfig | None = None
    """The scheduler's settings, used as given; None: the defaults, with re-prefill
    priced at the engine's prefill rate."""
    kills: tuple[tuple[float, int], ...] = ()  # (time, replica index) failures
    concurrency: int | None = None
    """Closed loop (a fixed workload only): this many tasks at once from t = 0, the
    next one arriving when one ends (finished, failed or rejected), as the
    end-to-end benchmark runs them; every task is measured."""

    @property
    def scheduler_config(self) -> SchedulerConfig:
        if self.scheduler is not None:
            return self.scheduler
        return SchedulerConfig(prefill_tokens_per_s=self.engine.prefill_tokens_per_s)

    def __post_init__(self) -> None:
        if self.replicas < 1:
            raise ValueError("replicas must be >= 1")
        if self.rate <= 0:
            raise ValueError("rate must be > 0")
        if not 0 <= self.warmup_s < self.duration_s:
            raise ValueError("need 0 <= warmup < duration")
        if self.drain_s < 0:
            raise ValueError("drain must be >= 0")
        if self.concurrency is not None and self.concurrency < 1:
            raise ValueError("concurrency must be >= 1")


@dataclass(slots=True)
class SimTask:
    plan: TaskPlan
    k: int = 0  # index of its next call
    history: int = 0
    finished: float | None = None
    rejected: bool = False
    failed: bool = False
    first_start: float | None = None
    call_latencies: list[float] = field(default_factory=list)
    in_flight: str | None = None  # replica of its running call
    settled: bool = False  # finished, rejected or failed


def make_scheduler(
    name: str, cfg: SimConfig, prompt_of: Callable[[str], tuple[str, int]]
) -> Scheduler:
    sched_cfg = cfg.scheduler_config
    if name == "ours":
        return SchedulerCore(sched_cfg, ordering=ordering_by_name(DEFAULT_ORDERING))
    if name == "ours-v1":  # peak reservations, as before admission v2
        return SchedulerCore(v1(sched_cfg), ordering=ordering_by_name(DEFAULT_ORDERING))
    if name.startswith("ours-"):
        return SchedulerCore(sched_cfg, ordering=ordering_by_name(name[5:]))
    if name == "cache_aware":
        return CacheAwareRouter(prompt_of, system_prompt_tokens=cfg.workload.system_prompt_tokens)
    if name == "round_robin":
        return RoundRobinRouter()
    if name == "sticky":
        return StickyRouter()
    if name == "thunderagent":
        return ThunderAgentScheduler(prompt_of)
    if name == "continuum":
        return ContinuumScheduler()
    raise ValueError(f"unknown policy {name!r} (choose from {', '.join(POLICIES)})")


class Simulation:
    def __init__(
        self,
        cfg: SimConfig,
        policy: str,
        progress: Callable[[str, float, int, int], None] | None = None,
        progress_every_s: float = 2.0,
        workload: list[TaskPlan] | None = None,
    ) -> None:
        self.cfg = cfg
        self.policy = policy
        self.tasks: dict[str, SimTask] = {}
        self.sched = make_scheduler(policy, cfg, self._prompt_of)
        sp = cfg.workload.system_prompt_tokens
        fcfs = policy == "continuum"  # program-level FCFS in the engines' waiting queues
        self.engines = {
            f"r{i}": SimEngine(f"r{i}", cfg.engine, sp, program_fcfs=fcfs)
            for i in range(cfg.replicas)
        }
        self._heap: list[tuple[float, int, SimEvent]] = []
        self._seq = 0
        self._now = 0.0
        self._gen = WorkloadGenerator(cfg.workload, cfg.rate, cfg.seed)
        self._fixed = list(workload) if workload is not None else None
        self._progress = progress
        self._progress_every = progress_every_s
        # the core's Tick when a queued task may buy its room (baselines have none)
        self._wake_at: Callable[[], float | None] | None = getattr(self.sched, "wake_at", None)
        self._tick_at = float("inf")
        self.events = 0
        self.settled = 0
        self._outstanding = 0  # measured tasks not settled yet
        self.snapshots: dict[str, dict[str, float]] = {}
        self.rejects: dict[str, int] = {}

    @property
    def now(self) -> float:
        return self._now

    # ---------------------------------------------------------- plumbing

    def _prompt_of(self, task_id: str) -> tuple[str, int]:
        st = self.tasks[task_id]
        return st.plan.agent, st.history + st.plan.new_tokens[min(st.k, st.plan.calls - 1)]

    def _push(self, t: float, event: SimEvent) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, event))

    def _send(self, event: Event) -> None:
        self.events += 1
        for d in self.sched.handle(event):
            self._apply(d)
        wake = self._wake_at() if self._wake_at is not None else None
        if wake is not None and wake < self._tick_at:  # (a later one is skipped when due)
            self._tick_at = max(wake, self._now)
            self._push(self._tick_at, Tick(self._tick_at))

    def _apply(self, d: Decision | PinKV) -> None:
        if isinstance(d, RunCall):
            st = self.tasks[d.task_id]
            plan = st.plan
            call = SimCall(
                task_id=d.task_id,
                agent=plan.agent,
                prompt=st.history + plan.new_tokens[st.k],
                output=plan.output_tokens[st.k],
                history_before=st.history,
                submitted=self._now,
                priority=plan.arrival,
            )
            st.in_flight = d.replica_id
            eng = self.engines[d.replica_id]
            eng.submit(call, self._now)
            self._wake(eng)
        elif isinstance(d, ReleaseKV):
            eng = self.engines[d.replica_id]
            if eng.abort_warm(d.task_id, self._now):  # its warm-up ran there
                self._wake(eng)
            eng.drop(d.task_id, self._now, offload=d.cause not in _ENDED)
        elif isinstance(d, WarmUp):  # prefill its history there now, no output
            st = self.tasks[d.task_id]
            eng = self.engines[d.replica_id]
            warm = SimCall(
                d.task_id, st.plan.agent, st.history, 0, st.history, self._now, warm=True
            )
            eng.submit(warm, self._now)
            self._wake(eng)
        elif isinstance(d, PinKV):
            eng = self.engines[d.replica_id]
            if eng.alive:
                eng.pin(d.task_id, self._now + d.ttl_s)
                self._wake(eng)
        elif isinstance(d, Reject):
            st = self.tasks[d.task_id]
            st.rejected = True
            self._settle(st)
            why = d.reason.split(" (")[0]
            self.rejects[why] = self.rejects.get(why, 0) + 1
        elif isinstance(d, Fail):
            st = self.tasks[d.task_id]
            st.failed = True
            self._settle(st)

    def _measured(self, st: SimTask) -> bool:
        cfg = self.cfg
        return bool(cfg.concurrency) or cfg.warmup_s <= st.plan.arrival < cfg.duration_s

    def _settle(self, st: SimTask) -> None:
        if not st.settled:
            st.settled = True
            self.settled += 1
            if self._measured(st):
                self._outstanding -= 1
            if self.cfg.concurrency:
                self._arrive_next(self._now)

    def _wake(self, eng: SimEngine) -> None:
        t = eng.next_change()
        if t is not None:
            self._push(t, Wake(eng, eng.version))

    def _share_host(self, t: float, contention: float) -> None:
        """Replicas on one host slow each other: each runs ``1 + contention x``
        (the other busy ones) times slower from ``t`` on."""
        live = [e for e in self.engines.values() if e.alive]
        busy = sum(e.busy for e in live)
        for e in live:
            if e.set_slowdown(1.0 + contention * (busy - e.busy), t):
                self._wake(e)

    def _arrive_next(self, t: float) -> None:
        """Closed loop: the next task of the workload arrives at ``t``."""
        plan = self._next_plan()
        if plan is not None:
            self._outstanding += 1  # from now: its arrival is pending
            self._push(t, Arrival(replace(plan, arrival=t)))

    def _next_plan(self) -> TaskPlan | None:
        if self._fixed is not None:
            return self._fixed.pop(0) if self._fixed else None
        plan = self._gen.next_task()
        return plan if plan.arrival < self.cfg.duration_s else None

    # -------------------------------------------------------------- run

    def run(self) -> SimResult:
        cfg = self.cfg
        wall0 = wallclock.perf_counter()
        max_running = cfg.scheduler_config.max_running_calls
        for rid, eng in self.engines.items():
            self._send(ReplicaJoined(0.0, rid, eng.capacity, max_running))
        if cfg.concurrency:
            if self._fixed is None:
                raise ValueError("a closed loop (concurrency) needs a fixed workload")
            for _ in range(cfg.concurrency):
                self._arrive_next(0.0)
        elif (first := self._next_plan()) is not None:
            self._push(first.arrival, Arrival(first))
        for t, idx in cfg.kills:
            self._push(t, Kill(f"r{idx}"))
        self._push(cfg.warmup_s, Snapshot("start"))
        self._push(cfg.duration_s, Snapshot("end"))
        end = cfg.duration_s + cfg.drain_s
        last_progress = wall0
        heap = self._heap
        contention = cfg.engine.host_contention
        while heap:
            t, _, event = heapq.heappop(heap)
            if t > end:
                break
            self._now = t
            match event:
                case Wake(engine=eng, version=version):
                    if version != eng.version or not eng.alive:
                        continue
                    for call in eng.step(t):
                        self._call_done(call, eng.id)
                    self._wake(eng)
                case ToolDone(task_id=task_id):
                    self._send(ToolFinished(t, task_id))
                case Arrival(plan=plan):
                    st = SimTask(plan)
                    self.tasks[plan.task_id] = st
                    if self._measured(st) and not cfg.concurrency:
                        self._outstanding += 1
                    self._send(
                        TaskArrived(
                            t,
                            plan.task_id,
                            plan.agent,
                            plan.calls,
                            plan.expected_history,
                            prompt_tokens=plan.new_tokens[0],
                        )
                    )
                    if not cfg.concurrency and (nxt := self._next_plan()) is not None:
                        self._push(max(nxt.arrival, t), Arrival(nxt))
                case Kill(replica_id=rid):
                    self._kill(rid)
                case Snapshot(label=label):
                    self.snapshots[label] = self._snapshot(t)
                case Tick():
                    if t == self._tick_at:
                        self._tick_at = float("inf")
                        self._send(Tick(t))
                case _:
                    assert_never(event)
            if contention:
                self._share_host(t, contention)
            if self._progress is not None and self.events % 4096 == 0:
                now_wall = wallclock.perf_counter()
                if now_wall - last_progress >= self._progress_every:
                    last_progress = now_wall
                    live = len(self.tasks) - self.settled
                    self._progress(self.policy, t, self.settled, live)
            if self._outstanding <= 0 and (t >= cfg.duration_s or cfg.concurrency):
                break
        self.snapshots.setdefault("end", self._snapshot(self._now))
        return summarize(self._run_data(), wallclock.perf_counter() - wall0)

    def _run_data(self) -> RunData:
        cfg = self.cfg
        return RunData(
            policy=self.policy,
            rate=cfg.rate,
            replicas=cfg.replicas,
            warmup_s=cfg.warmup_s,
            duration_s=cfg.duration_s,
            tasks=self.tasks.values(),
            engines=[e.stats for e in self.engines.values()],
            snapshots=self.snapshots,
            sim_time_s=self._now,
            events=self.events,
            rejects=self.rejects,
            core_stats=self.sched.stats() if isinstance(self.sched, SchedulerCore) else None,
        )

    def _snapshot(self, t: float) -> dict[str, float]:
        busy = prefill = kv = 0.0
        for eng in self.engines.values():
            eng.advance(t) if eng.alive else None
            busy += eng.stats.busy_s
            prefill += eng.stats.prefill_busy_s
            kv += eng.stats.kv_token_s / max(1, eng.capacity)
        return {"t": t, "busy_s": busy, "prefill_busy_s": prefill, "kv_frac_s": kv}

    def _call_done(self, call: SimCall, rid: str) -> None:
        if call.warm:
            self._send(WarmedUp(self._now, call.task_id, rid))
            return
        st = self.tasks[call.task_id]
        if st.in_flight != rid:  # pragma: no cover - a call of a re-placed task
            return
        st.in_flight = None
        t = self._now
        st.history = call.prompt + call.output
        st.k += 1
        if st.first_start is None:
            st.first_start = call.started
        st.call_latencies.append(t - call.submitted)
        self._send(
            CallFinished(
                t, call.task_id, rid, call.prompt, call.cached, call.output, t - call.started
            )
        )
        if st.k >= st.plan.calls:
            st.finished = t
            self._settle(st)
            self._send(TaskFinished(t, call.task_id))
        else:
            self._send(ToolStarted(t, call.task_id, "tool"))
            self._push(t + st.plan.tool_s[st.k - 1], ToolDone(call.task_id))

    def _kill(self, rid: str) -> None:
        eng = self.engines[rid]
        if not eng.alive:
            return
        lost = eng.kill(self._now)
        for call in lost:
            if not call.warm:
                self.tasks[call.task_id].in_flight = None
        self._send(ReplicaDied(self._now, rid))
        reroute = getattr(self.sched, "reroute", None)
        if reroute is not None:  # a router resends the lost calls itself
            for call in lost:
                for d in reroute(call.task_id) if not call.warm else ():
                    self._apply(d)
