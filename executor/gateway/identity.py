"""Which session a request belongs to, from the carriers clients already send.

First found wins, in this order (CLIENTS.md has who sends what):

===========================  =========================================
``X-Session-ID`` header      vLLM, our own recommendation
``prompt_cache_key`` body    OpenAI (``prompt_cache_key=`` in the client)
``program_id`` body          ThunderAgent (``extra_body``)
``metadata.session_id``      OpenAI ``metadata``, openai-agents' ModelSettings
``X-Dynamo-Session-ID``      NVIDIA Dynamo
``x-claude-code-session-id`` Claude Code (llm-d maps it)
``session_id`` body/header,  vLLM (body), Codex (``session-id``/``session_id``)
``session-id`` header
``x-session-affinity``       OpenCode
``user`` body                OpenAI's older cache-affinity field
===========================  =========================================

A request with none of them gets no key: ``matcher`` finds the live session its
conversation continues, else it starts one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MAX_KEY_CHARS = 256


@dataclass(frozen=True)
class SessionKey:
    key: str
    source: str  # where it was found, e.g. "header:x-session-id", "body:prompt_cache_key"


def _text(value: Any) -> str | None:
    if isinstance(value, str | int) and not isinstance(value, bool):
        text = str(value).strip()
        return text[:MAX_KEY_CHARS] if text else None
    return None


def session_key(headers: Mapping[str, str], body: Mapping[str, Any]) -> SessionKey | None:
    """The request's session key, or None (``headers``: case-insensitive, as
    Starlette's are; plain dicts are looked up lower-cased)."""
    low = {k.lower(): v for k, v in headers.items()}
    metadata = body.get("metadata")
    candidates: list[tuple[str, Any]] = [
        ("header:x-session-id", low.get("x-session-id")),
        ("body:prompt_cache_key", body.get("prompt_cache_key")),
        ("body:program_id", body.get("program_id")),
        (
            "body:metadata.session_id",
            metadata.get("session_id") if isinstance(metadata, dict) else None,
        ),
        ("header:x-dynamo-session-id", low.get("x-dynamo-session-id")),
        ("header:x-claude-code-session-id", low.get("x-claude-code-session-id")),
        ("body:session_id", body.get("session_id")),
        ("header:session_id", low.get("session_id")),
        ("header:session-id", low.get("session-id")),
        ("header:x-session-affinity", low.get("x-session-affinity")),
        ("body:user", body.get("user")),
    ]
    for source, value in candidates:
        key = _text(value)
        if key is not None:
            return SessionKey(key, source)
    return None


def is_final(headers: Mapping[str, str]) -> bool:
    """``X-Session-Final: true`` (or Dynamo's ``X-Dynamo-Session-Final``): the session
    ends with this request's response."""
    low = {k.lower(): v for k, v in headers.items()}
    value = low.get("x-session-final") or low.get("x-dynamo-session-final") or ""
    return value.strip().lower() in ("1", "true", "yes")
