"""web_fetch: allowlist at every hop, size and time limits, HTML to text (local server)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

from sandbox_helpers import LoopbackServer

from tools import ToolContext, WebPolicy, web_fetch
from tools.web.html_text import html_to_text

pytest_plugins = ["sandbox_fixtures"]  # fixtures: backend, docker_host, loopback_server...

PAGE = b"""<!doctype html><html><head><title>Test page</title>
<style>body{color:red}</style><script>alert('x')</script></head>
<body><h1>Hello</h1><p>First &amp; <b>bold</b> paragraph.</p><ul><li>one</li><li>two</li></ul>
</body></html>"""


def fetch(url: str, **policy: object):  # noqa: ANN201
    ctx = ToolContext(web=WebPolicy(**policy))  # type: ignore[arg-type]
    return asyncio.run(web_fetch.invoke({"url": url}, ctx))


def test_allowed_host_html_becomes_text(loopback_server: LoopbackServer) -> None:
    url = loopback_server.route("/page", PAGE, content_type="text/html; charset=utf-8")
    res = fetch(url, allow_hosts=("127.0.0.1",))
    assert res.ok, res
    assert res.data["status"] == 200 and res.data["content_type"] == "text/html"
    assert "# Test page" in res.text
    assert "# Hello" in res.text
    assert "First & bold paragraph." in res.text
    assert "- one\n- two" in res.text
    assert "alert" not in res.text and "color:red" not in res.text


def test_host_outside_the_allowlist_is_refused(loopback_server: LoopbackServer) -> None:
    url = loopback_server.route("/page", PAGE)
    res = fetch(url, allow_hosts=("example.org", "*.python.org"))
    assert not res.ok
    assert "host '127.0.0.1' is not in the allowlist" in res.text
    nothing = fetch(url)
    assert not nothing.ok and "allowlist is empty" in nothing.text
    assert loopback_server.hits == []  # refused before any request


def test_redirect_to_a_host_outside_the_allowlist_is_refused(
    loopback_server: LoopbackServer,
) -> None:
    url = loopback_server.route("/go", b"", status=302, location="http://localhost:1/secret")
    res = fetch(url, allow_hosts=("127.0.0.1",))
    assert not res.ok and "host 'localhost' is not in the allowlist" in res.text
    assert loopback_server.hits == ["/go"]


def test_over_limit_responses_are_refused(loopback_server: LoopbackServer) -> None:
    big = b"x" * 300_000
    declared = loopback_server.route("/big", big, content_type="text/plain")
    chunked = loopback_server.route(
        "/chunked", big, content_type="text/plain", transfer_encoding="chunked"
    )
    for url in (declared, chunked):
        res = fetch(url, allow_hosts=("127.0.0.1",), max_bytes=100_000)
        assert not res.ok, url
        assert "exceeds the limit of 100000 bytes" in res.text
    small = fetch(declared, allow_hosts=("127.0.0.1",), max_bytes=1_000_000)
    assert small.ok and small.data["bytes"] == 300_000


def test_slow_server_is_cut_at_the_time_limit() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    stop = threading.Event()

    def drip() -> None:
        conn, _ = listener.accept()
        conn.recv(4096)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n")
        while not stop.wait(0.1):
            try:
                conn.sendall(b"x")
            except OSError:
                break
        conn.close()

    thread = threading.Thread(target=drip, daemon=True)
    thread.start()
    t0 = time.monotonic()
    res = fetch(f"http://127.0.0.1:{port}/", allow_hosts=("127.0.0.1",), timeout_s=1.0)
    elapsed = time.monotonic() - t0
    stop.set()
    listener.close()
    assert not res.ok and "within 1 s" in res.text
    assert elapsed < 5


def test_only_http_and_https() -> None:
    for url in ("file:///etc/passwd", "ftp://127.0.0.1/x", "gopher://127.0.0.1"):
        res = fetch(url, allow_hosts=("127.0.0.1",))
        assert not res.ok and "only http and https" in res.text
    bad = asyncio.run(web_fetch.invoke({"link": "http://x"}, ToolContext()))
    assert not bad.ok and "missing required argument 'url'" in bad.text


def test_wildcard_allowlist() -> None:
    policy = WebPolicy(allow_hosts=("*.python.org", "example.com"))
    assert policy.allows("docs.python.org") and policy.allows("EXAMPLE.com.")
    assert not policy.allows("python.org.evil.com") and not policy.allows("sub.example.com")


def test_html_to_text_keeps_pre_and_drops_scripts() -> None:
    text = html_to_text("<p>a</p><pre>x  =  1\n  y</pre><script>bad()</script><p>b<br>c</p>")
    assert "x  =  1\n  y" in text and "bad" not in text and "b\nc" in text
