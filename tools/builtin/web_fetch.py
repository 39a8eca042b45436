"""``web_fetch``: GET a URL from an allowlisted host (runs on the host, not in the sandbox)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from tools.context import ToolContext
from tools.declare import tool
from tools.result import ToolError, ToolResult
from tools.web.fetch import FetchRefused, fetch


@tool
async def web_fetch(ctx: ToolContext, url: Annotated[str, Field(min_length=1)]) -> ToolResult:
    """Fetch a web page or file with HTTP(S) GET and return it as text (HTML is reduced
    to its text). Only the hosts allowed for this task can be reached; this is the
    only network access a task has.

    Args:
        url: the full http:// or https:// URL
    """
    try:
        page = await fetch(url, ctx.web)
    except FetchRefused as exc:
        raise ToolError(str(exc)) from None
    header = (
        f"[{page.status} {page.url} ({page.content_type or 'unknown type'}, {page.bytes} bytes)]"
    )
    ok = 200 <= page.status < 400
    return ToolResult(
        text=f"{header}\n{page.text}",
        ok=ok,
        error=None if ok else f"HTTP status {page.status}",
        data={
            "status": page.status,
            "url": page.url,
            "content_type": page.content_type,
            "bytes": page.bytes,
        },
    )
