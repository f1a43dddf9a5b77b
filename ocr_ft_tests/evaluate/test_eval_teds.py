"""TEDS: hand-made cases in both modes, and PubTabNet's published scores on its 20 sample pairs."""

from __future__ import annotations

import copy
import json
import math
import random
from pathlib import Path

import pytest
from apted import APTED, Config

from ocr_ft.evaluate.reference import levenshtein, reference_teds
from ocr_ft.evaluate.ted import TedNode, tree_edit_distances
from ocr_ft.evaluate.teds_metric import teds, teds_batch, teds_scores

PUBTABNET = Path(__file__).resolve().parents[2] / ".." / "shared" / "external" / "pubtabnet"

T = "<table>{}</table>"
ROW = "<tr>{}</tr>"


def table(*rows: str) -> str:
    return T.format("".join(ROW.format(r) for r in rows))


# ---------------------------------------------------------------------------------------- hand-made
@pytest.mark.parametrize("mode", ["nested", "pubtabnet"])
def test_empty_tables(mode):
    """Two tables with nothing below them are identical (1; the published metric divides by zero there);
    an empty table against a non-empty one scores 0, either way round."""
    full = table("<td>자산</td><td>1,000</td>")
    assert teds_scores("<table></table>", "<table></table>", mode) == (1.0, 1.0)
    assert teds_scores("<html><body><table></table></body></html>", "<table> </table>", mode) == (1.0, 1.0)
    assert teds_scores("<table></table>", full, mode) == (0.0, 0.0)
    assert teds_scores(full, "<table></table>", mode) == (0.0, 0.0)
    assert teds_batch([("<table></table>", "<table></table>")], mode, workers=1)[0].error is None


@pytest.mark.parametrize("mode", ["nested", "pubtabnet"])
def test_identical_tables_score_one(mode):
    gt = table("<td>자산</td><td rowspan='2'>1,000</td>", "<td>부채</td>")
    assert teds_scores(gt, gt, mode) == (1.0, 1.0)


@pytest.mark.parametrize("mode", ["nested", "pubtabnet"])
@pytest.mark.parametrize("pred", ["", "   ", "no table here", None])
def test_empty_or_tableless_prediction_scores_zero(mode, pred):
    assert teds_scores(pred, table("<td>가</td>"), mode) == (0.0, 0.0)


def test_one_character_off_hand_computed():
    gt, pred = table("<td>가나</td><td>다</td>"), table("<td>가라</td><td>다</td>")
    # nested: 4 nodes (table, tr, td, td); rename cost of the first cell 1/2.
    assert teds(pred, gt) == pytest.approx(1 - 0.5 / 4, abs=1e-12)
    # pubtabnet: 3 elements below <table> (tr, td, td).
    assert teds(pred, gt, "pubtabnet") == pytest.approx(1 - 0.5 / 3, abs=1e-12)
    assert teds(pred, gt, structure_only=True) == 1.0


def test_missing_row_costs_its_nodes():
    gt = table("<td>a</td><td>b</td>", "<td>c</td><td>d</td>")
    pred = table("<td>a</td><td>b</td>")
    assert teds(pred, gt) == pytest.approx(1 - 3 / 7, abs=1e-12)


def test_th_versus_td_costs_in_pubtabnet_only():
    gt = "<table><thead><tr><td>구분</td><td>금액</td></tr></thead><tbody><tr><td>a</td><td>1</td></tr></tbody></table>"
    pred = gt.replace("<td>구분</td><td>금액</td>", "<th>구분</th><th>금액</th>")
    assert teds(pred, gt) == 1.0
    assert teds(pred, gt, structure_only=True) == 1.0
    assert teds(pred, gt, "pubtabnet") < 1.0
    assert teds(pred, gt, "pubtabnet", structure_only=True) < 1.0


