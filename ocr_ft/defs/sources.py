"""Raw source assets (one per source) and their per-source validation assets."""


import os

import dagster as dg
from pydantic import Field

from ..dataset.build import VALIDATION_VERSION, manifest_path, validate_partition, validated_path
from ..dataset.validate import ValidationLimits
from ..resources import OcrFtPaths, RendererResource
from ..sources.existing import load_existing
from .automation import on_upstream_change
from .common import materialize_source, partition_of, progress_logger

SOURCE_GROUP = "sources"
VALIDATION_GROUP = "validation"


class FolderSourceConfig(dg.Config):
    folder: str = Field(description="Folder of png+html pairs, flat or images/ + labels/.")
    deskew: bool = Field(False, description="Rotate back skewed scans (OpenCV) before storing.")
    clahe: bool = Field(False, description="Contrast-equalise (CLAHE) before storing.")
    source_dpi: float | None = Field(None, description="DPI the images were scanned at (with target_dpi: resample).")
    target_dpi: float | None = Field(None, description="DPI to resample to (e.g. 200), given source_dpi.")
    min_width: int | None = Field(None, description="Scale up images narrower than this (pixels).")
    max_width: int | None = Field(None, description="Scale down images wider than this (pixels).")
    augment_copies: int = Field(0, description="Degraded copies per pair (rotation, noise, blur, JPEG); label unchanged.")
    seed: int = Field(0, description="Seed of the augmentation.")

    def preprocess_options(self):
        from ..images import PreprocessOptions

        return PreprocessOptions(deskew=self.deskew, clahe=self.clahe, source_dpi=self.source_dpi,
                                 target_dpi=self.target_dpi, min_width=self.min_width, max_width=self.max_width)


def folder_source(name: str, default_folder: str, env_var: str | None = None) -> dg.AssetsDefinition:
    """A raw source asset reading a folder of pre-labelled pairs (the ``existing`` source is one)."""

    class _Config(FolderSourceConfig):
        folder: str = Field(
            default_factory=lambda: os.environ.get(env_var, default_folder) if env_var else default_folder,
            description="Folder of png+html pairs, flat or images/ + labels/"
            + (f" (env {env_var}, default {default_folder})." if env_var else "."),
        )

    _Config.__name__ = f"{name.title().replace('_', '')}Config"

    @dg.asset(name=name, group_name=SOURCE_GROUP, code_version="1", kinds={"python"},
              description="Pre-labelled png+html pairs read from a folder (flat, or images/ + labels/).")
    def _source(context: dg.AssetExecutionContext, config: _Config, paths: OcrFtPaths) -> dg.MaterializeResult:
        from ..images import PreprocessOptions, augment_bytes, preprocess_bytes

        options = config.preprocess_options()
        preprocess = (lambda data: preprocess_bytes(data, options)) if options != PreprocessOptions() else None
        result = load_existing(config.folder, paths.store(), source=name, preprocess=preprocess,
                               augment=augment_bytes if config.augment_copies else None,
                               augment_copies=config.augment_copies, seed=config.seed,
                               progress=progress_logger(context, name))
        return materialize_source(context, paths, name, result, folder=config.folder)

    return _source


existing = folder_source("existing", "data/samples/existing", "OCR_FT_EXISTING_DIR")


def shard_partitions(env_var: str, default: int) -> dg.StaticPartitionsDefinition:
    return dg.StaticPartitionsDefinition([f"shard-{i:03d}" for i in range(int(os.environ.get(env_var, default)))])


def shard_index(key: str) -> int:
    return int(key.rsplit("-", 1)[1])


synthetic_partitions = shard_partitions("OCR_FT_SYNTHETIC_SHARDS", 10)
shilu_partitions = shard_partitions("OCR_FT_SHILU_SHARDS", 30)


class GeneratedSourceConfig(dg.Config):
    seed: int = Field(20260101, description="Base seed: the same seed and code version give byte-identical tables.")
    templates: list[str] = Field(default_factory=list, description="Template names to use (empty: all).")


class SyntheticConfig(GeneratedSourceConfig):
    per_shard: int = Field(default_factory=lambda: int(os.environ.get("OCR_FT_SYNTHETIC_PER_SHARD", 100)),
                           description="Tables per shard (env OCR_FT_SYNTHETIC_PER_SHARD; 10 shards x 100 = the seed's 1,000).")


