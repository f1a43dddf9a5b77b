"""The HTML table model: parse tables (lxml) into rows of cells, lay them on a grid honouring
rowspan/colspan, and measure nesting depth.

A table inside a cell is a *child* of that cell: the outer table is level 1, a table in one of its cells
level 2, a table inside that level 3.  A cell's own ``text`` never includes the text of its child tables.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

import lxml.etree
import lxml.html

_WS = re.compile(r"\s+")
_CELL_TAGS = ("td", "th")
_MAX_SPAN = 1000  # a span larger than this is treated as a typo, not a 1000-row table


class TableParseError(ValueError):
    """The input is not HTML that lxml can read at all."""


def normalize_text(text: str) -> str:
    """NFKC, every run of whitespace (incl. NBSP and ideographic space) to one space, stripped."""
    return _WS.sub(" ", unicodedata.normalize("NFKC", text)).strip()


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
    raw = el.get(name)
    if raw is None:
        return 1
    m = re.match(r"\s*(\d+)", raw)
    if not m:
        problems.append(f"{name}={raw!r} is not a number; read as 1")
        return 1
    val = int(m.group(1))
    if val < 1:
        problems.append(f"{name}={raw!r} is below 1; read as 1")
        return 1
    if val > _MAX_SPAN:
        problems.append(f"{name}={raw!r} exceeds {_MAX_SPAN}; clipped")
        return _MAX_SPAN
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
        return lxml.html.document_fromstring(html)
    except (lxml.etree.ParserError, ValueError) as exc:
        raise TableParseError(f"label is not parseable HTML: {exc}") from exc


def parse_tables(html: str | bytes) -> list[Table]:
    """Every top-level table of ``html`` (nested tables hang under their cells)."""
    doc = parse_document(html)
    top = [t for t in doc.iter("table") if not any(a.tag == "table" for a in t.iterancestors())]
    return [table_from_element(t) for t in top]


def build_grid(table: Table) -> Grid:
    """Lay ``table``'s cells on a grid (HTML's table model) and record every inconsistency found."""
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
