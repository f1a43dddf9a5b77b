"""GriTS: grid table similarity (Smock, Pesala, Abraham, "GriTS: Grid table similarity metric for table
structure recognition", 2022), content (GriTS-Con) and topology (GriTS-Top).

A table is a matrix of grid slots (spans honoured: a cell covering k slots appears in each of them).
Two matrices are compared by their *factored two-dimensional most-similar substructures* (2D-MSS):

1. the rows of the true matrix are aligned to the rows of the predicted one by a monotone dynamic
   programme (skip a row on either side, or pair two rows) whose pair reward is itself the best monotone
   1D alignment score of the two rows' slots under the slot similarity ``f``;
2. the columns likewise, on the transposed matrices, independently;
3. with the aligned rows ``(i, i')`` and columns ``(j, j')``, ``S = sum f(A[i, j], B[i', j'])``;
   precision = S / |B|, recall = S / |A| (slot counts), GriTS = 2PR / (P + R).  By the paper's
   conventions precision is 1 when nothing is predicted, recall 1 when the truth is empty, F 0 when P + R = 0.

Slot similarities
    * Con: ``2 * |LCS| / (|a| + |b|)``, the matching blocks of :class:`difflib.SequenceMatcher` (as the
      published implementation measures its "LCS"; 1 when both strings are empty);
    * Top: the *relative span* of the cell covering slot (r, c) is the box
      ``(c0 - c, r0 - r, c0 + colspan - c, r0 + rowspan - r)``; two boxes score intersection area over
      the area of their enclosing box (the published code's "IoU"; 0 when that area is 0).  A slot no cell
      covers (a ragged row) has the empty box (0, 0, 0, 0) and text "".

Ties in both dynamic programmes resolve as the published implementation's do (pair, then skip a true
row, then skip a predicted row), so the same rows are aligned and the scores agree to rounding; the
tests check this against values produced by microsoft/table-transformer's ``src/grits.py`` (see
``ocr_ft_tests/evaluate/data/grits_reference.json``).  This module is our own implementation: the inner
alignment runs a row of the dynamic programme at a time in numpy.
"""

from __future__ import annotations

from dataclasses import dataclass
from difflib import SequenceMatcher
from typing import Callable, Sequence

import numpy as np

Box = tuple[int, int, int, int]
EMPTY_BOX: Box = (0, 0, 0, 0)


@dataclass(frozen=True)
class GritsScore:
    precision: float
    recall: float
    f1: float


def lcs_similarity(a: str, b: str) -> float:
    """``2 * matched / (len(a) + len(b))`` with difflib's matching blocks; 1.0 for two empty strings."""
    if not a and not b:
        return 1.0
    matched = sum(block.size for block in SequenceMatcher(None, a, b).get_matching_blocks())
    return 2 * matched / (len(a) + len(b))


