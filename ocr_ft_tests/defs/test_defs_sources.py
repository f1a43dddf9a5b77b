"""Offline sources in Dagster: one synthetic shard materializes in-process; an unchanged shard keeps its data
version; the existing source augments with families kept together."""

import json

import dagster as dg
import pytest

from factories import write_pair
from ocr_ft.defs.sources import existing, existing_validated, synthetic, synthetic_validated
from ocr_ft.resources import OcrFtPaths, RendererResource


@pytest.mark.browser
def test_one_synthetic_shard_materializes_and_rematerializes_identically(tmp_path):
    resources = {"paths": OcrFtPaths(data_dir=str(tmp_path / "data")), "renderer": RendererResource(pool_size=2)}
    run_config = {"ops": {"synthetic": {"config": {"per_shard": 6}}}}
    instance = dg.DagsterInstance.ephemeral()

    def run():
        res = dg.materialize([synthetic, synthetic_validated], partition_key="shard-002", instance=instance,
                             resources=resources, run_config=run_config)
        assert res.success
        return {e.asset_key.to_user_string(): e.materialization for e in res.get_asset_materialization_events()}

    first = run()
    assert first["synthetic"].partition == "shard-002"
    assert first["synthetic"].metadata["pairs"].value == 6
    assert first["synthetic_validated"].metadata["records"].value == 6
    manifest = tmp_path / "data" / "sources" / "synthetic" / "shard-002.jsonl"
    names = [json.loads(line)["original_filename"] for line in manifest.read_text().splitlines()]
    assert all(n.startswith("synthetic_s002_") for n in names)

    second = run()
    version = lambda m: m.tags["dagster/data_version"]  # noqa: E731
    assert version(second["synthetic"]) == version(first["synthetic"])
    assert version(second["synthetic_validated"]) == version(first["synthetic_validated"])
    assert second["synthetic_validated"].metadata["reused"].value == 6


def test_existing_with_augmentation_keeps_families_together(tmp_path):
    src = tmp_path / "src"
    for i in range(3):
        write_pair(src, f"t{i}", i)
    resources = {"paths": OcrFtPaths(data_dir=str(tmp_path / "data"))}
    res = dg.materialize([existing, existing_validated], resources=resources, run_config={
        "ops": {"existing": {"config": {"folder": str(src), "augment_copies": 2, "seed": 3}}}})
    assert res.success
    rows = [json.loads(line) for line in (tmp_path / "data" / "validated" / "existing" / "all.jsonl").read_text().splitlines()]
    records = [r for r in rows if r.get("kind") == "record"]
    assert len(records) == 9
    families = {r["metadata"]["family"] for r in records}
    assert families == {"existing:t0", "existing:t1", "existing:t2"}
    copies = [r for r in records if "augmented_from" in r["metadata"]]
    assert len(copies) == 6 and all(r["metadata"]["augmentation"] for r in copies)
    assert len({r["image_sha256"] for r in records}) == 9  # every copy is a different image


def test_existing_preprocessing_options_reach_the_images_and_metadata(tmp_path):
    src = tmp_path / "src"
    write_pair(src, "scan", 1)  # 96 x 64
    resources = {"paths": OcrFtPaths(data_dir=str(tmp_path / "data"))}
    res = dg.materialize([existing], resources=resources, run_config={"ops": {"existing": {"config": {
        "folder": str(src), "source_dpi": 100.0, "target_dpi": 200.0, "clahe": True}}}})
    assert res.success
    (row,) = [json.loads(line) for line in (tmp_path / "data" / "sources" / "existing" / "all.jsonl").read_text().splitlines()]
    assert row["metadata"]["preprocess"]["dpi"] == [100.0, 200.0] and row["metadata"]["preprocess"]["clahe"]
    from PIL import Image

    assert Image.open(tmp_path / "data" / row["image_path"]).size == (192, 128)
