"""The gateway contestants' requests (engine-free): the official ``openai`` client
against a fake ``/v1/chat/completions`` (httpx's mock transport) sees each call send
the task's growing transcript, the session header (``gateway``) or no identity at all
(``gateway_keyless``), the reply grammar and the output length."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import openai
import pytest

from benchmarks.e2e import CONTESTANTS, OPEN_LOOP
from benchmarks.e2e import cli as e2e_cli
from benchmarks.e2e.calibration import SIM_POLICY
from benchmarks.e2e.contestants import Gateway
from benchmarks.e2e.product import GATEWAYS
from benchmarks.e2e.run import POOL
from benchmarks.e2e.workload import ReplayTask
from executor.dispatch import TaskRefused
from sim.workload import TaskPlan

SCHEMA = json.dumps({"type": "object", "properties": {"a": {"type": "string"}}})


class _Texts:
    def text(self, ids: Any) -> str:
        return " ".join(f"w{i}" for i in ids)


def _task(schema: str | None = None) -> ReplayTask:
    plan = TaskPlan("t0", "a", 0.0, (2, 1, 1), (5, 6, 7), (0.0, 0.0), 100)
    return ReplayTask(plan, (1, 2), ((3, 4), (5,), (6,)), schema)


def _gateway(keyed: bool, status: int = 200) -> tuple[Gateway, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if status != 200:
            return httpx.Response(status, json={"error": {"message": "no room", "type": "x"}})
        body = json.loads(request.content)
        n = len(body["messages"])
        return httpx.Response(
            200,
            headers={"X-Replica-ID": f"r{n % 2}"},
            json={
                "id": "c",
                "object": "chat.completion",
                "created": 0,
                "model": "tiny",
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": f"reply{n}"},
                    }
                ],
                "usage": {
                    "prompt_tokens": 10 * n,
                    "completion_tokens": 3,
                    "total_tokens": 10 * n + 3,
                    "prompt_tokens_details": {"cached_tokens": 4},
                },
            },
        )

    client = openai.AsyncOpenAI(
        base_url="http://gw.test/v1",
        api_key="k",
        max_retries=0,
        http_client=httpx.AsyncClient(transport=httpx.MockTransport(handler)),
    )
    name = "gateway" if keyed else "gateway_keyless"
    return Gateway(client, "tiny", _Texts(), keyed, name), seen


async def _replay(g: Gateway, task: ReplayTask) -> list[Any]:
    return [await g.call(task, k, [], task.plan.output_tokens[k]) for k in range(task.calls)]


def test_the_keyed_gateway_sends_the_growing_transcript_and_its_session() -> None:
    g, seen = _gateway(keyed=True)
    results = asyncio.run(_replay(g, _task(SCHEMA)))
    bodies = [json.loads(r.content) for r in seen]
    assert [len(b["messages"]) for b in bodies] == [2, 4, 6]
    assert bodies[0]["messages"] == [
        {"role": "system", "content": "w1 w2"},
        {"role": "user", "content": "w3 w4"},
    ]
    assert bodies[2]["messages"][2:] == [  # each reply, then the next observation
        {"role": "assistant", "content": "reply2"},
        {"role": "user", "content": "w5"},
        {"role": "assistant", "content": "reply4"},
        {"role": "user", "content": "w6"},
    ]
    for b in bodies:  # greedy free text of the plan's lengths (no grammar: see Gateway)
        assert b["model"] == "tiny" and b["temperature"] == 0.0
        assert "response_format" not in b
    assert [b["max_tokens"] for b in bodies] == [5, 6, 7]
    assert all(r.headers["x-session-id"] == "t0" for r in seen)
    assert [r.headers.get("x-session-final") for r in seen] == [None, None, "true"]
    assert not any("x-exact-reuse" in r.headers for r in seen)
    assert [(x.replica_id, x.prompt_tokens, x.cached_tokens) for x in results] == [
        ("r0", 20, 4),
        ("r0", 40, 4),
        ("r0", 60, 4),
    ]
    assert all(len(x.output_ids) == 3 for x in results)


def test_the_keyless_gateway_sends_no_identity_and_the_plan_lengths() -> None:
    g, seen = _gateway(keyed=False)
    asyncio.run(_replay(g, _task()))
    bodies = [json.loads(r.content) for r in seen]
    assert [b["max_tokens"] for b in bodies] == [5, 6, 7]  # free text: the plan's outputs
    assert all("response_format" not in b for b in bodies)
    for r, b in zip(seen, bodies, strict=True):
        assert not {"x-session-id", "x-session-final"} & set(r.headers)
        assert not {"user", "prompt_cache_key", "metadata", "session_id"} & set(b)
    g.finished("t0")
    assert g.messages == {}


def test_the_rendered_gateway_turns_exact_reuse_off_and_keeps_its_session() -> None:
    g, seen = _gateway(keyed=True)
    g.exact = False  # as GATEWAYS["gateway_rendered"] builds it
    asyncio.run(_replay(g, _task()))
    assert all(r.headers["x-exact-reuse"] == "off" for r in seen)
    assert all(r.headers["x-session-id"] == "t0" for r in seen)
    assert GATEWAYS["gateway_rendered"] == (True, False)


def test_a_429_is_a_refused_task() -> None:
    g, _ = _gateway(keyed=True, status=429)
    with pytest.raises(TaskRefused):
        asyncio.run(g.call(_task(), 0, [], 5))


def test_the_gateway_contestants_are_registered() -> None:
    for name in GATEWAYS:
        assert name in CONTESTANTS and name in POOL and SIM_POLICY[name] == ("ours", True)
        assert name not in OPEN_LOOP  # not in the default sweep: its hour (openloop.py)
    a = e2e_cli.parse_args(["--quick", "--contestants", "gateway,gateway_keyless,ours"])
    assert a.contestants == ["gateway", "gateway_keyless", "ours"]
