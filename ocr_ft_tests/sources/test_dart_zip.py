"""Real DART ZIP shapes (leading '/', _{rcept_no}.xml, any order) and refused archives cached as refused."""

from __future__ import annotations

import zipfile

import pytest

from factories import zip_bytes
from ocr_ft.sources.dart import DartClient, DartDocumentError, read_zip_documents

KEY = "0123456789abcdef0123456789abcdef01234567"
RCEPT = "20160329000533"


def test_leading_slash_stripped_and_main_document_first_in_any_order():
    data = zip_bytes({"/20160329000533_00760.xml": b"<A/>", f"/{RCEPT}.xml": b"<B/>"})
    assert [n for n, _ in read_zip_documents(data, RCEPT)] == [f"{RCEPT}.xml", "20160329000533_00760.xml"]
    data = zip_bytes({"z_attach.xml": b"<A/>", f"_{RCEPT}.xml": b"<B/>"})
    assert [n for n, _ in read_zip_documents(data, RCEPT)][0] == f"_{RCEPT}.xml"


@pytest.mark.parametrize("members,reason", [
    ({}, "zip_no_xml"),
    ({"readme.txt": b"hello", "img.jpg": b"\xff\xd8"}, "zip_no_xml"),
])
def test_zip_without_xml_is_refused_with_reason_and_count(members, reason):
    with pytest.raises(DartDocumentError) as info:
        read_zip_documents(zip_bytes(members), RCEPT)
    assert info.value.reason == reason and RCEPT in str(info.value)
    assert f"({len(members)} member(s))" in str(info.value)


def test_zip_bomb_refused_from_headers_before_reading():
    data = zip_bytes({f"{RCEPT}.xml": b"\0" * (8 * 1024 * 1024)})  # ~1000:1
    assert len(data) < 64 * 1024
    with pytest.raises(DartDocumentError) as info:
        read_zip_documents(data, RCEPT)
    assert info.value.reason == "zip_too_large" and "ratio" in str(info.value)
    with pytest.raises(DartDocumentError) as info:
        read_zip_documents(zip_bytes({f"{RCEPT}.xml": b"<DOCUMENT/>" * 100}, zipfile.ZIP_STORED), RCEPT,
                           max_member_bytes=100)
    assert info.value.reason == "zip_too_large"


def _patch_flag(data: bytes, *, encrypted: bool = False, method: int | None = None) -> bytes:
    buf = bytearray(data)
    for sig, flag_off, meth_off in ((b"PK\x03\x04", 6, 8), (b"PK\x01\x02", 8, 10)):
        i = buf.find(sig)
        while i != -1:
            if encrypted:
                buf[i + flag_off] |= 0x1
            if method is not None:
                buf[i + meth_off:i + meth_off + 2] = method.to_bytes(2, "little")
            i = buf.find(sig, i + 4)
    return bytes(buf)


@pytest.mark.parametrize("kind", ["encrypted", "method"])
def test_encrypted_or_unsupported_member_is_a_reject_and_cached_as_refused(fake_server, reply, tmp_path, kind):
    good = zip_bytes({f"{RCEPT}.xml": b"<DOCUMENT/>"}, zipfile.ZIP_STORED)
    body = _patch_flag(good, encrypted=True) if kind == "encrypted" else _patch_flag(good, method=99)
    fake_server.route("/api/document.xml", reply(200, body))
    dart = DartClient(KEY, cache_dir=tmp_path / "c", base_url=f"{fake_server.url}/api", max_attempts=2,
                      backoff_base=0.0, min_interval=0.0)
    for _ in range(2):
        with pytest.raises(DartDocumentError) as info:
            dart.documents(RCEPT)
        assert info.value.reason == "zip_unreadable" and RCEPT in str(info.value)
    assert len(fake_server.hits()) == 1  # the refused body was cached: the rerun did not download it again
