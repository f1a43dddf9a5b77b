"""``ocr-ft evaluate``, ``ocr-ft teds`` and ``ocr-ft score``.

``ocr-ft score --pred P.json --gt G.json [--metrics teds,teds_s,grits_con,grits_top,cer,nesting] [--mode nested|pubtabnet]``
    Scores any system's predictions (the files ``ocr-ft teds`` takes); prints one JSON object with per-file
    and overall figures (see :func:`score_main`).

``ocr-ft evaluate --test-set TEST.jsonl (--endpoint URL | --model DIR [--adapter DIR]) [--data-dir DIR] --out DIR``
    Predict every test image (resumably: predictions are saved to OUT every ``--save-every`` samples and a
    re-run skips those already done), score them and write ``eval_run.json`` and the report into OUT.
    ``--compare-with OTHER_OUT`` adds an earlier run (e.g. the base model's) to the report as the baseline.
    Exit code 0; 1 when some samples could not be predicted (the report is still written); 2 on bad input.

``ocr-ft teds --pred PRED.json --gt GT.json [--mode pubtabnet|nested]``
    PubTabNet-style files (``name -> {"html": ...}``, or ``name -> "html"``); prints exactly one JSON
    object ``{name: {"teds": x, "teds_s": y}}`` for every ground-truth name (a missing prediction scores
    0), always these two keys and nothing else.  A pair that could not be scored (timed out, metric error)
    has ``null`` for both, is named with the reason on stderr, and makes the exit code 1.  Exit code 0 when
    every pair was scored; 2 on bad input (nothing printed on stdout).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .teds_metric import MODES, teds_batch


def _err(msg: str) -> int:
    print(f"ocr-ft: error: {msg}", file=sys.stderr)
    return 2


# ---------------------------------------------------------------------------------------------- teds
def _load_pair_maps(args) -> tuple[dict[str, str], dict[str, str]]:
    """``(ground truth, predictions)`` of ``--gt`` and ``--pred``; ``ValueError`` names the bad file."""
    return _load_html_map(args.gt, "ground-truth"), _load_html_map(args.pred, "prediction")


def _load_html_map(path: str, what: str) -> dict[str, str]:
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{what} file not found: {p}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{what} file {p} is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{what} file {p}: expected an object name -> {{\"html\": ...}}, got {type(data).__name__}")
    out = {}
    for name, value in data.items():
        if isinstance(value, dict):
            value = value.get("html")
        if not isinstance(value, str):
            raise ValueError(f"{what} file {p}: entry {name!r} has no HTML string (expected \"html\": \"...\")")
        out[name] = value
    return out


def teds_main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="ocr-ft teds", description="TEDS of PubTabNet-style prediction files")
    ap.add_argument("--pred", required=True, help="JSON: name -> {\"html\": ...} (or name -> html)")
    ap.add_argument("--gt", required=True, help="JSON: name -> {\"html\": ...}")
    ap.add_argument("--mode", choices=MODES, default="nested")
    ap.add_argument("--workers", type=int, default=None, help="processes (default: CPU count)")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per table before giving up on it")
    args = ap.parse_args(argv)
    try:
        gt, pred = _load_pair_maps(args)
    except ValueError as exc:
        return _err(str(exc))
    names = list(gt)
    results = teds_batch([(pred.get(n, ""), gt[n]) for n in names], args.mode, args.workers, args.timeout)
    out, failed = {}, []
    for name, r in zip(names, results):
        out[name] = {"teds": r.teds, "teds_s": r.teds_s}
        if r.teds is None or r.teds_s is None:
            failed.append(name)
            reason = r.error or ("timed out" if r.timed_out else "no score")
            print(f"ocr-ft teds: {name}: not scored: {reason}", file=sys.stderr)
    print(json.dumps(out, ensure_ascii=False))
    if failed:
        print(f"ocr-ft teds: {len(failed)} of {len(names)} pair(s) not scored (null in the output)", file=sys.stderr)
        return 1
    return 0


# --------------------------------------------------------------------------------------------- score
SCORE_METRICS = ("teds", "teds_s", "grits_con", "grits_top", "cer", "nesting")


def score_main(argv: list[str] | None = None) -> int:
    """``ocr-ft score``: any system's PubTabNet-style predictions, per file and overall, as one JSON object
    ``{"mode", "metrics", "files": {name: {metric: value, "error": ...}}, "overall": {metric: mean}}`` (CER
    overall is the corpus rate; a pair that could not be scored has ``null`` figures, its reason in
    ``error`` and on stderr, and makes the exit code 1)."""
    from .metrics import error_rate, safe_sample_metrics

    ap = argparse.ArgumentParser(prog="ocr-ft score", description="score PubTabNet-style prediction files")
    ap.add_argument("--pred", required=True, help="JSON: name -> {\"html\": ...} (or name -> html)")
    ap.add_argument("--gt", required=True, help="JSON: name -> {\"html\": ...}")
    ap.add_argument("--metrics", default=",".join(SCORE_METRICS),
                    help=f"comma-separated, any of {','.join(SCORE_METRICS)} (default: all)")
    ap.add_argument("--mode", choices=MODES, default="nested", help="TEDS mode (default nested)")
    ap.add_argument("--workers", type=int, default=None, help="TEDS processes (default: CPU count)")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per table for TEDS")
    args = ap.parse_args(argv)
    wanted = [m.strip() for m in args.metrics.split(",") if m.strip()]
    unknown = sorted(set(wanted) - set(SCORE_METRICS))
    if unknown or not wanted:
        return _err(f"unknown metric(s) {', '.join(unknown) or '(none given)'}; expected some of "
                    f"{', '.join(SCORE_METRICS)}")
    try:
        gt, pred = _load_pair_maps(args)
    except ValueError as exc:
        return _err(str(exc))
    names = list(gt)
    teds_results = (teds_batch([(pred.get(n, ""), gt[n]) for n in names], args.mode, args.workers, args.timeout)
                    if {"teds", "teds_s"} & set(wanted) else [None] * len(names))
    files: dict[str, dict] = {}
    cer_edits = cer_len = 0
    for name, t in zip(names, teds_results):
        p = pred.get(name, "")
        row: dict = {}
        errors = []
        if t is not None:
            row["teds"], row["teds_s"] = t.teds, t.teds_s
            if t.teds is None:
                errors.append(t.error or "TEDS timed out")
        if {"grits_con", "grits_top", "cer", "nesting"} & set(wanted):
            m = safe_sample_metrics(p, gt[name], name)
            if m.get("metric_error"):
                errors.append(m["metric_error"])
                row.update(grits_con=None, grits_top=None, cer=None, nesting=None)
            else:
                row.update(grits_con=m["content_f1"], grits_top=m["topology_f1"], cer=m["cer"],
                           nesting=float(m["depth_pred"] == m["depth_gt"]))
                cer_edits += m["cer_edits"]
                cer_len += m["cer_ref_len"]
        files[name] = {k: row.get(k) for k in wanted}
        files[name]["error"] = "; ".join(errors) or None
        for e in errors:
            print(f"ocr-ft score: {name}: not scored: {e}", file=sys.stderr)
    overall: dict = {"n": len(names)}
    for metric in wanted:
        values = [f[metric] for f in files.values() if f[metric] is not None]
        overall[metric] = sum(values) / len(values) if values else None
    if "cer" in wanted:
        overall["cer"] = error_rate(cer_edits, cer_len) if any(f["cer"] is not None for f in files.values()) else None
    failed = [n for n, f in files.items() if f["error"]]
    overall["unscored"] = len(failed)
    print(json.dumps({"mode": args.mode, "metrics": wanted, "files": files, "overall": overall}, ensure_ascii=False))
    return 1 if failed else 0


# ------------------------------------------------------------------------------------------ evaluate
def _evaluate_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="ocr-ft evaluate", description="evaluate a model or an endpoint on a test set")
    ap.add_argument("--test-set", required=True, help="test JSONL (image_path, ground_truth_html, category, source)")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--endpoint", help="OpenAI-compatible server URL (key from $OCR_FT_ENDPOINT_API_KEY)")
    src.add_argument("--model", help="local GLM-OCR model directory (or hub id available offline)")
    ap.add_argument("--adapter", help="LoRA adapter directory (or a training run directory) for --model")
    ap.add_argument("--data-dir", default=os.environ.get("OCR_FT_DATA_DIR", "data"),
                    help="directory the test set's image paths are relative to (default: $OCR_FT_DATA_DIR or ./data)")
    ap.add_argument("--out", required=True, help="output directory (predictions, eval_run.json, report)")
    ap.add_argument("--save-every", type=int, default=10, help="save predictions every N samples (default 10)")
    ap.add_argument("--limit", type=int, default=None, help="evaluate only the first N samples")
    ap.add_argument("--name", help="run name in the report (default: finetuned with --adapter, else base)")
    ap.add_argument("--compare-with", help="output directory of an earlier run to show as the baseline")
    ap.add_argument("--mode", choices=MODES, default="nested", help="TEDS mode (default nested)")
    ap.add_argument("--workers", type=int, default=None, help="TEDS processes (default: CPU count)")
    ap.add_argument("--teds-timeout", type=float, default=120.0, help="seconds per table for TEDS")
    ap.add_argument("--served-model", help="endpoint: model name to request (default: first of /v1/models)")
    ap.add_argument("--family", help="endpoint: the served model's family (see `ocr-ft models`; default glm_ocr): "
                    "its table prompt, and its own table format (OTSL, LaTeX tabular) converted to HTML")
    ap.add_argument("--concurrency", type=int, default=4, help="endpoint: parallel requests")
    ap.add_argument("--request-timeout", type=float, default=120.0, help="endpoint: seconds per request")
    ap.add_argument("--retries", type=int, default=3, help="endpoint: retries per request")
    ap.add_argument("--max-new-tokens", type=int, default=4096,
                    help="generation budget per page (raised to the longest test label in tokens + a margin)")
    ap.add_argument("--tokenizer", help="endpoint: tokenizer directory (the served model's) to size the generation "
                    "budget by the longest test label, as local evaluation does")
    ap.add_argument("--batch-size", type=int, default=4, help="local model: images per generate call")
    ap.add_argument("--device", help="local model: torch device (default: CUDA when available)")
    ap.add_argument("--config", help="local model: training config YAML (prompt, pixel cap, precision)")
    return ap


def _token_counter(tokenizer_dir: str):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])


def evaluate_main(argv: list[str] | None = None) -> int:
    from .predictors import EndpointPredictor
    from .report import build_report
    from .results import EvalRun
    from .runner import RUN_FILE, TestSetError, evaluate

    args = _evaluate_parser().parse_args(argv)
    if args.adapter and not args.model:
        return _err("--adapter needs --model")
    if args.save_every < 1 or (args.limit is not None and args.limit < 1):
        return _err("--save-every and --limit must be positive")
    if not Path(args.data_dir).is_dir():
        return _err(f"--data-dir {args.data_dir} is not a directory")
    baseline = None
    if args.compare_with:
        try:
            baseline = EvalRun.load(Path(args.compare_with) / RUN_FILE)
        except (FileNotFoundError, ValueError) as exc:
            return _err(f"--compare-with: {exc}")
    log = lambda msg: print(f"ocr-ft evaluate: {msg}", file=sys.stderr)  # noqa: E731
    try:
        if args.endpoint:
            predictor = EndpointPredictor(args.endpoint, model=args.served_model, concurrency=args.concurrency,
                                          timeout_s=args.request_timeout, retries=args.retries,
                                          max_tokens=args.max_new_tokens, family=args.family)
        else:
            from ocr_ft.train import load_config
            from .predictors import LocalModelPredictor

            config = load_config(args.config) if args.config else None
            predictor = LocalModelPredictor(args.model, args.adapter, config=config, device=args.device,
                                            batch_size=args.batch_size, max_new_tokens=args.max_new_tokens)
        name = args.name or ("finetuned" if args.adapter else "base")
        run = evaluate(args.test_set, predictor, args.data_dir, args.out, name, save_every=args.save_every,
                       limit=args.limit, mode=args.mode, workers=args.workers, teds_timeout_s=args.teds_timeout,
                       log=log, count_tokens=_token_counter(args.tokenizer) if args.tokenizer else None)
    except TestSetError as exc:
        return _err(str(exc))
    except (ValueError, OSError, RuntimeError) as exc:  # bad model dir, foreign predictions, unreadable files
        return _err(f"{type(exc).__name__}: {exc}")
    runs = {run.name: run}
    if baseline is not None:
        if baseline.name == run.name:
            baseline.name = f"{baseline.name} ({args.compare_with})"
        runs = {baseline.name: baseline, run.name: run}
    report = build_report(runs, args.out, data_dir=args.data_dir)
    overall = report["runs"][run.name]["summary"]["overall"]
    throughput = report["runs"][run.name]["summary"]["throughput"]
    print(json.dumps({"run": run.name, "n": overall["n"], "teds": overall["teds"],
                      "teds_unscored": overall["teds_unscored"], "cer": overall["cer"],
                      "latency_p50_s": (overall.get("latency") or {}).get("p50"),
                      "pages_per_s": throughput["pages_per_s"],
                      "prediction_errors": overall["prediction_errors"],
                      "regression": (report.get("comparison") or {}).get("regression"),
                      "report": str(Path(args.out) / "report.html")}, ensure_ascii=False))
    return 1 if overall["prediction_errors"] else 0
