"""A task's conversation as token ids, rendered with the model's own chat template.

The transcript is append-only: call k's prompt is exactly call k-1's prompt, then
call k-1's output ids as the engine produced them, then the observation's ids.
Nothing already sent is ever re-tokenized, so RadixAttention finds every earlier
token in its cache and the call prefills only the observation.

The template is used twice, once at start: to render the first prompt (system
turn with the tools' schemas, the user's goal, the assistant's generation
prompt), and to learn what text a tool turn adds after an assistant turn (the
end-of-turn marker, the tool/user header, and the next assistant header). The
latter is found by rendering a conversation with placeholder texts and cutting
around them, so any template of the ChatML family (Qwen, SmolLM2, the test
model) works without special cases.

Off the event loop: :meth:`ChatFormat.aprompt` and :meth:`ChatFormat.aobservation`
render and tokenize on the format's own thread (one: the tokenizer is never used
by two threads at once), so a long template render does not stall the loop that
serves every task.
"""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from executor.errors import ExecutorError

_REPLY = "\u2063REPLY\u2063"
_OBS = "\u2063OBSERVATION\u2063"


class ChatFormatError(ExecutorError):
    """The model's tokenizer has no chat template this runtime can use."""


class ChatFormat:
    def __init__(self, tokenizer: Any, name: str = "") -> None:
        if not getattr(tokenizer, "chat_template", None):
            raise ChatFormatError(f"the tokenizer of {name or 'the model'} has no chat template")
        self.tokenizer = tokenizer
        self.name = name
        self._tool_turn_pre, self._tool_turn_post = self._tool_turn()
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="chat-format")

    @classmethod
    def load(cls, model_path: str | Path) -> ChatFormat:
        from transformers import AutoTokenizer

        return cls(AutoTokenizer.from_pretrained(str(model_path)), str(model_path))

    def _render(
        self, messages: list[dict[str, str]], tools: list[dict[str, Any]] | None, gen: bool
    ) -> str:
        text = self.tokenizer.apply_chat_template(
            messages, tools=tools, add_generation_prompt=gen, tokenize=False
        )
        return str(text)

    def _tool_turn(self) -> tuple[str, str]:
        base = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
        convo = base + [{"role": "assistant", "content": _REPLY}, {"role": "tool", "content": _OBS}]
        text = self._render(convo, None, True)
        if text.count(_REPLY) != 1 or text.count(_OBS) != 1:
            raise ChatFormatError(f"cannot find a tool turn in the chat template of {self.name}")
        after = text[text.index(_REPLY) + len(_REPLY) :]
        pre, post = after.split(_OBS)
        return pre, post

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def prompt(self, system: str, goal: str, tools: list[dict[str, Any]]) -> tuple[str, list[int]]:
        """The first call's prompt (text and ids): system turn with the tools, the goal."""
        messages = [{"role": "system", "content": system}, {"role": "user", "content": goal}]
        text = self._render(messages, tools, True)
        missing = [t["function"]["name"] for t in tools if t["function"]["name"] not in text]
        if missing:  # a template without tool support: list them in the system turn ourselves
            listing = "\n".join(json.dumps(t["function"]) for t in tools)
            messages[0]["content"] = f"{system}\n\n# Tools\n{listing}"
            text = self._render(messages, None, True)
        return text, self.encode(text)

    def observation(self, output_ids: list[int], content: str) -> tuple[str, list[int]]:
        """What follows a reply: the rest of the assistant turn, a tool turn, a new
        assistant header. ``output_ids`` is the reply as generated (it may already
        end with the end-of-turn token)."""
        pre = self._tool_turn_pre
        if output_ids:
            last = self.tokenizer.decode(output_ids[-1:], skip_special_tokens=False)
            if last and pre.startswith(last):
                pre = pre[len(last) :]
        text = pre + content + self._tool_turn_post
        return text, self.encode(text)

    async def aprompt(
        self, system: str, goal: str, tools: list[dict[str, Any]]
    ) -> tuple[str, list[int]]:
        """:meth:`prompt` on the format's thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self.prompt, system, goal, tools)

    async def aobservation(self, output_ids: list[int], content: str) -> tuple[str, list[int]]:
        """:meth:`observation` on the format's thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self.observation, output_ids, content)

    async def run(self, fn: Any, *args: Any) -> Any:
        """``fn(*args)`` on the format's thread (whatever uses the tokenizer)."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)
