"""Raw source assets (one per source) and their per-source validation assets."""


import os

import dagster as dg
from pydantic import Field

from ..dataset.build import VALIDATION_VERSION, manifest_path, validate_partition, validated_path
from ..dataset.validate import ValidationLimits
from ..resources import OcrFtPaths
from ..sources.existing import load_existing
from .automation import on_upstream_change
from .common import materialize_source, partition_of, progress_logger

SOURCE_GROUP = "sources"
VALIDATION_GROUP = "validation"


class FolderSourceConfig(dg.Config):
    folder: str = Field(description="Folder of png+html pairs, flat or images/ + labels/.")


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
        result = load_existing(config.folder, paths.store(), source=name, progress=progress_logger(context, name))
        return materialize_source(context, paths, name, result, folder=config.folder)

    return _source


existing = folder_source("existing", "data/samples/existing", "OCR_FT_EXISTING_DIR")


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

SOURCE_ASSETS = [existing]
VALIDATION_ASSETS = [existing_validated]
