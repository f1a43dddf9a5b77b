"""Synthetic table generation: templates, determinism, labels that match what is drawn, shards, rejects."""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import unicodedata
from collections import Counter

import pytest

from ocr_ft.dataset.records import RawPair, Reject
from ocr_ft.render import RenderError, Renderer, RendererUnavailable, check_environment
from ocr_ft.sources.shilu import SHILU_TEMPLATES, shilu_environment
from ocr_ft.sources.synthetic import (
    SYNTHETIC_TEMPLATES,
    TableGen,
    build_document,
    derive_seed,
    generate_synthetic,
    plan_shard,
    synthetic_environment,
)
from ocr_ft.sources.synthetic.generator import TEMPLATES_DIR, NumberStyle
from ocr_ft.storage import BlobStore
from ocr_ft.tables import nesting_depth, normalize_html, parse_tables, validate_label

try:
    check_environment()
    _ENV_PROBLEM = None
except RendererUnavailable as exc:  # pragma: no cover - depends on the machine
    _ENV_PROBLEM = str(exc)

ALL = [(synthetic_environment, s) for s in SYNTHETIC_TEMPLATES] + [(shilu_environment, s) for s in SHILU_TEMPLATES]


def test_template_registry_matches_the_template_files():
    files = sorted(p.name[: -len(".html.j2")] for p in TEMPLATES_DIR.glob("*.html.j2"))
    assert files == sorted(s.name for s in SYNTHETIC_TEMPLATES)
    assert len(files) >= 16
    levels = Counter(s.nesting_level for s in SYNTHETIC_TEMPLATES)
    assert levels[1] >= 8 and levels[2] >= 3 and levels[3] >= 2
    assert any(s.merged and s.nesting_level == 1 for s in SYNTHETIC_TEMPLATES)
    assert any(not s.merged and s.nesting_level == 1 for s in SYNTHETIC_TEMPLATES)


@pytest.mark.parametrize("env_factory,spec", ALL, ids=[s.name for _, s in ALL])
def test_every_template_builds_a_valid_label_at_its_level(env_factory, spec):
    env = env_factory()
    for seed in range(12):
        doc = build_document(env, spec, derive_seed("t", 1, 0, seed), "synthetic")
        assert doc.ok, doc.problems
        report = validate_label(doc.label)
        assert report.ok and report.grid_consistent, report.problems
        assert report.nesting_level == spec.nesting_level == doc.nesting_level == nesting_depth(doc.label)
        # the label is the normalised form of the one table in the page, and only that table
        assert normalize_html(doc.html) == doc.label == normalize_html(doc.label)
        if spec.merged:
            assert doc.merges["rowspan_cells"] + doc.merges["colspan_cells"] > 0
        assert report.row_count >= 2 and report.text_length > 10


def test_same_seed_gives_byte_identical_html_and_different_seeds_differ():
    env = synthetic_environment()
    for spec in SYNTHETIC_TEMPLATES:
        a = build_document(env, spec, 12345, "synthetic")
        b = build_document(env, spec, 12345, "synthetic")
        c = build_document(env, spec, 12346, "synthetic")
        assert a.html.encode() == b.html.encode() and a.label == b.label
        assert a.html != c.html, spec.name


