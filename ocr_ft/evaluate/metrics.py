"""Text, grid, nesting and latency metrics of one predicted table against its ground truth.

Reading order
    A table's text is its cells' text row-major over the grid (each cell once, at its top-left slot), a
    nested table's text in place right after the text of the cell holding it, cells joined by one space.
    Text is the label form of :mod:`ocr_ft.tables` (NFC, whitespace collapsed; NFKC only where asked).

CER / WER
    Edit operations (substitutions + deletions + insertions, via jiwer) over the reference length, in
    characters (spaces included) and in whitespace-separated words.  An empty reference counts every
    predicted character (word) as an insertion over a length of 0; corpus rates sum edits and lengths.

Table F1
    :func:`table_f1` is GriTS as published (:mod:`ocr_ft.evaluate.grits`): GriTS-Con (``content_*``) and
    GriTS-Top (``topology_*``) of the top-level tables' grids stacked vertically, each slot's text the full
    text of its cell (nested tables' text included).

Alignment grid F1 (:func:`alignment_grid_f1`, this project's older variant, kept under its own name)
    Every top-level table is laid on its grid (:func:`ocr_ft.tables.build_grid`, spans honoured) and the
    grids are stacked vertically.  Each slot carries
      * content: the full text of the cell covering it (nested tables' text included);
      * topology: the box of the covering cell relative to the slot, (-dr, -dc, rowspan-dr, colspan-dc).
    Rows of the predicted grid are aligned to rows of the true grid by a monotone maximum-weight alignment
    whose weights are the normalised Levenshtein similarities of the two rows (slot contents, resp. slot
    topology labels, as strings; ties go to the alignment pairing more rows); columns likewise,
    independently.  For every aligned (row, column) pair
    the two slots score a similarity in [0, 1]: 1 - normalised Levenshtein distance of their contents, or
    the IoU of their topology boxes (two empty slots score 1, an empty against a covered slot 0).  With S
    the sum: precision = S / predicted slots, recall = S / true slots, F1 = 2S / (predicted + true slots).

Nesting depth
    :func:`ocr_ft.tables.nesting_depth` of each side (0 when the prediction holds no table); correct when
    equal.
"""

from __future__ import annotations

from dataclasses import dataclass

import jiwer
import numpy as np
from rapidfuzz.distance import Levenshtein
from rapidfuzz.process import cdist

from ocr_ft.tables import Table, TableParseError, build_grid, parse_tables


def safe_tables(html: str | None) -> list[Table]:
    """Top-level tables of ``html``; ``[]`` for empty or unparseable input."""
    if not html or not html.strip():
        return []
    try:
        return parse_tables(html)
    except TableParseError:
        return []


def stray_tables(html: str | None) -> int:
    """Tables of ``html`` written inside another table but outside any of its cells (``<tr><table>``): the
    table model has no place for them, so they are reported (``stray_tables``) instead of vanishing."""
    if not html or "<table" not in html.lower():
        return 0
    try:
        from ocr_ft.tables import parse_document
        doc = parse_document(html)
    except Exception:  # noqa: BLE001 - unparseable input is reported elsewhere
        return 0
    count = 0
    for table in doc.iter("table"):
        parent = table.getparent()
        while parent is not None and parent.tag not in ("td", "th", "table"):
            parent = parent.getparent()
        if parent is not None and parent.tag == "table":
            count += 1
    return count


# ----------------------------------------------------------------------------------------------- text
def _cell_full_text(cell) -> list[str]:
    parts = [cell.text] if cell.text else []
    for inner in cell.tables:
        parts.extend(reading_order_texts([inner]))
    return parts


def reading_order_texts(tables: list[Table]) -> list[str]:
    """Non-empty cell texts of ``tables`` in reading order (row-major, nested tables in place)."""
    out: list[str] = []
    for table in tables:
        for _, _, cell in build_grid(table).cells:
            out.extend(_cell_full_text(cell))
    return out


def table_text(html: str | None) -> str:
    """The text of every table in ``html`` in reading order, cells joined by one space."""
    return " ".join(reading_order_texts(safe_tables(html)))


def char_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(edit operations, reference length) at the character level."""
    if not reference:
        return len(hypothesis), 0
    if not hypothesis:
        return len(reference), len(reference)
    out = jiwer.process_characters(reference, hypothesis)
    return out.substitutions + out.deletions + out.insertions, out.substitutions + out.deletions + out.hits


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(edit operations, reference length) at the word level (whitespace-separated)."""
    ref_words, hyp_words = reference.split(), hypothesis.split()
    if not ref_words:
        return len(hyp_words), 0
    if not hyp_words:
        return len(ref_words), len(ref_words)
    out = jiwer.process_words(reference, hypothesis)
    return out.substitutions + out.deletions + out.insertions, out.substitutions + out.deletions + out.hits


def error_rate(edits: int, length: int) -> float:
    """``edits / length``; with an empty reference 0.0 when nothing was predicted, else 1.0."""
    if length:
        return edits / length
    return 0.0 if edits == 0 else 1.0


