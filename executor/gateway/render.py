"""OpenAI chat messages -> the served model's chat template -> token ids.

Messages come as the client sent them (validated by SGLang's request model first);
:func:`template_messages` puts them in the form chat templates expect (text content,
tool-call arguments as objects, ``developer`` as ``system``), and :class:`Renderer`
renders them with the tokenizer's own template, tools included (a template that
ignores ``tools`` gets them listed in the system turn, as ``ChatFormat`` does).
"""

from __future__ import annotations

import json
from typing import Any

from executor.gateway.errors import bad_request

_PLACEHOLDER = "\u2063REPLY\u2063"


def text_content(value: Any, where: str, kinds: tuple[str, ...] = ("text", "input_text")) -> str:
    """A message's content (a string, or text parts of ``kinds``) as one string."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # content parts: only text is served
        texts = []
        for part in value:
            if not isinstance(part, dict) or part.get("type") not in kinds:
                raise bad_request("only text content parts are supported", f"{where}.content")
            texts.append(str(part.get("text", "")))
        return "".join(texts)
    raise bad_request("content must be a string or a list of text parts", f"{where}.content")


def _arguments(raw: Any, where: str) -> dict[str, Any]:
    if isinstance(raw, dict):
        return raw
    if raw is None or raw == "":
        return {}
    try:
        value = json.loads(raw) if isinstance(raw, str) else None
    except json.JSONDecodeError as exc:
        raise bad_request(
            f"the tool call's arguments are not valid JSON ({exc.msg})",
            where,
            "invalid_tool_call_arguments",
        ) from None
    if not isinstance(value, dict):
        raise bad_request("a tool call's arguments must be a JSON object", where)
    return value


def template_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages as chat templates take them (raises a 400 ``GatewayError`` on
    content the gateway cannot render, such as malformed tool-call JSON)."""
    out = []
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        role = m.get("role")
        role = "system" if role == "developer" else role
        msg: dict[str, Any] = {"role": role, "content": text_content(m.get("content"), where)}
        if m.get("name"):
            msg["name"] = m["name"]
        if role == "tool" and m.get("tool_call_id") is not None:
            msg["tool_call_id"] = m["tool_call_id"]
        calls = m.get("tool_calls")
        if role == "assistant" and calls:
            msg["tool_calls"] = [
                {
                    "id": c.get("id"),
                    "type": "function",
                    "function": {
                        "name": (c.get("function") or {}).get("name"),
                        "arguments": _arguments(
                            (c.get("function") or {}).get("arguments"),
                            f"{where}.tool_calls[{j}].function.arguments",
                        ),
                    },
                }
                for j, c in enumerate(calls)
            ]
        out.append(msg)
    return out


class Renderer:
    """One model's chat template and tokenizer."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        text = self.render(
            [{"role": "user", "content": "u"}, {"role": "assistant", "content": _PLACEHOLDER}],
            None,
            generation=False,
        )
        # what the template writes after an assistant reply's text (its end of turn)
        self.assistant_tail = text.split(_PLACEHOLDER, 1)[1] if _PLACEHOLDER in text else ""

    @property
    def chat_template(self) -> str:
        return str(getattr(self.tokenizer, "chat_template", "") or "")

    def render(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
        generation: bool = True,
    ) -> str:
        text = str(
            self.tokenizer.apply_chat_template(
                messages,
                tools=tools or None,
                add_generation_prompt=generation,
                tokenize=False,
            )
        )
        if tools and any(t["function"]["name"] not in text for t in tools):
            # a template without tool support: list them in the system turn ourselves
            listing = "# Tools\n" + "\n".join(json.dumps(t["function"]) for t in tools)
            if messages and messages[0]["role"] == "system":
                first = {**messages[0], "content": f"{messages[0]['content']}\n\n{listing}"}
                messages = [first, *messages[1:]]
            else:
                messages = [{"role": "system", "content": listing}, *messages]
            text = str(
                self.tokenizer.apply_chat_template(
                    messages, add_generation_prompt=generation, tokenize=False
                )
            )
        return text

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def decode(self, ids: list[int]) -> str:
        return str(self.tokenizer.decode(ids, skip_special_tokens=False))

    def prompt(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None
    ) -> list[int]:
        return self.encode(self.render(messages, tools))

    def after_reply(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, reply_at: int
    ) -> str | None:
        """The text the template puts after the assistant turn ``messages[reply_at]``
        up to the new generation prompt, or None where the template does not render
        the conversation as that prefix plus a suffix."""
        full = self.render(messages, tools)
        upto = self.render(messages[: reply_at + 1], tools, generation=False)
        return full[len(upto) :] if full.startswith(upto) else None
