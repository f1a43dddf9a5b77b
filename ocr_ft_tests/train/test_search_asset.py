"""lora_search in the graph: a study on the tiny model, its best overlay trains a checkpoint the check accepts."""

import json
from pathlib import Path

import dagster as dg
import pytest
import yaml

from factories import nested_html, write_pair
from ocr_ft.defs.dataset import DATASET_CHECKS, dataset_asset, splits
from ocr_ft.defs.search import SEARCH_ASSETS
from ocr_ft.defs.sources import folder_source, validated_asset
from ocr_ft.defs.training import TRAINING_ASSETS, TRAINING_CHECKS, TrainingLauncher
from ocr_ft.resources import OcrFtPaths

SPACE = {
    "sampler": "grid", "pruner": "median",
    "fixed": {"max_steps": 8, "warmup_ratio": 0.0, "lr_scheduler": "constant", "save_steps": 4, "eval_steps": 4},
    "params": {"learning_rate": {"choices": [0.01, 0.02]}},
}


@pytest.mark.slow
def test_search_asset_then_checkpoint_from_its_best_overlay(tmp_path, monkeypatch):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.delenv("OCR_FT_OPTUNA_STORAGE", raising=False)
    src = tmp_path / "src"
    for i in range(16):
        write_pair(src, f"t{i:02d}", i, html=nested_html(i, 1 + i % 3))
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(SPACE), encoding="utf-8")
    source = folder_source("existing", str(src))
    validated = validated_asset("existing")
    assets = [source, validated, dataset_asset([validated]), splits, *TRAINING_ASSETS, *SEARCH_ASSETS]
    data = tmp_path / "data"
    resources = {"paths": OcrFtPaths(data_dir=str(data)), "training_launcher": TrainingLauncher()}
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    run_config = {"ops": {
        "splits": {"config": {"val_ratio": 0.15, "test_ratio": 0.15}},
        "lora_search": {"config": {"space": str(space), "n_trials": 2, "storage": storage}},
        "lora_checkpoint": {"config": {"use_search": True}},
    }}
    instance = dg.DagsterInstance.ephemeral()
    first = [source, validated, assets[2], splits, TRAINING_ASSETS[0], *SEARCH_ASSETS]
    first_config = {"ops": {k: v for k, v in run_config["ops"].items() if k != "lora_checkpoint"}}
    res = dg.materialize(first, resources=resources, run_config=first_config, instance=instance)
    assert res.success
    meta = res.asset_materializations_for_node("lora_search")[0].metadata
    assert meta["trials_complete"].value + meta["trials_pruned"].value == 2 and meta["trials_failed"].value == 0
    assert meta["objective"].value == "eval_loss" and meta["storage"].value == storage
    assert meta["optimisation_history"].value.startswith("![optimisation history](data:image/png;base64,")
    assert "| trial | state | value | learning_rate |" in meta["trials"].value
    best = json.loads((data / "search" / "latest.json").read_text())
    assert best["trial"] == meta["best_trial"].value and best["value"] == meta["best_value"].value
    lr = yaml.safe_load(Path(best["overlay"]).read_text())["learning_rate"]

    res = dg.materialize([*assets, *TRAINING_CHECKS], resources=resources, instance=instance,
                         run_config={"ops": {"lora_checkpoint": run_config["ops"]["lora_checkpoint"]}},
                         selection=["lora_checkpoint"])  # its asset check comes with it
    assert res.success
    ckpt = res.asset_materializations_for_node("lora_checkpoint")[0].metadata
    assert ckpt["search_trial"].value == best["trial"] and ckpt["search_study"].value == best["study"]
    assert ckpt["steps"].value == 8
    trained = yaml.safe_load((Path(ckpt["output_dir"].value) / "config.yaml").read_text())
    assert trained["learning_rate"] == lr and trained["lr_scheduler"] == "constant"
    [check] = [e for e in res.get_asset_check_evaluations() if e.asset_check_key.name == "lora_loss_decreased"]
    assert check.passed

    # the study is in the database: asked again, no trial reruns and the asset says so
    res = dg.materialize(first, resources=resources, run_config={"ops": {"lora_search": run_config["ops"]["lora_search"]}},
                         instance=instance, selection=["lora_search"])
    assert res.asset_materializations_for_node("lora_search")[0].metadata["trials_run_now"].value == 0
