"""The HTML table model: parse tables (lxml) into rows of cells, lay them on a grid honouring
rowspan/colspan, and measure nesting depth.

A table inside a cell is a *child* of that cell: the outer table is level 1, a table in one of its cells
level 2, a table inside that level 3.  A cell's own ``text`` never includes the text of its child tables.

Hostile input is bounded here, for every caller (validation, scrapers, metrics):

* spans are read by :func:`parse_span` only: a digit string over :data:`MAX_SPAN_DIGITS` digits is refused
  without converting it, a value over :data:`MAX_SPAN` is refused (not clipped);
* :func:`build_grid` refuses (:class:`TableTooLarge`) a grid over :data:`MAX_GRID_SLOTS` slots, computed from
  the spans before anything is allocated; :func:`check_table_size` does the same for a table and its children;
* lxml's default HTML parser silently drops everything below element depth 256 and text nodes over 10 MB.
  Documents are parsed with ``huge_tree`` (so nothing is cut silently) and a tree deeper than
  :data:`MAX_ELEMENT_DEPTH` is refused with :class:`LabelTruncated` (reason ``label_truncated``), which also
  keeps the recursive walks below far from Python's recursion limit. Callers bound the input's size first;
* ``<script>``, ``<style>``, ``<noscript>`` and ``<template>`` are removed from the tree: their text is never
  cell text.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from dataclasses import dataclass, field

import lxml.etree
import lxml.html

_WS = re.compile(r"\s+")
_CELL_TAGS = ("td", "th")
MAX_SPAN = 1000  # a span larger than this is refused: a typo or hostile input, not a 1000-row table
MAX_SPAN_DIGITS = 6  # a span's digit string longer than this is refused without converting it (int-string limit)
MAX_GRID_SLOTS = 200_000  # rows x columns a table's grid may cover; checked before the grid is built
MAX_ELEMENT_DEPTH = 255  # lxml's default parser silently stops at depth 256; deeper labels are refused
_NON_CONTENT_TAGS = ("script", "style", "noscript", "template")
_PARSERS = threading.local()  # one huge_tree parser per thread: lxml parsers must not be used concurrently
_HUGE_PARSER_LIMIT = 2048  # even the huge parser stops here: a depth at or over it means the parse was cut


_MAX_SPAN = MAX_SPAN  # old name


class TableParseError(ValueError):
    """The input is not HTML that lxml can read at all."""

    reason = "no_table"


class LabelTruncated(TableParseError):
    """The parser would silently drop part of the label (element depth over its limit); ``cause`` says which."""

    reason = "label_truncated"

    def __init__(self, cause: str):
        super().__init__(f"label would be truncated by the HTML parser: {cause}")
        self.cause = cause


class TableTooLarge(ValueError):
    """A table's grid would cover more slots than allowed; raised before the grid is built."""

    reason = "table_too_large"

    def __init__(self, slots: int, limit: int):
        super().__init__(f"table grid would cover about {slots} slots (rows x columns), over the limit of {limit}")
        self.slots = slots
        self.limit = limit


def normalize_text(text: str, nfkc: bool = False) -> str:
    """NFC (NFKC when ``nfkc``), every run of whitespace (incl. NBSP, ideographic space) to one space, stripped.

    Labels keep the characters documents use (㈜, ①, ㎡, Ⅱ, full-width forms): NFKC is an explicit option for
    metrics that want to compare under it, never the label form."""
    return _WS.sub(" ", unicodedata.normalize("NFKC" if nfkc else "NFC", text)).strip()


def parse_span(raw: str | None, name: str = "span", limit: int = MAX_SPAN) -> tuple[int, str | None]:
    """A ``rowspan``/``colspan`` attribute value as ``(value, problem)``; never raises.

    ``problem`` is ``None`` for a good span. A missing value is 1. A value that is not a number or below 1 reads
    as 1 with a problem; a digit string longer than :data:`MAX_SPAN_DIGITS` or a value over ``limit`` is
    refused (read as 1, with a problem saying so) without ever converting a huge digit string."""
    if raw is None:
        return 1, None
    m = re.match(r"\s*(\d+)", raw)
    if not m:
        return 1, f"{name}={raw[:20]!r} is not a number; read as 1"
    digits = m.group(1).lstrip("0") or "0"
    if len(digits) > MAX_SPAN_DIGITS:
        return 1, f"{name} of {len(digits)} digits refused (over {limit})"
    val = int(digits)
    if val < 1:
        return 1, f"{name}={raw[:20]!r} is below 1; read as 1"
    if val > limit:
        return 1, f"{name}={val} refused (over {limit})"
    return val, None


@dataclass
class Cell:
    text: str
    rowspan: int = 1
    colspan: int = 1
    header: bool = False
    tables: list["Table"] = field(default_factory=list)
    span_problems: list[str] = field(default_factory=list)


