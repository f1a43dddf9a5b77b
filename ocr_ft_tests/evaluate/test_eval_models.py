"""The ``models`` list of an evaluation (entries checked up front, roles) and the comparison table."""

from __future__ import annotations

import pytest

from ocr_ft.evaluate.models import ModelSpec, ModelSpecError, choose_roles, parse_model_specs
from ocr_ft.evaluate.report import IncomparableRuns, build_report, comparison_table
from ocr_ft.evaluate.runner import load_test_set, score


@pytest.fixture
def adapter_run(tmp_path):
    run = tmp_path / "run"
    (run / "adapter").mkdir(parents=True)
    (run / "adapter" / "adapter_config.json").write_text("{}")
    return run


def test_entries_parse_with_defaults(adapter_run):
    specs = parse_model_specs([
        {"name": "glm-base", "base_model": "tiny"},
        {"name": "glm-ft", "adapter": "latest", "max_new_tokens": 64},
        {"name": "glm-ft-old", "base_model": "/models/GLM-OCR", "adapter": str(adapter_run)},
        {"name": "adapter-only", "adapter": str(adapter_run / "adapter")},
    ])
    assert specs[0] == ModelSpec("glm-base", "tiny", None, None)
    assert specs[1] == ModelSpec("glm-ft", None, "latest", 64) and specs[1].fine_tuned
    assert specs[2].adapter == str(adapter_run) and not specs[0].fine_tuned


def test_every_bad_entry_is_named_in_one_error(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelSpecError) as err:
        parse_model_specs([
            {"name": "a", "adaptr": "latest"},
            {"name": "a"},
            {"name": "b", "adapter": str(tmp_path / "nope")},
            {"name": "c", "adapter": str(empty)},
            {"name": "d", "max_new_tokens": 0},
            {"name": "../x"},
            "just-a-string",
            {"name": "e", "base_model": ""},
        ])
    lines = str(err.value).splitlines()[1:]
    assert lines[0].startswith("models[0] ('a'): unknown field(s) 'adaptr'")
    assert lines[1] == "models[1] ('a'): name 'a' is already used by models[0]"
    assert lines[2] == f"models[2] ('b'): adapter directory {tmp_path / 'nope'} does not exist"
    assert lines[3].startswith(f"models[3] ('c'): adapter directory {empty} holds no adapter_config.json")
    assert lines[4] == "models[4] ('d'): 'max_new_tokens' must be a positive integer, got 0"
    assert lines[5].startswith("models[5] ('../x'): 'name' must be")
    assert lines[6].startswith("models[6]: expected a mapping") and "str" in lines[6]
    assert lines[7].startswith("models[7] ('e'): 'base_model' must be")
    assert len(lines) == 8


def test_primary_and_baseline_defaults_and_errors():
    specs = [ModelSpec("qwen", "tiny-qwen-vl"), ModelSpec("glm", "tiny"), ModelSpec("glm-ft", "tiny", "latest"),
             ModelSpec("qwen-ft", "tiny-qwen-vl", "/runs/q")]
    # the last fine-tune, against the base it was trained from
    assert choose_roles(specs) == ("qwen-ft", "qwen")
    assert choose_roles(specs, primary="glm-ft") == ("glm-ft", "glm")
    assert choose_roles(specs, primary="glm", baseline="qwen") == ("glm", "qwen")
    assert choose_roles(specs[:2]) == ("glm", "qwen")  # no fine-tune: the last entry, against the first base
    assert choose_roles(specs[1:2]) == ("glm", None)
    with pytest.raises(ModelSpecError, match="primary 'gml' is not the name of a models entry"):
        choose_roles(specs, primary="gml")
    with pytest.raises(ModelSpecError, match="baseline 'glm-ft' is the primary"):
        choose_roles(specs, primary="glm-ft", baseline="glm-ft")


