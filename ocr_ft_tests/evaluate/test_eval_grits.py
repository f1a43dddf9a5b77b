"""GriTS-Con / GriTS-Top against scores produced by the published implementation (provenance in the JSON)."""

import json
from pathlib import Path

import pytest

from ocr_ft.evaluate.grits import box_overlap, grits_con, grits_top, lcs_similarity
from ocr_ft.evaluate.metrics import sample_metrics, table_f1

REFERENCE = json.loads((Path(__file__).parent / "data" / "grits_reference.json").read_text(encoding="utf-8"))


def test_reference_file_covers_enough_pairs():
    assert len(REFERENCE["pairs"]) >= 30
    assert "16d124f616109746b7785f03085100f1f6247575" in REFERENCE["provenance"]


@pytest.mark.parametrize("pair", REFERENCE["pairs"], ids=[p["name"] for p in REFERENCE["pairs"]])
def test_grits_matches_reference_implementation(pair):
    con = grits_con(pair["true_text"], pair["pred_text"])
    top = grits_top([[tuple(b) for b in r] for r in pair["true_spans"]],
                    [[tuple(b) for b in r] for r in pair["pred_spans"]])
    for ours, ref in ((con, pair["grits_con"]), (top, pair["grits_top"])):
        assert ours.f1 == pytest.approx(ref["f1"], abs=1e-6)
        assert ours.precision == pytest.approx(ref["precision"], abs=1e-6)
        assert ours.recall == pytest.approx(ref["recall"], abs=1e-6)


def test_slot_similarities():
    assert lcs_similarity("", "") == 1.0
    assert lcs_similarity("abcd", "abxd") == pytest.approx(0.75)
    assert box_overlap((0, 0, 1, 1), (0, 0, 1, 1)) == 1.0
    assert box_overlap((0, 0, 2, 1), (0, 0, 1, 1)) == 0.5
    assert box_overlap((0, 0, 0, 0), (0, 0, 1, 1)) == 0.0


def test_table_f1_is_grits_on_html():
    gt = "<table><tr><td colspan=2>합계</td></tr><tr><td>1</td><td>2</td></tr></table>"
    split = "<table><tr><td>합계</td><td></td></tr><tr><td>1</td><td>2</td></tr></table>"
    assert table_f1(gt, gt)["topology"].f1 == 1.0
    scores = table_f1(split, gt)
    assert 0 < scores["topology"].f1 < 1
    assert 0 < scores["content"].f1 < 1
    m = sample_metrics(split, gt)
    assert m["topology_f1"] == pytest.approx(scores["topology"].f1)
    assert table_f1("", gt)["content"].f1 == 0.0


def test_compare_refuses_runs_scored_differently():
    from ocr_ft.evaluate.report import IncomparableRuns, compare
    from ocr_ft.evaluate.runner import TestSample, score

    samples = [TestSample("a", "a.png", "<table><tr><td>1</td></tr></table>", "plain", "x", 1)]
    preds = {"a": {"html": "<table><tr><td>1</td></tr></table>", "latency_s": 0.1}}
    nested = score(samples, preds, "base", mode="nested", workers=1)
    pub = score(samples, preds, "ft", mode="pubtabnet", workers=1)
    assert compare(nested, score(samples, preds, "ft", mode="nested", workers=1))["regression"] is False
    with pytest.raises(IncomparableRuns, match="teds_mode 'nested' vs 'pubtabnet'"):
        compare(nested, pub)
    pub.meta["teds_mode"] = "nested"
    pub.meta["normalization"] = "NFKC everywhere"
    with pytest.raises(IncomparableRuns, match="normalization"):
        compare(nested, pub)


def _write(tmp_path, name, data):
    path = tmp_path / name
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return str(path)


def test_score_cli_per_file_and_overall(tmp_path, capsys):
    from ocr_ft.cli import main

    gt = {"a": {"html": "<table><tr><td>자산</td><td>1</td></tr></table>"},
          "b": {"html": "<table><tr><td colspan=2>합계</td></tr><tr><td>1</td><td>2</td></tr></table>"}}
    pred = {"a": gt["a"]["html"], "b": "<table><tr><td>합계</td><td></td></tr><tr><td>1</td><td>2</td></tr></table>"}
    args = ["score", "--pred", _write(tmp_path, "p.json", pred), "--gt", _write(tmp_path, "g.json", gt)]
    assert main(args + ["--metrics", "teds,grits_top,cer,nesting", "--mode", "pubtabnet"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["mode"] == "pubtabnet" and set(out["files"]["a"]) == {"teds", "grits_top", "cer", "nesting", "error"}
    assert out["files"]["a"]["teds"] == 1.0 and out["files"]["a"]["grits_top"] == 1.0
    assert out["files"]["b"]["grits_top"] == pytest.approx(table_f1(pred["b"], gt["b"]["html"])["topology"].f1)
    assert out["overall"]["grits_top"] == pytest.approx((1.0 + out["files"]["b"]["grits_top"]) / 2)
    assert main(args + ["--metrics", "teds,bleu"]) == 2
    assert "bleu" in capsys.readouterr().err
    bomb = "<table>" + '<tr><td rowspan="1000" colspan="1000">x</td></tr>' * 50 + "</table>"
    args = ["score", "--pred", _write(tmp_path, "p2.json", {"a": bomb}), "--gt", _write(tmp_path, "g2.json", {"a": bomb})]
    assert main(args + ["--metrics", "grits_con,cer"]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["files"]["a"]["error"].startswith("a: too_large")
    assert "a: not scored: a: too_large" in captured.err


def test_table_outside_any_cell_is_reported():
    from ocr_ft.evaluate.metrics import stray_tables
    from ocr_ft.evaluate.runner import TestSample, score

    stray = "<table><tr><table><tr><td>x</td></tr></table><td>b</td></tr></table>"
    assert stray_tables(stray) == 1
    assert stray_tables("<table><tr><td>a<table><tr><td>x</td></tr></table></td></tr></table>") == 0
    samples = [TestSample("a", "a.png", "<table><tr><td>b</td></tr></table>", "plain", "x", 1)]
    run = score(samples, {"a": {"html": stray, "latency_s": 0.1}}, "r", workers=1)
    assert run.samples[0].stray_tables_pred == 1
    assert run.summary()["overall"]["stray_tables"] == 1
