"""The live dashboard in headless Chromium, driven over the DevTools protocol: the
page, opened once with its token link, shows the replicas and a running task's
steps as they happen (server-sent events, no reload), then its end; a screenshot."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
from service_process import AUTH, TOKEN, Server, running_server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.engine,
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="chromium not installed (bash infra/install_chromium.sh installs it)",
    ),
]
SCREENSHOT_ENV = "DASHBOARD_SCREENSHOT"  # also save the screenshot there (the README's)


@pytest.fixture(scope="module")
def server(pool: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from running_server(pool, tmp_path_factory.mktemp("dashboard"))


class Page:
    """One Chromium tab over the DevTools protocol (a websocket)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.ids = itertools.count(1)

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        msg_id = next(self.ids)
        await self.ws.send_json({"id": msg_id, "method": method, "params": params})
        while True:
            msg = json.loads((await self.ws.receive(timeout=60)).data)
            if msg.get("id") == msg_id:
                assert "error" not in msg, msg
                result: dict[str, Any] = msg["result"]
                return result

    async def js(self, expression: str) -> Any:
        r = await self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        return r["result"].get("value")

    async def until(self, what: str, expression: str, ok: Any, timeout_s: float = 180) -> Any:
        deadline = time.monotonic() + timeout_s
        value = None
        while time.monotonic() < deadline:
            value = await self.js(expression)
            if ok(value):
                return value
            await asyncio.sleep(0.2)
        raise AssertionError(f"the page never showed {what}; last: {value}")


def launch(profile: Path) -> subprocess.Popen[bytes]:
    assert CHROMIUM is not None
    return subprocess.Popen(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-sync",
            "--window-size=1280,900",
            "--remote-debugging-port=0",
            f"--user-data-dir={profile}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def tab_url(profile: Path) -> str:
    port_file = profile / "DevToolsActivePort"
    for _ in range(300):
        if port_file.exists() and port_file.read_text().strip():
            break
        await asyncio.sleep(0.1)
    port = port_file.read_text().split()[0]
    async with httpx.AsyncClient() as c:
        targets = (await c.get(f"http://127.0.0.1:{port}/json/list")).json()
    return str(next(t for t in targets if t["type"] == "page")["webSocketDebuggerUrl"])


TASK_ROWS = """Array.from(document.querySelectorAll('#tasks tbody tr')).map(r => ({
  id: r.dataset.task, status: r.dataset.status, steps: Number(r.dataset.steps),
  segments: r.querySelectorAll('.timeline span').length,
  kinds: Array.from(r.querySelectorAll('.timeline span')).map(s => s.className)}))"""
REPLICA_ROWS = """Array.from(document.querySelectorAll('#replicas tbody tr')).map(r => ({
  id: r.dataset.replica, state: r.dataset.state, spark: !!r.querySelector('svg')}))"""


def row(rows: list[dict[str, Any]] | None, task_id: str) -> dict[str, Any] | None:
    return next((r for r in rows or [] if r["id"] == task_id), None)


async def drive(server: Server, profile: Path, shot: Path) -> None:
    browser = launch(profile)
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(await tab_url(profile), max_msg_size=0) as ws,
        ):
            page = Page(ws)
            await page.send("Page.enable")
            await page.send("Page.navigate", url=f"{server.url}/?token={TOKEN}")
            await page.until(
                "the live connection",
                "document.getElementById('status')?.dataset.connected",
                lambda v: v == "true",
            )
            assert await page.js("location.search") == ""  # the token left the address bar
            replicas = await page.js(REPLICA_ROWS)
            assert {r["id"] for r in replicas} == {"r0", "r1"}
            assert all(r["state"] == "active" and r["spark"] for r in replicas), replicas

            body = {"agent": "marker", "goal": "Mark the records."}
            submitted = httpx.post(f"{server.url}/v1/tasks", headers=AUTH, json=body, timeout=30)
            task_id = submitted.json()["task_id"]
            running = await page.until(
                "the task running with its first steps",
                TASK_ROWS,
                lambda rows: (
                    (r := row(rows, task_id)) is not None
                    and r["status"] == "running"
                    and r["steps"] >= 3
                ),
            )
            seen = row(running, task_id)
            assert seen is not None and {"step-queue", "step-call", "step-tool"} <= set(
                seen["kinds"]
            ), seen
            shot.write_bytes(base64.b64decode((await page.send("Page.captureScreenshot"))["data"]))
            ended = await page.until(
                "the task's end",
                TASK_ROWS,
                lambda rows: (r := row(rows, task_id)) is not None and r["status"] == "step_limit",
            )
            final = row(ended, task_id)
            assert final is not None and final["steps"] > seen["steps"]  # updated live
    finally:
        browser.kill()
        browser.wait(timeout=30)


def test_dashboard_shows_a_running_task_live(server: Server, tmp_path: Path) -> None:
    shot = tmp_path / "dashboard.png"
    asyncio.run(drive(server, tmp_path / "profile", shot))
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    if os.environ.get(SCREENSHOT_ENV):
        Path(os.environ[SCREENSHOT_ENV]).write_bytes(png)


def test_dashboard_needs_the_token_and_its_cookie_changes_nothing(server: Server) -> None:
    assert httpx.get(f"{server.url}/").status_code == 401
    assert httpx.get(f"{server.url}/", params={"token": "wrong"}).status_code == 401
    with httpx.Client(base_url=server.url, follow_redirects=True) as c:
        r = c.get("/", params={"token": TOKEN})
        assert r.status_code == 200 and "agent executor" in r.text  # after the redirect
        assert c.cookies.get("executor_token") == TOKEN
        assert c.get("/v1/dashboard").json()["replicas"]  # the cookie reads ...
        refused = c.post("/v1/tasks", json={"agent": "quick", "goal": "x"})
        assert refused.status_code == 401  # ... and never writes (no cross-site requests)