@dataclass
class Row:
    cells: list[Cell]
    section: str = "tbody"  # "thead" | "tbody" (tfoot rows count as body)


@dataclass
class Table:
    rows: list[Row]
    stray_text: str = ""  # text sitting inside the table but outside any cell

    def cells(self):
        for row in self.rows:
            yield from row.cells

    @property
    def depth(self) -> int:
        """1 for a flat table, 1 + the deepest child table otherwise."""
        inner = [t.depth for c in self.cells() for t in c.tables]
        return 1 + max(inner, default=0)

    def iter_tables(self):
        """This table and every table nested in it, depth first."""
        yield self
        for c in self.cells():
            for t in c.tables:
                yield from t.iter_tables()


@dataclass
class Grid:
    """The table's cells placed on a rectangle. ``slots[r][c]`` is the index of the cell covering it
    (index into ``cells``) or ``None`` when nothing covers it."""

    n_rows: int
    n_cols: int
    slots: list[list[int | None]]
    cells: list[tuple[int, int, Cell]]  # (row, col, cell) of each cell's top-left slot
    problems: list[str]

    @property
    def consistent(self) -> bool:
        return not self.problems


def _span(el, name: str, problems: list[str]) -> int:
    val, problem = parse_span(el.get(name), name)
    if problem:
        problems.append(problem)
    return val


def _own(el, tag_set, stop_tag="table"):
    """Descendants of ``el`` with a tag in ``tag_set`` whose nearest ``stop_tag`` ancestor is ``el``'s own."""
    out = []
    for child in el:
        if not isinstance(child.tag, str):
            continue
        if child.tag in tag_set:
            out.append(child)
        elif child.tag != stop_tag:
            out.extend(_own(child, tag_set, stop_tag))
    return out


def _cell_text_and_tables(cell_el) -> tuple[str, list]:
    parts: list[str] = []
    tables: list = []

    def walk(el):
        if el.text:
            parts.append(el.text)
        for child in el:
            if isinstance(child.tag, str):
                if child.tag == "table":
                    tables.append(child)
                    parts.append(" ")
                else:
                    if child.tag in ("br", "p", "div", "li"):
                        parts.append(" ")
                    walk(child)
                    if child.tag in ("p", "div", "li"):
                        parts.append(" ")
            if child.tail:
                parts.append(child.tail)

    walk(cell_el)
    return normalize_text("".join(parts)), tables


def _stray_text(table_el) -> str:
    """Text inside the table element that is not inside any cell (lost when rendered as a grid)."""
    parts = []

    def walk(el):
        if el.text and el.tag not in ("caption",):
            parts.append(el.text)
        for child in el:
            if isinstance(child.tag, str) and child.tag not in _CELL_TAGS and child.tag not in ("caption", "table"):
                walk(child)
            if child.tail:
                parts.append(child.tail)

    walk(table_el)
    return normalize_text("".join(parts))


def table_from_element(table_el) -> Table:
    rows = []
    for tr in _own(table_el, {"tr"}):
        section = "thead" if any(a.tag == "thead" for a in _ancestors_until(tr, table_el)) else "tbody"
        cells = []
        for cell_el in _own(tr, set(_CELL_TAGS)):
            problems: list[str] = []
            rs = _span(cell_el, "rowspan", problems)
            cs = _span(cell_el, "colspan", problems)
            text, child_tables = _cell_text_and_tables(cell_el)
            cells.append(
                Cell(
                    text=text,
                    rowspan=rs,
                    colspan=cs,
                    header=cell_el.tag == "th",
                    tables=[table_from_element(t) for t in child_tables],
                    span_problems=problems,
                )
            )
        rows.append(Row(cells=cells, section=section))
    return Table(rows=rows, stray_text=_stray_text(table_el))


def _ancestors_until(el, stop):
    cur = el.getparent()
    while cur is not None and cur is not stop:
        yield cur
        cur = cur.getparent()


def parse_document(html: str | bytes):
    """Parse HTML (a document or a fragment) into an lxml tree. Raises :class:`TableParseError`."""
    if isinstance(html, bytes):
        try:
            html = html.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise TableParseError(f"label is not UTF-8 ({exc.reason} at byte {exc.start})") from exc
    if not html or not html.strip():
        raise TableParseError("label is empty")
    try:
        # huge_tree: the default parser silently drops text nodes over 10 MB and everything below depth 256
        doc = lxml.html.document_fromstring(html, parser=_huge_parser())
    except (lxml.etree.ParserError, ValueError) as exc:
        raise TableParseError(f"label is not parseable HTML: {exc}") from exc
    depth = element_depth(doc)
    if depth > MAX_ELEMENT_DEPTH:
        cut = " (the parser itself stopped there)" if depth >= _HUGE_PARSER_LIMIT - 1 else ""
        raise LabelTruncated(f"element depth {depth} exceeds {MAX_ELEMENT_DEPTH}{cut}")
    # text of script/style/noscript/template is never table content; the tail after them is
    for el in list(doc.iter(*_NON_CONTENT_TAGS)):
        el.drop_tree()
    return doc


