"""The task machine: every decision of one agent task, and no I/O.

Rules of this file (like the scheduler core's ``states.py``):

* Everything that decides what a task does next lives here: the step limit, the
  reply grammar's ``tool_choice`` (and its reset), the loop guard, the
  never-rerun rule for a tool interrupted by a crash, what the model is shown
  after each reply. The driver (:mod:`.driver`) only performs the actions.
* **Its inputs are the journal's steps.** The driver turns each outcome of I/O
  (a reply, a tool's start, its result, an observation's ids, a failover) into a
  typed journal payload, commits it, and only then :meth:`TaskMachine.apply`\\ s
  it. A resumed task applies the same payloads, read back from the journal, then
  :meth:`TaskMachine.resumed`. Live runs and resumes therefore go through the
  same transitions, and a resume's next action is the live run's next action.
* An input the current phase does not accept raises :class:`MachineError` and
  changes nothing.

Theory of operation. A task alternates ``CALL`` (its next action is a model
call on the whole transcript) and the handling of the reply: a final answer
finishes it; a tool call becomes ``RunTool`` (phase ``TOOL``; the tool's start,
then its result, are inputs); an invalid reply, a repeat the loop guard catches,
or a tool's result becomes ``Observe`` (phase ``OBSERVE``: the driver renders the
text as a tool turn of the chat template and gives back its ids). When
``max_steps`` calls are spent without an answer, it finishes as ``step_limit``.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import Any

from executor.agent import FINAL_ANSWER, Agent
from executor.errors import ExecutorError
from executor.loop.reply import FinalAnswer, InvalidReply, ToolCall, parse_reply, reply_format
from executor.loop.steps import (
    CallPayload,
    FailoverPayload,
    ObservationPayload,
    Payload,
    ToolResultPayload,
    ToolStartPayload,
)
from executor.result import Step, TaskStatus, ToolStep

INTERRUPTED = (
    "error: this tool call was interrupted when the executor stopped; its effects are "
    "unknown and it was not run again. Check its effects before repeating it."
)
REPEATED = "(You already made this call; its result is above. Call final_answer now.)"


class MachineError(ExecutorError):
    """An input the task machine's current phase does not accept (a driver bug, or a
    journal whose steps are out of order)."""


# -- actions: what the driver must do next ---------------------------------------------


@dataclass(frozen=True, slots=True)
class Call:
    """Call the model on the transcript ``input_ids`` under the grammar of ``tool_choice``."""

    step: int
    input_ids: list[int]
    tool_choice: str


@dataclass(frozen=True, slots=True)
class RunTool:
    """Run the tool (journal its start first, then its result)."""

    step: int
    call_id: str
    tool: str
    arguments: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Observe:
    """Append ``text`` to the transcript as the tool turn after the last reply."""

    text: str
    after_ids: list[int]  # the reply it follows, as generated (the chat format needs it)


@dataclass(frozen=True, slots=True)
class Finish:
    status: TaskStatus
    output: str | None = None
    error: str | None = None


Action = Call | RunTool | Observe | Finish


class Phase(enum.Enum):
    CALL = "call"
    TOOL = "tool"
    OBSERVE = "observe"
    DONE = "done"


def call_key(call: ToolCall) -> str:
    return json.dumps([call.tool, call.arguments], sort_keys=True)


@dataclass
class TaskMachine:
    """One task's state; see the module docstring."""

    agent: Agent
    task_id: str
    ids: list[int]  # the transcript: the next call's prompt
    calls: int = 0
    tool_choice: str = ""
    steps: list[Step] = field(default_factory=list)  # the result's steps, in order
    phase: Phase = Phase.CALL
    _action: Action | None = None  # the pending action while not in CALL
    _tool_started: bool = False
    _last_output: list[int] = field(default_factory=list)
    _seen: dict[str, str] = field(default_factory=dict)  # loop guard: call -> its result
    _last_result: str | None = None

    def __post_init__(self) -> None:
        self.tool_choice = self.tool_choice or self.agent.tool_choice

    @classmethod
    def replay(
        cls, agent: Agent, task_id: str, prompt_ids: list[int], payloads: list[Payload]
    ) -> TaskMachine:
        """The machine of a journaled task: every step applied again, its tool steps
        marked ``replayed``. The caller then says :meth:`resumed`."""
        machine = cls(agent, task_id, list(prompt_ids))
        for payload in payloads:
            machine.apply(payload)
        machine.steps = [
            s.model_copy(update={"replayed": True}) if isinstance(s, ToolStep) else s
            for s in machine.steps
        ]
        return machine

    def expected_peak_tokens(self, observation_tokens: int) -> int:
        """The history the task may reach if every remaining call uses its whole
        ``max_new_tokens`` and each observation adds ``observation_tokens``."""
        per_step = self.agent.sampling.max_new_tokens + observation_tokens
        return len(self.ids) + (self.agent.max_steps - self.calls) * per_step

    # -- the next action ----------------------------------------------------------

    def next_action(self) -> Action:
        """What the driver must do now (the same answer until the next input)."""
        if self.phase is not Phase.CALL:
            assert self._action is not None
            return self._action
        if self.calls >= self.agent.max_steps:  # (a resume with no call left)
            return Finish("step_limit", error=self._limit_message())
        return Call(self.calls + 1, list(self.ids), self.tool_choice)

    @property
    def call_id(self) -> str:
        """The id of the tool call of the current step (``{task}-{call}``)."""
        return f"{self.task_id}-{self.calls}"

    # -- inputs -------------------------------------------------------------------

    def apply(self, payload: Payload) -> None:
        """One journaled step (just committed by the driver, or read back on resume)."""
        match payload:
            case CallPayload():
                self._replied(payload)
            case ToolStartPayload():
                self._expect(Phase.TOOL, payload)
                if self._tool_started or payload.call_id != self.call_id:
                    raise MachineError(f"{self.task_id}: unexpected start of {payload.call_id}")
                self._tool_started = True
            case ToolResultPayload():
                self._tool_finished(payload)
            case ObservationPayload():
                self._expect(Phase.OBSERVE, payload)
                self.ids = self.ids + payload.ids
                self.phase, self._action = Phase.CALL, None
            case FailoverPayload():
                self.steps.append(payload.info)

    def resumed(self) -> None:
        """The journal ends here: what was in flight when the driver died is lost. A
        call is simply made again; a tool that started has unknown effects and is
        never run again (the model is told)."""
        if self.phase is Phase.TOOL and self._tool_started:
            action = self._action
            assert isinstance(action, RunTool)
            self.steps.append(
                ToolStep(
                    step=action.step,
                    call_id=action.call_id,
                    tool=action.tool,
                    arguments=action.arguments,
                    ok=False,
                    output=INTERRUPTED,
                    duration_s=0.0,
                    interrupted=True,
                )
            )
            self._observe(INTERRUPTED)

    def tool_result(
        self, action: RunTool, result: dict[str, Any], duration_s: float
    ) -> ToolResultPayload:
        """The journal payload of a tool's result (``result``: ``ToolResult.to_dict()``)
        and its step, as the user reads it (the model is shown the agent's answer hint
        after it: ``_tool_finished``)."""
        ok, text = bool(result["ok"]), str(result["text"])
        step = ToolStep(
            step=action.step,
            call_id=action.call_id,
            tool=action.tool,
            arguments=action.arguments,
            ok=ok,
            output=text,
            duration_s=duration_s,
        )
        return ToolResultPayload(call_id=action.call_id, result=result, info=step)

    # -- transitions ----------------------------------------------------------------

    def _expect(self, phase: Phase, payload: Payload) -> None:
        if self.phase is not phase:
            raise MachineError(
                f"{self.task_id}: a {payload.kind} step is invalid in phase {self.phase.value}"
            )

    def _replied(self, payload: CallPayload) -> None:
        self._expect(Phase.CALL, payload)
        if self.calls >= self.agent.max_steps:
            raise MachineError(f"{self.task_id}: a call beyond max_steps {self.agent.max_steps}")
        self.calls += 1
        self.ids = self.ids + payload.ids
        self._last_output = list(payload.ids)
        self.steps.append(payload.info)
        reply = parse_reply(payload.info.reply, self.agent)
        if isinstance(reply, FinalAnswer):
            self._finish(Finish("succeeded", output=reply.text))
        elif self.calls >= self.agent.max_steps:
            # the last call did not answer: no call is left to read an observation
            self._finish(Finish("step_limit", error=self._limit_message()))
        elif isinstance(reply, InvalidReply):
            self._observe(f"error: {reply.reason}. {reply_format()}")
        else:
            self._tool_call(reply)

    def _tool_call(self, call: ToolCall) -> None:
        if self.agent.reset_tool_choice:
            self.tool_choice = "auto"
        earlier = self._seen.get(call_key(call))
        if earlier is not None and self.agent.answer_on_repeat:  # the loop guard
            self.tool_choice = FINAL_ANSWER
            self._observe(f"{earlier}\n{REPEATED}")
            return
        self.phase = Phase.TOOL
        self._tool_started = False
        self._action = RunTool(self.calls, self.call_id, call.tool, call.arguments)

    def _tool_finished(self, payload: ToolResultPayload) -> None:
        self._expect(Phase.TOOL, payload)
        action = self._action
        assert isinstance(action, RunTool)
        if not self._tool_started or payload.call_id != action.call_id:
            raise MachineError(f"{self.task_id}: a result of {payload.call_id} without its start")
        output = str(payload.result["text"])
        if self.agent.answer_on_repeat and output == self._last_result:
            self.tool_choice = FINAL_ANSWER  # nothing new can come of calling again
        self._seen[call_key(ToolCall(action.tool, action.arguments))] = output
        self._last_result = output
        self.steps.append(payload.info)
        hint = self.agent.answer_hint if payload.info.ok else ""
        self._observe(f"{payload.info.output}\n{hint}" if hint else payload.info.output)

    def _observe(self, text: str) -> None:
        self.phase = Phase.OBSERVE
        self._action = Observe(text, list(self._last_output))

    def _finish(self, finish: Finish) -> Finish:
        self.phase, self._action = Phase.DONE, finish
        return finish

    def _limit_message(self) -> str:
        return f"no final answer in {self.agent.max_steps} calls"
