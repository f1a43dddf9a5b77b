"""Hostile input through the real entry points of the core (tables, per-pair validation, images, the
``existing`` source, the blob store, the renderer). Every input is built at run time; each test bounds time
(and, where the attack is memory, Python-level peak memory with tracemalloc) and asserts the outcome class:
a clear, typed error or a reject that names the input."""

from __future__ import annotations

import io
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ocr_ft.dataset.records import RawPair
from ocr_ft.dataset.validate import ValidationLimits, validate_pair
from ocr_ft.storage import BlobStore, atomic_write_bytes, sha256_bytes
from ocr_ft.tables import (
    LabelTruncated,
    TableTooLarge,
    build_grid,
    normalize_html,
    parse_span,
    parse_tables,
    validate_label,
)


class Bounded:
    """Wall time and Python peak memory of a block."""

    def __enter__(self):
        tracemalloc.start()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0
        self.peak_mb = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()


def _png(data_dir: Path, name: str = "a.png", size=(64, 40)) -> str:
    path = data_dir / name
    Image.new("RGB", size, "white").save(path)
    return str(path)


def _pair(data_dir: Path, html: str, name: str = "hostile.png") -> RawPair:
    return RawPair("existing", name, _png(data_dir, name), html, {})


@pytest.fixture(autouse=True, scope="module")
def _warm(tmp_path_factory):
    """Import what validation loads lazily (imagehash, scipy) outside the timed blocks."""
    d = tmp_path_factory.mktemp("warm")
    assert validate_pair(_pair(d, "<table><tr><td>a</td></tr></table>", "w.png"), str(d)).source == "existing"


# ----------------------------------------------------------------------------- labels


def test_span_of_thousands_of_digits_is_a_reject_not_a_crash(tmp_path):
    digits = "9" * 5000  # int("9"*5000) raises ValueError (int-string limit)
    html = f'<table><tr><td colspan="{digits}">a</td><td rowspan="{digits}">b</td></tr></table>'
    value, problem = parse_span(digits, "colspan")
    assert value == 1 and "5000 digits refused" in problem
    with Bounded() as b:
        rep = validate_label(html)
        res = validate_pair(_pair(tmp_path, html), str(tmp_path))
    assert b.seconds < 2
    assert not rep.grid_consistent and any("digits refused" in p for p in rep.problems)
    assert res.reason == "grid_invalid" and "hostile.png" == res.original_filename and "refused" in res.detail
    assert parse_span("0003", "rowspan") == (3, None)
    assert parse_span("1001", "rowspan")[1] == "rowspan=1001 refused (over 1000)"


def test_span_bomb_is_refused_before_the_grid_is_built(tmp_path):
    row = '<tr>' + '<td rowspan="1000" colspan="1000">x</td>' + '</tr>'
    html = "<table>" + row * 50 + "</table>"  # ~2.4 KB: 50 rows x (up to) 50 x 1000 slots
    assert len(html) < 3000
    (table,) = parse_tables(html)
    with Bounded() as b:
        with pytest.raises(TableTooLarge, match="over the limit"):
            build_grid(table)
        res = validate_pair(_pair(tmp_path, html), str(tmp_path))
        rep = validate_label(html)
    assert b.seconds < 2 and b.peak_mb < 30
    assert res.reason == "table_too_large" and "hostile.png" in res.detail
    assert not rep.ok and any("over the limit" in p for p in rep.problems)
    # the 19 KB variant (once enough to exhaust memory) is refused just as cheaply
    wide = "<table>" + ("<tr>" + '<td rowspan="1000" colspan="1000">x</td>' * 8 + "</tr>") * 50 + "</table>"
    assert 15_000 < len(wide) < 20_000
    with Bounded() as b:
        res = validate_pair(_pair(tmp_path, wide, "wide.png"), str(tmp_path), ValidationLimits(max_seq_len=100_000))
    assert res.reason == "table_too_large" and "wide.png" in res.detail
    assert b.seconds < 2 and b.peak_mb < 30


def test_label_over_the_token_budget_is_refused_before_parsing(tmp_path, monkeypatch):
    import ocr_ft.dataset.validate as v

    def boom(*a, **k):  # parsing must not even start
        raise AssertionError("parsed an over-budget label")

    monkeypatch.setattr(v, "repair_html", boom)
    html = "<table><tr><td>" + "가" * 20_000 + "</td></tr></table>"
    res = validate_pair(_pair(tmp_path, html), str(tmp_path), ValidationLimits(max_seq_len=4096))
    assert res.reason == "over_budget" and "before parsing" in res.detail and "hostile.png" in res.detail


