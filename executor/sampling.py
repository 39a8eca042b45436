"""How a reply is sampled: the subset of SGLang's sampling parameters the executor
passes through. A user-facing type (``Agent.sampling``) that the replica's wire type
(:mod:`executor.fleet.generation`) carries as is."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class SamplingParams(BaseModel):
    """The subset of SGLang's sampling parameters the executor passes through."""

    model_config = ConfigDict(extra="forbid")

    max_new_tokens: int = Field(128, ge=1)
    temperature: float = Field(0.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = -1
    min_p: float = Field(0.0, ge=0.0, le=1.0)
    stop: list[str] | None = None
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False
    skip_special_tokens: bool = True
    sampling_seed: int | None = None  # (OpenAI's ``seed``)
    # Structured output: exactly one of these, or none.
    json_schema: str | None = None
    regex: str | None = None
    ebnf: str | None = None
    structural_tag: str | None = None  # SGLang's (xgrammar's) structural tag, as JSON

    @field_validator("top_k")
    @classmethod
    def _top_k(cls, value: int) -> int:
        if value == 0 or value < -1:
            raise ValueError("top_k must be -1 (disabled) or >= 1")
        return value

    @field_validator("json_schema", mode="before")
    @classmethod
    def _schema_as_text(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return json.dumps(value)
        if isinstance(value, str):
            try:
                json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"json_schema is not valid JSON: {exc}") from exc
        return value

    @model_validator(mode="after")
    def _one_constraint(self) -> SamplingParams:
        kinds = ("json_schema", "regex", "ebnf", "structural_tag")
        given = [n for n in kinds if getattr(self, n) is not None]
        if len(given) > 1:
            raise ValueError(f"give at most one of {', '.join(kinds)} (got {given})")
        return self

    def to_sglang(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)