def box_overlap(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection area of boxes ``(x0, y0, x1, y1)`` over the area of the box enclosing both."""
    ix = min(a[2], b[2]) - max(a[0], b[0])
    iy = min(a[3], b[3]) - max(a[1], b[1])
    inter = ix * iy if ix > 0 and iy > 0 else 0
    hull = (max(a[2], b[2]) - min(a[0], b[0])) * (max(a[3], b[3]) - min(a[1], b[1]))
    # an empty box (x0 == x1 or y0 == y1) does not enlarge the hull in the reference's geometry library
    if (a[2] - a[0]) <= 0 or (a[3] - a[1]) <= 0:
        hull = max(b[2] - b[0], 0) * max(b[3] - b[1], 0)
    elif (b[2] - b[0]) <= 0 or (b[3] - b[1]) <= 0:
        hull = max(a[2] - a[0], 0) * max(a[3] - a[1], 0)
    return inter / hull if hull > 0 else 0.0


def _dp_scores(reward: np.ndarray) -> np.ndarray:
    """Scores of the monotone alignment DP (pair = reward, skipping either side = 0), row by row."""
    n1, n2 = reward.shape
    scores = np.zeros((n1 + 1, n2 + 1))
    for i in range(1, n1 + 1):
        best = np.maximum(scores[i - 1, 1:], scores[i - 1, :-1] + reward[i - 1])
        scores[i, 1:] = np.maximum.accumulate(best)
    return scores


def _traceback(scores: np.ndarray, reward: np.ndarray) -> tuple[list[int], list[int]]:
    i, j = scores.shape[0] - 1, scores.shape[1] - 1
    first: list[int] = []
    second: list[int] = []
    while i > 0 and j > 0:
        if scores[i, j] == scores[i - 1, j - 1] + reward[i - 1, j - 1]:
            i, j = i - 1, j - 1
            first.append(i)
            second.append(j)
        elif scores[i, j] == scores[i - 1, j]:
            i -= 1
        else:
            j -= 1
    return first[::-1], second[::-1]


def _outer_align(sim: np.ndarray) -> tuple[list[int], list[int]]:
    """Align axis 0 of the true matrix with axis 0 of the predicted one; ``sim[i, j, k, l]`` is the slot
    similarity of true (i, j) and predicted (k, l)."""
    n_true, _, n_pred, _ = sim.shape
    reward = np.zeros((n_true, n_pred))
    for i in range(n_true):
        for k in range(n_pred):
            reward[i, k] = _dp_scores(sim[i, :, k, :])[-1, -1]
    return _traceback(_dp_scores(reward), reward)


def _fscore(matched: float, n_true: int, n_pred: int) -> GritsScore:
    precision = matched / n_pred if n_pred > 0 else 1.0
    recall = matched / n_true if n_true > 0 else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return GritsScore(float(precision), float(recall), float(f1))


def _lcs_matrix(true_texts: list[str], pred_texts: list[str]) -> dict:
    """:func:`lcs_similarity` of every (true, predicted) pair of distinct texts, one matcher per predicted
    text (difflib caches its analysis of the second sequence)."""
    out = {}
    for b in set(pred_texts):
        matcher = SequenceMatcher(None, "", b)
        for a in set(true_texts):
            if not a and not b:
                out[a, b] = 1.0
            elif not a or not b:
                out[a, b] = 0.0
            else:
                matcher.set_seq1(a)
                matched = sum(block.size for block in matcher.get_matching_blocks())
                out[a, b] = 2 * matched / (len(a) + len(b))
    return out


def factored_2dmss(true_grid: Sequence[Sequence], pred_grid: Sequence[Sequence],
                   similarity: Callable[[object, object], float]) -> GritsScore:
    """GriTS of two rectangular matrices of slot features under ``similarity`` (see the module docstring)."""
    n_tr, n_tc = len(true_grid), (len(true_grid[0]) if true_grid else 0)
    n_pr, n_pc = len(pred_grid), (len(pred_grid[0]) if pred_grid else 0)
    n_true, n_pred = n_tr * n_tc, n_pr * n_pc
    if n_true == 0 or n_pred == 0:
        return _fscore(0.0, n_true, n_pred)
    sim = np.zeros((n_tr, n_tc, n_pr, n_pc))
    cache: dict = {}
    if similarity is lcs_similarity:
        cache = _lcs_matrix([x for row in true_grid for x in row], [x for row in pred_grid for x in row])
    for i in range(n_tr):
        for j in range(n_tc):
            a = true_grid[i][j]
            for k in range(n_pr):
                for l in range(n_pc):  # noqa: E741
                    b = pred_grid[k][l]
                    key = (a, b)
                    value = cache.get(key)
                    if value is None:
                        value = cache[key] = similarity(a, b)
                    sim[i, j, k, l] = value
    true_rows, pred_rows = _outer_align(sim)
    true_cols, pred_cols = _outer_align(sim.transpose(1, 0, 3, 2))
    matched = 0.0
    for i, k in zip(true_rows, pred_rows):
        for j, l in zip(true_cols, pred_cols):  # noqa: E741
            matched += sim[i, j, k, l]
    return _fscore(matched, n_true, n_pred)


def grits_con(true_text_grid, pred_text_grid) -> GritsScore:
    """GriTS-Con of two matrices of slot texts."""
    return factored_2dmss(true_text_grid, pred_text_grid, lcs_similarity)


def grits_top(true_span_grid, pred_span_grid) -> GritsScore:
    """GriTS-Top of two matrices of relative-span boxes (tuples)."""
    return factored_2dmss(true_span_grid, pred_span_grid, box_overlap)


def grids_from_tables(tables, text_of: Callable) -> tuple[list[list[str]], list[list[Box]]]:
    """(text grid, relative-span grid) of ``tables`` (:class:`ocr_ft.tables.Table`), stacked vertically and
    padded to one width; ``text_of(cell)`` gives a cell's text."""
    from ocr_ft.tables import build_grid

    texts: list[list[str]] = []
    spans: list[list[Box]] = []
    for table in tables:
        grid = build_grid(table)
        cell_text = {idx: text_of(cell) for idx, (_, _, cell) in enumerate(grid.cells)}
        for r in range(grid.n_rows):
            trow: list[str] = []
            srow: list[Box] = []
            for c in range(grid.n_cols):
                idx = grid.slots[r][c]
                if idx is None:
                    trow.append("")
                    srow.append(EMPTY_BOX)
                    continue
                r0, c0, cell = grid.cells[idx]
                trow.append(cell_text[idx])
                srow.append((c0 - c, r0 - r, c0 + cell.colspan - c, r0 + cell.rowspan - r))
            texts.append(trow)
            spans.append(srow)
    width = max((len(r) for r in texts), default=0)
    for trow, srow in zip(texts, spans):
        trow.extend([""] * (width - len(trow)))
        srow.extend([EMPTY_BOX] * (width - len(srow)))
    return texts, spans
