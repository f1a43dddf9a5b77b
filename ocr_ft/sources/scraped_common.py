"""What the scraped sources share: size rules for a table worth keeping, and rendering a batch of tables
into pairs (a render failure becomes a ``render_failed`` reject naming the table)."""

from __future__ import annotations

import copy
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import lxml.html

from ..dataset.records import RawPair, Reject
from ..dataset.validate import estimate_label_tokens
from ..tables import build_grid, normalize_html, parse_span, parse_tables


def size_refusal(
    n_rows: int, n_cols: int, text_length: int, *, min_rows: int = 2, min_cols: int = 2, max_rows: int | None = None
) -> tuple[str, str] | None:
    """``(reason, detail)`` when a table of this size is not worth keeping, else None. Shared by the API
    sources: fewer than ``min_rows`` x ``min_cols`` grid slots -> ``table_too_small``; no text at all ->
    ``table_empty``; more than ``max_rows`` rows -> ``table_too_large``."""
    if n_rows < min_rows or n_cols < min_cols:
        return "table_too_small", f"{n_rows}x{n_cols} grid, need at least {min_rows}x{min_cols}"
    if text_length == 0:
        return "table_empty", "no text in any cell"
    if max_rows is not None and n_rows > max_rows:
        return "table_too_large", f"{n_rows} rows, more than {max_rows}"
    return None


def measure_label(label: str) -> tuple[int, int, int]:
    """``(grid rows, grid columns, characters of cell text)`` of the first table of a label (nested tables'
    text included); zeros when there is no table. Raises :class:`ocr_ft.tables.TableParseError` on non-HTML."""
    tables = parse_tables(label)
    if not tables:
        return 0, 0, 0
    grid = build_grid(tables[0])
    text = sum(len(c.text) for t in tables[0].iter_tables() for c in t.cells())
    return grid.n_rows, grid.n_cols, text



@dataclass
class PendingTable:
    """A table ready to be rendered: the HTML drawn (``display_html``) and the label (normalised form)."""

    original_filename: str
    display_html: str
    label_html: str
    metadata: dict[str, Any] = field(default_factory=dict)
    css: str | None = None  # the look the source wants (e.g. a wikitable's); None: the batch's css


def _render_error_text(err: Any) -> str:
    for attr in ("message", "error", "reason", "detail"):
        val = getattr(err, attr, None)
        if val:
            return str(val)
    return str(err) or type(err).__name__


def reject_reasons(rejects: Iterable[Reject]) -> dict[str, int]:
    """``{reason: count}``, sorted by reason: the rejects of a partition at a glance."""
    return dict(sorted(Counter(r.reason for r in rejects).items()))


def render_pending(
    source: str,
    pending: Sequence[PendingTable],
    renderer: Any,
    *,
    css: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[RawPair], list[Reject]]:
    """Render every pending table with ``renderer.render_many`` and pair each image with its label.

    ``renderer`` is duck-typed (:class:`ocr_ft.render.Renderer` or anything with its ``render_many``); it gets
    ``(display_html, css)`` items. A render failure becomes a ``render_failed`` reject naming the table (the
    renderer's reason code in ``extra["render_reason"]``); the others become :class:`RawPair` with the
    image's hash and size added to the metadata.
    """
    if not pending:
        return [], []
    items = [(p.display_html, p.css if p.css is not None else css) for p in pending]
    results = renderer.render_many(items, progress=progress)
    if len(results) != len(pending):
        raise RuntimeError(f"renderer returned {len(results)} results for {len(pending)} tables")
    pairs: list[RawPair] = []
    rejects: list[Reject] = []
    for p, res in zip(pending, results):
        if getattr(res, "image_path", None) and getattr(res, "sha256", None):
            meta = {**p.metadata, "image": {"sha256": res.sha256, "width": res.width, "height": res.height}}
            pairs.append(RawPair(source, p.original_filename, res.image_path, p.label_html, meta))
        else:
            extra = {k: v for k, v in p.metadata.items() if isinstance(v, (str, int, float, bool))}
            extra["render_reason"] = str(getattr(res, "reason", "") or type(res).__name__)
            rejects.append(Reject(source, p.original_filename, "load", "render_failed", _render_error_text(res),
                                  extra=extra))
    return pairs, rejects


