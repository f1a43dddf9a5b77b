"""``ocr-ft dart extract DOCUMENT --out DIR`` on an XML file and on a document.xml ZIP."""

from __future__ import annotations

from ocr_ft import cli
from ocr_ft.sources import dart_cli

XML = """<?xml version="1.0" encoding="utf-8"?>
<DOCUMENT><DOCUMENT-NAME ACODE="11011">사업보고서</DOCUMENT-NAME><BODY><SECTION-1><TITLE>재무</TITLE>
<TABLE><TR><TH COLSPAN="2">손익</TH></TR><TR><TE>매출액</TE><TU>1,000</TU></TR></TABLE>
<TABLE><TR><TD>혼자</TD></TR></TABLE>
<TABLE><TR><TD ROWSPAN="2">자산</TD><TD>유동</TD></TR><TR><TD>비유동</TD></TR></TABLE>
</SECTION-1></BODY></DOCUMENT>"""

ATTACHMENT = """<?xml version="1.0" encoding="utf-8"?>
<DOCUMENT><BODY><TABLE><TR><TD>감사인</TD><TD>의견</TD></TR><TR><TD>가나회계법인</TD><TD>적정</TD></TR></TABLE></BODY></DOCUMENT>"""


def test_extract_xml_file(tmp_path, capsys):
    doc = tmp_path / "20240315000123.xml"
    doc.write_bytes(XML.encode("cp949"))  # cp949 bytes under a declaration that says utf-8
    out = tmp_path / "out"
    assert cli.main(["dart", "extract", str(doc), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == "2"
    assert "1 table_too_small" in captured.err
    assert sorted(p.name for p in out.iterdir()) == ["0001.html", "0002.html"]
    assert (out / "0001.html").read_text(encoding="utf-8").strip() == (
        '<table><tr><th colspan="2">손익</th></tr><tr><td>매출액</td><td>1,000</td></tr></table>'
    )
    assert (out / "0002.html").read_text(encoding="utf-8").startswith('<table><tr><td rowspan="2">자산</td>')


def test_extract_zip_numbers_across_documents_and_replaces_old_output(tmp_path, capsys, make_zip):
    z = tmp_path / "20240315000123.zip"
    z.write_bytes(make_zip({"20240315000123.xml": XML, "20240315000123_00760.xml": ATTACHMENT}))
    out = tmp_path / "out"
    out.mkdir()
    (out / "0007.html").write_text("stale")
    (out / "notes.txt").write_text("mine")
    assert dart_cli.main(["extract", str(z), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == "3"
    assert sorted(p.name for p in out.iterdir()) == ["0001.html", "0002.html", "0003.html", "notes.txt"]
    assert "가나회계법인" in (out / "0003.html").read_text(encoding="utf-8")
    for p in out.glob("*.html"):
        assert p.read_text(encoding="utf-8").startswith("<table>")


def test_extract_refuses_zip_slip(tmp_path, capsys, make_zip):
    z = tmp_path / "evil.zip"
    z.write_bytes(make_zip({"../../evil.xml": XML}))
    assert dart_cli.main(["extract", str(z), "--out", str(tmp_path / "out")]) == 1
    assert "unsafe entry" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_extract_missing_file(tmp_path, capsys):
    assert dart_cli.main(["extract", str(tmp_path / "nope.xml"), "--out", str(tmp_path / "out")]) == 1
    assert "no such file" in capsys.readouterr().err


def test_min_size_options(tmp_path, capsys):
    doc = tmp_path / "d.xml"
    doc.write_text(XML, encoding="utf-8")
    assert dart_cli.main(["extract", str(doc), "--out", str(tmp_path / "o"), "--min-rows", "1", "--min-cols", "1"]) == 0
    assert capsys.readouterr().out.strip() == "3"


def test_extract_real_filing_applies_the_asset_rules(tmp_path, capsys):
    from factories import shared_external
    from ocr_ft.sources.dart_cli import main

    src = shared_external("real", "dart", "major_issue_report_2025_dart4.xml")
    assert main(["extract", str(src), "--out", str(tmp_path / "a")]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == "2" and "3 layout_table" in err
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["0001.html", "0002.html"]
    assert main(["extract", str(src), "--out", str(tmp_path / "b"), "--max-tables", "1"]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == "1" and "1 over_cap" in err
    assert main(["extract", str(src), "--out", str(tmp_path / "c"), "--max-tables", "1", "--all"]) == 0
    assert capsys.readouterr().out.strip() == "2"


def test_selection_policy_financial_first_reaches_the_statements():
    from ocr_ft.sources.dart import select_tables
    from ocr_ft.sources.dart_xml import ExtractedTable

    def t(i, section):
        return ExtractedTable(i, "<table></table>", 2, 2, 4, section, section, True)

    tables = [t(i, "I. 회사의 개요") for i in range(1, 6)] + [t(6, "III. 재무에 관한 사항"), t(7, "연결재무제표 주석")]
    chosen, over = select_tables(tables, policy="financial_first", max_tables=3)
    assert [x.index for x in chosen] == [1, 6, 7] and over == 4
    chosen, over = select_tables(tables, policy="document_order", max_tables=3)
    assert [x.index for x in chosen] == [1, 2, 3] and over == 4
    assert len(select_tables(tables, policy="all", max_tables=3)[0]) == 7
    import pytest

    with pytest.raises(ValueError, match="selection policy"):
        select_tables(tables, policy="random", max_tables=3)