def test_thead_tbody_and_attributes_ignored_in_nested_only():
    gt = table("<td>a</td><td>b</td>")
    pred = "<table class='x' border='1'><tbody><tr><td style='color:red'>a</td><td>b</td></tr></tbody></table>"
    assert teds(pred, gt) == 1.0
    assert teds(pred, gt, "pubtabnet") < 1.0


def test_nested_normalises_text_nfkc_and_whitespace():
    gt = table("<td>1,000 원</td>")
    pred = table("<td>  １,０００\u3000원 </td>")
    assert teds(pred, gt) == 1.0
    assert teds(pred, gt, "pubtabnet") < 1.0


INNER = table("<td>현금</td><td>100</td>", "<td>예금</td><td>200</td>")


def test_moved_inner_table_penalised_in_nested_not_in_pubtabnet_structure():
    gt = table(f"<td>자산{INNER}</td><td>부채</td>")
    pred = table(f"<td>자산</td><td>부채{INNER}</td>")
    nested_full, nested_struct = teds_scores(pred, gt, "nested")
    ptn_full, ptn_struct = teds_scores(pred, gt, "pubtabnet")
    # PubTabNet reads an inner table as cell text: the structure looks perfect and the full score stays high.
    assert ptn_struct == 1.0
    # nested (11 nodes): insert an empty-structure cell before, delete one after -> 2; with content the
    # shifted cells' texts (a cell's content includes its inner table's text) cost more on top.
    assert nested_struct == pytest.approx(1 - 2 / 11, abs=1e-12)
    assert nested_full < nested_struct
    assert nested_full < ptn_full


def test_flattening_a_nested_table_costs_less_than_deleting_it_with_its_text():
    gt = table(f"<td>자산{INNER}</td><td>부채</td>")
    flattened = table("<td>자산 현금 100 예금 200</td><td>부채</td>")
    deleted = table("<td>자산</td><td>부채</td>")
    assert teds(flattened, gt) > teds(deleted, gt)
    assert teds(flattened, gt, structure_only=True) == teds(deleted, gt, structure_only=True)
    # the same inner table with its own text wrong still beats losing it
    assert teds(table(f"<td>자산{INNER.replace('현금', '헌금')}</td><td>부채</td>"), gt) > teds(flattened, gt)


def test_missing_nesting_level_costs_more_in_nested():
    gt = table(f"<td>자산{INNER}</td><td>부채</td>")
    flattened = table("<td>자산 현금 100 예금 200</td><td>부채</td>")
    assert teds(flattened, gt, "pubtabnet", structure_only=True) == 1.0
    assert teds(flattened, gt, structure_only=True) == pytest.approx(1 - 7 / 11, abs=1e-12)


def test_extra_rows_hand_computed():
    gt = table("<td>a</td>")
    pred = table(*["<td>x</td><td>y</td><td>z</td>"] * 3)
    # keep table/tr, rename td a->x (1), insert 2 rows and 8 cells (10): distance 11.
    assert teds(pred, gt) == pytest.approx(1 - 11 / 13, abs=1e-12)
    assert teds(pred, gt, "pubtabnet") == pytest.approx(1 - 11 / 12, abs=1e-12)


def test_pubtabnet_can_go_negative_nested_is_clipped():
    gt = "<table><tr></tr><tr></tr><tr></tr></table>"
    pred = "<table><thead><tr><th><b>x</b></th></tr></thead></table>"
    # 4 elements below the predicted table; best edit: keep one tr, delete thead/th/b, insert 2 tr -> 5.
    assert teds(pred, gt, "pubtabnet") == pytest.approx(1 - 5 / 4, abs=1e-12)
    chain = table("<td>" + table("<td>" + table("<td>x</td>") + "</td>") + "</td>")
    star = table("<td>a</td><td>b</td><td>c</td><td>d</td>")
    assert teds(chain, star) == 0.0  # distance 10 over 9 nodes: 1 - 10/9 clipped to 0


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="unknown TEDS mode"):
        teds("<table></table>", "<table></table>", mode="paddle")


