"""The agents the service tests register (``--agents service_agents``)."""

from __future__ import annotations

from agent_tools import mark, tiny_agent

quick = tiny_agent(mark, name="quick")
# Calls ``mark`` on every step until its step limit: 5 tool runs in 6 calls.
marker = tiny_agent(
    mark, name="marker", reset_tool_choice=False, answer_on_repeat=False, max_steps=6
)
