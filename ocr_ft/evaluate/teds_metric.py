"""TEDS (tree-edit-distance-based similarity) of a predicted table against its ground truth.

Two modes:

``pubtabnet``
    PubTabNet's published metric, score for score: both sides wrapped in ``<html><body>`` when they are
    bare fragments, parsed with lxml's HTML parser (comments removed), the first ``body/table`` of each
    compared; every element is a tree node (``thead``/``tbody``/``th`` kept as they are, ``th`` content
    ignored), a ``td`` is a leaf whose content is the character-and-tag token list of everything inside it
    (so a table inside a cell is just more tokens of that cell); TEDS = 1 - distance / max(element count
    below the two tables).  Not clipped: like the original it can go below 0.

``nested`` (the project default)
    Both sides read through :func:`ocr_ft.tables.parse_tables`: ``th`` is ``td``, ``thead``/``tbody``/
    ``tfoot`` and every attribute but rowspan/colspan are gone, text is NFKC with whitespace collapsed.
    A table inside a cell is a *subtree* of that cell (table > tr > td > table...), so a missing, extra
    or misplaced inner table costs its nodes.  A cell's content is its whole text in reading order, its
    nested tables' text included, so flattening a nested table into its cell's text (the text kept, the
    structure lost) costs less than deleting the nested table with its text.  Several top-level tables hang under one virtual root.
    TEDS = 1 - distance / max(node count), clipped to [0, 1].

Costs in both modes (see :mod:`ocr_ft.evaluate.ted`): insert/delete 1, rename 1 between different
(tag, colspan, rowspan), otherwise the normalised Levenshtein distance of the contents.  ``structure_only``
(TEDS-S) empties every content.

Empty input, in both modes: an empty or table-less side scores 0.  A table with nothing below it
(``<table></table>``: no element in pubtabnet mode, no row in nested mode) is an empty table; an empty
table against a non-empty one scores 0 either way round, and two empty tables score 1 (identical trees,
distance 0).  PubTabNet's published code divides by zero on two empty tables (``max(element count)`` is 0);
this is the choice made for that case, and everywhere else pubtabnet mode's formula already gives these
values.  In nested mode the table node itself is counted, so without the rule an empty prediction would
get 1/n for matching the root of an n-node truth.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

import lxml.etree
import lxml.html

from ocr_ft.tables import Table

from .metrics import _cell_full_text, safe_tables
from .ted import TedNode, tree_edit_distances

MODES = ("nested", "pubtabnet")
_POOL_MIN_CHARS = 200_000  # below this much HTML per batch, worker start-up outweighs the parallel gain
_BODY = re.compile(r"<body[\s>]", re.IGNORECASE)
_SPAN_NUMBER = re.compile(r"\s*(\d+)")
MAX_TEDS_NODES = 5_000  # start tags per side; tree edit distance needs memory ~ n_pred x n_gt, so refuse before
_START_TAG = re.compile(r"<[A-Za-z]")


def node_estimate(html: str) -> int:
    """An upper bound of the tree nodes ``html`` can give in either mode: its start tags."""
    return len(_START_TAG.findall(html))


# --------------------------------------------------------------------------------------------- pubtabnet
def _span_attr(el, name: str) -> int:
    """The published metric calls ``int()`` on the attribute; a value it would crash on reads as its
    leading digits (or 1) here."""
    raw = el.get(name, "1")
    try:
        return int(raw)
    except ValueError:
        m = _SPAN_NUMBER.match(raw)
        return int(m.group(1)) if m else 1


def _cell_tokens(td) -> list[str]:
    """Tokens of everything inside ``td``: text as single characters, elements as ``<tag>``/``</tag>``,
    each descendant's tail after its end tag (a nested ``td``'s tail excepted, as in the original)."""
    out: list[str] = []

    def walk(el):
        out.append(f"<{el.tag}>")
        if el.text is not None:
            out.extend(el.text)
        for child in el:
            walk(child)
        out.append(f"</{el.tag}>")
        if el.tag != "td" and el.tail is not None:
            out.extend(el.tail)

    walk(td)
    return out[1:-1]


def _pubtabnet_tree(el, cells: list) -> TedNode:
    if el.tag == "td":
        node = TedNode("td", _span_attr(el, "colspan"), _span_attr(el, "rowspan"))
        cells.append((node, _cell_tokens(el)))
        return node
    return TedNode(el.tag, children=[_pubtabnet_tree(child, cells) for child in el])


def _tokens_to_strings(cells: list) -> None:
    """Give every cell its content as a string with one character per token, so that a C Levenshtein over
    strings counts exactly the token edits.  Single-character tokens stay themselves; tag tokens get
    private-use characters that no text token of this pair uses."""
    used = {tok for _, toks in cells for tok in toks if len(tok) == 1}
    code = {}
    next_cp = 0xF0000
    for _, toks in cells:
        for tok in toks:
            if len(tok) != 1 and tok not in code:
                while chr(next_cp) in used:
                    next_cp += 1
                code[tok] = chr(next_cp)
                next_cp += 1
    for node, toks in cells:
        node.content = "".join(tok if len(tok) == 1 else code[tok] for tok in toks)


def _pubtabnet_table(html: str):
    if not _BODY.search(html):
        html = f"<html><body>{html}</body></html>"
    parser = lxml.html.HTMLParser(remove_comments=True, encoding="utf-8")
    try:
        root = lxml.html.fromstring(html, parser=parser)
    except (lxml.etree.ParserError, ValueError):
        return None
    found = root.xpath("body/table")
    return found[0] if found else None


def _teds_pubtabnet(pred: str, gt: str, structure_flags: Sequence[bool]) -> list[float]:
    if not pred or not gt:
        return [0.0 for _ in structure_flags]
    pred_el, gt_el = _pubtabnet_table(pred), _pubtabnet_table(gt)
    if pred_el is None or gt_el is None:
        return [0.0 for _ in structure_flags]
    n_nodes = max(len(pred_el.xpath(".//*")), len(gt_el.xpath(".//*")))
    if n_nodes == 0:  # two empty tables: identical (the published metric divides by zero here)
        return [1.0 for _ in structure_flags]
    cells: list = []
    tree_pred, tree_gt = _pubtabnet_tree(pred_el, cells), _pubtabnet_tree(gt_el, cells)
    _tokens_to_strings(cells)
    distances = tree_edit_distances(tree_pred, tree_gt, tuple(not s for s in structure_flags))
    return [1.0 - d / n_nodes for d in distances]


# ------------------------------------------------------------------------------------------------ nested
def _nfkc(text: str) -> str:
    """Cell text compared under NFKC (labels keep NFC; nested mode folds compatibility forms explicitly)."""
    try:
        from ocr_ft.tables.model import normalize_text
        return normalize_text(text, nfkc=True)
    except TypeError:  # pragma: no cover - an ocr_ft.tables without the option already folds NFKC
        return text

def _nested_tree(table: Table) -> TedNode:
    rows = []
    for row in table.rows:
        cells = [TedNode("td", c.colspan, c.rowspan, _nfkc(" ".join(_cell_full_text(c))),
                         [_nested_tree(t) for t in c.tables])
                 for c in row.cells]
        rows.append(TedNode("tr", children=cells))
    return TedNode("table", children=rows)


def _nested_root(tables: list[Table], single: bool) -> TedNode:
    trees = [_nested_tree(t) for t in tables]
    return trees[0] if single else TedNode("tables", children=trees)


def _teds_nested(pred: str, gt: str, structure_flags: Sequence[bool]) -> list[float]:
    pred_tables, gt_tables = safe_tables(pred), safe_tables(gt)
    if not pred_tables or not gt_tables:
        return [0.0 for _ in structure_flags]
    pred_empty, gt_empty = (not any(t.rows for t in tables) for tables in (pred_tables, gt_tables))
    if pred_empty != gt_empty:  # an empty table against a non-empty one: nothing to credit but the root
        return [0.0 for _ in structure_flags]
    single = len(pred_tables) == 1 and len(gt_tables) == 1
    tree_pred, tree_gt = _nested_root(pred_tables, single), _nested_root(gt_tables, single)
    n_nodes = max(tree_pred.size(), tree_gt.size())
    distances = tree_edit_distances(tree_pred, tree_gt, tuple(not s for s in structure_flags))
    return [min(1.0, max(0.0, 1.0 - d / n_nodes)) for d in distances]


# -------------------------------------------------------------------------------------------------- API
def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown TEDS mode {mode!r}; expected one of {', '.join(MODES)}")


def teds_scores(pred: str, gt: str, mode: str = "nested") -> tuple[float, float]:
    """``(TEDS, TEDS-S)`` of ``pred`` against ``gt``, parsing each side once."""
    _check_mode(mode)
    fn = _teds_pubtabnet if mode == "pubtabnet" else _teds_nested
    full, struct = fn(pred or "", gt or "", (False, True))
    return full, struct


def teds(pred: str, gt: str, mode: str = "nested", structure_only: bool = False) -> float:
    """TEDS (or TEDS-S with ``structure_only``) of the HTML ``pred`` against the HTML ``gt``."""
    _check_mode(mode)
    fn = _teds_pubtabnet if mode == "pubtabnet" else _teds_nested
    return fn(pred or "", gt or "", (structure_only,))[0]


@dataclass
class TedsResult:
    """Scores of one pair. ``teds``/``teds_s`` are ``None`` when the pair timed out or failed."""

    teds: float | None
    teds_s: float | None
    timed_out: bool = False
    error: str | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


class _Timeout(Exception):
    pass


_ALARM_REPEAT_S = 0.05


class _Alarm:
    """A wall-clock limit on the main thread with SIGALRM.

    The handler raises :class:`_Timeout` while the alarm is armed.  The timer repeats every
    ``_ALARM_REPEAT_S`` until disarmed: Python discards an exception raised where it cannot propagate (a
    weakref callback or ``__del__`` run by the garbage collector at that moment), so a single alarm can be
    lost and the computation would run on to its end; the next one stops it.  Disarming is one attribute
    store, after which a late or pending alarm is a no-op.  A timer that was already running (an outer
    limit, e.g. pytest-timeout's) is given back what is left of it on exit.
    """

    def __init__(self, timeout_s: float):
        self.timeout_s = timeout_s
        self.armed = False
        self._previous_handler = None
        self._previous_timer = (0.0, 0.0)
        self._start = 0.0

    def _handler(self, signum, frame):
        if self.armed:
            raise _Timeout()

    def arm(self) -> None:
        self._start = time.monotonic()
        self._previous_handler = signal.signal(signal.SIGALRM, self._handler)
        self.armed = True
        self._previous_timer = signal.setitimer(signal.ITIMER_REAL, self.timeout_s, _ALARM_REPEAT_S)

    def restore(self) -> None:
        self.armed = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self._previous_handler)
        delay, interval = self._previous_timer
        if delay > 0:
            left = delay - (time.monotonic() - self._start)
            signal.setitimer(signal.ITIMER_REAL, max(left, 1e-6), interval)


def _score_pair(args: tuple[str, str, str, float | None]) -> TedsResult:
    """Score one pair under a wall-clock limit (SIGALRM; only where this runs in a main thread)."""
    pred, gt, mode, timeout_s = args
    nodes = max(node_estimate(pred), node_estimate(gt))
    if nodes > MAX_TEDS_NODES:
        return TedsResult(None, None, error=f"too_large: {nodes} elements on one side, over the TEDS limit of "
                                            f"{MAX_TEDS_NODES}")
    use_alarm = bool(timeout_s) and hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    alarm = _Alarm(timeout_s) if use_alarm else None
    start = time.perf_counter()
    try:
        if alarm:
            alarm.arm()
        try:
            full, struct = teds_scores(pred, gt, mode)
        finally:
            if alarm:
                alarm.armed = False  # an alarm from here on is ignored: the score stands
        return TedsResult(full, struct, seconds=time.perf_counter() - start)
    except _Timeout:
        if alarm:
            alarm.armed = False
        return TedsResult(None, None, timed_out=True, error=f"TEDS took longer than {timeout_s:g} s",
                          seconds=time.perf_counter() - start)
    except Exception as exc:  # a malformed pair must not sink the batch; it is reported per sample
        return TedsResult(None, None, error=f"{type(exc).__name__}: {exc}", seconds=time.perf_counter() - start)
    finally:
        if alarm:
            alarm.restore()


def teds_batch(
    pairs: Iterable[tuple[str, str]],
    mode: str = "nested",
    workers: int | None = None,
    timeout_s: float | None = 60.0,
) -> list[TedsResult]:
    """TEDS and TEDS-S of every ``(pred, gt)`` pair, in order.

    ``workers`` processes share the work; 1 runs in this process; ``None`` picks the CPU count, or 1 when
    the batch is small (under ``_POOL_MIN_CHARS`` of HTML in all: starting worker processes would cost more
    than it saves).  A pair taking longer than ``timeout_s`` seconds is abandoned and returned with
    ``timed_out=True`` and no scores; the limit is enforced with SIGALRM inside the worker, so in-process
    it applies only on the main thread.
    """
    _check_mode(mode)
    jobs = [(p or "", g or "", mode, timeout_s) for p, g in pairs]
    if not jobs:
        return []
    if workers is None:
        small = sum(len(p) + len(g) for p, g, _, _ in jobs) < _POOL_MIN_CHARS
        workers = 1 if small else os.cpu_count() or 1
    workers = min(workers, len(jobs))
    if workers <= 1:
        return [_score_pair(job) for job in jobs]
    return _pool_map(_score_pair, jobs, workers)


def _pool_map(fn, jobs: list, workers: int) -> list[TedsResult]:
    """``fn`` over ``jobs`` in ``workers`` spawned processes (safe when the caller runs threads: Dagster, the
    endpoint predictor).  When a worker dies (OOM kill, a crash in C) the pool breaks and every unfinished
    job is lost with it: those jobs are rerun one per fresh single-worker pool, so a job that kills its
    worker again gets an error entry of its own and every other job its score."""
    ctx = multiprocessing.get_context("spawn")
    results: list[TedsResult | None] = [None] * len(jobs)
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        futures = [pool.submit(fn, job) for job in jobs]
        for i, future in enumerate(futures):
            try:
                results[i] = future.result()
            except BrokenProcessPool:
                pass
    for i, result in enumerate(results):
        if result is not None:
            continue
        try:
            with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
                results[i] = pool.submit(fn, jobs[i]).result()
        except BrokenProcessPool:
            results[i] = TedsResult(None, None, error="worker_died: the TEDS worker process died on this pair "
                                                      "(killed, e.g. out of memory)")
    return results  # type: ignore[return-value]
