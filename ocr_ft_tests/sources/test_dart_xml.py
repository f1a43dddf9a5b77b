"""DART filing documents (dart3.xsd) -> clean HTML tables: encodings, spans, TE/TU cells, the 2x2 rule."""

from __future__ import annotations

import pytest

from ocr_ft.sources.dart_xml import DartXmlError, decode_xml, extract_tables
from ocr_ft.tables import validate_label

DOC = """<?xml version="1.0" encoding="{decl}"?>
<DOCUMENT xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:noNamespaceSchemaLocation="dart3.xsd">
<DOCUMENT-NAME ACODE="11011">사업보고서</DOCUMENT-NAME>
<FORMULA-VERSION ADATE="20230301">5.4</FORMULA-VERSION>
<COMPANY-NAME AREGCIK="00126380">삼성전자</COMPANY-NAME>
<BODY>
<COVER><COVER-TITLE>사 업 보 고 서</COVER-TITLE></COVER>
<SECTION-1 ACLASS="MANDATORY"><TITLE ATOC="Y" AASSOCNOTE="D-0-3-0-0">III. 재무에 관한 사항</TITLE>
<SECTION-2><TITLE ATOC="Y">1. 요약재무정보</TITLE>
<P>(단위 : 백만원)</P>
<TABLE-GROUP ACLASS="EXTRACTION"><TITLE ATOC="N">요약연결재무정보</TITLE>
<TABLE BORDER="1" WIDTH="600"><COLGROUP><COL WIDTH="200"/><COL WIDTH="200"/><COL WIDTH="200"/></COLGROUP>
<THEAD><TR><TH ROWSPAN="2">구&nbsp;분</TH><TH COLSPAN="2">제55기</TH></TR>
<TR><TH>금액</TH><TH>비율</TH></TR></THEAD>
<TBODY><TR ACOPY="Y"><TE>유동자산<P>(현금 포함)</P></TE><TU AUNIT="KRW" AUNITVALUE="1000000">218,163,185</TU><TD>48.4%</TD></TR>
<TR><TE ALIGN="LEFT">R&D 비용&cr;합계</TE><TU AUNIT="KRW">28,352,769</TU><TD>6.3%</TD></TR>
</TBODY></TABLE></TABLE-GROUP>
<PGBRK/>
<TABLE><TBODY><TR><TD>단일행</TD><TD>표</TD></TR></TBODY></TABLE>
<TABLE><TBODY><TR><TD>한 열</TD></TR><TR><TD>두 행</TD></TR></TBODY></TABLE>
<TABLE><TBODY><TR><TD>가</TD><TD>나</TD></TR><TR><TD>다</TD><TD>라</TD></TR></TBODY></TABLE>
<TABLE><TBODY><TR><TD> </TD><TD></TD></TR><TR><TD></TD><TD>&nbsp;</TD></TR></TBODY></TABLE>
</SECTION-2>
<SECTION-2><TITLE ATOC="Y">2. 연결재무제표</TITLE>
<TABLE><TBODY>
<TR><TD>주석</TD><TD><TABLE><TR><TD>내부1</TD><TD>내부2</TD></TR><TR><TD>3</TD><TD>4</TD></TR></TABLE></TD></TR>
<TR><TD>합계</TD><TD>7</TD></TR>
</TBODY></TABLE>
</SECTION-2>
</SECTION-1>
</BODY>
</DOCUMENT>
"""

SUMMARY_LABEL = (
    '<table><thead><tr><th rowspan="2">구 분</th><th colspan="2">제55기</th></tr>'
    "<tr><th>금액</th><th>비율</th></tr></thead><tbody>"
    "<tr><td>유동자산 (현금 포함)</td><td>218,163,185</td><td>48.4%</td></tr>"
    "<tr><td>R&amp;D 비용 합계</td><td>28,352,769</td><td>6.3%</td></tr></tbody></table>"
)


def doc_bytes(decl: str, encoding: str) -> bytes:
    return DOC.format(decl=decl).encode(encoding)


