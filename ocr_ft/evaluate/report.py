"""The evaluation report: ``report.json``, ``report.md`` and a self-contained ``report.html``.

:func:`build_report` takes one or more named runs (e.g. ``{"base": ..., "finetuned": ...}``, or several base
models and their fine-tunes) and writes

* the comparison table (:func:`comparison_table`): one row per model and category (plus overall) with TEDS,
  TEDS-S, GriTS-Con/Top, CER, latency p50/p95 and the counts of cut-off and failed predictions, the best
  model per metric marked, models that could not be evaluated listed as failed with their reason;
* every run's summary (overall, by category, by source), its throughput, and the seed's targets with
  pass/fail.  TEDS means count a sample whose TEDS could not be computed as 0 and say how many there were
  (``teds_unscored``, see :mod:`ocr_ft.evaluate.results`); latency is per page as the page experiences it,
  throughput (pages/s over the run) is given separately;
* :func:`compare` of the *primary* run (the one the checks judge, default: the last) against the *baseline*
  (default: the first) when there are two or more (primary TEDS below the baseline's, overall or in any
  category, is a regression);
* plots (matplotlib, Agg backend, embedded as base64 PNG): TEDS by category, CER distribution, latency
  histogram and, with two runs or more, the runs' headline metrics side by side;
* the worst samples of the primary run by TEDS: the image (embedded), the ground truth and every run's
  prediction rendered as tables.  Rendered HTML is rebuilt from the parsed table model, so it holds only
  table tags with rowspan/colspan and escaped text;
* ``review.html`` (every sample, every run side by side) and, with two runs or more, one
  ``review_<name>.html`` per run, linked from the comparison table.

Runs scored in different TEDS modes or text normalisation are never put in one report
(:class:`IncomparableRuns`).
"""

from __future__ import annotations

import base64
import html as htmllib
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ocr_ft.dataset.records import CATEGORIES
from ocr_ft.storage import atomic_write_json, atomic_write_text
from ocr_ft.tables import TableParseError, normalize_html

from .results import EvalRun, SampleResult, summarize, throughput


@dataclass(frozen=True)
class Target:
    name: str
    label: str
    op: str  # ">=" or "<="
    threshold: float
    value: Callable[[dict], float | None]

    def check(self, summary: dict) -> dict[str, Any]:
        value = self.value(summary)
        passed = None if value is None else (value >= self.threshold if self.op == ">=" else value <= self.threshold)
        return {"name": self.name, "label": self.label, "op": self.op, "threshold": self.threshold,
                "value": value, "passed": passed}


def _category_teds(cat: str) -> Callable[[dict], float | None]:
    return lambda s: (s["by_category"].get(cat) or {}).get("teds")


# The seed's targets.  A target whose figure is missing (e.g. no 3-level sample) has passed=None.
TARGETS = (
    Target("teds_nested_2level", "TEDS, 2-level nested", ">=", 0.90, _category_teds("nested_2level")),
    Target("teds_nested_3level", "TEDS, 3-level nested", ">=", 0.85, _category_teds("nested_3level")),
    Target("korean_cer", "Korean CER (corpus)", "<=", 0.01, lambda s: s["overall"].get("cer")),
    Target("latency", "latency per page, mean (s)", "<=", 0.5, lambda s: (s["overall"].get("latency") or {}).get("mean")),
)


def check_targets(summary: dict) -> list[dict[str, Any]]:
    """Each seed target with the run's value and ``passed`` (True, False, or None when not measurable)."""
    return [t.check(summary) for t in TARGETS]


# ------------------------------------------------------------------------------------------- compare
_COMPARED = ("teds", "teds_s", "teds_unscored", "cer", "wer", "content_f1", "topology_f1", "nesting_accuracy",
             "truncated", "too_large")
_LOWER_IS_BETTER = {"teds_unscored", "cer", "wer", "latency_mean", "latency_p95", "truncated", "too_large"}


def _delta(a: float | None, b: float | None) -> dict[str, float | None]:
    return {"base": a, "finetuned": b, "delta": None if a is None or b is None else b - a}


def _unscored_note(d: dict) -> str:
    counts = (d.get("base_unscored") or 0, d.get("finetuned_unscored") or 0)
    if not any(counts):
        return ""
    return f", TEDS unscored and counted as 0: base {counts[0]}, fine-tuned {counts[1]}"


