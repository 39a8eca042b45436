"""``Agent``: what an agent is (instructions, tools, model, limits), validated up front.

    agent = Agent(name="analyst", instructions="...", tools=[python, read_file], model="tiny")

Tools are :class:`tools.Tool` objects (``@tool``-decorated functions or the
built-ins). ``tool_choice`` follows the OpenAI convention: ``"auto"`` lets the
model answer or call a tool; ``"required"`` or a tool's name forces a tool call;
with ``reset_tool_choice`` (the default, as in openai-agents) it falls back to
``"auto"`` after the first tool call, so a forced choice cannot loop forever.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from executor.errors import ExecutorError, validation_problems
from executor.sampling import SamplingParams
from tools.declare import NAME_RE, Tool

FINAL_ANSWER = "final_answer"
#: the default of ``Agent.answer_hint``
ANSWER_HINT = "(If this answers the task, call final_answer now.)"
DEFAULT_MODEL = "qwen2.5-coder-0.5b"


class AgentDefinitionError(ExecutorError, ValueError):
    """An agent that cannot run (no name, a tool that is not a tool, a bad limit...)."""


class Agent(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, frozen=True)

    name: str = Field(min_length=1, max_length=64)
    instructions: str = "You are a helpful assistant that solves tasks with tools."
    tools: tuple[Tool, ...] = ()
    model: str = DEFAULT_MODEL
    max_steps: int = Field(12, ge=1, le=200)
    """Model calls a task may make; when they are spent the task ends as ``step_limit``."""
    sampling: SamplingParams = Field(
        default_factory=lambda: SamplingParams(max_new_tokens=256, temperature=0.0)
    )
    tool_choice: str = "auto"
    reset_tool_choice: bool = True
    max_answer_chars: int = Field(2000, ge=1)
    """Upper bound on the final answer's length (enforced by the reply grammar)."""
    answer_on_repeat: bool = True
    """Loop guard: when a tool call repeats an earlier one, or a tool returns exactly what
    the previous one did, nothing new can come of calling again: the repeated call is not
    run (its earlier result is shown) and the next reply must be the final answer."""
    answer_hint: str = Field(ANSWER_HINT, max_length=500)
    """A line the model is shown after every successful tool result (not part of the
    result the user reads in the task's steps); "" shows nothing. Small models call a
    tool again after it answered unless told to stop (measured 0/3 without the default
    line, 3/3 with it, on qwen2.5-coder-0.5b)."""

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise AgentDefinitionError(
                f"invalid agent: {validation_problems(exc, 'agent')}"
            ) from None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME_RE.match(value):
            raise ValueError(f"must match {NAME_RE.pattern} (letters, digits, _ and -)")
        return value

    @field_validator("tools", mode="before")
    @classmethod
    def _tools(cls, value: Any) -> Any:
        items = list(value) if isinstance(value, list | tuple) else [value]
        for item in items:
            if not isinstance(item, Tool):
                raise ValueError(f"{item!r} is not a tool: decorate the function with @tool")
        names = [t.name for t in items]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"two tools share the name {dupes[0]!r}")
        if FINAL_ANSWER in names:
            raise ValueError(f"{FINAL_ANSWER!r} is reserved for the agent's answer")
        return tuple(items)

    @field_validator("sampling", mode="before")
    @classmethod
    def _sampling(cls, value: Any) -> Any:
        if isinstance(value, dict) and {"json_schema", "regex", "ebnf"} & set(value):
            raise ValueError("the reply grammar is the executor's: no json_schema/regex/ebnf")
        return value

    @model_validator(mode="after")
    def _choice(self) -> Agent:
        names = {t.name for t in self.tools}
        if self.tool_choice not in {"auto", "required", *names}:
            raise ValueError(
                f"tool_choice {self.tool_choice!r} must be 'auto', 'required' or a tool's name "
                f"({', '.join(sorted(names)) or 'the agent has no tools'})"
            )
        if self.tool_choice != "auto" and not names:
            raise ValueError("tool_choice forces a tool call but the agent has no tools")
        return self

    def tool(self, name: str) -> Tool | None:
        return next((t for t in self.tools if t.name == name), None)

    def describe(self) -> dict[str, Any]:
        """A JSON-able description of the agent (stored in the journal)."""
        return {
            "name": self.name,
            "instructions": self.instructions,
            "tools": [t.name for t in self.tools],
            "model": self.model,
            "max_steps": self.max_steps,
            "sampling": self.sampling.model_dump(exclude_none=True),
            "tool_choice": self.tool_choice,
            "reset_tool_choice": self.reset_tool_choice,
            "max_answer_chars": self.max_answer_chars,
            "answer_on_repeat": self.answer_on_repeat,
            "answer_hint": self.answer_hint,
        }