def _huge_parser():
    parser = getattr(_PARSERS, "parser", None)
    if parser is None:
        parser = _PARSERS.parser = lxml.html.HTMLParser(huge_tree=True)
    return parser


def element_depth(root) -> int:
    """Deepest element nesting below ``root`` (iterative: no recursion limit)."""
    best = 0
    stack = [(root, 1)]
    while stack:
        el, d = stack.pop()
        if d > best:
            best = d
        stack.extend((c, d + 1) for c in el if isinstance(c.tag, str))
    return best


def grid_slot_count(table: Table) -> int:
    """Upper bound of the slots ``table``'s grid covers (rows x columns), computed without building it."""
    n_rows = len(table.rows)
    width = 0
    covered = 0
    for r, row in enumerate(table.rows):
        row_width = 0
        for cell in row.cells:
            covered += min(cell.rowspan, max(n_rows - r, 1)) * cell.colspan
            row_width += cell.colspan
        width = max(width, row_width)
    return max(covered, n_rows * width)


def check_table_size(table: Table, max_slots: int = MAX_GRID_SLOTS) -> int:
    """Raise :class:`TableTooLarge` when ``table`` (or a table nested in it) would cover over ``max_slots``."""
    total = 0
    for t in table.iter_tables():
        slots = grid_slot_count(t)
        if slots > max_slots:
            raise TableTooLarge(slots, max_slots)
        total += slots
    if total > max_slots:
        raise TableTooLarge(total, max_slots)
    return total


def parse_tables(html: str | bytes) -> list[Table]:
    """Every top-level table of ``html`` (nested tables hang under their cells)."""
    doc = parse_document(html)
    top = [t for t in doc.iter("table") if not any(a.tag == "table" for a in t.iterancestors())]
    return [table_from_element(t) for t in top]


def build_grid(table: Table, max_slots: int = MAX_GRID_SLOTS) -> Grid:
    """Lay ``table``'s cells on a grid (HTML's table model) and record every inconsistency found.

    Raises :class:`TableTooLarge` before doing any work when the grid would cover over ``max_slots``."""
    slots_needed = grid_slot_count(table)
    if slots_needed > max_slots:
        raise TableTooLarge(slots_needed, max_slots)
    problems: list[str] = []
    occupied: dict[tuple[int, int], int] = {}
    placed: list[tuple[int, int, Cell]] = []
    n_rows = len(table.rows)
    for r, row in enumerate(table.rows):
        c = 0
        for cell in row.cells:
            problems.extend(f"row {r + 1}: {p}" for p in cell.span_problems)
            while (r, c) in occupied:
                c += 1
            idx = len(placed)
            placed.append((r, c, cell))
            if r + cell.rowspan > n_rows:
                problems.append(
                    f"row {r + 1} col {c + 1}: rowspan={cell.rowspan} runs past the last row ({n_rows})"
                )
            for dr in range(min(cell.rowspan, max(n_rows - r, 1))):
                for dc in range(cell.colspan):
                    key = (r + dr, c + dc)
                    if key in occupied:
                        other = placed[occupied[key]]
                        problems.append(
                            f"row {r + 1} col {c + 1}: span overlaps the cell at row {other[0] + 1} "
                            f"col {other[1] + 1} (slot {key[0] + 1},{key[1] + 1})"
                        )
                    else:
                        occupied[key] = idx
            c += cell.colspan
    n_cols = max((k[1] + 1 for k in occupied), default=0)
    slots: list[list[int | None]] = [[None] * n_cols for _ in range(n_rows)]
    for (r, c), idx in occupied.items():
        if r < n_rows:
            slots[r][c] = idx
    for r in range(n_rows):
        holes = [c for c in range(n_cols) if slots[r][c] is None]
        if not table.rows[r].cells and not holes:
            continue
        if holes:
            problems.append(f"row {r + 1}: {len(holes)} of {n_cols} columns not covered by any cell (ragged row)")
    if n_rows == 0:
        problems.append("table has no rows")
    elif n_cols == 0:
        problems.append("table has no cells")
    return Grid(n_rows=n_rows, n_cols=n_cols, slots=slots, cells=placed, problems=problems)


def nesting_depth(html: str | bytes) -> int:
    """Deepest table nesting in ``html``: 0 without a table, 1 for flat tables, 2 or 3 when nested."""
    tables = parse_tables(html)
    return max((t.depth for t in tables), default=0)
