"""collect_dart end to end against a local OpenDART fake and a fake renderer: pairs, rejects, the cache."""

from __future__ import annotations

import pytest

from ocr_ft.sources.dart import DartAuthError, DartClient, collect_dart
from ocr_ft.tables import validate_label

KEY = "fedcba9876543210fedcba9876543210fedcba98"

MAIN_DOC = """<?xml version="1.0" encoding="utf-8"?>
<DOCUMENT><DOCUMENT-NAME ACODE="11013">분기보고서</DOCUMENT-NAME><COMPANY-NAME AREGCIK="00000001">가나은행</COMPANY-NAME>
<BODY><SECTION-1><TITLE>III. 재무에 관한 사항</TITLE>
<TABLE><THEAD><TR><TH ROWSPAN="2">과목</TH><TH COLSPAN="2">제10기 1분기</TH></TR><TR><TH>금액</TH><TH>비중</TH></TR></THEAD>
<TBODY><TR><TE>현금및예치금</TE><TU>1,234</TU><TD>5%</TD></TR><TR><TE>대출채권</TE><TU>23,456</TU><TD>95%</TD></TR></TBODY></TABLE>
<TABLE><TR><TD>작은 표</TD></TR></TABLE>
<TABLE><TR><TD>FAIL_RENDER</TD><TD>x</TD></TR><TR><TD>y</TD><TD>z</TD></TR></TABLE>
</SECTION-1></BODY></DOCUMENT>"""

ATTACHMENT = """<?xml version="1.0" encoding="utf-8"?>
<DOCUMENT><DOCUMENT-NAME ACODE="00760">감사보고서</DOCUMENT-NAME><BODY><SECTION-1><TITLE>감사의견</TITLE>
<TABLE><TR><TD>구분</TD><TD>의견</TD></TR><TR><TD>당기</TD><TD>적정</TD></TR></TABLE>
</SECTION-1></BODY></DOCUMENT>"""

NO_TABLES = """<?xml version="1.0" encoding="utf-8"?><DOCUMENT><BODY><SECTION-1><TITLE>정정신고</TITLE>
<P>표가 없는 문서</P></SECTION-1></BODY></DOCUMENT>"""


def filing(rcept_no: str, name: str, day: str) -> dict:
    return {"corp_name": name, "corp_code": rcept_no[-8:], "report_nm": "분기보고서 (2024.03)", "rcept_no": rcept_no,
            "rcept_dt": f"202405{day}", "corp_cls": "Y", "stock_code": "", "flr_nm": name, "rm": ""}


@pytest.fixture
def dart_site(fake_server, reply, make_zip):
    filings = [filing("20240516000002", "다라전자", "16"), filing("20240515000001", "가나은행", "15"),
               filing("20240517000003", "마바건설", "17"), filing("20240518000004", "사아상사", "18")]
    docs = {
        "20240515000001": reply(200, make_zip({"20240515000001.xml": MAIN_DOC,
                                              "20240515000001_00760.xml": ATTACHMENT.encode("utf-8")})),
        "20240516000002": reply(200, make_zip({"20240516000002.xml": NO_TABLES})),
        "20240517000003": reply(200, '<result><status>014</status><message>파일이 존재하지 않습니다.</message></result>'),
        "20240518000004": reply(200, make_zip({"20240518000004.xml": b"\x00\x01 not xml"})),
    }

    def listing(params):
        rows = filings if params.get("pblntf_detail_ty") == "A003" else []
        if not rows:
            return reply(200, {"status": "013", "message": "조회된 데이타가 없습니다."})
        return reply(200, {"status": "000", "message": "정상", "page_no": 1, "total_count": len(rows),
                           "total_page": 1, "list": rows})

    fake_server.route("/api/list.json", listing)
    fake_server.route("/api/document.xml", lambda params: docs[params["rcept_no"]])
    return fake_server


def make_client(server, tmp_path):
    return DartClient(KEY, cache_dir=tmp_path / "cache", base_url=f"{server.url}/api", max_attempts=2,
                      backoff_base=0.0, min_interval=0.0)


def test_collect_month(dart_site, fake_renderer, tmp_path):
    seen = []
    result = collect_dart(make_client(dart_site, tmp_path), "2024-05", fake_renderer, report_types=("A001", "A003"),
                          progress=lambda d, t: seen.append((d, t)))
    names = sorted(p.original_filename for p in result.pairs)
    assert names == ["dart_20240515000001_0001.png", "dart_20240515000001_0004.png"]
    pair = next(p for p in result.pairs if p.original_filename.endswith("_0001.png"))
    assert pair.source == "dart" and pair.image_path.startswith("blobs/")
    assert (tmp_path / "data" / pair.image_path).exists()
    assert validate_label(pair.html).grid_consistent and "현금및예치금" in pair.html
    assert pair.metadata["rcept_no"] == "20240515000001" and pair.metadata["corp_name"] == "가나은행"
    assert pair.metadata["section_title"] == "III. 재무에 관한 사항"
    assert pair.metadata["document"] == "20240515000001.xml" and pair.metadata["table_index"] == 1
    assert pair.metadata["image"]["width"] > 0
    attachment = next(p for p in result.pairs if p.original_filename.endswith("_0004.png"))
    assert attachment.metadata["document"] == "20240515000001_00760.xml"
    assert attachment.metadata["document_name"] == "감사보고서"

    reasons = sorted((r.original_filename, r.reason) for r in result.rejects)
    assert reasons == [
        ("dart_20240515000001_0002.png", "table_too_small"),
        ("dart_20240515000001_0003.png", "render_failed"),
        ("dart_20240516000002.zip", "no_tables"),
        ("dart_20240517000003.zip", "document_unavailable"),
        ("dart_20240518000004/20240518000004.xml", "document_parse_failed"),
    ]
    assert result.stats["filings_listed"] == 4 and result.stats["tables_kept"] == 3
    assert result.stats["reject_reasons"]["render_failed"] == 1
    assert (4, 4) in seen  # progress over filings
    # A001 searched too (013 = empty); filings processed in receipt order
    types = [h.params.get("pblntf_detail_ty") for h in dart_site.hits("/api/list.json")]
    assert types == ["A001", "A003"]
    docs = [h.params["rcept_no"] for h in dart_site.hits("/api/document.xml")]
    assert docs == ["20240515000001", "20240516000002", "20240517000003", "20240518000004"]


