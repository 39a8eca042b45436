"""``POST /v1/completions``: OpenAI's legacy completions (a prompt as text or token
ids, no chat template) on the same sessions and core as chat completions.

    body -> CompletionRequest (SGLang's model)              400 on bad input
    prompt -> ids (text tokenized; ids checked against the vocabulary)
    session_key(headers, body) -> a session (no key: a one-call session)
    Gateway.run_call(session, ids, sampling)                 the core, the replica
    -> CompletionResponse / CompletionStreamResponse chunks (SGLang's models)

One prompt per request (``n`` = 1, no ``echo`` / ``logprobs`` / ``suffix`` /
``best_of``): the rest is a 400 in OpenAI's shape.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from sglang.srt.entrypoints.openai.protocol import (
    CompletionRequest,
    CompletionResponse,
    CompletionResponseChoice,
    CompletionResponseStreamChoice,
    CompletionStreamResponse,
    UsageInfo,
)

from executor.fleet.generation import GenerateResult
from executor.gateway.errors import GatewayError, bad_request
from executor.gateway.gateway import Gateway, _problem
from executor.gateway.identity import is_final, session_key


@dataclass
class Completion:
    id: str
    model: str
    created: int
    result: GenerateResult
    headers: dict[str, str]

    @property
    def finish_reason(self) -> str:
        return "length" if self.result.finish_reason == "length" else "stop"

    def usage(self) -> UsageInfo:
        r = self.result
        return UsageInfo(
            prompt_tokens=r.prompt_tokens,
            completion_tokens=r.completion_tokens,
            total_tokens=r.prompt_tokens + r.completion_tokens,
            prompt_tokens_details={"cached_tokens": r.cached_tokens},
        )

    def body(self) -> dict[str, Any]:
        choice = CompletionResponseChoice(
            index=0, text=self.result.text, finish_reason=self.finish_reason
        )
        out = CompletionResponse(
            id=self.id,
            created=self.created,
            model=self.model,
            choices=[choice],
            usage=self.usage(),
        )
        body: dict[str, Any] = out.model_dump(mode="json", exclude_none=True)
        return body

    def chunks(self, include_usage: bool) -> list[str]:
        """SSE ``data:`` lines: the text, the finish, the usage if asked, [DONE]."""

        def chunk(choice: CompletionResponseStreamChoice | None, usage: bool = False) -> str:
            c = CompletionStreamResponse(
                id=self.id,
                created=self.created,
                model=self.model,
                choices=[] if choice is None else [choice],
                usage=self.usage() if usage else None,
            )
            return f"data: {json.dumps(c.model_dump(mode='json', exclude_none=True))}\n\n"

        out = [chunk(CompletionResponseStreamChoice(index=0, text=self.result.text))]
        out.append(
            chunk(
                CompletionResponseStreamChoice(index=0, text="", finish_reason=self.finish_reason)
            )
        )
        if include_usage:
            out.append(chunk(None, usage=True))
        out.append("data: [DONE]\n\n")
        return out


def parse(gw: Gateway, body: Any) -> CompletionRequest:
    if not isinstance(body, dict):
        raise bad_request("the body must be a JSON object")
    try:
        req = CompletionRequest.model_validate(body)
    except ValidationError as exc:
        raise _problem(exc) from None
    except (AttributeError, TypeError, ValueError, KeyError) as exc:
        raise bad_request(f"the request does not have the completions shape ({exc})") from None
    if req.model != gw.model:
        raise GatewayError(
            404,
            f"the model {req.model!r} does not exist; this server serves {gw.model!r}",
            param="model",
            code="model_not_found",
        )
    if req.n != 1:
        raise bad_request("only n=1 is supported", "n")
    for name in ("echo", "logprobs", "suffix"):
        if getattr(req, name):
            raise bad_request(f"{name} is not supported", name)
    if req.best_of not in (None, 1):
        raise bad_request("only best_of=1 is supported", "best_of")
    return req


def prompt_ids(gw: Gateway, prompt: Any) -> list[int]:
    """One prompt (text, token ids, or a list holding one of either) as token ids."""
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]
    if isinstance(prompt, str):
        if not prompt:
            raise bad_request("the prompt must not be empty", "prompt")
        return list(gw.renderer.tokenizer.encode(prompt))  # (with BOS, as SGLang does)
    if isinstance(prompt, list) and prompt and all(type(t) is int for t in prompt):
        vocab = len(gw.renderer.tokenizer)
        if not all(0 <= t < vocab for t in prompt):
            raise bad_request(f"a token id is outside the vocabulary (0..{vocab - 1})", "prompt")
        return list(prompt)
    raise bad_request("prompt must be one non-empty text or one list of token ids", "prompt")


async def complete(gw: Gateway, body: Any, headers: Mapping[str, str]) -> Completion:
    req = parse(gw, body)
    ids = prompt_ids(gw, req.prompt)
    sampling = gw.sampling(req, body, len(ids))
    found = session_key(headers, body)
    session = gw.sessions.acquire(found.key if found is not None else None)
    final = is_final(headers) or found is None  # no identity: a one-call session
    try:
        async with session.lock:
            result = await gw.run_call(session, ids, sampling)
    except BaseException:
        final = final or session.calls == 0  # (a failed first request: no session)
        raise
    finally:
        gw.sessions.release(session, final=final)
    out_headers = {"X-Session-ID": session.key, "X-Replica-ID": result.replica_id}
    return Completion(
        f"cmpl-{uuid.uuid4().hex[:24]}", gw.model, int(time.time()), result, out_headers
    )
