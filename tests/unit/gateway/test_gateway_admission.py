"""The gateway on the real scheduler core (``Dispatcher`` + ``SchedulerCore``), with a
stand-in replica handle (no engine): a session is one core task, sticky, in a tool
wait between its requests; a request the core keeps waiting past the bound gets a
429 with Retry-After; ending a session releases its KV in the core."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from executor.dispatch import Dispatcher
from executor.fleet.generation import GenerateRequest, GenerateResult, TokenDelta
from executor.fleet.registry import ReplicaRegistry
from executor.gateway import Gateway, GatewayConfig, GatewayError
from executor.telemetry import Telemetry
from scheduler import ReplicaJoined, SchedulerCore
from scheduler.states import TaskState

ASK = [{"role": "user", "content": "hello"}]


class Replica:
    """Answers each call with the next of ``script``, else ``reply`` (text), once
    ``gate`` is set."""

    def __init__(self, replica_id: str, tokenizer: Any) -> None:
        self.replica_id = replica_id
        self.tokenizer = tokenizer
        self.gate = asyncio.Event()
        self.gate.set()
        self.requests: list[GenerateRequest] = []
        self.reply = "fine"
        self.script: list[str] = []
        self.hold_at = 0
        self.streamed: list[int] = []  # the token ids it has streamed
        self.fail: Exception | None = None  # raised by astream at its next token

    @property
    def context_tokens(self) -> int:
        return 4096

    async def agenerate(self, request: dict[str, Any]) -> GenerateResult:
        req = GenerateRequest.parse(request)
        self.requests.append(req)
        await self.gate.wait()
        return self._result(req, self.script.pop(0) if self.script else self.reply)

    def _result(self, req: GenerateRequest, text: str) -> GenerateResult:
        out = list(self.tokenizer.encode(text, add_special_tokens=False))
        ids = req.input_ids or []
        return GenerateResult(
            replica_id=self.replica_id,
            text=text,
            output_ids=out,
            prompt_tokens=len(ids),
            cached_tokens=0,
            completion_tokens=len(out),
            finish_reason="stop",
            latency_s=0.01,
        )

    async def astream(self, request: dict[str, Any]) -> AsyncIterator[TokenDelta | GenerateResult]:
        """The same reply a token at a time; ``gate`` is waited for before token
        ``hold_at`` (0: before the first, as ``agenerate``)."""
        req = GenerateRequest.parse(request)
        self.requests.append(req)
        result = self._result(req, self.script.pop(0) if self.script else self.reply)
        for i, tok in enumerate(result.output_ids):
            if i == self.hold_at:
                await self.gate.wait()
            if self.fail is not None:
                raise self.fail
            self.streamed.append(tok)
            yield TokenDelta(ids=[tok], text=self.tokenizer.decode([tok]))
        await self.gate.wait()
        yield result


@dataclass
class Chat:
    tokenizer: Any


@dataclass
class Services:
    model: str
    dispatcher: Dispatcher
    replicas: ReplicaRegistry
    chat: Chat
    telemetry: Telemetry


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    from transformers import AutoTokenizer

    from executor.models import resolve

    return AutoTokenizer.from_pretrained(str(resolve("tiny")))


def make(tokenizer: Any, **config: Any) -> tuple[Gateway, Replica, Dispatcher]:
    dispatcher = Dispatcher(SchedulerCore())
    registry = ReplicaRegistry()
    replica = Replica("r0", tokenizer)
    registry.add(replica)  # type: ignore[arg-type]
    dispatcher.send(ReplicaJoined(dispatcher.now(), "r0", 4096, max_running_calls=1))
    services = Services("tiny", dispatcher, registry, Chat(tokenizer), Telemetry("none"))
    return Gateway(lambda: services, GatewayConfig(**config)), replica, dispatcher


def test_a_session_is_one_core_task_in_a_tool_wait_between_requests(tokenizer: Any) -> None:
    async def run() -> None:
        gw, replica, d = make(tokenizer)
        body = {"model": "tiny", "messages": ASK, "max_tokens": 8}
        first = await gw.chat(body, {"X-Session-ID": "s1"})
        session = gw.sessions.get("s1")
        assert session is not None and first.headers["X-Session-ID"] == "s1"
        view = d.core.task(session.task_id)
        assert view is not None and view.state is TaskState.TOOL  # the client's turn
        again = {
            **body,
            "messages": [
                *ASK,
                {"role": "assistant", "content": "fine"},
                {"role": "user", "content": "more"},
            ],
        }
        second = await gw.chat(again, {"X-Session-ID": "s1"})
        assert second.headers["X-Prefix-Reuse"] == "exact"
        first_ids = replica.requests[0].input_ids or []
        assert (replica.requests[1].input_ids or [])[: len(first_ids)] == first_ids
        assert session.calls == 2 and gw.end_session("s1")
        assert d.core.task(session.task_id) is None  # ended: forgotten, its KV released
        assert d.stats.released_kv_tokens > 0

    asyncio.run(run())


def test_a_wait_past_the_bound_is_a_429_with_retry_after(tokenizer: Any) -> None:
    async def run() -> None:
        gw, replica, d = make(tokenizer, queue_wait_s=0.3, retry_after_s=3)
        replica.gate.clear()  # the first session's call holds the replica's only slot
        body = {"model": "tiny", "messages": ASK, "max_tokens": 8}
        held = asyncio.ensure_future(gw.chat(body, {"X-Session-ID": "a"}))
        await asyncio.sleep(0.05)
        with pytest.raises(GatewayError) as busy:
            await gw.chat(body, {"X-Session-ID": "b"})
        assert busy.value.status == 429 and busy.value.headers["Retry-After"] == "3"
        assert gw.sessions.get("b") is None  # a refused first request leaves no session
        assert d.queue_depth == 0  # "b" left the core's queue
        view = d.core.replica("r0")
        assert view is not None and view.running_calls == 1  # "a" only
        replica.gate.set()
        assert (await held).finish_reason == "stop"
        ok = await gw.chat(body, {"X-Session-ID": "b"})  # room again: served
        assert ok.result.replica_id == "r0"

    asyncio.run(run())


def test_bad_requests_are_400_before_the_core_sees_them(tokenizer: Any) -> None:
    async def run() -> None:
        gw, _, d = make(tokenizer)
        cases = [
            ({"model": "other", "messages": ASK}, 404, "model"),
            ({"model": "tiny", "messages": ASK, "n": 3}, 400, "n"),
            ({"model": "tiny", "messages": []}, 400, "messages"),
            ({"model": "tiny", "messages": ASK, "max_tokens": 5000}, 400, "max_tokens"),
            ({"model": "tiny", "messages": ASK, "top_p": 0}, 400, "top_p"),
            ({"model": "tiny", "messages": ASK, "seed": 2**64}, 400, "seed"),
            ({"model": "tiny", "messages": ASK, "response_format": True}, 400, None),
            (
                {"model": "tiny", "messages": [{"role": "user", "content": "x " * 5000}]},
                400,
                "messages",
            ),
        ]
        for body, status, param in cases:
            with pytest.raises(GatewayError) as err:
                await gw.chat(body, {"X-Session-ID": "k"})
            assert err.value.status == status and err.value.param == param, body
        view = d.core.replica("r0")
        assert view is not None and view.kv_reserved_tokens == 0 and len(gw.sessions) == 0

    asyncio.run(run())


def test_the_replica_gets_the_sampling_knobs_and_the_grammar(tokenizer: Any) -> None:
    async def run() -> None:
        gw, replica, _ = make(tokenizer, tool_call_parser="qwen25")
        schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
        body = {
            "model": "tiny",
            "messages": ASK,
            "max_completion_tokens": 9,
            "temperature": 0.5,
            "top_p": 0.9,
            "stop": "END",
            "seed": 11,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": schema},
            },
        }
        await gw.chat(body, {})
        sent = replica.requests[-1].sampling
        assert (sent.max_new_tokens, sent.temperature, sent.top_p) == (9, 0.5, 0.9)
        assert sent.stop == ["END"] and sent.sampling_seed == 11
        assert sent.json_schema is not None and json.loads(sent.json_schema) == schema
        tools = [{"type": "function", "function": {"name": "f", "parameters": schema}}]
        reply = await gw.chat(
            {"model": "tiny", "messages": ASK, "tools": tools, "tool_choice": "required"}, {}
        )
        sent = replica.requests[-1].sampling
        assert sent.structural_tag is not None and sent.json_schema is None
        assert reply.headers["X-Tool-Call-Parser"] == "qwen25"
        assert sent.max_new_tokens == gw.config.default_max_tokens  # none asked: the default

    asyncio.run(run())


def test_a_replica_that_dies_mid_request_costs_only_latency(tokenizer: Any) -> None:
    async def run() -> None:
        from executor.errors import ReplicaUnavailableError

        gw, r0, d = make(tokenizer)
        r1 = Replica("r1", tokenizer)
        gw.services.replicas.add(r1)  # type: ignore[arg-type]
        d.send(ReplicaJoined(d.now(), "r1", 4096, max_running_calls=1))
        body = {"model": "tiny", "messages": ASK, "max_tokens": 8}
        first = await gw.chat(body, {"X-Session-ID": "s"})
        dying = next(r for r in (r0, r1) if r.replica_id == first.result.replica_id)
        survivor = r1 if dying is r0 else r0

        async def die(request: dict[str, Any]) -> GenerateResult:
            raise ReplicaUnavailableError(dying.replica_id, "killed")

        dying.agenerate = die  # type: ignore[method-assign]
        again = {
            **body,
            "messages": [
                *ASK,
                {"role": "assistant", "content": "fine"},
                {"role": "user", "content": "more"},
            ],
        }
        second = await gw.chat(again, {"X-Session-ID": "s"})
        assert second.result.replica_id == survivor.replica_id
        assert second.headers["X-Prefix-Reuse"] == "exact"  # the whole history, replayed
        first_prompt = dying.requests[0].input_ids or []
        assert (survivor.requests[-1].input_ids or [])[: len(first_prompt)] == first_prompt
        assert gw.sessions.get("s") is not None and gw.sessions.get("s").calls == 2  # type: ignore[union-attr]

    asyncio.run(run())


class Timed(Replica):
    """A replica with room for an 8K-token session, answering after ``delay_s``; it
    logs when each session's calls start (by the core task in the request id)."""

    def __init__(self, replica_id: str, tokenizer: Any, delay_s: float) -> None:
        super().__init__(replica_id, tokenizer)
        self.delay_s = delay_s
        self.started: list[tuple[str, float]] = []

    @property
    def context_tokens(self) -> int:
        return 16_384

    async def agenerate(self, request: dict[str, Any]) -> GenerateResult:
        self.started.append((str(request["session_id"]), time.monotonic()))
        await asyncio.sleep(self.delay_s)
        return await super().agenerate(request)


