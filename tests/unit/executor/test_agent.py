"""The agent runtime's pieces without an engine: agent definitions, the reply grammar,
the chat format, the journal, the dispatcher on the real scheduler core, the CLI's checks."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Literal

import pytest

from executor.agent import FINAL_ANSWER, Agent, AgentDefinitionError
from executor.cli.main import main as cli_main
from executor.cli.tasks import parse_tools
from executor.dispatch import Dispatcher, Grant, TaskRefused
from executor.errors import ExecutorError
from executor.loop.journal import Journal, JournalError
from executor.loop.reply import FinalAnswer, InvalidReply, ToolCall, parse_reply, reply_schema
from executor.loop.steps import (
    CallPayload,
    ObservationPayload,
    StepKind,
    ToolResultPayload,
    ToolStartPayload,
)
from executor.result import CallStep, ToolStep
from executor.runtime import agent_from_journal
from scheduler import SchedulerConfig, SchedulerCore
from tools import python, read_file, tool


@tool
def pick(label: Literal["a", "b"]) -> str:
    """Pick a label.

    Args:
        label: which one
    """
    return label


def make_agent(**kw: object) -> Agent:
    return Agent(name="t", tools=[pick, python], model="tiny", **kw)  # type: ignore[arg-type]


# -- agent definitions ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": ""}, "name"),
        ({"name": "has space"}, "must match"),
        ({"tools": [print]}, "not a tool"),
        ({"tools": [pick, pick]}, "share the name 'pick'"),
        ({"tool_choice": "nope"}, "tool_choice 'nope'"),
        ({"tool_choice": "required", "tools": []}, "no tools"),
        ({"max_steps": 0}, "max_steps"),
        ({"sampling": {"json_schema": "{}"}}, "reply grammar"),
        ({"sampling": {"temperature": -1}}, "temperature"),
        ({"unknown_field": 1}, "unknown_field"),
    ],
)
def test_invalid_agents_are_refused_clearly(kwargs: dict[str, object], message: str) -> None:
    fields: dict[str, object] = {"name": "t", "tools": [pick]}
    fields.update(kwargs)
    with pytest.raises(AgentDefinitionError, match=message):
        Agent(**fields)  # type: ignore[arg-type]


def test_final_answer_is_a_reserved_tool_name() -> None:
    @tool(name=FINAL_ANSWER)
    def fake(x: str) -> str:
        """Not allowed."""
        return x

    with pytest.raises(AgentDefinitionError, match="reserved"):
        Agent(name="t", tools=[fake])


def test_cli_tools_and_journal_agents_name_unknown_tools() -> None:
    assert [t.name for t in parse_tools("python, read_file")] == ["python", "read_file"]
    with pytest.raises(AgentDefinitionError, match="unknown tool.*nope.*built-ins are"):
        parse_tools("python,nope")
    desc = make_agent().describe()
    with pytest.raises(AgentDefinitionError, match="not built-ins \\(pick\\)"):
        agent_from_journal(desc)
    rebuilt = agent_from_journal({**desc, "tools": ["python", "read_file"]})
    assert rebuilt.tools == (python, read_file) and rebuilt.max_steps == desc["max_steps"]


def test_cli_run_with_an_unknown_tool_fails_before_starting_anything(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli_main(["run", "hello", "--tools", "nope"]) == 2
    assert "unknown tool(s) nope" in capsys.readouterr().err


# -- reply grammar ---------------------------------------------------------------------


def _names(schema: dict[str, object]) -> list[str]:
    shapes = schema.get("anyOf", [schema])
    return [s["properties"]["name"]["const"] for s in shapes]  # type: ignore[index]


def test_reply_schema_follows_tool_choice() -> None:
    agent = make_agent()
    assert _names(reply_schema(agent, "auto")) == ["pick", "python", FINAL_ANSWER]
    assert _names(reply_schema(agent, "required")) == ["pick", "python"]
    assert _names(reply_schema(agent, "pick")) == ["pick"]
    assert _names(reply_schema(agent, FINAL_ANSWER)) == [FINAL_ANSWER]
    answer = reply_schema(agent, FINAL_ANSWER)["properties"]["arguments"]  # type: ignore[index]
    assert answer["properties"]["answer"]["maxLength"] == agent.max_answer_chars
    json.dumps(reply_schema(agent, "auto"))  # JSON-able, as SGLang gets it


def test_parse_reply() -> None:
    agent = make_agent()
    assert parse_reply('{"name": "pick", "arguments": {"label": "a"}}', agent) == ToolCall(
        "pick", {"label": "a"}
    )
    assert parse_reply(
        '{"name": "final_answer", "arguments": {"answer": "42"}}', agent
    ) == FinalAnswer("42")
    for bad in (
        '{"name": "pick", "arguments": {"label": "a"',  # cut by max_new_tokens
        "[1, 2]",
        '{"name": "pick"}',
        '{"name": "pick", "arguments": []}',
        '{"name": "final_answer", "arguments": {"answer": ""}}',
    ):
        assert isinstance(parse_reply(bad, agent), InvalidReply), bad


# -- chat format (the tiny model's real tokenizer and template) -------------------------


def test_chat_format_is_append_only_and_matches_the_template() -> None:
    from executor.loop.chat_format import ChatFormat
    from executor.models import resolve

    chat = ChatFormat.load(resolve("tiny"))
    specs = [python.openai_spec()]
    text, ids = chat.prompt("be brief", "add 2 and 2", specs)
    assert "python" in text and text.endswith("<|im_start|>assistant\n")
    reply = '{"name": "python", "arguments": {"code": "2+2"}}'
    eos = chat.tokenizer.convert_tokens_to_ids("<|im_end|>")
    output = chat.encode(reply) + [eos]  # as the engine returns it: ending with end-of-turn
    obs_text, obs_ids = chat.observation(output, "4")
    transcript = chat.tokenizer.decode(ids + output + obs_ids, skip_special_tokens=False)
    expected = chat.tokenizer.apply_chat_template(
        [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "add 2 and 2"},
            {"role": "assistant", "content": reply},
            {"role": "tool", "content": "4"},
        ],
        tools=specs,
        add_generation_prompt=True,
        tokenize=False,
    )
    assert transcript == expected
    # without an end-of-turn token in the output, the observation closes the turn itself
    assert chat.observation(chat.encode(reply), "4")[0].startswith("<|im_end|>")


# -- journal ----------------------------------------------------------------------------


def test_journal_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    j = Journal(path)
    j.create_task("t1", {"name": "a"}, "goal", [1, 2])
    j.append("t1", CallPayload(ids=[3, 4], info=call_step(1)))
    j.append("t1", ToolStartPayload(call_id="t1-1", tool="x", arguments={}))
    j.append(
        "t1",
        ToolResultPayload(
            call_id="t1-1",
            result={"text": "ok", "ok": True},
            info=tool_step("t1-1", "ok"),
        ),
    )
    j.append("t1", ObservationPayload(ids=[5], text="ok"))
    j.append("t1", CallPayload(ids=[6], info=call_step(2)))
    j.append("t1", ToolStartPayload(call_id="t1-2", tool="x", arguments={}))
    j.close()
    j = Journal(path)  # durable: another connection reads it all back
    record = j.get("t1")
    assert [s.kind for s in record.steps] == [
        StepKind.CALL,
        "tool_start",
        "tool_result",
        "observation",
        "call",
        "tool_start",
    ]  # (a kind compares equal to its text)
    assert record.transcript_ids() == [1, 2, 3, 4, 5, 6]
    assert record.steps[2].payload == ToolResultPayload(
        call_id="t1-1", result={"text": "ok", "ok": True}, info=tool_step("t1-1", "ok")
    )
    assert list(record.tool_results()) == ["t1-1"]
    assert [u.call_id for u in record.unfinished_tools()] == ["t1-2"]
    assert j.list()[0] | {"created_at": 0, "updated_at": 0} == {
        "task_id": "t1",
        "agent": "a",
        "goal": "goal",
        "status": "running",
        "created_at": 0,
        "updated_at": 0,
        "calls": 2,
    }
    with pytest.raises(JournalError, match="already exists"):
        j.create_task("t1", {}, "g", [1])
    with pytest.raises(JournalError, match="no task 'nope'"):
        j.get("nope")
    with pytest.raises(JournalError, match="not a terminal status"):
        j.finish("t1", "running")
    j.finish("t1", "succeeded", output="42")
    assert j.get("t1").output == "42"
    j.close()


def test_journal_refuses_a_damaged_step(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.sqlite")
    j.create_task("t1", {"name": "a"}, "goal", [1])
    j.append("t1", ObservationPayload(ids=[5], text="ok"))
    with j._db:  # a row another program wrote wrongly
        j._db.execute("UPDATE steps SET payload = '{\"ids\": \"x\"}' WHERE task_id = 't1'")
    with pytest.raises(JournalError, match="step 0 of task t1 .* not a valid 'observation'"):
        j.get("t1")
    j.close()


def call_step(step: int) -> CallStep:
    return CallStep(
        step=step,
        replica_id="r0",
        prompt_tokens=10,
        cached_tokens=0,
        completion_tokens=2,
        latency_s=0.1,
        queue_wait_s=0.0,
        finish_reason="stop",
        reply="{}",
    )


def tool_step(call_id: str, output: str) -> ToolStep:
    return ToolStep(
        step=1, call_id=call_id, tool="x", arguments={}, ok=True, output=output, duration_s=0.1
    )


def test_cli_lists_and_shows_journaled_tasks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "j.sqlite"
    j = Journal(path)
    j.create_task("t1", {"name": "a"}, "what is 2+2", [1])
    j.append("t1", ToolStartPayload(call_id="t1-1", tool="python", arguments={"c": 1}))
    j.finish("t1", "succeeded", output="4")
    j.close()
    assert cli_main(["tasks", "--journal", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["status"] == "succeeded"
    assert cli_main(["show", "t1", "--journal", str(path), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["output"] == "4" and shown["steps"][0]["tool"] == "python"
    assert cli_main(["show", "nope", "--journal", str(path)]) == 2
    assert "no task 'nope'" in capsys.readouterr().err


# -- the dispatcher drives the real scheduler core -----------------------------------------

DONE = {"prompt_tokens": 10, "cached_tokens": 0, "output_tokens": 5, "latency_s": 0.1}


def test_dispatcher_queues_under_the_kv_budget_and_admits_later() -> None:
    async def scenario() -> None:
        d = Dispatcher(SchedulerCore(SchedulerConfig(kv_headroom=0.0)))
        d.replica_joined("r0", 1000)
        first = await d.arrive("a", "agent", 2, 800)
        assert first.replica_id == "r0" and first.cold
        second = asyncio.ensure_future(d.arrive("b", "agent", 2, 800))
        await asyncio.sleep(0)
        assert not second.done() and d.queue_depth == 1  # no KV room: queued
        d.call_finished(
            "a", "r0", prompt_tokens=100, cached_tokens=0, output_tokens=10, latency_s=0.1
        )
        d.finished("a")  # frees a's KV: b is admitted
        grant = await asyncio.wait_for(second, 1)
        assert grant.replica_id == "r0" and d.stats.queued_admission == 1
        with pytest.raises(TaskRefused, match="rejected"):
            await d.arrive("huge", "agent", 2, 10_000)  # fits no replica
        d.cancelled("b", "test")
        d.cancelled("b", "again")  # a no-op once ended

    asyncio.run(scenario())


def test_dispatcher_next_call_follows_whether_a_tool_ran() -> None:
    """A reply answered without running a tool (an invalid reply, a repeat the loop
    guard caught) is followed by NextCall; a tool that ran, by ToolFinished."""

    async def scenario() -> None:
        d = Dispatcher(SchedulerCore())
        d.replica_joined("r0", 10_000)
        await d.arrive("a", "agent", 3, 100)
        d.call_finished("a", "r0", **DONE)
        assert (await d.next_call("a")).replica_id == "r0"  # no tool ran: NextCall
        d.call_finished("a", "r0", **DONE)
        d.tool_started("a", "python")
        assert (await d.next_call("a")).replica_id == "r0"  # after the tool: ToolFinished
        assert d.core.task("a").state.value == "running"

    asyncio.run(scenario())


def test_dispatcher_fails_a_call_whose_last_replica_died() -> None:
    async def scenario() -> None:
        d = Dispatcher(SchedulerCore())
        d.replica_joined("r0", 10_000)
        await d.arrive("a", "agent", 2, 100)
        with pytest.raises(TaskRefused, match="replica r0 died and no live replica is left"):
            await d.after_replica_death("a", "r0", "actor died")

    asyncio.run(scenario())


async def _last_replica_dies_with_a_replacement_starting() -> tuple[
    Dispatcher, asyncio.Future[Grant]
]:
    d = Dispatcher(SchedulerCore(), replace_dead=True)
    d.replica_joined("r0", 10_000)
    await d.arrive("a", "agent", 2, 100)
    moved = asyncio.ensure_future(d.after_replica_death("a", "r0", "actor died"))
    await asyncio.sleep(0)
    return d, moved


def test_dispatcher_a_task_waits_for_the_replacement_of_its_last_replica() -> None:
    """With replacements on, the core keeps the task of a dead last replica waiting
    (it does not fail it) and places it on the replacement; the fleet hears of the death
    through the dispatcher's queue."""

    async def scenario() -> None:
        d, moved = await _last_replica_dies_with_a_replacement_starting()
        assert not moved.done() and d.core.task("a").state.value == "queued"
        deaths = d.deaths()
        assert await anext(deaths) == ("r0", "actor died")
        d.replica_joined("r1", 10_000, replaces="r0")
        grant = await asyncio.wait_for(moved, 1)
        assert grant.replica_id == "r1" and grant.cold and grant.moved_from == "r0"

    asyncio.run(scenario())


