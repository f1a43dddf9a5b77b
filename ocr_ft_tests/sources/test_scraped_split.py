"""The one row-window splitter every scraped source uses: DART's long tables become windows, not rejects."""

from __future__ import annotations

from ocr_ft.sources.dart import DartClient, collect_dart
from ocr_ft.sources.scraped_common import PendingTable, TokenBudget, split_pending
from ocr_ft.tables import parse_tables, validate_label

KEY = "0123456789abcdef0123456789abcdef01234567"


def long_doc(n: int) -> str:
    rows = "".join(f"<TR><TE>계정과목 {i}번 항목</TE><TU>{i * 1234:,}</TU><TU>({i})</TU></TR>" for i in range(n))
    return ('<?xml version="1.0" encoding="utf-8"?><DOCUMENT><BODY><SECTION-1><TITLE>III. 재무에 관한 사항</TITLE>'
            '<TABLE BORDER="1"><THEAD><TR><TH>과목</TH><TH>당기</TH><TH>전기</TH></TR></THEAD>'
            f"<TBODY>{rows}</TBODY></TABLE></SECTION-1></BODY></DOCUMENT>")


def test_dart_table_over_the_row_cap_becomes_windows(fake_server, reply, make_zip, fake_renderer, tmp_path):
    filing = {"corp_name": "가나은행", "corp_code": "00000001", "report_nm": "분기보고서 (2024.03)",
              "rcept_no": "20240515000001", "rcept_dt": "20240515", "corp_cls": "Y", "stock_code": "",
              "flr_nm": "가나은행", "rm": ""}
    fake_server.route("/api/list.json", reply(200, {"status": "000", "message": "정상", "page_no": 1, "total_count": 1,
                                                   "total_page": 1, "list": [filing]}))
    fake_server.route("/api/document.xml", lambda p: reply(200, make_zip({"20240515000001.xml": long_doc(250)})))
    client = DartClient(KEY, cache_dir=tmp_path / "cache", base_url=f"{fake_server.url}/api", max_attempts=2,
                        backoff_base=0.0, min_interval=0.0)
    result = collect_dart(client, "2024-05", fake_renderer, report_types=["A003"], max_rows=100)
    assert not [r for r in result.rejects if r.reason == "table_too_large"]
    names = sorted(p.original_filename for p in result.pairs)
    assert len(names) >= 3 and all(n.startswith("dart_20240515000001_0001_p0") for n in names)
    body = []
    for p in sorted(result.pairs, key=lambda p: p.original_filename):
        assert validate_label(p.html).grid_consistent
        cells = [c.text for c in parse_tables(p.html)[0].cells()]
        assert cells[:3] == ["과목", "당기", "전기"]  # header repeated
        assert p.metadata["rows"] <= 100 and p.metadata["window"]["count"] == len(names)
        body += cells[3::3]
    assert body == [f"계정과목 {i}번 항목" for i in range(250)]


def test_what_cannot_be_split_is_a_counted_reject():
    row = "<tr><td>" + "가" * 3000 + "</td><td>1</td></tr>"
    html = f"<table><thead><tr><th>a</th><th>b</th></tr></thead><tbody>{row}<tr><td>x</td><td>y</td></tr></tbody></table>"
    windows, rejects = split_pending("wiki", PendingTable("w.png", html, html, {}), budget=TokenBudget())
    assert windows == [] and [r.reason for r in rejects] == ["table_too_large"]
    assert "row 2 alone" in rejects[0].detail and "w.png" in rejects[0].detail


def test_carried_group_cell_is_repeated_when_a_group_must_be_cut():
    rows = "".join(f"<tr>{'<th rowspan=%d>그룹</th>' % 60 if i == 0 else ''}<td>항목 {i}</td><td>{i}</td></tr>"
                   for i in range(60))
    html = f"<table><thead><tr><th>구분</th><th>이름</th><th>값</th></tr></thead><tbody>{rows}</tbody></table>"
    windows, rejects = split_pending("fss", PendingTable("f.png", html, html, {}), max_rows=25)
    assert not rejects and len(windows) == 3
    for w in windows:
        assert validate_label(w.label_html).grid_consistent
        first = parse_tables(w.label_html)[0].rows[1].cells[0]
        assert first.text == "그룹" and first.rowspan == w.metadata["rows"] - 1
