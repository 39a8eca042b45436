"""The replicas' context, sized from the prompts the executor will render.

A task's last prompt through the product is not the plan's tokens: the chat
template wraps the first call (the system turn with the tools' schemas, the
goal, the assistant header) and every observation (end of the assistant turn,
a tool turn with the tool's text and the executor's answer hint, the next
assistant header), and each reply may take up to ``MAX_REPLY_TOKENS``. Up to
48 observations of ~30 tokens of wrapping each is ~1.5K tokens the plan does
not count (``heavy_tail``, seed 11: a last prompt of 13,018 tokens against a
context sized 12,002 from the plan).

:func:`task_peaks` bounds each task's last call (prompt and reply) from above:
its first prompt rendered exactly with the same :class:`ChatFormat` and agent
as the product, then per observation its plan's tokens plus the wrapping (an
empty observation rendered, plus ``EDGE_TOKENS`` for re-encoding at its two
edges) plus a reply of ``MAX_REPLY_TOKENS``.
"""

from __future__ import annotations

import json
from typing import Any

from benchmarks.e2e.contestants import MAX_REPLY_TOKENS
from benchmarks.e2e.product import ObservationText, agents_for, replay_tool
from benchmarks.e2e.workload import ReplayTask
from executor import Agent
from executor.errors import ExecutorError
from executor.loop.chat_format import ChatFormat
from executor.loop.driver import first_prompt
from executor.loop.machine import Observe, RunTool, TaskMachine
from executor.loop.steps import CallPayload, ToolStartPayload
from executor.result import CallStep

#: tokens an observation's text may gain when encoded inside its turn (measured: at
#: most 1 over ~300 observations of heavy_tail); the bound takes a few more
EDGE_TOKENS = 4


def observation_content(agent: Agent, text: str) -> str:
    """What the model sees of a successful tool result ``text`` (with the executor's
    own wrapping, e.g. the agent's answer hint): a task machine driven through one
    call of the ``replay`` tool and its result."""
    machine = TaskMachine(agent.model_copy(update={"max_steps": 2}), "sizing", [0])
    reply = json.dumps({"name": "replay", "arguments": {}})
    info = CallStep(
        step=1,
        replica_id="r",
        prompt_tokens=1,
        cached_tokens=0,
        completion_tokens=1,
        latency_s=0.0,
        queue_wait_s=0.0,
        finish_reason="stop",
        reply=reply,
    )
    machine.apply(CallPayload(ids=[1], info=info))
    run = machine.next_action()
    if not isinstance(run, RunTool):
        raise ExecutorError(f"the agent did not run its replay tool: {run!r}")
    machine.apply(ToolStartPayload(call_id=run.call_id, tool=run.tool, arguments=run.arguments))
    machine.apply(machine.tool_result(run, {"ok": True, "text": text}, 0.0))
    seen = machine.next_action()
    if not isinstance(seen, Observe):
        raise ExecutorError(f"the machine did not observe the tool's result: {seen!r}")
    return seen.text


def observation_overhead(chat: ChatFormat, agent: Agent) -> int:
    """Tokens each observation adds beyond its text: the template's turn markers, the
    answer hint, the edges' slack and a whole reply before it."""
    wrapped = chat.observation([], observation_content(agent, ""))[1]
    return len(wrapped) + EDGE_TOKENS + MAX_REPLY_TOKENS


def task_peaks(
    workload: list[ReplayTask], chat: ChatFormat, texts: ObservationText, model: str = "m"
) -> dict[str, int]:
    """Per task, an upper bound on its last call's prompt plus ``MAX_REPLY_TOKENS``
    through the product; at least the plan's own tokens (the replays of the plan)."""
    tool_ = replay_tool([], texts)  # its schema only
    agents = agents_for(workload, model, texts, tool_, {w.task_id: w.calls for w in workload})
    per_obs = observation_overhead(chat, next(iter(agents.values())))
    out = {}
    for w in workload:
        agent = agents[f"{w.plan.agent}-{w.calls}"]
        first = len(first_prompt(agent, texts.text(w.new_ids[0]), chat))
        rendered = (
            first
            + sum(len(ids) for ids in w.new_ids[1:])
            + (w.calls - 1) * per_obs
            + MAX_REPLY_TOKENS
        )
        planned = sum(w.plan.new_tokens) + sum(w.plan.output_tokens)
        out[w.task_id] = max(rendered, planned)
    return out


def context_tokens(peaks: dict[str, int], pool_tokens: int | None = None) -> int:
    """The replicas' ``context_length`` for tasks of these :func:`task_peaks`: every
    task's last call fits (SGLang takes a prompt of at most ``context_length - 1``
    tokens with its reply). With ``pool_tokens`` (the KV pool), a clear error if the
    longest task cannot fit it."""
    need = max(peaks.values()) + 1
    if pool_tokens is not None and need > pool_tokens:
        worst = max(peaks, key=lambda k: peaks[k])
        raise ExecutorError(
            f"task {worst} reaches a prompt of up to {need - 1} tokens with its reply, more "
            f"than a replica's KV pool of {pool_tokens}: give --max-total-tokens "
            f"{need} or more, or a workload with shorter histories"
        )
    return need


def load_chat(model: str) -> tuple[ChatFormat, ObservationText]:
    """The model's chat format and the text-of-a-length helper the product uses."""
    from executor.models import resolve

    chat = ChatFormat.load(resolve(model))
    return chat, ObservationText(chat.tokenizer)


def sized_report(workload: list[ReplayTask], peaks: dict[str, int]) -> dict[str, Any]:
    """The sizing in the report: the plan's longest against the rendered bound."""
    planned = max(sum(w.plan.new_tokens) + sum(w.plan.output_tokens) for w in workload)
    return {
        "plan_longest": planned,
        "rendered_peak": max(peaks.values()),
        "context_tokens": max(peaks.values()) + 1,
    }