class ShiluConfig(GeneratedSourceConfig):
    per_shard: int = Field(default_factory=lambda: int(os.environ.get("OCR_FT_SHILU_PER_SHARD", 100)),
                           description="Statements per shard (env OCR_FT_SHILU_PER_SHARD; 30 shards x 100 = the seed's 3,000).")


@dg.asset(partitions_def=synthetic_partitions, group_name=SOURCE_GROUP, code_version="1", pool="browser", kinds={"python"},
          description="Jinja2 tables (plain, merged, 2- and 3-level nested financial statements) rendered by Chromium.")
def synthetic(context: dg.AssetExecutionContext, config: SyntheticConfig, paths: OcrFtPaths,
              renderer: RendererResource) -> dg.MaterializeResult:
    from ..sources.synthetic import generate_synthetic

    with renderer.open(paths) as r:
        result = generate_synthetic(shard_index(context.partition_key), config.per_shard, config.seed, r,
                                    templates=config.templates or None, progress=progress_logger(context, "synthetic"))
    return materialize_source(context, paths, "synthetic", result)


@dg.asset(partitions_def=shilu_partitions, group_name=SOURCE_GROUP, code_version="1", pool="browser", kinds={"python"},
          description="Bank financial statements from 16 templates (2-/3-level nesting, merged cells), with metadata.json.")
def synthetic_shilu(context: dg.AssetExecutionContext, config: ShiluConfig, paths: OcrFtPaths,
                    renderer: RendererResource) -> dg.MaterializeResult:
    from ..sources.shilu import generate_shilu

    meta_dir = paths.sub("sources", "synthetic_shilu", context.partition_key)
    with renderer.open(paths) as r:
        result = generate_shilu(shard_index(context.partition_key), config.per_shard, config.seed, r, out_dir=meta_dir,
                                templates=config.templates or None, progress=progress_logger(context, "synthetic_shilu"))
    return materialize_source(context, paths, "synthetic_shilu", result,
                              metadata_json=dg.MetadataValue.path(str(meta_dir / "metadata.json")))


class ValidationConfig(dg.Config):
    max_seq_len: int = Field(4096, description="Token budget (image + prompt + label) of one sample.")
    max_pixels: int = Field(ValidationLimits.max_pixels, description="Pixel cap the model sees; sets image tokens.")
    min_side: int = Field(16, description="Smallest accepted image side, in pixels.")

    def limits(self) -> ValidationLimits:
        return ValidationLimits(max_seq_len=self.max_seq_len, max_pixels=self.max_pixels, min_side=self.min_side)


def validated_asset(source: str, partitions_def: dg.PartitionsDefinition | None = None) -> dg.AssetsDefinition:
    """The validation asset of ``source``: same partitions, rebuilt when the source's data version changes."""

    @dg.asset(
        name=f"{source}_validated",
        deps=[source],
        partitions_def=partitions_def,
        group_name=VALIDATION_GROUP,
        code_version=VALIDATION_VERSION,
        automation_condition=on_upstream_change,
        kinds={"python"},
        description=f"Every {source} pair checked (label grid, image decodes, size, token budget); rejects kept with their reason.",
    )
    def _validated(context: dg.AssetExecutionContext, config: ValidationConfig, paths: OcrFtPaths) -> dg.MaterializeResult:
        partition = partition_of(context)
        manifest = manifest_path(paths.root, source, partition)
        if not manifest.exists():
            raise dg.Failure(f"{source} partition {partition!r} has no manifest at {manifest}: materialize {source} first")
        stats = validate_partition(manifest, validated_path(paths.root, source, partition), paths.root, config.limits(),
                                   progress=progress_logger(context, f"{source}_validated"))
        context.log.info(f"{source}/{partition}: {stats['records']} valid, {stats['rejects']} rejected, "
                         f"{stats['reused']} reused from the last run")
        return dg.MaterializeResult(
            metadata={k: v for k, v in stats.items() if k != "data_version"},
            data_version=dg.DataVersion(stats["data_version"]),
        )

    return _validated


existing_validated = validated_asset("existing")
synthetic_validated = validated_asset("synthetic", synthetic_partitions)
synthetic_shilu_validated = validated_asset("synthetic_shilu", shilu_partitions)

SOURCE_ASSETS = [existing, synthetic, synthetic_shilu]
VALIDATION_ASSETS = [existing_validated, synthetic_validated, synthetic_shilu_validated]
