"""The HTML report in a real browser (headless Chromium): the worst-sample columns never overlap and the
page image scales to its column."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ocr_ft.evaluate.report import build_report
from ocr_ft.evaluate.runner import TestSample, score
from ocr_ft_tests.factories import make_png

pytestmark = [pytest.mark.browser, pytest.mark.slow]
CHROMIUM = "/usr/bin/chromium"


def _wide_table(n_cols: int, text: str) -> str:
    row = "".join(f"<td>{text}{i}</td>" for i in range(n_cols))
    return f"<table><tr>{row}</tr><tr>{row}</tr></table>"


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium")
def test_report_columns_do_not_overlap_and_images_fit(tmp_path):
    from playwright.sync_api import sync_playwright

    data = tmp_path / "data"
    (data / "img").mkdir(parents=True)
    samples = []
    for i in range(3):
        (data / "img" / f"{i}.png").write_bytes(make_png(i, width=1800, height=500))
        samples.append(TestSample(f"k{i}", f"img/{i}.png", _wide_table(8, "자산총계"), "plain", "synthetic", i + 1))
    runs = {}
    for name, text in (("base", "부채"), ("finetuned", "자산총계")):
        preds = {s.key: {"html": _wide_table(12 if name == "base" else 8, text), "latency_s": 0.1} for s in samples}
        runs[name] = score(samples, preds, name, workers=1)
    out = tmp_path / "report"
    build_report(runs, out, data)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto((out / "report.html").as_uri())
            blocks = page.query_selector_all(".sample")
            assert len(blocks) == 3
            for block in blocks:
                boxes = [c.bounding_box() for c in block.query_selector_all(":scope > div")]
                assert len(boxes) == 4  # image, truth, base, fine-tune
                for left, right in zip(boxes, boxes[1:]):
                    assert left["x"] + left["width"] <= right["x"] + 0.5, f"columns overlap: {left} {right}"
                column = boxes[0]
                img = block.query_selector("img").bounding_box()
                assert img["width"] <= column["width"] + 0.5
                assert img["x"] + img["width"] <= boxes[1]["x"]
            page.screenshot(path=str(Path(os.environ.get("OCR_FT_SCREENSHOT_DIR", tmp_path)) / "report.png"),
                            full_page=True)
        finally:
            browser.close()


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium")
def test_review_page_lists_every_sample_filters_and_marks_differences(tmp_path):
    from playwright.sync_api import sync_playwright

    data = tmp_path / "data"
    (data / "img").mkdir(parents=True)
    samples = []
    for i, (cat, src) in enumerate([("plain", "dart"), ("merged", "dart"), ("plain", "wiki"), ("nested_2level", "fss")]):
        (data / "img" / f"{i}.png").write_bytes(make_png(i, width=1200, height=300))
        samples.append(TestSample(f"k{i}", f"img/{i}.png", _wide_table(4, "자산"), cat, src, i + 1))
    runs = {name: score(samples, {s.key: {"html": _wide_table(4, text), "latency_s": 0.1} for s in samples}, name,
                        workers=1) for name, text in (("base", "부채"), ("finetuned", "자산"))}
    out = tmp_path / "report"
    report = build_report(runs, out, data, worst_n=1)
    review = Path(report["review_html"])
    assert review.is_file() and "http://" not in review.read_text(encoding="utf-8").replace("http-equiv", "")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(review.as_uri())
            assert len(page.query_selector_all("section.item")) == 4
            assert page.inner_text("#count") == "4 shown"
            page.select_option("#cat", "plain")
            assert page.inner_text("#count") == "2 shown"
            page.select_option("#src", "wiki")
            visible = [el for el in page.query_selector_all("section.item") if el.is_visible()]
            assert [el.get_attribute("data-source") for el in visible] == ["wiki"]
            page.select_option("#cat", "")
            page.select_option("#src", "")
            first = page.query_selector_all("section.item")[0]
            cols = first.query_selector_all(".sample > div")
            assert len(cols) == 4  # image, truth, base, fine-tune
            base_cells, ft_cells = (c.query_selector_all("td") for c in cols[2:])
            assert all(td.get_attribute("class") == "diff" for td in base_cells)
            assert not any(td.get_attribute("class") for td in ft_cells)
            boxes = [c.bounding_box() for c in cols]
            for left, right in zip(boxes, boxes[1:]):
                assert left["x"] + left["width"] <= right["x"] + 0.5
            page.screenshot(path=str(Path(os.environ.get("OCR_FT_SCREENSHOT_DIR", tmp_path)) / "review.png"),
                            full_page=True)
        finally:
            browser.close()


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium")
def test_comparison_table_of_three_models_fits_marks_the_best_and_links_each_review(tmp_path):
    from playwright.sync_api import sync_playwright

    data = tmp_path / "data"
    (data / "img").mkdir(parents=True)
    samples = []
    for i, cat in enumerate(["plain", "merged", "nested_2level", "nested_3level"]):
        (data / "img" / f"{i}.png").write_bytes(make_png(i, width=1200, height=300))
        samples.append(TestSample(f"k{i}", f"img/{i}.png", _wide_table(6, "자산총계"), cat, "synthetic", i + 1))
    runs = {}
    for name, text, latency in (("glm-ocr-base", "부채", 0.4), ("glm-ocr-ft", "자산총계", 0.5),
                                ("paddleocr-vl-base", "자산", 0.2)):
        preds = {s.key: {"html": _wide_table(6, text), "latency_s": latency} for s in samples}
        runs[name] = score(samples, preds, name, workers=1)
    failed = {"qwen-vl-ft": "BaseModelError: base model /models/Qwen2.5-VL-3B: no config.json"}
    out = tmp_path / "report"
    report = build_report(runs, out, data, worst_n=2, failed=failed, primary="glm-ocr-ft", baseline="glm-ocr-base")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto((out / "report.html").as_uri())
            table = page.query_selector("table.comparison")
            box = table.bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= 1280, f"comparison table wider than the page: {box}"
            # one row per model and group: overall + 4 categories, 3 models + the failed one
            assert len(table.query_selector_all("tr[data-group]")) == 5 * 4
            best = table.query_selector_all("td.best")
            assert best and all(td.evaluate("e => getComputedStyle(e).fontWeight") == "700" for td in best)
            ft_overall = table.query_selector("tr[data-group='overall'][data-model='glm-ocr-ft']")
            assert "best" in (ft_overall.query_selector_all("td")[2].get_attribute("class") or "")  # its TEDS
            failed_row = table.query_selector("tr[data-group='overall'][data-model='qwen-vl-ft']")
            assert "no config.json" in failed_row.inner_text()
            for block in page.query_selector_all(".sample"):  # 5 columns: image, truth, 3 models; none overlap
                boxes = [c.bounding_box() for c in block.query_selector_all(":scope > div")]
                assert len(boxes) == 5
                for left, right in zip(boxes, boxes[1:]):
                    assert left["x"] + left["width"] <= right["x"] + 0.5
            page.screenshot(path=str(Path(os.environ.get("OCR_FT_SCREENSHOT_DIR", tmp_path)) / "comparison.png"),
                            full_page=True)
            page.click("a[href='review_paddleocr-vl-base.html']")
            page.wait_for_load_state()
            assert page.url.endswith("review_paddleocr-vl-base.html")
            assert len(page.query_selector_all("section.item")) == 4
            assert len(page.query_selector_all("section.item")[0].query_selector_all(".sample > div")) == 3
        finally:
            browser.close()
    assert set(report["review_pages"]) == set(runs)
