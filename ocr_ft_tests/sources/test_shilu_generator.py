"""synthetic_shilu: 16 bank templates, all nested 2/3 levels with merged cells, and metadata.json."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from ocr_ft.render import RenderError, RenderedImage, Renderer, RendererUnavailable, check_environment
from ocr_ft.sources.shilu import SHILU_TEMPLATES, TEMPLATES_DIR, generate_shilu, shilu_environment
from ocr_ft.sources.synthetic import build_document, derive_seed, plan_shard
from ocr_ft.storage import BlobStore, sha256_text
from ocr_ft.tables import nesting_depth, validate_label

try:
    check_environment()
    _ENV_PROBLEM = None
except RendererUnavailable as exc:  # pragma: no cover - depends on the machine
    _ENV_PROBLEM = str(exc)


def test_sixteen_bank_templates_nested_and_merged():
    files = sorted(p.name[: -len(".html.j2")] for p in TEMPLATES_DIR.glob("*.html.j2"))
    assert files == sorted(s.name for s in SHILU_TEMPLATES) and len(files) == 16
    assert all(s.merged and s.nesting_level in (2, 3) for s in SHILU_TEMPLATES)
    levels = Counter(s.nesting_level for s in SHILU_TEMPLATES)
    assert levels[2] >= 5 and levels[3] >= 5
    env = shilu_environment()
    for spec in SHILU_TEMPLATES:
        for i in range(6):
            doc = build_document(env, spec, derive_seed("synthetic_shilu", 5, 1, i), "synthetic_shilu")
            assert doc.ok, (spec.name, doc.problems)
            assert doc.merges["rowspan_cells"] + doc.merges["colspan_cells"] > 0
            assert nesting_depth(doc.label) == spec.nesting_level


def test_bank_vocabulary_is_used():
    env = shilu_environment()
    text = "".join(build_document(env, s, 99, "synthetic_shilu").html for s in SHILU_TEMPLATES)
    for word in ("은행", "BNK", "예수부채", "대출채권", "자본", "이자"):
        assert word in text


class _StubRenderer:
    def render_many(self, items, progress=None):
        out = []
        for i, _ in enumerate(items):
            if i == 1:
                out.append(RenderError("no result within 15000 ms", reason="timeout", key="0" * 64, index=i))
            else:
                out.append(RenderedImage(f"blobs/{i}.png", f"{i:064d}", 640, 480, False))
        return out


def test_metadata_json_describes_every_accepted_sample(tmp_path):
    out_dir = tmp_path / "shard_000"
    result = generate_shilu(shard=0, count=4, seed=3, renderer=_StubRenderer(), out_dir=out_dir)
    meta = json.loads((out_dir / "metadata.json").read_text(encoding="utf-8"))
    assert result.stats["metadata_path"] == str(out_dir / "metadata.json")
    assert not list(out_dir.glob(".*.tmp"))  # written atomically, no temp file left
    assert meta["source"] == "synthetic_shilu" and meta["shard"] == 0 and meta["seed"] == 3 and meta["count"] == 4
    assert len(meta["samples"]) == 3 and len(meta["rejects"]) == 1
    assert meta["rejects"][0] == {"filename": "synthetic_shilu_s000_00001.png", "reason": "render_failed",
                                  "detail": "timeout: no result within 15000 ms"}
    plan = {f"synthetic_shilu_s000_{i:05d}.png": (spec.name, seed)
            for i, spec, seed in plan_shard("synthetic_shilu", SHILU_TEMPLATES, 0, 4, 3)}
    pairs = {p.original_filename: p for p in result.pairs}
    for sample in meta["samples"]:
        assert (sample["template"], sample["seed"]) == plan[sample["filename"]]
        pair = pairs[sample["filename"]]
        assert sample["nesting_level"] == pair.metadata["nesting_level"] == nesting_depth(pair.html)
        assert sample["merges"] == pair.metadata["merges"]
        assert sample["label_sha256"] == sha256_text(pair.html)
        assert sample["image"] == {"sha256": pair.metadata["image"]["sha256"], "width": 640, "height": 480}


def test_without_out_dir_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = generate_shilu(shard=1, count=2, seed=3, renderer=_StubRenderer())
    assert "metadata_path" not in result.stats and not list(tmp_path.iterdir())


def test_unknown_template_is_refused():
    with pytest.raises(ValueError, match="unknown templates"):
        generate_shilu(0, 1, 0, _StubRenderer(), templates=["no_such_template"])


@pytest.mark.browser
def test_shilu_shard_renders_and_regenerates_alone(tmp_path):
    if _ENV_PROBLEM:
        pytest.skip(_ENV_PROBLEM)
    with Renderer(BlobStore(tmp_path / "blobs"), tmp_path / "cache") as r:
        three = generate_shilu(shard=2, count=3, seed=9, renderer=r, out_dir=tmp_path / "s2")
        assert len(three.pairs) == 3 and not three.rejects
        for p in three.pairs:
            assert p.source == "synthetic_shilu" and p.original_filename.startswith("synthetic_shilu_s002_")
            assert validate_label(p.html).ok and p.metadata["nesting_level"] in (2, 3)
            img = p.metadata["image"]
            assert 150 < img["width"] < 3000 and 100 < img["height"] < 5000
        # shard 2 alone, larger: its first three samples are the same, from the cache
        five = generate_shilu(shard=2, count=5, seed=9, renderer=r, out_dir=tmp_path / "s2")
        assert [p.to_dict() for p in five.pairs[:3]] == [p.to_dict() for p in three.pairs]
        assert five.stats["cached"] == 3
        meta = json.loads((tmp_path / "s2" / "metadata.json").read_text(encoding="utf-8"))
        assert len(meta["samples"]) == 5
