"""Hostile input through DART's real entry points: huge spans, deep nesting, ZIP bombs, encrypted members,
empty archives, a stray byte in UTF-8, and API answers / reason phrases / redirects that echo the key.
Every input is built at run time; each test bounds time and Python peak memory and asserts the outcome
class (a reject naming the input, or a typed error) and, where a key is involved, that it appears in no
exception text, log record or written file."""

from __future__ import annotations

import logging
import socket
import threading
import time
import tracemalloc
from pathlib import Path

import pytest

from factories import zip_bytes
from ocr_ft.sources.dart import DartClient, DartDocumentError, DartError, documents_pending, read_zip_documents
from ocr_ft.sources.dart_xml import decode_xml, extract_tables
from ocr_ft.sources.http import ApiError, HttpClient, HttpError, RetryPolicy

KEY = "f00dfacecafebabe0123456789abcdef76543210"
RCEPT = "20240515000001"


class Bounded:
    def __init__(self, seconds: float, mb: float):
        self.limit_s, self.limit_mb = seconds, mb

    def __enter__(self):
        tracemalloc.start()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        seconds = time.perf_counter() - self.t0
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        assert seconds < self.limit_s, f"took {seconds:.1f}s"
        assert peak < self.limit_mb, f"peaked at {peak:.0f} MB"


def _doc(table: str) -> bytes:
    return f'<?xml version="1.0" encoding="utf-8"?><DOCUMENT><BODY>{table}</BODY></DOCUMENT>'.encode()


GOOD = '<TABLE BORDER="1"><TR><TD>가</TD><TD>나</TD></TR><TR><TD>다</TD><TD>라</TD></TR></TABLE>'


def _collect(members):
    pending, rejects = [], []
    documents_pending(members, RCEPT, {"rcept_no": RCEPT}, pending, rejects)
    return pending, rejects


def test_colspan_of_thousands_of_digits_is_a_reject_and_the_other_table_stays():
    evil = f'<TABLE BORDER="1"><TR><TD COLSPAN="{"9" * 5000}">x</TD><TD>y</TD></TR><TR><TD>1</TD><TD>2</TD></TR></TABLE>'
    with Bounded(5, 50):
        pending, rejects = _collect([(f"{RCEPT}.xml", _doc(evil + GOOD))])
    assert [r.reason for r in rejects] == ["span_too_large"]
    assert RCEPT in rejects[0].detail and len(pending) == 1


def test_tables_nested_300_deep_are_a_reject_not_a_recursion_error():
    deep = "".join('<TABLE BORDER="1"><TR><TD>a</TD><TD>' for _ in range(300)) + "x" + \
        "".join("</TD></TR></TABLE>" for _ in range(300))
    with Bounded(10, 200):
        pending, rejects = _collect([(f"{RCEPT}.xml", _doc(deep + GOOD))])
    assert [r.reason for r in rejects] == ["table_too_deep"] and len(pending) == 1


def test_zip_bomb_is_refused_before_decompressing():
    bomb = zip_bytes({f"{RCEPT}.xml": b"\0" * (64 * 1024 * 1024)})  # 64 MB at ~1000:1
    with Bounded(5, 20):  # it is never inflated
        with pytest.raises(DartDocumentError) as info:
            read_zip_documents(bomb, RCEPT)
    assert info.value.reason == "zip_too_large" and RCEPT in str(info.value)


@pytest.mark.parametrize("members", [{}, {"a.txt": b"x"}])
def test_zip_with_no_xml_is_a_reject_with_reason_and_count(members):
    with pytest.raises(DartDocumentError) as info:
        read_zip_documents(zip_bytes(members), RCEPT)
    assert info.value.reason == "zip_no_xml" and f"{len(members)} member(s)" in str(info.value)


def test_one_stray_ff_byte_keeps_utf8_with_the_count():
    data = _doc(GOOD).replace("가".encode(), "가".encode() + b"\xff")  # one raw invalid byte
    text, encoding = decode_xml(data)
    assert encoding == "utf-8-replace:1" and "나" in text
    doc = extract_tables(data)
    assert doc.kept and "다" in doc.kept[0].html


# ---- the key never leaks --------------------------------------------------------------------------


class RawServer:
    """A 127.0.0.1 server answering every request with fixed raw bytes (a reason phrase of our choosing)."""

    def __init__(self, raw: bytes):
        self.raw = raw
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.hits: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                self.hits.append(conn.recv(65536))
                conn.sendall(self.raw)

    def close(self):
        self.sock.close()


def _no_key_anywhere(exc: BaseException, caplog, folder: Path):
    seen = exc
    while seen is not None:
        assert KEY not in str(seen) and KEY not in repr(seen)
        for attr in ("request", "api_message", "code"):
            assert KEY not in str(getattr(seen, attr, ""))
        seen = seen.__cause__ or (None if seen.__suppress_context__ else seen.__context__)
    assert KEY not in caplog.text
    for rec in caplog.records:
        assert KEY not in rec.getMessage()
    for path in folder.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path


def _client(port: int, tmp_path: Path) -> DartClient:
    return DartClient(KEY, cache_dir=tmp_path / "cache", base_url=f"http://127.0.0.1:{port}/api", max_attempts=2,
                      backoff_base=0.0, min_interval=0.0, maintenance_wait=0.0)


def test_reason_phrase_echoing_the_key_is_redacted(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    srv = RawServer(f"HTTP/1.1 403 Forbidden for crtfc_key={KEY}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())
    try:
        with pytest.raises(HttpError) as info:
            _client(srv.port, tmp_path).list_filings("20240101", "20240131")
    finally:
        srv.close()
    assert "403" in str(info.value)
    _no_key_anywhere(info.value, caplog, tmp_path)


def test_api_message_echoing_the_key_is_redacted_without_context(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    body = ('{"status":"100","message":"invalid field crtfc_key=' + KEY + '"}').encode()
    srv = RawServer(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                    + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
    try:
        with pytest.raises(DartError) as info:
            _client(srv.port, tmp_path).list_filings("20240101", "20240131")
    finally:
        srv.close()
    assert isinstance(info.value, ApiError) and "100" in str(info.value)
    assert info.value.__context__ is None or info.value.__suppress_context__
    _no_key_anywhere(info.value, caplog, tmp_path)


def test_keyed_request_is_not_redirected(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    target = RawServer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
    srv = RawServer(f"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:{target.port}/steal\r\n"
                    "Content-Length: 0\r\nConnection: close\r\n\r\n".encode())
    try:
        with pytest.raises(HttpError) as info:
            _client(srv.port, tmp_path).list_filings("20240101", "20240131")
        time.sleep(0.1)
    finally:
        srv.close()
        target.close()
    assert info.value.code == "redirect" and target.hits == []
    _no_key_anywhere(info.value, caplog, tmp_path)


def test_unkeyed_requests_still_follow_redirects(tmp_path):
    target = RawServer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
    srv = RawServer(f"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:{target.port}/x\r\n"
                    "Content-Length: 0\r\nConnection: close\r\n\r\n".encode())
    try:
        http = HttpClient(cache_dir=None, retry=RetryPolicy(max_attempts=1), min_interval=0.0)
        assert http.get(f"http://127.0.0.1:{srv.port}/page").content == b"ok"
    finally:
        srv.close()
        target.close()
