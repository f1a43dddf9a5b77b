"""The evaluation room: TEDS (PubTabNet-exact and nesting-aware), text and grid metrics, predictors,
resumable evaluation runs and the report.  Plain Python; torch and matplotlib load only when used.

Typical use::

    from ocr_ft.evaluate import EndpointPredictor, evaluate, build_report, compare
    run = evaluate("test.jsonl", EndpointPredictor("http://localhost:8000"), data_dir, out_dir, "finetuned")
    base = EvalRun.load(base_out_dir / "eval_run.json")
    build_report({"base": base, "finetuned": run}, out_dir)
    compare(base, run)["regression"]
"""

from .metrics import char_errors, latency_stats, sample_metrics, table_f1, table_text, word_errors
from .predictors import EndpointPredictor, LocalModelPredictor, Prediction, extract_table_html
from .report import TARGETS, build_report, check_targets, compare
from .results import EvalRun, SampleResult, summarize
from .runner import evaluate, load_test_set, predict_resumable, score
from .teds_metric import MODES, TedsResult, teds, teds_batch, teds_scores

__all__ = [
    "MODES", "TARGETS", "EndpointPredictor", "EvalRun", "LocalModelPredictor", "Prediction", "SampleResult",
    "TedsResult", "build_report", "char_errors", "check_targets", "compare", "evaluate", "extract_table_html",
    "latency_stats", "load_test_set", "predict_resumable", "sample_metrics", "score", "summarize", "table_f1",
    "table_text", "teds", "teds_batch", "teds_scores", "word_errors",
]
