"""OpenDART client against a local fake: paging, status codes, key secrecy, document ZIPs, partitions."""

from __future__ import annotations

import logging
import math

import pytest

from ocr_ft.sources.dart import (
    DartAuthError,
    DartClient,
    DartDocumentError,
    DartError,
    DartRateLimitError,
    dart_months,
    extract_zip,
    month_range,
    read_zip_documents,
)
from ocr_ft.sources.http import HttpError

KEY = "0123456789abcdef0123456789abcdef01234567"  # 40 characters, like a real OpenDART key


def filing(i: int) -> dict:
    return {
        "corp_cls": "Y", "corp_name": f"회사{i}", "corp_code": f"{i:08d}", "stock_code": "005930",
        "report_nm": "분기보고서 (2024.03)", "rcept_no": f"20240515{i:06d}", "flr_nm": f"회사{i}",
        "rcept_dt": "20240515", "rm": "",
    }


def list_handler(filings, reply):
    def handle(params):
        page, count = int(params.get("page_no", "1")), int(params.get("page_count", "10"))
        if not filings:
            return reply(200, {"status": "013", "message": "조회된 데이타가 없습니다."})
        chunk = filings[(page - 1) * count: page * count]
        return reply(200, {
            "status": "000", "message": "정상", "page_no": page, "page_count": count,
            "total_count": len(filings), "total_page": math.ceil(len(filings) / count), "list": chunk,
        })

    return handle


@pytest.fixture
def dart(fake_server, tmp_path):
    return DartClient(KEY, cache_dir=tmp_path / "cache", base_url=f"{fake_server.url}/api", max_attempts=3,
                      backoff_base=0.0, min_interval=0.0, maintenance_wait=0.01)


def test_list_filings_follows_total_page(fake_server, reply, dart):
    fake_server.route("/api/list.json", list_handler([filing(i) for i in range(5)], reply))
    got = dart.list_filings("20240501", "20240531", pblntf_detail_ty="A003", page_count=2)
    assert [f.rcept_no for f in got] == [f"20240515{i:06d}" for i in range(5)]
    assert got[0].corp_name == "회사0" and got[0].report_nm == "분기보고서 (2024.03)"
    hits = fake_server.hits("/api/list.json")
    assert [h.params["page_no"] for h in hits] == ["1", "2", "3"]
    assert hits[0].params["crtfc_key"] == KEY and hits[0].params["pblntf_detail_ty"] == "A003"
    assert hits[0].params["bgn_de"] == "20240501" and "corp_code" not in hits[0].params


def test_status_013_is_an_empty_result(fake_server, reply, dart):
    fake_server.route("/api/list.json", list_handler([], reply))
    assert dart.list_filings("20240101", "20240131") == []


def test_daily_quota_020_stops_at_once_without_retries(fake_server, reply, dart, tmp_path):
    fake_server.route("/api/list.json", reply(200, {"status": "020", "message": "요청 제한을 초과하였습니다."}))
    with pytest.raises(DartRateLimitError) as info:
        dart.list_filings("20240101", "20240131")
    msg = str(info.value)
    assert info.value.status == "020" and "daily quota spent; rerun after 00:00 KST" in msg
    assert len(fake_server.hits()) == 1  # no retries: the quota is daily
    assert KEY not in msg
    with pytest.raises(DartRateLimitError):  # not cached: the next run asks again
        dart.list_filings("20240101", "20240131")
    assert len(fake_server.hits()) == 2


def test_status_012_names_the_ip_allow_list(fake_server, reply, dart):
    fake_server.route("/api/list.json", reply(200, {"status": "012", "message": "접근할 수 없는 IP입니다."}))
    with pytest.raises(DartAuthError) as info:
        dart.list_filings("20240101", "20240131")
    assert "allow-list" in str(info.value) and "012" in str(info.value)
    assert len(fake_server.hits()) == 1


def test_status_800_maintenance_fails_after_a_short_wait(fake_server, reply, dart):
    from ocr_ft.sources.dart import DartMaintenanceError

    fake_server.route("/api/list.json", reply(200, {"status": "800", "message": "시스템 점검 중입니다."}))
    with pytest.raises(DartMaintenanceError) as info:
        dart.list_filings("20240101", "20240131")
    assert "maintenance" in str(info.value) and KEY not in str(info.value)
    assert len(fake_server.hits()) == 1


@pytest.mark.parametrize("status", ["010", "011"])
def test_bad_key_names_the_env_var_and_never_shows_the_key(fake_server, reply, dart, caplog, status):
    caplog.set_level(logging.DEBUG)
    fake_server.route("/api/list.json", reply(200, {"status": status, "message": "등록되지 않은 키입니다."}))
    with pytest.raises(DartAuthError) as info:
        dart.list_filings("20240101", "20240131")
    msg = str(info.value)
    assert "DART_API_KEY" in msg and status in msg and "crtfc_key=***" in msg
    assert KEY not in msg and KEY not in repr(info.value) and KEY not in repr(dart)
    assert KEY not in caplog.text
    assert len(fake_server.hits()) == 1  # a bad key is not retried


def test_missing_key_is_refused_up_front():
    with pytest.raises(DartAuthError, match="DART_API_KEY"):
        DartClient("  ")


def test_other_status_names_status_and_message(fake_server, reply, dart):
    fake_server.route("/api/list.json", reply(200, {"status": "100", "message": "필드의 부적절한 값입니다."}))
    with pytest.raises(DartError) as info:
        dart.list_filings("20240101", "20240131")
    assert "100" in str(info.value) and "필드의 부적절한 값입니다." in str(info.value)
    assert not isinstance(info.value, DartAuthError)