# --------------------------------------------------------------------------------------------------
# Tables over the token budget: row windows with the header repeated
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenBudget:
    """The sequence budget a pair must fit (the seed recipe's training values, as in validation).

    The image is resized under ``max_pixels`` before the model sees it, so it costs at most
    ``max_pixels / patch_factor**2`` tokens whatever its size: a label within :attr:`label_tokens` always fits."""

    max_seq_len: int = 4096
    prompt_tokens: int = 16
    max_pixels: int = 1_605_632
    patch_factor: int = 28

    @property
    def label_tokens(self) -> int:
        return self.max_seq_len - self.prompt_tokens - self.max_pixels // (self.patch_factor ** 2)


def _own_rows(table) -> list:
    return [tr for tr in table.iter("tr") if next(tr.iterancestors("table"), None) is table]


def _cell_layout(rows) -> list[list[tuple[Any, int, int, int]]]:
    """For each row, ``(cell element, column, rowspan, colspan)`` of its own cells (spans read safely)."""
    occupied: dict[int, set[int]] = {}
    out = []
    for r, tr in enumerate(rows):
        col = 0
        cells = []
        for cell in tr:
            if not isinstance(cell.tag, str) or cell.tag not in ("td", "th"):
                continue
            while col in occupied.get(r, ()):
                col += 1
            rs = parse_span(cell.get("rowspan"), "rowspan")[0]
            cs = parse_span(cell.get("colspan"), "colspan")[0]
            rs = min(rs, len(rows) - r)
            for dr in range(rs):
                occupied.setdefault(r + dr, set()).update(range(col, col + cs))
            cells.append((cell, col, rs, cs))
            col += cs
        out.append(cells)
    return out


def _window_html(html: str, header: int, start: int, end: int) -> str:
    """The table of ``html`` with only its first ``header`` rows and rows ``start..end-1`` (all indices over its
    own rows); a rowspan running out of the window is cut at its end, one running in from above is carried
    into the window's first row (its text repeated)."""
    root = lxml.html.fromstring(html)
    table = root if root.tag == "table" else next(root.iter("table"))
    rows = _own_rows(table)
    layout = _cell_layout(rows)
    keep = set(range(header)) | set(range(start, end))
    for r, cells in enumerate(layout):
        for cell, col, rs, cs in cells:
            if r in keep:
                stop = header if r < header else end
                new = min(rs, stop - r)
                if new > 1:
                    cell.set("rowspan", str(new))
                elif "rowspan" in cell.attrib:
                    del cell.attrib["rowspan"]
            elif r >= header and r < start < r + rs:  # carried into the window's first row
                carried = copy.deepcopy(cell)
                carried.tail = None
                new = min(r + rs, end) - start
                if new > 1:
                    carried.set("rowspan", str(new))
                elif "rowspan" in carried.attrib:
                    del carried.attrib["rowspan"]
                first = rows[start]
                after = [c for c, ccol, _, _ in layout[start] if ccol > col]
                if after:
                    after[0].addprevious(carried)
                else:
                    first.append(carried)
                layout[start] = sorted(layout[start] + [(carried, col, new, cs)], key=lambda x: x[1])
    for r, tr in enumerate(rows):
        if r not in keep:
            tr.getparent().remove(tr)
    for section in table.xpath("./thead|./tbody|./tfoot"):
        if not len(section):
            table.remove(section)
    return lxml.html.tostring(table, encoding="unicode")


def _header_rows(table, rows, layout) -> int:
    """Header rows repeated in every window: the ``thead`` rows, else the leading rows made only of ``th``;
    0 when a rowspan would run from them into the body."""
    n = sum(1 for tr in rows if tr.getparent() is not None and tr.getparent().tag == "thead")
    if not n:
        while n < len(rows) - 1 and layout[n] and all(c.tag == "th" for c, *_ in layout[n]):
            n += 1
    if any(r + rs > n for r in range(n) for _, _, rs, _ in layout[r]):
        return 0
    return n


