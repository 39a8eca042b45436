"""Property tests of the scheduler core (hypothesis).

A small driver plays the runtime: it turns random actions into events that are
valid for the state it has learned from the core's decisions, applies the
decisions, and checks after every event that

* admitted resident history never exceeds a replica's KV budget;
* every call of a task runs on the replica holding its KV unless the task was
  re-placed (``Replace``), its KV released (``ReleaseKV``) or its replica died;
* the core's own books balance (``check_invariants``);
* a warm-up (``WarmUp``) goes to a replica with a free compute slot and no call
  waiting for one, for a task in its tool whose KV was released, only while no task
  waits for admission, and a task that waits for admission never waits for room a
  warmed task holds (its warm-up is cancelled first).

Then, with arrivals stopped, every task must finish (no starvation), the same
actions must give the same decisions (determinism), and random, possibly
invalid events must either apply or raise ``InvalidEvent`` and change nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler import (
    CallFailed,
    CallFinished,
    Decision,
    Event,
    Fail,
    InvalidEvent,
    NextCall,
    Reject,
    ReleaseCause,
    ReleaseKV,
    Replace,
    ReplicaDied,
    ReplicaDraining,
    ReplicaJoined,
    RunCall,
    SchedulerConfig,
    SchedulerCore,
    TaskArrived,
    TaskCancelled,
    TaskFinished,
    Tick,
    ToolFinished,
    ToolStarted,
    WarmedUp,
    WarmUp,
)
from scheduler.policies import LeastAttainedService

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

action = st.tuples(st.integers(0, 12), st.integers(0, 1_000), st.integers(0, 1_000))
actions = st.lists(action, min_size=1, max_size=120)
configs = st.builds(
    SchedulerConfig,
    kv_headroom=st.sampled_from([0.0, 0.1]),
    admission_queue_limit=st.sampled_from([0, 3, 100]),
    max_running_calls=st.integers(1, 4),
    retention_ratio=st.sampled_from([0.0, 1.0, 1e9]),
    waiting_kv_cap=st.sampled_from([0.3, 1.0]),
    max_migrations=st.integers(0, 2),
    max_call_retries=st.integers(0, 2),
    starvation_s=st.sampled_from([1.0, 30.0]),
    prefill_tokens_per_s=st.just(10_000.0),
    reservation=st.sampled_from(["usage", "peak"]),
    growth_prior_tokens=st.sampled_from([0, 1024]),
    max_pauses=st.sampled_from([None, 0, 1, 3]),
    pause_low_water=st.sampled_from([0.5, 0.9, 1.0]),
    work_conserving=st.booleans(),
    learn_prefill_speed=st.booleans(),
    drain_window_s=st.sampled_from([1.0, 120.0]),
    shed_slo_s=st.sampled_from([None, 0.5, 50.0]),
    warm_up=st.booleans(),
    warm_up_lead=st.sampled_from([0.0, 2.0, 1e6]),
    warm_up_slots=st.integers(1, 2),
    warm_up_max_running=st.sampled_from([0, 8]),
)
PAUSES = (
    ReleaseCause.TOOL_WAIT,
    ReleaseCause.WAITING_CAP,
    ReleaseCause.OVER_BUDGET,
    ReleaseCause.MAKE_ROOM,
)


@dataclass
class Driver:
    core: SchedulerCore
    t: float = 0.0
    n_tasks: int = 0
    n_replicas: int = 0
    running: dict[str, str] = field(default_factory=dict)  # task -> replica
    awaiting: list[str] = field(default_factory=list)
    in_tool: list[str] = field(default_factory=list)
    live: set[str] = field(default_factory=set)
    history: dict[str, int] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    holder: dict[str, str | None] = field(default_factory=dict)  # where the task's KV is
    alive: list[str] = field(default_factory=list)
    draining: list[str] = field(default_factory=list)
    dead: list[str] = field(default_factory=list)
    log: list[Decision] = field(default_factory=list)
    pauses: dict[str, int] = field(default_factory=dict)
    warming: dict[str, str] = field(default_factory=dict)  # task -> replica of its warm-up
    warm_ups: int = 0

    def send(self, event: Event) -> list[Decision]:
        decisions = self.core.handle(event)
        self.log.extend(decisions)
        for d in decisions:
            self.apply(d)
        self.check()
        self.check_warm_ups(decisions)
        return decisions

    def check_warm_ups(self, decisions: list[Decision]) -> None:
        core = self.core
        for d in decisions:
            if isinstance(d, WarmUp):
                self.warm_ups += 1
                assert core.queued == 0, d  # never while an admission waits
                r = core.replica(d.replica_id)
                assert r is not None and r.ready_calls == 0, (d, r)
                assert r.running_calls < r.max_running_calls, (d, r)
        # a waiting admission never waits for room a warmed task holds
        head = core._queue.head()
        if head is not None:
            need = core.admission.reservation(head)
            for rid, warm in core._warm_on.items():
                r = core._replicas[rid]
                held = sum(t.reserved for t in warm.values() if core._warmed(t, rid))
                if held and r.state.value == "active" and r.budget >= need:
                    assert r.free + held < need, (rid, r.free, held, need)

    def apply(self, d: Decision) -> None:
        if isinstance(d, RunCall):
            held = self.holder.get(d.task_id)
            assert held is None or held == d.replica_id, (d, held)  # sticky
            self.holder[d.task_id] = d.replica_id
            self.running[d.task_id] = d.replica_id
        elif isinstance(d, ReleaseKV):
            assert self.holder.get(d.task_id) in (None, d.replica_id), d
            self.holder[d.task_id] = None
            if d.cause is ReleaseCause.STALE:
                assert d.task_id in self.in_tool, d  # only a wait long overdue
            if d.cause in PAUSES:
                self.pauses[d.task_id] = self.pauses.get(d.task_id, 0) + 1
                cap = self.core.config.max_pauses
                assert cap is None or self.pauses[d.task_id] <= cap, (d, cap)  # anti-thrash
        elif isinstance(d, Replace):
            self.holder[d.task_id] = d.to_replica
        elif isinstance(d, Reject | Fail):
            self.forget(d.task_id)
        elif isinstance(d, WarmUp):
            assert d.task_id in self.in_tool, d  # only while its tool runs
            assert self.holder.get(d.task_id) in (None, d.replica_id), d  # it held no KV
            assert d.tokens == self.history[d.task_id] > 0, d  # its prompt so far
            self.holder[d.task_id] = d.replica_id
            self.warming[d.task_id] = d.replica_id

    def forget(self, tid: str) -> None:
        self.live.discard(tid)
        self.running.pop(tid, None)
        if tid in self.awaiting:
            self.awaiting.remove(tid)
        if tid in self.in_tool:
            self.in_tool.remove(tid)
        self.holder.pop(tid, None)
        self.warming.pop(tid, None)

    def check(self) -> None:
        core = self.core
        core.check_invariants()
        resident: dict[str, int] = {}
        for tid in self.live:
            v = core.task(tid)
            assert v is not None, tid
            if v.kv_held:
                assert v.replica_id is not None
                resident[v.replica_id] = resident.get(v.replica_id, 0) + v.history_tokens
        for r in core.replicas():
            assert resident.get(r.replica_id, 0) <= r.kv_budget_tokens, r
            assert r.kv_reserved_tokens <= r.kv_budget_tokens, r

    def tick(self, dt: float) -> None:
        self.t += dt

    def step(self, kind: int, a: int, b: int) -> None:
        self.tick(b / 100.0)
        t = self.t
        if kind == 0 or (kind in (1, 2, 3, 4, 5, 10) and not self.live):
            tid = f"t{self.n_tasks}"
            self.n_tasks += 1
            self.live.add(tid)
            self.history[tid] = 0
            self.calls[tid] = 0
            prompt = [0, 200 + a][a % 2]  # the first prompt's size, when the driver says
            self.send(
                TaskArrived(
                    t,
                    tid,
                    f"ag{a % 3}",
                    1 + a % 4,
                    [500, 3_000, 20_000][b % 3],
                    prompt_tokens=prompt,
                )
            )
        elif kind == 1 and self.running:
            tid = sorted(self.running)[a % len(self.running)]
            rid = self.running.pop(tid)
            prompt = self.history[tid] + 100 + a % 700
            cached = min(self.history[tid], prompt) if self.holder.get(tid) == rid else 0
            out = b % 300
            self.history[tid] = prompt + out
            self.calls[tid] += 1
            self.awaiting.append(tid)
            self.send(CallFinished(t, tid, rid, prompt, cached, out, b / 1000.0))
        elif kind == 2 and self.awaiting:
            tid = self.awaiting.pop(a % len(self.awaiting))
            self.in_tool.append(tid)
            self.send(ToolStarted(t, tid, ["fast", "slow"][b % 2], [0.1, 20.0][b % 2]))
        elif kind == 3 and self.in_tool:
            tid = self.in_tool.pop(a % len(self.in_tool))
            self.send(ToolFinished(t, tid))
        elif kind == 4 and self.awaiting:
            tid = self.awaiting.pop(a % len(self.awaiting))
            self.send(NextCall(t, tid))
        elif kind == 5 and self.awaiting:
            tid = self.awaiting[a % len(self.awaiting)]
            self.forget(tid)
            self.send(TaskFinished(t, tid))
        elif kind == 6 and self.live and a % 4 == 0:
            tid = sorted(self.live)[b % len(self.live)]
            self.forget(tid)
            self.send(TaskCancelled(t, tid))
        elif kind == 7 or (kind in (8, 9) and not self.alive):
            if self.dead and a % 2:
                rid = self.dead.pop(0)
            else:
                rid = f"r{self.n_replicas}"
                self.n_replicas += 1
            self.alive.append(rid)
            self.send(ReplicaJoined(t, rid, [5_000, 30_000, 100_000][b % 3], None))
        elif kind == 8 and self.alive and a % 3 == 0:
            rid = self.alive.pop(a % len(self.alive))
            self.draining.append(rid)
            self.send(ReplicaDraining(t, rid))
        elif kind == 9 and (self.alive or self.draining) and a % 3 == 0:
            pool = self.alive + self.draining
            rid = pool[a % len(pool)]
            (self.alive if rid in self.alive else self.draining).remove(rid)
            self.dead.append(rid)
            for tid, r in list(self.running.items()):
                if r == rid:
                    del self.running[tid]  # the call is lost with the replica
            for tid, h in list(self.holder.items()):
                if h == rid:
                    self.holder[tid] = None
            self.send(ReplicaDied(t, rid))
        elif kind == 10 and self.running:
            tid = sorted(self.running)[a % len(self.running)]
            rid = self.running.pop(tid)
            self.send(CallFailed(t, tid, rid, "boom"))
        elif kind == 11 and self.warming:
            tid = sorted(self.warming)[a % len(self.warming)]
            rid = self.warming.pop(tid)
            self.send(WarmedUp(t, tid, rid, ok=b % 5 != 0))  # (maybe stale: ignored)
        elif kind == 12 and (wake := self.core.wake_at()) is not None:
            # nothing else happens until the queue's head may buy its room: it does
            assert wake > self.core.now, wake  # (a head that could buy already did)
            self.t = max(t, wake)
            head = self.core._queue.head()
            assert head is not None
            out = self.send(Tick(self.t))
            assert any(isinstance(d, RunCall) and d.task_id == head.id for d in out), out
        else:
            self.tick(1.0)

    def drain(self) -> None:
        """No more arrivals or failures: finish every call, tool and task."""
        self.send(ReplicaJoined(self.t, "huge", 10_000_000, 64))
        for _ in range(20 * (self.n_tasks + 1)):
            if not self.live:
                return
            self.tick(1.0)
            t = self.t
            if self.running:
                tid, rid = sorted(self.running.items())[0]
                del self.running[tid]
                prompt = self.history[tid] + 10
                cached = min(self.history[tid], prompt) if self.holder.get(tid) == rid else 0
                self.history[tid] = prompt + 5
                self.awaiting.append(tid)
                self.send(CallFinished(t, tid, rid, prompt, cached, 5, 0.01))
            elif self.awaiting:
                tid = self.awaiting.pop(0)
                self.forget(tid)
                self.send(TaskFinished(t, tid))
            elif self.in_tool:
                tid = self.in_tool.pop(0)
                self.send(ToolFinished(t, tid))
        raise AssertionError(f"starvation: tasks never finished: {sorted(self.live)[:10]}")


def run(cfg: SchedulerConfig, acts: list[tuple[int, int, int]], las: bool = False) -> Driver:
    ordering = LeastAttainedService() if las else None
    d = Driver(SchedulerCore(cfg, ordering=ordering))
    for kind, a, b in acts:
        d.step(kind, a, b)
    return d


@SETTINGS
@given(cfg=configs, acts=actions, las=st.booleans())
def test_budget_stickiness_and_no_starvation(
    cfg: SchedulerConfig, acts: list[tuple[int, int, int]], las: bool
) -> None:
    d = run(cfg, acts, las)
    d.drain()
    assert d.core.live_tasks == 0 and d.core.queued == 0
    # the counters are consistent with each other and with the run
    s = d.core.stats()
    assert 0.0 <= s.idle_while_waiting_s <= s.waiting_s + 1e-9 <= s.observed_s + 2e-9
    assert all(w.admission_s >= 0 and w.slot_s >= 0 and w.done for w in s.tasks.values())
    assert all(w.total_s <= s.waiting_s + 1e-6 for w in s.tasks.values())
    for kv in s.replicas.values():
        assert kv.reserved_tokens == 0
        assert 0 <= kv.mean_reserved_tokens <= kv.peak_reserved_tokens * (1 + 1e-9)
    if cfg.shed_slo_s is None:
        assert "shed" not in s.counters


@SETTINGS
@given(cfg=configs, acts=actions)
def test_determinism(cfg: SchedulerConfig, acts: list[tuple[int, int, int]]) -> None:
    assert run(cfg, acts).log == run(cfg, acts).log


def _snapshot(core: SchedulerCore, tids: list[str]) -> tuple[object, ...]:
    return (
        core.now,
        core.queued,
        core.live_tasks,
        tuple(core.replicas()),
        tuple(core.task(t) for t in tids),
    )


raw_event = st.one_of(
    st.builds(
        CallFinished,
        st.floats(0, 50),
        st.sampled_from(["t0", "t1", "t9"]),
        st.sampled_from(["r0", "r1", "r9"]),
        st.integers(-5, 5_000),
        st.integers(-5, 5_000),
        st.integers(-1, 100),
        st.floats(-1, 5),
    ),
    st.builds(ToolStarted, st.floats(0, 50), st.sampled_from(["t0", "t1", "t9"]), st.just("x")),
    st.builds(ToolFinished, st.floats(0, 50), st.sampled_from(["t0", "t1", "t9"])),
    st.builds(NextCall, st.floats(0, 50), st.sampled_from(["t0", "t1", "t9"])),
    st.builds(TaskFinished, st.floats(0, 50), st.sampled_from(["t0", "t1", "t9"])),
    st.builds(TaskCancelled, st.floats(0, 50), st.sampled_from(["t0", "t1", "t9"])),
    st.builds(
        CallFailed, st.floats(0, 50), st.sampled_from(["t0", "t1"]), st.sampled_from(["r0", "r1"])
    ),
    st.builds(
        ReplicaJoined,
        st.floats(0, 50),
        st.sampled_from(["r0", "r1", "r2"]),
        st.integers(-1, 50_000),
    ),
    st.builds(ReplicaDraining, st.floats(0, 50), st.sampled_from(["r0", "r1", "r9"])),
    st.builds(ReplicaDied, st.floats(0, 50), st.sampled_from(["r0", "r1", "r9"])),
    st.builds(
        TaskArrived,
        st.floats(0, 50),
        st.sampled_from(["t0", "t1", "t2"]),
        st.just("a"),
        st.integers(0, 3),
        st.integers(-1, 60_000),
    ),
)


@SETTINGS
@given(events=st.lists(raw_event, max_size=40))
def test_invalid_events_raise_typed_error_and_leave_state_unchanged(events: list[Event]) -> None:
    core = SchedulerCore(SchedulerConfig(max_running_calls=1))
    tids = ["t0", "t1", "t2", "t9"]
    for e in events:
        before = _snapshot(core, tids)
        try:
            core.handle(e)
        except InvalidEvent:
            assert _snapshot(core, tids) == before
        core.check_invariants()
