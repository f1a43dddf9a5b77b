"""The Definitions of the ocr_ft code location: assets, checks, schedules, sensors, resources. Wiring only."""

import dagster as dg

from .defs.dataset import DATASET_CHECKS, dataset_asset, llamafactory_export, splits
from .defs.sources import SOURCE_ASSETS, VALIDATION_ASSETS
from .resources import default_paths

defs = dg.Definitions(
    assets=[*SOURCE_ASSETS, *VALIDATION_ASSETS, dataset_asset(VALIDATION_ASSETS), splits, llamafactory_export],
    asset_checks=DATASET_CHECKS,
    resources={"paths": default_paths()},
)