class IncomparableRuns(ValueError):
    """Two runs scored differently (TEDS mode, text normalisation): their figures cannot be compared."""


def check_comparable(base: EvalRun, finetuned: EvalRun) -> None:
    """Raise :class:`IncomparableRuns` naming both runs when they were scored in different TEDS modes or
    with different text normalisation (``meta`` ``teds_mode`` / ``normalization``; a run that does not
    record its normalisation is taken to use the current one)."""
    from .runner import NORMALIZATION

    for key, default in (("teds_mode", "nested"), ("normalization", NORMALIZATION)):
        a, b = base.meta.get(key, default), finetuned.meta.get(key, default)
        if a != b:
            raise IncomparableRuns(f"cannot compare run {base.name!r} with run {finetuned.name!r}: scored with "
                                   f"{key} {a!r} vs {b!r}; score both the same way (e.g. ocr-ft score --mode)")


def compare(base: EvalRun, finetuned: EvalRun, tolerance: float = 0.0) -> dict[str, Any]:
    """Fine-tuned against base on the samples both runs hold (matched by key).

    Means follow :func:`~ocr_ft.evaluate.results.summarize`: a sample whose TEDS could not be computed
    (timed out, metric error) counts as 0 in its run's mean, so a fine-tune whose runaway output times out
    where the base scored shows as the regression it is; ``teds_unscored`` (overall and per category) says
    how many samples of each run were counted so.  ``regression`` is True when the fine-tuned mean TEDS is
    below the base's by more than ``tolerance``, overall or in any category; ``regressions`` says where.
    ``throughput_pages_per_s`` compares the two runs' whole-run throughput (not restricted to the common
    samples; ``None`` where a run does not record it).
    """
    check_comparable(base, finetuned)
    common = {s.key for s in base.samples} & {s.key for s in finetuned.samples}
    b = [s for s in base.samples if s.key in common]
    f = [s for s in finetuned.samples if s.key in common]
    sb, sf = summarize(b), summarize(f)
    metrics = {m: _delta(sb.get(m), sf.get(m)) for m in _COMPARED}
    for stat in ("mean", "p95"):
        metrics[f"latency_{stat}"] = _delta((sb.get("latency") or {}).get(stat), (sf.get("latency") or {}).get(stat))
    metrics["throughput_pages_per_s"] = _delta(throughput(base.meta)["pages_per_s"],
                                               throughput(finetuned.meta)["pages_per_s"])
    by_cat = {}
    for cat in [c for c in CATEGORIES if any(s.category == c for s in b)] + sorted({s.category for s in b} - set(CATEGORIES)):
        cb = summarize([s for s in b if s.category == cat])
        cf = summarize([s for s in f if s.category == cat])
        by_cat[cat] = {"n": cb["n"], **_delta(cb.get("teds"), cf.get("teds")),
                       "base_unscored": cb.get("teds_unscored", 0), "finetuned_unscored": cf.get("teds_unscored", 0)}
    overall = {**metrics["teds"], "base_unscored": sb.get("teds_unscored", 0),
               "finetuned_unscored": sf.get("teds_unscored", 0)}
    regressions = []
    for where, d in [("overall", overall), *by_cat.items()]:
        if d["delta"] is not None and d["delta"] < -tolerance:
            regressions.append(f"{where}: TEDS {d['finetuned']:.4f} < base {d['base']:.4f} "
                               f"({d['delta']:+.4f}{_unscored_note(d)})")
    return {
        "base": base.name, "finetuned": finetuned.name, "n_common": len(common), "tolerance": tolerance,
        "metrics": metrics, "teds_by_category": by_cat, "regressions": regressions, "regression": bool(regressions),
    }


# ---------------------------------------------------------------------------------- comparison table
@dataclass(frozen=True)
class TableMetric:
    key: str
    label: str
    better: str | None  # "higher", "lower" or None (not ranked)
    value: Callable[[dict], Any]
    pct: bool = False


def _lat(stat: str) -> Callable[[dict], Any]:
    return lambda s: (s.get("latency") or {}).get(stat)


