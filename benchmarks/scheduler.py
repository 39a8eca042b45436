"""python -m benchmarks.scheduler: throughput and decision latency of the
scheduler core at fleet scale (1,000 replicas, 20,000 live tasks by default).

A closed-loop driver plays the runtime: every RunCall is answered by a
CallFinished some time later, then a ToolStarted / ToolFinished pair, and a
finished task is replaced by a new arrival so the number of live tasks stays
put; now and then a replica dies (its tasks fail over) and joins again. Only
the time inside ``SchedulerCore.handle`` is measured, per event, with
``perf_counter_ns``; the driver runs on the same thread (pinned to one core
where the OS allows). Target: >= 50,000 events/s and p99 < 1 ms.
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import platform
import random
import sys
import time
from pathlib import Path
from typing import Any

from scheduler import (
    CallFinished,
    Decision,
    Event,
    Fail,
    Reject,
    ReplicaDied,
    ReplicaJoined,
    RunCall,
    SchedulerConfig,
    SchedulerCore,
    TaskArrived,
    TaskFinished,
    ToolFinished,
    ToolStarted,
)

_CALL_DONE, _TOOL_DONE, _REJOIN = 0, 1, 2


class Bench:
    def __init__(self, replicas: int, tasks: int, calls: int, seed: int) -> None:
        self.rng = random.Random(seed)
        self.replicas = replicas
        self.calls = calls
        peak = 30_000
        per_replica = -(-tasks // replicas) + 2  # room for every task, a little spare
        self.capacity = int(per_replica * peak / 0.95) + 1
        self.core = SchedulerCore(
            SchedulerConfig(
                max_running_calls=8,
                admission_queue_limit=tasks * 2,
            )
        )
        self.heap: list[tuple[float, int, int, str, str, int]] = []
        self.seq = 0
        self.now = 0.0
        self.n_tasks = 0
        self.done: dict[str, int] = {}  # task -> calls done
        self.history: dict[str, int] = {}
        self.call_token: dict[str, int] = {}  # invalidates completions of lost calls
        self.lat_ns: list[int] = []
        self.measure = False
        self.events = 0

    def send(self, event: Event) -> None:
        t0 = time.perf_counter_ns()
        decisions = self.core.handle(event)
        dt = time.perf_counter_ns() - t0
        if self.measure:
            self.lat_ns.append(dt)
            self.events += 1
        for d in decisions:
            self.apply(d)

    def push(self, dt: float, kind: int, tid: str, rid: str, token: int = 0) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (self.now + dt, self.seq, kind, tid, rid, token))

    def apply(self, d: Decision) -> None:
        if isinstance(d, RunCall):
            tok = self.call_token.get(d.task_id, 0) + 1
            self.call_token[d.task_id] = tok
            self.push(self.rng.uniform(0.2, 1.0), _CALL_DONE, d.task_id, d.replica_id, tok)
        elif isinstance(d, Reject | Fail):
            self.forget(d.task_id)
            self.arrive()

    def forget(self, tid: str) -> None:
        self.done.pop(tid, None)
        self.history.pop(tid, None)
        self.call_token.pop(tid, None)

    def arrive(self) -> None:
        tid = f"t{self.n_tasks}"
        self.n_tasks += 1
        self.done[tid] = 0
        self.history[tid] = 0
        self.send(TaskArrived(self.now, tid, f"agent{self.n_tasks % 8}", self.calls, 30_000))

    def setup(self, tasks: int) -> None:
        for i in range(self.replicas):
            self.send(ReplicaJoined(0.0, f"r{i}", self.capacity, None))
        for _ in range(tasks):  # all at t = 0: the heap holds no earlier completion
            self.arrive()

    def step(self) -> None:
        t, _, kind, tid, rid, token = heapq.heappop(self.heap)
        self.now = t
        if kind == _REJOIN:
            self.send(ReplicaJoined(t, rid, self.capacity, None))
            return
        if tid not in self.done:
            return
        if kind == _CALL_DONE:
            if self.call_token.get(tid) != token:
                return  # the call was lost with its replica and re-run elsewhere
            prompt = self.history[tid] + self.rng.randrange(500, 2_000)
            out = self.rng.randrange(10, 60)
            cached = self.history[tid]
            self.history[tid] = prompt + out
            self.done[tid] += 1
            self.send(CallFinished(t, tid, rid, prompt, cached, out, 0.5))
            if self.done[tid] >= self.calls:
                self.forget(tid)
                self.send(TaskFinished(t, tid))
                self.arrive()
            else:
                self.send(ToolStarted(t, tid, "shell"))
                self.push(self.rng.lognormvariate(0.7, 0.3), _TOOL_DONE, tid, "")
        else:
            self.send(ToolFinished(t, tid))

    def kill_one(self) -> None:
        rid = f"r{self.rng.randrange(self.replicas)}"
        view = self.core.replica(rid)
        if view is None or view.state.value != "active":
            return
        for tid in list(self.call_token):  # its calls are lost: drop their completions
            task = self.core.task(tid)
            if task is not None and task.replica_id == rid:
                self.call_token[tid] += 1
        self.send(ReplicaDied(self.now, rid))
        self.push(5.0, _REJOIN, "", rid)


def run(
    replicas: int, tasks: int, events: int, calls: int, seed: int, kill_every: int
) -> dict[str, Any]:
    b = Bench(replicas, tasks, calls, seed)
    t_setup = time.perf_counter()
    b.setup(tasks)
    setup_s = time.perf_counter() - t_setup
    for _ in range(tasks * 2):  # warm up into the steady state
        b.step()
    b.measure = True
    wall0 = time.perf_counter()
    next_kill = kill_every
    while b.events < events:
        b.step()
        if kill_every and b.events >= next_kill:
            next_kill += kill_every
            b.kill_one()
    wall = time.perf_counter() - wall0
    lat = sorted(b.lat_ns)
    core_s = sum(lat) / 1e9

    def pct(q: float) -> float:
        return lat[min(len(lat) - 1, int(q * len(lat)))] / 1e3

    return {
        "replicas": replicas,
        "live_tasks": b.core.live_tasks,
        "target_live_tasks": tasks,
        "events": len(lat),
        "events_per_s": len(lat) / core_s,
        "events_per_s_with_driver": len(lat) / wall,
        "decision_latency_us": {
            "p50": pct(0.50),
            "p99": pct(0.99),
            "p999": pct(0.999),
            "max": lat[-1] / 1e3,
            "mean": core_s / len(lat) * 1e6,
        },
        "setup_s": setup_s,
        "replica_deaths_every_events": kill_every,
        "targets": {"events_per_s": 50_000, "p99_us": 1_000},
        "meets_targets": len(lat) / core_s >= 50_000 and pct(0.99) < 1_000,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_affinity": sorted(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else None,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.scheduler",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--replicas", type=int, default=1_000, help="replicas (1,000)")
    p.add_argument("--tasks", type=int, default=20_000, help="live tasks (20,000)")
    p.add_argument("--events", type=int, default=300_000, help="measured events (300,000)")
    p.add_argument("--calls", type=int, default=20, help="calls per task (20)")
    p.add_argument(
        "--kill-every",
        type=int,
        default=20_000,
        help="a replica dies every this many events; 0: never (20,000)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--cpu", type=int, default=None, help="pin to this CPU (default: the first one allowed)"
    )
    p.add_argument("--json", type=Path, default=None, metavar="PATH", help="write JSON here")
    a = p.parse_args(argv)
    if min(a.replicas, a.tasks, a.events, a.calls) < 1 or a.kill_every < 0:
        p.error("--replicas, --tasks, --events and --calls must be >= 1; --kill-every >= 0")
    if hasattr(os, "sched_setaffinity"):
        allowed = sorted(os.sched_getaffinity(0))
        cpu = a.cpu if a.cpu is not None else allowed[0]
        if cpu not in allowed:
            p.error(f"--cpu {cpu} is not among the allowed CPUs {allowed}")
        os.sched_setaffinity(0, {cpu})
    res = run(a.replicas, a.tasks, a.events, a.calls, a.seed, a.kill_every)
    text = json.dumps(res, indent=2)
    print(text)
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
