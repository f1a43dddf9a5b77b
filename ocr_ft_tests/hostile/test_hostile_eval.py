"""Hostile input through evaluation's real entry points (issue 12, points 1, 4, 5, 9): each input is built
here at run time, scored by ``runner.score`` / ``teds_batch`` under a time limit, and the test asserts its
outcome class (a per-sample error or ``too_large`` naming the sample) and that the other samples are scored."""

from __future__ import annotations

import os
import time

import pytest

from ocr_ft.evaluate import metrics, teds_metric
from ocr_ft.evaluate.runner import TestSample, score
from ocr_ft.evaluate.teds_metric import TedsResult, _pool_map, _score_pair

GOOD = "<table><tr><td>자산</td><td>1,000</td></tr><tr><td>부채</td><td>500</td></tr></table>"


def _samples(*gts: str) -> list[TestSample]:
    return [TestSample(f"s{i}", f"img/s{i}.png", gt, "plain", "hostile", i + 1) for i, gt in enumerate(gts)]


def _run(samples, preds: dict[str, str], **kw):
    start = time.perf_counter()
    run = score(samples, {k: {"html": v, "latency_s": 0.1} for k, v in preds.items()}, "hostile", workers=1, **kw)
    return run, time.perf_counter() - start


def test_span_of_thousands_of_digits_is_a_per_sample_outcome():
    huge = "<table><tr><td colspan=" + "9" * 5000 + ">x</td><td>y</td></tr></table>"
    samples = _samples(GOOD, huge, GOOD)
    run, seconds = _run(samples, {"s0": GOOD, "s1": huge, "s2": huge})
    assert seconds < 20
    good = run.samples[0]
    assert good.teds == 1.0 and good.content_f1 == 1.0 and good.metric_error is None
    for s in run.samples[1:]:  # scored (a span clamped by the parser) or a per-sample error: never a crash
        assert s.metric_error is None or s.key in s.metric_error


def test_any_exception_while_scoring_a_sample_names_it_and_spares_the_others(monkeypatch):
    real = metrics.sample_metrics

    def flaky(pred, gt):
        if "폭탄" in gt:
            raise RuntimeError("boom in the metric")
        return real(pred, gt)

    monkeypatch.setattr(metrics, "sample_metrics", flaky)
    bad = GOOD.replace("자산", "폭탄")
    run, _ = _run(_samples(GOOD, bad, GOOD), {"s0": GOOD, "s1": bad, "s2": GOOD})
    bad_result = run.samples[1]
    assert bad_result.metric_error.startswith("s1 (img/s1.png): RuntimeError: boom in the metric")
    assert bad_result.content_f1 == 0.0
    assert [s.content_f1 for s in (run.samples[0], run.samples[2])] == [1.0, 1.0]
    assert run.summary()["overall"]["metric_errors"] == 1


def test_huge_span_grid_is_refused_as_too_large_before_computing():
    rows = "".join('<tr><td rowspan="1000" colspan="1000">x</td></tr>' for _ in range(50))
    bomb = f"<table>{rows}</table>"
    assert len(bomb) < 3000
    run, seconds = _run(_samples(bomb, GOOD), {"s0": bomb, "s1": GOOD})
    assert seconds < 10, f"a 2.4 KB label took {seconds:.1f} s to refuse"
    refused = run.samples[0]
    assert refused.metric_error and refused.metric_error.startswith("s0 (img/s0.png): too_large")
    assert run.samples[1].content_f1 == 1.0 and run.samples[1].metric_error is None
    assert run.summary()["overall"]["too_large"] == 1


def test_grits_product_bound():
    wide = "<table>" + "<tr>" + "<td>a</td>" * 150 + "</tr>" * 1 + "</table>"
    tall = "<table>" + ("<tr>" + "<td>b</td>" * 50 + "</tr>") * 100 + "</table>"  # 5,000 slots
    with pytest.raises(metrics.SampleTooLarge, match="table F1 limit"):
        metrics.check_pair_size(tall, tall)  # 25 M slot pairs
    metrics.check_pair_size(wide, tall)  # 150 x 5,000 = 750,000 slot pairs: allowed


def test_teds_refuses_pairs_over_the_node_limit():
    big = "<table>" + "<tr><td>1</td><td>2</td></tr>" * (teds_metric.MAX_TEDS_NODES // 2) + "</table>"
    start = time.perf_counter()
    result = _score_pair((big, big, "nested", 30.0))
    assert time.perf_counter() - start < 5
    assert result.teds is None and result.error.startswith("too_large")
    assert _score_pair((GOOD, GOOD, "nested", 30.0)).teds == 1.0


def die_on_marker(job):
    """A scorer whose worker dies (as an OOM kill would) on the marked pair."""
    if job[0] == "DIE":
        os._exit(137)
    return TedsResult(float(len(job[0])), None)


@pytest.mark.slow
def test_a_dead_worker_loses_only_its_own_pair():
    jobs = [("a", "", "nested", None), ("DIE", "", "nested", None), ("abc", "", "nested", None), ("ab", "", "nested", None)]
    results = _pool_map(die_on_marker, jobs, workers=2)
    assert [r.teds for r in results] == [1.0, None, 3.0, 2.0]
    assert results[1].error.startswith("worker_died")


def test_failed_predictions_count_in_latency_as_their_timeout():
    samples = _samples(GOOD, GOOD)
    preds = {"s0": {"html": GOOD, "latency_s": 0.2}, "s1": {"html": "", "latency_s": None, "error": "timed out"}}
    run = score(samples, preds, "latency", workers=1, failed_latency_s=120.0)
    latency = run.summary()["overall"]["latency"]
    assert latency["n"] == 2 and latency["max"] == 120.0


def test_cut_off_outputs_are_counted_and_the_budget_covers_the_longest_label():
    from ocr_ft.evaluate.runner import generation_budget

    samples = _samples(GOOD, GOOD + GOOD)
    budget = generation_budget(samples, len, floor=10)
    assert budget["longest_label_tokens"] == len(GOOD + GOOD) and budget["longest_label_key"] == "s1"
    assert budget["max_new_tokens"] > budget["longest_label_tokens"]
    assert generation_budget(samples, len, floor=10**6)["max_new_tokens"] == 10**6
    preds = {"s0": {"html": GOOD, "latency_s": 0.1}, "s1": {"html": GOOD, "latency_s": 0.1, "truncated": True}}
    run = score(samples, preds, "cut", workers=1)
    assert [s.truncated for s in run.samples] == [False, True]
    assert run.summary()["overall"]["truncated"] == 1