def test_parser_depth_truncation_is_detected(tmp_path):
    deep = "<span>" * 300 + "x" + "</span>" * 300
    html = f"<table><tr><td>{deep}</td><td>after</td></tr></table>"
    with pytest.raises(LabelTruncated, match="element depth") as info:
        parse_tables(html)
    assert info.value.reason == "label_truncated"
    res = validate_pair(_pair(tmp_path, html), str(tmp_path))
    assert res.reason == "label_truncated" and "depth" in res.detail and "hostile.png" in res.detail
    # a moderately deep but legal label keeps every cell, including the one after the chain
    ok = "<span>" * 100 + "x" + "</span>" * 100
    (t,) = parse_tables(f"<table><tr><td>{ok}</td><td>after</td></tr></table>")
    assert [c.text for c in t.cells()] == ["x", "after"]


def test_a_large_text_node_is_not_silently_cut():
    big = "가" * (11 * 2**20 // 3 + 10)  # > 10 MB of UTF-8 in one text node: lxml's default parser stops there
    (t,) = parse_tables(f"<table><tr><td>{big}</td><td>after</td></tr></table>")
    assert [len(c.text) for c in t.cells()] == [len(big), 5]


def test_script_style_noscript_text_never_reaches_labels():
    html = ("<table><tr><td>보이는<script>var k='SCRIPT'</script> 글</td><td><style>td{color:red}</style>값"
            "<noscript>NOSCRIPT</noscript></td></tr></table>")
    out = normalize_html(html)
    assert "SCRIPT" not in out and "color" not in out and "NOSCRIPT" not in out
    assert "보이는 글" in out and "값" in out


def test_any_exception_in_validating_a_pair_is_a_reject_naming_it(tmp_path, monkeypatch):
    import ocr_ft.dataset.validate as v

    def broken(html):
        raise RuntimeError("unexpected parser state")

    monkeypatch.setattr(v, "repair_html", broken)
    good = _pair(tmp_path, "<table><tr><td>a</td></tr></table>", "b.png")
    results = v.validate_all([_pair(tmp_path, "<table><tr><td>x</td></tr></table>"), good], str(tmp_path), workers=1)
    assert [r.reason for r in results] == ["validate_error", "validate_error"]
    assert "hostile.png: RuntimeError: unexpected parser state" in results[0].detail


# ----------------------------------------------------------------------------- images


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header announces ``width`` x ``height`` (8-bit gray) with a few rows of data."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" + b"\xff" * width, 9) if width < 100_000 else b""
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def test_huge_image_refused_from_its_header_when_augmenting(tmp_path):
    from ocr_ft.images import ImageTooLarge, augment_bytes, decode_image, preprocess_bytes
    from ocr_ft.sources.existing import load_existing

    data = _png_header_only(30_000, 30_000)
    assert len(data) < 100_000
    with Bounded() as b:
        with pytest.raises(ImageTooLarge, match="30000x30000"):
            decode_image(data)
        folder = tmp_path / "ex"
        folder.mkdir()
        (folder / "big.png").write_bytes(data)
        (folder / "big.html").write_text("<table><tr><td>a</td></tr></table>")
        res = load_existing(folder, BlobStore(tmp_path / "blobs"), preprocess=preprocess_bytes,
                            augment=augment_bytes, augment_copies=1)
    assert b.seconds < 3 and b.peak_mb < 50
    assert not res.pairs
    assert [(r.original_filename, r.reason) for r in res.rejects] == [("big.png", "image_size")]
    assert "refused before decoding" in res.rejects[0].detail


def test_augmentation_noise_makes_no_float64_copy():
    from ocr_ft.images import AugmentOptions, augment

    img = np.full((1500, 1500, 3), 200, np.uint8)  # 6.4 MB; a float64 noise array alone would be 51 MB
    opts = AugmentOptions(rotate_prob=0, blur_prob=0, noise_prob=1.0, jpeg_prob=0)
    with Bounded() as b:
        out, ops = augment(img, seed=3, options=opts)
    assert "noise_sigma" in ops and out.dtype == np.uint8 and out.shape == img.shape
    assert b.peak_mb < 20
    assert 0 < np.abs(out.astype(np.int16) - 200).mean() < 10  # noise is there, and mild


