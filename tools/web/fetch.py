"""HTTP(S) GET under a :class:`WebPolicy`: allowlisted hosts at every redirect,
a byte cap enforced while streaming (never buffering more), one overall deadline."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import httpx

from tools.errors import ToolsError
from tools.web.html_text import html_to_text
from tools.web.policy import WebPolicy

TEXT_TYPES = ("text/", "application/json", "application/xml", "application/xhtml", "+json", "+xml")


class FetchRefused(ToolsError):
    """The request was not made, or its answer was not accepted (the message says why)."""


@dataclass
class Fetched:
    url: str
    status: int
    content_type: str
    text: str
    bytes: int


def check_url(url: str, policy: WebPolicy) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise FetchRefused(f"only http and https URLs can be fetched, not {url!r}")
    if not parts.hostname:
        raise FetchRefused(f"no host in URL {url!r}")
    if not policy.allow_hosts:
        raise FetchRefused("no host is allowed for this task (its web allowlist is empty)")
    if not policy.allows(parts.hostname):
        allowed = ", ".join(policy.allow_hosts)
        raise FetchRefused(f"host {parts.hostname!r} is not in the allowlist ({allowed})")
    return parts.hostname


async def fetch(url: str, policy: WebPolicy) -> Fetched:
    try:
        async with asyncio.timeout(policy.timeout_s):
            return await _fetch(url, policy)
    except TimeoutError as exc:
        raise FetchRefused(f"no complete answer from {url} within {policy.timeout_s:g} s") from exc
    except httpx.HTTPError as exc:
        raise FetchRefused(f"request to {url} failed: {type(exc).__name__}: {exc}") from exc


async def _fetch(url: str, policy: WebPolicy) -> Fetched:
    headers = {"User-Agent": policy.user_agent, "Accept-Encoding": "identity"}
    async with httpx.AsyncClient(
        follow_redirects=False, trust_env=False, timeout=policy.timeout_s, headers=headers
    ) as client:
        for _ in range(policy.max_redirects + 1):
            check_url(url, policy)
            async with client.stream("GET", url) as response:
                if response.is_redirect and "location" in response.headers:
                    url = urljoin(url, response.headers["location"])
                    continue
                body = await _read_capped(response, policy.max_bytes)
                ctype = response.headers.get("content-type", "").split(";")[0].strip().lower()
                return Fetched(
                    url, response.status_code, ctype, _decode(response, body, ctype), len(body)
                )
    raise FetchRefused(f"more than {policy.max_redirects} redirects")


async def _read_capped(response: httpx.Response, limit: int) -> bytes:
    declared = response.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise FetchRefused(f"response of {int(declared)} bytes exceeds the limit of {limit} bytes")
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > limit:
            raise FetchRefused(f"response exceeds the limit of {limit} bytes")
    return bytes(body)


def _decode(response: httpx.Response, body: bytes, ctype: str) -> str:
    if ctype and not any(t in ctype for t in TEXT_TYPES):
        return f"[binary content: {ctype}, {len(body)} bytes, not shown]"
    try:
        text = body.decode(response.charset_encoding or "utf-8", errors="replace")
    except LookupError:
        text = body.decode("utf-8", errors="replace")
    if "html" in ctype or (
        not ctype and text.lstrip()[:15].lower().startswith(("<!doctype", "<html"))
    ):
        return html_to_text(text)
    return text
