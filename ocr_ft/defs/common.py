"""Small helpers shared by the asset modules: progress logging and source materialization results."""


import time
from collections import Counter

import dagster as dg

from ..dataset.build import manifest_path, write_manifest
from ..dataset.records import SourceResult
from ..resources import OcrFtPaths

UNPARTITIONED = "all"


def partition_of(context) -> str:
    return context.partition_key if context.has_partition_key else UNPARTITIONED


def progress_logger(context, label: str, every_s: float = 5.0):
    """A ``progress(done, total)`` callback that logs at most every ``every_s`` seconds, and at the end."""
    state = {"last": 0.0, "start": time.monotonic()}

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if done >= total or now - state["last"] >= every_s:
            state["last"] = now
            rate = done / max(now - state["start"], 1e-9)
            context.log.info(f"{label}: {done}/{total} ({100 * done / max(total, 1):.0f}%, {rate:.1f}/s)")

    return progress


def materialize_source(context, paths: OcrFtPaths, source: str, result: SourceResult, **extra_metadata) -> dg.MaterializeResult:
    """Write a source partition's manifest and report it; the data version is the manifest's hash."""
    partition = partition_of(context)
    path = manifest_path(paths.root, source, partition)
    version = write_manifest(result, path)
    reasons = Counter(r.reason for r in result.rejects)
    context.log.info(f"{source}/{partition}: {len(result.pairs)} pairs, {len(result.rejects)} quarantined {dict(reasons)}")
    return dg.MaterializeResult(
        metadata={
            "pairs": len(result.pairs),
            "quarantined": len(result.rejects),
            "quarantine_reasons": dict(sorted(reasons.items())),
            "manifest": dg.MetadataValue.path(str(path)),
            **{k: v for k, v in result.stats.items() if isinstance(v, (int, float, str, bool))},
            **extra_metadata,
        },
        data_version=dg.DataVersion(version),
    )