def test_16bit_png_becomes_a_correct_8bit_image_not_white(tmp_path):
    from ocr_ft.sources.existing import load_existing

    arr = np.full((40, 80), 65535, np.uint16)
    arr[10:30, 10:70] = 0  # a black bar on white
    arr[0:5, :] = 32768  # mid gray
    folder = tmp_path / "ex"
    folder.mkdir()
    Image.fromarray(arr).save(folder / "deep.png")
    assert Image.open(folder / "deep.png").mode.startswith("I")
    (folder / "deep.html").write_text("<table><tr><td>a</td></tr></table>")
    store = BlobStore(tmp_path / "blobs")
    res = load_existing(folder, store)
    (pair,) = res.pairs
    assert pair.metadata.get("converted_from_16bit") is True
    with Image.open(store.resolve(pair.image_path)) as im:
        rgb = np.asarray(im.convert("RGB"))
    assert rgb[20, 40].tolist() == [0, 0, 0] and rgb[35, 5].tolist() == [255, 255, 255]
    assert 120 <= rgb[2, 2, 0] <= 135
    # a 16-bit image that reached validation unconverted (another source) is a reject, never a white sample
    raw = RawPair("existing", "deep.png", str(folder / "deep.png"), "<table><tr><td>a</td></tr></table>", {})
    res = validate_pair(raw, str(tmp_path))
    assert res.reason == "image_16bit" and "deep.png" in res.detail


def test_stray_files_in_existing_each_get_a_reason_and_a_count(tmp_path):
    from ocr_ft.sources.existing import load_existing

    root = tmp_path / "ex"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "images" / "sub").mkdir()
    label = "<table><tr><td>a</td></tr></table>"
    Image.new("RGB", (32, 32), "white").save(root / "images" / "ok.png")
    (root / "labels" / "ok.html").write_text(label)
    Image.new("RGB", (32, 32), "white").save(root / "root.png")  # pair at the root beside images/
    (root / "root.html").write_text(label)
    Image.new("RGB", (32, 32), "white").save(root / "images" / "sub" / "deep.png")  # in a sub-folder
    Image.new("RGB", (32, 32), "white").save(root / "images" / "scan.bmp")  # unsupported format
    res = load_existing(root, BlobStore(tmp_path / "blobs"))
    assert [p.original_filename for p in res.pairs] == ["ok.png"]
    strays = {r.original_filename: r.detail for r in res.rejects if r.reason == "stray_file"}
    assert set(strays) == {"root.png", "root.html", "deep.png", "scan.bmp"}
    assert res.stats["stray_files"] == 4
    assert "root of a folder" in strays["root.png"] and "sub-folder" in strays["deep.png"]
    assert ".bmp" in strays["scan.bmp"]


# ----------------------------------------------------------------------------- storage


def test_damaged_blob_is_rewritten_on_reuse(tmp_path):
    store = BlobStore(tmp_path / "blobs")
    data = b"real image bytes" * 100
    digest, rel = store.put_bytes(data, ".png")
    path = store.resolve(rel)
    path.write_bytes(b"X" + data[1:])  # same size, other bytes
    assert store.put_bytes(data, ".png") == (digest, rel)
    assert sha256_bytes(path.read_bytes()) == digest


def test_temp_files_of_a_killed_writer_are_cleaned_on_the_next_write(tmp_path):
    target = tmp_path / "out" / "report.json"
    target.parent.mkdir()
    # a writer that died mid-write: run one that writes its temp file and is killed before the rename
    code = ("import os,sys,tempfile;from pathlib import Path;from ocr_ft.storage import atomic_path\n"
            "with atomic_path(sys.argv[1]) as tmp:\n Path(tmp).write_bytes(b'half');os._exit(9)\n")
    subprocess.run([sys.executable, "-c", code, str(target)], check=False, timeout=60)
    leftovers = [p for p in target.parent.iterdir() if p.name.endswith(".tmp")]
    assert len(leftovers) == 1 and not target.exists()
    atomic_write_bytes(target, b"whole")
    assert target.read_bytes() == b"whole"
    assert [p.name for p in target.parent.iterdir()] == ["report.json"]


# ----------------------------------------------------------------------------- renderer


