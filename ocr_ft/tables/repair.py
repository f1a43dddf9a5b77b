"""Repair of malformed labels, recording every change made.

What is repaired: a fragment of rows/cells with no ``<table>`` around it; end tags missing (``<td>``,
``<tr>``, ``<table>``…, which the HTML parser closes); cells sitting directly in a table or section with no
``<tr>``; text inside a table but outside any cell (dropped: a browser draws it outside the grid); rowspans
running past the last row (clipped, as browsers do); spans that are not a number or below 1 (read as 1);
ragged rows (padded with empty cells, as a browser
leaves those slots empty).  Span overlaps are not guessed at: they stay as validation problems.  Refused
spans (a digit string over :data:`~ocr_ft.tables.MAX_SPAN_DIGITS` or a value over
:data:`~ocr_ft.tables.MAX_SPAN`) are not repaired either: they are listed in ``RepairResult.problems`` and
validation rejects the label.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import lxml.html

from .model import Cell, Table, build_grid, parse_document, table_from_element
from .normalize import normalize_tables

_TAG = re.compile(r"<(/?)(table|thead|tbody|tfoot|tr|td|th)\b[^>]*?(/?)>", re.IGNORECASE)


@dataclass
class RepairResult:
    html: str  # normalised label form after repair
    repairs: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # what could not be repaired (refused spans)

    @property
    def changed(self) -> bool:
        return bool(self.repairs)


def _unclosed_counts(html: str) -> dict[str, int]:
    opened: dict[str, int] = {}
    closed: dict[str, int] = {}
    for m in _TAG.finditer(html):
        tag = m.group(2).lower()
        if m.group(3):  # self-closing <td/>: counts as both
            continue
        book = closed if m.group(1) else opened
        book[tag] = book.get(tag, 0) + 1
    return {t: n - closed.get(t, 0) for t, n in opened.items() if n > closed.get(t, 0)}


def _wrap_orphan_cells(table_el, repairs: list[str]) -> None:
    """Put runs of td/th that are direct children of a table or section into a new <tr>."""
    for container in [table_el, *[c for c in table_el if c.tag in ("thead", "tbody", "tfoot")]]:
        run: list = []
        groups: list[list] = []
        for child in list(container):
            if child.tag in ("td", "th"):
                run.append(child)
            elif run:
                groups.append(run)
                run = []
        if run:
            groups.append(run)
        for group in groups:
            tr = lxml.html.Element("tr")
            group[0].addprevious(tr)
            for cell in group:
                tr.append(cell)
            repairs.append(f"wrapped {len(group)} cell(s) lying outside any <tr> in a new row")


def _fix_table(table: Table, repairs: list[str], where: str, problems: list[str] | None = None) -> None:
    if table.stray_text:
        repairs.append(f"{where}: dropped text outside any cell: {table.stray_text[:60]!r}")
        table.stray_text = ""
    n_rows = len(table.rows)
    grid = build_grid(table)
    for r, c, cell in grid.cells:
        if r + cell.rowspan > n_rows:
            repairs.append(f"{where}: clipped rowspan={cell.rowspan} at row {r + 1} col {c + 1} to {n_rows - r}")
            cell.rowspan = n_rows - r
    grid = build_grid(table)
    if grid.n_cols and not any("overlaps" in p for p in grid.problems):
        for r, row_slots in enumerate(grid.slots):
            holes = sum(1 for s in row_slots if s is None)
            if holes:
                # Holes can only be trailing once spans are consistent; pad the row's end.
                table.rows[r].cells.extend(Cell(text="") for _ in range(holes))
                repairs.append(f"{where}: padded row {r + 1} with {holes} empty cell(s) to {grid.n_cols} columns")
    for cell in table.cells():
        # e.g. rowspan="0" read as 1 is a repair; a refused span (huge digit string, over MAX_SPAN) stays a
        # problem, so validation rejects the label instead of guessing its layout
        repairs.extend(f"{where}: {p}" for p in cell.span_problems if "refused" not in p)
        if problems is not None:
            problems.extend(f"{where}: {p}" for p in cell.span_problems if "refused" in p)
        cell.span_problems = []
        for child in cell.tables:
            _fix_table(child, repairs, "nested table", problems)


def repair_html(html: str | bytes) -> RepairResult:
    """Repair ``html`` and return it in the normalised label form with the list of repairs made.

    Raises :class:`ocr_ft.tables.TableParseError` when the input is not HTML at all (empty, not UTF-8).
    """
    if isinstance(html, bytes):
        doc = parse_document(html)  # raises with the decoding problem
        html = html.decode("utf-8")
    repairs: list[str] = []
    if not re.search(r"<table\b", html, re.IGNORECASE) and re.search(r"<(tr|td|th)\b", html, re.IGNORECASE):
        html = f"<table>{html}</table>"
        repairs.append("wrapped rows/cells that had no <table> in one")
    for tag, n in sorted(_unclosed_counts(html).items()):
        repairs.append(f"closed {n} <{tag}> without an end tag")
    doc = parse_document(html)
    top = [t for t in doc.iter("table") if not any(a.tag == "table" for a in t.iterancestors())]
    for t in doc.iter("table"):
        _wrap_orphan_cells(t, repairs)
    tables = [table_from_element(t) for t in top]
    problems: list[str] = []
    for t in tables:
        _fix_table(t, repairs, "table", problems)
    return RepairResult(html=normalize_tables(tables), repairs=repairs, problems=problems)
