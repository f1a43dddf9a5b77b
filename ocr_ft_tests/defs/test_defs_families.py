"""Another family's tiny preset through the graph: tiny_base_model builds the listed presets, lora_checkpoint
trains on `base_model: tiny-qwen-vl` through Pipes, and the LLaMA-Factory export carries that family's prompt."""

import json
from pathlib import Path

import dagster as dg
import pytest

from factories import nested_html, write_pair
from ocr_ft.defs.dataset import dataset_asset, llamafactory_export, splits
from ocr_ft.defs.sources import folder_source, validated_asset
from ocr_ft.defs.training import TRAINING_ASSETS, TrainingLauncher
from ocr_ft.resources import OcrFtPaths
from ocr_ft.train.families import get_family, list_families


@pytest.mark.slow
def test_tiny_qwen_vl_preset_trains_through_the_graph(tmp_path):
    src = tmp_path / "src"
    for i in range(8):
        write_pair(src, f"t{i:02d}", i, html=nested_html(i, 1))
    source, validated = folder_source("existing", str(src)), validated_asset("existing")
    assets = [source, validated, dataset_asset([validated]), splits, llamafactory_export, *TRAINING_ASSETS]
    resources = {"paths": OcrFtPaths(data_dir=str(tmp_path / "data")), "training_launcher": TrainingLauncher()}
    run_config = {"ops": {
        "splits": {"config": {"val_ratio": 0.25, "test_ratio": 0.0}},
        "llamafactory_export": {"config": {"base_model": "qwen_vl"}},
        "tiny_base_model": {"config": {"presets": ["tiny", "tiny-qwen-vl"]}},
        "lora_checkpoint": {"config": {"base_model": "tiny-qwen-vl", "overrides": {
            "max_steps": 3, "learning_rate": 0.01, "warmup_ratio": 0.0, "lr_scheduler": "constant",
            "report_to": "none"}}},
    }}
    res = dg.materialize(assets, resources=resources, run_config=run_config, instance=dg.DagsterInstance.ephemeral())
    assert res.success
    mats = {e.asset_key.to_user_string(): e.materialization for e in res.get_asset_materialization_events()}

    tiny = mats["tiny_base_model"].metadata
    qwen_dir = Path(tiny["path_tiny-qwen-vl"].value)
    assert json.loads((qwen_dir / "config.json").read_text())["model_type"] == "qwen2_5_vl"
    assert json.loads((Path(tiny["path"].value) / "config.json").read_text())["model_type"] == "glm_ocr"

    ckpt = mats["lora_checkpoint"].metadata
    assert ckpt["steps"].value == 3
    run_cfg = (Path(ckpt["adapter_path"].value).parent / "config.yaml").read_text(encoding="utf-8")
    assert str(qwen_dir) in run_cfg

    export = Path(mats["llamafactory_export"].metadata["path"].value)
    rows = json.loads((export / "train_sharegpt.json").read_text(encoding="utf-8"))
    assert rows[0]["messages"][0]["content"] == "<image>" + get_family("qwen_vl").table_prompt
    assert "template: qwen2_vl" in (export / "llamafactory_train.yaml").read_text(encoding="utf-8")
    readme = (export / "README.md").read_text(encoding="utf-8")
    assert "Qwen-VL" in readme and "`qwen2_vl`" in readme and "glm_ocr" not in readme


def test_export_for_a_family_without_a_llamafactory_template_writes_its_native_format(tmp_path):
    fam = next((f for f in list_families() if f.llamafactory_template is None and f.native_export is not None), None)
    if fam is None:
        pytest.skip("every registered family has a LLaMA-Factory template or no native export")
    src = tmp_path / "src"
    for i in range(6):
        write_pair(src, f"t{i:02d}", i)
    source, validated = folder_source("existing", str(src)), validated_asset("existing")
    run_config = {"ops": {"splits": {"config": {"val_ratio": 0.2, "test_ratio": 0.0}},
                          "llamafactory_export": {"config": {"base_model": fam.name}}}}
    res = dg.materialize([source, validated, dataset_asset([validated]), splits, llamafactory_export],
                         resources={"paths": OcrFtPaths(data_dir=str(tmp_path / "data"))}, run_config=run_config,
                         instance=dg.DagsterInstance.ephemeral())
    assert res.success
    meta = {e.asset_key.to_user_string(): e.materialization for e in res.get_asset_materialization_events()}[
        "llamafactory_export"].metadata
    out = Path(meta["path"].value)
    assert not (out / "llamafactory_train.yaml").exists()
    assert meta["training_yaml"].value.startswith("none: LLaMA-Factory has no template for " + fam.title)
    native = out / f"train_{fam.name}{fam.native_export_suffix}"
    assert native.is_file() and meta[f"train_{fam.name}_count"].value == meta["train_count"].value > 0
    assert "no template" in (out / "README.md").read_text(encoding="utf-8")
