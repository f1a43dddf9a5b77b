"""The one normalised label form used by dedup, training and metrics.

``<table>`` with ``<thead>``/``<tbody>`` (only when the source had a header section), ``<tr>``, ``<th>``,
``<td>``; ``rowspan``/``colspan`` the only attributes (omitted when 1); cell text NFC-normalised (never NFKC:
㈜, ①, ㎡, full-width forms stay as the document has them) with whitespace collapsed; nested tables kept inside their cells in the same form; everything else (styles,
classes, ``<br>``, ``<span>``, captions, comments, scripts) dropped.
"""

from __future__ import annotations

from html import escape

from .model import Cell, Table, parse_tables


def _cell_html(cell: Cell) -> str:
    tag = "th" if cell.header else "td"
    attrs = ""
    if cell.rowspan > 1:
        attrs += f' rowspan="{cell.rowspan}"'
    if cell.colspan > 1:
        attrs += f' colspan="{cell.colspan}"'
    inner = escape(cell.text, quote=False)
    if cell.tables:
        inner += "".join(table_to_html(t) for t in cell.tables)
    return f"<{tag}{attrs}>{inner}</{tag}>"


def _rows_html(rows) -> str:
    return "".join("<tr>" + "".join(_cell_html(c) for c in row.cells) + "</tr>" for row in rows)


def table_to_html(table: Table) -> str:
    """Serialise a parsed table in the normalised form."""
    head = [r for r in table.rows if r.section == "thead"]
    body = [r for r in table.rows if r.section != "thead"]
    if head:
        return f"<table><thead>{_rows_html(head)}</thead><tbody>{_rows_html(body)}</tbody></table>"
    return f"<table>{_rows_html(body)}</table>"


def normalize_html(html: str | bytes) -> str:
    """Normalised label form of every top-level table in ``html``, concatenated.

    Raises :class:`ocr_ft.tables.TableParseError` if the input is not HTML; returns ``""`` when it holds
    no table.
    """
    return "".join(table_to_html(t) for t in parse_tables(html))


def normalize_tables(tables: list[Table]) -> str:
    return "".join(table_to_html(t) for t in tables)
