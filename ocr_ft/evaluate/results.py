"""Scored samples and evaluation runs: what a run holds, how it is summarised, saved and loaded.

Summary conventions (every figure but throughput is given overall, by category and by source):

* ``teds`` / ``teds_s``: mean over *all* samples, a sample whose TEDS could not be computed (it timed out
  or the metric failed on it) counting as 0, and ``teds_unscored`` says how many such samples there are.
  A prediction too big or too odd to score is the model's failure (a runaway repetition is the typical
  case), so leaving it out of the mean would hide exactly the regressions the comparison is meant to catch;
* ``cer`` / ``wer``: corpus rates, total edits over total reference length (``cer_mean`` is the mean of
  per-sample rates);
* ``content_*`` / ``topology_*``: mean per-sample grid precision, recall and F1;
* ``nesting_accuracy``: share of samples whose predicted nesting depth equals the true one;
* ``latency``: n, mean, p50, p95, max of a page's latency in seconds (what a page experiences: the wall
  time of the request or generate call it was part of, a whole batch's for a batched local model), over
  every sample with a latency, failed predictions included (the runner sets a failed page's latency to at
  least the predictor's timeout), so a timing-out model cannot pass the latency target;
* ``truncated``: cut-off outputs (the generation hit ``max_new_tokens``; scored as they are);
* ``stray_tables``: tables written inside a table but outside any cell (either side), which no metric
  can place on a grid: counted here, not silently dropped;
* ``metric_errors`` / ``too_large``: samples whose CER / table F1 / nesting (resp. any metric, TEDS included)
  could not be computed, or were refused as over the size limits;
* ``prediction_errors``: samples the predictor failed on (scored as an empty prediction);
* ``throughput`` (the run's summary only, not per group): pages predicted per second of prediction wall
  time over the run (all prediction sessions of a resumed run added up), from the run's ``meta``; with
  batching or concurrency it is not ``1 / latency``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ocr_ft.dataset.records import CATEGORIES
from ocr_ft.storage import atomic_write_json

from .metrics import error_rate, latency_stats

_MEAN_FIELDS = (
    "content_precision", "content_recall", "content_f1", "topology_precision", "topology_recall", "topology_f1",
)


@dataclass
class SampleResult:
    key: str
    image_path: str
    category: str
    source: str
    gt_html: str
    pred_html: str
    latency_s: float | None
    error: str | None = None  # the predictor's error, if it failed on this sample
    teds: float | None = None
    teds_s: float | None = None
    teds_timed_out: bool = False
    teds_error: str | None = None
    cer: float = 0.0
    cer_edits: int = 0
    cer_ref_len: int = 0
    wer: float = 0.0
    wer_edits: int = 0
    wer_ref_len: int = 0
    content_precision: float = 0.0
    content_recall: float = 0.0
    content_f1: float = 0.0
    topology_precision: float = 0.0
    topology_recall: float = 0.0
    topology_f1: float = 0.0
    depth_gt: int = 0
    depth_pred: int = 0
    raw_output: str = ""
    stray_tables_pred: int = 0  # tables written inside a table but outside any cell (not in the grid)
    stray_tables_gt: int = 0
    truncated: bool = False  # the generation hit max_new_tokens (a cut-off output)
    metric_error: str | None = None  # CER / table F1 / nesting could not be computed ("too_large: ..." etc.)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SampleResult":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def teds_or_zero(sample: SampleResult, structure_only: bool = False) -> float:
    """The sample's TEDS (TEDS-S) for means: 0 when it could not be scored (timed out, metric error)."""
    value = sample.teds_s if structure_only else sample.teds
    return 0.0 if value is None else value


def summarize(samples: list[SampleResult]) -> dict[str, Any]:
    """Summary figures of ``samples`` (see the module docstring: an unscored TEDS counts as 0)."""
    if not samples:
        return {"n": 0}
    cer_edits = sum(s.cer_edits for s in samples)
    cer_len = sum(s.cer_ref_len for s in samples)
    wer_edits = sum(s.wer_edits for s in samples)
    wer_len = sum(s.wer_ref_len for s in samples)
    out: dict[str, Any] = {
        "n": len(samples),
        "teds": _mean([teds_or_zero(s) for s in samples]),
        "teds_s": _mean([teds_or_zero(s, structure_only=True) for s in samples]),
        "teds_unscored": sum(1 for s in samples if s.teds is None),
        "cer": error_rate(cer_edits, cer_len),
        "cer_mean": _mean([s.cer for s in samples]),
        "wer": error_rate(wer_edits, wer_len),
        "nesting_accuracy": _mean([float(s.depth_pred == s.depth_gt) for s in samples]),
        "latency": latency_stats([s.latency_s for s in samples if s.latency_s is not None]),
        "prediction_errors": sum(1 for s in samples if s.error),
        "truncated": sum(1 for s in samples if s.truncated),
        "metric_errors": sum(1 for s in samples if s.metric_error),
        "stray_tables": sum(s.stray_tables_pred + s.stray_tables_gt for s in samples),
        "too_large": sum(1 for s in samples if "too_large" in ((s.metric_error or "") + (s.teds_error or ""))),
    }
    for name in _MEAN_FIELDS:
        out[name] = _mean([getattr(s, name) for s in samples])
    return out


def throughput(meta: dict[str, Any]) -> dict[str, Any]:
    """``pages``, ``wall_s`` and ``pages_per_s`` of a run's prediction, from its ``meta``
    (``prediction_pages`` and ``prediction_wall_s``, written by :func:`ocr_ft.evaluate.runner.evaluate`);
    ``None`` values when the run does not record them."""
    pages, wall = meta.get("prediction_pages"), meta.get("prediction_wall_s")
    known = isinstance(pages, int) and isinstance(wall, (int, float))
    return {"pages": pages if known else None, "wall_s": wall if known else None,
            "pages_per_s": pages / wall if known and pages and wall > 0 else None,
            "batch_size": meta.get("batch_size"), "concurrency": meta.get("concurrency")}


def _group(samples: list[SampleResult], attr: str, order: tuple[str, ...] = ()) -> dict[str, dict]:
    keys = [k for k in order if any(getattr(s, attr) == k for s in samples)]
    keys += sorted({getattr(s, attr) for s in samples} - set(keys))
    return {k: summarize([s for s in samples if getattr(s, attr) == k]) for k in keys}


@dataclass
class EvalRun:
    """One model (or endpoint) evaluated on one test set."""

    name: str
    samples: list[SampleResult]
    meta: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "overall": summarize(self.samples),
            "by_category": _group(self.samples, "category", CATEGORIES),
            "by_source": _group(self.samples, "source"),
            "throughput": throughput(self.meta),
        }

    def save(self, path: str | Path) -> Path:
        """Write the run (samples, meta, summary) as one JSON file, atomically."""
        return atomic_write_json(
            path,
            {"name": self.name, "meta": self.meta, "summary": self.summary(),
             "samples": [s.to_dict() for s in self.samples]},
        )

    @classmethod
    def load(cls, path: str | Path) -> "EvalRun":
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(
                name=data["name"],
                samples=[SampleResult.from_dict(s) for s in data["samples"]],
                meta=dict(data.get("meta") or {}),
            )
        except FileNotFoundError:
            raise FileNotFoundError(f"evaluation run file not found: {path}") from None
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: not an evaluation run file ({exc})") from exc
