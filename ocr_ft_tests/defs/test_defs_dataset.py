"""The Dagster layer: definitions load, a source materializes in-process, and automation rebuilds only what
an actual data change requires."""

import dagster as dg
import pytest
import yaml

from factories import write_pair
from ocr_ft.defs.dataset import DATASET_CHECKS, dataset_asset, llamafactory_export, splits
from ocr_ft.defs.sources import folder_source, validated_asset
from ocr_ft.resources import OcrFtPaths


def test_definitions_load():
    from ocr_ft.definitions import defs

    dg.Definitions.validate_loadable(defs)
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert {"existing", "existing_validated", "dataset", "splits", "llamafactory_export"} <= keys
    # one automation sensor covers every asset and runs from the start, so a changed source propagates by itself
    (sensor,) = defs.sensors
    assert sensor.name == "ocr_ft_automation" and sensor.default_status == dg.DefaultSensorStatus.RUNNING
    graph = defs.resolve_asset_graph()
    automated = {k.to_user_string() for k in graph.get_all_asset_keys() if graph.get(k).automation_condition}
    assert automated == {k for k in keys if k.endswith("_validated")} | {
        "dataset", "splits", "llamafactory_export", "tiny_base_model", "lora_checkpoint", "evaluation_report"}


@pytest.fixture
def two_sources(tmp_path):
    """A graph with two folder sources (a and b) feeding the real dataset assets."""
    folders = {name: tmp_path / name for name in ("src_a", "src_b")}
    for i in range(6):
        write_pair(folders["src_a"], f"a{i}", i)
        write_pair(folders["src_b"], f"b{i}", 100 + i)
    sources = [folder_source(name, str(folder)) for name, folder in folders.items()]
    validated = [validated_asset(name) for name in folders]
    assets = [*sources, *validated, dataset_asset(validated), splits, llamafactory_export]
    resources = {"paths": OcrFtPaths(data_dir=str(tmp_path / "data"))}
    defs = dg.Definitions(assets=assets, asset_checks=DATASET_CHECKS, resources=resources)
    return defs, assets, resources, folders, tmp_path


def _requested(result) -> set[str]:
    return {k.to_user_string() for k in result.get_requested_subset_keys()} if hasattr(
        result, "get_requested_subset_keys") else {
        r.key.to_user_string() for r in result.results if r.true_subset.size > 0}


def test_source_materializes_in_process_and_checks_pass(two_sources):
    defs, assets, resources, folders, tmp = two_sources
    instance = dg.DagsterInstance.ephemeral()
    res = dg.materialize([*assets, *DATASET_CHECKS], instance=instance, resources=resources)
    assert res.success
    mats = {e.asset_key.to_user_string(): e for e in res.get_asset_materialization_events()}
    src = mats["src_a"].materialization.metadata
    assert src["pairs"].value == 6 and src["quarantined"].value == 0
    assert mats["dataset"].materialization.metadata["records"].value == 12
    checks = {e.asset_check_key.name: e.passed for e in res.get_asset_check_evaluations()}
    assert checks["dataset_records_valid"] and checks["splits_no_leakage"]
    export = tmp / "data" / "export" / "llamafactory"
    assert (export / "dataset_info.json").is_file()
    lf = yaml.safe_load((export / "llamafactory_train.yaml").read_text(encoding="utf-8"))
    assert lf["template"] == "glm_ocr" and lf["finetuning_type"] == "lora" and lf["lora_rank"] == 8
    assert lf["dataset"].split(",")[0].strip() == "ocr_ft_train" and lf["dataset_dir"] == "."


def test_automation_rebuilds_only_on_data_change(two_sources):
    defs, assets, resources, folders, tmp = two_sources
    instance = dg.DagsterInstance.ephemeral()
    # the first evaluation on an empty instance only records the state: nothing is built behind the user's back
    initial = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    assert initial.total_requested == 0
    assert dg.materialize(assets, instance=instance, resources=resources).success

    first = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=initial.cursor)
    assert first.total_requested == 0, [r.key for r in first.results if r.true_subset.size]
    cursor = first.cursor

    # (a) the same content materialized again: same data version, nothing downstream requested
    src_a = next(a for a in assets if a.key.to_user_string() == "src_a")
    assert dg.materialize([src_a], instance=instance, resources=resources).success
    same = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
    assert same.total_requested == 0, [r.key for r in same.results if r.true_subset.size]
    cursor = same.cursor

    # (b) one file changed in src_a: its chain and everything below `dataset`, nothing of src_b
    write_pair(folders["src_a"], "a3", 999)
    assert dg.materialize([src_a], instance=instance, resources=resources).success
    changed = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
    requested = {r.key.to_user_string() for r in changed.results if r.true_subset.size > 0}
    assert requested == {"src_a_validated", "dataset", "splits", "llamafactory_export"}


def test_dg_loads_the_project_from_pyproject():
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    dg_bin = Path(sys.executable).with_name("dg")
    if not dg_bin.exists():
        pytest.skip("dagster-dg-cli (the dev extra) is not installed in this environment")
    proc = subprocess.run([str(dg_bin), "list", "defs", "--json"], cwd=root, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "NO_COLOR": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    listed = json.loads(proc.stdout)
    keys = {a["asset_key"] for a in listed["assets"]}
    assert {"existing", "synthetic", "dataset", "splits", "lora_checkpoint", "evaluation_report"} <= keys
    assert {s["name"] for s in listed["schedules"]} == {"dart_weekly_rescrape", "fss_weekly_rescrape"}


@pytest.mark.parametrize("month", ["2024-03", None])
def test_backfilled_old_dart_month_propagates_like_the_newest(month):
    """An old time partition's data change requests its validation, as the newest month's does."""
    from ocr_ft.defs.scraped import dart_partitions
    from ocr_ft.definitions import defs

    month = month or dart_partitions.get_last_partition_key()
    instance = dg.DagsterInstance.ephemeral()
    cursor = dg.evaluate_automation_conditions(defs=defs, instance=instance).cursor
    instance.report_runless_asset_event(dg.AssetMaterialization(
        asset_key="dart", partition=month, tags={"dagster/data_version": "v1"}))
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
    validated = next(r for r in result.results if r.key == dg.AssetKey("dart_validated"))
    assert set(validated.true_subset.expensively_compute_partition_keys()) == {month}
