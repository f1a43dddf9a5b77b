"""LaTeX ``tabular``, the table form of GOT-OCR 2.0's formatted output, to and from the HTML table model.

GOT-OCR 2.0 asked ``OCR with format:`` answers in Mathpix Markdown, where a table is a LaTeX ``tabular``
(its own evaluation cuts tables out with ``\\begin{tabular}...\\end{tabular}``, ``GOT/eval/pyevaltools``;
rendered with mathpix-markdown-it, ``render_tools/content-mmd-to-html.html``). Spans are ``\\multicolumn``
and ``\\multirow``; a slot under a ``\\multirow`` is written as an empty cell (``\\multicolumn{w}{c}{}`` when
the cell also spans columns).

* :func:`html_to_tabular` writes a label as ``\\begin{tabular}{ccc} a & \\multicolumn{2}{c}{b} \\\\ ...``:
  one ``c`` per column, no rules, LaTeX's special characters escaped, a nested table as a nested
  ``tabular`` after its cell's text. Lost: ``<th>``/``<thead>`` (tabular has no header cells).
* :func:`tabular_to_html` reads every top-level ``tabular`` of a text into the normalised HTML form:
  rules (``\\hline``, ``\\cline``, booktabs) and column specs are ignored, rows with fewer cells than the
  widest are padded with empty cells (legal LaTeX), ``\\textbf{}``-style wrappers and escapes are removed,
  other commands and math are kept as text. ``strict=True`` (labels) raises :class:`LatexTableError` on an
  unclosed ``tabular``, text in a slot a ``\\multirow`` covers, or a ``\\multirow`` running past the last
  row; otherwise (model output) a cut-off table is read to the end, a ``\\multirow`` is cut where a later
  row writes text under it, and one running past the end is cut at the last row.
* Hostile input is bounded in both modes: a grid over ``max_slots`` raises
  :class:`~ocr_ft.tables.TableTooLarge` as it grows, tabulars nested over :data:`MAX_NESTING` deep and spans
  over :data:`ocr_ft.tables.MAX_SPAN` raise :class:`LatexTableError`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .model import MAX_GRID_SLOTS, MAX_SPAN, Cell, Row, Table, TableTooLarge, build_grid, parse_tables
from .normalize import table_to_html

BEGIN, END = "\\begin{tabular}", "\\end{tabular}"
MAX_NESTING = 16  # tabulars inside tabulars; deeper is refused (labels nest 3 deep at most)
_ESCAPES = {"\\": "\\textbackslash{}", "&": "\\&", "%": "\\%", "$": "\\$", "#": "\\#", "_": "\\_",
            "{": "\\{", "}": "\\}", "~": "\\textasciitilde{}", "^": "\\textasciicircum{}"}
_ESCAPE_RE = re.compile("|".join(re.escape(k) for k in _ESCAPES))
_RULES = re.compile(r"\\(?:hline|toprule|midrule|bottomrule|cline\{[^{}]*\}|cmidrule(?:\([^)]*\))?\{[^{}]*\}|hhline\{[^{}]*\})")
_WRAPPERS = ("textbf", "textit", "emph", "underline", "textrm", "textsf", "texttt", "text", "mbox", "makecell",
             "shortstack", "centering", "raggedright")
_UNESCAPE = [("\\textbackslash{}", "\\"), ("\\textasciitilde{}", "~"), ("\\textasciicircum{}", "^"),
             ("\\&", "&"), ("\\%", "%"), ("\\$", "$"), ("\\#", "#"), ("\\_", "_"), ("\\{", "{"), ("\\}", "}")]


class LatexTableError(ValueError):
    """Malformed ``tabular`` (strict reading), or a table that cannot be written; the message says where."""


# --------------------------------------------------------------------------- HTML -> tabular


def _escape(text: str) -> str:
    return _ESCAPE_RE.sub(lambda m: _ESCAPES[m.group(0)], text)


def table_to_tabular(table: Table) -> str:
    """A parsed table as a LaTeX ``tabular`` (see module docstring). Raises :class:`LatexTableError` when
    the table's grid is inconsistent (ragged rows, overlapping spans)."""
    grid = build_grid(table)
    if grid.problems:
        shown = "; ".join(grid.problems[:3]) + (" ..." if len(grid.problems) > 3 else "")
        raise LatexTableError(f"table grid is inconsistent, a tabular cannot express it: {shown}")
    lines = []
    for r in range(grid.n_rows):
        cells = []
        c = 0
        while c < grid.n_cols:
            r0, c0, cell = grid.cells[grid.slots[r][c]]
            if r0 != r:  # the slot under a \multirow: an empty cell as wide as the spanning cell
                cells.append(f"\\multicolumn{{{cell.colspan}}}{{c}}{{}}" if cell.colspan > 1 else "")
            else:
                body = _escape(cell.text)
                nested = [table_to_tabular(t) for t in cell.tables]
                body = " ".join([p for p in [body] if p] + nested)
                if cell.rowspan > 1:
                    body = f"\\multirow{{{cell.rowspan}}}{{*}}{{{body}}}"
                if cell.colspan > 1:
                    body = f"\\multicolumn{{{cell.colspan}}}{{c}}{{{body}}}"
                cells.append(body)
            c += cell.colspan
        lines.append(" & ".join(cells) + " \\\\")
    return f"{BEGIN}{{{'c' * grid.n_cols}}}\n" + "\n".join(lines) + f"\n{END}"


