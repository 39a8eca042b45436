"""Truncation of what a tool shows the model, with a marker saying how much went."""

from __future__ import annotations

DEFAULT_MAX_CHARS = 16_000


def truncate_text(text: str, max_chars: int = DEFAULT_MAX_CHARS) -> tuple[str, bool]:
    """Keep ~3/4 of ``max_chars`` from the start and ~1/4 from the end of ``text``."""
    if max_chars <= 0 or len(text) <= max_chars:
        return text, False
    head = max_chars - max_chars // 4
    tail = max_chars - head
    dropped = len(text) - head - tail
    marker = f"\n[... {dropped} characters truncated ...]\n"
    return text[:head] + marker + (text[-tail:] if tail else ""), True
