"""The Playwright renderer: capture, cache, network block, JS off, errors, environment checks."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ocr_ft import render as render_mod
from ocr_ft.render import (
    RenderError,
    RenderSettings,
    Renderer,
    RendererUnavailable,
    check_environment,
    compose_document,
    png_size,
    render_cache_key,
)
from ocr_ft.storage import BlobStore, sha256_file
from ocr_ft.tables import nesting_depth, normalize_html, validate_label

try:
    check_environment()
    _ENV_PROBLEM = None
except RendererUnavailable as exc:  # pragma: no cover - depends on the machine
    _ENV_PROBLEM = str(exc)

needs_browser = pytest.mark.skipif(_ENV_PROBLEM is not None, reason=f"renderer unavailable: {_ENV_PROBLEM}")

TABLE = "<table border='1'><tr><th>과목</th><th>제 57 기</th></tr><tr><td>현금및현금성자산</td><td>1,234,567</td></tr></table>"

NESTED3 = """<!DOCTYPE html><html><head><style>
table{border-collapse:collapse} td,th{border:1px solid #000;padding:3px 6px}</style></head><body>
<div class="title">요약 재무상태표 (단위: 백만원)</div>
<table>
<tr><th>구분</th><th>금액</th></tr>
<tr><td>대출채권
  <table><tr><th>종류</th><th>금액</th></tr>
    <tr><td>기업대출<table><tr><td>대기업</td><td>1,000</td></tr><tr><td>중소기업</td><td>2,000</td></tr></table></td><td>3,000</td></tr>
    <tr><td>가계대출</td><td>4,000</td></tr>
  </table></td><td>7,000</td></tr>
<tr><td>예수부채</td><td>△5,000</td></tr>
</table></body></html>"""


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("render")


@pytest.fixture(scope="module")
def renderer(workdir):
    if _ENV_PROBLEM:
        pytest.skip(_ENV_PROBLEM)
    r = Renderer(BlobStore(workdir / "blobs"), workdir / "cache", pool_size=3)
    yield r
    r.close()


# ----------------------------------------------------------------------------- pure functions


def test_settings_key_is_stable_and_tracks_every_field():
    a = RenderSettings()
    assert a.key() == RenderSettings().key()
    assert len(a.key()) == 16
    variants = [
        RenderSettings(device_scale_factor=2.0), RenderSettings(viewport_width=1024),
        RenderSettings(font_family="serif"), RenderSettings(extra_css="td{color:red}"),
        RenderSettings(timeout_ms=1000), RenderSettings(margin_px=4),
    ]
    keys = {v.key() for v in variants}
    assert a.key() not in keys and len(keys) == len(variants)
    with pytest.raises(ValueError):
        RenderSettings(device_scale_factor=0)


def test_cache_key_covers_html_css_and_settings():
    s = RenderSettings()
    k = render_cache_key(TABLE, None, s)
    assert k == render_cache_key(TABLE, "", s)
    assert k != render_cache_key(TABLE + " ", None, s)
    assert k != render_cache_key(TABLE, "td{color:red}", s)
    assert k != render_cache_key(TABLE, None, RenderSettings(device_scale_factor=2))
    # no ambiguity between what is html and what is css
    assert render_cache_key("ab", "c", s) != render_cache_key("a", "bc", s)


def test_compose_document_orders_css_and_keeps_doctype():
    s = RenderSettings(extra_css="td{color:red}")
    doc = compose_document("<table><tr><td>x</td></tr></table>", "th{color:blue}", s)
    assert doc.startswith("<!DOCTYPE html>")
    base, table, extra = doc.index("caption{display:none;}"), doc.index("<table>"), doc.index("td{color:red}")
    assert base < table < extra < doc.index("th{color:blue}")
    quirky = compose_document("<!doctype html public '-//W3C//DTD HTML 4.01//EN'><table></table>", None, s)
    assert quirky.startswith("<!doctype html public") and quirky.count("doctype") + quirky.count("DOCTYPE") == 1


# ----------------------------------------------------------------------------- environment checks


def test_missing_chromium_gives_clear_error(tmp_path):
    missing = str(tmp_path / "no-chromium")
    with pytest.raises(RendererUnavailable, match="apt-get install chromium fonts-noto-cjk") as info:
        check_environment(missing)
    assert missing in str(info.value)
    with pytest.raises(RendererUnavailable, match="Chromium not found"):
        Renderer(BlobStore(tmp_path / "b"), tmp_path / "c", chromium_path=missing)


@needs_browser
def test_missing_korean_font_gives_clear_error():
    with pytest.raises(RendererUnavailable, match="no Korean font") as info:
        check_environment(font_query=":family=No Such Font Family 1234")
    assert "fonts-noto-cjk" in str(info.value)


@needs_browser
def test_missing_fc_list_gives_clear_error(monkeypatch):
    monkeypatch.setattr(render_mod.shutil, "which", lambda name: None)
    monkeypatch.setattr(render_mod, "_ENV_OK", set())
    with pytest.raises(RendererUnavailable, match="fc-list"):
        check_environment()


# ----------------------------------------------------------------------------- rendering


@needs_browser
@pytest.mark.browser
def test_render_writes_png_into_store(renderer, workdir):
    img = renderer.render(TABLE)
    path = renderer.store.resolve(img.image_path)
    assert not Path(img.image_path).is_absolute() and path.is_file()
    assert sha256_file(path) == img.sha256
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == (img.width, img.height)
    assert 100 < img.width < 800 and 30 < img.height < 200
    assert img.cached is False


@needs_browser
@pytest.mark.browser
def test_nested_three_level_table_round_trips(renderer):
    img = renderer.render(NESTED3)
    label = normalize_html(NESTED3)
    assert nesting_depth(label) == 3
    report = validate_label(label)
    assert report.ok and report.nesting_level == 3
    # the screenshot is the table, not the title line above it: taller than wide-ish table, sane size
    assert 150 < img.width < 1000 and 100 < img.height < 1000
    with Image.open(renderer.store.resolve(img.image_path)) as im:
        gray = np.asarray(im.convert("L"))
    # the capture starts at the table's top border (the title line right above it is not in the image)
    assert gray[0].min() < 128 and gray[:, 0].min() < 128


@needs_browser
@pytest.mark.browser
def test_second_render_is_a_cache_hit_even_in_a_new_renderer(renderer, workdir):
    html = TABLE.replace("1,234,567", "7,654,321")
    first = renderer.render(html)
    rendered_before = renderer.stats.rendered
    again = renderer.render(html)
    assert again.cached and again.sha256 == first.sha256 and again.image_path == first.image_path
    assert renderer.stats.rendered == rendered_before
    # a fresh renderer over the same cache answers from the index without ever starting a browser
    with Renderer(BlobStore(workdir / "blobs"), workdir / "cache") as other:
        hit = other.render(html)
        assert hit.cached and hit.sha256 == first.sha256
        assert other.stats.browser_starts == 0 and other.stats.rendered == 0
    # other settings are another cache entry
    index = list((workdir / "cache").rglob(f"{renderer.cache_key(html)}.json"))
    assert len(index) == 1 and json.loads(index[0].read_text())["sha256"] == first.sha256


@needs_browser
@pytest.mark.browser
def test_lost_blob_is_rendered_again(renderer):
    html = TABLE.replace("과목", "계정과목")
    first = renderer.render(html)
    renderer.store.resolve(first.image_path).unlink()
    again = renderer.render(html)
    assert not again.cached and again.sha256 == first.sha256
    assert renderer.store.resolve(again.image_path).is_file()


@needs_browser
@pytest.mark.browser
def test_render_many_keeps_order_names_failures_and_dedupes(renderer):
    ok1 = TABLE.replace("제 57 기", "제 12 기")
    ok2 = TABLE.replace("제 57 기", "제 13 기")
    items = [ok1, "<p>표가 없습니다</p>", (ok2, "td{font-weight:700}"), ok1,
             "<table style='display:none'><tr><td>x</td></tr></table>"]
    calls = []
    before = renderer.stats.rendered
    out = renderer.render_many(items, progress=lambda d, t: calls.append((d, t)))
    assert [type(x).__name__ for x in out] == ["RenderedImage", "RenderError", "RenderedImage", "RenderedImage",
                                               "RenderError"]
    assert out[1].reason == "no_table" and out[1].index == 1 and "table #1" in str(out[1])
    assert out[4].reason == "empty_table" and out[4].index == 4
    assert out[0].sha256 == out[3].sha256 and out[3].cached  # the duplicate was not rendered twice
    assert out[0].sha256 != out[2].sha256
    assert renderer.stats.rendered - before == 2
    assert calls[-1] == (5, 5) and [d for d, _ in calls] == sorted(d for d, _ in calls)
    with pytest.raises(RenderError, match="no_table"):
        renderer.render("<div>no table</div>")


@needs_browser
@pytest.mark.browser
def test_javascript_is_disabled(renderer):
    plain = "<table border=1><tr><td id='x'>A</td></tr></table>"
    scripted = plain + "<script>document.getElementById('x').textContent = 'A'.repeat(80);</script>"
    a, b = renderer.render(plain), renderer.render(scripted)
    assert (a.width, a.height) == (b.width, b.height)
    assert a.sha256 == b.sha256


class _RecordingHandler(http.server.BaseHTTPRequestHandler):
    requests: list[str] = []

    def do_GET(self):  # noqa: N802 - http.server API
        type(self).requests.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "text/css")
        self.end_headers()
        self.wfile.write(b"td{color:red}")

    def log_message(self, *args):
        pass


@needs_browser
@pytest.mark.browser
def test_every_network_request_is_blocked(renderer):
    _RecordingHandler.requests = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RecordingHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        html = f"""<!DOCTYPE html><html><head>
<link rel="stylesheet" href="{base}/style.css">
<style>@import url("{base}/import.css"); @font-face {{ font-family: X; src: url("{base}/font.woff2"); }}
td {{ font-family: X; background-image: url("{base}/bg.png"); }}</style>
<script src="{base}/script.js"></script>
<link rel="prefetch" href="{base}/prefetch">
<meta http-equiv="refresh" content="0; url={base}/refresh">
</head><body>
<img src="{base}/image.png">
<iframe src="{base}/frame.html"></iframe>
<table><tr><td>외부 자원 <img src="{base}/cell.png"></td><td>1,000</td></tr></table>
<object data="{base}/object.bin"></object>
</body></html>"""
        blocked_before = renderer.stats.blocked_requests
        img = renderer.render(html)
        assert img.width > 10
        assert _RecordingHandler.requests == []
        assert renderer.stats.blocked_requests > blocked_before  # the page did try: the block held
    finally:
        server.shutdown()
        server.server_close()


@needs_browser
@pytest.mark.browser
def test_table_taller_than_the_viewport_is_captured_whole(renderer):
    rows = "".join(f"<tr><td>계정 {i}</td><td>{i * 1000:,}</td></tr>" for i in range(80))
    html = f"<style>td{{border:1px solid #000;padding:4px;height:20px}}table{{border-collapse:collapse}}</style><table>{rows}</table>"
    img = renderer.render(html)
    # 80 rows of at least 20 CSS px at 1.5 device px each: far beyond the 800 px viewport
    assert img.height >= 80 * 20 * 1.5
    with Image.open(renderer.store.resolve(img.image_path)) as im:
        gray = np.asarray(im.convert("L"))
    assert gray[-4:].min() < 128  # the bottom border is in the image: nothing was cut off


@needs_browser
@pytest.mark.browser
def test_meta_refresh_cannot_navigate_the_page_away(renderer):
    html = '<meta http-equiv="refresh" content="0; url=about:blank"><table border=1><tr><td>새로고침</td></tr></table>'
    img = renderer.render(html)
    assert img.width > 20 and img.height > 10
    assert "refresh" not in compose_document(html, None, renderer.settings)


@needs_browser
@pytest.mark.browser
def test_device_scale_factor_scales_the_image(tmp_path, renderer):
    base = renderer.render(TABLE)
    with Renderer(BlobStore(tmp_path / "b"), tmp_path / "c",
                  settings=RenderSettings(device_scale_factor=3.0), pool_size=1) as r3:
        big = r3.render(TABLE)
    ratio_w, ratio_h = big.width / base.width, big.height / base.height
    assert 1.85 < ratio_w < 2.15 and 1.85 < ratio_h < 2.15  # 3.0 / 1.5


@needs_browser
@pytest.mark.browser
def test_timeout_becomes_a_render_error_and_the_pool_recovers(tmp_path):
    big = "<table>" + "".join(f"<tr><td>{i}</td><td>가나다라 {i}</td></tr>" for i in range(20000)) + "</table>"
    with Renderer(BlobStore(tmp_path / "b"), tmp_path / "c", settings=RenderSettings(timeout_ms=50), pool_size=1) as r:
        [err] = r.render_many([big])
        assert isinstance(err, RenderError) and err.reason == "timeout" and err.index == 0
        # the timed-out page was replaced: the single-page pool still answers (whatever the 50 ms allow)
        [after] = r.render_many(["<table><tr><td>x</td></tr></table>"])
        assert after is not None


def test_png_size_reads_header():
    import io

    buf = io.BytesIO()
    Image.new("RGB", (37, 11), "white").save(buf, format="PNG")
    assert png_size(buf.getvalue()) == (37, 11)
    with pytest.raises(ValueError):
        png_size(b"GIF89a" + b"\0" * 30)


def test_closed_renderer_refuses_work(tmp_path):
    if _ENV_PROBLEM:
        pytest.skip(_ENV_PROBLEM)
    r = Renderer(BlobStore(tmp_path / "b"), tmp_path / "c")
    r.close()
    r.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        r.render(TABLE)


def test_chromium_args_are_the_required_ones():
    for arg in ("--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>"):
        assert arg in render_mod.CHROMIUM_ARGS
    # the sandbox is only switched off where Chromium cannot run it (root) or when asked to
    assert ("--no-sandbox" in render_mod.chromium_args()) == (os.geteuid() == 0 or
                                                              os.environ.get("OCR_FT_CHROMIUM_NO_SANDBOX") == "1")
    assert shutil.which("fc-list") is None or render_mod.DEFAULT_CHROMIUM == "/usr/bin/chromium"