def split_pending(
    source: str,
    table: PendingTable,
    *,
    budget: TokenBudget = TokenBudget(),
    max_rows: int | None = 200,
) -> tuple[list[PendingTable], list[Reject]]:
    """``table`` as it is when it fits ``budget`` (label tokens) and ``max_rows``, else split into row windows,
    each with the header rows repeated, rendered and labelled on its own: ``name_p01.png``, ``name_p02.png``...

    Windows end where the fewest rowspans cross (group boundaries: in a hierarchical table the top-level
    groups first), as late as the budget allows; a group cell cut by a window boundary is repeated in the
    next window. The display HTML is cut along the same rows when its rows line up with the label's, else
    the window's label is drawn. What cannot be split (the header alone or one row over the budget) is
    returned as a ``table_too_large`` reject naming the table and the reason, never dropped silently.
    """
    label_budget = budget.label_tokens
    tokens = estimate_label_tokens(table.label_html)
    label_root = lxml.html.fromstring(table.label_html)
    top = label_root if label_root.tag == "table" else next(label_root.iter("table"), None)
    if top is None:
        return [table], []
    rows = _own_rows(top)
    if tokens <= label_budget and (max_rows is None or len(rows) <= max_rows):
        return [table], []
    layout = _cell_layout(rows)
    header = _header_rows(top, rows, layout)
    row_cost = [estimate_label_tokens(lxml.html.tostring(tr, encoding="unicode")) for tr in rows]
    base = estimate_label_tokens("<table><thead></thead><tbody></tbody></table>") + sum(row_cost[:header])
    stem, dot, ext = table.original_filename.rpartition(".")
    stem, ext = (stem, dot + ext) if dot else (table.original_filename, "")

    def refuse(why: str) -> tuple[list[PendingTable], list[Reject]]:
        extra = {k: v for k, v in table.metadata.items() if isinstance(v, (str, int, float, bool))}
        return [], [Reject(source, table.original_filename, "load", "table_too_large",
                           f"{table.original_filename}: about {tokens} label tokens, {len(rows)} rows; cannot be split "
                           f"into windows of {label_budget} tokens / {max_rows} rows: {why}", extra=extra)]

    row_limit = (max_rows - header) if max_rows is not None else len(rows)
    if base > label_budget or row_limit < 1:
        return refuse(f"the {header} header rows alone are about {base} tokens")
    crossing = [0] * (len(rows) + 1)  # rowspans crossing the boundary before row k
    for r, cells in enumerate(layout):
        for _, _, rs, _ in cells:
            for k in range(r + 1, r + rs):
                crossing[k] += 1
    windows: list[tuple[int, int]] = []
    s = header
    while s < len(rows):
        cost, i = base, s
        while i < len(rows) and cost + row_cost[i] <= label_budget and i - s < row_limit:
            cost += row_cost[i]
            i += 1
        if i == s:
            return refuse(f"row {s + 1} alone is about {row_cost[s]} tokens")
        if i < len(rows):
            i = min(range(s + 1, i + 1), key=lambda k: (crossing[k], -k))
        windows.append((s, i))
        s = i

    display_lines_up = table.display_html == table.label_html
    if not display_lines_up:
        try:
            d_root = lxml.html.fromstring(table.display_html)
            d_top = d_root if d_root.tag == "table" else next(d_root.iter("table"))
            d_layout = _cell_layout(_own_rows(d_top))
            display_lines_up = [[(c, rs, cs) for _, c, rs, cs in row] for row in d_layout] == \
                               [[(c, rs, cs) for _, c, rs, cs in row] for row in layout]
        except Exception:
            display_lines_up = False
    out: list[PendingTable] = []
    for k, (s, e) in enumerate(windows, 1):
        label = normalize_html(_window_html(table.label_html, header, s, e))
        display = _window_html(table.display_html, header, s, e) if display_lines_up and \
            table.display_html != table.label_html else label
        meta = {**table.metadata, "rows": header + e - s,
                "window": {"index": k, "count": len(windows), "header_rows": header, "rows": [s, e],
                           "of": table.original_filename, "display": "cut" if display_lines_up else "label"}}
        out.append(PendingTable(f"{stem}_p{k:02d}{ext}", display, label, meta, table.css))
    return out, []
