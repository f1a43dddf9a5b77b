"""``evaluation_report`` with a ``models`` list, through Dagster on the tiny GLM-OCR model (CPU): a base, a
fine-tune of it and a model that cannot load, in one report; and the list checked before any model loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
dg = pytest.importorskip("dagster")

from ocr_ft.defs.evaluation import EVALUATION_CHECKS, evaluation_report  # noqa: E402
from ocr_ft.evaluate.report import TABLE_METRICS  # noqa: E402
from ocr_ft.resources import OcrFtPaths  # noqa: E402
from ocr_ft.storage import atomic_write_json  # noqa: E402


@pytest.fixture
def eval_data(tmp_path, test_set, tiny_model, tiny_config):
    """A data dir as the graph leaves it: the test split, the tiny preset's pointer and a lora_checkpoint
    whose adapter (seeded random LoRA B, so it predicts differently from the base) sits in its run folder."""
    import torch

    from ocr_ft.train import apply_lora, load_model_and_processor

    data = test_set["data_dir"]
    (data / "splits").mkdir()
    lines = test_set["path"].read_text(encoding="utf-8").splitlines(keepends=True)
    (data / "splits" / "test.jsonl").write_text(lines[0] + lines[2], encoding="utf-8")  # a plain and a merged table
    atomic_write_json(data / "models" / "tiny" / "latest.json", {"path": str(tiny_model), "data_version": "tiny-t"})
    run = data / "checkpoints" / "run1"
    model, _ = load_model_and_processor(str(tiny_model), tiny_config, device="cpu")
    peft_model = apply_lora(model, tiny_config)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    peft_model.save_pretrained(run / "adapter")
    tiny_config.save(run / "config.yaml")
    atomic_write_json(data / "checkpoints" / "latest.json", {"path": str(run), "data_version": "ckpt-t"})
    not_a_model = tmp_path / "not_a_model"
    not_a_model.mkdir()
    (not_a_model / "config.json").write_text('{"model_type": "bert"}')
    return {"data": data, "run": run, "not_a_model": not_a_model}


def _materialize(data: Path, cfg: dict):
    return dg.materialize([evaluation_report, *EVALUATION_CHECKS], resources={"paths": OcrFtPaths(data_dir=str(data))},
                          run_config={"ops": {"evaluation_report": {"config": cfg}}},
                          instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)


def _failure_message(res) -> str:
    return "\n".join(str(e.event_specific_data.error) for e in res.all_events if e.is_step_failure)


@pytest.mark.slow
def test_three_models_in_one_report_one_of_them_failing(eval_data):
    data = eval_data["data"]
    cfg = {"batch_size": 2, "max_new_tokens": 8, "models": [
        {"name": "tiny-base", "base_model": "tiny", "adapter": None},
        {"name": "tiny-ft", "adapter": "latest", "max_new_tokens": 8},
        {"name": "broken", "base_model": str(eval_data["not_a_model"])},
    ]}
    res = _materialize(data, cfg)
    assert res.success, _failure_message(res)
    meta = next(e.materialization for e in res.get_asset_materialization_events()).metadata
    out = Path(json.loads((data / "eval" / "latest.json").read_text())["path"])
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))

    # roles: the fine-tune is judged, against the base; the failing model is recorded with its reason
    assert (report["primary"], report["baseline"]) == ("tiny-ft", "tiny-base")
    assert set(report["runs"]) == {"tiny-base", "tiny-ft"}
    assert list(report["failed"]) == ["broken"] and str(eval_data["not_a_model"]) in report["failed"]["broken"]
    assert report["comparison"]["finetuned"] == "tiny-ft" and report["comparison"]["base"] == "tiny-base"
    # each model in its own sub-folder; the broken one predicted nothing
    for name in ("tiny-base", "tiny-ft"):
        assert len((out / name / "predictions.jsonl").read_text().splitlines()) == 2
    assert not (out / "broken" / "predictions.jsonl").exists()
    base_rows = [json.loads(line) for line in (out / "tiny-base" / "predictions.jsonl").read_text().splitlines()]
    ft_rows = [json.loads(line) for line in (out / "tiny-ft" / "predictions.jsonl").read_text().splitlines()]
    assert "+" not in base_rows[0]["predictor"] and str(eval_data["run"]) in ft_rows[0]["predictor"]
    assert [r["raw"] for r in base_rows] != [r["raw"] for r in ft_rows]  # the adapter changes the outputs

    # the comparison table's figures are each model's own saved summary (eval_run.json of its folder)
    table = report["comparison_table"]
    assert table["groups"] == ["overall", "plain", "merged"] and len(table["rows"]) == 3 * 3
    source = {"n": "n", "teds": "teds", "teds_s": "teds_s", "grits_con": "content_f1", "grits_top": "topology_f1",
              "cer": "cer", "truncated": "truncated", "failed": "prediction_errors"}
    for row in table["rows"]:
        if row["model"] == "broken":
            assert row["status"] == "failed" and row["error"] == report["failed"]["broken"]
            continue
        saved = json.loads((out / row["model"] / "eval_run.json").read_text())["summary"]
        block = saved["overall"] if row["group"] == "overall" else saved["by_category"][row["group"]]
        assert {k: row[k] for k in source} == {k: block[v] for k, v in source.items()}
        assert row["latency_p95"] == block["latency"]["p95"] and row["latency_p95"] > 0

    # Dagster metadata: the table as Markdown and as a table; the checks judge the primary
    md = meta["comparison_table"].value
    assert "| overall | broken | FAILED: " in md and "| overall | tiny-ft |" in md
    records = meta["comparison"].value.records
    assert len(records) == len(table["rows"])
    assert [c.name for c in meta["comparison"].value.schema.columns][3:] == [m.key for m in TABLE_METRICS]
    assert meta["primary"].value == "tiny-ft" and meta["failed_models"].value.startswith("broken: ")
    assert Path(meta["review_html_tiny-ft"].value).is_file()
    checks = {e.asset_check_key.name: e for e in res.get_asset_check_evaluations()}
    assert checks["evaluation_models_evaluated"].passed is False
    assert checks["evaluation_no_regression"].passed == (not report["comparison"]["regression"])
    assert checks["evaluation_seed_targets"].metadata["primary"].value == "tiny-ft"
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "failed: BaseModelError: base model " in page and "expected a GLM-OCR model" in page

    # the same config again resumes: no model predicts anything anew
    assert _materialize(data, cfg).success
    for name in ("tiny-base", "tiny-ft"):
        assert len(json.loads((out / name / "prediction_sessions.json").read_text())) == 1


def test_bad_models_list_fails_before_any_model_loads(eval_data):
    res = _materialize(eval_data["data"], {"models": [
        {"name": "a", "base_model": "tiny"}, {"name": "a", "adapter": str(eval_data["data"] / "missing")},
        {"name": "b/c", "adapter": "latest"}]})
    assert not res.success
    message = _failure_message(res)
    assert "models[1] ('a'): name 'a' is already used by models[0]" in message
    assert f"models[1] ('a'): adapter directory {eval_data['data'] / 'missing'} does not exist" in message
    assert "models[2] ('b/c'): 'name' must be" in message
    assert not (eval_data["data"] / "eval").exists()
    # an unknown field is refused by Dagster's own config check, with the entry's path, before the run starts
    with pytest.raises(dg.DagsterInvalidConfigError, match=r'"temperature" at path \S*:config:models\[1\]'):
        _materialize(eval_data["data"], {"models": [{"name": "a"}, {"name": "b", "temperature": 0.3}]})
    res = _materialize(eval_data["data"], {"models": [{"name": "a", "base_model": "tiny"}], "primary": "b"})
    assert "primary 'b' is not the name of a models entry" in _failure_message(res)


def test_a_failing_primary_fails_the_asset_but_keeps_the_report_of_the_others(eval_data):
    data = eval_data["data"]
    res = _materialize(data, {"limit": 1, "max_new_tokens": 4, "models": [
        {"name": "tiny-base", "base_model": "tiny"},
        {"name": "ft-on-nothing", "base_model": str(eval_data["not_a_model"]), "adapter": str(eval_data["run"])}]})
    assert not res.success
    message = _failure_message(res)
    assert "the primary model failed (ft-on-nothing: " in message and "report.html" in message
    assert not (data / "eval" / "latest.json").exists()  # the checks never judge a report without the primary
    (out,) = [p for p in (data / "eval").iterdir() if p.is_dir()]
    report = json.loads((out / "report.json").read_text())
    assert set(report["runs"]) == {"tiny-base"} and "ft-on-nothing" in report["failed"]


def test_an_entry_needing_the_latest_checkpoint_without_one_is_named(eval_data):
    (eval_data["data"] / "checkpoints" / "latest.json").unlink()
    res = _materialize(eval_data["data"], {"models": [{"name": "b", "base_model": "tiny"},
                                                      {"name": "ft", "adapter": "latest"}]})
    message = _failure_message(res)
    assert "evaluation_report config: models[1] ('ft'): " in message
    assert "latest.json is missing: materialize lora_checkpoint first (adapter 'latest')" in message


@pytest.mark.slow
def test_two_families_in_one_report(eval_data, tmp_path):
    """GLM-OCR's and PaddleOCR-VL's tiny presets side by side: each loads with its own family (prompt, image
    geometry, OTSL answers converted), both are scored on the same split into one comparison table."""
    from ocr_ft.train.families import get_family

    data = eval_data["data"]
    texts = [json.loads(line)["ground_truth_html"] for line in (data / "splits" / "test.jsonl").read_text().splitlines()]
    paddle_dir = get_family("paddleocr_vl").build_tiny(tmp_path / "tiny-paddleocr-vl", texts, seed=0)
    atomic_write_json(data / "models" / "tiny-paddleocr-vl" / "latest.json",
                      {"path": str(paddle_dir), "data_version": "tiny-p"})
    res = _materialize(data, {"batch_size": 2, "max_new_tokens": 8, "models": [
        {"name": "glm", "base_model": "tiny"}, {"name": "paddle", "base_model": "tiny-paddleocr-vl"}]})
    assert res.success, _failure_message(res)
    out = Path(json.loads((data / "eval" / "latest.json").read_text())["path"])
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert set(report["runs"]) == {"glm", "paddle"} and not report["failed"]
    rows = {name: [json.loads(x) for x in (out / name / "predictions.jsonl").read_text().splitlines()]
            for name in ("glm", "paddle")}
    assert all(len(r) == 2 and all(x["error"] is None for x in r) for r in rows.values())
    assert str(paddle_dir) in rows["paddle"][0]["predictor"] and str(paddle_dir) not in rows["glm"][0]["predictor"]
    assert {row["model"] for row in report["comparison_table"]["rows"]} == {"glm", "paddle"}
