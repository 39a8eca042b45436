"""Cache-aware routing as SGLang's router does it (``cache_aware`` policy).

The router keeps, per worker, an approximate prefix tree of the requests it
sent there (here: per task, the prompt tokens last routed to the worker, plus
the agents' shared system prompts), LRU-bounded by ``max_tree_tokens``, and
the in-flight request count per worker. For each request:

* if the load is imbalanced (``max - min > balance_abs`` and
  ``max > balance_rel x min``), send it to the least loaded worker;
* else send it to the worker with the longest prefix match if the match
  rate (matched / prompt) exceeds ``match_threshold``;
* else to the worker with the smallest tree (the most cache room).

The tree is the router's belief, not the engine's cache: the engine may have
evicted what the router thinks is there.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from scheduler.decisions import Decision, RunCall
from scheduler.events import (
    CallFailed,
    CallFinished,
    Event,
    NextCall,
    ReplicaDied,
    ReplicaDraining,
    ReplicaJoined,
    TaskArrived,
    ToolFinished,
)


class _Tree:
    __slots__ = ("tasks", "size", "agents")

    def __init__(self) -> None:
        self.tasks: OrderedDict[str, tuple[int, str]] = OrderedDict()  # task -> (tokens, agent)
        self.size = 0
        self.agents: dict[str, int] = {}


class CacheAwareRouter:
    name = "cache_aware"

    def __init__(
        self,
        prompt_of: Callable[[str], tuple[str, int]],
        system_prompt_tokens: int = 0,
        match_threshold: float = 0.3,
        balance_abs: int = 64,
        balance_rel: float = 1.5,
        max_tree_tokens: int = 4_000_000,
    ) -> None:
        self._prompt_of = prompt_of  # task -> (agent, prompt tokens of its next call)
        self._system = system_prompt_tokens
        self.match_threshold = match_threshold
        self.balance_abs = balance_abs
        self.balance_rel = balance_rel
        self.max_tree_tokens = max_tree_tokens
        self._trees: dict[str, _Tree] = {}
        self._load: dict[str, int] = {}
        self._where: dict[str, str] = {}  # task -> worker of its in-flight call

    def handle(self, event: Event) -> list[Decision]:
        if isinstance(event, ReplicaJoined):
            self._trees[event.replica_id] = _Tree()
            self._load[event.replica_id] = 0
        elif isinstance(event, ReplicaDied | ReplicaDraining):
            self._trees.pop(event.replica_id, None)
            self._load.pop(event.replica_id, None)
        elif isinstance(event, CallFinished | CallFailed):
            if event.replica_id in self._load:
                self._load[event.replica_id] -= 1
            self._where.pop(event.task_id, None)
        elif isinstance(event, TaskArrived | ToolFinished | NextCall):
            return self.route(event.task_id)
        return []

    def reroute(self, task_id: str) -> list[Decision]:
        self._where.pop(task_id, None)
        return self.route(task_id)

    def route(self, task_id: str) -> list[Decision]:
        if not self._trees:
            return []
        agent, prompt = self._prompt_of(task_id)
        loads = self._load
        lo, hi = min(loads.values()), max(loads.values())
        if hi - lo > self.balance_abs and hi > self.balance_rel * lo:
            wid = min(loads, key=lambda w: (loads[w], w))
        else:
            best, best_key = "", (-1, 0)
            for w, tree in self._trees.items():
                entry = tree.tasks.get(task_id)
                m = entry[0] if entry else 0
                if not m and tree.agents.get(agent):
                    m = self._system
                key = (min(m, prompt), -loads[w])  # equal matches: the less loaded
                if key > best_key:
                    best, best_key = w, key
            best_match = best_key[0]
            if prompt and best_match / prompt > self.match_threshold:
                wid = best
            else:
                wid = min(self._trees, key=lambda w: (self._trees[w].size, w))
        self._insert(wid, task_id, agent, prompt)
        loads[wid] += 1
        self._where[task_id] = wid
        return [RunCall(task_id, wid, cold=False)]

    def _insert(self, wid: str, task_id: str, agent: str, prompt: int) -> None:
        tree = self._trees[wid]
        old = tree.tasks.pop(task_id, None)
        if old is not None:
            tree.size -= old[0]
        else:
            tree.agents[agent] = tree.agents.get(agent, 0) + 1
        tree.tasks[task_id] = (prompt, agent)
        tree.size += prompt
        while tree.size > self.max_tree_tokens and len(tree.tasks) > 1:
            _, (tokens, v_agent) = tree.tasks.popitem(last=False)
            tree.size -= tokens
            n = tree.agents.get(v_agent, 1) - 1
            if n > 0:
                tree.agents[v_agent] = n
            else:
                tree.agents.pop(v_agent, None)
