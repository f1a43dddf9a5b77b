"""Fixtures for the evaluation tests: a fake OpenAI-compatible server, a small test set on disk, the tiny
GLM-OCR model (one per session) and its config."""

from __future__ import annotations

import base64
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ocr_ft_tests.factories import make_png, nested_html, table_html


@dataclass
class FakeServer:
    """What the fake server answers and what it saw.

    ``answers`` maps the image bytes sent to the assistant text returned; ``fail_next`` makes the next N
    chat requests answer ``fail_status``; ``fail_images`` always fail (400) for those image bytes.
    """

    url: str = ""
    answers: dict[bytes, str] = field(default_factory=dict)
    default_answer: str = "<table><tr><td>?</td></tr></table>"
    fail_next: int = 0
    fail_status: int = 500
    fail_images: set[bytes] = field(default_factory=set)
    delay_s: float = 0.0
    requests: list[dict] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def chat_requests(self) -> list[dict]:
        return [r for r in self.requests if r["path"].endswith("/chat/completions")]


def _image_bytes(payload: dict) -> bytes:
    for part in payload["messages"][0]["content"]:
        if part.get("type") == "image_url":
            return base64.b64decode(part["image_url"]["url"].split(",", 1)[1])
    raise AssertionError("no image in the request")


@pytest.fixture
def fake_server():
    state = FakeServer()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep test output quiet
            pass

        def _send(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            with state.lock:
                state.requests.append({"path": self.path, "headers": dict(self.headers), "json": None})
            if self.path == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": "glm-ocr-test", "object": "model"}]})
            else:
                self._send(404, {"error": "not found"})

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with state.lock:
                state.requests.append({"path": self.path, "headers": dict(self.headers), "json": body})
                failing = state.fail_next > 0
                if failing:
                    state.fail_next -= 1
            if state.delay_s:
                time.sleep(state.delay_s)
            if failing:
                return self._send(state.fail_status, {"error": "injected failure"})
            image = _image_bytes(body)
            if image in state.fail_images:
                return self._send(400, {"error": "bad image"})
            text = state.answers.get(image, state.default_answer)
            self._send(200, {"id": "x", "object": "chat.completion",
                             "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def test_set(tmp_path) -> dict:
    """Six samples (plain, merged, 2- and 3-level nested, two sources) with images under ``data/``."""
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    specs = [
        ("plain", "dart", table_html(1)),
        ("plain", "wiki", table_html(2, rows=2)),
        ("merged", "dart", table_html(3, merged=True)),
        ("merged", "synthetic_shilu", table_html(4, merged=True)),
        ("nested_2level", "synthetic_shilu", nested_html(5, 2)),
        ("nested_3level", "synthetic_shilu", nested_html(6, 3)),
    ]
    rows, images = [], {}
    for i, (category, source, html) in enumerate(specs):
        rel = f"images/s{i}.png"
        png = make_png(100 + i)
        (data / rel).write_bytes(png)
        images[rel] = png
        rows.append({"image_path": rel, "ground_truth_html": html, "nesting_level": int(category[7]) if
                     category.startswith("nested") else 1, "source": source, "category": category,
                     "metadata": {}, "content_hash": f"h{i}"})
    path = tmp_path / "test.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return {"path": path, "data_dir": data, "rows": rows, "images": images}


def answer_all(server: FakeServer, test_set: dict, wrap: str = "```html\n{}\n```") -> None:
    """Make ``server`` answer every test image with its ground truth (in ``wrap``)."""
    for row in test_set["rows"]:
        server.answers[test_set["images"][row["image_path"]]] = wrap.format(row["ground_truth_html"])


@pytest.fixture
def answer():
    return answer_all


def _rows_by_key(path: Path) -> dict[str, dict]:
    return {r["key"]: r for r in map(json.loads, path.read_text(encoding="utf-8").splitlines())}


@pytest.fixture
def read_predictions():
    """Function: rows of a predictions.jsonl by key."""
    return _rows_by_key


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A tiny GLM-OCR model directory (random weights, tokenizer trained on a few labels), built once."""
    pytest.importorskip("torch")
    from ocr_ft.train.tiny import build_tiny_model

    texts = [table_html(i, merged=i % 2 == 0) for i in range(6)] + [nested_html(7, 3)]
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", texts, seed=0)


@pytest.fixture
def tiny_config(tiny_model):
    """The tiny preset's training config for ``tiny_model`` with a small pixel cap (fresh per test: mutable)."""
    from ocr_ft.train.config import TINY_CONFIG_PATH, load_config

    return load_config(TINY_CONFIG_PATH, base_model=str(tiny_model), max_pixels=28 * 28 * 64)
