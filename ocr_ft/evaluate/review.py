"""The review page: every test sample (not only the worst few) with its image, the ground truth and each
run's prediction side by side as tables, per-sample scores, and cells that differ from the truth marked;
filterable by category and source.  One self-contained HTML file (images inlined, plain JavaScript, no
network), written beside the report as ``review.html``."""

from __future__ import annotations

import html as htmllib
from collections import Counter
from pathlib import Path
from typing import Callable

import lxml.html

from ocr_ft.storage import atomic_write_text

from .results import EvalRun

_CSS = """
body{font-family:sans-serif;margin:16px;color:#222}table{border-collapse:collapse;margin:4px 0}
td,th{border:1px solid #999;padding:2px 5px;font-size:12px;vertical-align:top}
.sample{display:grid;grid-auto-flow:column;grid-auto-columns:minmax(0,1fr);gap:12px;align-items:start;
border-top:2px solid #ccc;padding:8px 0}.sample>div{min-width:0;overflow-x:auto}
.sample img{max-width:100%;height:auto;display:block}td.diff{background:#fdd}.none{color:#b00}
.scores{font-size:12px;color:#444}#bar{position:sticky;top:0;background:#fff;padding:6px 0;border-bottom:1px solid #ccc}
"""

_JS = """
function applyFilter(){
  var c=document.getElementById('cat').value, s=document.getElementById('src').value, n=0;
  document.querySelectorAll('section.item').forEach(function(el){
    var show=(!c||el.dataset.category===c)&&(!s||el.dataset.source===s);
    el.style.display=show?'':'none'; if(show)n++;});
  document.getElementById('count').textContent=n+' shown';
}
document.getElementById('cat').addEventListener('change',applyFilter);
document.getElementById('src').addEventListener('change',applyFilter);
applyFilter();
"""


def _cell_texts(fragment: str) -> Counter:
    try:
        root = lxml.html.fragment_fromstring(fragment, create_parent="div")
    except Exception:  # noqa: BLE001 - the fragment is our own rebuilt table or a note
        return Counter()
    return Counter(" ".join(td.text_content().split()) for td in root.iter("td", "th"))


def mark_differences(pred_fragment: str, truth_fragment: str) -> str:
    """``pred_fragment`` (a rebuilt table) with ``class="diff"`` on every cell whose text is not among the
    truth's cell texts (counted: a text the truth has once matches once)."""
    try:
        root = lxml.html.fragment_fromstring(pred_fragment, create_parent="div")
    except Exception:  # noqa: BLE001
        return pred_fragment
    left = _cell_texts(truth_fragment)
    for td in root.iter("td", "th"):
        text = " ".join(td.text_content().split())
        if left[text] > 0:
            left[text] -= 1
        else:
            td.set("class", "diff")
    return "".join(lxml.html.tostring(child, encoding="unicode") for child in root)


def image_html(b64_png: str | None, image_path: str) -> str:
    """The page image as an inline ``<img>``, or a note naming ``image_path`` when it is not available."""
    e = htmllib.escape
    return (f"<img alt='page' src='data:image/png;base64,{b64_png}'>" if b64_png
            else f"<p class='none'>(image not available: {e(image_path)})</p>")


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)


def build_review(runs: dict[str, EvalRun], out_path: str | Path, image_of: Callable[[str], str | None],
                 table_html: Callable[[str], str]) -> Path:
    """Write the review page for every sample of the runs (keyed by the last run's samples, in order) to
    ``out_path``; ``image_of(image_path)`` gives a base64 PNG or ``None``, ``table_html`` the safe rebuilt
    table of a label or prediction."""
    e = htmllib.escape
    names = list(runs)
    by_key = {name: {s.key: s for s in run.samples} for name, run in runs.items()}
    samples = runs[names[-1]].samples
    cats = sorted({s.category for s in samples})
    srcs = sorted({s.source for s in samples})
    option = lambda v: f"<option value='{e(v)}'>{e(v)}</option>"  # noqa: E731
    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>Evaluation review</title>",
             "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; img-src data:; "
             "style-src 'unsafe-inline'; script-src 'unsafe-inline'\">",
             f"<style>{_CSS}</style></head><body><h1>Evaluation review: {len(samples)} samples</h1>",
             "<div id='bar'>category <select id='cat'><option value=''>all</option>" + "".join(map(option, cats))
             + "</select> source <select id='src'><option value=''>all</option>" + "".join(map(option, srcs))
             + "</select> <span id='count'></span> <span class='scores'>cells not in the truth are "
             "<span style='background:#fdd'>marked</span></span></div>"]
    for s in samples:
        truth = table_html(s.gt_html)
        img_html = image_html(image_of(s.image_path), s.image_path)
        parts.append(f"<section class='item' data-category='{e(s.category)}' data-source='{e(s.source)}'>"
                     f"<h3>{e(s.key)} - {e(s.category)}, {e(s.source)}</h3><div class='sample'>"
                     f"<div><b>image</b>{img_html}</div><div><b>ground truth</b>{truth}</div>")
        for name in names:
            r = by_key[name].get(s.key)
            if r is None:
                parts.append(f"<div><b>{e(name)}</b><p class='none'>(not in this run)</p></div>")
                continue
            notes = [f"error: {r.error}"] if r.error else []
            notes += [f"metric: {r.metric_error}"] if r.metric_error else []
            notes += ["cut off at max_new_tokens"] if r.truncated else []
            scores = (f"TEDS {_fmt(r.teds)} · TEDS-S {_fmt(r.teds_s)} · CER {_fmt(r.cer)} · GriTS-Con "
                      f"{_fmt(r.content_f1)} · GriTS-Top {_fmt(r.topology_f1)} · depth {r.depth_pred}/{r.depth_gt}")
            parts.append(f"<div><b>{e(name)}</b><div class='scores'>{e(scores)}"
                         + "".join(f"<br>{e(n)}" for n in notes) + "</div>"
                         + mark_differences(table_html(r.pred_html), truth) + "</div>")
        parts.append("</div></section>")
    parts.append(f"<script>{_JS}</script></body></html>")
    out_path = Path(out_path)
    atomic_write_text(out_path, "\n".join(parts))
    return out_path
