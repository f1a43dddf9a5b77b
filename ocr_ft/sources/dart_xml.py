"""Tables out of DART filing documents (dart3.xsd XML) as clean HTML labels.

A filing's documents are XML in the ``dart3.xsd`` vocabulary: ``DOCUMENT`` > ``BODY`` > ``SECTION-1/2/3``
with ``TITLE``, ``P``, ``TABLE-GROUP`` > ``TABLE`` > ``COLGROUP``/``THEAD``/``TBODY`` > ``TR`` > ``TH``/``TD``/
``TE``/``TU`` (``TE`` and ``TU`` are data cells carrying extraction and unit marks), with ``COLSPAN``/``ROWSPAN``
in upper case. Real documents are messy:

* the XML declaration may say ``utf-8`` while the bytes are cp949 (EUC-KR): :func:`decode_xml` tries a strict
  UTF-8 decode and falls back to cp949; a declared ``euc-kr``/``cp949``/``ks_c_5601`` is honoured first;
* HTML entities (``&nbsp;``) and DART's own ``&cr;`` appear although XML does not define them, and bare
  ``&`` too: they are turned into characters before parsing;
* markup is sometimes broken: lxml parses with ``recover=True``.

Every top-level ``TABLE`` (one not inside another) becomes one :class:`ExtractedTable`: HTML in the
normalised label form (``TH`` -> ``th``; ``TD``, ``TE``, ``TU`` -> ``td``; spans kept; a table inside a
cell stays nested in that cell), its grid size, and its provenance (nearest preceding section ``TITLE``
and nearest preceding ``TITLE`` of any kind, index in the document). A table is kept when its grid has at
least ``min_rows`` rows and ``min_cols`` columns and some text; the others carry the reason they were not.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass, field
from html import escape
from html.entities import name2codepoint

import lxml.etree as etree

from ..tables import normalize_html, normalize_text
from .scraped_common import measure_label, size_refusal

KOREAN_ENCODINGS = {
    "euc-kr", "euc_kr", "euckr", "cp949", "ms949", "uhc", "windows-949", "x-windows-949", "ks_c_5601-1987",
    "ks_c_5601", "ksc5601", "ksc_5601", "korean",
}
_DECL = re.compile(rb"^\s*<\?xml[^>]*?encoding\s*=\s*[\"']([A-Za-z0-9_.:-]+)[\"']", re.IGNORECASE)
_DECL_TEXT = re.compile(r"^\s*<\?xml[^>]*\?>", re.IGNORECASE)
_ENTITY = re.compile(r"&([A-Za-z][A-Za-z0-9]*);")
_BARE_AMP = re.compile(r"&(?!#\d+;|#[xX][0-9A-Fa-f]+;|[A-Za-z][A-Za-z0-9]*;)")
_XML_ENTITIES = {"amp", "lt", "gt", "quot", "apos"}

_CELL_TAGS = {"TH", "TD", "TE", "TU"}
# Element names of the dart3/dart4 vocabulary (and the HTML a viewer may leave). A ``<...>`` whose name is
# not one of them and that carries no quoted attribute is text (``<CP>``, ``<MS AR 사업>``) and is escaped.
_KNOWN_TAGS = {
    "DOCUMENT", "DOCUMENT-NAME", "FORMULA-VERSION", "COMPANY-NAME", "SUMMARY", "EXTRACTION", "BODY", "COVER",
    "COVER-TITLE", "SECTION-1", "SECTION-2", "SECTION-3", "TITLE", "P", "SPAN", "TABLE", "TABLE-GROUP",
    "COLGROUP", "COL", "THEAD", "TBODY", "TFOOT", "TR", "TH", "TD", "TE", "TU", "IMAGE", "IMG", "LIBRARY",
    "PGBRK", "BR", "A", "PART", "INSERTION", "CORRECTION", "DIV", "LI", "UL", "OL", "B", "I", "U", "FONT",
    "HTML", "HEAD", "META", "STRONG", "EM", "SUB", "SUP", "CENTER", "PRE", "XFORMULA", "AREGCIK",
}
_ANGLE = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9_.-]*)([^<>]*)>")
_QUOTED_ATTRS = re.compile(r'^(\s+[A-Za-z_:][\w:.-]*\s*=\s*("[^"]*"|'"'"r"[^']*'))*\s*/?\s*$")
MAX_TABLE_DEPTH = 64  # tables nested deeper than this are refused (no recursion past it)
MAX_SPAN = 1000  # a ROWSPAN/COLSPAN above this is refused
_BREAK_TAGS = {"P", "BR", "PGBRK", "TITLE", "DIV", "LI"}
_SKIP_TAGS = {"COLGROUP", "COL", "IMAGE", "IMG", "LIBRARY"}


class DartXmlError(ValueError):
    """A document that cannot be read at all (no element could be recovered)."""


class DartTableRefused(ValueError):
    """One table that cannot become a label (spans too large, nesting too deep): a reject of that table."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


