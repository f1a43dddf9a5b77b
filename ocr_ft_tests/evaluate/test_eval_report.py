"""Report files, targets pass/fail, base vs fine-tuned comparison, sanitised self-contained HTML."""

from __future__ import annotations

import json
import re

import pytest

from ocr_ft.evaluate.report import build_report, check_targets, compare
from ocr_ft.evaluate.results import EvalRun
from ocr_ft.evaluate.runner import load_test_set, score

EVIL = '<img src="http://evil.example/x.png" onerror="alert(1)"><script>alert(2)</script><a href="https://x.example">l</a>'


@pytest.fixture
def samples(test_set):
    return load_test_set(test_set["path"])


def _run(samples, name, html_of, latency, data_dir=None) -> EvalRun:
    preds = {s.key: {"html": html_of(s), "latency_s": latency} for s in samples}
    return score(samples, preds, name, workers=1, meta={"data_dir": str(data_dir) if data_dir else None})


def _damaged(s):
    """Ground truth with one cell's text replaced, plus hostile markup inside the first cell."""
    return s.gt_html.replace("<td>", f"<td>{EVIL}", 1).replace("<td>", "<td>틀림", 2)


def test_targets_pass_and_fail_with_values(samples):
    perfect = _run(samples, "ft", lambda s: s.gt_html, 0.2).summary()
    assert [(t["name"], t["passed"]) for t in check_targets(perfect)] == [
        ("teds_nested_2level", True), ("teds_nested_3level", True), ("korean_cer", True), ("latency", True)]
    slow_empty = _run(samples, "base", lambda s: "", 0.9).summary()
    targets = {t["name"]: t for t in check_targets(slow_empty)}
    assert targets["teds_nested_2level"]["value"] == 0.0 and targets["teds_nested_2level"]["passed"] is False
    assert targets["korean_cer"]["value"] == 1.0 and targets["korean_cer"]["passed"] is False
    assert targets["latency"]["value"] == pytest.approx(0.9) and targets["latency"]["passed"] is False
    flat_only = _run([s for s in samples if not s.category.startswith("nested")], "x", lambda s: s.gt_html, 0.1)
    assert {t["name"]: t["passed"] for t in check_targets(flat_only.summary())}["teds_nested_3level"] is None


def test_compare_detects_regression_by_category(samples):
    base = _run(samples, "base", lambda s: s.gt_html, 0.3)
    worse_nested = _run(samples, "ft", lambda s: _damaged(s) if s.category == "nested_3level" else s.gt_html, 0.3)
    result = compare(base, worse_nested)
    assert result["regression"] is True
    assert [r.split(":")[0] for r in result["regressions"]] == ["overall", "nested_3level"]
    assert result["teds_by_category"]["plain"]["delta"] == 0.0
    assert compare(worse_nested, base)["regression"] is False
    assert compare(base, worse_nested, tolerance=1.0)["regression"] is False


def test_build_report_writes_self_contained_sanitised_files(samples, test_set, tmp_path):
    base = _run(samples, "base", _damaged, 0.6, test_set["data_dir"])
    ft = _run(samples, "finetuned", lambda s: s.gt_html if s.category == "plain" else _damaged(s), 0.3,
              test_set["data_dir"])
    out = tmp_path / "report"
    report = build_report({"base": base, "finetuned": ft}, out)
    for name in ("report.json", "report.md", "report.html"):
        assert (out / name).is_file()
    assert json.loads((out / "report.json").read_text()) == json.loads(json.dumps(report))
    assert report["comparison"]["regression"] is False and len(report["worst"]) == 6
    assert {t["name"]: t["passed"] for t in report["runs"]["base"]["targets"]}["latency"] is False

    page = (out / "report.html").read_text(encoding="utf-8")
    assert "<script" not in page and "onerror" not in page and "evil.example" not in page
    resources = re.findall(r"""src\s*=\s*["']?([^"' >]+)""", page, flags=re.IGNORECASE)
    assert resources and all(r.startswith("data:") for r in resources)
    # the only links are to the review pages written beside the report
    links = set(re.findall(r"""href\s*=\s*["']?([^"' >]+)""", page, flags=re.IGNORECASE))
    assert links == {"review.html", "review_base.html", "review_finetuned.html"}
    assert all((out / link).is_file() for link in links)
    assert not re.search(r"url\(|@import|<link|<iframe", page, flags=re.IGNORECASE)
    # 4 plots + one embedded page image per worst sample
    assert page.count("src='data:image/png;base64,") == 4 + 6
    assert "틀림" in page and "PASS" in page and "FAIL" in page

    md = (out / "report.md").read_text(encoding="utf-8")
    assert "| TEDS, 3-level nested |" in md and "finetuned vs base" in md
    assert "## By source" in md and "synthetic_shilu" in md