def test_chromium_environment_holds_no_secret():
    from ocr_ft.render import chromium_env

    env = chromium_env({"PATH": "/usr/bin", "HOME": "/root", "DART_API_KEY": "s3cret-dart",
                        "FSS_API_KEY": "s3cret-fss", "AWS_SECRET_ACCESS_KEY": "x", "LANG": "C.UTF-8"})
    assert env == {"PATH": "/usr/bin", "HOME": "/root", "LANG": "C.UTF-8"}


def test_meta_refresh_is_stripped_in_the_dom_even_entity_encoded():
    from ocr_ft.render import strip_meta_refresh

    for meta in ('<meta http-equiv="&#114;efresh" content="0;url=http://x/">',
                 "<META HTTP-EQUIV=' REFRESH ' content='0'>", '<meta http-equiv=refresh content=0>'):
        out = strip_meta_refresh(meta + "<table><tr><td>a</td></tr></table>")
        assert "content" not in out.lower() and "<td>a</td>" in out
    plain = "<table><tr><td>a</td></tr></table><meta charset=utf-8>"
    assert strip_meta_refresh(plain) == plain


class _ProbeServer:
    """Counts TCP connections accepted on 127.0.0.1."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def close(self):
        self._stop = True
        self.thread.join(2)
        self.sock.close()


@pytest.fixture(scope="module")
def renderer(tmp_path_factory):
    from ocr_ft.render import Renderer, RendererUnavailable

    base = tmp_path_factory.mktemp("render")
    try:
        r = Renderer(BlobStore(base / "blobs"), base / "cache", pool_size=1)
    except RendererUnavailable as exc:
        pytest.skip(f"renderer unavailable: {exc}")
    yield r
    r.close()


def test_renderer_opens_no_connection_for_hostile_html(renderer, tmp_path):
    probe = _ProbeServer()
    u = f"http://127.0.0.1:{probe.port}"
    try:
        html = (f'<meta http-equiv="&#114;efresh" content="0; url={u}/refresh">'
                f'<link rel="stylesheet" href="{u}/css"><link rel="prefetch" href="{u}/pre">'
                f'<style>@import url("{u}/imp"); td {{background:url({u}/bg)}}</style>'
                f'<table border=1><tr><td>외부<img src="{u}/img"></td><td><iframe src="{u}/frame"></iframe></td></tr>'
                f'<tr><td><object data="{u}/obj"></object></td><td><video src="{u}/v" poster="{u}/p"></video></td></tr>'
                "</table>")
        img = renderer.render(html)
        time.sleep(0.5)
    finally:
        probe.close()
    assert probe.connections == 0
    assert img.width > 10 and img.height > 10


def test_renderer_caps_the_capture_size(renderer):
    from ocr_ft.render import RenderError

    html = '<table><tr><td><div style="height:3000000px;width:80px">tall</div></td></tr></table>'
    with Bounded() as b:
        with pytest.raises(RenderError) as info:
            renderer.render(html)
    assert info.value.reason == "too_large" and "device pixels" in str(info.value)
    assert b.seconds < 20


def test_render_cache_rerenders_a_damaged_blob(renderer):
    html = "<table border=1><tr><td>손상</td><td>1</td></tr></table>"
    first = renderer.render(html)
    path = renderer.store.resolve(first.image_path)
    path.write_bytes(b"garbage")
    again = renderer.render(html)
    assert not again.cached and sha256_bytes(path.read_bytes()) == first.sha256


def test_chromium_processes_do_not_inherit_api_keys(tmp_path, monkeypatch):
    from ocr_ft.render import Renderer, RendererUnavailable

    secret = f"probe-secret-{os.getpid()}-{time.time_ns()}"
    monkeypatch.setenv("DART_API_KEY", secret)
    monkeypatch.setenv("FSS_API_KEY", secret)
    try:
        r = Renderer(BlobStore(tmp_path / "b"), tmp_path / "c", pool_size=1)
    except RendererUnavailable as exc:
        pytest.skip(f"renderer unavailable: {exc}")
    try:
        r.render("<table border=1><tr><td>환경</td></tr></table>")
        browsers, leaked = 0, []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cmdline = (proc / "cmdline").read_bytes()
                environ = (proc / "environ").read_bytes()
            except OSError:
                continue
            if b"chrom" in cmdline.split(b"\0")[0]:
                browsers += 1
                if secret.encode() in environ:
                    leaked.append(proc.name)
        assert browsers > 0 and leaked == []
    finally:
        r.close()