def test_a_big_session_is_not_starved_by_small_ones(tokenizer: Any) -> None:
    """ThunderAgent's issue #46 shape: one 8K-token session among many 1K-token ones
    under a tight KV budget (12K tokens: the big one needs most of it). The core's
    admission queue is FIFO by arrival (age is the order; a smaller task never
    passes an older one), so no small session that arrived after the big one starts
    before it, and its wait is bounded by the small sessions already admitted
    finishing (a few of their calls), not by the stream of later arrivals."""

    async def run() -> tuple[float, list[tuple[str, float]], dict[str, str]]:
        dispatcher = Dispatcher(SchedulerCore())
        registry = ReplicaRegistry()
        replica = Timed("r0", tokenizer, delay_s=0.01)
        registry.add(replica)  # type: ignore[arg-type]
        dispatcher.send(ReplicaJoined(dispatcher.now(), "r0", 12_000, max_running_calls=4))
        services = Services("tiny", dispatcher, registry, Chat(tokenizer), Telemetry("none"))
        gw = Gateway(lambda: services, GatewayConfig(queue_wait_s=20, default_max_tokens=8))

        def words(n: int) -> str:
            return " ".join(f"w{i % 97}" for i in range(n))

        small_text, big_text = words(390), words(3100)  # ~1K and ~8K tokens
        assert len(gw.renderer.prompt([{"role": "user", "content": big_text}], None)) > 7_500
        tasks: dict[str, str] = {}

        async def session(name: str, text: str, calls: int) -> None:
            history: list[dict[str, Any]] = [{"role": "user", "content": text}]
            for k in range(calls):
                final = {"X-Session-Final": "true"} if k == calls - 1 else {}
                reply = await gw.chat(
                    {"model": "tiny", "messages": history}, {"X-Session-ID": name, **final}
                )
                if k == 0:
                    got = gw.sessions.get(name)
                    tasks[name] = got.task_id if got else reply.result.replica_id
                history += [
                    {"role": "assistant", "content": "fine"},
                    {"role": "user", "content": f"step {k}"},
                ]
                await asyncio.sleep(0.02)  # the client's tool

        runs = [asyncio.ensure_future(session(f"small-{i}", small_text, 4)) for i in range(8)]
        await asyncio.sleep(0.03)  # the first small ones hold the KV
        big_arrived = time.monotonic()
        runs.append(asyncio.ensure_future(session("big", big_text, 2)))
        for i in range(8, 40):  # a stream of small sessions, each newer than the big one
            await asyncio.sleep(0.01)
            runs.append(asyncio.ensure_future(session(f"small-{i}", small_text, 4)))
        await asyncio.gather(*runs)
        return big_arrived, replica.started, tasks

    big_arrived, started, tasks = asyncio.run(run())
    first: dict[str, float] = {}
    for task_id, at in started:
        first.setdefault(task_id, at)
    big_start = first[tasks["big"]]
    later = [first[tasks[f"small-{i}"]] for i in range(8, 40)]
    print(
        f"\nthe 8K session waited {big_start - big_arrived:.3f} s; "
        f"small ones after it started {min(later) - big_start:+.3f} s after it at the earliest"
    )
    assert all(t >= big_start for t in later)  # no later (smaller) session passed it
    assert big_start - big_arrived > 0.02  # the budget was tight: it did wait for room
    assert big_start - big_arrived < 2.0  # bounded: the 8 earlier sessions' few calls


