"""The real DART filing (../shared/external/real/dart): form tables kept, layout tables not, shading -> th,
text fidelity (angle-bracket text, word-wrap SPAN splits)."""

from __future__ import annotations

import lxml.html

from factories import shared_external
from ocr_ft.sources.dart_xml import extract_tables
from ocr_ft.tables import validate_label

REAL = ("real", "dart", "major_issue_report_2025_dart4.xml")


def _real_bytes() -> bytes:
    return shared_external(*REAL).read_bytes()


def test_real_filing_gives_its_form_tables_and_no_layout_table():
    data = _real_bytes()
    doc = extract_tables(data)
    n_borderless = data.count(b'BORDER="0"')
    layout = [t for t in doc.tables if t.reason == "layout_table"]
    assert len(layout) == n_borderless >= 1
    kept = doc.kept
    assert len(kept) == data.count(b'BORDER="1"') >= 2
    for t in kept:
        assert validate_label(t.html).ok, t.html[:200]
        assert t.n_rows >= 2 and t.n_cols >= 2
    text = " ".join(t.html for t in kept)
    assert "해산사유" in text and "진행절차" in text
    # the cover's signature block (a layout table) is in no label
    assert not any("주 요 사 항 보 고 서" in t.html for t in kept)


def test_usermark_shaded_header_row_becomes_th():
    doc = extract_tables(_real_bytes())
    table = next(t for t in doc.kept if "진행절차" in t.html)
    first_row = lxml.html.fromstring(table.html).xpath("//tr")[0]
    assert [c.tag for c in first_row] == ["th", "th"]
    assert [c.text_content() for c in first_row] == ["진행절차", "일자"]
    # the other rows are not shaded and stay data cells
    assert all(c.tag == "td" for tr in lxml.html.fromstring(table.html).xpath("//tr")[1:] for c in tr)


DOC = """<?xml version="1.0" encoding="utf-8"?>
<DOCUMENT><BODY><SECTION-1><TITLE>재무<SPAN>제표</SPAN>에 관한 사항</TITLE>
<TABLE BORDER="1"><TBODY>
<TR><TD USERMARK="F-14 BC0XDCDCDC">구분</TD><TD USERMARK="BC0XDCDCDC">내용</TD></TR>
<TR><TD>표시</TD><TD>법인 <CP> 및 <MS AR 사업> 부문</TD></TR>
<TR><TD>합계</TD><TD ALIGN="RIGHT">1,000</TD></TR>
</TBODY></TABLE></SECTION-1></BODY></DOCUMENT>"""


def test_angle_bracket_text_stays_and_span_splits_add_no_space():
    doc = extract_tables(DOC.encode())
    (table,) = doc.kept
    assert "&lt;CP&gt;" in table.html and "&lt;MS AR 사업&gt;" in table.html
    assert table.title == "재무제표에 관한 사항"
    assert table.html.count("<th>") == 2


def test_styled_display_has_the_viewer_look_and_exactly_the_label_cells():
    from ocr_ft.sources.dart_xml import styled_table_html

    doc = extract_tables(_real_bytes())
    for t in doc.kept:
        styled = styled_table_html(t.element)
        s_root, l_root = lxml.html.fromstring(styled), lxml.html.fromstring(t.html)
        s_cells = [(c.tag, c.get("rowspan"), c.get("colspan"), " ".join(c.text_content().split()))
                   for c in s_root.iter("td", "th")]
        l_cells = [(c.tag, c.get("rowspan"), c.get("colspan"), " ".join(c.text_content().split()))
                   for c in l_root.iter("td", "th")]
        assert s_cells == l_cells
        assert 'class="dart bordered"' in styled and "<colgroup>" in styled and "width:" in styled
    shaded = styled_table_html(next(t for t in doc.kept if "진행절차" in t.html).element)
    assert "background:#dcdcdc" in shaded and "text-align:center" in shaded