# ------------------------------------------------------------------------------------------- grid F1
_TIE = 1e-6
@dataclass
class GridScore:
    precision: float
    recall: float
    f1: float


def _grid_slots(tables: list[Table]) -> tuple[list[list[str]], list[list[tuple | None]]]:
    content: list[list[str]] = []
    topology: list[list[tuple | None]] = []
    for table in tables:
        grid = build_grid(table)
        texts = {idx: " ".join(_cell_full_text(cell)) for idx, (_, _, cell) in enumerate(grid.cells)}
        for r in range(grid.n_rows):
            crow, trow = [], []
            for c in range(grid.n_cols):
                idx = grid.slots[r][c]
                if idx is None:
                    crow.append("")
                    trow.append(None)
                else:
                    r0, c0, cell = grid.cells[idx]
                    dr, dc = r - r0, c - c0
                    crow.append(texts[idx])
                    trow.append((-dr, -dc, cell.rowspan - dr, cell.colspan - dc))
            content.append(crow)
            topology.append(trow)
    width = max((len(r) for r in content), default=0)
    for crow, trow in zip(content, topology):
        crow.extend([""] * (width - len(crow)))
        trow.extend([None] * (width - len(trow)))
    return content, topology


def _box_iou(a: tuple | None, b: tuple | None) -> float:
    if a is None or b is None:
        return 1.0 if a is b else 0.0
    inter_r = min(a[2], b[2]) - max(a[0], b[0])
    inter_c = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(inter_r, 0) * max(inter_c, 0)
    area = lambda x: (x[2] - x[0]) * (x[3] - x[1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def _align(similarity: np.ndarray) -> list[tuple[int, int]]:
    """Monotone alignment of rows to columns of ``similarity`` maximising the summed similarity; every pair
    weighs 1e-6 more, so that among (nearly) equal alignments the one pairing more lines wins."""
    weights = similarity + _TIE
    n1, n2 = weights.shape
    score = np.zeros((n1 + 1, n2 + 1))
    for i in range(1, n1 + 1):
        best = np.maximum(score[i - 1, 1:], score[i - 1, :-1] + weights[i - 1])
        score[i, 1:] = np.maximum.accumulate(best)
    pairs = []
    i, j = n1, n2
    while i > 0 and j > 0:
        w = weights[i - 1, j - 1]
        if score[i, j] == score[i - 1, j - 1] + w:
            pairs.append((i - 1, j - 1))
            i, j = i - 1, j - 1
        elif score[i, j] == score[i - 1, j]:
            i -= 1
        else:
            j -= 1
    return pairs[::-1]


def _encode(rows: list[list], codes: dict) -> list[str]:
    return ["".join(codes.setdefault(x, chr(0xE000 + len(codes))) for x in row) for row in rows]


def _grid_score(pred: list[list], gt: list[list], as_strings, slot_sim) -> GridScore:
    n_pred = sum(len(r) for r in pred)
    n_gt = sum(len(r) for r in gt)
    if not n_pred or not n_gt:
        return GridScore(0.0, 0.0, 0.0)
    pred_cols = [list(c) for c in zip(*pred)]
    gt_cols = [list(c) for c in zip(*gt)]
    row_pairs = _align(cdist(as_strings(pred), as_strings(gt), scorer=Levenshtein.normalized_similarity))
    col_pairs = _align(cdist(as_strings(pred_cols), as_strings(gt_cols), scorer=Levenshtein.normalized_similarity))
    total = sum(slot_sim(pred[i][k], gt[j][l]) for i, j in row_pairs for k, l in col_pairs)
    return GridScore(total / n_pred, total / n_gt, 2 * total / (n_pred + n_gt))


def table_f1(pred_html: str | None, gt_html: str | None) -> dict[str, GridScore]:
    """GriTS-Con (``content``) and GriTS-Top (``topology``) precision / recall / F1 of the prediction."""
    from .grits import grids_from_tables, grits_con, grits_top

    text_of = lambda cell: " ".join(_cell_full_text(cell))  # noqa: E731
    pred_text, pred_spans = grids_from_tables(safe_tables(pred_html), text_of)
    gt_text, gt_spans = grids_from_tables(safe_tables(gt_html), text_of)
    out = {}
    for name, score in (("content", grits_con(gt_text, pred_text)), ("topology", grits_top(gt_spans, pred_spans))):
        if not pred_text:  # no predicted table: nothing right (the published convention would say precision 1)
            score = GridScore(0.0, 0.0, 0.0)
        out[name] = GridScore(score.precision, score.recall, score.f1)
    return out


def alignment_grid_f1(pred_html: str | None, gt_html: str | None) -> dict[str, GridScore]:
    """The older alignment grid precision / recall / F1 (see the module docstring); not GriTS."""
    pred_content, pred_topo = _grid_slots(safe_tables(pred_html))
    gt_content, gt_topo = _grid_slots(safe_tables(gt_html))
    joined = lambda rows: ["\x1f".join(r) for r in rows]  # noqa: E731
    codes: dict = {}
    encoded = lambda rows: _encode(rows, codes)  # noqa: E731
    return {
        "content": _grid_score(pred_content, gt_content, joined, Levenshtein.normalized_similarity),
        "topology": _grid_score(pred_topo, gt_topo, encoded, _box_iou),
    }


# ------------------------------------------------------------------------------------ nesting, latency
def safe_depth(html: str | None) -> int:
    """Nesting depth of ``html`` (0 when it holds no table or does not parse)."""
    return max((t.depth for t in safe_tables(html)), default=0)


def latency_stats(values: list[float]) -> dict[str, float | int | None]:
    """n, mean, p50, p95 (linear interpolation) and max of per-page latencies in seconds."""
    if not values:
        return {"n": 0, "mean": None, "p50": None, "p95": None, "max": None}
    arr = np.asarray(values, dtype=float)
    return {
        "n": int(arr.size),
        "mean": float(arr.mean()),
        "p50": float(np.percentile(arr, 50)),
        "p95": float(np.percentile(arr, 95)),
        "max": float(arr.max()),
    }


MAX_EVAL_SLOTS = 20_000  # grid slots (rows x columns, nested tables added) per side for CER / GriTS / nesting
MAX_GRITS_PRODUCT = 1_000_000  # GriTS compares every true slot with every predicted one (~15 s at 1,000 x 1,000)


class SampleTooLarge(ValueError):
    """A pair whose grids are too big to score within bounded time and memory; ``reason`` is ``too_large``."""

    reason = "too_large"


def _slots(tables: list[Table]) -> int:
    try:  # the tables engineer's bound (no grid built); a plain bound of our own where it is absent
        from ocr_ft.tables import grid_slot_count
    except ImportError:  # pragma: no cover - older ocr_ft.tables
        def grid_slot_count(t: Table) -> int:
            width = max((sum(c.colspan for c in row.cells) for row in t.rows), default=0)
            tall = max((c.rowspan for row in t.rows for c in row.cells), default=1)
            return (len(t.rows) + tall) * width
    return sum(grid_slot_count(t) for top in tables for t in top.iter_tables())


def check_pair_size(pred_html: str | None, gt_html: str | None) -> None:
    """Raise :class:`SampleTooLarge` (before any grid is built) when a side's grids would cover over
    ``MAX_EVAL_SLOTS`` slots, or the two sides' slot counts multiply to over ``MAX_GRITS_PRODUCT``."""
    sizes = {}
    for side, html in (("prediction", pred_html), ("ground truth", gt_html)):
        sizes[side] = n = _slots(safe_tables(html))
        if n > MAX_EVAL_SLOTS:
            raise SampleTooLarge(f"too_large: the {side}'s grids would cover about {n} slots, over the limit of "
                                 f"{MAX_EVAL_SLOTS}")
    product = sizes["prediction"] * sizes["ground truth"]
    if product > MAX_GRITS_PRODUCT:
        raise SampleTooLarge(f"too_large: {sizes['prediction']} predicted x {sizes['ground truth']} true slots "
                             f"= {product} slot pairs, over the table F1 limit of {MAX_GRITS_PRODUCT}")


def safe_sample_metrics(pred_html: str | None, gt_html: str, name: str = "sample") -> dict:
    """:func:`sample_metrics`, never raising: a pair over the size limits, or any exception while scoring,
    gives the empty scores with ``metric_error`` naming the sample, the exception type and message (a
    ``too_large: ...`` message for the size limits)."""
    try:
        check_pair_size(pred_html, gt_html)
        return {**sample_metrics(pred_html, gt_html), "metric_error": None}
    except SampleTooLarge as exc:
        message = f"{name}: {exc}"
    except Exception as exc:  # noqa: BLE001 - one bad sample never stops the others
        message = f"{name}: {type(exc).__name__}: {str(exc)[:300]}"
    return {"cer": 1.0, "wer": 1.0, "metric_error": message}


def sample_metrics(pred_html: str | None, gt_html: str) -> dict:
    """Every per-sample metric except TEDS (which :func:`ocr_ft.evaluate.teds_metric.teds_batch` computes)."""
    ref, hyp = table_text(gt_html), table_text(pred_html)
    cer_edits, cer_len = char_errors(ref, hyp)
    wer_edits, wer_len = word_errors(ref, hyp)
    f1 = table_f1(pred_html, gt_html)
    depth_gt, depth_pred = safe_depth(gt_html), safe_depth(pred_html)
    return {
        "stray_tables_pred": stray_tables(pred_html),
        "stray_tables_gt": stray_tables(gt_html),
        "cer": error_rate(cer_edits, cer_len),
        "cer_edits": cer_edits,
        "cer_ref_len": cer_len,
        "wer": error_rate(wer_edits, wer_len),
        "wer_edits": wer_edits,
        "wer_ref_len": wer_len,
        "content_precision": f1["content"].precision,
        "content_recall": f1["content"].recall,
        "content_f1": f1["content"].f1,
        "topology_precision": f1["topology"].precision,
        "topology_recall": f1["topology"].recall,
        "topology_f1": f1["topology"].f1,
        "depth_gt": depth_gt,
        "depth_pred": depth_pred,
    }
