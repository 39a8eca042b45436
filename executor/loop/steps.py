"""A task's steps as the journal records them and the task machine reads them: one
typed payload per kind (pure data; the SQLite journal is :mod:`.journal`)."""

from __future__ import annotations

import enum
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from executor.result import CallStep, FailoverStep, ToolStep


class StepKind(enum.StrEnum):
    """What a journal step records (the ``kind`` column; compares equal to its text)."""

    CALL = "call"
    TOOL_START = "tool_start"
    TOOL_RESULT = "tool_result"
    OBSERVATION = "observation"
    FAILOVER = "failover"


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: ClassVar[StepKind]


class CallPayload(_Payload):
    """A model call's reply: its output ids as generated, and its figures."""

    kind: ClassVar[StepKind] = StepKind.CALL
    ids: list[int]
    info: CallStep


class ToolStartPayload(_Payload):
    """The intent to run a tool call, committed before it runs."""

    kind: ClassVar[StepKind] = StepKind.TOOL_START
    call_id: str
    tool: str
    arguments: dict[str, Any]


class ToolResultPayload(_Payload):
    """What the tool returned (``result``: ``ToolResult.to_dict()``) and its step."""

    kind: ClassVar[StepKind] = StepKind.TOOL_RESULT
    call_id: str
    result: dict[str, Any]
    info: ToolStep


class ObservationPayload(_Payload):
    """The ids appended to the transcript after a reply, and their text."""

    kind: ClassVar[StepKind] = StepKind.OBSERVATION
    ids: list[int]
    text: str


class FailoverPayload(_Payload):
    """The task's replica died under a call; the call replays elsewhere."""

    kind: ClassVar[StepKind] = StepKind.FAILOVER
    info: FailoverStep


Payload = CallPayload | ToolStartPayload | ToolResultPayload | ObservationPayload | FailoverPayload
PAYLOADS: dict[StepKind, type[Payload]] = {
    p.kind: p
    for p in (CallPayload, ToolStartPayload, ToolResultPayload, ObservationPayload, FailoverPayload)
}