def test_dispatcher_a_failed_replacement_fails_the_waiting_tasks() -> None:
    async def scenario() -> None:
        d, moved = await _last_replica_dies_with_a_replacement_starting()
        d.replacement_failed("r0", "no CPU left")
        with pytest.raises(TaskRefused, match="r0 died and its replacement failed: no CPU left"):
            await asyncio.wait_for(moved, 1)

    asyncio.run(scenario())


def test_dispatcher_a_transient_call_failure_is_retried_on_the_same_replica() -> None:
    """An actor Ray calls unavailable is not dead: the call is retried where it was, up
    to the core's retry limit, then the task fails with the reason."""

    async def scenario() -> None:
        d = Dispatcher(SchedulerCore(SchedulerConfig(max_call_retries=1)))
        d.replica_joined("r0", 10_000)
        d.replica_joined("r1", 10_000)
        first = await d.arrive("a", "agent", 2, 100)
        again = await d.call_failed("a", first.replica_id, "ActorUnavailableError")
        assert again.replica_id == first.replica_id and d.live_replicas() == ["r0", "r1"]
        with pytest.raises(TaskRefused, match="call failed 2 times .*ActorUnavailableError"):
            await d.call_failed("a", first.replica_id, "ActorUnavailableError")

    asyncio.run(scenario())