def test_sessions_on_metrics_the_dashboard_and_spans(tokenizer: Any) -> None:
    """A keyed and a keyless session, two calls each: ``/metrics`` (the collector the
    gateway registers), the dashboard's snapshot rows and the chat spans show them
    (session id, calls, cached / prompt tokens per call, queue wait, replica)."""
    from prometheus_client import CollectorRegistry, generate_latest

    from executor.gateway.metrics import SessionCollector
    from executor.service.dashboard import Dashboard

    async def run() -> tuple[Gateway, Telemetry]:
        gw, _, _ = make(tokenizer)
        telemetry = Telemetry("memory")
        gw.services.telemetry = telemetry  # type: ignore[misc]
        again = [*ASK, {"role": "assistant", "content": "fine"}, {"role": "user", "content": "m"}]
        for messages in (ASK, again):
            await gw.chat({"model": "tiny", "messages": messages}, {"X-Session-ID": "named"})
            await gw.chat({"model": "tiny", "messages": messages}, {})  # keyless
        return gw, telemetry

    gw, telemetry = asyncio.run(run())
    assert gw.sessions.matched == 1 and len(gw.sessions) == 2
    keyless = next(s for s in gw.sessions.sessions() if not s.keyed)
    collector = SessionCollector()
    collector.follow(gw)
    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry).decode()
    for sid in ("named", keyless.key):
        assert f'executor_gateway_session_calls{{replica_id="r0",session_id="{sid}"}} 2.0' in text
        assert (
            f'executor_gateway_session_queue_wait_seconds{{replica_id="r0",session_id="{sid}"}}'
            in text
        )
    assert 'executor_gateway_sessions{kind="keyless"} 1.0' in text
    assert "executor_gateway_keyless_matched_total 1.0" in text
    assert 'executor_gateway_prompts_total{prefix="exact"} 2.0' in text
    rows = Dashboard(None, gw)._sessions()  # type: ignore[arg-type]
    assert [r["id"] for r in rows] == [keyless.key, "named"]  # the latest first
    assert all(r["calls"] == 2 and r["replica_id"] == "r0" for r in rows)
    assert all(len(r["cached_tokens"]) == len(r["prompt_tokens"]) == 2 for r in rows)
    conversations = [
        str(s.attributes.get("gen_ai.conversation.id"))  # type: ignore[union-attr]
        for s in telemetry.finished_spans()
        if s.name.startswith("chat")
    ]
    assert sorted(conversations) == sorted(["named", "named", keyless.key, keyless.key])
