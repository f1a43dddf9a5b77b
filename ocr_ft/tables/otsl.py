"""OTSL, the table format PaddleOCR-VL writes and is trained on, to and from the HTML table model.

OTSL (Optimised Table Structure Language, docling / IBM) writes a table row by row as one token per grid
slot, each row ended by ``<nl>``:

* ``<fcel>`` a cell that starts here, followed by its text; ``<ecel>`` a cell that starts here, empty;
* ``<lcel>`` the slot belongs to the cell on its left (colspan), ``<ucel>`` to the cell above (rowspan),
  ``<xcel>`` to the cell both left and above (a cell spanning rows and columns).

PaddleOCR-VL uses exactly these six tags (its SFT guide, seed 002: ``Table Recognition:`` answered
``<fcel>分组<fcel>频数<nl>...``; PaddleX's ``convert_otsl_to_html`` accepts only them and writes ``<td>`` only).
docling's DocTags add header tags, ``<ched>`` (column header), ``<rhed>`` (row header), ``<srow>`` (section
row); they are written only with ``headers=True`` and always read.

What OTSL cannot carry, and so is lost when a label goes through it (``headers=False``, PaddleOCR-VL's form):
``<th>`` vs ``<td>`` and the ``<thead>`` section (every cell comes back as ``<td>`` in one body), nested
tables (refused by default; ``nested="text"`` puts the inner tables' text into the outer cell), and anything
the normalised label form drops anyway (attributes, ``<br>``). With ``headers=True`` a ``<th>`` becomes
``<ched>`` in the head section and ``<rhed>`` in the body, and leading rows of header cells come back as
``<thead>``.

:func:`otsl_to_table` / :func:`otsl_to_html` read strictly by default (labels: any malformed input raises
:class:`OTSLError` naming the row, column and token); ``strict=False`` reads model output the way PaddleX
does: ragged rows padded with ``<ecel>`` (or cut) to the width that fits most rows, and a span tag that
cannot attach (``<lcel>`` in the first column, ``<ucel>`` in the first row, a span that is not a rectangle)
becomes an empty cell of its own, so the result is always a consistent grid.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .model import MAX_GRID_SLOTS, Cell, Row, Table, TableTooLarge, build_grid, normalize_text, parse_tables
from .normalize import table_to_html

FCEL, ECEL, LCEL, UCEL, XCEL, NL = "<fcel>", "<ecel>", "<lcel>", "<ucel>", "<xcel>", "<nl>"
CHED, RHED, SROW = "<ched>", "<rhed>", "<srow>"
OTSL_TOKENS = (FCEL, ECEL, LCEL, UCEL, XCEL, NL)  # PaddleOCR-VL's (OTSL v1.0)
HEADER_TOKENS = (CHED, RHED, SROW)  # docling's DocTags extension
_ANCHORS = {"fcel", "ecel", "ched", "rhed", "srow"}
_SPANS = {"lcel", "ucel", "xcel"}
_TAG = re.compile(r"<(fcel|ecel|lcel|ucel|xcel|nl|ched|rhed|srow)>")


class OTSLError(ValueError):
    """Malformed OTSL, or a table that OTSL cannot express; the message names the row, column and token."""


# --------------------------------------------------------------------------- HTML -> OTSL


def _nested_text(cell: Cell) -> str:
    parts = [cell.text]
    for t in cell.tables:
        for inner in t.iter_tables():
            parts.extend(c.text for c in inner.cells())
    return normalize_text(" ".join(p for p in parts if p))


def _check_text(text: str, r: int, c: int) -> str:
    if _TAG.search(text):
        raise OTSLError(f"row {r + 1} col {c + 1}: cell text {text[:40]!r} contains an OTSL tag")
    return text


def table_to_otsl(table: Table, headers: bool = False, nested: str = "error") -> str:
    """OTSL of a parsed table (see module docstring). ``nested``: ``"error"`` refuses a table in a cell,
    ``"text"`` writes the inner tables' cell text into the outer cell. Raises :class:`OTSLError` when the
    table's grid is inconsistent (ragged rows, overlapping spans) or empty."""
    if nested not in ("error", "text"):
        raise ValueError(f"nested must be 'error' or 'text', got {nested!r}")
    grid = build_grid(table)
    if grid.problems:
        shown = "; ".join(grid.problems[:3]) + (" ..." if len(grid.problems) > 3 else "")
        raise OTSLError(f"table grid is inconsistent, OTSL cannot express it: {shown}")
    out: list[str] = []
    for r in range(grid.n_rows):
        for c in range(grid.n_cols):
            idx = grid.slots[r][c]
            r0, c0, cell = grid.cells[idx]
            if (r, c) != (r0, c0):
                out.append(LCEL if r == r0 else UCEL if c == c0 else XCEL)
                continue
            if cell.tables and nested == "error":
                raise OTSLError(f"row {r + 1} col {c + 1}: a nested table cannot be written in OTSL "
                                f"(use nested='text' to keep its text in the cell)")
            text = _check_text(_nested_text(cell) if cell.tables else cell.text, r, c)
            if headers and cell.header:
                tag = CHED if table.rows[r].section == "thead" else RHED
            else:
                tag = FCEL if text else ECEL
            out.append(tag + text)
        out.append(NL)
    return "".join(out)


