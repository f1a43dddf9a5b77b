"""What the scraped sources share: size rules for a table worth keeping, and rendering a batch of tables
into pairs (a render failure becomes a ``render_failed`` reject naming the table)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

from ..dataset.records import RawPair, Reject
from ..tables import build_grid, parse_tables


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
    items = [(p.display_html, css) for p in pending]
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
