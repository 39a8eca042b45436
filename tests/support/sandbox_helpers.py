"""Helpers for the tool and sandbox tests: the suite's limits, a sync runner, and a
loopback HTTP server that records requests. (Fixtures: tests/support/sandbox_fixtures.py.)"""

from __future__ import annotations

import asyncio
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tools.sandbox import Limits

#: what the security suite runs under: small enough that bombs end fast
SUITE_LIMITS = Limits(
    timeout_s=10.0,
    memory_bytes=256 * 1024 * 1024,
    pids=64,
    cpus=1.0,
    max_output_bytes=64 * 1024,
)


def run(coro):  # noqa: ANN001, ANN201 - tiny helper: the tests are sync, the API async
    return asyncio.run(coro)


class _Recorder(BaseHTTPRequestHandler):
    hits: list[str]
    routes: dict[str, tuple[int, dict[str, str], bytes]]

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.hits.append(self.path)
        status, headers, body = self.routes.get(self.path, (404, {}, b"not found"))
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        if "Content-Length" not in headers and "Transfer-Encoding" not in headers:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if headers.get("Transfer-Encoding") == "chunked":
            for i in range(0, len(body), 65536):
                part = body[i : i + 65536]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class LoopbackServer:
    """An HTTP server on the host's 127.0.0.1 that records every request."""

    def __init__(self) -> None:
        handler = type("Handler", (_Recorder,), {"hits": [], "routes": {}})
        self.handler = handler
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def hits(self) -> list[str]:
        return self.handler.hits

    def route(self, path: str, body: bytes, status: int = 200, **headers: str) -> str:
        hdrs = {k.replace("_", "-").title(): v for k, v in headers.items()}
        self.handler.routes[path] = (status, hdrs, body)
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