def html_to_tabular(html: str | bytes) -> str:
    """The one top-level table of ``html`` as a ``tabular``; :class:`LatexTableError` when there is no table
    or more than one, or the grid is inconsistent."""
    tables = parse_tables(html)
    if len(tables) != 1:
        raise LatexTableError(f"expected exactly one top-level table, the HTML has {len(tables)}")
    return table_to_tabular(tables[0])


# --------------------------------------------------------------------------- scanning


def _group(text: str, i: int) -> tuple[str, int] | None:
    """The balanced ``{...}`` group starting at ``text[i]`` (after spaces): (inside, index after it)."""
    while i < len(text) and text[i].isspace():
        i += 1
    if i >= len(text) or text[i] != "{":
        return None
    depth = 0
    for j in range(i, len(text)):
        ch = text[j]
        if ch == "\\":
            continue
        if ch == "{" and (j == 0 or text[j - 1] != "\\"):
            depth += 1
        elif ch == "}" and text[j - 1] != "\\":
            depth -= 1
            if depth == 0:
                return text[i + 1:j], j + 1
    return None


def _optional(text: str, i: int) -> int:
    """Index after an optional ``[...]`` argument at ``text[i]`` (after spaces), or ``i``."""
    j = i
    while j < len(text) and text[j].isspace():
        j += 1
    if j < len(text) and text[j] == "[":
        k = text.find("]", j)
        if k >= 0:
            return k + 1
    return i


def _find_tabulars(text: str, strict: bool) -> list[tuple[str, bool]]:
    """(body, closed) of every top-level tabular in ``text``."""
    out = []
    pos = 0
    while True:
        start = text.find(BEGIN, pos)
        if start < 0:
            return out
        i = _optional(text, start + len(BEGIN))
        spec = _group(text, i)
        body_start = spec[1] if spec else i
        depth = 1
        token = re.compile(r"\\begin\{tabular\}|\\end\{tabular\}")
        end = None
        for m in token.finditer(text, body_start):
            depth += 1 if m.group(0) == BEGIN else -1
            if depth == 0:
                end = m
                break
        if end is None:
            if strict:
                raise LatexTableError(f"\\begin{{tabular}} at character {start} is never closed")
            out.append((text[body_start:], False))
            return out
        out.append((text[body_start:end.start()], True))
        pos = end.end()