def test_500_forever_is_a_clear_error_naming_the_request(fake_server, reply, dart, caplog):
    caplog.set_level(logging.DEBUG)
    fake_server.route("/api/list.json", reply(500, "Internal Server Error"))
    with pytest.raises(HttpError) as info:
        dart.list_filings("20240101", "20240131")
    msg = str(info.value)
    assert "/api/list.json?crtfc_key=***&bgn_de=20240101&end_de=20240131" in msg and "HTTP 500" in msg
    assert KEY not in msg and KEY not in caplog.text
    assert len(fake_server.hits()) == 3


def test_500_then_success(fake_server, script, reply, dart):
    fake_server.route("/api/list.json", script(
        reply(500, "oops"), reply(200, {"status": "000", "message": "정상", "total_page": 1, "list": [filing(7)]})))
    assert len(dart.list_filings("20240101", "20240131")) == 1


# ---- document.xml -----------------------------------------------------------------------------------


def test_document_zip_members(fake_server, reply, dart, make_zip):
    z = make_zip({"20240515000001_00760.xml": "<DOCUMENT/>", "20240515000001.xml": "<DOCUMENT>main</DOCUMENT>"})
    fake_server.route("/api/document.xml", reply(200, z, "application/x-msdownload"))
    members = dart.documents("20240515000001")
    assert [n for n, _ in members] == ["20240515000001.xml", "20240515000001_00760.xml"]
    assert fake_server.hits()[0].params["rcept_no"] == "20240515000001"


def test_truncated_zip_is_retried_then_succeeds(fake_server, script, reply, dart, make_zip):
    z = make_zip({"a.xml": "<DOCUMENT>" + "표" * 2000 + "</DOCUMENT>"})
    fake_server.route("/api/document.xml", script(reply(200, z[: len(z) // 2]), reply(200, z)))
    assert dart.document_zip("20240515000001") == z
    assert len(fake_server.hits()) == 2


def test_truncated_zip_forever_names_rcept_no(fake_server, reply, dart, make_zip):
    z = make_zip({"a.xml": "<DOCUMENT>" + "표" * 2000 + "</DOCUMENT>"})
    fake_server.route("/api/document.xml", reply(200, z[:-30]))
    with pytest.raises(DartDocumentError) as info:
        dart.documents("20240515000042")
    assert info.value.rcept_no == "20240515000042" and info.value.reason == "zip_corrupt"
    assert "20240515000042" in str(info.value) and "truncated or corrupt" in str(info.value)
    assert KEY not in str(info.value)
    assert len(fake_server.hits()) == 3
    assert not dart.http.is_cached(f"{fake_server.url}/api/document.xml", {"rcept_no": "20240515000042"})


@pytest.mark.parametrize("evil", ["../../etc/passwd", "//abs/path.xml", "/../x.xml", "/C:/x.xml", "dir/../../x.xml",
                                  "C:\\win.xml", "..\\up.xml"])
def test_zip_slip_entries_are_refused(fake_server, reply, dart, make_zip, evil):
    fake_server.route("/api/document.xml", reply(200, make_zip({"ok.xml": "<DOCUMENT/>", evil: "x"})))
    with pytest.raises(DartDocumentError) as info:
        dart.documents("20240515000009")
    assert info.value.reason == "zip_unsafe" and "20240515000009" in str(info.value)
    assert len(fake_server.hits()) == 1  # unsafe is not transient: no retry


def test_document_error_body_014(fake_server, reply, dart):
    body = '<?xml version="1.0" encoding="UTF-8"?><result><status>014</status><message>파일이 존재하지 않습니다.</message></result>'
    fake_server.route("/api/document.xml", reply(200, body, "text/xml"))
    with pytest.raises(DartDocumentError) as info:
        dart.documents("20240515000003")
    assert info.value.status == "014" and info.value.reason == "document_unavailable"
    assert "20240515000003" in str(info.value)


def test_document_error_body_bad_key(fake_server, reply, dart):
    fake_server.route("/api/document.xml", reply(200, {"status": "010", "message": "등록되지 않은 키입니다."}))
    with pytest.raises(DartAuthError, match="DART_API_KEY"):
        dart.documents("20240515000003")


def test_extract_zip_writes_inside_dest_only(tmp_path, make_zip):
    written = extract_zip(make_zip({"a.xml": "<A/>", "sub/b.xml": "<B/>"}), tmp_path / "out", "20240515000001")
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in written) == ["a.xml", "sub/b.xml"]
    with pytest.raises(DartDocumentError):
        extract_zip(make_zip({"../escape.xml": "<A/>"}), tmp_path / "out2", "20240515000001")
    assert not (tmp_path / "escape.xml").exists()


def test_read_zip_documents_rejects_garbage():
    with pytest.raises(DartDocumentError, match="rcept_no 20240515000001"):
        read_zip_documents(b"PK\x03\x04 not really a zip", "20240515000001")


# ---- partitions -------------------------------------------------------------------------------------


def test_month_range_and_months():
    assert month_range("2024-02") == ("20240201", "20240229")
    assert month_range("2023-12") == ("20231201", "20231231")
    assert dart_months("2023-11", "2024-02") == ["2023-11", "2023-12", "2024-01", "2024-02"]
    with pytest.raises(ValueError):
        month_range("2024-13")
    with pytest.raises(ValueError):
        month_range("202403")