# ------------------------------------------------------------------------------------------- batch
def _big(rows: int, cols: int, tweak: bool = False) -> str:
    cells = ["".join(f"<td>{r * cols + c:,}{'원' if tweak and (r + c) % 3 == 0 else ''}</td>" for c in range(cols))
             for r in range(rows)]
    return table(*cells)


def test_batch_in_process_marks_timeouts_instead_of_hanging():
    # The limit is wall-clock time on a shared machine: it must sit far above the small pair's time (well
    # under 1 ms; a stall of the whole process must not push it over) and far below the big pair's (about
    # 5 s of CPU for 1,000 cells), so that neither load nor a fast machine flips the outcome.  The test
    # itself waits only for the limit.
    pairs = [(table("<td>a</td>"), table("<td>a</td>")), (_big(50, 20, tweak=True), _big(51, 20))]
    results = teds_batch(pairs, "nested", workers=1, timeout_s=0.5)
    assert results[0].teds == 1.0 and not results[0].timed_out
    assert results[1].timed_out and results[1].teds is None and "longer than" in results[1].error
    assert 0.5 <= results[1].seconds < 5


def test_a_timeout_lost_in_a_gc_callback_is_raised_again(monkeypatch):
    """Python discards an exception raised in a weakref callback or ``__del__``; when the garbage collector
    runs one just as the alarm fires, the timeout is lost.  The alarm repeats until disarmed."""
    import time

    import ocr_ft.evaluate.teds_metric as tm

    def scoring(pred, gt, mode):
        end = time.monotonic() + 3
        try:
            while time.monotonic() < end:
                time.sleep(0.005)
        except tm._Timeout:
            pass  # lost, as in a weakref callback
        while time.monotonic() < end:  # the computation goes on
            time.sleep(0.005)
        return 1.0, 1.0

    monkeypatch.setattr(tm, "teds_scores", scoring)
    result = teds_batch([("<table></table>", "<table></table>")], "nested", workers=1, timeout_s=0.1)[0]
    assert result.timed_out and result.teds is None and result.seconds < 1.5


def test_a_late_alarm_does_not_escape_and_an_outer_timer_is_given_back(monkeypatch):
    """An alarm handled after the score is computed (pending as the timer is disarmed) is ignored instead of
    escaping from the cleanup and sinking the batch; a timer that was running before is re-armed."""
    import signal

    import ocr_ft.evaluate.teds_metric as tm

    real = signal.setitimer
    late = []

    def setitimer(which, seconds, *rest):
        if seconds == 0 and not late:  # disarming: the alarm that fired just before is handled now
            late.append(True)
            signal.getsignal(signal.SIGALRM)(signal.SIGALRM, None)
        return real(which, seconds, *rest)

    outer_calls = []
    outer = signal.signal(signal.SIGALRM, lambda *a: outer_calls.append(a))
    real(signal.ITIMER_REAL, 100.0)
    try:
        monkeypatch.setattr(tm.signal, "setitimer", setitimer)
        results = teds_batch([(table("<td>a</td>"), table("<td>a</td>"))] * 2, "nested", workers=1, timeout_s=30)
        left = signal.getitimer(signal.ITIMER_REAL)[0]
        handler = signal.getsignal(signal.SIGALRM)
    finally:
        real(signal.ITIMER_REAL, 0)
        restored = signal.signal(signal.SIGALRM, outer)
    assert late and [(r.teds, r.timed_out) for r in results] == [(1.0, False), (1.0, False)]
    assert 90 < left <= 100 and handler is restored and not outer_calls


def test_batch_in_worker_processes_matches_single_calls():
    pairs = [(table("<td>가라</td><td>다</td>"), table("<td>가나</td><td>다</td>")),
             ("", table("<td>a</td>")),
             (table(f"<td>자산</td><td>부채{INNER}</td>"), table(f"<td>자산{INNER}</td><td>부채</td>"))]
    results = teds_batch(pairs, "pubtabnet", workers=2, timeout_s=30)
    assert [(r.teds, r.teds_s) for r in results] == [teds_scores(p, g, "pubtabnet") for p, g in pairs]
    assert all(not r.timed_out and r.error is None for r in results)


