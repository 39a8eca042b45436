"""The bearer token: where it comes from, how it is checked, where the server may bind."""

from __future__ import annotations

import hmac
import ipaddress
import os
from pathlib import Path

from executor.errors import ExecutorError

TOKEN_ENV = "EXECUTOR_TOKEN"


def load_token(token_file: str | Path | None = None) -> str | None:
    """``--token-file`` (its first line) over ``$EXECUTOR_TOKEN``; None: no token."""
    if token_file is not None:
        try:
            text = Path(token_file).read_text().strip()
        except OSError as exc:
            raise ExecutorError(f"cannot read the token file {token_file}: {exc}") from None
        if not text:
            raise ExecutorError(f"the token file {token_file} is empty")
        return text.splitlines()[0].strip()
    return os.environ.get(TOKEN_ENV) or None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Without a token, only this machine may reach the service."""
    if token is None and not is_loopback(host):
        raise ExecutorError(
            f"refusing to listen on {host} without a token: set ${TOKEN_ENV} or --token-file "
            "(without one, only a loopback address is allowed)"
        )


def authorized(header: str | None, token: str | None) -> bool:
    """``Authorization: Bearer <token>``, compared in constant time; any request passes
    when no token is configured (the server is then on loopback only)."""
    if token is None:
        return True
    if header is None:
        return False
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return same_secret(given.strip(), token)


def same_secret(given: str | None, token: str | None) -> bool:
    """A token (from a header, the dashboard's cookie or its link) against the
    configured one, in constant time; anything passes when none is configured."""
    if token is None:
        return True
    return given is not None and hmac.compare_digest(given.encode(), token.encode())