MAX_STRAY_BYTES = 16  # invalid bytes tolerated in a UTF-8 document (more of them: the document is not UTF-8)


def count_invalid_utf8(data: bytes) -> int:
    """How many bytes of ``data`` are not part of a valid UTF-8 sequence."""
    bad = 0
    pos = 0
    while True:
        try:
            data[pos:].decode("utf-8")
            return bad
        except UnicodeDecodeError as exc:
            bad += exc.end - exc.start
            pos += exc.end


def invalid_byte_count(encoding: str) -> int:
    """The invalid-byte count recorded in an encoding label ``utf-8-replace:N`` (0 otherwise)."""
    return int(encoding.rsplit(":", 1)[1]) if encoding.startswith("utf-8-replace:") else 0


def decode_xml(data: bytes) -> tuple[str, str]:
    """Decode a DART XML document; return ``(text, encoding used)``.

    Order: a BOM; a declared Korean encoding (decoded as cp949, a superset of EUC-KR); strict UTF-8; UTF-8
    with a few invalid bytes (at most :data:`MAX_STRAY_BYTES`, or 1 in 100,000: reported as
    ``"utf-8-replace:N"`` with their count N); strict cp949; cp949 with replacement characters as the last
    resort (``"cp949-replace"``).
    """
    if data.startswith(codecs.BOM_UTF8):
        return data[len(codecs.BOM_UTF8):].decode("utf-8", errors="replace"), "utf-8-sig"
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16", errors="replace"), "utf-16"
    m = _DECL.match(data[:512])
    declared = m.group(1).decode("ascii").lower() if m else None
    if declared in KOREAN_ENCODINGS:
        try:
            return data.decode("cp949"), "cp949"
        except UnicodeDecodeError:
            pass  # the declaration lies the other way round: try UTF-8 below
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    bad = count_invalid_utf8(data)
    if bad <= max(MAX_STRAY_BYTES, len(data) // 100_000) and not (declared in KOREAN_ENCODINGS):
        # a few stray bytes in otherwise valid UTF-8 (decided by the bytes): stays UTF-8, the count recorded
        return data.decode("utf-8", errors="replace"), f"utf-8-replace:{bad}"
    try:
        return data.decode("cp949"), "cp949"
    except UnicodeDecodeError:
        return data.decode("cp949", errors="replace"), "cp949-replace"


def _escape_text_brackets(text: str) -> str:
    """Escape ``<`` of angle-bracket text that is not markup (``<CP>``, ``<MS AR 사업>``), so it stays text."""
    def one(m: re.Match) -> str:
        name, rest = m.group(2), m.group(3)
        if name.upper() in _KNOWN_TAGS or (rest.strip() and _QUOTED_ATTRS.match(rest)):
            return m.group(0)
        return "&lt;" + m.group(0)[1:-1] + "&gt;"

    return _ANGLE.sub(one, text)


def _fix_entities(text: str) -> str:
    def named(m: re.Match) -> str:
        name = m.group(1)
        if name in _XML_ENTITIES:
            return m.group(0)
        if name.lower() == "cr":
            return "&#10;"
        cp = name2codepoint.get(name)
        return f"&#{cp};" if cp is not None else ""

    return _BARE_AMP.sub("&amp;", _ENTITY.sub(named, text))


def _count_cells(root) -> int:
    """Cells where the table reader finds them: in a TR that sits in a TABLE or one of its sections."""
    n = 0
    for el in root.iter():
        if not isinstance(el.tag, str) or el.tag.upper() not in _CELL_TAGS:
            continue
        tr = el.getparent()
        holder = tr.getparent() if tr is not None else None
        if tr is not None and tr.tag.upper() == "TR" and holder is not None and isinstance(holder.tag, str) and \
                holder.tag.upper() in ("TABLE", "THEAD", "TBODY", "TFOOT"):
            n += 1
    return n


def parse_xml(data: bytes) -> tuple[etree._Element, str, str]:
    """Parse DART XML bytes leniently; return ``(root element, encoding used, parser used)``.

    The XML parser runs first (``recover=True``). When the document is not well-formed, libxml2's XML
    recovery can lose whole rows (an unclosed ``TD``, a bare ``<`` in text); the HTML parser, which knows
    that cells close each other, is tried as well and its tree is used when it holds more table cells.
    The parser used is reported as ``"xml"``, ``"xml-recover"`` or ``"html"``. Raises :class:`DartXmlError`.
    """
    if not data or not data.strip():
        raise DartXmlError("document is empty")
    text, encoding = decode_xml(data)
    payload = _fix_entities(_escape_text_brackets(_DECL_TEXT.sub("", text, count=1))).encode("utf-8")
    parser = etree.XMLParser(
        recover=True, huge_tree=True, resolve_entities=False, no_network=True, remove_comments=True, remove_pis=True
    )
    try:
        root = etree.fromstring(payload, parser)
    except etree.XMLSyntaxError:  # recover=True rarely gives up, but it can
        root = None
    if root is not None and not parser.error_log:
        return root, encoding, "xml"
    html_root = etree.fromstring(
        payload,
        etree.HTMLParser(recover=True, huge_tree=True, no_network=True, remove_comments=True, remove_pis=True,
                         encoding="utf-8"),
    )
    html_cells = _count_cells(html_root) if html_root is not None else 0
    if root is None:
        if not html_cells:
            raise DartXmlError(f"not readable as XML: {parser.error_log.last_error or 'no element found'}")
        return html_root, encoding, "html"
    if html_cells > _count_cells(root):
        return html_root, encoding, "html"
    return root, encoding, "xml-recover"


def _name(el) -> str:
    """Upper-case local tag name; ``""`` for comments and processing instructions."""
    if not isinstance(el.tag, str):
        return ""
    return etree.QName(el).localname.upper()


def _text(el) -> str:
    # "".join: a word-wrap SPAN split inside a title must not add a space
    return normalize_text("".join(el.itertext()))


def _attr(el, name: str, default: str = "") -> str:
    """An attribute by its dart3.xsd (upper-case) name; the HTML parser lower-cases attribute names."""
    val = el.get(name.upper())
    if val is None:
        val = el.get(name.lower())
    return default if val is None else val


def _span_attr(el, name: str) -> int:
    raw = _attr(el, name) or None
    if raw is None:
        return 1
    m = re.match(r"\s*0*(\d{1,7})(?!\d)", raw)
    if m is None:
        if re.match(r"\s*\d", raw):
            raise DartTableRefused("span_too_large", f"{name}={raw[:20]}... is over {MAX_SPAN}")
        return 1
    value = int(m.group(1))
    if value > MAX_SPAN:
        raise DartTableRefused("span_too_large", f"{name}={value} is over {MAX_SPAN}")
    return max(value, 1)


def _inner_html(el, depth: int = 0) -> str:
    """The content of a cell as HTML: text escaped, paragraph breaks as ``<br>``, nested tables converted."""
    if depth > MAX_TABLE_DEPTH:
        raise DartTableRefused("table_too_deep", f"elements nested deeper than {MAX_TABLE_DEPTH} levels")
    out: list[str] = [escape(el.text or "", quote=False)]
    for child in el:
        tag = _name(child)
        if tag == "TABLE":
            out.append(table_to_html(child, depth + 1))
        elif tag and tag not in _SKIP_TAGS:
            inner = _inner_html(child, depth + 1)
            if tag in _BREAK_TAGS and "".join(out).strip():
                out.append("<br>")
            out.append(inner)
        out.append(escape(child.tail or "", quote=False))
    return "".join(out)


def is_shaded(cell) -> bool:
    """A cell with header shading: a ``USERMARK`` holding a background mark (``BC0XDCDCDC``)."""
    return bool(re.search(r"(?:^|\s)BC", _attr(cell, "USERMARK").upper()))


def _cell_tag(cell, shaded_row: bool) -> tuple[str, str]:
    """The label's tag for a DART cell (``th`` for TH and for every cell of a shaded header row) and its span
    attributes, shared by the label and the styled display so both have exactly the same cells."""
    out_tag = "th" if _name(cell) == "TH" or shaded_row else "td"
    attrs = ""
    rs, cs = _span_attr(cell, "ROWSPAN"), _span_attr(cell, "COLSPAN")
    if rs > 1:
        attrs += f' rowspan="{rs}"'
    if cs > 1:
        attrs += f' colspan="{cs}"'
    return out_tag, attrs


def _row_html(tr, depth: int = 0) -> str:
    cells = []
    row_cells = [c for c in tr if _name(c) in _CELL_TAGS]
    shaded_row = bool(row_cells) and all(_name(c) == "TH" or is_shaded(c) for c in row_cells)
    for cell in tr:
        tag = _name(cell)
        if tag not in _CELL_TAGS:
            continue
        out_tag, attrs = _cell_tag(cell, shaded_row)
        cells.append(f"<{out_tag}{attrs}>{_inner_html(cell, depth)}</{out_tag}>")
    return "<tr>" + "".join(cells) + "</tr>"


def table_to_html(table_el, depth: int = 0) -> str:
    """A DART ``TABLE`` element as (not yet normalised) HTML. THEAD rows stay a header section; a row whose
    cells are all shaded (``USERMARK="BC…"``) is a header row: its cells become ``th``.

    Raises :class:`DartTableRefused` for nesting deeper than :data:`MAX_TABLE_DEPTH` or a span over
    :data:`MAX_SPAN`."""
    if depth > MAX_TABLE_DEPTH:
        raise DartTableRefused("table_too_deep", f"elements nested deeper than {MAX_TABLE_DEPTH} levels")
    head: list[str] = []
    body: list[str] = []
    for child in table_el:
        tag = _name(child)
        if tag == "THEAD":
            head += [_row_html(tr, depth) for tr in child if _name(tr) == "TR"]
        elif tag in ("TBODY", "TFOOT"):
            body += [_row_html(tr, depth) for tr in child if _name(tr) == "TR"]
        elif tag == "TR":
            body.append(_row_html(child, depth))
    if head:
        return f"<table><thead>{''.join(head)}</thead><tbody>{''.join(body)}</tbody></table>"
    return f"<table>{''.join(body)}</table>"


@dataclass
class ExtractedTable:
    index: int  # 1-based position among the document's top-level tables
    html: str  # normalised label form ("" when the table could not be normalised)
    n_rows: int
    n_cols: int
    text_length: int
    section_title: str  # nearest preceding TITLE directly under a SECTION-n
    title: str  # nearest preceding TITLE of any kind (a TABLE-GROUP's own title included)
    kept: bool
    reason: str = ""  # why not kept: layout_table, table_too_small, table_empty, table_too_large, table_unreadable,
    #                   span_too_large, table_too_deep
    detail: str = ""
    element: object = field(default=None, repr=False, compare=False)  # the source TABLE element (for styling)

    def provenance(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k not in ("html", "element")}
        return d


@dataclass
class DartDocument:
    document_name: str  # DOCUMENT-NAME text, e.g. 사업보고서
    document_code: str  # DOCUMENT-NAME's ACODE, e.g. 11011
    company_name: str  # COMPANY-NAME text
    corp_code: str  # COMPANY-NAME's AREGCIK (the DART corp code)
    encoding: str
    parser: str = "xml"  # "xml", "xml-recover" (not well-formed) or "html" (recovered with the HTML parser)
    tables: list[ExtractedTable] = field(default_factory=list)

    @property
    def kept(self) -> list[ExtractedTable]:
        return [t for t in self.tables if t.kept]


def extract_tables(
    data: bytes, *, min_rows: int = 2, min_cols: int = 2, max_rows: int | None = None
) -> DartDocument:
    """Every top-level table of a DART XML document, kept or not (see :class:`ExtractedTable`).

    Raises :class:`DartXmlError` when the bytes are not readable as XML at all.
    """
    root, encoding, parser = parse_xml(data)
    doc = DartDocument(document_name="", document_code="", company_name="", corp_code="", encoding=encoding,
                       parser=parser)
    section_title = ""
    title = ""
    index = 0
    for el in root.iter():
        tag = _name(el)
        if tag == "DOCUMENT-NAME" and not doc.document_name:
            doc.document_name, doc.document_code = _text(el), _attr(el, "ACODE")
        elif tag == "COMPANY-NAME" and not doc.company_name:
            doc.company_name, doc.corp_code = _text(el), _attr(el, "AREGCIK")
        elif tag == "TITLE":
            title = _text(el)
            parent = el.getparent()
            if parent is not None and _name(parent).startswith("SECTION"):
                section_title = title
        elif tag == "TABLE" and not any(_name(a) == "TABLE" for a in el.iterancestors()):
            index += 1
            if _attr(el, "BORDER").strip() == "0":  # cover, signature block, paragraph framing: not a table
                doc.tables.append(ExtractedTable(index, "", 0, 0, 0, section_title, title, False, "layout_table",
                                                 "BORDER=\"0\" layout table", element=el))
                continue
            try:
                raw = table_to_html(el)
                label = normalize_html(raw)
                n_rows, n_cols, text_length = measure_label(label)
            except DartTableRefused as exc:
                doc.tables.append(
                    ExtractedTable(index, "", 0, 0, 0, section_title, title, False, exc.reason, str(exc), element=el)
                )
                continue
            except (ValueError, RecursionError) as exc:  # TableParseError: nothing table-like survived
                doc.tables.append(
                    ExtractedTable(index, "", 0, 0, 0, section_title, title, False, "table_unreadable",
                                   f"{type(exc).__name__}: {str(exc)[:200]}", element=el)
                )
                continue
            refusal = size_refusal(n_rows, n_cols, text_length, min_rows=min_rows, min_cols=min_cols, max_rows=max_rows)
            reason, detail = refusal or ("", "")
            doc.tables.append(ExtractedTable(index, label, n_rows, n_cols, text_length, section_title, title,
                                             refusal is None, reason, detail, element=el))
    return doc


# --------------------------------------------------------------------------------------------------
# The look of the DART viewer (for rendering only; the label stays the normalised form)
# --------------------------------------------------------------------------------------------------

DART_CSS = """
body { margin: 0; padding: 8px; background: #fff; }
table.dart { border-collapse: collapse; font-family: 'Noto Sans CJK KR', 'Malgun Gothic', 'Dotum', sans-serif;
  font-size: 13px; line-height: 1.45; color: #000; table-layout: fixed; }
table.dart td, table.dart th { padding: 2px 4px; vertical-align: middle; font-weight: normal; word-break: keep-all; }
table.dart.bordered > * > tr > td, table.dart.bordered > * > tr > th, table.dart.bordered > tr > td,
table.dart.bordered > tr > th { border: 1px solid #000; }
"""

_BG = re.compile(r"BC0X([0-9A-F]{6})")
_ALIGNS = {"LEFT": "left", "RIGHT": "right", "CENTER": "center", "JUSTIFY": "justify"}


def _px(value: str) -> int | None:
    m = re.match(r"\s*(\d{1,5})", value or "")
    return int(m.group(1)) if m else None


def _styled_cell(cell, shaded_row: bool, depth: int) -> str:
    tag = _name(cell)
    out_tag, attrs = _cell_tag(cell, shaded_row)
    style = []
    bg = _BG.search(_attr(cell, "USERMARK").upper())
    if bg:
        style.append(f"background:#{bg.group(1).lower()}")
    elif tag == "TH":
        style.append("background:#dcdcdc")
    align = _ALIGNS.get(_attr(cell, "ALIGN").upper())
    if align is None and tag in ("TU",) :
        align = "right"  # TU cells hold amounts with their unit
    if align:
        style.append(f"text-align:{align}")
    valign = _attr(cell, "VALIGN").upper()
    if valign in ("TOP", "BOTTOM"):
        style.append(f"vertical-align:{valign.lower()}")
    width = _px(_attr(cell, "WIDTH"))
    if width:
        style.append(f"width:{width}px")
    if style:
        attrs += f' style="{";".join(style)}"'
    return f"<{out_tag}{attrs}>{_inner_html(cell, depth)}</{out_tag}>"


def styled_table_html(table_el) -> str:
    """The DART ``TABLE`` as HTML with the viewer's look: borders where ``BORDER`` is not 0, header shading
    from ``USERMARK="BC0X…"`` (grey for ``TH``), column widths from ``COLGROUP``/``WIDTH``, alignment from
    ``ALIGN`` (amounts in ``TU`` cells right-aligned), the viewer's 13 px font (see :data:`DART_CSS`).
    Its cells and text are exactly the label's. Raises :class:`DartTableRefused` like :func:`table_to_html`."""
    border = _attr(table_el, "BORDER").strip() != "0"
    cols: list[str] = []
    rows: list[str] = []

    def add_rows(container) -> None:
        for tr in container:
            if _name(tr) != "TR":
                continue
            cells = [c for c in tr if _name(c) in _CELL_TAGS]
            shaded = bool(cells) and all(_name(c) == "TH" or is_shaded(c) for c in cells)
            rows.append("<tr>" + "".join(_styled_cell(c, shaded, 0) for c in cells) + "</tr>")

    for child in table_el:
        tag = _name(child)
        if tag == "COLGROUP":
            for col in child:
                if _name(col) == "COL":
                    w = _px(_attr(col, "WIDTH"))
                    cols.append(f'<col style="width:{w}px">' if w else "<col>")
        elif tag in ("THEAD", "TBODY", "TFOOT"):
            add_rows(child)
        elif tag == "TR":
            add_rows([child])
    width = _px(_attr(table_el, "WIDTH"))
    style = f' style="width:{width}px"' if width else ""
    colgroup = f"<colgroup>{''.join(cols)}</colgroup>" if cols else ""
    cls = "dart bordered" if border else "dart"
    return f'<table class="{cls}"{style}>{colgroup}<tbody>{"".join(rows)}</tbody></table>'