# The comparison table's columns, in order; values come straight from a run's summary block.
TABLE_METRICS = (
    TableMetric("n", "n", None, lambda s: s.get("n", 0)),
    TableMetric("teds", "TEDS", "higher", lambda s: s.get("teds")),
    TableMetric("teds_s", "TEDS-S", "higher", lambda s: s.get("teds_s")),
    TableMetric("grits_con", "GriTS-Con", "higher", lambda s: s.get("content_f1")),
    TableMetric("grits_top", "GriTS-Top", "higher", lambda s: s.get("topology_f1")),
    TableMetric("cer", "CER", "lower", lambda s: s.get("cer"), pct=True),
    TableMetric("latency_p50", "latency p50 (s)", "lower", _lat("p50")),
    TableMetric("latency_p95", "latency p95 (s)", "lower", _lat("p95")),
    TableMetric("truncated", "cut off", "lower", lambda s: s.get("truncated")),
    TableMetric("failed", "failed", "lower", lambda s: s.get("prediction_errors")),
)
_BEST_NOTE = ("Best per category and metric in bold (ties: all of them), among the models evaluated; not marked "
              "when fewer than two models have the figure or all have the same. \"cut off\": outputs that hit the "
              "generation budget; \"failed\": pages the predictor failed on (scored as empty).")


def _groups(summaries: dict[str, dict]) -> list[str]:
    present = {c for summ in summaries.values() for c in summ["by_category"]}
    return ["overall"] + [c for c in CATEGORIES if c in present] + sorted(present - set(CATEGORIES))


def comparison_table(summaries: dict[str, dict], failed: dict[str, str] | None = None) -> dict[str, Any]:
    """One row per model and group (``overall``, then each category any run has), columns
    :data:`TABLE_METRICS`, the values taken from each run's summary (``overall`` / ``by_category``).

    Models in ``failed`` (name -> reason) get a ``status: failed`` row per group with the reason and no
    figures.  ``best[group][metric]`` lists the models with the best value (higher or lower as the metric
    says; ties all listed), only where two models or more have the figure and not all have the same."""
    failed = failed or {}
    groups = _groups(summaries)
    rows: list[dict[str, Any]] = []
    best: dict[str, dict[str, list[str]]] = {}
    for group in groups:
        values: dict[str, dict[str, Any]] = {}
        for name, summ in summaries.items():
            block = summ["overall"] if group == "overall" else summ["by_category"].get(group) or {"n": 0}
            values[name] = {m.key: m.value(block) for m in TABLE_METRICS}
            rows.append({"group": group, "model": name, "status": "ok", **values[name]})
        rows += [{"group": group, "model": name, "status": "failed", "error": reason}
                 for name, reason in failed.items()]
        best[group] = {}
        for m in TABLE_METRICS:
            if m.better is None:
                continue
            have = {name: v[m.key] for name, v in values.items() if v[m.key] is not None}
            if len(have) < 2 or len(set(have.values())) == 1:
                continue
            top = max(have.values()) if m.better == "higher" else min(have.values())
            best[group][m.key] = [name for name, v in have.items() if v == top]
    return {"metrics": [{"key": m.key, "label": m.label, "better": m.better} for m in TABLE_METRICS],
            "groups": groups, "rows": rows, "best": best}


def _table_cell(m: TableMetric, row: dict) -> str:
    return _fmt(row.get(m.key), m.pct)


def _comparison_md(table: dict) -> list[str]:
    head = ["category", "model"] + [m.label for m in TABLE_METRICS]
    rows = []
    for row in table["rows"]:
        if row["status"] == "failed":
            text = f"FAILED: {row['error']}" if row["group"] == table["groups"][0] else "FAILED (see overall)"
            rows.append([row["group"], row["model"], text] + [""] * (len(TABLE_METRICS) - 1))
            continue
        best = table["best"].get(row["group"], {})
        rows.append([row["group"], row["model"]] + [
            f"**{_table_cell(m, row)}**" if row["model"] in best.get(m.key, ()) else _table_cell(m, row)
            for m in TABLE_METRICS])
    return _md_table(head, rows)


def comparison_markdown(report: dict) -> str:
    """The report's comparison table as Markdown (best values in bold, failed models with their reason)."""
    return "\n".join(_comparison_md(report["comparison_table"])) + "\n"


