"""Dry-run plan numbers, the CLI, the LLaMA-Factory YAML, and the package's lazy exports."""

from __future__ import annotations

import json

import pytest
import yaml

from ocr_ft.storage import atomic_write_jsonl
from ocr_ft.train.budget import plan
from ocr_ft.train.cli import main
from ocr_ft.train.llamafactory import write_llamafactory_config


@pytest.fixture()
def messy_records(table_data):
    """16 good records plus one of each kind of problem."""
    d = table_data["data_dir"]
    (d / "images" / "corrupt.png").write_bytes(b"\x89PNG not really")
    base = dict(table_data["train"][0])
    bad = [
        table_data["oversized"],
        {**base, "image_path": "images/missing.png", "metadata": {"original_filename": "missing.png"}},
        {**base, "image_path": "images/corrupt.png", "metadata": {"original_filename": "corrupt.png"}},
        {**base, "ground_truth_html": "  ", "metadata": {"original_filename": "empty.png"}},
    ]
    return table_data["train"] + bad


def test_plan_numbers_and_reasons(tiny_config, table_data, messy_records):
    p = plan(tiny_config, messy_records, table_data["data_dir"], table_data["val"])
    assert len(p.train.kept) == 16 and len(p.val.kept) == 4
    reasons = {x.name: x.reason for x in p.train.left_out}
    assert reasons == {"huge_table.png": "over_budget", "missing.png": "image_missing",
                       "corrupt.png": "image_unreadable", "empty.png": "empty_label"}
    d = p.to_dict()
    assert (d["micro_batches_per_epoch"], d["steps_per_epoch"], d["total_steps"], d["warmup_steps"]) == (8, 4, 8, 0)
    assert d["effective_batch_size"] == 4 and d["epochs"] == 2
    assert d["train"]["max_tokens"] <= 512 < next(x.tokens for x in p.train.left_out if x.reason == "over_budget")
    text = p.format()
    assert "4 per epoch x 2 epochs -> 8 total" in text and "huge_table.png: over_budget" in text
    seed = tiny_config.replace(gradient_accumulation_steps=8, num_epochs=3, warmup_ratio=0.03)
    assert plan(seed, table_data["train"], table_data["data_dir"]).numbers == {
        "micro_batches_per_epoch": 8, "steps_per_epoch": 1, "total_steps": 3, "warmup_steps": 1}
    assert plan(tiny_config.replace(max_steps=5), table_data["train"], table_data["data_dir"]).total_steps == 5


def _write_inputs(tmp_path, tiny_config, train_rows, val_rows):
    atomic_write_jsonl(tmp_path / "train.jsonl", train_rows)
    atomic_write_jsonl(tmp_path / "val.jsonl", val_rows)
    tiny_config.save(tmp_path / "cfg.yaml")
    return ["--train", str(tmp_path / "train.jsonl"), "--val", str(tmp_path / "val.jsonl"),
            "--config", str(tmp_path / "cfg.yaml")]