def test_dispatcher_an_unreachable_replica_declared_dead_during_the_retry_wait() -> None:
    """A node that died leaves its actors unreachable for seconds before anyone calls
    them dead: the retry waits ``retry_after_s`` for the verdict, and a death meanwhile
    moves the task, its retries unspent (retried at once, it failed: tests/test_node_death)."""

    async def scenario() -> None:
        core = SchedulerCore(SchedulerConfig(max_call_retries=0))
        d = Dispatcher(core, retry_after_s=30)
        d.replica_joined("r0", 10_000)
        first = await d.arrive("a", "agent", 2, 100)
        d.replica_joined("r1", 10_000)
        waiting = asyncio.ensure_future(d.call_failed("a", first.replica_id, "unavailable"))
        await asyncio.sleep(0.05)
        assert not waiting.done()  # no retry yet: with no retries left, that would fail it
        d.replica_died(first.replica_id, "no health answer")
        grant = await asyncio.wait_for(waiting, 1)
        assert grant.replica_id == "r1" and grant.moved_from == first.replica_id

        # nobody declares it dead: the retry comes after the wait
        d = Dispatcher(SchedulerCore(SchedulerConfig(max_call_retries=1)), retry_after_s=0.2)
        d.replica_joined("r0", 10_000)
        first = await d.arrive("b", "agent", 2, 100)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        again = await d.call_failed("b", first.replica_id, "unavailable")
        assert again.replica_id == "r0" and loop.time() - t0 >= 0.2

    asyncio.run(scenario())