# ------------------------------------------------------------------------ the tree-edit-distance engine
def _random_tree(rng: random.Random, budget: int, depth: int = 0) -> TedNode:
    if depth >= 4 or budget <= 1 or rng.random() < 0.25:
        return TedNode("td", rng.choice([1, 1, 2]), 1, rng.choice(["", "가", "가나", "나다라", "1,000"]))
    children, left = [], budget - 1
    while left > 0 and len(children) < 5:
        size = rng.randint(1, left)
        children.append(_random_tree(rng, size, depth + 1))
        left -= size
    return TedNode(rng.choice(["table", "tr", "tbody"]), children=children)


class _StockConfig(Config):
    """apted's own code path with the same costs, computed per call."""

    def __init__(self, with_content: bool):
        self.with_content = with_content

    def rename(self, a, b):
        if (a.tag, a.colspan, a.rowspan) != (b.tag, b.colspan, b.rowspan):
            return 1.0
        if self.with_content and (a.content or b.content):
            return levenshtein(a.content, b.content) / max(len(a.content), len(b.content))
        return 0.0


def test_engine_is_bit_identical_to_stock_apted_on_random_trees():
    rng = random.Random(7)
    for _ in range(40):
        t1, t2 = _random_tree(rng, rng.randint(1, 40)), _random_tree(rng, rng.randint(1, 40))
        ours = tree_edit_distances(t1, t2, (True, False))
        stock = [float(APTED(copy.deepcopy(t1), copy.deepcopy(t2), _StockConfig(c)).compute_edit_distance())
                 for c in (True, False)]
        assert ours == stock


# ------------------------------------------------------------------ PubTabNet's published metric
@pytest.fixture(scope="module")
def pubtabnet_pairs():
    if not (PUBTABNET / "sample_gt.json").is_file() or not (PUBTABNET / "sample_pred.json").is_file():
        pytest.skip(f"PubTabNet sample files not found under {PUBTABNET.resolve()} (shared/external/pubtabnet)")
    gt = json.loads((PUBTABNET / "sample_gt.json").read_text(encoding="utf-8"))
    pred = json.loads((PUBTABNET / "sample_pred.json").read_text(encoding="utf-8"))
    return {name: (pred.get(name, ""), gt[name]["html"]) for name in gt}


def test_pubtabnet_mode_equals_published_metric_per_file(pubtabnet_pairs):
    assert len(pubtabnet_pairs) == 20
    for name, (pred, gt) in pubtabnet_pairs.items():
        ours_full, ours_struct = teds_scores(pred, gt, "pubtabnet")
        assert math.isclose(ours_full, reference_teds(pred, gt, False), rel_tol=0, abs_tol=1e-9), name
        assert math.isclose(ours_struct, reference_teds(pred, gt, True), rel_tol=0, abs_tol=1e-9), name


def test_pubtabnet_sample_scores_are_plausible(pubtabnet_pairs):
    full = {n: teds(p, g, "pubtabnet") for n, (p, g) in pubtabnet_pairs.items()}
    struct = {n: teds(p, g, "pubtabnet", structure_only=True) for n, (p, g) in pubtabnet_pairs.items()}
    assert all(0.5 < v <= 1.0 for v in full.values())
    assert all(struct[n] >= full[n] - 1e-12 for n in full)  # content can only cost more
    assert 0.85 < sum(full.values()) / len(full) < 0.95
    assert sum(v == 1.0 for v in full.values()) >= 4
    # A perfect prediction of every ground truth scores 1; a bare-table prediction is wrapped as expected.
    for _, gt in list(pubtabnet_pairs.values())[:3]:
        assert teds(gt, gt, "pubtabnet") == 1.0
        bare = gt[gt.index("<table"):gt.rindex("</table>") + len("</table>")]
        assert teds(bare, gt, "pubtabnet") == 1.0
