"""The task machine alone (:mod:`executor.loop.machine`): no engine, no I/O.

A small pure driver (:class:`FakeDriver`) performs the machine's actions exactly as
the real one (:mod:`executor.loop.driver`) does, with the model's replies and the
tools' results taken from a script (drawn by hypothesis), and records the actions
and the payloads it "journaled". The properties:

1. resume equals live: from every prefix of a live run's journal, the replayed
   machine's next action is the live one's (but for an interrupted tool), and the
   rest of the script gives the rest of the live run;
2. never rerun: a resumed machine never runs a tool journaled as started; an
   interrupted one is reported as ``INTERRUPTED``;
3. the step limit, and the outcome (``succeeded`` exactly when an answer is taken);
4. the loop guard (``answer_on_repeat``);
5. the ``tool_choice`` reset.

Then unit tests: inputs in the wrong phase raise :class:`MachineError` and change
nothing, ``next_action`` is idempotent, failovers, replayed tool steps.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from executor.agent import ANSWER_HINT, FINAL_ANSWER, Agent
from executor.loop.machine import (
    INTERRUPTED,
    REPEATED,
    Action,
    Call,
    Finish,
    MachineError,
    Observe,
    Phase,
    RunTool,
    TaskMachine,
)
from executor.loop.steps import (
    CallPayload,
    FailoverPayload,
    ObservationPayload,
    Payload,
    ToolResultPayload,
    ToolStartPayload,
)
from executor.result import CallStep, FailoverStep, Step, ToolStep
from tools import tool


@tool
def pick(label: Literal["a", "b"]) -> str:
    """Pick a label.

    Args:
        label: which one
    """
    return label


@tool
def echo(text: str) -> str:
    """Say it back.

    Args:
        text: what to say
    """
    return text


TASK = "task-1"
PROMPT = [101, 102, 103]
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@cache
def make_agent(
    max_steps: int = 4, tool_choice: str = "auto", reset: bool = True, repeat: bool = True
) -> Agent:
    return Agent(
        name="t",
        tools=[pick, echo],
        model="tiny",
        max_steps=max_steps,
        tool_choice=tool_choice,
        reset_tool_choice=reset,
        answer_on_repeat=repeat,
    )


# -- replies, classified independently of executor.loop.reply ------------------------


@dataclass(frozen=True)
class Kind:
    kind: Literal["final", "tool", "invalid"]
    answer: str | None = None
    tool: str | None = None
    arguments: tuple[tuple[str, Any], ...] = ()

    @property
    def key(self) -> tuple[str | None, tuple[tuple[str, Any], ...]]:
        return self.tool, self.arguments


def _call(name: str, **arguments: Any) -> str:
    return json.dumps({"name": name, "arguments": arguments})


TOOL_CALLS: dict[str, Kind] = {
    _call("pick", label="a"): Kind("tool", tool="pick", arguments=(("label", "a"),)),
    _call("pick", label="b"): Kind("tool", tool="pick", arguments=(("label", "b"),)),
    _call("echo", text="hi"): Kind("tool", tool="echo", arguments=(("text", "hi"),)),
    # the same call as the one above, written differently: still a repeat
    '{"arguments": {"text": "hi"},  "name": "echo"}': Kind(
        "tool", tool="echo", arguments=(("text", "hi"),)
    ),
    _call("nope"): Kind("tool", tool="nope"),  # not a tool of the agent: the toolbox says so
}
FINALS: dict[str, Kind] = {
    _call(FINAL_ANSWER, answer="x"): Kind("final", answer="x"),
    _call(FINAL_ANSWER, answer="42"): Kind("final", answer="42"),
}
NO_REPLY = "not json"  # what the fake model says once the script is spent
INVALID: dict[str, Kind] = {
    NO_REPLY: Kind("invalid"),
    "[1, 2]": Kind("invalid"),
    '{"name": "pick"}': Kind("invalid"),
    '{"name": "pick", "arguments": "a"}': Kind("invalid"),
    _call(FINAL_ANSWER, answer=""): Kind("invalid"),
    _call(FINAL_ANSWER, text="x"): Kind("invalid"),
}
KINDS: dict[str, Kind] = {**TOOL_CALLS, **FINALS, **INVALID}
RESULTS: list[tuple[bool, str]] = [(True, "a"), (True, "b"), (False, "error: boom")]

# tool calls weigh more, so that repeats happen and runs reach their step limit
replies = st.sampled_from([*TOOL_CALLS] * 3 + [*INVALID] + [*FINALS])
no_answer_replies = st.sampled_from([*TOOL_CALLS] * 3 + [*INVALID])
agents = st.builds(
    make_agent,
    max_steps=st.integers(1, 6),
    tool_choice=st.sampled_from(["auto", "required", "pick", "echo"]),
    reset=st.booleans(),
    repeat=st.booleans(),
)


@dataclass(frozen=True)
class Script:
    replies: tuple[str, ...]
    results: tuple[tuple[bool, str], ...] = ()
    failovers: tuple[bool, ...] = ()  # per call: its replica dies once under it


def scripts(reply: st.SearchStrategy[str] = replies) -> st.SearchStrategy[Script]:
    return st.builds(
        Script,
        replies=st.lists(reply, max_size=8).map(tuple),
        results=st.lists(st.sampled_from(RESULTS), max_size=8).map(tuple),
        failovers=st.lists(st.booleans(), max_size=8).map(tuple),
    )


# -- the fake driver ---------------------------------------------------------------


def reply_ids(text: str) -> list[int]:
    """The output ids of a reply: any deterministic rendering."""
    return [sum(map(ord, text)) % 1000, len(text) % 1000, 9]


def render_observation(after_ids: list[int], text: str) -> tuple[str, list[int]]:
    """``ChatFormat.observation``'s stand-in: the turn's text and ids."""
    return f"<tool>{text}</tool>", [len(text) % 1000, 7, len(after_ids)]


def snapshot(machine: TaskMachine) -> dict[str, Any]:
    return {
        f.name: copy.deepcopy(getattr(machine, f.name))
        for f in dataclasses.fields(machine)
        if f.name != "agent"
    }


@dataclass
class Run:
    machine: TaskMachine
    actions: list[Action] = field(default_factory=list)
    taken_at: list[int] = field(default_factory=list)  # journal length when each was taken
    journal: list[Payload] = field(default_factory=list)
    after: list[Action] = field(default_factory=list)  # next_action() after each payload

    @property
    def finish(self) -> Finish:
        last = self.actions[-1]
        assert isinstance(last, Finish)
        return last

    @property
    def calls(self) -> list[Call]:
        return [a for a in self.actions if isinstance(a, Call)]

    def call_payloads(self) -> list[tuple[int, CallPayload]]:
        return [(i, p) for i, p in enumerate(self.journal) if isinstance(p, CallPayload)]

    def in_progress(self, p: int) -> int:
        """The index of the action being performed when the journal had ``p`` payloads."""
        return max(k for k, at in enumerate(self.taken_at) if at <= p)


class FakeDriver:
    """Performs the machine's actions as :class:`executor.loop.driver.TaskDriver` does,
    replies and results taken from ``script``. With ``prefix`` (the journal a resumed
    machine was replayed from), the script goes on where that journal stopped."""

    def __init__(
        self,
        machine: TaskMachine,
        script: Script,
        prefix: list[Payload] | None = None,
        *,
        check_idempotent: bool = False,
    ) -> None:
        prefix = prefix or []
        self.machine = machine
        self.script = script
        self.check_idempotent = check_idempotent
        self.replies = sum(isinstance(p, CallPayload) for p in prefix)
        interrupted = bool(prefix) and isinstance(prefix[-1], ToolStartPayload)
        # the crashed run had taken the interrupted tool's result from the script
        self.results = sum(isinstance(p, ToolResultPayload) for p in prefix) + interrupted
        last_call = max((i for i, p in enumerate(prefix) if isinstance(p, CallPayload)), default=-1)
        self.failed_over = any(isinstance(p, FailoverPayload) for p in prefix[last_call + 1 :])
        self.run = Run(machine)
        self.run.after.append(machine.next_action())

    def drive(self) -> Run:
        for _ in range(100):
            action = self.machine.next_action()
            self.run.actions.append(action)
            self.run.taken_at.append(len(self.run.journal))
            match action:
                case Finish():
                    return self.run
                case Call():
                    self._call(action)
                case RunTool():
                    self._tool(action)
                case Observe():
                    text, ids = render_observation(action.after_ids, action.text)
                    self._record(ObservationPayload(ids=ids, text=text))
        raise AssertionError("the run did not finish in 100 actions")

    def _record(self, payload: Payload) -> None:
        self.run.journal.append(payload)
        self.machine.apply(payload)
        action = self.machine.next_action()
        if self.check_idempotent:
            before = snapshot(self.machine)
            assert self.machine.next_action() == action
            assert snapshot(self.machine) == before
        self.run.after.append(action)

    def _call(self, action: Call) -> None:
        i = self.replies
        assert action.step == i + 1
        if i < len(self.script.failovers) and self.script.failovers[i] and not self.failed_over:
            failover = FailoverStep(step=action.step, replica_id="replica-0", reason="died")
            self._record(FailoverPayload(info=failover))
        self.failed_over = False
        text = self.script.replies[i] if i < len(self.script.replies) else NO_REPLY
        self.replies += 1
        ids = reply_ids(text)
        info = CallStep(
            step=action.step,
            replica_id="replica-1",
            prompt_tokens=len(action.input_ids),
            cached_tokens=0,
            completion_tokens=len(ids),
            latency_s=0.25,
            queue_wait_s=0.0,
            finish_reason="stop",
            reply=text,
        )
        self._record(CallPayload(ids=ids, info=info))

    def _tool(self, action: RunTool) -> None:
        self._record(
            ToolStartPayload(call_id=action.call_id, tool=action.tool, arguments=action.arguments)
        )
        j = self.results
        ok, text = self.script.results[j] if j < len(self.script.results) else (True, "done")
        self.results += 1
        result = {"text": text, "ok": ok, "error": None if ok else text, "data": {}}
        self._record(self.machine.tool_result(action, result, 0.5))


def live(agent: Agent, script: Script, *, check_idempotent: bool = False) -> Run:
    machine = TaskMachine(agent, TASK, list(PROMPT))
    return FakeDriver(machine, script, check_idempotent=check_idempotent).drive()


def unreplayed(steps: list[Step]) -> list[Step]:
    return [
        s.model_copy(update={"replayed": False}) if isinstance(s, ToolStep) else s for s in steps
    ]


def kind(text: str) -> Kind:
    return KINDS[text]


# -- 1, 2, 3 (resumed): resume equals live, never rerun ------------------------------


@SETTINGS
@given(agent=agents, script=scripts())
def test_resume_from_any_prefix_equals_live_and_never_reruns_a_tool(
    agent: Agent, script: Script
) -> None:
    run = live(agent, script)
    for p in range(len(run.journal) + 1):
        prefix = run.journal[:p]
        machine = TaskMachine.replay(agent, TASK, list(PROMPT), prefix)
        journaled = [s for s in machine.steps if isinstance(s, ToolStep)]
        assert all(s.replayed for s in journaled)
        assert len(journaled) == sum(isinstance(q, ToolResultPayload) for q in prefix)
        machine.resumed()

        started = {q.call_id for q in prefix if isinstance(q, ToolStartPayload)}
        finished = {q.call_id for q in prefix if isinstance(q, ToolResultPayload)}
        interrupted = started - finished
        if interrupted:
            # in a live journal only the last payload can be a start without its result
            last = prefix[-1]
            assert isinstance(last, ToolStartPayload) and interrupted == {last.call_id}
            action = machine.next_action()
            assert isinstance(action, Observe) and action.text == INTERRUPTED
            step = machine.steps[-1]
            assert isinstance(step, ToolStep)
            assert step.interrupted and not step.ok and not step.replayed
            assert (step.call_id, step.tool, step.arguments) == (
                last.call_id,
                last.tool,
                last.arguments,
            )
        else:
            assert machine.next_action() == run.after[p]

        rest = FakeDriver(machine, script, prefix).drive()
        assert not [a for a in rest.actions if isinstance(a, RunTool) and a.call_id in started]
        prefix_calls = sum(isinstance(q, CallPayload) for q in prefix)
        assert prefix_calls + len(rest.calls) <= agent.max_steps
        assert machine.calls <= agent.max_steps
        if interrupted:
            continue

        assert rest.actions == run.actions[run.in_progress(p) :]
        assert rest.journal == run.journal[p:]
        assert unreplayed(machine.steps) == run.machine.steps
        flags = [s.replayed for s in machine.steps if isinstance(s, ToolStep)]
        assert flags == [True] * len(journaled) + [False] * (len(flags) - len(journaled))


# -- 3: the step limit and the outcome -----------------------------------------------


@SETTINGS
@given(agent=agents, script=scripts())
def test_step_limit_and_outcome(agent: Agent, script: Script) -> None:
    run = live(agent, script, check_idempotent=True)
    calls = run.call_payloads()
    assert len(run.calls) == len(calls) <= agent.max_steps
    assert [c.step for c in run.calls] == list(range(1, len(calls) + 1))
    # what the model said, in order; past the script it only says NO_REPLY
    said = [*script.replies, *[NO_REPLY] * agent.max_steps][: agent.max_steps]
    assert [p.info.reply for _, p in calls] == said[: len(calls)]
    first_answer = next((i for i, r in enumerate(said) if kind(r).kind == "final"), None)
    if first_answer is None:
        assert len(calls) == agent.max_steps
        assert run.finish == Finish(
            "step_limit", error=f"no final answer in {agent.max_steps} calls"
        )
    else:
        assert len(calls) == first_answer + 1
        assert run.finish == Finish("succeeded", output=kind(said[first_answer]).answer)
    assert run.machine.phase is Phase.DONE
    assert run.machine.next_action() == run.finish
    # the transcript: the prompt, then every reply and observation, in order
    ids = list(PROMPT)
    for q in run.journal:
        if isinstance(q, CallPayload | ObservationPayload):
            ids += q.ids
    assert run.machine.ids == ids
    for call, (i, _) in zip(run.calls, calls, strict=True):
        assert call.input_ids == list(PROMPT) + [
            x
            for q in run.journal[:i]
            if isinstance(q, CallPayload | ObservationPayload)
            for x in q.ids
        ]


@settings(max_examples=100, deadline=None)
@given(agent=agents, script=scripts(no_answer_replies))
def test_a_script_that_never_answers_ends_at_the_step_limit(agent: Agent, script: Script) -> None:
    run = live(agent, script)
    assert len(run.calls) == agent.max_steps
    assert run.finish == Finish("step_limit", error=f"no final answer in {agent.max_steps} calls")
    # the last call's reply is not acted on: no call is left to read an observation
    assert run.actions[-2:-1] == [run.calls[-1]]


# -- 4: the loop guard ---------------------------------------------------------------


@SETTINGS
@given(agent=agents, script=scripts())
def test_loop_guard(agent: Agent, script: Script) -> None:
    run = live(agent, script)
    calls = run.call_payloads()
    seen: set[tuple[str | None, tuple[tuple[str, Any], ...]]] = set()
    for n, (i, payload) in enumerate(calls):
        reply = kind(payload.info.reply)
        if reply.kind != "tool":
            continue
        last = n + 1 == agent.max_steps
        step = payload.info.step
        runs = [a for a in run.actions if isinstance(a, RunTool) and a.step == step]
        following = run.after[i + 1]
        repeat = reply.key in seen
        seen.add(reply.key)
        if last:
            assert not runs and isinstance(following, Finish)
            continue
        if repeat and agent.answer_on_repeat:
            assert not runs
            assert isinstance(following, Observe) and following.text.endswith(REPEATED)
            assert run.calls[n + 1].tool_choice == FINAL_ANSWER
        else:
            assert runs == [
                RunTool(step, f"{TASK}-{step}", reply.tool or "", dict(reply.arguments))
            ]
            assert following == runs[0]

    # a result equal to the previous tool's result: the next call must answer
    results = [(i, q) for i, q in enumerate(run.journal) if isinstance(q, ToolResultPayload)]
    for (_, before), (i, result) in zip(results, results[1:], strict=False):
        if result.result["text"] != before.result["text"] or not agent.answer_on_repeat:
            continue
        next_call = next(
            a
            for a, at in zip(run.actions, run.taken_at, strict=True)
            if at > i and isinstance(a, Call)
        )
        assert next_call.tool_choice == FINAL_ANSWER


def test_loop_guard_examples() -> None:
    a, b = _call("pick", label="a"), _call("pick", label="b")
    # a repeat is not run: its earlier result is shown, and the answer is asked for
    run = live(make_agent(5), Script(replies=(a, a), results=((True, "A"),)))
    tools = [x for x in run.actions if isinstance(x, RunTool)]
    assert [t.step for t in tools] == [1]
    repeated = run.after[5]  # call, start, result, observation, call
    assert repeated == Observe(f"A\n{REPEATED}", reply_ids(a))
    assert [c.tool_choice for c in run.calls][:3] == ["auto", "auto", FINAL_ANSWER]
    # the same result twice: the answer is asked for
    run = live(make_agent(5), Script(replies=(a, b), results=((True, "A"), (True, "A"))))
    assert [c.tool_choice for c in run.calls][:3] == ["auto", "auto", FINAL_ANSWER]
    # without the guard, repeats are run and nothing is forced
    run = live(make_agent(5, repeat=False), Script(replies=(a, a), results=((True, "A"),) * 2))
    assert [x.step for x in run.actions if isinstance(x, RunTool)] == [1, 2]
    assert [c.tool_choice for c in run.calls] == ["auto"] * 5


# -- 5: tool_choice and its reset ------------------------------------------------------


def expected_choices(agent: Agent, run: Run) -> list[str]:
    """The tool_choice of each call, by the documented rules (a reference model)."""
    choice, choices = agent.tool_choice, []
    seen: set[tuple[str | None, tuple[tuple[str, Any], ...]]] = set()
    last_result: str | None = None
    results = iter(q for q in run.journal if isinstance(q, ToolResultPayload))
    for n, (_, payload) in enumerate(run.call_payloads()):
        choices.append(choice)
        reply = kind(payload.info.reply)
        if reply.kind != "tool" or n + 1 == agent.max_steps:
            continue
        if agent.reset_tool_choice:
            choice = "auto"
        if reply.key in seen and agent.answer_on_repeat:
            choice = FINAL_ANSWER
            continue
        seen.add(reply.key)
        text = next(results).result["text"]
        if agent.answer_on_repeat and text == last_result:
            choice = FINAL_ANSWER
        last_result = text
    return choices


@SETTINGS
@given(
    agent=st.builds(
        make_agent,
        max_steps=st.integers(1, 6),
        tool_choice=st.sampled_from(["required", "pick", "echo"]),
        reset=st.booleans(),
        repeat=st.booleans(),
    ),
    script=scripts(),
)
def test_tool_choice_reset(agent: Agent, script: Script) -> None:
    run = live(agent, script)
    choices = [c.tool_choice for c in run.calls]
    assert choices[0] == agent.tool_choice
    assert choices == expected_choices(agent, run)
    if agent.reset_tool_choice:
        tool_replied = False
        for n, (_, payload) in enumerate(run.call_payloads()):
            if not tool_replied:
                assert choices[n] == agent.tool_choice
            else:  # after a tool call reply: "auto", or the loop guard's final_answer
                assert choices[n] in {"auto", FINAL_ANSWER}
            is_tool = kind(payload.info.reply).kind == "tool"
            if is_tool and n + 1 < len(choices) and not agent.answer_on_repeat:
                assert choices[n + 1] == "auto"
            tool_replied = tool_replied or is_tool
    if not agent.reset_tool_choice:
        # it stays, until the loop guard asks for the answer (and then that stays)
        forced = [c == FINAL_ANSWER for c in choices]
        assert all(c in (agent.tool_choice, FINAL_ANSWER) for c in choices)
        assert forced == sorted(forced)
    if not agent.answer_on_repeat:
        assert FINAL_ANSWER not in choices


@SETTINGS
@given(agent=agents, script=scripts())
def test_tool_choice_follows_the_rules_for_any_agent(agent: Agent, script: Script) -> None:
    run = live(agent, script)
    assert [c.tool_choice for c in run.calls] == expected_choices(agent, run)


def test_tool_choice_reset_examples() -> None:
    a, b, bad = _call("pick", label="a"), _call("pick", label="b"), "not json"
    script = Script(replies=(bad, a, bad, b), results=((True, "A"), (True, "B")))
    run = live(make_agent(5, "required"), script)
    assert [c.tool_choice for c in run.calls] == ["required", "required", "auto", "auto", "auto"]
    run = live(make_agent(5, "pick", reset=False), script)
    assert [c.tool_choice for c in run.calls] == ["pick"] * 5


# -- inputs in the wrong phase ---------------------------------------------------------


def call_payload(reply: str, step: int = 1) -> CallPayload:
    ids = reply_ids(reply)
    info = CallStep(
        step=step,
        replica_id="r",
        prompt_tokens=1,
        cached_tokens=0,
        completion_tokens=len(ids),
        latency_s=0.0,
        queue_wait_s=0.0,
        finish_reason="stop",
        reply=reply,
    )
    return CallPayload(ids=ids, info=info)


def start_payload(call_id: str, tool: str = "pick", label: str = "a") -> ToolStartPayload:
    return ToolStartPayload(call_id=call_id, tool=tool, arguments={"label": label})


def result_payload(machine: TaskMachine, call_id: str, text: str = "A") -> ToolResultPayload:
    action = RunTool(1, call_id, "pick", {"label": "a"})
    return machine.tool_result(action, {"text": text, "ok": True, "error": None, "data": {}}, 0.1)


def observation_payload(text: str = "obs") -> ObservationPayload:
    return ObservationPayload(ids=[len(text), 7], text=text)


def failover_payload(step: int = 1) -> FailoverPayload:
    return FailoverPayload(info=FailoverStep(step=step, replica_id="r0", reason="died"))


def assert_refused(machine: TaskMachine, payload: Payload, match: str) -> None:
    before, action = snapshot(machine), machine.next_action()
    with pytest.raises(MachineError, match=match):
        machine.apply(payload)
    assert snapshot(machine) == before
    assert machine.next_action() == action


def in_tool_phase(agent: Agent | None = None) -> TaskMachine:
    machine = TaskMachine(agent or make_agent(), TASK, list(PROMPT))
    machine.apply(call_payload(_call("pick", label="a")))
    assert machine.phase is Phase.TOOL
    return machine


def test_an_observation_while_a_call_is_expected_is_refused() -> None:
    machine = TaskMachine(make_agent(), TASK, list(PROMPT))
    assert_refused(machine, observation_payload(), "observation step is invalid in phase call")


def test_tool_steps_while_a_call_is_expected_are_refused() -> None:
    machine = TaskMachine(make_agent(), TASK, list(PROMPT))
    assert_refused(machine, start_payload(f"{TASK}-0"), "phase call")
    assert_refused(machine, result_payload(machine, f"{TASK}-0"), "phase call")


def test_a_tool_result_without_its_start_is_refused() -> None:
    machine = in_tool_phase()
    assert_refused(machine, result_payload(machine, f"{TASK}-1"), "without its start")
    machine.apply(start_payload(f"{TASK}-1"))
    assert_refused(machine, result_payload(machine, f"{TASK}-9"), "without its start")
    assert_refused(machine, start_payload(f"{TASK}-1"), "unexpected start")  # twice
    machine.apply(result_payload(machine, f"{TASK}-1"))
    assert machine.phase is Phase.OBSERVE


def test_a_start_of_another_call_is_refused() -> None:
    machine = in_tool_phase()
    assert_refused(machine, start_payload(f"{TASK}-2"), "unexpected start")


def test_a_call_or_observation_while_a_tool_is_pending_is_refused() -> None:
    machine = in_tool_phase()
    assert_refused(machine, call_payload(_call("pick", label="b"), 2), "call step is invalid")
    assert_refused(machine, observation_payload(), "observation step is invalid in phase tool")


def test_a_call_while_an_observation_is_expected_is_refused() -> None:
    machine = TaskMachine(make_agent(), TASK, list(PROMPT))
    machine.apply(call_payload("not json"))
    assert machine.phase is Phase.OBSERVE
    assert_refused(machine, call_payload("not json", 2), "call step is invalid in phase observe")


def test_a_call_beyond_max_steps_is_refused() -> None:
    agent = make_agent(2)
    machine = TaskMachine(agent, TASK, list(PROMPT), calls=agent.max_steps)
    assert machine.next_action() == Finish("step_limit", error="no final answer in 2 calls")
    # (a state no journal reaches: the last call always finishes the task; and
    # next_action() would finish it, so the call goes in first)
    machine = TaskMachine(agent, TASK, list(PROMPT), calls=agent.max_steps)
    before = snapshot(machine)
    with pytest.raises(MachineError, match="beyond max_steps 2"):
        machine.apply(call_payload("not json", 3))
    assert snapshot(machine) == before
    # a finished run takes no more calls either
    run = live(agent, Script(replies=()))
    assert_refused(run.machine, call_payload("not json", 3), "phase done")
    assert_refused(run.machine, observation_payload(), "phase done")


steps_inputs = st.sampled_from(
    [
        "call-tool",
        "call-repeat",
        "call-bad",
        "call-answer",
        "start",
        "start-other",
        "result",
        "result-other",
        "observation",
        "failover",
    ]
)


def input_payload(machine: TaskMachine, what: str) -> Payload:
    step = machine.calls + 1
    match what:
        case "call-tool":
            return call_payload(_call("pick", label="b"), step)
        case "call-repeat":
            return call_payload(_call("pick", label="a"), step)
        case "call-bad":
            return call_payload("not json", step)
        case "call-answer":
            return call_payload(_call(FINAL_ANSWER, answer="x"), step)
        case "start":
            return start_payload(machine.call_id)
        case "start-other":
            return start_payload(f"{TASK}-{step + 3}")
        case "result":
            return result_payload(machine, machine.call_id)
        case "result-other":
            return result_payload(machine, f"{TASK}-{step + 3}")
        case "observation":
            return observation_payload()
        case _:
            return failover_payload(step)


@SETTINGS
@given(agent=agents, inputs=st.lists(steps_inputs, max_size=30))
def test_any_input_applies_or_is_refused_and_changes_nothing(
    agent: Agent, inputs: list[str]
) -> None:
    machine = TaskMachine(agent, TASK, list(PROMPT))
    for what in inputs:
        payload = input_payload(machine, what)
        before, action = snapshot(machine), machine.next_action()
        try:
            machine.apply(payload)
        except MachineError:
            assert snapshot(machine) == before
            assert machine.next_action() == action
        else:
            assert machine.calls <= agent.max_steps
        assert machine.next_action() == machine.next_action()


# -- next_action, failovers, resumed -----------------------------------------------------


def test_next_action_is_idempotent_in_every_phase() -> None:
    machine = TaskMachine(make_agent(3), TASK, list(PROMPT))
    for payload in (
        None,
        call_payload(_call("pick", label="a")),  # -> TOOL
        start_payload(f"{TASK}-1"),  # still TOOL, started
        "result",  # -> OBSERVE
        observation_payload(),  # -> CALL
        call_payload(_call(FINAL_ANSWER, answer="x"), 2),  # -> DONE
    ):
        if payload == "result":
            machine.apply(result_payload(machine, f"{TASK}-1"))
        elif isinstance(payload, CallPayload | ToolStartPayload | ObservationPayload):
            machine.apply(payload)
        before = snapshot(machine)
        first = machine.next_action()
        assert [machine.next_action() for _ in range(3)] == [first] * 3
        assert snapshot(machine) == before
    assert machine.next_action() == Finish("succeeded", output="x")


def test_a_failover_appends_its_step_and_changes_no_phase() -> None:
    machine = TaskMachine(make_agent(3), TASK, list(PROMPT))
    ids = machine.ids
    machines = [machine]
    machine = in_tool_phase(make_agent(3))
    machines.append(machine)
    started = in_tool_phase(make_agent(3))
    started.apply(start_payload(f"{TASK}-1"))
    machines.append(started)
    observing = TaskMachine(make_agent(3), TASK, list(PROMPT))
    observing.apply(call_payload("not json"))
    machines.append(observing)
    for m in machines:
        before, action = snapshot(m), m.next_action()
        failover = failover_payload(m.calls + 1)
        m.apply(failover)
        after = snapshot(m)
        assert after.pop("steps") == [*before.pop("steps"), failover.info]
        assert after == before
        assert m.next_action() == action
    assert machines[0].ids == ids


def test_the_model_sees_the_answer_hint_after_ok_results_the_user_does_not() -> None:
    machine = in_tool_phase()
    action = machine.next_action()
    assert isinstance(action, RunTool)
    ok = machine.tool_result(action, {"text": "A", "ok": True, "error": None, "data": {}}, 0.1)
    failed = machine.tool_result(action, {"text": "error: x", "ok": False}, 0.1)
    assert ok.info.output == "A" and ok.info.ok  # the step the user reads: no hint
    assert failed.info.output == "error: x" and not failed.info.ok
    assert ok.call_id == failed.call_id == action.call_id == f"{TASK}-1"
    machine.apply(start_payload(action.call_id))
    machine.apply(ok)
    assert machine.next_action() == Observe(
        f"A\n{ANSWER_HINT}", reply_ids(_call("pick", label="a"))
    )


def test_a_resumed_machine_marks_journaled_tool_steps_replayed() -> None:
    a, b = _call("pick", label="a"), _call("pick", label="b")
    run = live(make_agent(4), Script(replies=(a, b), results=((True, "A"), (True, "B"))))
    for p in range(len(run.journal) + 1):
        machine = TaskMachine.replay(make_agent(4), TASK, list(PROMPT), run.journal[:p])
        machine.resumed()
        tools = [s for s in machine.steps if isinstance(s, ToolStep)]
        assert all(s.replayed != s.interrupted for s in tools)
        assert [s.replayed for s in tools].count(True) == sum(
            isinstance(q, ToolResultPayload) for q in run.journal[:p]
        )
    # the live machine's own steps are not replayed
    assert not any(s.replayed for s in run.machine.steps if isinstance(s, ToolStep))


def test_an_interrupted_tool_is_reported_and_not_run_again() -> None:
    a = _call("pick", label="a")
    run = live(make_agent(3), Script(replies=(a,), results=((True, "A"),)))
    cut = next(i for i, q in enumerate(run.journal) if isinstance(q, ToolStartPayload)) + 1
    machine = TaskMachine.replay(make_agent(3), TASK, list(PROMPT), run.journal[:cut])
    assert machine.next_action() == run.after[cut]  # still RunTool, until resumed
    machine.resumed()
    assert machine.next_action() == Observe(INTERRUPTED, reply_ids(a))
    step = machine.steps[-1]
    assert isinstance(step, ToolStep) and step.interrupted and step.call_id == f"{TASK}-1"
    rest = FakeDriver(machine, Script(replies=(a,)), run.journal[:cut]).drive()
    assert not [x for x in rest.actions if isinstance(x, RunTool) and x.step == 1]


def test_resumed_without_an_interrupted_tool_changes_nothing() -> None:
    a = _call("pick", label="a")
    run = live(make_agent(3), Script(replies=(a,), results=((True, "A"),)))
    for p, q in enumerate(run.journal):
        if isinstance(q, ToolStartPayload):
            continue  # the journal would end with an interrupted tool
        machine = TaskMachine.replay(make_agent(3), TASK, list(PROMPT), run.journal[: p + 1])
        before = snapshot(machine)
        machine.resumed()
        assert snapshot(machine) == before


@pytest.mark.parametrize(("hint", "shown"), [("", "A"), ("Answer now.", "A\nAnswer now.")])
def test_the_answer_hint_is_an_agent_option(hint: str, shown: str) -> None:
    machine = in_tool_phase(make_agent(4).model_copy(update={"answer_hint": hint}))
    action = machine.next_action()
    assert isinstance(action, RunTool)
    machine.apply(start_payload(action.call_id))
    machine.apply(machine.tool_result(action, {"text": "A", "ok": True}, 0.1))
    assert machine.next_action() == Observe(shown, reply_ids(_call("pick", label="a")))
    assert machine.steps[-1].output == "A"
