"""smolagents' ``ToolCallingAgent`` through the gateway, as its documentation sets it
up (``OpenAIServerModel`` with the base URL): the real core, a stand-in replica (no
engine), the app served by uvicorn in a thread (smolagents is synchronous). The
agent's call runs its tool, and its ``final_answer`` call (a tool too, in smolagents)
ends the run with the answer; both requests are chat completions of one session."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI
from test_gateway_admission import make, tokenizer  # noqa: F401

from executor.fleet.actor import free_port
from executor.gateway.routes import install


def call(name: str, args: str) -> str:
    return f'<tool_call>\n{{"name": "{name}", "arguments": {args}}}\n</tool_call>'


def test_a_tool_calling_agent_runs_its_tool_and_answers(tokenizer: Any) -> None:  # noqa: F811
    from smolagents import LogLevel, OpenAIServerModel, Tool, ToolCallingAgent

    ran: list[str] = []

    class Weather(Tool):  # type: ignore[misc]
        name = "get_weather"
        description = "The weather in a city."
        inputs = {"city": {"type": "string", "description": "the city"}}
        output_type = "string"

        def forward(self, city: str) -> str:
            ran.append(city)
            return f"sunny in {city}"

    gw, replica, _ = make(tokenizer)
    replica.script = [
        call("get_weather", '{"city": "Paris"}'),
        call("final_answer", '{"answer": "sunny in Paris"}'),
    ]
    app = FastAPI()
    install(app, gw, None)
    paths: list[str] = []
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    serving = threading.Thread(target=server.run, daemon=True)
    serving.start()
    try:
        while not server.started:
            assert serving.is_alive(), "the test server did not start"
            time.sleep(0.02)
        http = httpx.Client(event_hooks={"request": [lambda r: paths.append(r.url.path)]})
        model = OpenAIServerModel(
            model_id="tiny",
            api_base=f"http://127.0.0.1:{port}/v1",
            api_key="-",
            client_kwargs={"http_client": http, "max_retries": 0},
        )
        agent = ToolCallingAgent(
            tools=[Weather()], model=model, max_steps=3, verbosity_level=LogLevel.OFF
        )
        answer = agent.run("What is the weather in Paris?")
    finally:
        server.should_exit = True
        serving.join(10)
    assert answer == "sunny in Paris"
    assert ran == ["Paris"]
    assert paths == ["/v1/chat/completions"] * 2
    (session,) = gw.sessions.sessions()  # keyless: its second call continued the first
    assert session.calls == 2
    first, second = replica.requests
    assert second.input_ids[: len(first.input_ids)] == first.input_ids