# ------------------------------------------------------------------------------------ comparison table
@pytest.fixture
def three_runs(test_set):
    samples = load_test_set(test_set["path"])

    def run(name, html_of, latency, mode="nested"):
        preds = {s.key: {"html": html_of(s), "latency_s": latency, "error": None} for s in samples}
        return score(samples, preds, name, mode=mode, workers=1)

    def broken_cell(s):
        return s.gt_html.replace("<td>", "<td>틀림", 1)

    return {
        "base": run("base", lambda s: "", 0.2),  # empty predictions
        "ft": run("ft", lambda s: s.gt_html if s.category == "plain" else broken_cell(s), 0.3),
        "ft2": run("ft2", lambda s: s.gt_html, 0.3),  # perfect, as slow as ft
        "samples": samples, "run": run,
    }


def test_comparison_table_values_are_the_runs_summaries_and_best_is_marked(three_runs):
    runs = {n: three_runs[n] for n in ("base", "ft", "ft2")}
    summaries = {n: r.summary() for n, r in runs.items()}
    table = comparison_table(summaries, failed={"broken": "BaseModelError: no config.json"})
    assert table["groups"] == ["overall", "plain", "merged", "nested_2level", "nested_3level"]
    assert len(table["rows"]) == 5 * 4
    source = {"n": "n", "teds": "teds", "teds_s": "teds_s", "grits_con": "content_f1", "grits_top": "topology_f1",
              "cer": "cer", "truncated": "truncated", "failed": "prediction_errors"}
    for row in table["rows"]:
        if row["model"] == "broken":
            assert row["status"] == "failed" and row["error"] == "BaseModelError: no config.json"
            assert "teds" not in row
            continue
        summ = summaries[row["model"]]
        block = summ["overall"] if row["group"] == "overall" else summ["by_category"][row["group"]]
        for key, name in source.items():
            assert row[key] == block[name], (row["model"], row["group"], key)
        assert (row["latency_p50"], row["latency_p95"]) == (block["latency"]["p50"], block["latency"]["p95"])
    best = table["best"]
    assert best["overall"]["teds"] == ["ft2"] and best["overall"]["cer"] == ["ft2"]
    assert best["plain"]["teds"] == ["ft", "ft2"]  # a tie: both marked
    assert best["overall"]["latency_p50"] == ["base"]
    assert "failed" not in best["overall"]  # all 0: nothing to mark
    assert summaries["base"]["overall"]["teds"] < summaries["ft"]["overall"]["teds"]


def test_report_with_three_models_judges_the_primary_and_lists_the_failure(three_runs, tmp_path):
    runs = {n: three_runs[n] for n in ("base", "ft", "ft2")}
    report = build_report(runs, tmp_path, failed={"broken": "RuntimeError: out of memory"}, primary="ft",
                          baseline="base")
    assert report["primary"] == "ft" and report["comparison"]["finetuned"] == "ft"
    assert report["comparison"]["base"] == "base" and report["comparison"]["regression"] is False
    assert report["failed"] == {"broken": "RuntimeError: out of memory"}
    assert {w["key"] for w in report["worst"]} == {s.key for s in runs["ft"].samples}
    assert set(report["review_pages"]) == {"base", "ft", "ft2"}
    for page in report["review_pages"].values():
        assert (tmp_path / page.rsplit("/", 1)[-1]).is_file()
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "| overall | broken | FAILED: RuntimeError: out of memory |" in md
    assert "| nested_3level | broken | FAILED (see overall) |" in md
    ft2_overall = next(line for line in md.splitlines() if line.startswith("| overall | ft2 |"))
    assert "**1.0000**" in ft2_overall  # the best TEDS, in bold
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "failed: RuntimeError: out of memory" in page and "class='best'" in page
    assert "<a href='review_ft2.html'>ft2</a>" in page


def test_runs_scored_in_different_modes_are_not_put_in_one_report(three_runs, tmp_path):
    pub = three_runs["run"]("pub", lambda s: s.gt_html, 0.1, mode="pubtabnet")
    with pytest.raises(IncomparableRuns, match="'base' with run 'pub'"):
        build_report({"base": three_runs["base"], "ft": three_runs["ft"], "pub": pub}, tmp_path, primary="ft")
    with pytest.raises(ValueError, match="primary run 'nope'"):
        build_report({"base": three_runs["base"]}, tmp_path, primary="nope")
