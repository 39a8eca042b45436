"""One simulated engine replica: compute shared by concurrent calls (the fluid
step model of :mod:`sim.model`) and a KV cache with LRU eviction.

KV: a running call holds ``prompt + output`` tokens; when it ends, they stay as
the task's cached history (prefix cache on) until the task's next call reuses
them, a ``drop`` (the core released them), or LRU eviction makes room for
another call (SGLang's radix cache evicts leaves first: the least recently used
history loses its tail, only as many tokens as the call needs, and its next call
hits the rest). A call that cannot get KV room (or a running slot) waits in the
engine's FIFO, as SGLang's own waiting queue does. A task's call hits the cache
for its whole cached history, or, failing that, for the agent's shared system
prompt when another call of the agent is cached or running here.

Options some policies and runs use (all off by default, and then the engine
behaves exactly as above):

- pins (``pin``): a pinned cached history is not evicted until its pin's time
  has passed (Continuum's KV time-to-live); a call that needs its room waits;
- program FCFS (``program_fcfs``): the waiting queue is ordered by the call's
  ``priority`` (its task's arrival) instead of the call's own arrival;
- a host-memory tier (``EngineSpec.host_tier_bytes``, SGLang HiCache): a history
  that leaves the GPU (released or evicted) is kept in host DRAM, LRU within its
  capacity, and a later call of the task on this replica loads it back at
  ``host_tier_gbps`` (bytes = tokens x KV bytes per token) instead of
  re-prefilling it. Loads share the replica's host link and use no compute; the
  copy to the host is taken to be free (it overlaps the work, as HiCache's
  write-back does).

Warm-ups (the core's ``WarmUp``): a call with ``warm`` set and no output prefills a
task's history ahead of its next call. If the task's call comes while its warm-up
still runs here, the warm-up stops and what it prefilled stays cached for the call
(SGLang caches a chunked prefill chunk by chunk); ``abort_warm`` drops one (the core
released the room). Re-prefill counted in ``reprefilled_tokens`` and ``reprefill_s``
is the calls' own (on their tasks' critical path); warm-ups count apart.
"""

from __future__ import annotations

from bisect import insort
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
    priority: float = 0.0  # program FCFS: its task's arrival
    load_left: float = 0.0  # seconds of host-tier load left
    warm: bool = False  # a warm-up (no output): not a call of the task
    prefill_total: float = 0.0  # seconds of prefill work alone, at its start
    prefill_end: float = 0.0  # when its prefill ended
    reprefilled: int = 0  # its task's history it prefilled again


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
    offloaded_tokens: int = 0  # written to the host tier
    reloaded_tokens: int = 0  # loaded back from it instead of re-prefilled
    reprefill_s: float = 0.0  # calls' prefill time spent on re-prefilled history
    warm_ups: int = 0
    warm_prefilled_tokens: int = 0  # prefilled by warm-ups (off the critical path)
    warm_cut: int = 0  # warm-ups stopped by their task's call (their prefix kept)
    warm_aborted: int = 0
    extra: dict[str, float] = field(default_factory=dict)


