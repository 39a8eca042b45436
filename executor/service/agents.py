"""The agents a client may name: a module's ``Agent`` objects; and inline agents."""

from __future__ import annotations

import importlib

from executor.agent import Agent, AgentDefinitionError
from executor.errors import ExecutorError
from executor.service.models import InlineAgent
from tools.builtin import BUILTIN_TOOLS


def load_agents(module_names: list[str], model: str) -> dict[str, Agent]:
    """Every ``Agent`` at the top level of each module, by its name (its model must be the
    service's)."""
    found: dict[str, Agent] = {}
    for name in module_names:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise ExecutorError(f"cannot import the agents module {name!r}: {exc}") from None
        for value in vars(module).values():
            if isinstance(value, Agent):
                if value.model != model:
                    raise ExecutorError(
                        f"agent {value.name!r} of {name} wants model {value.model!r}; "
                        f"this service serves {model!r}"
                    )
                found[value.name] = value
    return found


def inline_agent(spec: InlineAgent, model: str) -> Agent:
    """An agent from a request: only built-in tools (nothing from the request is imported)."""
    builtins = {t.name: t for t in BUILTIN_TOOLS}
    unknown = [n for n in spec.tools if n not in builtins]
    if unknown:
        raise AgentDefinitionError(
            f"agent.tools: {', '.join(unknown)} not built-in tools (inline agents may use "
            f"only {', '.join(builtins)})"
        )
    return Agent(
        name=spec.name,
        instructions=spec.instructions,
        model=model,
        tools=[builtins[n] for n in spec.tools],
        max_steps=spec.max_steps,
        sampling=spec.sampling,
        tool_choice=spec.tool_choice,
        max_answer_chars=spec.max_answer_chars,
        answer_hint=spec.answer_hint,
    )
