"""A chat reply streamed token by token, and its continuation on a survivor.

    ReplicaHandle.astream -> TokenDelta ...      (the engine's steps)
    ReplyStream.feed(delta) -> Sink.put(text)    what the client may see now
    replica dies -> ReplyStream.resume(request)  the survivor continues from `safe`
    ReplyStream.finish(result)                   the whole reply, as one result

What is sent as it decodes, by the reply's form (the rest is sent when the call ends,
from the parse of the whole reply, as before):

- ``free`` (no tools, or ``tool_choice: "none"``): every token's text.
- ``auto`` (tools, ``tool_choice: "auto"``): undecided until the first character that
  is not a space. ``{``, ``[`` or ``<`` opens a call: held to the end. Anything else is
  text, sent as it comes except a tail that could begin a call's tag (the family's
  trigger, ``<tool_call>`` for Qwen); once a tag appears, the rest is held.
- ``whole`` (calls only: ``"required"`` or a named function; ``response_format``):
  held to the end, so that what the client saw never depends on a grammar's state.

**Continuation.** ``safe`` counts the output ids a survivor may continue from: the
client has seen no text beyond them, and the grammar may restart there (free text:
none, or, under ``auto``, the family's triggered tags: ``ToolCalls.continuation``).
A replica that dies mid-reply: the survivor gets prompt + those ids and the rest of
``max_tokens``; with nothing safe it starts the reply again, which the client cannot
tell, since it was sent nothing. The client never sees a token twice.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any, Literal

from executor.fleet.generation import GenerateResult, TokenDelta

Form = Literal["free", "auto", "whole"]
State = Literal["undecided", "text", "held"]
_START: dict[Form, State] = {"free": "text", "auto": "undecided", "whole": "held"}
CONSTRAINTS = ("structural_tag", "json_schema", "regex", "ebnf")  # sampling keys


class Sink:
    """The route's end of a streamed reply: its id, the headers (known before the first
    token), a signal when decoding has begun, and the text to send, in order."""

    def __init__(self) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())
        self.headers: dict[str, str] = {}
        self.started = asyncio.Event()
        self.texts: asyncio.Queue[str] = asyncio.Queue()

    def put(self, text: str) -> None:
        self.texts.put_nowait(text)


def _pending(text: str, triggers: tuple[str, ...]) -> bool:
    """Whether the end of ``text`` could be the start of a trigger."""
    return any(text.endswith(t[:k]) for t in triggers for k in range(1, len(t)))


class ReplyStream:
    """One reply's deltas: what was received, what was sent, where to continue."""

    def __init__(
        self,
        form: Form,
        sink: Sink,
        triggers: tuple[str, ...] = (),
        continuation: Callable[[], tuple[str, str] | None] | None = None,
    ) -> None:
        self.form = form
        self.sink = sink
        self.triggers = triggers
        self.continuation = continuation  # builds the constraint a survivor continues under
        self.state: State = _START[form]
        self.ids: list[int] = []  # received output ids (across attempts)
        self.text = ""  # their text
        self.sent = ""  # what the client has been sent
        self.safe = 0  # ids a survivor may continue from
        self.safe_text = ""
        self.prefix: tuple[list[int], str] = ([], "")  # what this attempt continues
        self.resumes = 0

    def feed(self, delta: TokenDelta) -> None:
        self.sink.started.set()
        self.ids.extend(delta.ids)
        self.text += delta.text
        if self.state == "undecided":
            head = self.text.lstrip()
            if not head:
                return
            self.state = "held" if head[0] in "{[<" else "text"
        if self.state != "text":
            return
        if any(t in self.text for t in self.triggers):
            self.state = "held"  # a call begins: nothing more until the end
            return
        if _pending(self.text, self.triggers):
            return  # maybe a tag's beginning: wait for the next token
        self.safe, self.safe_text = len(self.ids), self.text
        new = self.text[len(self.sent) :]
        if new:
            self.sent = self.text
            self.sink.put(new)

    def resume(self, request: dict[str, Any]) -> dict[str, Any] | None:
        """The request for a survivor: continue after the safe ids (the same request
        when none are). None: the reply had already reached ``max_tokens``."""
        self.ids, self.text = self.ids[: self.safe], self.safe_text
        self.prefix = (list(self.ids), self.text)
        self.resumes += 1
        if not self.safe:
            return request
        sampling = dict(request["sampling"])
        sampling["max_new_tokens"] = int(sampling["max_new_tokens"]) - self.safe
        if sampling["max_new_tokens"] < 1:
            return None
        for key in CONSTRAINTS:
            sampling.pop(key, None)
        constraint = self.continuation() if self.continuation is not None else None
        if constraint is not None:
            sampling[constraint[0]] = constraint[1]
        return {**request, "input_ids": [*request["input_ids"], *self.ids], "sampling": sampling}

    def finish(
        self, result: GenerateResult | None, prompt_tokens: int, replica_id: str
    ) -> GenerateResult:
        """The whole reply: this attempt's result after what it continued (None: nothing
        was left to generate on ``replica_id``)."""
        ids, text = self.prefix
        if result is None:
            return GenerateResult(
                replica_id=replica_id,
                text=text,
                output_ids=ids,
                prompt_tokens=prompt_tokens,
                cached_tokens=0,
                completion_tokens=len(ids),
                finish_reason="length",
                latency_s=0.0,
            )
        if not ids:
            return result
        return result.model_copy(
            update={
                "text": text + result.text,
                "output_ids": ids + result.output_ids,
                "prompt_tokens": prompt_tokens,
                "cached_tokens": min(result.cached_tokens, prompt_tokens),
                "completion_tokens": len(ids) + result.completion_tokens,
            }
        )

    def rest(self, content: str | None) -> str:
        """The part of the reply's final content the client has not been sent."""
        content = content or ""
        return content[len(self.sent) :] if content.startswith(self.sent) else ""
