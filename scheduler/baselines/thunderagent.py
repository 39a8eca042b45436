"""ThunderAgent (Kang et al., arXiv 2602.13692, "ThunderAgent: A Simple, Fast and
Program-Aware Agentic Inference System"): scheduling by program (here: a task).

* Admission by actual tokens: a program is admitted, from a global FCFS waiting
  queue, onto a replica where the sum of its resident programs' current tokens
  (each one's context so far; a program about to call counts its next prompt
  plus ``output_reserve``) stays under ``memory_threshold`` x the replica's KV.
  Nothing is reserved for growth. Among the replicas with room it takes the one
  with the fewest resident programs (ties: the most free KV). Choosing by free
  KV alone piles young (small) programs onto a few replicas, whose compute then
  saturates: in the 64-replica simulation that placement reached p95 = 60 s at
  6.2 tasks/s against ~10.7 with this one, so the stronger reading is kept.
* Under pressure (a program's next call does not fit on its replica), it pauses
  the smallest *acting* programs there (in a tool call: no decode is preempted;
  re-prefill grows with the square of the context, so the smallest are the
  cheapest to rebuild), releasing their KV; if that is not enough, the program
  itself is paused.
* Paused programs whose tool has returned are resumed when room appears, packed
  best-fit-decreasing onto the replicas (largest first, each onto the replica
  it fills the most), ahead of new programs; a resumed program re-prefills its
  history on whatever replica it lands.
* No failover: a program on a replica that dies fails.

The paper estimates tokens from characters; the simulator gives it exact token
counts (``prompt_of``), which only helps it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from scheduler.decisions import Decision, Fail, Reject, ReleaseCause, ReleaseKV, RunCall
from scheduler.events import (
    CallFinished,
    Event,
    NextCall,
    ReplicaDied,
    ReplicaDraining,
    ReplicaJoined,
    TaskArrived,
    TaskCancelled,
    TaskFinished,
    ToolFinished,
    ToolStarted,
)


@dataclass(slots=True)
class Program:
    task_id: str
    replica: str | None = None  # where its KV is counted (None: waiting or paused)
    tokens: int = 0  # counted on its replica
    acting: bool = False  # in a tool call
    paused: bool = False


@dataclass(slots=True)
class _Replica:
    budget: int
    used: int = 0
    programs: set[str] = field(default_factory=set)
    open: bool = True  # takes new and resumed programs


class ThunderAgentScheduler:
    name = "thunderagent"

    def __init__(
        self,
        prompt_of: Callable[[str], tuple[str, int]],
        memory_threshold: float = 0.95,
        output_reserve: int = 256,
    ) -> None:
        if not 0 < memory_threshold <= 1 or output_reserve < 0:
            raise ValueError("memory_threshold must be in (0, 1] and output_reserve >= 0")
        self._prompt_of = prompt_of  # task -> (agent, prompt tokens of its next call)
        self.memory_threshold = memory_threshold
        self.output_reserve = output_reserve
        self.replicas: dict[str, _Replica] = {}
        self.programs: dict[str, Program] = {}
        self._new: deque[str] = deque()  # programs not admitted yet, FCFS
        self._resume: set[str] = set()  # paused programs ready for their next call
        self.pauses = self.resumes = 0

    # ------------------------------------------------------------------ events

    def handle(self, event: Event) -> list[Decision]:
        out: list[Decision] = []
        if isinstance(event, ReplicaJoined):
            budget = int(event.kv_capacity_tokens * self.memory_threshold)
            self.replicas[event.replica_id] = _Replica(budget)
            self._schedule(out)
        elif isinstance(event, ReplicaDied):
            rep = self.replicas.pop(event.replica_id, None)
            for tid in sorted(rep.programs) if rep else ():
                self.programs.pop(tid, None)
                out.append(Fail(tid, "replica died (no failover)"))
        elif isinstance(event, ReplicaDraining):
            if event.replica_id in self.replicas:
                self.replicas[event.replica_id].open = False
        elif isinstance(event, TaskArrived):
            self.programs[event.task_id] = Program(event.task_id)
            self._new.append(event.task_id)
            self._schedule(out)
        elif isinstance(event, CallFinished):
            p = self.programs.get(event.task_id)
            if p is not None and p.replica is not None:
                self._count(p, event.prompt_tokens + event.output_tokens)
        elif isinstance(event, ToolStarted):
            if event.task_id in self.programs:
                self.programs[event.task_id].acting = True
        elif isinstance(event, ToolFinished | NextCall):
            p = self.programs.get(event.task_id)
            if p is not None:
                p.acting = False
                if p.paused:
                    self._resume.add(p.task_id)
                    self._schedule(out)
                else:
                    self._next_call(p, out)
        elif isinstance(event, TaskFinished | TaskCancelled):
            p = self.programs.pop(event.task_id, None)
            if p is not None:
                self._new_remove(p.task_id)
                self._resume.discard(p.task_id)
                if p.replica is not None:
                    rid, tokens = p.replica, p.tokens
                    self._uncount(p)
                    out.append(ReleaseKV(p.task_id, rid, tokens, ReleaseCause.TASK_DONE))
                self._schedule(out)
        return out

    # --------------------------------------------------------------- internals

    def _need(self, task_id: str) -> int:
        return self._prompt_of(task_id)[1] + self.output_reserve

    def _count(self, p: Program, tokens: int) -> None:
        rep = self.replicas[home_of(p)]
        rep.used += tokens - p.tokens
        p.tokens = tokens

    def _uncount(self, p: Program) -> None:
        rep = self.replicas.get(p.replica) if p.replica is not None else None
        if rep is not None:
            rep.used -= p.tokens
            rep.programs.discard(p.task_id)
        p.replica, p.tokens = None, 0

    def _new_remove(self, task_id: str) -> None:
        if task_id in self._new:
            self._new.remove(task_id)

    def _place(self, p: Program, rid: str, need: int, out: list[Decision]) -> None:
        rep = self.replicas[rid]
        p.replica, p.tokens, p.paused = rid, need, False
        rep.used += need
        rep.programs.add(p.task_id)
        out.append(RunCall(p.task_id, rid, cold=True))

    def _pause(self, p: Program, out: list[Decision]) -> None:
        rid = home_of(p)
        tokens = p.tokens
        self._uncount(p)
        p.paused = True
        self.pauses += 1
        out.append(ReleaseKV(p.task_id, rid, tokens, ReleaseCause.OVER_BUDGET))

    def _next_call(self, p: Program, out: list[Decision]) -> None:
        """A resident program's next call: grow its count, pausing under pressure."""
        rep = self.replicas[home_of(p)]
        need = max(self._need(p.task_id), p.tokens)
        if rep.used - p.tokens + need > rep.budget:
            acting = sorted(
                (self.programs[t] for t in rep.programs if t != p.task_id),
                key=lambda q: (q.tokens, q.task_id),
            )
            for q in acting:
                if rep.used - p.tokens + need <= rep.budget:
                    break
                if q.acting:
                    self._pause(q, out)
        if rep.used - p.tokens + need > rep.budget:
            self._pause(p, out)  # it waits, with the other paused programs, for room
            self._resume.add(p.task_id)
        else:
            self._count(p, need)
            out.append(RunCall(p.task_id, home_of(p), cold=False))
        self._schedule(out)

    def _schedule(self, out: list[Decision]) -> None:
        """Resume ready paused programs best-fit-decreasing, then admit new ones
        FCFS while no paused one is left waiting."""
        open_reps = {rid: r for rid, r in self.replicas.items() if r.open}
        if not open_reps:
            return
        if self._resume:
            for tid in sorted(self._resume, key=lambda t: (-self._need(t), t)):
                need = self._need(tid)
                fits = [
                    (r.budget - r.used, rid)
                    for rid, r in open_reps.items()
                    if r.budget - r.used >= need
                ]
                if fits:
                    self._resume.discard(tid)
                    self.resumes += 1
                    self._place(self.programs[tid], min(fits)[1], need, out)
        largest = max(r.budget for r in open_reps.values())
        while self._new and not self._resume:
            tid = self._new[0]
            need = self._need(tid)
            if need > largest:
                self._new.popleft()
                self.programs.pop(tid, None)
                out.append(Reject(tid, "larger than any replica's KV"))
                continue
            room = [r for r, rep in open_reps.items() if rep.budget - rep.used >= need]
            if not room:
                break
            rid = min(
                room,
                key=lambda r: (
                    len(open_reps[r].programs),
                    open_reps[r].used - open_reps[r].budget,
                    r,
                ),
            )
            self._new.popleft()
            self._place(self.programs[tid], rid, need, out)

    def resident_tokens(self, replica_id: str) -> int:
        """The sum of the current tokens of the programs counted on the replica."""
        rep = self.replicas[replica_id]
        return sum(self.programs[t].tokens for t in rep.programs)


def home_of(p: Program) -> str:
    if p.replica is None:
        raise RuntimeError(f"program {p.task_id} has no replica")
    return p.replica
