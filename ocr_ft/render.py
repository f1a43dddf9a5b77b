"""Render HTML tables to PNG with headless Chromium (Playwright), with a page pool and a content-addressed cache.

Every source that turns HTML into a training image goes through :class:`Renderer`:

* **One browser, a pool of pages.** Playwright's async API runs on a private event-loop thread; the public
  methods are synchronous and thread-safe. ``render_many`` keeps ``pool_size`` pages busy at once.
* **What is captured.** The first ``<table>`` of the document in document order (always a top-level one: a
  nested table comes after its ancestor), its border box rounded out to whole CSS pixels (plus
  ``settings.margin_px``, default 0), as PNG at ``settings.device_scale_factor`` device pixels per CSS pixel.
  The base stylesheet hides ``<caption>``, which the normalised label form drops.
* **Untrusted HTML.** JavaScript is disabled, the context is offline, service workers are blocked, and every
  request the page makes (images, CSS, fonts, frames, navigations) is routed to ``abort``: the document given to
  :meth:`Renderer.render` is all that is ever loaded. Below that, at the network level, Chromium is started
  with a dead proxy for every host including loopback (``--proxy-server=127.0.0.1:9``,
  ``--proxy-bypass-list=<-loopback>``) and host-resolver rules mapping every name to nothing, so even a request
  that slipped past the route block could not reach a server. ``<meta http-equiv=refresh>`` is removed in the
  parsed DOM (entity-encoded attribute values included), not by a regex over the text.
* **Bounded output.** A table whose capture would exceed :data:`MAX_CAPTURE_SIDE` device pixels on a side
  or :data:`MAX_CAPTURE_PIXELS` in all fails with reason ``too_large`` before anything is captured.
* **Minimal environment.** Chromium is started with only ``PATH``, ``HOME``, locale and font variables: no
  API key (``DART_API_KEY``, ``FSS_API_KEY``…) or other secret of the calling process reaches it. Its sandbox
  is on unless the process runs as root (Chromium refuses that) or ``OCR_FT_CHROMIUM_NO_SANDBOX=1``.
* **Content-addressed cache.** The key is ``sha256(html, css, settings.key())``; one small JSON index file per
  key in ``cache_dir`` (written atomically) points at the PNG in the :class:`~ocr_ft.storage.BlobStore`. The
  same HTML with the same settings is rendered once, across runs and processes. The key does not include the
  Chromium version: clear ``cache_dir`` after upgrading the browser if pixel-identical re-renders matter.

Example::

    with Renderer(BlobStore("data/blobs"), "data/cache/render") as r:
        img = r.render("<table><tr><td>자산총계</td><td>1,234</td></tr></table>")
        img.image_path, img.width, img.height, img.cached
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import json
import math
import os
import re
import shutil
import struct
import subprocess
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

from .storage import BlobStore, atomic_write_json, sha256_bytes, sha256_json

__all__ = [
    "DEFAULT_CHROMIUM",
    "CHROMIUM_ARGS",
    "RENDER_VERSION",
    "RendererUnavailable",
    "RenderSettings",
    "RenderedImage",
    "RenderError",
    "Renderer",
    "check_environment",
    "chromium_args",
    "chromium_env",
    "strip_meta_refresh",
    "MAX_CAPTURE_PIXELS",
    "MAX_CAPTURE_SIDE",
    "compose_document",
    "render_cache_key",
    "png_size",
]

DEFAULT_CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = (
    "--disable-gpu",
    # network-level block under the route block: a dead proxy for every URL, loopback included, and no DNS
    "--proxy-server=127.0.0.1:9",
    "--proxy-bypass-list=<-loopback>",
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--dns-prefetch-disable",
    "--no-first-run",
)
INSTALL_HINT = "apt-get install chromium fonts-noto-cjk"
#: Bump when the document wrapping or the capture changes what a given (html, css, settings) renders to.
RENDER_VERSION = 1
VIEWPORT_HEIGHT = 800
MAX_CAPTURE_SIDE = 16_384  # device pixels; Chromium's own texture limit
MAX_CAPTURE_PIXELS = 40_000_000  # device pixels in all: as validation's max_image_pixels
_ENV_KEEP = ("PATH", "HOME", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "FONTCONFIG_PATH",
             "FONTCONFIG_FILE", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_RUNTIME_DIR", "DISPLAY")


def chromium_env(environ: dict | None = None) -> dict[str, str]:
    """The environment Chromium is started with: only the variables it needs (no secret of this process)."""
    environ = os.environ if environ is None else environ
    return {k: environ[k] for k in _ENV_KEEP if k in environ}


def chromium_args() -> list[str]:
    """:data:`CHROMIUM_ARGS`, plus ``--no-sandbox`` when running as root or ``OCR_FT_CHROMIUM_NO_SANDBOX=1``."""
    args = list(CHROMIUM_ARGS)
    if (hasattr(os, "geteuid") and os.geteuid() == 0) or os.environ.get("OCR_FT_CHROMIUM_NO_SANDBOX") == "1":
        args.append("--no-sandbox")
    return args


def strip_meta_refresh(html: str) -> str:
    """``html`` without ``<meta http-equiv="refresh">``, found in the parsed DOM (so ``&#114;efresh`` and
    odd spacing or case are found too). Documents without one are returned unchanged, byte for byte."""
    import lxml.html

    if "meta" not in html.lower():
        return html
    try:
        doc = lxml.html.document_fromstring(html, parser=lxml.html.HTMLParser(huge_tree=True))
    except Exception:  # noqa: BLE001 - unparseable: nothing for Chromium to refresh with either, keep the text
        return html
    metas = [m for m in doc.iter("meta") if (m.get("http-equiv") or "").strip().lower() == "refresh"]
    if not metas:
        return html
    for m in metas:
        m.drop_tree()
    return lxml.html.tostring(doc, encoding="unicode", method="html")

_DOCTYPE = re.compile(r"^\s*(<!doctype[^>]*>)", re.IGNORECASE)


class RendererUnavailable(RuntimeError):
    """The machine cannot render: Chromium, Playwright or a Korean font is missing (the message says what)."""


class RenderError(Exception):
    """One table could not be rendered.

    ``reason`` is a short code (``no_table``, ``empty_table``, ``timeout``, ``browser_error``), ``key`` the
    cache key of the input and ``index`` its position in the ``render_many`` batch (``None`` for ``render``).
    """

    def __init__(self, message: str, *, reason: str, key: str, index: int | None = None):
        self.message = message
        self.reason = reason
        self.key = key
        self.index = index
        super().__init__(self._text())

    def _text(self) -> str:
        where = f"table #{self.index} " if self.index is not None else "table "
        return f"{where}(render key {self.key[:12]}): {self.reason}: {self.message}"

    def at(self, index: int) -> "RenderError":
        """The same error, naming position ``index`` of a batch."""
        return RenderError(self.message, reason=self.reason, key=self.key, index=index)


@dataclass(frozen=True)
class RenderSettings:
    """How a table is rendered. Every field is part of the cache key.

    ``device_scale_factor`` 1.5 gives 144 dpi-equivalent images (CSS px are 1/96 in); ``viewport_width`` is
    the layout width tables wrap in; ``font_family`` the default font (documents' own CSS overrides it);
    ``extra_css`` is appended after the document (it overrides it); ``timeout_ms`` bounds each browser step;
    ``margin_px`` widens the capture around the table's border box, in CSS px (default 0: the box itself,
    which in Chromium contains the table's whole outer border, collapsed or not; a margin can take in
    neighbouring text).
    """

    device_scale_factor: float = 1.5
    viewport_width: int = 1280
    font_family: str = "'Noto Sans CJK KR', 'Noto Sans KR', sans-serif"
    extra_css: str = ""
    timeout_ms: int = 15_000
    margin_px: int = 0

    def __post_init__(self):
        if not self.device_scale_factor > 0:
            raise ValueError(f"device_scale_factor must be > 0, got {self.device_scale_factor}")
        if self.viewport_width < 100:
            raise ValueError(f"viewport_width must be >= 100, got {self.viewport_width}")
        if self.timeout_ms <= 0:
            raise ValueError(f"timeout_ms must be > 0, got {self.timeout_ms}")
        if self.margin_px < 0:
            raise ValueError(f"margin_px must be >= 0, got {self.margin_px}")

    def key(self) -> str:
        """Stable hash of the settings and :data:`RENDER_VERSION` (16 hex digits)."""
        return sha256_json({"render_version": RENDER_VERSION, **asdict(self)})[:16]


@dataclass
class RenderedImage:
    image_path: str  # relative to the blob store's base, like every image path in records
    sha256: str
    width: int
    height: int
    cached: bool


def render_cache_key(html: str, css: str | None, settings: RenderSettings) -> str:
    """Cache key of one render: sha256 over the HTML, the CSS and ``settings.key()`` (NUL-separated)."""
    return sha256_bytes(b"\x00".join(s.encode("utf-8") for s in (html, css or "", settings.key())))


def compose_document(html: str, css: str | None, settings: RenderSettings) -> str:
    """The document actually loaded: base stylesheet, then ``html``, then ``settings.extra_css`` and ``css``.

    The base rules (white background, default font, hidden captions) come first so the document's own CSS
    wins over them; ``extra_css`` and ``css`` come last so they win over the document. A document without a
    doctype is given ``<!DOCTYPE html>`` (standards mode), so that rendering does not depend on quirks mode.
    ``<meta http-equiv="refresh">`` tags are removed: they draw nothing and would navigate the page away
    (to ``about:blank``, which no request block can stop) while it is being captured.
    """
    html = strip_meta_refresh(html)
    base = (
        "html,body{background:#fff;}"
        f"body{{margin:16px;color:#000;font-family:{settings.font_family};}}"
        "caption{display:none;}"
    )
    m = _DOCTYPE.match(html)
    doctype, rest = (m.group(1), html[m.end():]) if m else ("<!DOCTYPE html>", html)
    tail_css = "\n".join(s for s in (settings.extra_css, css or "") if s)
    tail = f"<style>{tail_css}</style>" if tail_css else ""
    return f'{doctype}<meta charset="utf-8"><style>{base}</style>{rest}{tail}'


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise ValueError("not a PNG")
    return struct.unpack(">II", data[16:24])


_ENV_OK: set[tuple[str, str]] = set()


def check_environment(chromium_path: str = DEFAULT_CHROMIUM, font_query: str = ":lang=ko") -> None:
    """Raise :class:`RendererUnavailable` unless Playwright, Chromium and a Korean font are all present.

    ``font_query`` is the fontconfig pattern that must match at least one installed font (``fc-list``).
    A successful check is remembered for the process.
    """
    if (chromium_path, font_query) in _ENV_OK:
        return
    try:
        import playwright.async_api  # noqa: F401
    except ImportError as exc:
        raise RendererUnavailable(
            f"the Python package playwright is not installed ({exc}); install it with `pip install playwright` "
            f"and the browser and fonts with `{INSTALL_HINT}`"
        ) from exc
    if not (os.path.isfile(chromium_path) and os.access(chromium_path, os.X_OK)):
        raise RendererUnavailable(
            f"Chromium not found at {chromium_path!r} (no executable file there). Install it with "
            f"`{INSTALL_HINT}`, or pass chromium_path= the browser's executable."
        )
    fc_list = shutil.which("fc-list")
    if fc_list is None:
        raise RendererUnavailable(
            "fontconfig's fc-list is not on PATH, so the Korean font check cannot run. Install it with "
            "`apt-get install fontconfig fonts-noto-cjk`."
        )
    try:
        out = subprocess.run(
            [fc_list, font_query, "family"], capture_output=True, text=True, timeout=60, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RendererUnavailable(f"`fc-list {font_query}` failed ({exc}); is fontconfig working?") from exc
    if not out.strip():
        raise RendererUnavailable(
            f"no Korean font is installed (`fc-list {font_query}` found nothing): Korean text would render as "
            f"empty boxes. Install one with `{INSTALL_HINT}`."
        )
    _ENV_OK.add((chromium_path, font_query))


@dataclass
class _Slot:
    page: object
    cdp: object


@dataclass
class RenderStats:
    """Counters of one :class:`Renderer` (cumulative over its lifetime)."""

    rendered: int = 0  # browser captures that produced a PNG
    cache_hits: int = 0  # items answered from the cache index (or by a duplicate in the same batch)
    failed: int = 0  # items that became RenderError
    blocked_requests: int = 0  # requests the pages tried to make and were aborted
    browser_starts: int = 0
    render_seconds: float = 0.0  # wall time spent waiting on the browser in render_many
    blocked_urls: list[str] = field(default_factory=list)  # the first few blocked URLs, for diagnostics


class Renderer:
    """Renders HTML tables to PNGs in a :class:`BlobStore`; see the module docstring.

    The browser starts on the first cache miss (a fully cached run never starts one). Use as a context
    manager or call :meth:`close`.
    """

    def __init__(
        self,
        store: BlobStore,
        cache_dir: str | os.PathLike,
        settings: RenderSettings = RenderSettings(),
        pool_size: int = 4,
        chromium_path: str = DEFAULT_CHROMIUM,
    ):
        if pool_size < 1:
            raise ValueError(f"pool_size must be >= 1, got {pool_size}")
        check_environment(chromium_path)
        self.store = store
        self.cache_dir = Path(cache_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.settings = settings
        self.pool_size = pool_size
        self.chromium_path = chromium_path
        self.stats = RenderStats()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pw = None
        self._browser = None
        self._context = None
        self._slots: asyncio.Queue | None = None
        self._closed = False
        self._pool_dead = False

    # ------------------------------------------------------------------ public API

    def __enter__(self) -> "Renderer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def cache_key(self, html: str, css: str | None = None) -> str:
        return render_cache_key(html, css, self.settings)

    def render(self, html: str, css: str | None = None) -> RenderedImage:
        """Render one table; raises :class:`RenderError` if it cannot be rendered."""
        result = self.render_many([(html, css)])[0]
        if isinstance(result, RenderError):
            raise RenderError(result.message, reason=result.reason, key=result.key)
        return result

    def render_many(
        self,
        items: Sequence[str | tuple[str, str | None]],
        progress: Callable[[int, int], None] | None = None,
    ) -> list[RenderedImage | RenderError]:
        """Render every item (``html`` or ``(html, css)``), ``pool_size`` at a time.

        Returns one entry per item, in order: a :class:`RenderedImage` or the :class:`RenderError` that item
        failed with (naming its index). Identical items are rendered once. ``progress(done, total)`` is called
        from the calling thread after each item is resolved.
        """
        if self._closed:
            raise RuntimeError("Renderer is closed")
        pairs = [(it, None) if isinstance(it, str) else (it[0], it[1]) for it in items]
        total = len(pairs)
        results: list[RenderedImage | RenderError | None] = [None] * total
        done = 0

        def tick(n: int = 1) -> None:
            nonlocal done
            done += n
            if progress is not None:
                progress(done, total)

        misses: dict[str, list[int]] = {}
        for i, (html, css) in enumerate(pairs):
            key = self.cache_key(html, css)
            if key in misses:
                misses[key].append(i)
                continue
            hit = self._lookup(key)
            if hit is not None:
                results[i] = hit
                self.stats.cache_hits += 1
                tick()
            else:
                misses[key] = [i]
        if not misses:
            return results  # type: ignore[return-value]

        loop = self._ensure_started()
        t0 = time.perf_counter()
        futures: dict[concurrent.futures.Future, str] = {}
        for key, idxs in misses.items():
            html, css = pairs[idxs[0]]
            doc = compose_document(html, css, self.settings)
            futures[asyncio.run_coroutine_threadsafe(self._capture(doc, key), loop)] = key
        try:
            for fut in concurrent.futures.as_completed(futures):
                key = futures[fut]
                idxs = misses[key]
                try:
                    png = fut.result()
                except Exception as exc:  # noqa: BLE001 - one table's failure must not sink the batch
                    err = exc if isinstance(exc, RenderError) else RenderError(
                        f"{type(exc).__name__}: {exc}", reason="browser_error", key=key)
                    self.stats.failed += len(idxs)
                    for i in idxs:
                        results[i] = err.at(i)
                else:
                    img = self._store(key, png)  # a failing disk is not a render failure: it raises
                    self.stats.rendered += 1
                    self.stats.cache_hits += len(idxs) - 1
                    results[idxs[0]] = img
                    for i in idxs[1:]:
                        results[i] = replace(img, cached=True)
                tick(len(idxs))
        finally:
            for fut in futures:
                fut.cancel()
            self.stats.render_seconds += time.perf_counter() - t0
        return results  # type: ignore[return-value]

    def close(self) -> None:
        """Close the browser and stop the event-loop thread. Safe to call twice."""
        with self._lock:
            self._closed = True
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._ashutdown(), loop).result(timeout=30)
        except Exception:  # noqa: BLE001 - closing must not raise over a dead browser
            pass
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(timeout=30)

    # ------------------------------------------------------------------ cache

    def _index_path(self, key: str) -> Path:
        return self.cache_dir / key[:2] / f"{key}.json"

    def _lookup(self, key: str) -> RenderedImage | None:
        path = self._index_path(key)
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
            blob = self.store.path_for(entry["sha256"], ".png")
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return None
        if not BlobStore.intact(blob, entry["sha256"]):
            return None  # the blob was garbage-collected or damaged: render again (put_bytes rewrites it)
        return RenderedImage(
            image_path=self.store.relative(blob),
            sha256=entry["sha256"],
            width=int(entry["width"]),
            height=int(entry["height"]),
            cached=True,
        )

    def _store(self, key: str, png: bytes) -> RenderedImage:
        width, height = png_size(png)
        digest, rel = self.store.put_bytes(png, ".png")
        atomic_write_json(
            self._index_path(key),
            {"sha256": digest, "width": width, "height": height, "settings": self.settings.key()},
            indent=None,
        )
        return RenderedImage(image_path=rel, sha256=digest, width=width, height=height, cached=False)

    # ------------------------------------------------------------------ browser (event-loop thread)

    def _ensure_started(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._closed:
                raise RuntimeError("Renderer is closed")
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="ocr-ft-renderer", daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
            loop = self._loop
            if self._browser is None or self._pool_dead or not self._browser.is_connected():
                try:
                    asyncio.run_coroutine_threadsafe(self._astart(), loop).result(timeout=120)
                except RendererUnavailable:
                    raise
                except Exception as exc:  # noqa: BLE001 - any launch failure means "cannot render here"
                    raise RendererUnavailable(
                        f"could not start Chromium at {self.chromium_path!r}: {exc}. Install it with `{INSTALL_HINT}`."
                    ) from exc
            return loop

    async def _astart(self) -> None:
        from playwright.async_api import async_playwright

        await self._ashutdown()
        self._pw = await async_playwright().start()
        self._browser = await self._pw.chromium.launch(
            executable_path=self.chromium_path, args=chromium_args(), env=chromium_env(), timeout=60_000,
            chromium_sandbox="--no-sandbox" not in chromium_args(),
        )
        self._context = await self._browser.new_context(
            java_script_enabled=False,
            device_scale_factor=self.settings.device_scale_factor,
            viewport={"width": self.settings.viewport_width, "height": VIEWPORT_HEIGHT},
            offline=True,
            service_workers="block",
            accept_downloads=False,
        )
        await self._context.route("**/*", self._block)
        self._slots = asyncio.Queue()
        for _ in range(self.pool_size):
            self._slots.put_nowait(await self._new_slot())
        self._pool_dead = False
        self.stats.browser_starts += 1

    async def _block(self, route) -> None:
        self.stats.blocked_requests += 1
        if len(self.stats.blocked_urls) < 20:
            self.stats.blocked_urls.append(route.request.url[:200])
        try:
            # A blocked navigation (meta refresh, a frame) must not commit an error page over the document:
            # "aborted" cancels it quietly, other requests fail as blocked by the client.
            await route.abort("aborted" if route.request.is_navigation_request() else "blockedbyclient")
        except Exception:  # noqa: BLE001 - the page may be gone already
            pass

    async def _new_slot(self) -> _Slot:
        page = await self._context.new_page()
        page.set_default_timeout(self.settings.timeout_ms)
        cdp = await self._context.new_cdp_session(page)
        # Page.captureScreenshot follows the emulation of the session that sends it: give this session the
        # context's metrics too, or the capture comes out at 1 device pixel per CSS pixel.
        await cdp.send(
            "Emulation.setDeviceMetricsOverride",
            {
                "width": self.settings.viewport_width,
                "height": VIEWPORT_HEIGHT,
                "deviceScaleFactor": self.settings.device_scale_factor,
                "mobile": False,
            },
        )
        return _Slot(page, cdp)

    async def _ashutdown(self) -> None:
        for attr in ("_context", "_browser"):
            obj = getattr(self, attr)
            setattr(self, attr, None)
            if obj is not None:
                try:
                    await asyncio.wait_for(obj.close(), 20)
                except Exception:  # noqa: BLE001
                    pass
        if self._pw is not None:
            pw, self._pw = self._pw, None
            try:
                await asyncio.wait_for(pw.stop(), 20)
            except Exception:  # noqa: BLE001
                pass

    async def _capture(self, doc: str, key: str) -> bytes:
        """Load ``doc`` in a pooled page and return the PNG of its first table (raises :class:`RenderError`)."""
        from playwright.async_api import Error as PlaywrightError

        slots = self._slots
        slot = await slots.get()
        if slot is None:  # the browser died and no page could be made: fail fast, keep the marker for others
            slots.put_nowait(None)
            raise RenderError("the browser is not running (it crashed or could not open a page)", reason="browser_error", key=key)
        healthy = True
        try:
            # The overall bound covers the steps that take no timeout of their own (query, box, capture).
            return await asyncio.wait_for(self._capture_in(slot, doc, key), 3 * self.settings.timeout_ms / 1000)
        except RenderError:
            raise
        except (asyncio.TimeoutError, TimeoutError) as exc:
            healthy = False
            raise RenderError(f"no result within {self.settings.timeout_ms} ms", reason="timeout", key=key) from exc
        except PlaywrightError as exc:
            healthy = False
            reason = "timeout" if type(exc).__name__ == "TimeoutError" else "browser_error"
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            raise RenderError(first_line, reason=reason, key=key) from exc
        finally:
            if not healthy:
                slot = await self._replace_slot(slot)
            slots.put_nowait(slot)

    async def _capture_in(self, slot: _Slot, doc: str, key: str) -> bytes:
        await slot.page.set_content(doc, timeout=self.settings.timeout_ms, wait_until="load")
        handle = await slot.page.query_selector("table")
        if handle is None:
            raise RenderError("the HTML has no <table> element", reason="no_table", key=key)
        box = await handle.bounding_box()
        await handle.dispose()
        if box is None or box["width"] < 1 or box["height"] < 1:
            raise RenderError("the first <table> is not displayed (zero size)", reason="empty_table", key=key)
        m = self.settings.margin_px
        x0, y0 = max(0, math.floor(box["x"]) - m), max(0, math.floor(box["y"]) - m)
        x1, y1 = math.ceil(box["x"] + box["width"]) + m, math.ceil(box["y"] + box["height"]) + m
        dsf = self.settings.device_scale_factor
        dw, dh = math.ceil((x1 - x0) * dsf), math.ceil((y1 - y0) * dsf)
        if max(dw, dh) > MAX_CAPTURE_SIDE or dw * dh > MAX_CAPTURE_PIXELS:
            raise RenderError(
                f"the table would capture as {dw}x{dh} device pixels, over the cap of {MAX_CAPTURE_SIDE} a side "
                f"and {MAX_CAPTURE_PIXELS} in all", reason="too_large", key=key)
        shot = await slot.cdp.send(
            "Page.captureScreenshot",
            {
                "format": "png",
                "clip": {"x": x0, "y": y0, "width": x1 - x0, "height": y1 - y0, "scale": 1},
                "captureBeyondViewport": True,
            },
        )
        return base64.b64decode(shot["data"])

    async def _replace_slot(self, slot: _Slot) -> _Slot | None:
        """A page that timed out or errored is closed and replaced by a fresh one; ``None`` marks a dead pool."""
        try:
            await asyncio.wait_for(slot.page.close(), 10)
        except Exception:  # noqa: BLE001
            pass
        try:
            return await asyncio.wait_for(self._new_slot(), 30)
        except Exception:  # noqa: BLE001 - the next render_many restarts the browser
            self._pool_dead = True
            return None