def html_to_otsl(html: str | bytes, headers: bool = False, nested: str = "error") -> str:
    """OTSL of the one top-level table in ``html``. Raises :class:`OTSLError` when there is no table or more
    than one (OTSL is one table), or when the table cannot be expressed (:func:`table_to_otsl`)."""
    tables = parse_tables(html)
    if len(tables) != 1:
        raise OTSLError(f"OTSL holds exactly one table; the HTML has {len(tables)} top-level tables")
    return table_to_otsl(tables[0], headers=headers, nested=nested)


# --------------------------------------------------------------------------- OTSL -> HTML


@dataclass
class _Slot:
    tag: str
    text: str


def _tokenize(otsl: str, strict: bool) -> list[list[_Slot]]:
    pieces = _TAG.split(otsl)
    lead = pieces[0].strip()
    if lead and strict:
        raise OTSLError(f"text before the first OTSL tag: {lead[:40]!r}")
    rows: list[list[_Slot]] = [[]]
    for i in range(1, len(pieces), 2):
        tag, text = pieces[i], pieces[i + 1].strip()
        if tag == "nl":
            if text and strict:
                raise OTSLError(f"row {len(rows)}: text {text[:40]!r} after <nl> belongs to no cell")
            if not rows[-1]:
                if strict:
                    raise OTSLError(f"row {len(rows)} is empty (<nl> with no cell before it)")
                continue
            rows.append([])
            continue
        rows[-1].append(_Slot(tag, text))
    if not rows[-1]:
        rows.pop()
    return rows


