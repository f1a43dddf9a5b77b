"""The Definitions of the ocr_ft code location: assets, checks, schedules, sensors, resources. Wiring only."""

import os

import dagster as dg

from .defs.evaluation import EVALUATION_ASSETS, EVALUATION_CHECKS
from .defs.dataset import DATASET_CHECKS, dataset_asset, llamafactory_export, splits
from .defs.search import SEARCH_ASSETS
from .defs.scraped import SCHEDULES, SCRAPED_ASSETS, SCRAPED_VALIDATION_ASSETS
from .defs.sources import SOURCE_ASSETS, VALIDATION_ASSETS
from .defs.training import TRAINING_ASSETS, TRAINING_CHECKS, TrainingLauncher
from .resources import default_resources

validation_assets = [*VALIDATION_ASSETS, *SCRAPED_VALIDATION_ASSETS]

# Evaluates every asset's automation condition (rebuild on upstream data-version change) every 30 s. Running
# from the start, so a changed source propagates by itself; stop it in the UI (Automation) to rebuild by hand.
automation = dg.AutomationConditionSensorDefinition(
    "ocr_ft_automation", target=dg.AssetSelection.all(), default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
)

defs = dg.Definitions(
    assets=[*SOURCE_ASSETS, *SCRAPED_ASSETS, *validation_assets, dataset_asset(validation_assets), splits,
            llamafactory_export, *TRAINING_ASSETS, *SEARCH_ASSETS, *EVALUATION_ASSETS],
    asset_checks=[*DATASET_CHECKS, *TRAINING_CHECKS, *EVALUATION_CHECKS],
    schedules=SCHEDULES,
    sensors=[automation],
    resources={
        **default_resources(),
        "training_launcher": TrainingLauncher(kind=os.environ.get("OCR_FT_TRAINING_LAUNCHER", "subprocess")),
    },
)