@pytest.mark.parametrize(
    ("decl", "encoding", "detected"),
    [("utf-8", "utf-8", "utf-8"), ("utf-8", "cp949", "cp949"), ("euc-kr", "euc-kr", "cp949")],
    ids=["utf8", "cp949-declared-utf8", "declared-euc-kr"],
)
def test_encodings_give_the_same_tables(decl, encoding, detected):
    doc = extract_tables(doc_bytes(decl, encoding))
    assert doc.encoding == detected and doc.parser == "xml"
    assert doc.document_name == "사업보고서" and doc.document_code == "11011"
    assert doc.company_name == "삼성전자" and doc.corp_code == "00126380"
    assert doc.tables[0].html == SUMMARY_LABEL
    assert "\ufffd" not in "".join(t.html for t in doc.tables)


def test_cp949_bytes_really_are_not_utf8():
    data = doc_bytes("utf-8", "cp949")
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")
    text, enc = decode_xml(data)
    assert enc == "cp949" and "재무에 관한 사항" in text


def test_spans_te_tu_and_provenance():
    first = extract_tables(doc_bytes("utf-8", "utf-8")).tables[0]
    report = validate_label(first.html)
    assert report.grid_consistent and report.has_rowspan and report.has_colspan
    assert (first.n_rows, first.n_cols) == (4, 3)
    assert first.kept and first.index == 1
    assert first.section_title == "1. 요약재무정보"
    assert first.title == "요약연결재무정보"


def test_two_by_two_minimum_and_empty_tables():
    tables = extract_tables(doc_bytes("utf-8", "utf-8")).tables
    by_index = {t.index: t for t in tables}
    assert (by_index[2].kept, by_index[2].reason, by_index[2].n_rows) == (False, "table_too_small", 1)
    assert (by_index[3].kept, by_index[3].reason, by_index[3].n_cols) == (False, "table_too_small", 1)
    assert by_index[4].kept and by_index[4].html == "<table><tr><td>가</td><td>나</td></tr><tr><td>다</td><td>라</td></tr></table>"
    assert (by_index[5].kept, by_index[5].reason) == (False, "table_empty")
    assert [t.index for t in tables if t.kept] == [1, 4, 6]


def test_nested_table_stays_in_its_cell():
    nested = extract_tables(doc_bytes("utf-8", "utf-8")).tables[5]
    assert nested.section_title == "2. 연결재무제표"
    assert nested.html == (
        "<table><tr><td>주석</td><td><table><tr><td>내부1</td><td>내부2</td></tr><tr><td>3</td><td>4</td></tr>"
        "</table></td></tr><tr><td>합계</td><td>7</td></tr></table>"
    )
    assert validate_label(nested.html).nesting_level == 2


def test_min_size_and_max_rows_are_configurable():
    tables = extract_tables(doc_bytes("utf-8", "utf-8"), min_rows=1, min_cols=1, max_rows=3).tables
    by_index = {t.index: t for t in tables}
    assert by_index[2].kept and by_index[3].kept
    assert (by_index[1].kept, by_index[1].reason) == (False, "table_too_large")


def test_malformed_xml_is_recovered():
    broken = (
        '<?xml version="1.0" encoding="utf-8"?><DOCUMENT><BODY><SECTION-1><TITLE>가. 개요</TITLE>'
        "<TABLE><TBODY><TR><TD>항목<TD>값</TD></TR><TR><TD>매출</TD><TD>1 < 2</TD></TR></TBODY></TABLE>"
    ).encode("utf-8")
    doc = extract_tables(broken)
    assert doc.parser == "html"  # libxml2's XML recovery loses the second row; the HTML parser keeps it
    assert doc.tables[0].html == "<table><tr><td>항목</td><td>값</td></tr><tr><td>매출</td><td>1 &lt; 2</td></tr></table>"
    assert doc.tables[0].kept and doc.tables[0].section_title == "가. 개요"


def test_lower_case_html_tables_are_read_too():
    doc = extract_tables(
        "<DOCUMENT><BODY><table><tr><th colspan='2'>헤더</th></tr><tr><td>a</td><td>b</td></tr></table></BODY></DOCUMENT>".encode()
    )
    assert doc.tables[0].html == '<table><tr><th colspan="2">헤더</th></tr><tr><td>a</td><td>b</td></tr></table>'


@pytest.mark.parametrize("data", [b"", b"   ", b"\x00\x01binary"])
def test_unreadable_documents_raise(data):
    with pytest.raises(DartXmlError):
        extract_tables(data)