def _split(text: str, sep: str) -> list[str]:
    """``text`` split at ``sep`` (``\\\\`` or ``&``) outside braces and nested environments; ``\\&`` is text."""
    parts, depth, env, start, i = [], 0, 0, 0, 0
    while i < len(text):
        if text.startswith("\\begin{", i):
            env += 1
        elif text.startswith("\\end{", i):
            env -= 1
        ch = text[i]
        if ch == "\\":
            if sep == "\\\\" and text.startswith("\\\\", i) and depth == 0 and env == 0:
                parts.append(text[start:i])
                i = _optional(text, i + 2)
                start = i
                continue
            i += 2  # an escaped character or a command's backslash
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "&" and sep == "&" and depth == 0 and env == 0:
            parts.append(text[start:i])
            start = i + 1
        i += 1
    parts.append(text[start:])
    return parts


# --------------------------------------------------------------------------- tabular -> HTML


@dataclass
class _Latex:
    text: str
    rowspan: int = 1
    colspan: int = 1
    tables: list[Table] = field(default_factory=list)


def _span_value(raw: str, what: str) -> int:
    m = re.fullmatch(r"\s*(\d{1,6})\s*", raw)
    if not m or not 1 <= int(m.group(1)) <= MAX_SPAN:
        raise LatexTableError(f"\\{what}{{{raw[:20]}}}: the span must be a number from 1 to {MAX_SPAN}")
    return int(m.group(1))


def _cell(raw: str, strict: bool, depth: int = 1) -> _Latex:
    s = raw.strip()
    rowspan = colspan = 1
    for _ in range(2):  # \multicolumn{w}{spec}{\multirow{h}{*}{x}} or the other way round
        if s.startswith("\\multicolumn"):
            w = _group(s, len("\\multicolumn"))
            spec = w and _group(s, w[1])
            body = spec and _group(s, spec[1])
            if not body:
                raise LatexTableError(f"\\multicolumn without its three arguments: {s[:40]!r}")
            colspan, s = _span_value(w[0], "multicolumn"), (body[0] + s[body[1]:]).strip()
        elif s.startswith("\\multirow"):
            h = _group(s, len("\\multirow"))
            if not h:
                raise LatexTableError(f"\\multirow without its arguments: {s[:40]!r}")
            i = _optional(s, h[1])
            j = i
            while j < len(s) and s[j].isspace():
                j += 1
            if j < len(s) and s[j] == "*":  # \multirow{2}*{x}
                i = j + 1
            else:
                width = _group(s, i)
                if not width:
                    raise LatexTableError(f"\\multirow without its width argument: {s[:40]!r}")
                i = _optional(s, width[1])
            body = _group(s, i)
            if not body:
                raise LatexTableError(f"\\multirow without its text argument: {s[:40]!r}")
            rowspan, s = _span_value(h[0], "multirow"), (body[0] + s[body[1]:]).strip()
    tables: list[Table] = []
    while BEGIN in s:  # nested tabulars become child tables; the rest is the cell's own text
        at = s.find(BEGIN)
        cut = _matching_end(s[at:])
        if cut is None and strict:
            raise LatexTableError(f"a nested \\begin{{tabular}} is never closed: {s[at:at + 40]!r}")
        segment = s[at:at + cut] if cut else s[at:]
        if depth >= MAX_NESTING:
            raise LatexTableError(f"tabulars nested over {MAX_NESTING} deep")
        tables.extend(_table_from_body(body, strict, depth=depth + 1) for body, _ in _find_tabulars(segment, strict))
        s = s[:at] + " " + s[at + len(segment):]
    return _Latex(_plain(s), rowspan, colspan, tables)


def _matching_end(text: str) -> int | None:
    depth = 0
    for m in re.finditer(r"\\begin\{tabular\}|\\end\{tabular\}", text):
        depth += 1 if m.group(0) == BEGIN else -1
        if depth == 0:
            return m.end()
    return None