def test_single_run_report_and_missing_images(samples, tmp_path):
    run = _run(samples, "endpoint", lambda s: s.gt_html, 0.1)  # no data_dir: images cannot be shown
    report = build_report({"endpoint": run}, tmp_path / "r", worst_n=3)
    assert "comparison" not in report and len(report["worst"]) == 3
    page = (tmp_path / "r" / "report.html").read_text(encoding="utf-8")
    assert page.count("image not available") == 3
    assert page.count("src='data:image/png;base64,") == 3  # TEDS, CER and latency plots only


def test_run_roundtrip(samples, tmp_path):
    run = _run(samples, "base", _damaged, 0.25)
    loaded = EvalRun.load(run.save(tmp_path / "eval_run.json"))
    assert loaded.name == "base" and loaded.samples == run.samples and loaded.summary() == run.summary()
    with pytest.raises(ValueError, match="not an evaluation run"):
        (tmp_path / "bad.json").write_text("[]")
        EvalRun.load(tmp_path / "bad.json")


# ------------------------------------------------------------------------- unscored TEDS, throughput
def _scored(key: str, teds: float | None, category: str = "plain"):
    from ocr_ft.evaluate.results import SampleResult

    return SampleResult(key=key, image_path=key, category=category, source="x", gt_html="", pred_html="",
                        latency_s=0.1, teds=teds, teds_s=teds, teds_timed_out=teds is None,
                        teds_error=None if teds is not None else "TEDS took longer than 60 s")


def test_unscored_teds_counts_as_zero_so_a_timeout_cannot_hide_a_regression():
    base = EvalRun("base", [_scored("a", 0.9), _scored("b", 0.9), _scored("c", 0.5)])
    # Better on a and b, but its output for c ran away and TEDS timed out on it.
    ft = EvalRun("finetuned", [_scored("a", 0.92), _scored("b", 0.92), _scored("c", None)])
    overall = ft.summary()["overall"]
    assert overall["teds"] == pytest.approx((0.92 + 0.92 + 0.0) / 3)
    assert overall["teds_s"] == pytest.approx((0.92 + 0.92 + 0.0) / 3)
    assert overall["teds_unscored"] == 1 and base.summary()["overall"]["teds_unscored"] == 0
    result = compare(base, ft)
    assert result["regression"] is True
    assert result["metrics"]["teds_unscored"] == {"base": 0, "finetuned": 1, "delta": 1}
    assert result["teds_by_category"]["plain"]["finetuned_unscored"] == 1
    assert "unscored" in result["regressions"][0] and "fine-tuned 1" in result["regressions"][0]


def test_report_shows_unscored_counts_and_throughput(tmp_path):
    base = EvalRun("base", [_scored("a", 0.9), _scored("b", 0.8)],
                   meta={"prediction_pages": 2, "prediction_wall_s": 4.0, "batch_size": 2})
    ft = EvalRun("finetuned", [_scored("a", 0.95), _scored("b", None)],
                 meta={"prediction_pages": 2, "prediction_wall_s": 1.0, "batch_size": 2})
    report = build_report({"base": base, "finetuned": ft}, tmp_path)
    assert report["runs"]["finetuned"]["summary"]["throughput"]["pages_per_s"] == 2.0
    assert report["runs"]["base"]["summary"]["throughput"]["pages_per_s"] == 0.5
    assert report["comparison"]["metrics"]["throughput_pages_per_s"]["delta"] == 1.5
    assert report["worst"][0]["key"] == "b" and report["worst"][0]["teds_timed_out"] is True
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    head = next(line for line in md.splitlines() if line.startswith("| run |"))
    assert "TEDS unscored" in head
    ft_row = next(line for line in md.splitlines() if line.startswith("| finetuned | overall |"))
    assert ft_row.split(" | ")[5] == "1"  # the TEDS unscored column
    assert "| teds_unscored | 0 | 1 | 1 |" in md
    assert "throughput, finetuned: 2.000 pages/s (2 pages in 1.0 s" in md and "counted as 0" in md
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "TEDS unscored" in page and "2.000 pages/s" in page and "unscored (timed out, counted as 0)" in page


def test_throughput_not_recorded_is_said_not_invented(samples, tmp_path):
    run = _run(samples, "x", lambda s: s.gt_html, 0.1)  # scored directly: no prediction sessions
    assert run.summary()["throughput"]["pages_per_s"] is None
    build_report({"x": run}, tmp_path)
    assert "throughput, x: not recorded" in (tmp_path / "report.md").read_text(encoding="utf-8")
