"""One simulated engine replica: compute shared by concurrent calls (the fluid
step model of :mod:`sim.model`) and a KV cache with LRU eviction.

KV: a running call holds ``prompt + output`` tokens; when it ends, they stay as
the task's cached history (prefix cache on) until the task's next call reuses
them, a ``drop`` (the core released them), or LRU eviction makes room for
another call. A call that cannot get KV room (or a running slot) waits in the
engine's FIFO, as SGLang's own waiting queue does. A task's call hits the cache
for its whole cached history, or, failing that, for the agent's shared system
prompt when another call of the agent is cached or running here.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field

from sim.model import EngineSpec

_EPS = 1e-9


@dataclass(slots=True)
class SimCall:
    task_id: str
    agent: str
    prompt: int
    output: int
    history_before: int  # the task's history before this call (what could be cached)
    submitted: float
    started: float = 0.0
    cached: int = 0
    prefill_left: float = 0.0  # seconds of prefill work alone (EngineSpec.prefill_seconds)
    prefill_s_per_token: float = 0.0
    decode_left: float = 0.0
    alloc: int = 0
    finished: float = 0.0


@dataclass(slots=True)
class EngineStats:
    busy_s: float = 0.0
    prefill_busy_s: float = 0.0
    kv_token_s: float = 0.0  # integral of used KV tokens over time
    prefilled_tokens: int = 0
    reprefilled_tokens: int = 0
    evictions: int = 0
    evicted_tokens: int = 0
    calls: int = 0
    extra: dict[str, float] = field(default_factory=dict)


class SimEngine:
    def __init__(self, replica_id: str, spec: EngineSpec, system_prompt_tokens: int = 0) -> None:
        self.id = replica_id
        self.spec = spec
        self.system_prompt = system_prompt_tokens
        self.capacity = spec.kv_capacity_tokens
        self.used = 0
        self.cache: OrderedDict[str, tuple[int, str]] = OrderedDict()  # task -> (tokens, agent)
        self.agent_refs: dict[str, int] = {}
        self.prefill: list[SimCall] = []
        self.decode: list[SimCall] = []
        self.waiting: deque[SimCall] = deque()
        self.running_tasks: set[str] = set()
        self.stats = EngineStats()
        self.alive = True
        self.version = 0
        self._t = 0.0
        self._d0 = spec.d0
        self._d1 = spec.d1
        self.slowdown = 1.0  # its work takes this many times as long (a shared host)

    # ----------------------------------------------------------- accounting

    def _account(self, now: float) -> None:
        dt = now - self._t
        if dt > 0:
            st = self.stats
            st.kv_token_s += self.used * dt
            if self.prefill or self.decode:
                st.busy_s += dt
            if self.prefill:
                st.prefill_busy_s += dt
        self._t = now

    @property
    def busy(self) -> bool:
        return bool(self.prefill or self.decode)

    def set_slowdown(self, factor: float, now: float) -> bool:
        """Its work takes ``factor`` times as long from ``now`` on; True if that is a
        change (the caller then wakes it again: its next change moved)."""
        if factor == self.slowdown:
            return False
        self.advance(now)
        self.slowdown = factor
        self.version += 1
        return True

    def _rates(self) -> tuple[float, float]:
        """(prefill work done per second by each prefilling call, in seconds of its
        work alone; decode tokens/s per decoding call)."""
        nd, np_ = len(self.decode), len(self.prefill)
        spec = self.spec
        decode_step = self._d0 + self._d1 * nd
        if nd and spec.decode_context_s:
            decode_step += spec.decode_context_s * sum(c.prompt for c in self.decode)
        decode_step *= self.slowdown
        if not np_:
            return 0.0, 1.0 / decode_step if nd else 0.0
        if not nd:
            return 1.0 / np_ / self.slowdown, 0.0
        # a step's prefill chunk costs what chunk_tokens of the calls' own prefills cost
        chunk_s = spec.chunk_tokens * sum(c.prefill_s_per_token for c in self.prefill) / np_
        step = decode_step + chunk_s * self.slowdown
        return chunk_s / step / np_, 1.0 / step

    def advance(self, now: float) -> None:
        """Progress every running call to ``now`` (rates are constant in between)."""
        dt = now - self._t
        if dt > 0:
            pr, dr = self._rates()
            for c in self.prefill:
                c.prefill_left -= pr * dt
            for c in self.decode:
                c.decode_left -= dr * dt
        self._account(now)

    def next_change(self) -> float | None:
        """Time of the next phase change of a running call, or None if idle."""
        if not (self.prefill or self.decode):
            return None
        pr, dr = self._rates()
        best = float("inf")
        if self.prefill:
            best = min(c.prefill_left for c in self.prefill) / pr
        if self.decode and dr > 0:
            best = min(best, min(c.decode_left for c in self.decode) / dr)
        return self._t + max(best, 0.0)

    # ---------------------------------------------------------------- KV

    def _ref_agent(self, agent: str, d: int) -> None:
        n = self.agent_refs.get(agent, 0) + d
        if n:
            self.agent_refs[agent] = n
        else:
            self.agent_refs.pop(agent, None)

    def drop(self, task_id: str, now: float) -> None:
        entry = self.cache.pop(task_id, None)
        if entry is not None:
            self._account(now)
            self.used -= entry[0]
            self._ref_agent(entry[1], -1)

    def _evict_for(self, need: int) -> bool:
        cache = self.cache
        while self.capacity - self.used < need and cache:
            _, (tokens, agent) = cache.popitem(last=False)
            self.used -= tokens
            self._ref_agent(agent, -1)
            self.stats.evictions += 1
            self.stats.evicted_tokens += tokens
        return self.capacity - self.used >= need

    def _try_start(self, call: SimCall, now: float) -> bool:
        if len(self.prefill) + len(self.decode) >= self.spec.max_running_requests:
            return False
        if call.task_id in self.running_tasks:
            return False  # one call per task at a time (a router may double-send)
        own = self.cache.get(call.task_id) if self.spec.prefix_cache else None
        own_tokens = own[0] if own else 0
        need = call.prompt + call.output - own_tokens
        if own is not None:  # lock the task's entry against eviction
            del self.cache[call.task_id]
        if not self._evict_for(need):
            if own is not None:
                self.cache[call.task_id] = own
                self.cache.move_to_end(call.task_id, last=False)
            return False
        if own is not None:
            self._ref_agent(own[1], -1)
        if own_tokens:
            cached = min(own_tokens, call.prompt)
        elif self.spec.prefix_cache and self.agent_refs.get(call.agent):
            cached = min(self.system_prompt, call.prompt)
        else:
            cached = 0
        self.used += need
        call.alloc = call.prompt + call.output
        call.cached = cached
        call.started = now
        uncached = call.prompt - cached
        # the prefill tokens ahead of it, less the batch that runs now (one chunk)
        ahead = sum(c.prefill_left / c.prefill_s_per_token for c in self.prefill)
        queued = max(0.0, ahead - self.spec.chunk_tokens)
        call.prefill_left = self.spec.prefill_seconds(uncached, call.prompt, queued)
        call.prefill_s_per_token = call.prefill_left / max(1, uncached)
        call.decode_left = float(call.output)
        self.stats.prefilled_tokens += uncached
        self.stats.reprefilled_tokens += max(0, call.history_before - cached)
        self._ref_agent(call.agent, +1)
        self.running_tasks.add(call.task_id)
        if call.prefill_left > 0:
            self.prefill.append(call)
        elif call.output > 0:
            self.decode.append(call)
        else:
            self.decode.append(call)  # zero work: finishes at once
        return True

    # ------------------------------------------------------------- calls

    def submit(self, call: SimCall, now: float) -> None:
        self.advance(now)
        if self.waiting or not self._try_start(call, now):
            self.waiting.append(call)
        self.version += 1

    def step(self, now: float) -> list[SimCall]:
        """Advance to ``now``; move calls between phases; return finished calls."""
        self.advance(now)
        done: list[SimCall] = []
        if self.prefill:
            still = []
            for c in self.prefill:
                if c.prefill_left <= _EPS * max(1.0, c.prompt) / self.spec.prefill_tokens_per_s:
                    c.prefill_left = 0.0
                    self.decode.append(c)
                else:
                    still.append(c)
            self.prefill = still
        if self.decode:
            still = []
            for c in self.decode:
                if c.decode_left <= 1e-7:
                    done.append(c)
                else:
                    still.append(c)
            self.decode = still
        for c in done:
            c.finished = now
            self.running_tasks.discard(c.task_id)
            self.stats.calls += 1
            self._ref_agent(c.agent, -1)
            if self.spec.prefix_cache:
                self.cache[c.task_id] = (c.alloc, c.agent)
                self._ref_agent(c.agent, +1)
            else:
                self.used -= c.alloc
        while self.waiting and self._try_start(self.waiting[0], now):
            self.waiting.popleft()
        self.version += 1
        return done

    def kill(self, now: float) -> list[SimCall]:
        """The replica dies: return the calls it was running or holding."""
        self.advance(now)
        lost = self.prefill + self.decode + list(self.waiting)
        self.prefill, self.decode, self.waiting = [], [], deque()
        self.cache.clear()
        self.agent_refs.clear()
        self.running_tasks.clear()
        self.used = 0
        self.alive = False
        self.version += 1
        return lost