def _plain(text: str) -> str:
    for _ in range(3):
        text = re.sub(r"\\(?:%s)\s*(?:\[[^\]]*\])?\{([^{}]*)\}" % "|".join(_WRAPPERS), r"\1", text)
    text = re.sub(r"(?<!\\)~", " ", text)  # a bare ~ is a non-breaking space; \textasciitilde{} is the character
    for k, v in _UNESCAPE:
        text = text.replace(k, v)
    return re.sub(r"\s+", " ", text).strip()


def _table_from_body(body: str, strict: bool, max_slots: int = MAX_GRID_SLOTS, depth: int = 1) -> Table:
    rows_raw = _split(_RULES.sub(" ", body), "\\\\")
    if rows_raw and not rows_raw[-1].strip():
        rows_raw.pop()  # the row break after the last row
    parsed = [[_cell(c, strict, depth) for c in _split(r, "&")] for r in rows_raw]
    rows: list[list[_Latex]] = []
    active: dict[int, list] = {}  # start column -> [anchor cell, width, end row (exclusive), anchor row]
    width = 0
    for r, cells in enumerate(parsed):
        for start in [k for k, v in active.items() if v[2] <= r]:
            del active[start]
        out: list[_Latex] = []
        c = 0
        for cell in cells:
            if c in active:  # the slot under a \multirow: a placeholder as wide as the spanning cell
                anchor, w, _, r0 = active[c]
                if not (cell.text or cell.tables):
                    c += w
                    continue
                if strict:
                    raise LatexTableError(f"row {r + 1}: text {cell.text[:30]!r} in a slot that the "
                                          f"\\multirow of row {r0 + 1} covers")
                anchor.rowspan = r - r0  # lenient: the multirow ends where text is written under it
                del active[c]
            out.append(cell)
            if cell.rowspan > 1:
                active[c] = [cell, cell.colspan, r + cell.rowspan, r]
            c += cell.colspan
        while c in active and active[c][3] < r:  # covered trailing slots with no placeholder written
            c += active[c][1]
        width = max(width, c)
        rows.append(out)
        if len(rows) * max(width, 1) > max_slots:
            raise TableTooLarge(len(rows) * width, max_slots)
    for anchor, _, end, r0 in active.values():
        if end > len(rows):
            if strict:
                raise LatexTableError(f"row {r0 + 1}: \\multirow{{{anchor.rowspan}}} runs past the last row "
                                      f"({len(rows)})")
            anchor.rowspan = len(rows) - r0
    table = Table(rows=[Row(cells=[Cell(text=x.text, rowspan=x.rowspan, colspan=x.colspan, tables=x.tables)
                                   for x in row]) for row in rows])
    grid = build_grid(table)
    for r, row in enumerate(table.rows):  # pad short rows (trailing cells left out): empty cells
        holes = sum(1 for s in grid.slots[r] if s is None) if grid.n_cols else 0
        row.cells.extend(Cell(text="") for _ in range(holes))
    return table


def tabular_to_tables(text: str, strict: bool = False, max_slots: int = MAX_GRID_SLOTS) -> list[Table]:
    """Every top-level ``tabular`` of ``text`` as a :class:`~ocr_ft.tables.Table` (see module docstring);
    :class:`~ocr_ft.tables.TableTooLarge` as soon as one grows over ``max_slots`` slots."""
    if not isinstance(text, str):
        raise LatexTableError(f"expected text, got {type(text).__name__}")
    return [_table_from_body(body, strict, max_slots) for body, _ in _find_tabulars(text, strict)]


def tabular_to_html(text: str, strict: bool = False) -> str:
    """Every top-level ``tabular`` of ``text`` in the normalised HTML form, concatenated; ``""`` without one."""
    return "".join(table_to_html(t) for t in tabular_to_tables(text, strict=strict))


def looks_like_tabular(text: str | None) -> bool:
    return bool(text) and BEGIN in text