def _comparison_html(table: dict, review_pages: dict[str, str], roles: dict[str, str]) -> str:
    e = htmllib.escape
    parts = ["<table class='comparison'><tr><th>category</th><th>model</th>"
             + "".join(f"<th>{e(m.label)}</th>" for m in TABLE_METRICS) + "</tr>"]
    for group in table["groups"]:
        rows = [r for r in table["rows"] if r["group"] == group]
        best = table["best"].get(group, {})
        for k, row in enumerate(rows):
            cells = [f"<th rowspan='{len(rows)}' class='group'>{e(group)}</th>"] if k == 0 else []
            page = review_pages.get(row["model"])
            label = (f"<a href='{e(Path(page).name)}'>{e(row['model'])}</a>" if page and row["status"] == "ok"
                     else e(row["model"]))
            if row["model"] in roles:
                label += f" <span class='role'>{e(roles[row['model']])}</span>"
            if row["status"] == "failed":
                text = f"failed: {row['error']}" if group == table["groups"][0] else "failed (see overall)"
                cells += [f"<td class='model'>{label}</td>",
                          f"<td colspan='{len(TABLE_METRICS)}' class='fail'>{e(text)}</td>"]
            else:
                cells.append(f"<td class='model'>{label}</td>")
                for m in TABLE_METRICS:
                    cls = " class='best'" if row["model"] in best.get(m.key, ()) else ""
                    cells.append(f"<td{cls}>{e(_table_cell(m, row))}</td>")
            parts.append(f"<tr data-group='{e(group)}' data-model='{e(row['model'])}'>" + "".join(cells) + "</tr>")
    parts.append("</table>")
    return "".join(parts)


# --------------------------------------------------------------------------------------------- plots
def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _plots(runs: dict[str, EvalRun], summaries: dict[str, dict]) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(runs)
    width = 0.8 / len(names)
    plots: dict[str, str] = {}

    cats = ["overall"] + [c for c in CATEGORIES if any(c in summaries[n]["by_category"] for n in names)]
    fig, ax = plt.subplots(figsize=(8, 3.5))
    x = np.arange(len(cats))
    for k, n in enumerate(names):
        vals = [summaries[n]["overall"].get("teds") if c == "overall" else
                (summaries[n]["by_category"].get(c) or {}).get("teds") for c in cats]
        ax.bar(x + k * width, [v if v is not None else 0 for v in vals], width, label=n)
    for cat, thr in (("nested_2level", 0.90), ("nested_3level", 0.85)):
        if cat in cats:
            i = cats.index(cat)
            ax.hlines(thr, i - 0.1, i + 0.9, colors="red", linestyles="dashed")
    ax.set_xticks(x + width * (len(names) - 1) / 2, [c.replace("_", "\n") for c in cats])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("mean TEDS")
    ax.set_title("TEDS by category (dashed: targets)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    plots["teds_by_category"] = _png(fig)

    fig, ax = plt.subplots(figsize=(7, 3.2))
    top = max([0.05] + [min(s.cer, 1.0) for r in runs.values() for s in r.samples])
    for n in names:
        ax.hist([min(s.cer, 1.0) for s in runs[n].samples], bins=20, range=(0, top), histtype="step",
                linewidth=2, label=n)
    ax.axvline(0.01, color="red", linestyle="dashed")
    ax.set_xlabel("per-sample CER (target 1 %, dashed)")
    ax.set_ylabel("samples")
    ax.set_title("CER distribution")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    plots["cer_distribution"] = _png(fig)

    fig, ax = plt.subplots(figsize=(7, 3.2))
    lat = {n: [s.latency_s for s in runs[n].samples if s.latency_s is not None] for n in names}
    top = max([0.6] + [v for vs in lat.values() for v in vs])
    for n in names:
        if lat[n]:
            ax.hist(lat[n], bins=20, range=(0, top), histtype="step", linewidth=2, label=n)
    ax.axvline(0.5, color="red", linestyle="dashed")
    ax.set_xlabel("latency per page, s (target 0.5 s, dashed)")
    ax.set_ylabel("pages")
    ax.set_title("Latency")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    plots["latency_histogram"] = _png(fig)

    if len(names) > 1:
        heads = [("TEDS", "teds"), ("TEDS-S", "teds_s"), ("content F1", "content_f1"),
                 ("topology F1", "topology_f1"), ("nesting acc.", "nesting_accuracy"), ("1 - CER", "cer")]
        fig, ax = plt.subplots(figsize=(8, 3.5))
        x = np.arange(len(heads))
        for k, n in enumerate(names):
            o = summaries[n]["overall"]
            vals = [(1 - o[key]) if key == "cer" else o.get(key) for _, key in heads]
            ax.bar(x + k * width, [max(v, 0) if v is not None else 0 for v in vals], width, label=n)
        ax.set_xticks(x + width * (len(names) - 1) / 2, [h for h, _ in heads])
        ax.set_ylim(0, 1.05)
        ax.set_title(" vs ".join(names))
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
        plots["runs_side_by_side"] = _png(fig)
    return plots


# --------------------------------------------------------------------------------------------- pieces
def _fmt(v: Any, pct: bool = False) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v * 100:.2f} %" if pct else f"{v:.4f}"
    return str(v)


