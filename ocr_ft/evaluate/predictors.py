"""Predictors: image in, table HTML and the page's latency out.

A page's ``latency_s`` is what that page experiences: the wall time of the request (endpoint) or of the
generate call (local model) that produced it - with batching, the whole batch's time, since no page of a
batch is done before the batch is.  It is not throughput: how many pages a predictor gets through per
second over a run is measured by the runner (:mod:`ocr_ft.evaluate.runner`) and reported separately.

* :class:`EndpointPredictor` - an OpenAI-compatible ``/v1/chat/completions`` server (``vllm serve``): the
  image as a base64 data URL before the prompt ``Table Recognition:``, temperature 0, a thread pool for
  concurrency, per-request timeouts and bounded retries.  The API key comes from the environment variable
  ``OCR_FT_ENDPOINT_API_KEY`` and never appears in messages.
* :class:`LocalModelPredictor` - GLM-OCR from a local directory (+ optional LoRA adapter), loaded and run by
  :mod:`ocr_ft.train` (greedy decoding, no repetition penalty), in batches.

Both return one :class:`Prediction` per image, in input order, and never raise for a single bad image: its
``error`` says what went wrong.  :func:`extract_table_html` pulls the tables out of raw model output.
"""

from __future__ import annotations

import base64
import mimetypes
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Protocol, Sequence

import requests

API_KEY_ENV = "OCR_FT_ENDPOINT_API_KEY"
DEFAULT_PROMPT = "Table Recognition:"
_RETRY_STATUS = {408, 429, 500, 502, 503, 504}
_FENCE = re.compile(r"```[a-zA-Z]*\s*\n?(.*?)(?:```|$)", re.DOTALL)
_TABLE_TAG = re.compile(r"<(/?)table\b[^>]*>", re.IGNORECASE)
_ROW_OR_CELL = re.compile(r"<(?:tr|td|th)\b", re.IGNORECASE)


def extract_table_html(raw: str | None) -> str:
    """The top-level ``<table>…</table>`` elements of ``raw`` model output, concatenated.

    Markdown fences are looked through; an unclosed last table (output cut off) is kept to the end (the
    HTML parser closes it); rows/cells with no ``<table>`` around them are wrapped in one; ``""`` when
    there is no table at all.
    """
    text = raw or ""
    for m in _FENCE.finditer(text):
        if "<table" in m.group(1).lower() or _ROW_OR_CELL.search(m.group(1)):
            text = m.group(1)
            break
    pieces, depth, start = [], 0, None
    for m in _TABLE_TAG.finditer(text):
        if not m.group(1):
            if depth == 0:
                start = m.start()
            depth += 1
        elif depth:
            depth -= 1
            if depth == 0:
                pieces.append(text[start:m.end()])
    if depth:
        pieces.append(text[start:])
    if pieces:
        return "".join(pieces).strip()
    m = _ROW_OR_CELL.search(text)
    return f"<table>{text[m.start():].strip()}</table>" if m else ""


@dataclass
class Prediction:
    """One image's result. Unpacks as ``html, latency_s = prediction``."""

    html: str
    latency_s: float | None
    raw: str = ""
    error: str | None = None
    truncated: bool = False  # the output hit max_new_tokens (endpoint: finish_reason == "length")
    finish_reason: str | None = None  # "stop" / "length" (endpoint's own; local: derived from the stop tokens)

    def __iter__(self):
        yield self.html
        yield self.latency_s


class Predictor(Protocol):
    name: str

    def predict_iter(self, images: Sequence[str | Path]) -> Iterator[tuple[int, Prediction]]:
        """Yield ``(index into images, prediction)`` as results complete (any order)."""

    def predict(self, images: Sequence[str | Path]) -> list[Prediction]:
        """Predictions for ``images`` in input order."""


def _ordered(predictor: Predictor, images: Sequence[str | Path]) -> list[Prediction]:
    out: list[Prediction | None] = [None] * len(images)
    for i, pred in predictor.predict_iter(images):
        out[i] = pred
    return out  # type: ignore[return-value]


# ------------------------------------------------------------------------------------------ endpoint
def chat_completions_url(url: str) -> tuple[str, str]:
    """``(chat completions URL, models URL)`` for a server root, a ``…/v1`` base or the full URL."""
    u = url.rstrip("/")
    if u.endswith("/chat/completions"):
        base = u[: -len("/chat/completions")]
    elif u.endswith("/v1"):
        base = u
    else:
        base = u + "/v1"
    return base + "/chat/completions", base + "/models"


def image_data_url(path: str | Path) -> str:
    """``data:<mime>;base64,<bytes>`` of the image file at ``path``."""
    p = Path(path)
    mime = mimetypes.guess_type(p.name)[0] or "image/png"
    return f"data:{mime};base64,{base64.b64encode(p.read_bytes()).decode('ascii')}"