def _fit_width(rows: list[list[_Slot]]) -> int:
    """The row width that needs the fewest slots added or cut, at least up to every row's last filled cell
    (PaddleX repairs ragged model output the same way). The sum of |row length - width| is smallest at the
    (lower) median length, so no width is tried one by one: a runaway row of a repetition loop costs nothing."""
    lengths = sorted(len(r) for r in rows)
    least = max((max((k + 1 for k, s in enumerate(r) if s.tag == "fcel" or s.text), default=0) for r in rows),
                default=0)
    return max(least, lengths[(len(lengths) - 1) // 2])


def otsl_to_table(otsl: str, strict: bool = True, max_slots: int = MAX_GRID_SLOTS) -> Table:
    """Parse OTSL into a :class:`~ocr_ft.tables.Table` (see module docstring for ``strict``).

    Raises :class:`OTSLError` for malformed input (strict) or no cell at all, and
    :class:`~ocr_ft.tables.TableTooLarge` when the grid would cover over ``max_slots`` slots."""
    if not isinstance(otsl, str):
        raise OTSLError(f"OTSL must be text, got {type(otsl).__name__}")
    rows = _tokenize(otsl, strict)
    if not rows:
        raise OTSLError("OTSL holds no cell" + (f": {otsl.strip()[:40]!r}" if otsl.strip() else " (empty)"))
    widths = {len(r) for r in rows}
    if len(widths) > 1:
        if strict:
            detail = ", ".join(f"row {i + 1}: {len(r)}" for i, r in enumerate(rows) if len(r) != len(rows[0]))
            raise OTSLError(f"rows differ in width (row 1: {len(rows[0])} slots; {detail})")
        width = _fit_width(rows)
        rows = [(r + [_Slot("ecel", "")] * (width - len(r)))[:width] for r in rows]
    n_rows, n_cols = len(rows), len(rows[0])
    if n_rows * n_cols > max_slots:
        raise TableTooLarge(n_rows * n_cols, max_slots)

    owner: list[list[int]] = [[-1] * n_cols for _ in range(n_rows)]
    anchors: list[tuple[int, int]] = []  # owner id -> anchor slot

    def new_owner(r: int, c: int) -> int:
        anchors.append((r, c))
        return len(anchors) - 1

    for r, row in enumerate(rows):
        for c, slot in enumerate(row):
            where = f"row {r + 1} col {c + 1}: <{slot.tag}>"
            if slot.tag in _ANCHORS:
                if slot.tag == "ecel" and slot.text and strict:
                    raise OTSLError(f"{where} is an empty cell but carries text {slot.text[:40]!r}")
                owner[r][c] = new_owner(r, c)
                continue
            if slot.text:
                if strict:
                    raise OTSLError(f"{where} continues a span but carries text {slot.text[:40]!r}")
                slot.tag = "fcel"  # lenient: text is never dropped; it becomes a cell of its own
                owner[r][c] = new_owner(r, c)
                continue
            left = owner[r][c - 1] if c > 0 else -1
            up = owner[r - 1][c] if r > 0 else -1
            if slot.tag == "lcel":
                target, problem = left, "has no cell to its left" if left < 0 else ""
            elif slot.tag == "ucel":
                target, problem = up, "has no cell above it" if up < 0 else ""
            else:
                target = up if up >= 0 and up == left else -1
                problem = "" if target >= 0 else ("is in the first row or column" if up < 0 or left < 0
                                                  else "joins two different cells (left and above)")
            if problem:
                if strict:
                    raise OTSLError(f"{where} {problem}")
                slot.tag = "ecel"
                target = new_owner(r, c)
            owner[r][c] = target

    # every cell must cover a rectangle whose top-left slot is its anchor
    regions: dict[int, list[tuple[int, int]]] = {}
    for r in range(n_rows):
        for c in range(n_cols):
            regions.setdefault(owner[r][c], []).append((r, c))
    spans: dict[int, tuple[int, int]] = {}
    for oid, slots in regions.items():
        r0, c0 = anchors[oid]
        h = max(r for r, _ in slots) - r0 + 1
        w = max(c for _, c in slots) - c0 + 1
        if h * w == len(slots):
            spans[oid] = (h, w)
            continue
        if strict:
            raise OTSLError(f"row {r0 + 1} col {c0 + 1}: the cell's span tags do not form a rectangle")
        w = 1
        while c0 + w < n_cols and owner[r0][c0 + w] == oid:
            w += 1
        h = 1
        while r0 + h < n_rows and all(owner[r0 + h][c] == oid for c in range(c0, c0 + w)):
            h += 1
        spans[oid] = (h, w)
        inside = {(r, c) for r in range(r0, r0 + h) for c in range(c0, c0 + w)}
        for r, c in slots:
            if (r, c) not in inside:
                rows[r][c] = _Slot("ecel", "")
                owner[r][c] = new_owner(r, c)
                spans[owner[r][c]] = (1, 1)

    table_rows: list[Row] = []
    row_tags: list[list[str]] = []
    for r in range(n_rows):
        cells, tags = [], []
        for c in range(n_cols):
            oid = owner[r][c]
            if anchors[oid] != (r, c):
                continue
            slot = rows[r][c]
            h, w = spans[oid]
            cells.append(Cell(text=normalize_text(slot.text), rowspan=h, colspan=w,
                              header=slot.tag in ("ched", "rhed")))
            tags.append(slot.tag)
        table_rows.append(Row(cells=cells))
        row_tags.append(tags)
    # leading rows whose cells are all column headers (rows of span tags only continue them) form the head,
    # unless that is every row
    head = 0
    while head < n_rows and all(t == "ched" for t in row_tags[head]) and (row_tags[head] or head > 0):
        head += 1
    if 0 < head < n_rows:
        for row in table_rows[:head]:
            row.section = "thead"
    return Table(rows=table_rows)


def otsl_to_html(otsl: str, strict: bool = True) -> str:
    """OTSL as a table in the normalised label form (``ocr_ft.tables.normalize``); see :func:`otsl_to_table`."""
    return table_to_html(otsl_to_table(otsl, strict=strict))


def looks_like_otsl(text: str | None) -> bool:
    """Whether ``text`` holds at least one OTSL cell tag."""
    return bool(text) and bool(re.search(r"<(fcel|ecel|ched|rhed|srow)>", text))
