"""An evaluation run: read the test set, predict (resumably), score, save.

The output directory holds

* ``predictions.jsonl`` - one row per predicted sample (key, html, raw output, latency, error, predictor),
  rewritten atomically every ``save_every`` predictions and when the loop ends or is interrupted.  A
  re-run skips every sample already predicted without error and predicts the rest;
* ``prediction_sessions.json`` - one entry per prediction session (a run and each resumption of it): the
  pages it predicted (failed attempts included) and the wall seconds its prediction loop took, saved with
  the predictions.  The run's throughput is their pages over their seconds, summed over the sessions;
* ``eval_run.json`` - the scored :class:`~ocr_ft.evaluate.results.EvalRun` (samples, meta, summary);
* the report files (see :mod:`ocr_ft.evaluate.report`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from ocr_ft.storage import atomic_write_json, atomic_write_jsonl, read_jsonl
from ocr_ft.tables import TableParseError, parse_tables

from .metrics import safe_sample_metrics
from .predictors import Predictor
from .results import EvalRun, SampleResult
from .teds_metric import teds_batch

PREDICTIONS_FILE = "predictions.jsonl"
SESSIONS_FILE = "prediction_sessions.json"
RUN_FILE = "eval_run.json"
# How text is compared; recorded in every run's meta so that runs scored differently are never compared.
NORMALIZATION = "cells NFC + whitespace collapsed; nested TEDS under NFKC; GriTS content LCS"


class TestSetError(ValueError):
    """The test set (or the images it names) cannot be used; the message names the file and line."""

    __test__ = False  # not a pytest test class


@dataclass
class TestSample:
    __test__ = False  # not a pytest test class

    key: str  # content_hash when the record has one, else image_path (made unique with #n)
    image_path: str  # relative to the data directory
    gt_html: str
    category: str
    source: str
    line: int  # 1-based line in the test JSONL, for messages


def infer_category(html: str) -> str:
    """``nested_3level`` / ``nested_2level`` by depth, ``merged`` with any span, else ``plain``."""
    tables = parse_tables(html)
    depth = max((t.depth for t in tables), default=0)
    if depth >= 3:
        return "nested_3level"
    if depth == 2:
        return "nested_2level"
    spans = any(c.rowspan > 1 or c.colspan > 1 for t in tables for tt in t.iter_tables() for c in tt.cells())
    return "merged" if spans else "plain"


def load_test_set(path: str | Path) -> list[TestSample]:
    """Records of the test JSONL (``image_path`` and ``ground_truth_html`` required; ``category`` inferred
    from the label and ``source`` "unknown" when absent).  Raises :class:`TestSetError` naming file:line."""
    path = Path(path)
    if not path.is_file():
        raise TestSetError(f"test set not found: {path}")
    samples: list[TestSample] = []
    seen: dict[str, int] = {}
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise TestSetError(f"{where}: not a JSON line ({exc.msg})") from None
            if not isinstance(row, dict):
                raise TestSetError(f"{where}: expected a JSON object, got {type(row).__name__}")
            for name in ("image_path", "ground_truth_html"):
                if not isinstance(row.get(name), str) or not row[name].strip():
                    raise TestSetError(f"{where}: missing or empty {name!r}")
            category = row.get("category")
            if not category:
                try:
                    category = infer_category(row["ground_truth_html"])
                except TableParseError as exc:
                    raise TestSetError(f"{where}: ground_truth_html does not parse: {exc}") from None
            key = str(row.get("content_hash") or row["image_path"])
            seen[key] = seen.get(key, 0) + 1
            if seen[key] > 1:
                key = f"{key}#{seen[key]}"
            samples.append(TestSample(key, row["image_path"], row["ground_truth_html"], str(category),
                                      str(row.get("source") or "unknown"), lineno))
    if not samples:
        raise TestSetError(f"{path}: no records")
    return samples


def check_images(samples: Sequence[TestSample], data_dir: str | Path, test_set: str | Path = "test set") -> None:
    """Raise :class:`TestSetError` listing the samples whose image file is missing."""
    data_dir = Path(data_dir)
    missing = [s for s in samples if not (data_dir / s.image_path).is_file()]
    if missing:
        shown = "; ".join(f"line {s.line}: {data_dir / s.image_path}" for s in missing[:5])
        more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
        raise TestSetError(f"{test_set}: {len(missing)} image(s) not found under {data_dir}: {shown}{more}")


def load_predictions(out_dir: str | Path) -> dict[str, dict]:
    """Rows of ``out_dir/predictions.jsonl`` by key (empty when there is none yet)."""
    path = Path(out_dir) / PREDICTIONS_FILE
    if not path.is_file():
        return {}
    return {row["key"]: row for row in read_jsonl(path)}


def load_sessions(out_dir: str | Path) -> list[dict]:
    """The prediction sessions recorded in ``out_dir`` (``[]`` when there are no predictions yet: a
    sessions file without its predictions is stale)."""
    out_dir = Path(out_dir)
    path = out_dir / SESSIONS_FILE
    if not (out_dir / PREDICTIONS_FILE).is_file() or not path.is_file():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return []
    return [d for d in data if isinstance(d, dict)] if isinstance(data, list) else []


def prediction_throughput_meta(out_dir: str | Path) -> dict:
    """``prediction_pages``, ``prediction_wall_s`` and ``prediction_sessions`` summed over the sessions of
    ``out_dir`` (``None`` figures when none was recorded)."""
    sessions = load_sessions(out_dir)
    pages = sum(int(d.get("pages") or 0) for d in sessions)
    wall = sum(float(d.get("wall_s") or 0.0) for d in sessions)
    return {"prediction_pages": pages if sessions else None, "prediction_wall_s": wall if sessions else None,
            "prediction_sessions": len(sessions)}


def predict_resumable(
    samples: Sequence[TestSample],
    predictor: Predictor,
    data_dir: str | Path,
    out_dir: str | Path,
    save_every: int = 10,
    log: Callable[[str], None] = lambda msg: None,
) -> dict[str, dict]:
    """Predict every sample not yet predicted without error in ``out_dir``; return all rows by key.

    The session (pages predicted, wall seconds of the prediction loop) is appended to ``SESSIONS_FILE``
    whenever the predictions are saved.  Raises ``ValueError`` when ``out_dir`` holds predictions of a
    different predictor.
    """
    out_dir = Path(out_dir)
    rows = load_predictions(out_dir)
    sessions = load_sessions(out_dir)
    others = {r.get("predictor") for r in rows.values()} - {predictor.name}
    if others:
        raise ValueError(
            f"{out_dir / PREDICTIONS_FILE} holds predictions of {sorted(map(str, others))}, not of "
            f"{predictor.name!r}: use another --out directory"
        )
    pending = [s for s in samples if s.key not in rows or rows[s.key].get("error")]
    if len(pending) < len(samples):
        log(f"resuming: {len(samples) - len(pending)} of {len(samples)} samples already predicted")
    if not pending:
        return rows
    paths = [Path(data_dir) / s.image_path for s in pending]
    done = 0
    session = {"predictor": predictor.name, "started_at": time.time(), "pages": 0, "wall_s": 0.0}
    start = time.perf_counter()

    def save() -> None:
        session["pages"], session["wall_s"] = done, time.perf_counter() - start
        atomic_write_jsonl(out_dir / PREDICTIONS_FILE, rows.values())
        atomic_write_json(out_dir / SESSIONS_FILE, [*sessions, session])

    try:
        for i, pred in predictor.predict_iter(paths):
            s = pending[i]
            rows[s.key] = {"key": s.key, "image_path": s.image_path, "html": pred.html, "raw": pred.raw,
                           "latency_s": pred.latency_s, "error": pred.error, "predictor": predictor.name,
                           "truncated": bool(getattr(pred, "truncated", False))}
            done += 1
            if pred.error:
                log(f"prediction failed for line {s.line} ({s.image_path}): {pred.error}")
            if done % max(1, save_every) == 0:
                save()
                log(f"predicted {done}/{len(pending)}")
    finally:
        if done:
            save()
    return rows


def score(
    samples: Sequence[TestSample],
    predictions: dict[str, dict],
    name: str,
    mode: str = "nested",
    workers: int | None = None,
    teds_timeout_s: float | None = 60.0,
    meta: dict | None = None,
    failed_latency_s: float | None = None,
) -> EvalRun:
    """Score the predictions of ``samples`` (a missing prediction counts as an empty one).  A failed
    prediction's latency is at least ``failed_latency_s`` (the predictor's timeout), so failures count in
    the latency figures instead of vanishing from them."""
    preds = [predictions.get(s.key) or {"html": "", "error": "no prediction"} for s in samples]

    def latency(p: dict) -> float | None:
        value = p.get("latency_s")
        if p.get("error") and failed_latency_s is not None:
            return max(float(value or 0.0), float(failed_latency_s))
        return value

    teds_results = teds_batch([(p.get("html") or "", s.gt_html) for s, p in zip(samples, preds)], mode,
                              workers=workers, timeout_s=teds_timeout_s)
    results = []
    for s, p, t in zip(samples, preds, teds_results):
        results.append(SampleResult(
            key=s.key, image_path=s.image_path, category=s.category, source=s.source, gt_html=s.gt_html,
            pred_html=p.get("html") or "", latency_s=latency(p), error=p.get("error"),
            raw_output=p.get("raw") or "", truncated=bool(p.get("truncated")), teds=t.teds, teds_s=t.teds_s, teds_timed_out=t.timed_out,
            teds_error=t.error, **safe_sample_metrics(p.get("html") or "", s.gt_html, f"{s.key} ({s.image_path})"),
        ))
    return EvalRun(name=name, samples=results, meta={**(meta or {}), "teds_mode": mode,
                                                     "normalization": NORMALIZATION})


GENERATION_MARGIN = 0.10  # share of the longest label's token count added on top of it
GENERATION_MARGIN_TOKENS = 32  # and a fixed few for the end-of-sequence and the prompt's own closing


def generation_budget(samples: Sequence[TestSample], count_tokens: Callable[[str], int], floor: int = 0) -> dict:
    """``max_new_tokens`` for ``samples``: the longest label in tokens (``count_tokens``) plus
    ``GENERATION_MARGIN`` and ``GENERATION_MARGIN_TOKENS``, at least ``floor``; returned with the longest
    label's length and key, so that a generation cut off below a label's length cannot happen by budget."""
    lengths = [(count_tokens(s.gt_html), s.key) for s in samples]
    longest, key = max(lengths, default=(0, None))
    budget = max(int(floor), int(longest * (1 + GENERATION_MARGIN)) + GENERATION_MARGIN_TOKENS)
    return {"max_new_tokens": budget, "longest_label_tokens": longest, "longest_label_key": key}


def _tokenizer_counter(predictor) -> Callable[[str], int] | None:
    tokenizer = getattr(getattr(predictor, "bundle", None), "tokenizer", None)
    if tokenizer is None:
        return None
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])


def evaluate(
    test_set: str | Path,
    predictor: Predictor,
    data_dir: str | Path,
    out_dir: str | Path,
    name: str,
    save_every: int = 10,
    limit: int | None = None,
    mode: str = "nested",
    workers: int | None = None,
    teds_timeout_s: float | None = 60.0,
    log: Callable[[str], None] = lambda msg: None,
    count_tokens: Callable[[str], int] | None = None,
) -> EvalRun:
    """Predict (resumably) and score ``test_set``; write ``eval_run.json`` into ``out_dir`` and return the run.

    The run's ``meta`` records the prediction's throughput figures (``prediction_pages``,
    ``prediction_wall_s``, over every session in ``out_dir``) and the predictor's ``batch_size`` /
    ``concurrency``."""
    samples = load_test_set(test_set)
    if limit is not None:
        samples = samples[:limit]
    check_images(samples, data_dir, test_set)
    budget: dict = {}
    counter = count_tokens or _tokenizer_counter(predictor)
    for attr in ("max_new_tokens", "max_tokens"):  # local / endpoint predictors: one generation budget
        if counter is not None and isinstance(getattr(predictor, attr, None), int):
            budget = generation_budget(samples, counter, floor=getattr(predictor, attr))
            setattr(predictor, attr, budget["max_new_tokens"])
            log(f"generation budget: {budget['max_new_tokens']} new tokens (longest label "
                f"{budget['longest_label_tokens']} tokens)")
            break
    predictions = predict_resumable(samples, predictor, data_dir, out_dir, save_every, log)
    run = score(samples, predictions, name, mode, workers, teds_timeout_s,
                meta={"predictor": predictor.name, "test_set": str(test_set), "data_dir": str(data_dir),
                      "batch_size": getattr(predictor, "batch_size", None),
                      "concurrency": getattr(predictor, "concurrency", None),
                      **prediction_throughput_meta(out_dir), **budget},
                failed_latency_s=getattr(predictor, "timeout_s", None))
    run.save(Path(out_dir) / RUN_FILE)
    return run