def test_html_is_identical_across_processes_and_hash_seeds():
    """No set ordering, time or process state leaks into the HTML: another interpreter with another
    PYTHONHASHSEED produces the same bytes."""
    code = (
        "import hashlib,sys\n"
        "from ocr_ft.sources.synthetic import SYNTHETIC_TEMPLATES, build_document, synthetic_environment\n"
        "from ocr_ft.sources.shilu import SHILU_TEMPLATES, shilu_environment\n"
        "h = hashlib.sha256()\n"
        "for s in SYNTHETIC_TEMPLATES: h.update(build_document(synthetic_environment(), s, 77, 'x').html.encode())\n"
        "for s in SHILU_TEMPLATES: h.update(build_document(shilu_environment(), s, 77, 'x').html.encode())\n"
        "print(h.hexdigest())\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "4242"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    h = hashlib.sha256()
    for s in SYNTHETIC_TEMPLATES:
        h.update(build_document(synthetic_environment(), s, 77, "x").html.encode())
    for s in SHILU_TEMPLATES:
        h.update(build_document(shilu_environment(), s, 77, "x").html.encode())
    assert out.stdout.strip() == h.hexdigest()


def test_shard_plan_is_balanced_independent_of_size_and_differs_by_shard():
    plan = plan_shard("synthetic", SYNTHETIC_TEMPLATES, 3, 36, 7)
    assert [i for i, _, _ in plan] == list(range(36))
    counts = Counter(spec.name for _, spec, _ in plan)
    assert set(counts) == {s.name for s in SYNTHETIC_TEMPLATES} and max(counts.values()) - min(counts.values()) <= 1
    assert plan_shard("synthetic", SYNTHETIC_TEMPLATES, 3, 10, 7) == plan[:10]
    other = plan_shard("synthetic", SYNTHETIC_TEMPLATES, 4, 36, 7)
    assert {s for _, _, s in other}.isdisjoint({s for _, _, s in plan})
    assert plan_shard("synthetic", SYNTHETIC_TEMPLATES, 3, 36, 8) != plan
    with pytest.raises(ValueError):
        plan_shard("synthetic", SYNTHETIC_TEMPLATES, -1, 3, 7)


def test_number_formats():
    paren, tri, minus = NumberStyle("paren"), NumberStyle("triangle", zero="0"), NumberStyle("minus", thousands=False)
    assert paren.format(-1234567) == "(1,234,567)" and paren.format(1234) == "1,234" and paren.format(0) == "-"
    assert tri.format(-1234) == "△1,234" and tri.format(0) == "0" and tri.format(-0.5, 2) == "△0.50"
    assert minus.format(-1234) == "-1234" and paren.format(None) == ""


def test_statements_add_up():
    for seed in range(50):
        g = TableGen(random.Random(seed))
        bs = g.balance_sheet(2, bank=seed % 2 == 0)
        totals = [r for r in bs if r.kind == "total"]
        for p in range(2):
            assert totals[0].values[p] == totals[1].values[p] + totals[2].values[p]
        cf = g.cash_flow(2)
        sections = [r for r in cf if r.kind == "section"]
        change = next(r for r in cf if r.kind == "total")
        assert [sum(s.values[p] for s in sections) for p in range(2)] == change.values
        eq = g.equity_changes(["자본금", "이익잉여금", "기타자본"], 3)
        for block in eq["blocks"]:
            opening, *moves, closing = block["rows"]
            assert closing[1] == [sum(c) for c in zip(opening[1], *(m[1] for m in moves))]
            assert all(total == sum(values) for _, values, total in block["rows"])
        assert sum(g.split(1_000, 4)) == 1_000


def test_vocabulary_survives_label_normalisation():
    """Text in the pools is NFKC-stable, so the label spells what the image shows."""
    from ocr_ft.sources.synthetic import vocab

    def strings(obj):
        if isinstance(obj, str):
            yield obj
        elif isinstance(obj, (tuple, list)):
            for x in obj:
                yield from strings(x)

    for name in dir(vocab):
        if name.isupper():
            for s in strings(getattr(vocab, name)):
                assert unicodedata.normalize("NFKC", s) == s, (name, s)


# ----------------------------------------------------------------------------- with a renderer


class _StubRenderer:
    """Fails every third item; 'renders' the others to fixed paths. No browser."""

    def __init__(self):
        self.calls = 0

    def render_many(self, items, progress=None):
        from ocr_ft.render import RenderedImage

        self.calls += 1
        out = []
        for i, html in enumerate(items):
            if i % 3 == 2:
                out.append(RenderError("the HTML has no <table> element", reason="no_table", key="k" * 64, index=i))
            else:
                out.append(RenderedImage(f"blobs/{i:02d}.png", f"{i:064d}", 100 + i, 50, False))
            if progress:
                progress(i + 1, len(items))
        return out


def test_render_failures_become_rejects_not_crashes():
    result = generate_synthetic(shard=2, count=6, seed=11, renderer=_StubRenderer())
    assert len(result.pairs) == 4 and len(result.rejects) == 2
    for r in result.rejects:
        assert isinstance(r, Reject) and r.reason == "render_failed" and "no_table" in r.detail
        assert r.source == "synthetic" and r.original_filename.startswith("synthetic_s002_")
    assert result.stats["pairs"] == 4 and result.stats["rejects"] == 2


@pytest.fixture(scope="module")
def real_renderer(tmp_path_factory):
    if _ENV_PROBLEM:
        pytest.skip(_ENV_PROBLEM)
    root = tmp_path_factory.mktemp("synthetic")
    with Renderer(BlobStore(root / "blobs"), root / "cache") as r:
        yield r


@pytest.mark.browser
def test_generate_synthetic_shard_end_to_end(real_renderer):
    result = generate_synthetic(shard=3, count=5, seed=7, renderer=real_renderer)
    assert not result.rejects
    names = [p.original_filename for p in result.pairs]
    assert names == [f"synthetic_s003_{i:05d}.png" for i in range(5)]
    for p in result.pairs:
        assert isinstance(p, RawPair) and p.source == "synthetic"
        assert real_renderer.store.resolve(p.image_path).is_file()
        meta = p.metadata
        assert {"template", "nesting_level", "seed", "shard", "index", "merges", "image"} <= set(meta)
        assert meta["nesting_level"] == nesting_depth(p.html) and meta["shard"] == 3
        assert validate_label(p.html).ok
        json.dumps(p.to_dict(), ensure_ascii=False)  # manifest-ready
    # regenerating the shard renders nothing and gives the same pairs
    rendered = real_renderer.stats.rendered
    again = generate_synthetic(shard=3, count=5, seed=7, renderer=real_renderer)
    assert real_renderer.stats.rendered == rendered and again.stats["cached"] == 5
    assert [p.to_dict() for p in again.pairs] == [p.to_dict() for p in result.pairs]


@pytest.mark.browser
def test_every_template_renders(real_renderer):
    docs = [build_document(f(), spec, derive_seed("render-all", 1, 0, 0), "synthetic") for f, spec in ALL]
    results = real_renderer.render_many([d.html for d in docs])
    for doc, res in zip(docs, results):
        assert not isinstance(res, RenderError), (doc.template, res)
        assert 150 <= res.width <= 4000 and 60 <= res.height <= 6000, (doc.template, res.width, res.height)
        assert validate_label(doc.label).ok


@pytest.mark.browser
def test_labels_hold_exactly_the_text_drawn_in_the_table():
    """For every template, the characters of the label's cells equal those Chromium lays out inside the
    captured table element (innerText honours display:none, captions hidden by the renderer's CSS, etc.)."""
    if _ENV_PROBLEM:
        pytest.skip(_ENV_PROBLEM)
    from playwright.sync_api import sync_playwright

    from ocr_ft.render import CHROMIUM_ARGS, DEFAULT_CHROMIUM, RenderSettings, compose_document

    def chars(text: str) -> Counter:
        return Counter(ch for ch in unicodedata.normalize("NFKC", text) if not ch.isspace())

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=DEFAULT_CHROMIUM, args=list(CHROMIUM_ARGS))
        try:
            page = browser.new_page(java_script_enabled=False)
            for env_factory, spec in ALL:
                doc = build_document(env_factory(), spec, derive_seed("vis", 3, 0, 0), "synthetic")
                page.set_content(compose_document(doc.html, None, RenderSettings()))
                drawn = page.locator("table").first.inner_text()
                label_text = " ".join(c.text for t in parse_tables(doc.label) for tt in t.iter_tables()
                                      for c in tt.cells())
                assert chars(drawn) == chars(label_text), spec.name
        finally:
            browser.close()
