"""Exact prefix reuse: a session's last prompt and reply as the token ids the engine saw.

An OpenAI client sends the assistant's reply back as text / tool calls; rendered
through the chat template again, its tokens can differ from the ones generated
(another tokenization, whitespace, a template that drops tool calls), and the
radix cache then misses from that point on. So per session the gateway keeps the
last call's prompt ids and its output ids as generated, with digests of what it
answered: when the next request repeats the earlier messages and that reply
unchanged, its prompt is those ids, then the end of the assistant turn and the
new messages rendered by the template (only the suffix is tokenized).
"""

from __future__ import annotations

import hashlib
import json
from array import array
from dataclasses import dataclass
from typing import Any

from executor.gateway.render import Renderer


def digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def reply_form(content: str | None, calls: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """What identifies a reply when the client sends it back: its text and its calls
    (names and arguments as JSON values; call ids and whitespace around the text and
    in the arguments do not count)."""
    return {"content": (content or "").strip(), "calls": [[n, a] for n, a in calls]}


def sent_reply_form(message: dict[str, Any]) -> dict[str, Any] | None:
    """``reply_form`` of an assistant message from a request (template form), or None."""
    if message.get("role") != "assistant":
        return None
    calls = [
        (c["function"]["name"], c["function"]["arguments"]) for c in message.get("tool_calls", [])
    ]
    return reply_form(message.get("content"), calls)


@dataclass
class Turn:
    """The last call of a session: its messages (as a digest), prompt + output ids."""

    messages_digest: str
    n_messages: int
    reply_digest: str
    ids: array  # type: ignore[type-arg]  # prompt ids, then output ids as generated
    output_tokens: int

    @classmethod
    def make(
        cls,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
        prompt_ids: list[int],
        output_ids: list[int],
        reply: dict[str, Any],
    ) -> Turn:
        return cls(
            digest([messages, tools]),
            len(messages),
            digest(reply),
            array("i", prompt_ids + output_ids),
            len(output_ids),
        )


def build_prompt(
    renderer: Renderer,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None,
    last: Turn | None,
) -> tuple[list[int], bool]:
    """(prompt ids, whether the last turn's ids were reused exactly)."""
    k = last.n_messages if last is not None else -1
    if last is not None and len(messages) > k + 1:
        reply = sent_reply_form(messages[k])
        if (
            reply is not None
            and digest(reply) == last.reply_digest
            and digest([messages[:k], tools]) == last.messages_digest
        ):
            suffix = renderer.after_reply(messages, tools, k)
            if suffix is not None:
                ids = last.ids.tolist()
                tail = renderer.assistant_tail
                end = renderer.decode(ids[-1:]) if last.output_tokens else ""
                if end and tail.startswith(end):  # the reply's own end-of-turn token
                    tail = tail[len(end) :]
                return ids + renderer.encode(tail + suffix), True
    return renderer.prompt(messages, tools), False
