"""Fixtures for the API-source tests: a real local HTTP server the tests script, and a fake renderer.

``fake_server`` is a ``ThreadingHTTPServer`` on 127.0.0.1 (port 0) in a thread. Routes map a path to a
handler ``(params) -> Reply`` (or a :class:`Script` replaying replies in order); every request is recorded
with its path and query parameters. Replies can also misbehave on purpose: ``Reply(reset=True)`` closes the
connection without answering, ``Reply(delay=s)`` answers late (to trip a read timeout), ``Reply(truncate=n)``
announces the full body but sends only ``n`` bytes.

``fake_renderer`` writes a small PNG per HTML into a blob store under ``tmp_path`` (no browser): enough to
exercise the sources' pairing of images and labels. HTML containing ``FAIL_RENDER`` fails to render.
"""

from __future__ import annotations

import io
import json
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qsl, urlsplit

import pytest
from PIL import Image

from factories import zip_bytes
from ocr_ft.storage import BlobStore, sha256_text

# --------------------------------------------------------------------------------------------------
# Local HTTP server
# --------------------------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int = 200
    body: bytes | str | dict | list = b""
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    reset: bool = False
    delay: float = 0.0
    truncate: int | None = None

    def payload(self) -> tuple[bytes, str]:
        if isinstance(self.body, (dict, list)):
            return json.dumps(self.body, ensure_ascii=False).encode("utf-8"), self.content_type or "application/json;charset=UTF-8"
        if isinstance(self.body, str):
            return self.body.encode("utf-8"), self.content_type or "text/plain; charset=utf-8"
        return self.body, self.content_type or "application/octet-stream"


class Script:
    """Replies in order; the last one repeats forever."""

    def __init__(self, *replies: Reply):
        self.replies = list(replies)
        self.calls = 0

    def __call__(self, params: dict[str, str]) -> Reply:
        reply = self.replies[min(self.calls, len(self.replies) - 1)]
        self.calls += 1
        return reply


@dataclass
class Recorded:
    method: str
    path: str
    params: dict[str, str]
    raw_query: str
    headers: dict[str, str] = field(default_factory=dict)


class FakeServer:
    def __init__(self) -> None:
        self.routes: dict[str, Callable[[dict[str, str]], Reply]] = {}
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep pytest output clean
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                parts = urlsplit(self.path)
                params = dict(parse_qsl(parts.query, keep_blank_values=True))
                with server._lock:
                    server.requests.append(Recorded("GET", parts.path, params, parts.query, dict(self.headers.items())))
                handler = server.routes.get(parts.path)
                reply = handler(params) if handler else Reply(404, b"not found")
                if reply.delay:
                    time.sleep(reply.delay)
                if reply.reset:
                    # RST instead of FIN: the client sees "connection reset by peer".
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.connection.close()
                    self.close_connection = True
                    return
                body, ctype = reply.payload()
                self.send_response(reply.status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                if reply.truncate is not None:
                    self.send_header("Connection", "close")
                self.end_headers()
                try:
                    self.wfile.write(body if reply.truncate is None else body[: reply.truncate])
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass
                if reply.truncate is not None:
                    self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def route(self, path: str, handler: Callable[[dict[str, str]], Reply] | Reply) -> None:
        self.routes[path] = handler if callable(handler) else (lambda params, r=handler: r)

    def hits(self, path: str | None = None) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if path is None or r.path == path]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fake_server():
    server = FakeServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def script():
    return Script


@pytest.fixture
def reply():
    return Reply


# --------------------------------------------------------------------------------------------------
# Fake renderer
# --------------------------------------------------------------------------------------------------


@dataclass
class FakeRendered:
    image_path: str
    sha256: str
    width: int
    height: int
    cached: bool = False


class FakeRenderError(Exception):
    def __init__(self, message: str, reason: str = "browser_error"):
        super().__init__(message)
        self.message = message
        self.reason = reason


class FakeRenderer:
    """Duck-typed stand-in for :class:`ocr_ft.render.Renderer`: one small PNG per distinct HTML."""

    def __init__(self, store: BlobStore):
        self.store = store
        self.calls: list[list[tuple[str, str | None]]] = []

    def render_many(self, items, progress=None):
        items = [(it, None) if isinstance(it, str) else tuple(it) for it in items]
        self.calls.append(items)
        out = []
        for i, (html, css) in enumerate(items):
            if "FAIL_RENDER" in html:
                out.append(FakeRenderError(f"table #{i}: page crashed", "browser_error"))
            else:
                digest = sha256_text(html + (css or ""))
                w, h = 20 + int(digest[:2], 16) % 40, 10 + int(digest[2:4], 16) % 20
                buf = io.BytesIO()
                Image.new("RGB", (w, h), (int(digest[4:6], 16), 255, 255)).save(buf, format="PNG")
                sha, rel = self.store.put_bytes(buf.getvalue(), ".png")
                out.append(FakeRendered(rel, sha, w, h))
            if progress is not None:
                progress(i + 1, len(items))
        return out


@pytest.fixture
def fake_renderer(tmp_path):
    return FakeRenderer(BlobStore(tmp_path / "data" / "blobs", base=tmp_path / "data"))


# --------------------------------------------------------------------------------------------------
# ZIP builder (DART document.xml archives)
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def make_zip():
    return zip_bytes
