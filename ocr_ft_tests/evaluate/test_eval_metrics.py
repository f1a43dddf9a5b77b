"""Text, grid, nesting and latency metrics; table extraction from raw model output."""

from __future__ import annotations

import pytest

from ocr_ft.evaluate.metrics import (
    char_errors, error_rate, latency_stats, sample_metrics, table_f1, table_text, word_errors,
)
from ocr_ft.evaluate.predictors import extract_table_html

NESTED = ("<table><tr><td rowspan='2'>자산</td><td>유동<table><tr><td>현금</td><td>100</td></tr></table></td></tr>"
          "<tr><td>비유동</td></tr><tr><td>부채</td><td>50</td></tr></table>")


def test_reading_order_is_row_major_with_nested_text_in_place():
    assert table_text(NESTED) == "자산 유동 현금 100 비유동 부채 50"
    assert table_text("") == "" and table_text("<p>no table</p>") == ""


def test_korean_cer_counts_character_edits():
    assert char_errors("가나다", "가나다") == (0, 3)
    assert char_errors("가나다", "가다") == (1, 3)  # one deletion
    assert char_errors("가나다", "가나다라") == (1, 3)  # one insertion
    assert char_errors("가나", "") == (2, 2)
    assert char_errors("", "가") == (1, 0)
    assert error_rate(1, 0) == 1.0 and error_rate(0, 0) == 0.0 and error_rate(1, 4) == 0.25


def test_wer_counts_word_edits():
    assert word_errors("자산 100 부채", "자산 200 부채") == (1, 3)
    assert word_errors("자산 100", "자산") == (1, 2)


def test_sample_metrics_of_perfect_and_empty_predictions():
    perfect = sample_metrics(NESTED, NESTED)
    assert perfect["cer"] == 0.0 and perfect["wer"] == 0.0
    assert perfect["content_f1"] == 1.0 and perfect["topology_f1"] == 1.0
    assert perfect["depth_gt"] == perfect["depth_pred"] == 2
    empty = sample_metrics("", NESTED)
    assert empty["cer"] == 1.0 and empty["content_f1"] == 0.0 and empty["topology_f1"] == 0.0
    assert empty["depth_pred"] == 0
    broken = sample_metrics("<table><tr><td>자산", NESTED)  # unclosed: parsed as far as it goes
    assert broken["depth_pred"] == 1 and 0 < broken["content_recall"] < 1


def test_table_f1_hand_computed_span_error():
    gt = "<table><tr><td rowspan='2'>가</td><td>1</td></tr><tr><td>2</td></tr></table>"
    pred = "<table><tr><td>가</td><td>1</td></tr><tr><td></td><td>2</td></tr></table>"
    f1 = table_f1(pred, gt)
    # 4 slots each side.  Content: the lower-left slot is "가" in the truth, "" predicted -> 3 of 4.
    assert f1["content"].precision == f1["content"].recall == f1["content"].f1 == pytest.approx(0.75)
    # Topology: the two left slots have IoU 1/2 with the 2x1 cell -> (2 + 0.5 + 0.5) / 4.
    assert f1["topology"].f1 == pytest.approx(0.75)


def test_table_f1_aligns_rows_so_one_missing_row_costs_only_that_row():
    rows = [f"<tr><td>항목{i}</td><td>{i * 100}</td></tr>" for i in range(5)]
    gt = "<table>" + "".join(rows) + "</table>"
    pred = "<table>" + "".join(rows[:2] + rows[3:]) + "</table>"
    f1 = table_f1(pred, gt)
    assert f1["content"].precision == pytest.approx(1.0)
    assert f1["content"].recall == pytest.approx(0.8)
    assert f1["topology"].recall == pytest.approx(0.8)


def test_nesting_depth_in_sample_metrics():
    three = "<table><tr><td><table><tr><td><table><tr><td>x</td></tr></table></td></tr></table></td></tr></table>"
    m = sample_metrics(NESTED, three)
    assert (m["depth_gt"], m["depth_pred"]) == (3, 2)


def test_latency_stats():
    stats = latency_stats([0.1, 0.2, 0.3, 0.4, 1.0])
    assert stats["n"] == 5 and stats["mean"] == pytest.approx(0.4) and stats["p50"] == pytest.approx(0.3)
    assert stats["p95"] == pytest.approx(0.88) and stats["max"] == 1.0
    assert latency_stats([])["mean"] is None


@pytest.mark.parametrize("raw, expected", [
    ("```html\n<table><tr><td>a</td></tr></table>\n```", "<table><tr><td>a</td></tr></table>"),
    ("Here it is: <table><tr><td>a<table><tr><td>b</td></tr></table></td></tr></table> done",
     "<table><tr><td>a<table><tr><td>b</td></tr></table></td></tr></table>"),
    ("<table><tr><td>a</td></tr></table>\n<table><tr><td>b</td></tr></table>",
     "<table><tr><td>a</td></tr></table><table><tr><td>b</td></tr></table>"),
    ("<table><tr><td>cut off", "<table><tr><td>cut off"),
    ("```\n<tr><td>a</td></tr>\n```", "<table><tr><td>a</td></tr></table>"),
    ("I cannot read this image.", ""),
    ("", ""),
])
def test_extract_table_html(raw, expected):
    assert extract_table_html(raw) == expected
