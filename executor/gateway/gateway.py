"""One OpenAI chat request through the scheduler core, as the gateway runs it.

    body, headers -> ChatCompletionRequest (SGLang's model)     400 on bad input
    session_key(headers, body) -> SessionStore.acquire          one core task per session
      (no key: SessionStore.acquire_keyless, the longest live prefix; matcher.py)
    build_prompt(messages, tools, session.last)                 exact reuse of the last ids
    ToolCalls.constraint(tools, tool_choice)                    grammar (cached per tool set)
    Dispatcher.ready(task, ...)  (bounded wait, else 429)       -> Grant(replica)
    ReplicaHandle.agenerate(GenerateRequest)                    -> GenerateResult
      (a stream: .astream, token by token through ReplyStream; streaming.py)
    Dispatcher.call_finished; tool_started (the client's turn)  or finished (final)
    ToolCalls.parse(text) -> content / tool_calls; Turn kept for the next request

The scheduler core learns nothing about HTTP: a session is a task like an ``Agent``'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field, ValidationError
from sglang.srt.entrypoints.openai.protocol import ChatCompletionRequest, CompletionRequest

from executor.dispatch import Grant, TaskRefused
from executor.errors import InvalidRequestError, ReplicaUnavailableError, ReplicaUnreachableError
from executor.fleet.generation import GenerateResult, TokenDelta
from executor.gateway.errors import GatewayError, bad_request
from executor.gateway.identity import is_final, session_key
from executor.gateway.matcher import anchor_end
from executor.gateway.metrics import export
from executor.gateway.render import Renderer, template_messages
from executor.gateway.sessions import Session, SessionStore
from executor.gateway.streaming import ReplyStream, Sink
from executor.gateway.toolcalls import Parsed, ToolCalls, check_choice, family_parser
from executor.gateway.transcript import Turn, build_prompt, reply_form
from executor.loop.driver import Services, generate_unless_lost
from executor.sampling import SamplingParams

AGENT = "gateway"  # the core's agent name for gateway sessions (estimates per agent)


class GatewayConfig(BaseModel):
    max_sessions: int = Field(4096, ge=1)
    idle_ttl_s: float = Field(600.0, gt=0)
    queue_wait_s: float = Field(30.0, gt=0)  # longer in the scheduler's queue: 429
    retry_after_s: int = Field(2, ge=1)
    default_max_tokens: int = Field(1024, ge=1)
    expected_calls: int = Field(20, ge=1)  # what the core assumes of a new session
    tool_call_parser: str | None = None  # override the family (or "fallback")
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> GatewayConfig:
        """Fields from ``EXECUTOR_GATEWAY_<FIELD>`` variables (e.g.
        ``EXECUTOR_GATEWAY_TOOL_CALL_PARSER=qwen25``, ``..._IDLE_TTL_S=60``)."""
        env = os.environ if environ is None else environ
        given = {
            name: env[f"EXECUTOR_GATEWAY_{name.upper()}"]
            for name in cls.model_fields
            if f"EXECUTOR_GATEWAY_{name.upper()}" in env
        }
        return cls.model_validate(given)


@dataclass
class Reply:
    """A finished chat completion: the response body's parts and its headers."""

    id: str
    model: str
    created: int
    parsed: Parsed
    finish_reason: str
    result: GenerateResult
    headers: dict[str, str]
    stream: ReplyStream | None = None  # how it was streamed as it decoded

    def usage(self) -> dict[str, Any]:
        r = self.result
        return {
            "prompt_tokens": r.prompt_tokens,
            "completion_tokens": r.completion_tokens,
            "total_tokens": r.prompt_tokens + r.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": r.cached_tokens},
        }


def _problem(exc: ValidationError) -> GatewayError:
    err = exc.errors(include_url=False)[0]
    loc = ".".join(str(p) for p in err["loc"])
    return bad_request(f"{loc}: {err['msg']}" if loc else str(err["msg"]), loc or None)


def exact_reuse(headers: Mapping[str, str]) -> bool:
    """Exact prefix reuse is on unless the request says ``X-Exact-Reuse: off`` (to
    measure the cache hit without it)."""
    low = {k.lower(): v for k, v in headers.items()}
    return low.get("x-exact-reuse", "").strip().lower() not in ("0", "false", "off", "no")


