"""The clients of the framework benchmark (:mod:`benchmarks.toolcalls`), each as its
documentation shows, unchanged but for the base URL, ``tool_choice`` at its default:
a plain ``openai`` chat-completions loop; openai-agents through chat completions and
through responses; langchain-openai ``bind_tools`` in a loop; smolagents'
``ToolCallingAgent``. Each runs one task and returns its final text; the tools it
calls run through ``Run.tool``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from benchmarks.toolcall_servers import Endpoint
from benchmarks.toolcall_tasks import SYSTEM, TOOLS, Run, Task

MAX_TURNS = 5
MAX_TOKENS = 200


def _args(raw: str) -> Any:
    try:
        return json.loads(raw or "{}")
    except json.JSONDecodeError:
        return None


async def openai_loop(at: Endpoint, model: str, task: Task, run: Run) -> str:
    import openai

    async with run.http() as http:
        client = openai.AsyncOpenAI(
            base_url=at.base, api_key=at.key, http_client=http, max_retries=0
        )
        tools: Any = [{"type": "function", "function": t} for t in TOOLS]
        messages: list[Any] = [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": task.prompt},
        ]
        for _ in range(MAX_TURNS):
            out = await client.chat.completions.create(
                model=model, messages=messages, tools=tools, temperature=0, max_tokens=MAX_TOKENS
            )
            msg = out.choices[0].message
            messages.append(msg.model_dump(exclude_none=True))
            if not msg.tool_calls:
                return msg.content or ""
            for call in msg.tool_calls:
                fn = call.function  # type: ignore[union-attr]
                result = run.tool(task, fn.name, _args(fn.arguments))
                messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
        return ""


async def _agents(at: Endpoint, model: str, task: Task, run: Run, responses: bool) -> str:
    import openai
    from agents import (
        Agent,
        FunctionTool,
        ModelSettings,
        OpenAIChatCompletionsModel,
        OpenAIResponsesModel,
        Runner,
        set_tracing_disabled,
    )

    set_tracing_disabled(True)

    def function_tool(spec: dict[str, Any]) -> FunctionTool:
        async def invoke(_ctx: Any, raw: str) -> str:
            return run.tool(task, spec["name"], _args(raw))

        return FunctionTool(
            name=spec["name"],
            description=spec["description"],
            params_json_schema=spec["parameters"],
            on_invoke_tool=invoke,
        )

    async with run.http() as http:
        client = openai.AsyncOpenAI(
            base_url=at.base, api_key=at.key, http_client=http, max_retries=0
        )
        kind = OpenAIResponsesModel if responses else OpenAIChatCompletionsModel
        agent = Agent(
            name="facts",
            instructions=SYSTEM,
            tools=[function_tool(t) for t in TOOLS],
            model=kind(model=model, openai_client=client),
            model_settings=ModelSettings(temperature=0, max_tokens=MAX_TOKENS),
        )
        result = await Runner.run(agent, task.prompt, max_turns=MAX_TURNS)
        return str(result.final_output)


async def agents_chat(at: Endpoint, model: str, task: Task, run: Run) -> str:
    return await _agents(at, model, task, run, responses=False)


async def agents_responses(at: Endpoint, model: str, task: Task, run: Run) -> str:
    return await _agents(at, model, task, run, responses=True)


async def langchain_loop(at: Endpoint, model: str, task: Task, run: Run) -> str:
    from langchain_core.messages import HumanMessage, SystemMessage, ToolMessage
    from langchain_openai import ChatOpenAI

    async with run.http() as http:
        llm = ChatOpenAI(
            model=model,
            base_url=at.base,
            api_key=at.key,
            http_async_client=http,
            temperature=0,
            max_tokens=MAX_TOKENS,
            max_retries=0,
        ).bind_tools([{"type": "function", "function": t} for t in TOOLS])
        messages: list[Any] = [SystemMessage(SYSTEM), HumanMessage(task.prompt)]
        for _ in range(MAX_TURNS):
            ai = await llm.ainvoke(messages)
            messages.append(ai)
            if not ai.tool_calls:
                return str(ai.content)
            for call in ai.tool_calls:
                result = run.tool(task, call["name"], call["args"])
                messages.append(ToolMessage(result, tool_call_id=call["id"]))
        return ""


def _smolagents(at: Endpoint, model: str, task: Task, run: Run) -> str:
    from smolagents import LogLevel, OpenAIServerModel, Tool, ToolCallingAgent

    def fact_tool(spec: dict[str, Any]) -> Tool:
        props = spec["parameters"]["properties"]

        class FactTool(Tool):  # type: ignore[misc]  # (a class per tool, built per task)
            name = spec["name"]
            description = spec["description"]
            # the same schema as the other clients get (smolagents passes extra keys
            # of an input, such as enum and pattern, through to the tool's JSON schema)
            inputs = {k: {**v, "description": k} for k, v in props.items()}
            output_type = "string"
            skip_forward_signature_validation = True

            def forward(self, **kwargs: Any) -> str:
                return run.tool(task, spec["name"], kwargs)

        return FactTool()

    with run.sync_http() as http:
        llm = OpenAIServerModel(
            model_id=model,
            api_base=at.base,
            api_key=at.key,
            client_kwargs={"http_client": http, "max_retries": 0},
            temperature=0,
            max_tokens=MAX_TOKENS,
        )
        agent = ToolCallingAgent(
            tools=[fact_tool(t) for t in TOOLS],
            model=llm,
            instructions=SYSTEM,
            max_steps=MAX_TURNS,
            verbosity_level=LogLevel.OFF,
        )
        return str(agent.run(task.prompt))


async def smolagents_loop(at: Endpoint, model: str, task: Task, run: Run) -> str:
    """smolagents' ``ToolCallingAgent`` (synchronous: in a thread)."""
    return await asyncio.to_thread(_smolagents, at, model, task, run)


Framework = Callable[[Endpoint, str, Task, Run], Awaitable[str]]
FRAMEWORKS: dict[str, Framework] = {
    "openai": openai_loop,
    "agents_chat": agents_chat,
    "agents_responses": agents_responses,
    "langchain": langchain_loop,
    "smolagents": smolagents_loop,
}
