"""The dataset, its splits and the LLaMA-Factory export, with their asset checks."""


import os
from collections import Counter
from pathlib import Path

import dagster as dg
from pydantic import Field

from ..dataset.build import build_dataset, build_splits, load_dataset, load_split
from ..dataset.dedup import DedupConfig
from ..dataset.export import export_llamafactory
from ..dataset.records import CATEGORIES
from ..dataset.splits import SPLITS, SplitConfig, leakage
from ..resources import OcrFtPaths
from ..storage import sha256_file, sha256_json
from ..tables import validate_label
from .automation import on_upstream_change, on_upstream_change_allow_missing

GROUP = "dataset"


class DatasetConfig(dg.Config):
    max_hamming: int = Field(4, description="Near-duplicate: max perceptual-hash distance (bits of 64).")
    min_text_similarity: float = Field(0.95, description="Near-duplicate: min cell-text similarity (0-1).")


def dataset_asset(validation_assets: list[dg.AssetsDefinition]) -> dg.AssetsDefinition:
    sources = sorted(a.key.path[-1].removesuffix("_validated") for a in validation_assets)

    @dg.asset(
        name="dataset",
        deps=[a.key for a in validation_assets],
        group_name=GROUP,
        code_version="1",
        automation_condition=on_upstream_change_allow_missing,
        kinds={"python"},
        description="Validated pairs of every source, exact and near duplicates removed, categories assigned; "
        "every reject (load, validation, dedup) kept in rejects.jsonl with its reason.",
    )
    def dataset(context: dg.AssetExecutionContext, config: DatasetConfig, paths: OcrFtPaths) -> dg.MaterializeResult:
        files = sorted(p for s in sources for p in (paths.sub("validated", s)).glob("*.jsonl"))
        if not files:
            raise dg.Failure(f"no validated partitions under {paths.sub('validated')}: materialize a source "
                             f"({', '.join(sources)}) and its _validated asset first")
        context.log.info(f"merging {len(files)} validated partitions")
        stats = build_dataset(files, paths.sub("dataset"),
                              DedupConfig(max_hamming=config.max_hamming, min_text_similarity=config.min_text_similarity))
        context.log.info(f"dataset: {stats['records']} records, {stats['rejects']} rejects {stats['reject_reasons']}")
        return dg.MaterializeResult(
            metadata={
                "records": stats["records"],
                "rejects": stats["rejects"],
                "by_source": stats["by_source"],
                "by_category": stats["by_category"],
                "reject_reasons": stats["reject_reasons"],
                "partitions_merged": len(files),
                "path": dg.MetadataValue.path(str(paths.sub("dataset", "dataset.jsonl"))),
                "rejects_path": dg.MetadataValue.path(str(paths.sub("dataset", "rejects.jsonl"))),
            },
            data_version=dg.DataVersion(stats["data_version"]),
        )

    return dataset