def _response_format(req: ChatCompletionRequest) -> tuple[str, str] | None:
    """``response_format`` as the engine's constraint (json_schema / json_object)."""
    fmt = req.response_format
    kind = getattr(fmt, "type", None)
    if fmt is None or kind == "text":
        return None
    if kind == "json_object":
        return "json_schema", json.dumps({"type": "object"})
    schema = getattr(getattr(fmt, "json_schema", None), "schema_", None)
    if kind == "json_schema" and isinstance(schema, dict):
        return "json_schema", json.dumps(schema)
    raise bad_request(
        f"response_format {kind!r} needs a JSON schema or is not supported", "response_format"
    )


class Gateway:
    def __init__(self, services: Any, config: GatewayConfig | None = None) -> None:
        """``services``: a callable giving the executor's ``Services`` once started."""
        self._services = services
        self.config = config or GatewayConfig()
        self.sessions = SessionStore(
            max_sessions=self.config.max_sessions,
            idle_ttl_s=self.config.idle_ttl_s,
            on_end=self._ended,
        )
        self._renderer: Renderer | None = None
        self._tools: ToolCalls | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.exact_reuses = 0
        self.rendered = 0

    # -- lifecycle ----------------------------------------------------------------------

    @property
    def services(self) -> Services:
        s: Services = self._services()
        return s

    def start(self) -> None:
        export(self)  # its sessions on /metrics
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self.sessions.sweep_forever())

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None

    @property
    def renderer(self) -> Renderer:
        if self._renderer is None:
            self._renderer = Renderer(self.services.chat.tokenizer)
        return self._renderer

    @property
    def tools(self) -> ToolCalls:
        if self._tools is None:
            parser = family_parser(self.renderer.chat_template, self.config.tool_call_parser)
            self._tools = ToolCalls(parser)
        return self._tools

    @property
    def model(self) -> str:
        return self.services.model

    def context_tokens(self) -> int:
        sizes = [h.context_tokens for h in self.services.replicas]
        if not sizes:
            raise GatewayError(
                503,
                "no replica is serving",
                code="no_replica",
                headers={"Retry-After": str(self.config.retry_after_s)},
            )
        return min(sizes)

    def _ended(self, session: Session, reason: str) -> None:
        """A session ended: its core task too (the core releases its KV)."""
        with contextlib.suppress(Exception):
            self.services.dispatcher.cancelled(session.task_id, f"session {reason}")

    def end_session(self, key: str) -> bool:
        return self.sessions.end(key, "deleted")

    # -- one request --------------------------------------------------------------------

    def parse(self, body: Any) -> ChatCompletionRequest:
        if not isinstance(body, dict):
            raise bad_request("the body must be a JSON object")
        try:
            req = ChatCompletionRequest.model_validate(body)
        except ValidationError as exc:
            raise _problem(exc) from None
        except (AttributeError, TypeError, ValueError, KeyError) as exc:
            # SGLang's "before" validators assume the shapes they read (found by fuzzing:
            # ``"response_format": true`` raised AttributeError): still the client's error
            raise bad_request(
                f"the request does not have the chat completions shape ({exc})"
            ) from None
        if req.model != self.model:
            raise GatewayError(
                404,
                f"the model {req.model!r} does not exist; this server serves {self.model!r}",
                param="model",
                code="model_not_found",
            )
        if req.n != 1:
            raise bad_request("only n=1 is supported", "n")
        if not req.messages:
            raise bad_request("messages must not be empty", "messages")
        check_choice(req.tools, req.tool_choice)
        return req

    def sampling(
        self, req: ChatCompletionRequest | CompletionRequest, body: dict[str, Any], prompt: int
    ) -> SamplingParams:
        context = self.context_tokens()
        asked = body.get("max_completion_tokens") or body.get("max_tokens")
        if prompt >= context:
            raise bad_request(
                f"the prompt is {prompt} tokens; a replica holds {context} (prompt and "
                "reply together)",
                "messages",
                "context_length_exceeded",
            )
        if asked is not None and prompt + int(asked) > context:
            raise bad_request(
                f"the prompt ({prompt} tokens) and max_tokens ({asked}) exceed the "
                f"{context} tokens a replica holds",
                "max_tokens",
                "context_length_exceeded",
            )
        if req.seed is not None and not -(2**63) <= req.seed < 2**63:
            raise bad_request("seed must fit in 64 bits", "seed")
        stop = [req.stop] if isinstance(req.stop, str) else req.stop
        try:
            return SamplingParams(
                max_new_tokens=int(asked)
                if asked is not None
                else min(self.config.default_max_tokens, context - prompt),
                temperature=1.0 if req.temperature is None else req.temperature,
                top_p=1.0 if req.top_p is None else req.top_p,
                stop=stop or None,
                sampling_seed=req.seed,
            )
        except ValidationError as exc:
            raise _problem(exc) from None

    async def chat(
        self, body: dict[str, Any], headers: Mapping[str, str], sink: Sink | None = None
    ) -> Reply:
        """One chat completion; with ``sink``, its text goes there as it decodes
        (``streaming.py``), the rest comes with the ``Reply``."""
        req = self.parse(body)
        messages = template_messages(body["messages"])
        tools = [t.model_dump(mode="json", exclude_none=True) for t in req.tools or []] or None
        found = session_key(headers, body)
        if found is not None:
            session = self.sessions.acquire(found.key)
        else:
            session = self.sessions.acquire_keyless(
                messages,
                tools,
                lambda: self.renderer.prompt(messages, tools),
                lambda: len(self.renderer.prompt(messages[: anchor_end(messages)], tools)),
            )
        final = is_final(headers)
        exact = exact_reuse(headers)
        try:
            async with session.lock:
                return await self._call(session, req, body, messages, tools, exact, sink)
        except BaseException:
            final = final or session.last is None  # (a failed first request: no session)
            raise
        finally:
            self.sessions.release(session, final=final)

    async def _call(
        self,
        session: Session,
        req: ChatCompletionRequest,
        body: dict[str, Any],
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
        exact: bool = True,
        sink: Sink | None = None,
    ) -> Reply:
        last = session.last if exact else None
        ids, reused = build_prompt(self.renderer, messages, tools, last)
        sampling = self.sampling(req, body, len(ids))
        calling = bool(req.tools) and req.tool_choice != "none"
        constraint = self.tools.constraint(req.tools, req.tool_choice, req.parallel_tool_calls)
        if constraint is None:
            constraint = _response_format(req)
        if constraint is not None:
            sampling = sampling.model_copy(update={constraint[0]: constraint[1]})
        out_headers = {
            "X-Session-ID": session.key,
            "X-Prefix-Reuse": "exact" if reused else "rendered",
        }
        if calling:
            out_headers["X-Tool-Call-Parser"] = self.tools.label
        stream = None
        if sink is not None:
            sink.headers.update(out_headers)
            stream = self._stream(req, calling, constraint is not None, sink)
        result = await self.run_call(session, ids, sampling, stream)
        if reused:
            self.exact_reuses += 1
        else:
            self.rendered += 1
        parsed = self.tools.parse(result.text, req.tools, req.tool_choice)
        session.last = Turn.make(
            messages, tools, ids, result.output_ids, reply_form(parsed.content, parsed.calls)
        )
        finish = (
            "tool_calls"
            if parsed.calls
            else ("length" if result.finish_reason == "length" else "stop")
        )
        out_headers["X-Replica-ID"] = result.replica_id
        return Reply(
            f"chatcmpl-{uuid.uuid4().hex[:24]}",
            self.model,
            int(time.time()),
            parsed,
            finish,
            result,
            out_headers,
            stream,
        )

    def _stream(
        self, req: ChatCompletionRequest, calling: bool, constrained: bool, sink: Sink
    ) -> ReplyStream:
        """How this reply streams (``streaming.py``): free text, text-or-calls, or held
        whole (calls only; a ``response_format``)."""
        if calling and req.tool_choice == "auto":
            return ReplyStream(
                "auto",
                sink,
                self.tools.triggers(req.tools),
                lambda: self.tools.continuation(req.tools, bool(req.parallel_tool_calls)),
            )
        return ReplyStream("whole" if calling or constrained else "free", sink)

    async def run_call(
        self,
        session: Session,
        ids: list[int],
        sampling: SamplingParams,
        stream: ReplyStream | None = None,
    ) -> GenerateResult:
        """One call of ``session`` through the core (admission, the replica, failover,
        telemetry); after it, the session is in a tool wait (the client's turn). With
        ``stream``, token by token, continued on a survivor where a replica dies."""
        s = self.services
        grant = await self._admit(session, len(ids), sampling.max_new_tokens)
        request = {
            "input_ids": ids,
            "sampling": sampling.model_dump(exclude_none=True),
            "rid": f"{session.task_id}-{session.calls}-{uuid.uuid4().hex[:8]}",
            "session_id": session.task_id,
        }
        # gen_ai.conversation.id: the session id (the client's, or the keyless one)
        with s.telemetry.chat_span(model=s.model, task_id=session.key, step=session.calls) as span:
            span.set_attribute("executor.task.id", session.task_id)
            result, waited = await self._generate(session, request, grant, stream)
            s.telemetry.record_call(
                span,
                replica_id=result.replica_id,
                input_tokens=result.prompt_tokens,
                output_tokens=result.completion_tokens,
                cached_tokens=result.cached_tokens,
                queue_wait_s=waited,
                latency_s=result.latency_s,
                finish_reason=result.finish_reason,
            )
        s.dispatcher.call_finished(
            session.task_id,
            result.replica_id,
            prompt_tokens=result.prompt_tokens,
            cached_tokens=result.cached_tokens,
            output_tokens=len(result.output_ids),
            latency_s=result.latency_s,
        )
        s.dispatcher.tool_started(session.task_id, "client")  # the client's turn: a tool wait
        session.note_call(result.replica_id, result.cached_tokens, result.prompt_tokens, waited)
        return result

    async def _admit(self, session: Session, prompt: int, max_new: int) -> Grant:
        """The core's permission for this call, waited for at most ``queue_wait_s``."""
        d = self.services.dispatcher
        try:
            return await asyncio.wait_for(
                d.ready(
                    session.task_id,
                    AGENT,
                    self.config.expected_calls,
                    prompt + max_new,
                    prompt_tokens=prompt,
                ),
                self.config.queue_wait_s,
            )
        except TimeoutError:
            d.cancelled(session.task_id, "waited past the gateway's bound")
            session.new_task()
            raise GatewayError(
                429,
                f"no replica had room within {self.config.queue_wait_s:g} s; retry",
                code="scheduler_busy",
                headers={"Retry-After": str(self.config.retry_after_s)},
            ) from None
        except TaskRefused as exc:
            session.new_task()
            text = str(exc)
            if "queue full" in text:
                raise GatewayError(
                    429,
                    text,
                    code="scheduler_busy",
                    headers={"Retry-After": str(self.config.retry_after_s)},
                ) from None
            if "exceeds every replica" in text:
                raise bad_request(text, "messages", "context_length_exceeded") from None
            raise GatewayError(503, text, code="no_replica") from None

    async def _generate(
        self,
        session: Session,
        request: dict[str, Any],
        grant: Grant,
        stream: ReplyStream | None = None,
    ) -> tuple[GenerateResult, float]:
        """The call on the granted replica; where the replica dies, again where the core
        places the session next (the prompt carries the whole history; a stream goes on
        after what it has sent, ``ReplyStream.resume``)."""
        d = self.services.dispatcher
        waited = grant.waited_s
        attempt: dict[str, Any] | None = request
        prompt = len(request["input_ids"])
        try:
            while True:
                try:
                    if stream is None:
                        return await self._on(grant.replica_id, request), waited
                    stream.sink.headers["X-Replica-ID"] = grant.replica_id
                    done = None
                    if attempt is not None:
                        done = await self._on(grant.replica_id, attempt, stream.feed)
                    return stream.finish(done, prompt, grant.replica_id), waited
                except (ReplicaUnavailableError, ReplicaUnreachableError) as exc:
                    dead = isinstance(exc, ReplicaUnavailableError)
                    retry = d.after_replica_death if dead else d.call_failed
                    grant = await retry(session.task_id, grant.replica_id, exc.reason)
                    waited += grant.waited_s
                    if stream is not None:
                        attempt = stream.resume(request)
        except InvalidRequestError as exc:
            d.cancelled(session.task_id, "refused by the replica")
            session.new_task()
            raise bad_request(str(exc), "messages") from None
        except TaskRefused as exc:
            session.new_task()
            raise GatewayError(503, str(exc), code="no_replica") from None
        except BaseException:
            d.cancelled(session.task_id, "the request was abandoned")
            session.new_task()
            raise

    async def _on(
        self,
        replica_id: str,
        request: dict[str, Any],
        on_delta: Callable[[TokenDelta], None] | None = None,
    ) -> GenerateResult:
        """One attempt, abandoned as soon as the replica is declared dead."""
        s = self.services
        return await generate_unless_lost(s.replicas, s.dispatcher, replica_id, request, on_delta)