def _status(passed: bool | None) -> str:
    return {True: "PASS", False: "FAIL", None: "n/a"}[passed]


def mark_differences(pred_fragment: str, truth_fragment: str) -> str:
    from .review import mark_differences as mark

    return mark(pred_fragment, truth_fragment)


def safe_table_html(html: str) -> str:
    """``html``'s tables rebuilt from the parsed model (table tags, rowspan/colspan, escaped text only);
    an escaped note when there is no table."""
    try:
        rebuilt = normalize_html(html) if html and html.strip() else ""
    except TableParseError:
        rebuilt = ""
    return rebuilt or '<p class="none">(no table)</p>'


def _thumbnail(path: Path, max_width: int = 700) -> str | None:
    try:
        from PIL import Image

        with Image.open(path) as im:
            im = im.convert("RGB")
            if im.width > max_width:
                im = im.resize((max_width, max(1, round(im.height * max_width / im.width))))
            buf = io.BytesIO()
            im.save(buf, format="PNG", optimize=True)
    except (OSError, ValueError):
        return None
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _teds_text(teds: float | None, timed_out: bool = False, error: str | None = None) -> str:
    if teds is not None:
        return _fmt(teds)
    return "unscored (timed out, counted as 0)" if timed_out else f"unscored ({error or 'no score'}, counted as 0)"


def _worst(run: EvalRun, n: int) -> list[SampleResult]:
    return sorted(run.samples, key=lambda s: (-1.0 if s.teds is None else s.teds, s.key))[:n]


_SUMMARY_HEAD = ["run", "group", "n", "TEDS", "TEDS-S", "TEDS unscored", "CER", "WER", "content F1",
                 "topology F1", "nesting acc.", "cut off", "too large", "latency p50 / p95 / mean (s)"]
_UNSCORED_NOTE = ("TEDS means count a sample whose TEDS could not be computed (timed out, metric error) as 0; "
                  "\"TEDS unscored\" is how many such samples a row holds; \"cut off\" counts outputs that hit the "
                  "generation budget, \"too large\" pairs refused by the size limits (scored 0).")
_LATENCY_NOTE = ("Latency is what a page experiences: the wall time of the request, or of the whole batched "
                 "generate call, it was part of. Throughput is pages predicted per second of prediction wall time.")


def _summary_rows(summaries: dict[str, dict], group: str | None) -> list[list[str]]:
    rows = []
    for name, summ in summaries.items():
        items = [("overall", summ["overall"])] if group is None else list(summ[group].items())
        for g, s in items:
            lat = s.get("latency") or {}
            rows.append([
                name, g, str(s["n"]), _fmt(s.get("teds")), _fmt(s.get("teds_s")), _fmt(s.get("teds_unscored")),
                _fmt(s.get("cer"), True),
                _fmt(s.get("wer"), True), _fmt(s.get("content_f1")), _fmt(s.get("topology_f1")),
                _fmt(s.get("nesting_accuracy")), str(s.get("truncated", 0)), str(s.get("too_large", 0)),
                f"{_fmt(lat.get('p50'))} / {_fmt(lat.get('p95'))} / {_fmt(lat.get('mean'))}",
            ])
    return rows


