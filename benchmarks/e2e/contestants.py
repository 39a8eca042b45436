"""The contestants of the end-to-end benchmark: where each call of a task goes.

- ``ours``: the platform's scheduler core (sticky placement, KV budget,
  tool-wait-aware retention, ordering), driven through the runtime's
  :class:`~executor.dispatch.Dispatcher`, calling the Ray replica actors;
- ``round_robin``: a stateless balancer, each call to the next replica;
- ``sglang_router``: SGLang's own router (``cache_aware``) in front of SGLang
  HTTP servers on loopback (:mod:`benchmarks.sglang_http`);
- ``sticky_router``: the same router with ``--policy manual --assignment-mode
  min_load``, each call carrying ``x-smg-routing-key: <task id>`` (sticky per task);
- ``no_cache``: ours on replicas started with SGLang's radix cache disabled;
- ``gateway`` / ``gateway_keyless``: the service's OpenAI-compatible
  ``/v1/chat/completions`` (one scheduler core, the same Ray replicas as ours)
  through the official ``openai`` client, the task's transcript as messages; one
  ``X-Session-ID`` per task, or no identity at all (:class:`Gateway`).

Each answers ``call(task, k, ids, out)`` with SGLang's own token counts, and
hears of the task's tool waits and end (only ``ours`` uses them).
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from benchmarks.e2e.workload import ReplayTask
from executor.dispatch import Dispatcher, TaskRefused
from executor.fleet.generation import GenerateResult
from executor.fleet.handle import ReplicaHandle
from scheduler import SchedulerConfig, SchedulerCore


@dataclass(frozen=True)
class CallResult:
    replica_id: str
    output_ids: list[int]
    prompt_tokens: int
    cached_tokens: int
    latency_s: float  # in the engine (ours, round_robin) or the HTTP round trip
    queued_s: float = 0.0  # waiting for the scheduler's grant (ours)


#: a reply under the executor's grammar may take at most this many tokens (as there)
MAX_REPLY_TOKENS = 48


def sampling(out: int, reply_schema: str | None = None) -> dict[str, Any]:
    """``out`` tokens of free text; with ``reply_schema``, the reply the grammar allows
    (greedy: the executor's reply again, the same length), as the executor decodes."""
    if reply_schema is not None:
        return {
            "max_new_tokens": max(out, MAX_REPLY_TOKENS),
            "temperature": 0.0,
            "json_schema": reply_schema,
        }
    return {"max_new_tokens": out, "ignore_eos": True, "temperature": 0.0}


async def generate(
    handle: ReplicaHandle, task: ReplayTask, k: int, ids: list[int], out: int
) -> GenerateResult:
    """Call k of a task on a replica actor (its request id names the call)."""
    return await handle.agenerate(
        {
            "input_ids": ids,
            "sampling": sampling(out, task.reply_schema),
            "rid": f"{task.task_id}-{k}",
        }
    )


class Contestant(Protocol):
    name: str

    async def call(self, task: ReplayTask, k: int, ids: list[int], out: int) -> CallResult: ...

    def tool_started(self, task_id: str) -> None: ...

    def finished(self, task_id: str) -> None: ...


class Ours:
    """Every call asks the scheduler core where and when it may run."""

    def __init__(
        self, replicas: dict[str, ReplicaHandle], config: SchedulerConfig, name: str = "ours"
    ) -> None:
        self.name = name
        self.replicas = replicas
        self.dispatcher = Dispatcher(SchedulerCore(config))
        for rid, handle in replicas.items():
            self.dispatcher.replica_joined(rid, int(handle.info["max_total_num_tokens"]))

    async def call(self, task: ReplayTask, k: int, ids: list[int], out: int) -> CallResult:
        d, plan = self.dispatcher, task.plan
        if k == 0:
            grant = await d.arrive(
                task.task_id, plan.agent, plan.calls, plan.expected_history, prompt_tokens=len(ids)
            )
        else:
            grant = await d.next_call(task.task_id)
        r = await generate(self.replicas[grant.replica_id], task, k, ids, out)
        d.call_finished(
            task.task_id,
            r.replica_id,
            prompt_tokens=r.prompt_tokens,
            cached_tokens=r.cached_tokens,
            output_tokens=len(r.output_ids),
            latency_s=r.latency_s,
        )
        return CallResult(
            r.replica_id,
            r.output_ids,
            r.prompt_tokens,
            r.cached_tokens,
            r.latency_s,
            grant.waited_s,
        )

    def tool_started(self, task_id: str) -> None:
        self.dispatcher.tool_started(task_id, "shell")

    def finished(self, task_id: str) -> None:
        self.dispatcher.finished(task_id)


class RoundRobin:
    """Each call to the next replica in turn, wherever the task's KV is."""

    name = "round_robin"

    def __init__(self, replicas: dict[str, ReplicaHandle]) -> None:
        self.replicas = replicas
        self._next = itertools.cycle(sorted(replicas))

    async def call(self, task: ReplayTask, k: int, ids: list[int], out: int) -> CallResult:
        r = await generate(self.replicas[next(self._next)], task, k, ids, out)
        return CallResult(r.replica_id, r.output_ids, r.prompt_tokens, r.cached_tokens, r.latency_s)

    def tool_started(self, task_id: str) -> None:
        pass

    def finished(self, task_id: str) -> None:
        pass


#: the router's answer names the worker that served the call
WORKER_HEADER = "x-smg-target-worker"
#: the sticky policy's key (``--policy manual``)
ROUTING_KEY_HEADER = "x-smg-routing-key"


class SGLangRouter:
    """SGLang's router in front of SGLang HTTP servers: POST /generate with token ids.
    ``sticky``: each call carries its task's id as the routing key."""

    def __init__(
        self, url: str, workers: dict[str, str], name: str = "sglang_router", sticky: bool = False
    ) -> None:
        self.name = name
        self.url = url
        self.sticky = sticky
        self._worker_of = {u.rstrip("/"): rid for rid, u in workers.items()}
        self._client = httpx.AsyncClient(timeout=None)  # tool gaps and calls are never capped
        self.rids: dict[tuple[str, int], str] = {}  # (task, call) -> its request id

    def headers(self, task: ReplayTask) -> dict[str, str]:
        return {ROUTING_KEY_HEADER: task.task_id} if self.sticky else {}

    def worker(self, headers: Any) -> str:
        """The replica id of the worker named by the router's answer (``?``: none named)."""
        url = str(headers.get(WORKER_HEADER, "") or headers.get("x-worker", "")).rstrip("/")
        return self._worker_of.get(url, "?")

    async def call(self, task: ReplayTask, k: int, ids: list[int], out: int) -> CallResult:
        rid = f"{task.task_id}-{k}-{uuid.uuid4().hex[:8]}"
        self.rids[(task.task_id, k)] = rid
        body = {"input_ids": ids, "sampling_params": sampling(out, task.reply_schema), "rid": rid}
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        resp = await self._client.post(
            f"{self.url}/generate", json=body, headers=self.headers(task)
        )
        latency = loop.time() - t0
        resp.raise_for_status()
        data = resp.json()
        meta = data["meta_info"]
        return CallResult(
            replica_id=self.worker(resp.headers),
            output_ids=list(data["output_ids"]),
            prompt_tokens=int(meta["prompt_tokens"]),
            cached_tokens=int(meta.get("cached_tokens", 0)),
            latency_s=latency,
        )

    def tool_started(self, task_id: str) -> None:
        pass

    def finished(self, task_id: str) -> None:
        pass

    async def close(self) -> None:
        await self._client.aclose()


#: the gateway: the session header, the last call's header ending the session
SESSION_HEADER, FINAL_HEADER = "X-Session-ID", "X-Session-Final"


class Gateway:
    """The service's ``/v1/chat/completions`` with the official ``openai`` client: each
    call sends the task's transcript so far (its system prompt and first message, then
    per call the reply and the next observation as a user message: text the model's
    tokenizer encodes to the plan's lengths, :class:`ObservationText`), greedy free
    text with ``max_tokens`` = the plan's output (the executor's reply's length). Not
    under the executor's reply grammar: the gateway has no ``ignore_eos``, and its
    prompt (rendered from text) differs from the executor's, so the grammar's greedy
    reply need not have the executor's length; free text runs to ``max_tokens``
    unless the model ends it (``output_tokens`` in the report says: the quick run's
    503 of 503). It skips the grammar's cost per call, which ours pays.
    ``keyed``: ``X-Session-ID: <task id>`` and ``X-Session-Final`` on
    the last call; else no identity at all (the gateway matches the prefix).
    ``exact`` False: ``X-Exact-Reuse: off``, every prompt rendered by the template."""

    def __init__(
        self, client: Any, model: str, texts: Any, keyed: bool, name: str, exact: bool = True
    ) -> None:
        self.client, self.model, self.texts = client, model, texts
        self.keyed, self.name, self.exact = keyed, name, exact
        self.messages: dict[str, list[dict[str, Any]]] = {}

    def request(self, task: ReplayTask, k: int, out: int) -> dict[str, Any]:
        """The keyword arguments of call ``k``'s ``chat.completions.create`` (its
        messages grown by :meth:`replied`)."""
        if k == 0:
            self.messages[task.task_id] = [
                {"role": "system", "content": self.texts.text(task.system_ids)},
                {"role": "user", "content": self.texts.text(task.new_ids[0])},
            ]
        else:
            self.messages[task.task_id].append(
                {"role": "user", "content": self.texts.text(task.new_ids[k])}
            )
        kw: dict[str, Any] = {
            "model": self.model,
            "messages": list(self.messages[task.task_id]),
            "temperature": 0.0,
            "max_tokens": out,
        }
        headers = {} if self.exact else {"X-Exact-Reuse": "off"}
        if self.keyed:
            headers[SESSION_HEADER] = task.task_id
            if k == task.calls - 1:
                headers[FINAL_HEADER] = "true"
        if headers:
            kw["extra_headers"] = headers
        return kw

    def replied(self, task: ReplayTask, content: str) -> None:
        self.messages[task.task_id].append({"role": "assistant", "content": content})

    async def call(self, task: ReplayTask, k: int, ids: list[int], out: int) -> CallResult:
        import openai

        loop = asyncio.get_running_loop()
        t0 = loop.time()
        try:
            raw = await self.client.chat.completions.with_raw_response.create(
                **self.request(task, k, out)
            )
        except openai.RateLimitError as exc:  # 429: shed (a first call) or failed
            raise TaskRefused(str(exc)) from None
        latency = loop.time() - t0
        resp = raw.parse()
        self.replied(task, resp.choices[0].message.content or "")
        usage = resp.usage
        details = getattr(usage, "prompt_tokens_details", None)
        return CallResult(
            replica_id=raw.headers.get("x-replica-id", "?"),
            output_ids=[0] * (usage.completion_tokens if usage else 0),
            prompt_tokens=usage.prompt_tokens if usage else 0,
            cached_tokens=int(getattr(details, "cached_tokens", 0) or 0),
            latency_s=latency,
        )

    def tool_started(self, task_id: str) -> None:
        pass

    def finished(self, task_id: str) -> None:
        self.messages.pop(task_id, None)
