"""One model call as data: what goes into a replica and what comes back.

Requests are validated here, before any engine sees them: SGLang's scheduler
process dies on some bad inputs (an empty prompt kills it), so nothing unchecked
may reach it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from executor.errors import InvalidRequestError, validation_problems
from executor.sampling import SamplingParams


class GenerateRequest(BaseModel):
    """A prompt (token ids or text) and how to sample its continuation."""

    model_config = ConfigDict(extra="forbid")

    input_ids: list[int] | None = None
    text: str | None = None
    sampling: SamplingParams = Field(default_factory=SamplingParams)
    rid: str | None = None  # request id, for tracing and abort
    session_id: str | None = Field(None, min_length=1, max_length=256)
    """The task the call belongs to: its KV is tagged with it where the replica
    releases in the engine (``ReplicaConfig.release_in_engine``); ignored elsewhere."""

    @model_validator(mode="after")
    def _one_prompt(self) -> GenerateRequest:
        if (self.input_ids is None) == (self.text is None):
            raise ValueError("give exactly one of input_ids or text")
        if self.input_ids is not None and not self.input_ids:
            raise ValueError("the prompt is empty (input_ids=[])")
        if self.text is not None and not self.text:
            raise ValueError("the prompt is empty (text='')")
        return self

    @classmethod
    def parse(cls, data: GenerateRequest | dict[str, Any]) -> GenerateRequest:
        """Validate a request, turning pydantic's error into an InvalidRequestError."""
        if isinstance(data, GenerateRequest):
            return data
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            problems = validation_problems(exc, "request")
            raise InvalidRequestError(f"invalid generate request: {problems}") from None


class GenerateResult(BaseModel):
    """What the engine produced, with SGLang's own token accounting."""

    replica_id: str
    text: str
    output_ids: list[int]  # (not the prompt's: the caller has them; 8K+ ids a call)
    prompt_tokens: int
    cached_tokens: int  # prompt tokens served from the radix cache (not prefilled)
    completion_tokens: int
    finish_reason: str  # "stop", "length", "abort"
    latency_s: float

    @property
    def prefilled_tokens(self) -> int:
        return self.prompt_tokens - self.cached_tokens


class TokenDelta(BaseModel):
    """What one engine step of a streamed call added: its token ids and their text
    (the text may lag the ids by a character still incomplete)."""

    ids: list[int]
    text: str


class Capacity(BaseModel):
    """A replica's KV pool as the engine reports it (not as we guess it)."""

    replica_id: str
    max_total_num_tokens: int
    used_tokens: int
    token_usage: float
    running_requests: int
    waiting_requests: int
