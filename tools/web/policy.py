"""Which hosts a task may fetch from, and how much."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WebPolicy:
    """``allow_hosts``: exact names (``docs.python.org``, ``127.0.0.1``) or ``*.example.com``
    for every subdomain of example.com. Empty: nothing is allowed."""

    allow_hosts: tuple[str, ...] = ()
    max_bytes: int = 2 * 1024 * 1024
    timeout_s: float = 15.0
    max_redirects: int = 5
    user_agent: str = "agent-executor-web-fetch/0.1"

    def allows(self, host: str | None) -> bool:
        if not host:
            return False
        host = host.lower().rstrip(".")
        for pattern in self.allow_hosts:
            pattern = pattern.lower().rstrip(".")
            if pattern.startswith("*."):
                if host.endswith(pattern[1:]):
                    return True
            elif host == pattern:
                return True
        return False