def test_second_collect_makes_no_request_and_gives_identical_rows(dart_site, fake_renderer, tmp_path):
    first = collect_dart(make_client(dart_site, tmp_path), "2024-05", fake_renderer)
    before = len(dart_site.hits())
    second = collect_dart(make_client(dart_site, tmp_path), "2024-05", fake_renderer)
    assert len(dart_site.hits()) == before  # everything from the disk cache
    assert second.stats["http_requests"] == 0 and second.stats["cache_hits"] > 0
    assert second.manifest_rows() == first.manifest_rows()


def test_refresh_listing_asks_the_search_again_but_not_the_documents(dart_site, fake_renderer, tmp_path):
    collect_dart(make_client(dart_site, tmp_path), "2024-05", fake_renderer)
    lists, docs = len(dart_site.hits("/api/list.json")), len(dart_site.hits("/api/document.xml"))
    collect_dart(make_client(dart_site, tmp_path), "2024-05", fake_renderer, refresh_listing=True)
    assert len(dart_site.hits("/api/list.json")) == 2 * lists
    assert len(dart_site.hits("/api/document.xml")) == docs
    collect_dart(make_client(dart_site, tmp_path), "2024-05", fake_renderer, refresh_documents=True)
    assert len(dart_site.hits("/api/document.xml")) == 2 * docs


def test_caps(dart_site, fake_renderer, tmp_path):
    result = collect_dart(make_client(dart_site, tmp_path), "2024-05", fake_renderer, max_filings=1,
                          max_tables_per_filing=1)
    assert [p.original_filename for p in result.pairs] == ["dart_20240515000001_0001.png"]
    assert result.stats["filings_processed"] == 1 and result.stats["tables_over_cap"] == 2


def test_corp_codes_each_get_a_search(dart_site, fake_renderer, tmp_path):
    collect_dart(make_client(dart_site, tmp_path), "2024-05", fake_renderer, corp_codes=["00000001", "00000002"],
                 report_types=("A",))
    hits = dart_site.hits("/api/list.json")
    assert [(h.params["corp_code"], h.params["pblntf_ty"]) for h in hits] == [("00000001", "A"), ("00000002", "A")]
    assert all(h.params["last_reprt_at"] == "Y" and h.params["bgn_de"] == "20240501" for h in hits)
    assert all(h.params["end_de"] == "20240531" for h in hits)


def test_bad_key_fails_the_partition(fake_server, reply, fake_renderer, tmp_path):
    fake_server.route("/api/list.json", reply(200, {"status": "010", "message": "등록되지 않은 키입니다."}))
    with pytest.raises(DartAuthError):
        collect_dart(make_client(fake_server, tmp_path), "2024-05", fake_renderer)


def test_bad_report_type_is_refused(dart_site, fake_renderer, tmp_path):
    with pytest.raises(ValueError, match="report type"):
        collect_dart(make_client(dart_site, tmp_path), "2024-05", fake_renderer, report_types=("annual",))


def test_amended_filing_without_document_falls_back_to_the_original(fake_server, reply, make_zip, fake_renderer,
                                                                     tmp_path):
    original = {**filing("20240502000010", "가나은행", "02"), "corp_code": "00000001"}
    amended = {**filing("20240520000011", "가나은행", "20"), "corp_code": "00000001",
               "report_nm": "[기재정정]분기보고서 (2024.03)"}
    other = {**filing("20240503000012", "가나은행", "03"), "corp_code": "00000001", "report_nm": "주요사항보고서"}

    def listing(params):
        rows = [amended] if params.get("pblntf_detail_ty") == "A003" else []
        if params.get("corp_code") == "00000001":
            rows = [original, other, amended]
        if not rows:
            return reply(200, {"status": "013", "message": "조회된 데이타가 없습니다."})
        return reply(200, {"status": "000", "message": "정상", "total_page": 1, "list": rows})

    docs = {
        "20240520000011": reply(200, '<result><status>014</status><message>파일이 존재하지 않습니다.</message></result>'),
        "20240502000010": reply(200, make_zip({"20240502000010.xml": MAIN_DOC})),
    }
    fake_server.route("/api/list.json", listing)
    fake_server.route("/api/document.xml", lambda params: docs[params["rcept_no"]])
    result = collect_dart(make_client(fake_server, tmp_path), "2024-05", fake_renderer, report_types=("A003",))
    assert result.pairs, [r.reason for r in result.rejects]
    meta = result.pairs[0].metadata
    assert meta["rcept_no"] == "20240520000011" and meta["document_from"] == "20240502000010"
    assert meta["amended_fallback"] is True
    assert not any(r.reason == "document_unavailable" for r in result.rejects)
