"""Training and evaluation in the graph: the tiny model, a LoRA run through Dagster Pipes, and the report."""

import json
from pathlib import Path

import dagster as dg
import pytest

from factories import nested_html, write_pair
from ocr_ft.defs.dataset import DATASET_CHECKS, dataset_asset, splits
from ocr_ft.defs.evaluation import EVALUATION_ASSETS, EVALUATION_CHECKS
from ocr_ft.defs.sources import folder_source, validated_asset
from ocr_ft.defs.training import TRAINING_ASSETS, TRAINING_CHECKS, TrainingLauncher
from ocr_ft.resources import OcrFtPaths


@pytest.mark.slow
def test_tiny_model_lora_and_report_through_the_graph(tmp_path):
    src = tmp_path / "src"
    for i in range(16):
        write_pair(src, f"t{i:02d}", i, html=nested_html(i, 1 + i % 3))
    source = folder_source("existing", str(src))
    validated = validated_asset("existing")
    assets = [source, validated, dataset_asset([validated]), splits, *TRAINING_ASSETS, *EVALUATION_ASSETS]
    resources = {"paths": OcrFtPaths(data_dir=str(tmp_path / "data")), "training_launcher": TrainingLauncher()}
    run_config = {"ops": {
        "splits": {"config": {"val_ratio": 0.15, "test_ratio": 0.15}},
        "lora_checkpoint": {"config": {"overrides": {"max_steps": 8, "learning_rate": 0.01, "warmup_ratio": 0.0,
                                                     "lr_scheduler": "constant", "save_steps": 4}}},
        "evaluation_report": {"config": {"limit": 2, "max_new_tokens": 24, "batch_size": 2}},
    }}
    res = dg.materialize([*assets, *DATASET_CHECKS, *TRAINING_CHECKS, *EVALUATION_CHECKS], resources=resources,
                         run_config=run_config, instance=dg.DagsterInstance.ephemeral())
    assert res.success
    mats = {e.asset_key.to_user_string(): e.materialization for e in res.get_asset_materialization_events()}

    ckpt = mats["lora_checkpoint"].metadata
    assert ckpt["steps"].value == 8 and ckpt["final_train_loss"].value < ckpt["initial_train_loss"].value
    adapter = Path(ckpt["adapter_path"].value)
    assert (adapter / "adapter_config.json").is_file() and (adapter.parent / "loss.png").is_file()
    assert ckpt["loss_curve"].value.startswith("![loss](data:image/png;base64,")
    assert 0.0 <= ckpt["padding_fraction"].value < 1.0 and ckpt["packing"].value is False
    assert any(Path(ckpt["tensorboard_dir"].value).glob("events.out.tfevents.*"))  # report_to: tensorboard default
    # the reported data version is the run's fingerprint, the folder's name is its prefix
    assert adapter.parent.name == mats["lora_checkpoint"].tags["dagster/data_version"][:16]

    checks = {e.asset_check_key.name: e for e in res.get_asset_check_evaluations()}
    assert checks["lora_loss_decreased"].passed
    assert "evaluation_no_regression" in checks and "evaluation_seed_targets" in checks

    report = mats["evaluation_report"].metadata
    html = Path(report["report_html"].value)
    assert html.is_file() and "teds_base" in report and "teds_finetuned" in report
    assert "section class='item'" in Path(report["review_html"].value).read_text(encoding="utf-8")
    assert report["pages_per_s"].value > 0 and report["teds_unscored"].value == 0
    data = json.loads((html.parent / "report.json").read_text())
    assert set(data["runs"]) == {"base", "finetuned"}
    # without a models list: the fine-tune judged against its base, both in the comparison table
    assert (data["primary"], data["baseline"], data["failed"]) == ("finetuned", "base", {})
    assert "| overall | finetuned |" in report["comparison_table"].value and checks["evaluation_models_evaluated"].passed
    assert data["runs"]["finetuned"]["summary"]["overall"]["n"] == 2
    assert checks["evaluation_no_regression"].passed == (not data["comparison"]["regression"])


def test_launcher_starts_torchrun_and_the_pod_asks_for_one_gpu_per_process():
    import sys

    launcher = TrainingLauncher()
    assert launcher.command_for(1, sys.executable) == [sys.executable, "-m", "ocr_ft.defs.pipes_training"]
    assert launcher.command_for(4, sys.executable) == [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=4", "-m",
        "ocr_ft.defs.pipes_training"]
    k8s = TrainingLauncher(kind="k8s", image="img")
    assert k8s.command_for(2)[:3] == ["python", "-m", "torch.distributed.run"]
    for nproc in (1, 4):
        resources = k8s.k8s_pod_spec(nproc)["containers"][0]["resources"]
        assert resources["limits"]["nvidia.com/gpu"] == resources["requests"]["nvidia.com/gpu"] == str(nproc)


@pytest.mark.slow
def test_lora_checkpoint_with_two_processes_reports_once_through_pipes(tmp_path, monkeypatch):
    """nproc: 2 starts torchrun (2 gloo CPU processes); rank 0 alone reports the materialization."""
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[2]))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    src = tmp_path / "src"
    for i in range(12):
        write_pair(src, f"t{i:02d}", i, html=nested_html(i, 1 + i % 2))
    source = folder_source("existing", str(src))
    validated = validated_asset("existing")
    assets = [source, validated, dataset_asset([validated]), splits, *TRAINING_ASSETS]
    resources = {"paths": OcrFtPaths(data_dir=str(tmp_path / "data")), "training_launcher": TrainingLauncher()}
    run_config = {"ops": {
        "splits": {"config": {"val_ratio": 0.15, "test_ratio": 0.15}},
        "lora_checkpoint": {"config": {"overrides": {"max_steps": 4, "nproc": 2, "gradient_accumulation_steps": 2,
                                                     "save_steps": 2, "report_to": "none"}}},
    }}
    res = dg.materialize(assets, resources=resources, run_config=run_config, instance=dg.DagsterInstance.ephemeral())
    assert res.success
    mats = [e.materialization for e in res.get_asset_materialization_events()
            if e.asset_key.to_user_string() == "lora_checkpoint"]
    assert len(mats) == 1 and mats[0].metadata["steps"].value == 4
    out = Path(mats[0].metadata["output_dir"].value)
    assert json.loads((out / "summary.json").read_text())["processes"] == 2