class EndpointError(RuntimeError):
    """The endpoint refused or failed a request for good (after the retries allowed)."""


class EndpointPredictor:
    """Table HTML from an OpenAI-compatible chat-completions endpoint (see the module docstring).

    ``model`` is the served model name; when ``None`` the first id from ``GET …/v1/models`` is used.
    A request is retried (``retries`` times at most, waiting ``backoff_s`` and then twice as long each
    time) on connection errors, timeouts and HTTP 408, 429, 500, 502, 503, 504; other HTTP errors fail the
    image at once.  ``latency_s`` is the wall time of the attempt that succeeded.
    """

    def __init__(
        self,
        url: str,
        model: str | None = None,
        prompt: str | None = None,
        concurrency: int = 4,
        timeout_s: float = 120.0,
        retries: int = 3,
        backoff_s: float = 1.0,
        max_tokens: int = 4096,
        max_new_tokens: int | None = None,
        family: str | None = None,
    ):
        """``max_new_tokens`` (same name as the local predictor's) overrides ``max_tokens`` when given.

        ``family`` (a registry name, ``ocr-ft models``) is the served model's family: the prompt defaults to
        its table prompt and an answer in the family's own table format (PaddleOCR-VL's OTSL, GOT's LaTeX
        tabular) is converted to HTML. Without it: GLM-OCR's prompt, answers read as HTML."""
        if max_new_tokens is not None:
            max_tokens = max_new_tokens
        self.url, self.models_url = chat_completions_url(url)
        self.model = model
        self.family = None
        if family is not None:
            from ocr_ft.train.families import get_family

            self.family = get_family(family)  # UnknownFamilyError lists the known ones
        self.prompt = prompt if prompt is not None else (self.family.table_prompt if self.family else DEFAULT_PROMPT)
        self.concurrency = max(1, concurrency)
        self.timeout_s = timeout_s
        self.retries = max(0, retries)
        self.backoff_s = backoff_s
        self.max_tokens = max_tokens
        self.name = f"endpoint:{url}"
        self._api_key = os.environ.get(API_KEY_ENV) or None
        self._local = threading.local()
        self._model_lock = threading.Lock()

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            if self._api_key:
                session.headers["Authorization"] = f"Bearer {self._api_key}"
        return session

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text

    def _request(self, method: str, url: str, **kw) -> tuple[requests.Response, float]:
        """One HTTP request with the retry policy: the response and the seconds its (successful) attempt
        took.  Raises :class:`EndpointError` when it gives up."""
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            start = time.perf_counter()
            try:
                resp = self._session().request(method, url, timeout=self.timeout_s, **kw)
            except (requests.ConnectionError, requests.Timeout) as exc:
                last = f"{type(exc).__name__}: {exc}"
                continue
            if resp.status_code < 400:
                return resp, time.perf_counter() - start
            last = f"HTTP {resp.status_code}: {resp.text[:300]}"
            if resp.status_code not in _RETRY_STATUS:
                break
        raise EndpointError(self._redact(f"{method} {url} failed after {attempt + 1} attempt(s): {last}"))

    def served_model(self) -> str:
        """The model name sent with every request (asked of the server once when not given)."""
        with self._model_lock:
            if self.model is None:
                data = self._request("GET", self.models_url)[0].json()
                try:
                    self.model = data["data"][0]["id"]
                except (KeyError, IndexError, TypeError):
                    raise EndpointError(f"GET {self.models_url}: no model listed in {str(data)[:200]}") from None
            return self.model

    def payload(self, image: str | Path) -> dict[str, Any]:
        """The chat-completions body: the image before the prompt, one user turn, no ``chat_template_kwargs``
        (so the server renders the template's default generation prompt, the one training used)."""
        return {
            "model": self.served_model(),
            "messages": [{
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": image_data_url(image)}},
                    {"type": "text", "text": self.prompt},
                ],
            }],
            "temperature": 0.0,
            "max_tokens": self.max_tokens,
        }

    @staticmethod
    def finish_reason(data: Any) -> str | None:
        try:
            reason = data["choices"][0].get("finish_reason")
        except (KeyError, IndexError, TypeError, AttributeError):
            return None
        return reason if isinstance(reason, str) else None

    @staticmethod
    def _content(data: Any) -> str:
        try:
            content = data["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise EndpointError(f"response has no choices[0].message.content: {str(data)[:200]}") from None
        if isinstance(content, list):  # content parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        return content or ""

    def _as_html(self, raw: str) -> str:
        """``raw`` in HTML: the family's own table format converted ("" when it does not convert)."""
        if self.family is None or self.family.answer_format == "html":
            return raw
        try:
            return self.family.to_html(raw)
        except ValueError:
            return ""

    def predict_one(self, image: str | Path) -> Prediction:
        try:
            resp, latency = self._request("POST", self.url, json=self.payload(image))
            data = resp.json()
            raw = self._content(data)
        except (EndpointError, OSError, ValueError) as exc:
            return Prediction("", None, error=self._redact(f"{image}: {exc}"))
        reason = self.finish_reason(data)
        return Prediction(extract_table_html(self._as_html(raw)), latency, raw=raw, truncated=reason == "length",
                          finish_reason=reason)

    def predict_iter(self, images: Sequence[str | Path]) -> Iterator[tuple[int, Prediction]]:
        pool = ThreadPoolExecutor(max_workers=self.concurrency)
        try:
            futures = {pool.submit(self.predict_one, im): i for i, im in enumerate(images)}
            for fut in as_completed(futures):
                yield futures[fut], fut.result()
        finally:  # the caller stopped early (interrupt, error): drop the requests not yet sent
            pool.shutdown(wait=True, cancel_futures=True)

    def predict(self, images: Sequence[str | Path]) -> list[Prediction]:
        return _ordered(self, images)


# --------------------------------------------------------------------------------------- local model
class LocalModelPredictor:
    """GLM-OCR from ``model_dir`` (+ the LoRA adapter at ``adapter_dir``) run in this process.

    Loading and generation are :mod:`ocr_ft.train`'s (``load_model_and_processor``, ``generate_html``):
    greedy, no repetition penalty, the training prompt and pixel cap from ``config`` (seed defaults when
    ``None``).  ``adapter_dir`` may also be a training run's output directory (``config.yaml`` +
    ``adapter/``), whose config is then used.  Images go ``batch_size`` at a time; a page's latency is the
    wall time of the generate call it was part of (every page of a batch gets the batch's time: that is
    how long each of them waited for its result).  A batch that fails is retried image by image so one bad
    image fails alone (those pages' latency is then their own single-image call's).
    """

    def __init__(
        self,
        model_dir: str | Path,
        adapter_dir: str | Path | None = None,
        config: Any = None,
        device: str | None = None,
        batch_size: int = 4,
        max_new_tokens: int = 2048,
    ):
        from ocr_ft.train import load_config, load_model_and_processor

        if adapter_dir is not None:
            run = Path(adapter_dir)
            if not (run / "adapter_config.json").is_file() and (run / "adapter").is_dir():
                if config is None and (run / "config.yaml").is_file():
                    config = load_config(run / "config.yaml")
                adapter_dir = run / "adapter"
        self.model, self.bundle = load_model_and_processor(str(model_dir), config, adapter_dir=adapter_dir,
                                                           device=device)
        self.batch_size = max(1, batch_size)
        self.max_new_tokens = max_new_tokens
        self.name = f"model:{model_dir}" + (f"+{adapter_dir}" if adapter_dir else "")

    def _generate(self, images: list) -> list:
        from ocr_ft.train.modeling import generate_outputs

        return generate_outputs(self.model, self.bundle, images, self.max_new_tokens, batch_size=len(images))

    def _batch(self, paths: Sequence[str | Path]) -> list[Prediction]:
        from ocr_ft.train import load_image

        images, preds = [], [None] * len(paths)
        for k, p in enumerate(paths):
            try:
                images.append((k, load_image(p)))
            except Exception as exc:  # noqa: BLE001 - reported per image
                preds[k] = Prediction("", None, error=f"{p}: cannot read image: {exc}")
        if images:
            try:
                start = time.perf_counter()
                raws = self._generate([im for _, im in images])
                latency = time.perf_counter() - start  # every page of the batch waited this long
                for (k, _), g in zip(images, raws):
                    if isinstance(g, str):  # a plain-text generator (e.g. a stand-in in tests)
                        preds[k] = Prediction(extract_table_html(g), latency, raw=g)
                        continue
                    preds[k] = Prediction(extract_table_html(g.text), latency, raw=g.raw, truncated=g.truncated,
                                          finish_reason="length" if g.truncated else "stop")
            except Exception as exc:  # noqa: BLE001 - isolate the failing image below
                if len(images) == 1:
                    k, _ = images[0]
                    preds[k] = Prediction("", None, error=f"{paths[k]}: generation failed: {type(exc).__name__}: {exc}")
                else:
                    for k, _ in images:
                        preds[k] = self._batch([paths[k]])[0]
        return preds  # type: ignore[return-value]

    def predict_iter(self, images: Sequence[str | Path]) -> Iterator[tuple[int, Prediction]]:
        for start in range(0, len(images), self.batch_size):
            for k, pred in enumerate(self._batch(images[start:start + self.batch_size])):
                yield start + k, pred

    def predict(self, images: Sequence[str | Path]) -> list[Prediction]:
        return _ordered(self, images)
