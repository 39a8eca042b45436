"""Keyless sessions: a request that names no session joins the live session whose
transcript is the longest prefix of its conversation, beyond the first turn that
every session of an agent shares; else it starts a new one.

Cheap and bounded:

* an index keyed by a hash of the request's *anchor* (its leading system messages,
  its first user turn and its tools) holds the keyless sessions that started with
  that anchor, at most ``bucket`` of them, most recent first; the index has one
  entry per live keyless session, no more;
* a candidate matches exactly when its last call's messages and the reply it gave
  are repeated unchanged at the head of this request (the digests ``build_prompt``
  checks: the request's prompt then *is* the session's token transcript plus a
  suffix, so the transcript is a token prefix of the prompt by construction); the
  one with the most messages wins. The transcript always holds a reply, so a match
  always extends past the shared first turn: two sessions with the same system
  prompt and the same first question are told apart by their replies;
* where no candidate matches exactly (a client that edits the reply it sends back),
  the one whose token ids share the longest prefix with the request's rendered
  prompt wins, if that prefix runs past the anchor's tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from executor.gateway.transcript import Turn, digest, sent_reply_form


class Keyless(Protocol):
    key: str
    last: Turn | None


def anchor_end(messages: Sequence[dict[str, Any]]) -> int:
    """How many messages the anchor holds: the leading system messages and the first
    message after them (the task's first user turn)."""
    i = 0
    while i < len(messages) and messages[i].get("role") == "system":
        i += 1
    return min(i + 1, len(messages))


def anchor(messages: Sequence[dict[str, Any]], tools: list[dict[str, Any]] | None) -> str:
    return digest([list(messages[: anchor_end(messages)]), tools])


def exact_match(
    last: Turn, messages: Sequence[dict[str, Any]], tools: list[dict[str, Any]] | None
) -> bool:
    """The session's last call and its reply head this request's conversation."""
    k = last.n_messages
    if len(messages) <= k + 1:
        return False
    reply = sent_reply_form(dict(messages[k]))
    return (
        reply is not None
        and digest(reply) == last.reply_digest
        and digest([list(messages[:k]), tools]) == last.messages_digest
    )


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class PrefixIndex:
    """anchor hash -> keyless sessions that began with it (most recent first)."""

    def __init__(self, bucket: int = 32) -> None:
        self.bucket = bucket
        self._by_anchor: dict[str, list[str]] = {}
        self._anchor_of: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self._anchor_of)

    def add(self, key: str, anchor_hash: str) -> None:
        self.remove(key)
        keys = self._by_anchor.setdefault(anchor_hash, [])
        keys.insert(0, key)
        for dropped in keys[self.bucket :]:  # the oldest stop being matched
            self._anchor_of.pop(dropped, None)
        del keys[self.bucket :]
        self._anchor_of[key] = anchor_hash

    def remove(self, key: str) -> None:
        h = self._anchor_of.pop(key, None)
        if h is None:
            return
        keys = self._by_anchor.get(h, [])
        if key in keys:
            keys.remove(key)
        if not keys:
            self._by_anchor.pop(h, None)

    def candidates(self, anchor_hash: str) -> list[str]:
        return list(self._by_anchor.get(anchor_hash, ()))

    def match(
        self,
        messages: Sequence[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
        lookup: Callable[[str], Keyless | None],
        prompt_ids: Callable[[], list[int]] | None = None,
        anchor_tokens: Callable[[], int] | None = None,
    ) -> Keyless | None:
        """The session this keyless request continues, or None (start a new one).
        ``prompt_ids`` / ``anchor_tokens`` (the request's rendered prompt, the tokens
        of its anchor) are asked for only when no candidate matches exactly."""
        found = [
            s
            for k in self.candidates(anchor(messages, tools))
            if (s := lookup(k)) is not None and s.last is not None
        ]
        exact = [s for s in found if s.last is not None and exact_match(s.last, messages, tools)]
        if exact:
            return max(exact, key=lambda s: s.last.n_messages if s.last else 0)
        if not found or prompt_ids is None or anchor_tokens is None:
            return None
        ids = prompt_ids()
        best, length = None, anchor_tokens()
        for s in found:
            assert s.last is not None
            n = common_prefix(s.last.ids, ids)
            if n > length:
                best, length = s, n
        return best
