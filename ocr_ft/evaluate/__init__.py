"""The evaluation room: TEDS (PubTabNet-exact and nesting-aware), text and grid metrics, predictors,
resumable evaluation runs and the report.  Plain Python; torch and matplotlib load only when used.

Typical use::

    from ocr_ft.evaluate import EndpointPredictor, evaluate, build_report, compare
    run = evaluate("test.jsonl", EndpointPredictor("http://localhost:8000"), data_dir, out_dir, "finetuned")
    base = EvalRun.load(base_out_dir / "eval_run.json")
    build_report({"base": base, "finetuned": run}, out_dir)
    compare(base, run)["regression"]

Several models in one report: ``build_report(runs, out_dir, failed={...}, primary=..., baseline=...)`` writes
the comparison table (:func:`comparison_table`); :mod:`ocr_ft.evaluate.models` checks a ``models`` list.
"""

from .metrics import char_errors, latency_stats, sample_metrics, table_f1, table_text, word_errors
from .predictors import EndpointPredictor, LocalModelPredictor, Prediction, extract_table_html
from .models import ModelSpec, ModelSpecError, choose_roles, parse_model_specs
from .report import TABLE_METRICS, TARGETS, build_report, check_targets, compare, comparison_table
from .results import EvalRun, SampleResult, summarize
from .runner import evaluate, load_test_set, predict_resumable, score
from .teds_metric import MODES, TedsResult, teds, teds_batch, teds_scores

__all__ = [
    "MODES", "TABLE_METRICS", "TARGETS", "EndpointPredictor", "EvalRun", "LocalModelPredictor", "ModelSpec",
    "ModelSpecError", "Prediction", "SampleResult", "TedsResult", "build_report", "char_errors", "check_targets",
    "choose_roles", "compare", "comparison_table", "evaluate", "extract_table_html", "parse_model_specs",
    "latency_stats", "load_test_set", "predict_resumable", "sample_metrics", "score", "summarize", "table_f1",
    "table_text", "teds", "teds_batch", "teds_scores", "word_errors",
]