class SimEngine:
    def __init__(
        self,
        replica_id: str,
        spec: EngineSpec,
        system_prompt_tokens: int = 0,
        program_fcfs: bool = False,
    ) -> None:
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
        self.program_fcfs = program_fcfs
        self.pins: dict[str, float] = {}  # task -> time its pin ends
        self.loading: list[SimCall] = []  # calls loading their history from the host
        self.host: OrderedDict[str, int] = OrderedDict()  # task -> tokens (LRU first)
        self.host_used = 0
        self.host_capacity = int(spec.host_tier_bytes // spec.kv_bytes_per_token)
        self.warm: dict[str, SimCall] = {}  # task -> its warm-up started or waiting here

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
            if self.loading:  # the loads share the host link
                share = dt / len(self.loading)
                for c in self.loading:
                    c.load_left -= share
        self._account(now)

    def next_change(self) -> float | None:
        """Time of the next phase change of a running call (or of a pin's end that
        may let a waiting call start), or None if idle."""
        if self.loading or (self.pins and self.waiting):
            return self._next_option_change()
        if not (self.prefill or self.decode):
            return None
        pr, dr = self._rates()
        best = float("inf")
        if self.prefill:
            best = min(c.prefill_left for c in self.prefill) / pr
        if self.decode and dr > 0:
            best = min(best, min(c.decode_left for c in self.decode) / dr)
        return self._t + max(best, 0.0)

    def _next_option_change(self) -> float | None:
        best = float("inf")
        if self.prefill or self.decode:
            pr, dr = self._rates()
            if self.prefill:
                best = min(c.prefill_left for c in self.prefill) / pr
            if self.decode and dr > 0:
                best = min(best, min(c.decode_left for c in self.decode) / dr)
        if self.loading:
            best = min(best, min(c.load_left for c in self.loading) * len(self.loading))
        t = self._t + max(best, 0.0)
        if self.waiting:
            ends = [u for u in self.pins.values() if u > self._t]
            if ends:
                t = min(t, min(ends))
        return t if t < float("inf") else None

    # ---------------------------------------------------------------- KV

    def _ref_agent(self, agent: str, d: int) -> None:
        n = self.agent_refs.get(agent, 0) + d
        if n:
            self.agent_refs[agent] = n
        else:
            self.agent_refs.pop(agent, None)

    def drop(self, task_id: str, now: float, offload: bool = True) -> None:
        """The task's cached history leaves the GPU (to the host tier, if there is
        one and ``offload``: the task will call again)."""
        entry = self.cache.pop(task_id, None)
        self.pins.pop(task_id, None)
        if entry is not None:
            self._account(now)
            self.used -= entry[0]
            self._ref_agent(entry[1], -1)
            if offload:
                self._offload(task_id, entry[0])

    def pin(self, task_id: str, until: float) -> None:
        """Keep the task's cached history from eviction until ``until`` (a TTL)."""
        if task_id in self.cache:
            self.pins[task_id] = until

    def _offload(self, task_id: str, tokens: int) -> None:
        if not 0 < tokens <= self.host_capacity:
            return
        old = self.host.pop(task_id, None)
        self.host_used -= old or 0
        while self.host_used + tokens > self.host_capacity:
            _, t = self.host.popitem(last=False)
            self.host_used -= t
        self.host[task_id] = tokens
        self.host_used += tokens
        self.stats.offloaded_tokens += tokens

    def _evict_for(self, need: int) -> bool:
        """LRU eviction until ``need`` tokens are free, skipping histories pinned
        past now (expired pins go)."""
        if self.pins:
            now = self._t
            for task, until in list(self.pins.items()):
                if until <= now:
                    del self.pins[task]
        for victim in [t for t in self.cache if t not in self.pins]:
            short = need - (self.capacity - self.used)
            if short <= 0:
                break
            self._evict(victim, short)
        return self.capacity - self.used >= need

    def _evict(self, victim: str, short: int) -> None:
        """Make room for ``short`` more tokens from one history. Without a host
        tier, as SGLang's radix cache evicts leaves first, only its tail goes and
        the rest stays cached for its next call; with one, the whole history goes
        to the host."""
        tokens, agent = self.cache[victim]
        gone = tokens if self.host_capacity else min(tokens, short)
        self.used -= gone
        self.stats.evictions += 1
        self.stats.evicted_tokens += gone
        if gone < tokens:
            self.cache[victim] = (tokens - gone, agent)
            return
        del self.cache[victim]
        self._ref_agent(agent, -1)
        if self.host_capacity:
            self._offload(victim, tokens)

    def _try_start(self, call: SimCall, now: float) -> bool:
        running = len(self.prefill) + len(self.decode) + len(self.loading)
        if running >= self.spec.max_running_requests:
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
            self.pins.pop(call.task_id, None)
        hosted = self.host.pop(call.task_id, 0) if self.host and not own_tokens else 0
        if hosted:
            self.host_used -= hosted
            hosted = min(hosted, call.prompt) if self.spec.prefix_cache else 0
        if own_tokens:
            cached = min(own_tokens, call.prompt)
        elif hosted:
            cached = hosted
            self.stats.reloaded_tokens += hosted
            call.load_left = self.spec.host_load_seconds(hosted)
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
        call.prefill_total = call.prefill_left
        call.prefill_end = now
        call.decode_left = float(call.output)
        if call.warm:
            self.stats.warm_ups += 1
            self.stats.warm_prefilled_tokens += uncached
        else:
            self.stats.prefilled_tokens += uncached
            call.reprefilled = max(0, call.history_before - cached)
            self.stats.reprefilled_tokens += call.reprefilled
        self._ref_agent(call.agent, +1)
        self.running_tasks.add(call.task_id)
        if call.load_left > 0:
            self.loading.append(call)
        elif call.prefill_left > 0:
            self.prefill.append(call)
        elif call.output > 0:
            self.decode.append(call)
        else:
            self.decode.append(call)  # zero work: finishes at once
        return True

    # ------------------------------------------------------------- calls

    def submit(self, call: SimCall, now: float) -> None:
        self.advance(now)
        if call.warm:
            self.warm[call.task_id] = call
        elif call.task_id in self.warm:
            self._end_warm(call.task_id, keep=True)
        if self.program_fcfs:
            insort(self.waiting, call, key=lambda c: c.priority)
            while self.waiting and self._try_start(self.waiting[0], now):
                self.waiting.popleft()
        elif self.waiting or not self._try_start(call, now):
            self.waiting.append(call)
        self.version += 1

    def step(self, now: float) -> list[SimCall]:
        """Advance to ``now``; move calls between phases; return finished calls."""
        self.advance(now)
        done: list[SimCall] = []
        if self.loading:
            still = []
            for c in self.loading:
                if c.load_left <= 1e-9:
                    c.load_left = 0.0
                    (self.prefill if c.prefill_left > 0 else self.decode).append(c)
                else:
                    still.append(c)
            self.loading = still
        if self.prefill:
            still = []
            for c in self.prefill:
                if c.prefill_left <= _EPS * max(1.0, c.prompt) / self.spec.prefill_tokens_per_s:
                    c.prefill_left = 0.0
                    c.prefill_end = now
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
            if c.warm:
                self.warm.pop(c.task_id, None)
            elif c.reprefilled:
                uncached = c.prompt - c.cached
                self.stats.reprefill_s += (c.prefill_end - c.started) * c.reprefilled / uncached
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

    def abort_warm(self, task_id: str, now: float) -> bool:
        """Stop the task's warm-up here, dropping what it prefilled; False if it had
        none (else the caller wakes the engine again: its work changed)."""
        if task_id not in self.warm:
            return False
        self.advance(now)
        self._end_warm(task_id, keep=False)
        self.stats.warm_aborted += 1
        self.version += 1
        return True

    def _end_warm(self, task_id: str, keep: bool) -> None:
        """Take the task's warm-up out; ``keep``: what it prefilled stays cached."""
        w = self.warm.pop(task_id)
        if any(c is w for c in self.waiting):
            self.waiting = deque(c for c in self.waiting if c is not w)
            return
        self.loading = [c for c in self.loading if c is not w]
        self.prefill = [c for c in self.prefill if c is not w]
        self.decode = [c for c in self.decode if c is not w]
        self.running_tasks.discard(task_id)
        self.used -= w.alloc
        self._ref_agent(w.agent, -1)
        if not keep:
            return
        self.stats.warm_cut += 1
        uncached = w.prompt - w.cached
        share = 1.0 - w.prefill_left / w.prefill_total if w.prefill_total > 0 else 1.0
        done = w.cached + int(uncached * min(1.0, max(0.0, share)))
        if w.load_left > 0:
            done = 0
        if done > 0:
            self.used += done
            self.cache[task_id] = (done, w.agent)
            self._ref_agent(w.agent, +1)

    def kill(self, now: float) -> list[SimCall]:
        """The replica dies: return the calls it was running or holding."""
        self.advance(now)
        lost = self.loading + self.prefill + self.decode + list(self.waiting)
        self.prefill, self.decode, self.waiting, self.loading = [], [], deque(), []
        self.cache.clear()
        self.pins.clear()
        self.host.clear()
        self.host_used = 0
        self.agent_refs.clear()
        self.running_tasks.clear()
        self.warm.clear()
        self.used = 0
        self.alive = False
        self.version += 1
        return lost