def _throughput_text(summ: dict) -> str:
    t = summ.get("throughput") or {}
    if t.get("pages_per_s") is None:
        return "not recorded"
    how = [f"batch {t['batch_size']}" if t.get("batch_size") else "",
           f"concurrency {t['concurrency']}" if t.get("concurrency") else ""]
    how_text = ", ".join(h for h in how if h)
    return (f"{t['pages_per_s']:.3f} pages/s ({t['pages']} pages in {t['wall_s']:.1f} s of prediction wall time"
            + (f"; {how_text}" if how_text else "") + ")")


def _md_table(head: list[str], rows: list[list[str]]) -> list[str]:
    esc = lambda c: c.replace("|", "\\|")  # noqa: E731
    return (["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            + ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows])


def _markdown(report: dict, summaries: dict[str, dict]) -> str:
    out = ["# Evaluation report", "", "## Models compared", ""] + _comparison_md(report["comparison_table"])
    out += ["", _BEST_NOTE, ""]
    if report.get("failed"):
        out += [f"- FAILED {name}: {reason}" for name, reason in report["failed"].items()] + [""]
    out += [f"Primary (judged by the checks): {report['primary']}; baseline: {report.get('baseline') or 'none'}.", ""]
    for name, run in report["runs"].items():
        out += [f"## Targets: {name}", "", "| target | value | threshold | status |", "|---|---|---|---|"]
        for t in run["targets"]:
            pct = t["name"] == "korean_cer"
            out.append(f"| {t['label']} | {_fmt(t['value'], pct)} | {t['op']} {_fmt(t['threshold'], pct)} | "
                       f"{_status(t['passed'])} |")
        out.append("")
    for title, group in (("Overall", None), ("By category", "by_category"), ("By source", "by_source")):
        out += [f"## {title}", ""] + _md_table(_SUMMARY_HEAD, _summary_rows(summaries, group)) + [""]
        if group is None:
            out += [_UNSCORED_NOTE, "", _LATENCY_NOTE, ""]
            out += [f"- throughput, {name}: {_throughput_text(summ)}" for name, summ in summaries.items()] + [""]
    cmp = report.get("comparison")
    if cmp:
        out += [f"## {cmp['finetuned']} vs {cmp['base']} ({cmp['n_common']} common samples)", "",
                "| metric | base | fine-tuned | delta |", "|---|---|---|---|"]
        for m, d in cmp["metrics"].items():
            out.append(f"| {m} | {_fmt(d['base'])} | {_fmt(d['finetuned'])} | {_fmt(d['delta'])} |")
        out += ["", "Regression: " + ("YES - " + "; ".join(cmp["regressions"]) if cmp["regression"] else "no"), ""]
    out += ["## Worst samples", "", "| key | category | source | TEDS | CER |", "|---|---|---|---|---|"]
    for w in report["worst"]:
        teds = _teds_text(w["teds"], w.get("teds_timed_out", False), w.get("teds_error")).replace("|", "\\|")
        out.append(f"| {w['key']} | {w['category']} | {w['source']} | {teds} | {_fmt(w['cer'], True)} |")
    return "\n".join(out) + "\n"


_CSS = """
body{font-family:sans-serif;margin:24px;color:#222}table{border-collapse:collapse;margin:6px 0}
td,th{border:1px solid #999;padding:2px 6px;font-size:12px;vertical-align:top}
.pass{color:#070;font-weight:bold}.fail{color:#b00;font-weight:bold}.na{color:#777}
.sample{display:grid;grid-auto-flow:column;grid-auto-columns:minmax(0,1fr);gap:16px;align-items:start;
border-top:2px solid #ccc;padding:10px 0}
.sample>div{min-width:0;overflow-x:auto}.sample img{max-width:100%;height:auto;display:block}
.none{color:#b00}h3{margin-bottom:4px}img{max-width:100%}td.diff{background:#fdd}
table.comparison td{text-align:right;white-space:nowrap}table.comparison td.model,table.comparison td.fail{text-align:left}
table.comparison td.fail{white-space:normal}table.comparison th.group{text-align:left;background:#f3f3f3}
table.comparison td.best{font-weight:bold;background:#dfd}.role{font-size:10px;color:#555;border:1px solid #aaa;
border-radius:3px;padding:0 3px}
"""


def _html(report: dict, summaries: dict[str, dict], plots: dict[str, str], worst: list[SampleResult],
          runs: dict[str, EvalRun], images: dict[str, str | None]) -> str:
    e = htmllib.escape
    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>Evaluation report</title>",
             f"<style>{_CSS}</style></head><body><h1>Evaluation report</h1>"]
    pages = report.get("review_pages") or {}
    roles = {n: r for r, n in (("baseline", report.get("baseline")), ("primary", report["primary"])) if n}
    parts.append("<h2>Models compared</h2>" + _comparison_html(report["comparison_table"], pages, roles)
                 + f"<p>{e(_BEST_NOTE)}</p>")
    if report.get("failed"):
        parts.append("<ul>" + "".join(f"<li><span class='fail'>FAILED</span> {e(name)}: {e(reason)}</li>"
                                      for name, reason in report["failed"].items()) + "</ul>")
    parts.append(f"<p>Primary (judged by the checks): <b>{e(report['primary'])}</b>; baseline: "
                 f"<b>{e(report.get('baseline') or 'none')}</b>. <a href='review.html'>Every sample, all models "
                 "side by side</a>" + ("; each model alone: linked from its name." if pages else ".") + "</p>")
    for name, run in report["runs"].items():
        parts.append(f"<h2>Targets: {e(name)}</h2><p>{e(str(run['meta'].get('predictor', '')))}</p>"
                     "<table><tr><th>target</th><th>value</th><th>threshold</th><th>status</th></tr>")
        for t in run["targets"]:
            pct = t["name"] == "korean_cer"
            cls = {True: "pass", False: "fail", None: "na"}[t["passed"]]
            parts.append(f"<tr><td>{e(t['label'])}</td><td>{_fmt(t['value'], pct)}</td>"
                         f"<td>{e(t['op'])} {_fmt(t['threshold'], pct)}</td>"
                         f"<td class='{cls}'>{_status(t['passed'])}</td></tr>")
        parts.append("</table>")
    for title, group in (("Overall", None), ("By category", "by_category"), ("By source", "by_source")):
        parts.append(f"<h2>{title}</h2><table><tr>" + "".join(f"<th>{e(h)}</th>" for h in _SUMMARY_HEAD) + "</tr>")
        for row in _summary_rows(summaries, group):
            parts.append("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>")
        parts.append("</table>")
        if group is None:
            parts.append(f"<p>{e(_UNSCORED_NOTE)}</p><p>{e(_LATENCY_NOTE)}</p><ul>"
                         + "".join(f"<li>throughput, {e(name)}: {e(_throughput_text(summ))}</li>"
                                   for name, summ in summaries.items()) + "</ul>")
    cmp = report.get("comparison")
    if cmp:
        parts.append(f"<h2>{e(cmp['finetuned'])} vs {e(cmp['base'])}</h2><table>"
                     "<tr><th>metric</th><th>base</th><th>fine-tuned</th><th>delta</th></tr>")
        for m, d in cmp["metrics"].items():
            parts.append(f"<tr><td>{e(m)}</td><td>{_fmt(d['base'])}</td><td>{_fmt(d['finetuned'])}</td>"
                         f"<td>{_fmt(d['delta'])}</td></tr>")
        verdict = ("<span class='fail'>REGRESSION</span>: " + e("; ".join(cmp["regressions"]))
                   if cmp["regression"] else "<span class='pass'>no regression</span>")
        parts.append(f"</table><p>{verdict}</p>")
    for key, title in (("runs_side_by_side", "Runs side by side"), ("teds_by_category", "TEDS by category"),
                       ("cer_distribution", "CER distribution"), ("latency_histogram", "Latency")):
        if key in plots:
            parts.append(f"<h2>{title}</h2><img alt='{key}' src='data:image/png;base64,{plots[key]}'>")
    from .review import image_html

    parts.append(f"<h2>Worst {len(worst)} samples ({e(report['primary'])}, by TEDS)</h2>")
    by_key = {name: {s.key: s for s in run.samples} for name, run in runs.items()}
    for s in worst:
        img_html = image_html(images.get(s.key), s.image_path)
        parts.append(f"<h3>{e(s.key)} - {e(s.category)}, {e(s.source)}</h3><div class='sample'>"
                     f"<div><b>image</b><br>{img_html}</div>"
                     f"<div><b>ground truth</b>{safe_table_html(s.gt_html)}</div>")
        for name in runs:
            other = by_key[name].get(s.key)
            if other is None:
                continue
            note = f" - error: {e(other.error)}" if other.error else ""
            parts.append(f"<div><b>{e(name)}</b> TEDS {e(_teds_text(other.teds, other.teds_timed_out, other.teds_error))}, CER {_fmt(other.cer, True)}{note}"
                         f"{mark_differences(safe_table_html(other.pred_html), safe_table_html(s.gt_html))}</div>")
        parts.append("</div>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _page_name(name: str) -> str:
    return "review_" + re.sub(r"[^A-Za-z0-9_.-]", "_", name) + ".html"


def build_report(runs: dict[str, EvalRun], out_dir: str | Path, data_dir: str | Path | None = None,
                 worst_n: int = 10, tolerance: float = 0.0, *, failed: dict[str, str] | None = None,
                 primary: str | None = None, baseline: str | None = None) -> dict[str, Any]:
    """Write ``report.json``, ``report.md``, ``report.html`` and the review pages into ``out_dir``; return the
    JSON content.

    ``runs`` maps a display name to a run.  ``primary`` (default: the last run) is the run the worst samples
    come from and the one compared against ``baseline`` (default: the first run, none with a single run);
    ``failed`` maps models that could not be evaluated to the reason, shown in the comparison table.  Raises
    ``ValueError`` for no run, an unknown ``primary`` / ``baseline`` or a failed name that is also a run,
    :class:`IncomparableRuns` when the runs were not all scored the same way.  Images of the worst samples are
    read from ``data_dir`` (default: the primary run's ``meta["data_dir"]``); a missing image is noted, not
    fatal.
    """
    if not runs:
        raise ValueError("build_report needs at least one run")
    failed = dict(failed or {})
    names = list(runs)
    primary = names[-1] if primary is None else primary
    if baseline is None and len(names) > 1:
        baseline = names[0] if names[0] != primary else names[-1]
    for role, value in (("primary", primary), ("baseline", baseline)):
        if value is not None and value not in runs:
            raise ValueError(f"{role} run {value!r} is not among the runs ({', '.join(names)})")
    if baseline == primary:
        raise ValueError(f"baseline and primary are the same run {primary!r}")
    if set(failed) & set(runs):
        raise ValueError(f"runs {sorted(set(failed) & set(runs))} are both evaluated and failed")
    for name in names[1:]:
        check_comparable(runs[names[0]], runs[name])
    out_dir = Path(out_dir)
    summaries = {name: run.summary() for name, run in runs.items()}
    review_pages = {name: str(out_dir / _page_name(name)) for name in names} if len(names) > 1 else {}
    report: dict[str, Any] = {
        "primary": primary, "baseline": baseline, "failed": failed,
        "comparison_table": comparison_table(summaries, failed),
        "runs": {name: {"meta": runs[name].meta, "summary": summaries[name], "targets": check_targets(summaries[name])}
                 for name in runs},
    }
    if baseline is not None:
        report["comparison"] = compare(runs[baseline], runs[primary], tolerance)
    worst = _worst(runs[primary], worst_n)
    report["worst"] = [{"key": s.key, "image_path": s.image_path, "category": s.category, "source": s.source,
                        "teds": s.teds, "teds_timed_out": s.teds_timed_out, "teds_error": s.teds_error,
                        "cer": s.cer} for s in worst]
    base = data_dir if data_dir is not None else runs[primary].meta.get("data_dir")
    images = {s.key: _thumbnail(Path(base) / s.image_path) if base else None for s in worst}
    report["review_html"] = str(out_dir / "review.html")
    report["review_pages"] = review_pages
    atomic_write_json(out_dir / "report.json", report)
    atomic_write_text(out_dir / "report.md", _markdown(report, summaries))
    atomic_write_text(out_dir / "report.html", _html(report, summaries, _plots(runs, summaries), worst, runs, images))
    from .review import build_review

    image_of = lambda image_path: _thumbnail(Path(base) / image_path) if base else None  # noqa: E731
    # the side-by-side page follows the primary run's samples (build_review keys on its last run)
    ordered = {**{n: runs[n] for n in names if n != primary}, primary: runs[primary]}
    build_review(ordered, out_dir / "review.html", image_of, safe_table_html)
    for name, page in review_pages.items():
        build_review({name: runs[name]}, page, image_of, safe_table_html)
    return report
