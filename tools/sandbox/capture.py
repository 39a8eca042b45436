"""Bounded capture of a command's output stream.

A command may write gigabytes; the supervisor keeps the first and last parts
(``limit`` bytes in all) and only counts the rest, so memory stays bounded
while the reader keeps draining the pipe (the writer never blocks on a full
pipe, so the command runs to its natural end or its time limit).
"""

from __future__ import annotations

MARKER = b"\n[... %d bytes truncated ...]\n"


class CappedBuffer:
    """Keeps ``limit`` bytes of a stream: ~3/4 from its start, ~1/4 from its end."""

    def __init__(self, limit: int) -> None:
        self.limit = max(0, limit)
        self._head_limit = self.limit - self.limit // 4
        self._tail_limit = self.limit - self._head_limit
        self._head = bytearray()
        self._tail = bytearray()
        self.total = 0

    def write(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self._head_limit - len(self._head)
        if room > 0:
            self._head += chunk[:room]
            chunk = chunk[room:]
        if chunk and self._tail_limit:
            self._tail += chunk[-self._tail_limit :]
            if len(self._tail) > 2 * self._tail_limit:
                del self._tail[: len(self._tail) - self._tail_limit]

    @property
    def truncated(self) -> bool:
        return self.total > self.limit

    def getvalue(self) -> bytes:
        """The kept bytes; when truncated, with a marker saying how much was dropped."""
        if not self.truncated:
            return bytes(self._head) + bytes(self._tail)
        tail = bytes(self._tail[-self._tail_limit :]) if self._tail_limit else b""
        dropped = self.total - len(self._head) - len(tail)
        return bytes(self._head) + MARKER % dropped + tail
