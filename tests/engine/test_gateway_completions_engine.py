"""``POST /v1/completions`` against a real ``python -m executor serve`` on the tiny
model, through the official ``openai`` client: text and token-id prompts, stop
strings, streaming equal to the plain reply, the
session's second prompt served from the cache, OpenAI-shaped errors."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from service_process import TOKEN, Server

pytestmark = pytest.mark.engine

PROMPT = "The capital of France is Paris. The capital of Norway is"


@pytest.fixture(scope="module")
def client(pool: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[openai.OpenAI]:
    srv = Server(pool, tmp_path_factory.mktemp("gateway-completions"))
    srv.start()
    try:
        yield openai.OpenAI(base_url=f"{srv.url}/v1", api_key=TOKEN, max_retries=0, timeout=300)
    finally:
        srv.stop()


def test_completions_on_a_real_server(client: openai.OpenAI) -> None:
    key = f"c-{uuid.uuid4().hex[:8]}"
    one = client.completions.create(
        model="tiny",
        prompt=PROMPT,
        max_tokens=8,
        temperature=0,
        extra_headers={"X-Session-ID": key},
    )
    assert one.object == "text_completion" and one.choices[0].finish_reason in ("stop", "length")
    assert one.usage is not None and 0 < one.usage.completion_tokens <= 8
    first_prompt = one.usage.prompt_tokens
    # the same session, the prompt extended: its first call's prompt is in the cache
    two = client.completions.create(
        model="tiny",
        prompt=PROMPT + one.choices[0].text + " and",
        max_tokens=4,
        temperature=0,
        extra_headers={"X-Session-ID": key},
    )
    assert two.usage is not None and two.usage.prompt_tokens_details is not None
    assert two.usage.prompt_tokens_details.cached_tokens >= first_prompt - 1
    # greedy streaming equals the plain reply. (A seed is passed as SGLang's
    # sampling_seed, which this engine honours only with deterministic inference on:
    # two seeded temperature-1 calls gave different texts, so none is asserted.)
    streamed = client.completions.create(
        model="tiny",
        prompt=PROMPT,
        max_tokens=8,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(streamed)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == one.choices[0].text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    ids = client.completions.create(model="tiny", prompt=[1, 2, 3, 4], max_tokens=3)
    assert ids.usage is not None and ids.usage.prompt_tokens == 4
    stopped = client.completions.create(
        model="tiny", prompt=PROMPT, max_tokens=16, temperature=0, stop=[one.choices[0].text[:2]]
    )
    if one.choices[0].text[:2].strip():
        assert one.choices[0].text[:2] not in stopped.choices[0].text
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="tiny", prompt=[10**9], max_tokens=3)
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="nope", prompt="x")