class SplitsConfig(dg.Config):
    seed: int = Field(42, description="Split seed: the same seed and data always give the same splits.")
    val_ratio: float = 0.10
    test_ratio: float = 0.05
    curated_test_file: str = Field(
        default_factory=lambda: os.environ.get("OCR_FT_CURATED_TEST", ""),
        description="Optional text file, one original file name or content hash a line, forced into test.",
    )
    oversample: dict[str, int] = Field(default_factory=dict,
                                       description="Copies in train per category, e.g. {nested_3level: 2}.")

    def split_config(self) -> SplitConfig:
        curated: tuple[str, ...] = ()
        if self.curated_test_file:
            path = Path(self.curated_test_file)
            if not path.is_file():
                raise dg.Failure(f"curated test list {path} does not exist")
            curated = tuple(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
        unknown = set(self.oversample) - set(CATEGORIES)
        if unknown:
            raise dg.Failure(f"oversample names unknown categories {sorted(unknown)}; known: {list(CATEGORIES)}")
        return SplitConfig(seed=self.seed, val_ratio=self.val_ratio, test_ratio=self.test_ratio,
                           curated_test=curated, oversample=dict(self.oversample))


@dg.asset(deps=["dataset"], group_name=GROUP, code_version="1", automation_condition=on_upstream_change,
          kinds={"python"}, description="Deterministic, stratified train/val/test; a duplicate group never crosses splits.")
def splits(context: dg.AssetExecutionContext, config: SplitsConfig, paths: OcrFtPaths) -> dg.MaterializeResult:
    stats = build_splits(paths.sub("dataset"), paths.sub("splits"), config.split_config())
    context.log.info(f"splits: {stats['counts']}")
    if stats["curated_not_found"]:
        context.log.warning(f"{len(stats['curated_not_found'])} curated test entries match no record (rejected, or a "
                            f"typo; see dataset/rejects.jsonl): {stats['curated_not_found'][:10]}")
    return dg.MaterializeResult(
        metadata={**{f"{k}_count": v for k, v in stats["counts"].items()},
                  "by_category": stats["by_category"], "by_source": stats["by_source"],
                  "curated_not_found": len(stats["curated_not_found"]),
                  "path": dg.MetadataValue.path(str(paths.sub("splits")))},
        data_version=dg.DataVersion(stats["data_version"]),
    )


class ExportConfig(dg.Config):
    base_model: str = Field(default_factory=lambda: os.environ.get("OCR_FT_LLAMAFACTORY_MODEL", "zai-org/GLM-OCR"),
                            description="model_name_or_path written into the LLaMA-Factory training YAML.")
    config_file: str = Field(default_factory=lambda: os.environ.get("OCR_FT_TRAIN_CONFIG", ""),
                             description="Training config overlay the YAML mirrors (default: the seed recipe).")


def _export_readme(family, prompt: str) -> dict:
    """The export README for a base model family other than GLM-OCR (GLM-OCR's is the export's default)."""
    if family.name == "glm_ocr":
        return {}
    template = family.llamafactory_template
    lines = ["# ocr-ft LLaMA-Factory export", "",
             f"Base model family: {family.title}. User turn: `<image>{prompt}`; assistant turn: the label HTML.",
             f"Template: `{template}`." if template else "LLaMA-Factory has no template for this family, so no "
             "training YAML is written; the ShareGPT data is still here.", ""]
    note = [ln.lstrip("# ").rstrip() for ln in family.llamafactory_note.splitlines()]
    return {"readme": "\n".join(lines + note) + "\n"}


@dg.asset(deps=["splits"], group_name=GROUP, code_version="2", automation_condition=on_upstream_change,
          kinds={"python"}, description="LLaMA-Factory ShareGPT export with dataset_info.json and a training YAML "
          "(template glm_ocr) mirroring our config; a self-contained folder to copy to a GPU box.")
def llamafactory_export(context: dg.AssetExecutionContext, config: ExportConfig, paths: OcrFtPaths) -> dg.MaterializeResult:
    from ..train.config import load_config
    from ..train.llamafactory import write_llamafactory_config

    from ..train.llamafactory import NoTemplateError, model_family
    from ..train.modeling import effective_prompt

    data = {name: load_split(paths.sub("splits"), name) for name in SPLITS}
    out = paths.sub("export", "llamafactory")
    train_cfg = load_config(config.config_file or None, base_model=config.base_model)
    family = model_family(train_cfg)
    prompt = effective_prompt(train_cfg, family)  # the base model family's table prompt
    counts = export_llamafactory(data, paths.root, out, prompt=prompt, **_export_readme(family, prompt))
    files = ["dataset_info.json", *(f"{s}_sharegpt.json" for s in SPLITS)]
    extra: dict = {}
    try:
        yaml_path = write_llamafactory_config(train_cfg, out / "llamafactory_train.yaml", dataset_dir=".")
        files.append("llamafactory_train.yaml")
        extra["training_yaml"] = dg.MetadataValue.path(str(yaml_path))
        context.log.info(f"exported {counts} to {out}; train with: cd {out} && llamafactory-cli train {yaml_path.name}")
    except NoTemplateError as exc:  # the data export stands; only the training YAML cannot be written
        context.log.warning(f"exported {counts} to {out}; no LLaMA-Factory training YAML: {exc}")
        extra["training_yaml"] = f"none: {exc}"
    if family.native_export is not None:  # the family's own fine-tuning format beside the ShareGPT files
        for split, records in data.items():
            name = f"{split}_{family.name}{family.native_export_suffix}"
            samples = [(str(Path(r.image_path) if Path(r.image_path).is_absolute() else paths.root / r.image_path),
                        r.ground_truth_html) for r in records]
            written, left_out = family.native_export(samples, out / name)
            files.append(name)
            extra[f"{split}_{family.name}_count"] = written
            if left_out:
                context.log.warning(f"{name}: {len(left_out)} sample(s) left out, first: {left_out[0]}")
    version = sha256_json({f: sha256_file(out / f) for f in files})
    return dg.MaterializeResult(
        metadata={**{f"{k}_count": v for k, v in counts.items()}, "path": dg.MetadataValue.path(str(out)), **extra},
        data_version=dg.DataVersion(version),
    )


@dg.asset_check(asset="dataset", description="Every record's label re-validates and its image file exists.")
def dataset_records_valid(paths: OcrFtPaths) -> dg.AssetCheckResult:
    records, _ = load_dataset(paths.sub("dataset"))
    bad = []
    for r in records:
        rep = validate_label(r.ground_truth_html)
        if not rep.ok:
            bad.append(f"{r.metadata.get('original_filename')}: {rep.problems[:1]}")
        elif not (paths.root / r.image_path).is_file():
            bad.append(f"{r.metadata.get('original_filename')}: image {r.image_path} missing")
    dupes = len(records) - len({r.content_hash for r in records})
    if dupes:
        bad.append(f"{dupes} duplicate content hashes")
    return dg.AssetCheckResult(passed=not bad, metadata={"records": len(records), "problems": len(bad),
                                                          "examples": "\n".join(bad[:10])})


@dg.asset_check(asset="dataset", description="Category counts; warns when a category has no records.")
def dataset_category_counts(paths: OcrFtPaths) -> dg.AssetCheckResult:
    records, _ = load_dataset(paths.sub("dataset"))
    counts = Counter(r.category for r in records)
    missing = [c for c in CATEGORIES if not counts.get(c)]
    return dg.AssetCheckResult(passed=not missing, severity=dg.AssetCheckSeverity.WARN,
                               metadata={**{c: counts.get(c, 0) for c in CATEGORIES}, "missing": ", ".join(missing)})


@dg.asset_check(asset="splits", description="No record and no duplicate group is in more than one split.")
def splits_no_leakage(paths: OcrFtPaths) -> dg.AssetCheckResult:
    _, groups = load_dataset(paths.sub("dataset"))
    data = {name: load_split(paths.sub("splits"), name) for name in SPLITS}
    problems = leakage(data, groups)
    return dg.AssetCheckResult(passed=not problems, metadata={"problems": len(problems), "examples": "\n".join(problems[:10])})


@dg.asset_check(asset="splits", description="Category counts per split; warns when a category of train is absent from val or test.")
def splits_category_counts(paths: OcrFtPaths) -> dg.AssetCheckResult:
    data = {name: load_split(paths.sub("splits"), name) for name in SPLITS}
    counts = {name: Counter(r.category for r in rs) for name, rs in data.items()}
    gaps = [f"{c} missing from {s}" for c in counts["train"] for s in ("val", "test") if not counts[s].get(c)]
    return dg.AssetCheckResult(passed=not gaps, severity=dg.AssetCheckSeverity.WARN,
                               metadata={**{f"{s}_{c}": counts[s].get(c, 0) for s in SPLITS for c in CATEGORIES},
                                         "gaps": "\n".join(gaps)})


DATASET_CHECKS = [dataset_records_valid, dataset_category_counts, splits_no_leakage, splits_category_counts]