def test_cli_dry_run_prints_the_plan(tmp_path, tiny_config, table_data, messy_records, capsys):
    args = _write_inputs(tmp_path, tiny_config, messy_records, table_data["val"])
    assert main(["train", *args, "--data-dir", str(table_data["data_dir"]), "--dry-run", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["total_steps"] == 8 and d["train"]["kept"] == 16 and len(d["left_out"]["train"]) == 4
    # `ocr-ft train --train ...` (no subcommand) means train; bad keys exit 2 naming the key
    assert main([*args, "--data-dir", str(table_data["data_dir"]), "--dry-run", "--set", "lora_rnk=4"]) == 2
    assert "lora_rnk" in capsys.readouterr().err


def test_cli_train_shows_progress(tmp_path, tiny_config, table_data, capsys):
    args = _write_inputs(tmp_path, tiny_config, table_data["train"], table_data["val"])
    rc = main(["train", *args, "--data-dir", str(table_data["data_dir"]), "--out", str(tmp_path / "out"),
               "--set", "max_steps=2", "--set", "eval_at_start=false"])
    out = capsys.readouterr().out
    assert rc == 0 and "step 1/2  loss" in out and "step 2/2" in out and "done: 2 steps" in out
    assert (tmp_path / "out" / "adapter" / "adapter_model.safetensors").is_file()


def test_cli_tiny_and_missing_base(tmp_path, table_data, capsys):
    atomic_write_jsonl(tmp_path / "texts.jsonl", table_data["train"][:3])
    assert main(["tiny", "--texts-from", str(tmp_path / "texts.jsonl"), "--out", str(tmp_path / "m")]) == 0
    assert (tmp_path / "m" / "model.safetensors").is_file()
    args = ["merge", "--base", str(tmp_path / "absent"), "--adapter", str(tmp_path / "a"), "--out", str(tmp_path / "o")]
    assert main(args) == 1
    assert "absent" in capsys.readouterr().err


def test_llamafactory_yaml_mirrors_the_config(tmp_path):
    from ocr_ft.train.config import load_config

    cfg = load_config()
    path = write_llamafactory_config(cfg, tmp_path / "lf.yaml", dataset_dir="/data/llamafactory")
    y = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert y["template"] == "glm_ocr" and y["finetuning_type"] == "lora"
    assert (y["dataset"], y["eval_dataset"], y["dataset_dir"]) == ("ocr_ft_train", "ocr_ft_val", "/data/llamafactory")
    assert (y["lora_rank"], y["lora_alpha"], y["lora_target"], y["freeze_vision_tower"]) == (8, 16, "all", True)
    assert (y["cutoff_len"], y["learning_rate"], y["lr_scheduler_type"], y["num_train_epochs"]) == (4096, 1e-4, "cosine", 3.0)
    assert (y["per_device_train_batch_size"], y["gradient_accumulation_steps"], y["bf16"]) == (2, 8, True)
    assert y["image_max_pixels"] == cfg.max_pixels and y["model_name_or_path"] == "zai-org/GLM-OCR"
    y2 = yaml.safe_load(write_llamafactory_config(cfg.replace(vision_lora=True, precision="fp32"),
                                                  tmp_path / "lf2.yaml", "/d").read_text(encoding="utf-8"))
    assert y2["freeze_vision_tower"] is False and y2["bf16"] is False


def test_package_exports_are_lazy_functions():
    import ocr_ft.train as t

    assert callable(t.train) and callable(t.plan) and callable(t.load_model_and_processor)
    assert t.plan.__module__ == "ocr_ft.train.budget"
    with pytest.raises(AttributeError):
        t.no_such_name  # noqa: B018


def test_cli_merge_says_whether_the_merged_model_was_compared(tmp_path, table_data, monkeypatch, capsys):
    import ocr_ft.train.modeling as modeling

    seen = []

    def fake_merge(base, adapter, out, check_records=(), data_dir=None, config=None):
        seen.append(list(check_records))
        return modeling.MergeResult(out, len(check_records), ["<table></table>"] * len(check_records))

    monkeypatch.setattr(modeling, "merge_adapter", fake_merge)
    args = ["merge", "--base", str(tmp_path / "base"), "--adapter", str(tmp_path / "a"), "--out", str(tmp_path / "o")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "NOT checked" in out and "not compared" in out and "--check RECORDS.jsonl --data-dir DIR" in out
    assert "identical" not in out and "0 samples" not in out

    atomic_write_jsonl(tmp_path / "check.jsonl", table_data["val"])
    check = ["--check", str(tmp_path / "check.jsonl"), "--data-dir", str(table_data["data_dir"])]
    assert main([*args, *check, "--check-n", "2"]) == 0
    out = capsys.readouterr().out
    assert "equal the adapter's on 2 sample(s)" in out and "NOT" not in out and len(seen[-1]) == 2

    atomic_write_jsonl(tmp_path / "empty.jsonl", [])
    assert main([*args, "--check", str(tmp_path / "empty.jsonl")]) == 0
    assert "NOT checked" in capsys.readouterr().out
    assert main([*args, *check, "--check-n", "0"]) == 2
    assert "--check-n" in capsys.readouterr().err