def test_dispatcher_keeps_a_replacement_for_the_task_that_did_not_report_the_death() -> None:
    """Two calls die with their replica; the first task to notice reports the death and
    both are placed again: the second task's new place waits for it (no lost grant)."""

    async def scenario() -> None:
        d = Dispatcher(SchedulerCore())
        d.replica_joined("r0", 10_000)
        await d.arrive("a", "agent", 3, 100)
        await d.arrive("b", "agent", 3, 100)
        d.replica_joined("r1", 10_000)
        lost = d.lost("r0")
        grant_a = await d.after_replica_death("a", "r0", "actor died")
        assert grant_a.replica_id == "r1" and grant_a.cold
        assert lost.done() and lost.result() == "actor died"
        grant_b = await asyncio.wait_for(d.after_replica_death("b", "r0", "actor died"), 1)
        assert grant_b.replica_id == "r1"
        assert d.replica_died("r0", "again") is False  # reported once
        assert d.live_replicas() == ["r1"]

    asyncio.run(scenario())


def test_dispatcher_death_found_by_health_check_fails_a_pinned_task_at_its_next_call() -> None:
    """A death reported while the task waits on its tool (no call in flight): with
    migration disabled, its next call fails with the reason instead of starting over."""

    async def scenario() -> None:
        d = Dispatcher(SchedulerCore(SchedulerConfig(max_migrations=0)))
        d.replica_joined("r0", 10_000)
        d.replica_joined("r1", 10_000)
        await d.arrive("a", "agent", 3, 100)
        d.call_finished("a", "r0", **DONE)
        d.tool_started("a", "python")
        assert d.replica_died("r0", "no health answer in 5 s")
        with pytest.raises(TaskRefused, match="replica r0 died .* migration limit"):
            await d.arrive("a", "agent", 3, 100)  # (the core forgot it: the loop re-arrives)
        assert d.core.task("a") is None

    asyncio.run(scenario())


