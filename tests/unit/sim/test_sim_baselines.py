"""The simulator's baselines beside the core (sticky, thunderagent, continuum)
and its host-memory KV tier (issue 15)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import pytest

from scheduler.baselines import ContinuumScheduler, PinKV, ThunderAgentScheduler
from scheduler.decisions import Decision, ReleaseKV, RunCall
from scheduler.events import (
    CallFinished,
    Event,
    ReplicaJoined,
    TaskArrived,
    TaskFinished,
    ToolFinished,
    ToolStarted,
)
from sim.engine import SimCall, SimEngine
from sim.model import EngineSpec
from sim.simulator import SimConfig, Simulation
from sim.workload import WorkloadSpec

NEW_POLICIES = ["sticky", "thunderagent", "continuum"]
# a small fleet whose KV holds only a few long histories: pressure all the time
TIGHT = EngineSpec(
    prefill_tokens_per_s=10_000.0,
    decode_tokens_per_s=100.0,
    kv_room_bytes=30_000,
    kv_bytes_per_token=1,
)
SHORT = WorkloadSpec(
    calls=8,
    history_tokens=12_000,
    system_prompt_tokens=500,
    first_message_tokens=500,
    tool_median_s=1.0,
    tool_p99_s=3.0,
)


def config(
    engine: EngineSpec | None = None,
    workload: WorkloadSpec | None = None,
    rate: float = 0.6,
    replicas: int = 4,
) -> SimConfig:
    return SimConfig(
        replicas=replicas,
        rate=rate,
        duration_s=300,
        warmup_s=60,
        drain_s=1500,
        seed=3,
        engine=engine or EngineSpec(),
        workload=workload or WorkloadSpec(),
    )


class Recorder:
    """Wraps a simulation's scheduler: every decision it returns, and a check
    run after every event."""

    def __init__(self, sim: Simulation, check: object = None) -> None:
        self.sim, self.inner, self.check = sim, sim.sched, check
        self.decisions: list[Decision | PinKV] = []
        sim.sched = self

    def handle(self, event: Event) -> Sequence[Decision | PinKV]:
        out = self.inner.handle(event)
        self.decisions.extend(out)
        if callable(self.check):
            self.check()
        return out

    def reroute(self, task_id: str) -> list[Decision]:
        return self.inner.reroute(task_id)  # type: ignore[attr-defined, no-any-return]


@pytest.mark.parametrize("policy", NEW_POLICIES)
def test_each_new_policy_completes_a_small_workload(policy: str) -> None:
    r = Simulation(config(), policy).run()
    assert r.completed > 20 and r.unfinished == 0 and r.rejected == 0 and r.failed == 0
    assert r.task_p95_s < 120


@pytest.mark.parametrize("policy", NEW_POLICIES)
def test_new_policies_finish_everything_under_kv_pressure(policy: str) -> None:
    r = Simulation(config(TIGHT, SHORT, rate=0.5), policy).run()
    assert r.completed > 10 and r.unfinished == 0 and r.failed == 0


def test_sticky_never_moves_a_task_and_spreads_first_calls_by_load() -> None:
    sim = Simulation(config(TIGHT, SHORT, rate=0.5), "sticky")
    rec = Recorder(sim)
    r = sim.run()
    assert r.unfinished == 0
    where: dict[str, set[str]] = {}
    for d in rec.decisions:
        if isinstance(d, RunCall):
            where.setdefault(d.task_id, set()).add(d.replica_id)
    assert len(where) > 10
    assert all(len(rs) == 1 for rs in where.values()), where
    assert len({next(iter(rs)) for rs in where.values()}) == 4  # every replica got tasks
    assert r.reprefilled_tokens > 0  # no admission control: the engines evict under pressure


def test_thunderagent_keeps_admitted_tokens_within_the_kv_budget_and_resumes() -> None:
    sim = Simulation(config(TIGHT, SHORT, rate=0.5), "thunderagent")
    ta = sim.sched
    assert isinstance(ta, ThunderAgentScheduler)
    worst = [0.0]

    def check() -> None:
        for rid, rep in ta.replicas.items():
            resident = ta.resident_tokens(rid)
            assert resident == rep.used and resident <= rep.budget
            worst[0] = max(worst[0], resident / rep.budget)

    rec = Recorder(sim, check)
    r = sim.run()
    assert r.unfinished == 0 and r.failed == 0
    assert worst[0] > 0.8  # the budget was the binding constraint
    assert ta.pauses > 0 and ta.resumes >= ta.pauses  # every paused program came back
    released = {
        d.task_id
        for d in rec.decisions
        if isinstance(d, ReleaseKV) and d.cause.name == "OVER_BUDGET"
    }
    cold = [d for d in rec.decisions if isinstance(d, RunCall) and d.task_id in released]
    assert len(cold) > len(released)  # first calls, and resumes that re-prefill
    assert r.reprefilled_tokens > 0
    assert sum(e.stats.evictions for e in sim.engines.values()) == 0  # it never overfilled


def events_for_one_replica(sched: ThunderAgentScheduler, prompts: dict[str, int]) -> None:
    sched.handle(ReplicaJoined(0.0, "r0", 1000))
    for i, (tid, _) in enumerate(prompts.items()):
        sched.handle(TaskArrived(0.1 * i, tid))


def test_thunderagent_pauses_the_smallest_acting_program_and_resumes_best_fit() -> None:
    prompt = {"a": 100, "b": 300, "c": 200}
    sched = ThunderAgentScheduler(
        lambda t: ("x", prompt[t]), memory_threshold=1.0, output_reserve=0
    )
    events_for_one_replica(sched, prompt)  # 600 of 1000 admitted
    assert sched.replicas["r0"].used == 600
    t = 1.0
    for tid in prompt:  # every call finishes (no output) and starts a tool
        sched.handle(CallFinished(t, tid, "r0", prompt[tid], 0, 0, 0.1))
        sched.handle(ToolStarted(t, tid, "tool"))
    prompt["c"] = 750  # c's next call needs 750: a (100) is paused, then b (300)
    out = sched.handle(ToolFinished(2.0, "c"))
    paused = [d.task_id for d in out if isinstance(d, ReleaseKV)]
    assert paused == ["a", "b"]
    assert [d for d in out if isinstance(d, RunCall)] == [RunCall("c", "r0", cold=False)]
    assert sched.resident_tokens("r0") == 750
    prompt["a"], prompt["b"] = 300, 350  # their tools' output grows them
    assert sched.handle(ToolFinished(2.5, "a")) == []  # 750 + 300 > 1000: stays paused
    assert sched.handle(ToolFinished(2.6, "b")) == []
    sched.handle(CallFinished(3.0, "c", "r0", 750, 0, 0, 0.1))
    out = sched.handle(TaskFinished(3.0, "c"))  # room: the largest first (b, then a)
    assert [d for d in out if isinstance(d, RunCall)] == [
        RunCall("b", "r0", cold=True),
        RunCall("a", "r0", cold=True),
    ]
    assert sched.resident_tokens("r0") == 650 and sched.resumes == 2


def test_continuum_pins_kv_for_short_tools_and_not_for_long_ones() -> None:
    sched = ContinuumScheduler(ttl_s=2.0)
    sched.handle(ReplicaJoined(0.0, "r0", 10_000))
    sched.handle(TaskArrived(0.0, "t"))
    t = 0.0

    def call_then_tool(tool: str, seconds: float) -> Sequence[Decision | PinKV]:
        nonlocal t
        sched.handle(CallFinished(t + 0.1, "t", "r0", 100, 0, 10, 0.1))
        out = sched.handle(ToolStarted(t + 0.1, "t", tool))
        t += 0.1 + seconds
        routed = sched.handle(ToolFinished(t, "t"))
        assert routed == [RunCall("t", "r0", cold=False)]  # sticky
        return out

    assert call_then_tool("grep", 0.5) == [PinKV("t", "r0", 2.0)]  # not seen yet: pinned
    assert call_then_tool("grep", 0.5) == [PinKV("t", "r0", 2.0)]  # 0.5 s on average
    assert call_then_tool("build", 9.0) == [PinKV("t", "r0", 2.0)]  # first run of build
    assert call_then_tool("build", 9.0) == []  # 9 s on average: released to the LRU
    assert call_then_tool("grep", 0.5) == [PinKV("t", "r0", 2.0)]


def test_a_pinned_history_survives_lru_pressure_until_its_ttl() -> None:
    spec = EngineSpec(
        prefill_tokens_per_s=1_000.0,
        decode_tokens_per_s=100.0,
        kv_room_bytes=1_000,
        kv_bytes_per_token=1,
    )
    eng = SimEngine("r0", spec)
    for tid in ("old", "pinned"):
        eng.submit(SimCall(tid, "a", 400, 0, 0, 0.0), 0.0)
    while eng.busy:
        eng.step(eng.next_change())  # type: ignore[arg-type]
    now = eng._t
    assert set(eng.cache) == {"old", "pinned"}
    eng.pin("pinned", now + 5.0)
    eng.submit(SimCall("new", "a", 500, 0, 0, now), now)  # needs 300 more: from "old"
    assert eng.cache["pinned"][0] == 400 and eng.cache["old"][0] == 100  # its tail went
    while eng.busy:
        eng.step(eng.next_change())  # type: ignore[arg-type]
    t = eng._t
    eng.submit(SimCall("big", "a", 700, 0, 0, t), t)  # only "new" is evictable: waits
    assert eng.waiting and "pinned" in eng.cache
    wake = eng.next_change()
    assert wake == pytest.approx(now + 5.0)  # the pin's end
    eng.step(wake)  # type: ignore[arg-type]
    assert not eng.waiting and eng.cache["pinned"][0] == 300  # its tail gave the last 100


def test_continuum_under_pressure_re_prefills_less_than_plain_sticky() -> None:
    sticky = Simulation(config(TIGHT, SHORT, rate=0.5), "continuum")
    plain = Simulation(config(TIGHT, SHORT, rate=0.5), "sticky")
    c, s = sticky.run(), plain.run()
    assert c.unfinished == 0
    assert c.reprefilled_tokens < s.reprefilled_tokens


# ------------------------------------------------------------------ host tier


def reload_vs_recompute(gbps: float, host_bytes: float) -> tuple[float, SimEngine]:
    """Second-call time of a 20K-token history released between its calls."""
    spec = EngineSpec(
        prefill_tokens_per_s=10_000.0,
        decode_tokens_per_s=100.0,
        kv_room_bytes=1e10,
        kv_bytes_per_token=100_000,
        host_tier_bytes=host_bytes,
        host_tier_gbps=gbps,
    )
    eng = SimEngine("r0", spec)
    eng.submit(SimCall("t", "a", 20_000, 10, 0, 0.0), 0.0)
    while eng.busy:
        eng.step(eng.next_change())  # type: ignore[arg-type]
    eng.drop("t", eng._t)  # the scheduler released it during a tool wait
    assert eng.host_used <= eng.host_capacity
    t0 = eng._t
    call = SimCall("t", "a", 20_500, 10, 20_010, t0)
    eng.submit(call, t0)
    while eng.busy or eng.loading:
        eng.step(eng.next_change())  # type: ignore[arg-type]
    return call.finished - t0, eng


def test_host_tier_reload_is_cheaper_than_recompute_when_bandwidth_is_high() -> None:
    recompute, eng0 = reload_vs_recompute(50.0, 0.0)
    assert recompute == pytest.approx(20_500 / 10_000 + 10 / 100)
    assert eng0.stats.reprefilled_tokens == 20_010 and eng0.stats.reloaded_tokens == 0
    fast, eng = reload_vs_recompute(50.0, 10e9)
    load = 20_010 * 100_000 / 50e9
    assert fast == pytest.approx(load + 490 / 10_000 + 10 / 100)
    assert fast < recompute / 5
    assert eng.stats.reloaded_tokens == 20_010 and eng.stats.reprefilled_tokens == 0
    slow, _ = reload_vs_recompute(0.5, 10e9)  # 4 s to load 2 GB: slower than recompute
    assert slow > recompute


def test_host_tier_is_bounded_by_its_capacity_lru() -> None:
    spec = EngineSpec(kv_room_bytes=1e6, kv_bytes_per_token=1, host_tier_bytes=2_500)
    eng = SimEngine("r0", spec)
    for i in range(4):
        eng.cache[f"t{i}"] = (1_000, "a")
        eng.used += 1_000
        eng.drop(f"t{i}", 0.0)
        assert eng.host_used <= 2_500
    assert list(eng.host) == ["t2", "t3"]  # the oldest went first
    tiny = reload_vs_recompute(50.0, 1e9)[1]  # a 2 GB history does not fit in 1 GB
    assert tiny.stats.reloaded_tokens == 0 and tiny.stats.reprefilled_tokens == 20_010


def test_host_tier_in_a_simulation_replaces_re_prefill_with_reloads() -> None:
    tier = dataclasses.replace(TIGHT, host_tier_bytes=200_000)
    without = Simulation(config(TIGHT, SHORT, rate=0.5), "sticky").run()
    sim = Simulation(config(tier, SHORT, rate=0.5), "sticky")
    with_tier = sim.run()
    assert with_tier.unfinished == 0
    reloaded = sum(e.stats.reloaded_tokens for e in sim.engines.values())
    assert reloaded > 0
    assert with_tier.reprefilled_tokens < without.reprefilled_tokens / 2
    assert all(e.host_used <= e.host_capacity for e in sim.engines.values())