def test_dispatcher_drain_waits_for_running_calls_and_moves_tool_waits() -> None:
    async def scenario() -> None:
        d = Dispatcher(SchedulerCore())
        d.replica_joined("r0", 10_000)
        await d.arrive("a", "agent", 3, 100)  # running on r0
        d.replica_joined("r1", 10_000)
        drained = asyncio.ensure_future(d.drain("r0"))
        await asyncio.sleep(0)
        assert not drained.done()  # a's call still runs there
        assert (await d.arrive("n", "agent", 3, 100)).replica_id == "r1"
        d.call_finished("a", "r0", **DONE)
        d.tool_started("a", "python")  # a lets go of r0 at its tool wait
        await asyncio.wait_for(drained, 1)
        assert (await d.next_call("a")).replica_id == "r1"
        with pytest.raises(ExecutorError, match="not serving"):
            await d.drain("nope")

    asyncio.run(scenario())


# -- the executor's options ------------------------------------------------------------


def test_executor_options_are_one_validated_config() -> None:
    from executor import Executor, ExecutorConfig, ReplicaConfig

    ex = Executor("tiny", replicas=2, heal=False)
    assert ex.config == ExecutorConfig(model="tiny", replicas=2, heal=False)
    assert ex.config.replica_config() == ReplicaConfig(model="tiny")
    shaped = Executor(ExecutorConfig(model="tiny", replica=ReplicaConfig(max_total_tokens=4096)))
    assert shaped.config.replica_config().model == "tiny"  # the executor's model wins
    old_name = Executor(model="tiny", replica_config=ReplicaConfig(max_total_tokens=4096))
    assert old_name.config.replica_config().max_total_tokens == 4096
    with pytest.raises(ExecutorError, match="replicas: Input should be greater than or equal"):
        Executor(model="tiny", replicas=0)
    with pytest.raises(ExecutorError, match="bogus: Extra inputs are not permitted"):
        Executor(model="tiny", bogus=1)


# -- bad input is refused before anything starts ---------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "   "], "the goal is empty"),
        (["run", "2+2?", "--max-total-tokens", "10"], "max_total_tokens: Input should be"),
        (["run", "2+2?", "--replicas", "0"], "--replicas must be at least 1"),
        (["run", "2+2?", "--max-steps", "0"], "max_steps"),
        (["run", "2+2?", "--tools", "python,rm_rf"], "unknown tool"),
        (["run", "word " * 400, "--max-total-tokens", "256"], "first call needs"),
    ],
)
def test_cli_refuses_bad_input_before_ray_starts(
    argv: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import ray

    from executor.fleet.pool import ReplicaPool

    started: list[str] = []  # (Ray may be up already: the engine tests' pool shares the process)
    monkeypatch.setattr(ray, "init", lambda *a, **k: started.append("ray.init"))
    monkeypatch.setattr(ReplicaPool, "start", lambda self: started.append("pool.start"))
    assert cli_main([*argv, "--model", "tiny"]) == 2
    assert message in " ".join(capsys.readouterr().err.split())
    assert started == []


def test_a_goal_beyond_a_replica_is_refused_before_the_journal() -> None:
    from executor.loop.chat_format import ChatFormat
    from executor.loop.driver import check_task
    from executor.models import resolve

    chat = ChatFormat.load(resolve("tiny"))
    agent = make_agent(sampling={"max_new_tokens": 64})
    assert len(check_task(agent, "2+2?", chat, 4096)) > 0
    with pytest.raises(ExecutorError, match="first call needs .* a replica holds 512"):
        check_task(agent, "word " * 2000, chat, 512)
    with pytest.raises(ExecutorError, match="the goal is empty"):
        check_task(agent, "\n\t ", chat, None)
