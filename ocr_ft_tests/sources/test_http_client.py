"""The shared HTTP layer against a local server: retries, final errors, secrecy, the disk cache."""

from __future__ import annotations

import logging
import time

import pytest

from ocr_ft.sources.http import DEFAULT_USER_AGENT, HttpClient, HttpError, RetryableResponse, RetryPolicy, register_secret

SECRET = "s3cr3t-key-0123456789abcdef"


def client(tmp_path, attempts=3, base=0.0, timeout=(2.0, 2.0), cache=True):
    return HttpClient(
        cache_dir=tmp_path / "cache" if cache else None,
        timeout=timeout,
        retry=RetryPolicy(max_attempts=attempts, backoff_base=base, backoff_max=1.0),
        secret_params=("key",),
    )


def test_500_then_success_is_retried(fake_server, script, reply, tmp_path):
    fake_server.route("/data", script(reply(500, "boom"), reply(200, {"ok": 1})))
    c = client(tmp_path)
    resp = c.get(f"{fake_server.url}/data", {"q": "1", "key": SECRET})
    assert resp.json() == {"ok": 1}
    assert len(fake_server.hits("/data")) == 2
    assert c.stats.retries == 1


def test_500_forever_fails_naming_the_request_without_the_secret(fake_server, reply, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    fake_server.route("/data", reply(503, "down"))
    c = client(tmp_path, attempts=3)
    with pytest.raises(HttpError) as info:
        c.get(f"{fake_server.url}/data", {"q": "삼성", "key": SECRET})
    msg = str(info.value)
    assert f"GET {fake_server.url}/data?q=삼성&key=***" in msg
    assert "after 3 attempt(s)" in msg and "HTTP 503" in msg
    assert info.value.code == "http_503" and info.value.attempts == 3
    assert len(fake_server.hits("/data")) == 3
    assert SECRET not in msg and SECRET not in caplog.text
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_backoff_waits_between_attempts(fake_server, reply, tmp_path):
    fake_server.route("/data", reply(500, "x"))
    c = client(tmp_path, attempts=3, base=0.05)
    start = time.monotonic()
    with pytest.raises(HttpError):
        c.get(f"{fake_server.url}/data")
    assert time.monotonic() - start >= 0.05 + 0.1  # 0.05 after the 1st failure, 0.1 after the 2nd


def test_timeout_then_success(fake_server, script, reply, tmp_path):
    fake_server.route("/slow", script(reply(200, "late", delay=0.6), reply(200, "fast")))
    c = client(tmp_path, timeout=(1.0, 0.2))
    assert c.get(f"{fake_server.url}/slow").text() == "fast"
    assert len(fake_server.hits("/slow")) == 2


def test_connection_reset_then_success(fake_server, script, reply, tmp_path):
    fake_server.route("/r", script(reply(reset=True), reply(200, "ok")))
    c = client(tmp_path)
    assert c.get(f"{fake_server.url}/r", {"key": SECRET}).text() == "ok"


def test_connection_reset_forever_names_request_and_hides_key(fake_server, reply, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    register_secret(SECRET)
    fake_server.route("/r", reply(reset=True))
    with pytest.raises(HttpError) as info:
        client(tmp_path).get(f"{fake_server.url}/r", {"key": SECRET})
    assert info.value.code == "connection"
    assert "/r?key=***" in str(info.value)
    assert SECRET not in str(info.value) and SECRET not in caplog.text


def test_truncated_body_is_retried(fake_server, script, reply, tmp_path):
    fake_server.route("/t", script(reply(200, b"0123456789" * 100, truncate=10), reply(200, b"complete")))
    assert client(tmp_path).get(f"{fake_server.url}/t").content == b"complete"


def test_404_is_not_retried(fake_server, reply, tmp_path):
    fake_server.route("/x", reply(404, "nope"))
    with pytest.raises(HttpError) as info:
        client(tmp_path).get(f"{fake_server.url}/x")
    assert info.value.status == 404
    assert len(fake_server.hits("/x")) == 1


def test_check_can_ask_for_a_retry_and_only_accepted_bodies_are_cached(fake_server, script, reply, tmp_path):
    fake_server.route("/c", script(reply(200, {"status": "busy"}), reply(200, {"status": "ok"})))

    def check(resp):
        if resp.json()["status"] == "busy":
            raise RetryableResponse("server busy", code="busy")

    c = client(tmp_path)
    assert c.get(f"{fake_server.url}/c", check=check).json() == {"status": "ok"}
    again = client(tmp_path).get(f"{fake_server.url}/c", check=check)
    assert again.from_cache and again.json() == {"status": "ok"}
    assert len(fake_server.hits("/c")) == 2


def test_fatal_check_error_propagates_unchanged_and_is_not_cached(fake_server, reply, tmp_path):
    fake_server.route("/f", reply(200, {"status": "bad"}))

    class Fatal(Exception):
        pass

    def check(resp):
        raise Fatal("bad answer")

    c = client(tmp_path)
    with pytest.raises(Fatal):
        c.get(f"{fake_server.url}/f", check=check)
    assert not c.is_cached(f"{fake_server.url}/f")
    assert len(fake_server.hits("/f")) == 1


def test_cache_hits_make_no_request_and_ignore_the_secret(fake_server, reply, tmp_path):
    fake_server.route("/d", reply(200, "payload-bytes"))
    url = f"{fake_server.url}/d"
    first = client(tmp_path).get(url, {"a": "1", "key": SECRET})
    second = client(tmp_path).get(url, {"key": "another-key-value", "a": "1"})  # same request, other key
    assert not first.from_cache and second.from_cache
    assert first.content == second.content == b"payload-bytes"
    assert len(fake_server.hits("/d")) == 1
    cache_files = list((tmp_path / "cache").rglob("*"))
    assert not [p for p in cache_files if p.name.endswith(".tmp")]
    assert all(SECRET.encode() not in p.read_bytes() for p in cache_files if p.is_file())


def test_refresh_refetches_and_rewrites_the_cache(fake_server, script, reply, tmp_path):
    fake_server.route("/v", script(reply(200, "v1"), reply(200, "v2")))
    url = f"{fake_server.url}/v"
    assert client(tmp_path).get(url).text() == "v1"
    assert client(tmp_path).get(url, refresh=True).text() == "v2"
    assert client(tmp_path).get(url).text() == "v2"
    assert len(fake_server.hits("/v")) == 2


def test_unchanged_remote_gives_identical_cache_bytes(fake_server, reply, tmp_path):
    fake_server.route("/u", reply(200, {"x": [1, 2, 3]}))
    c = client(tmp_path)
    c.get(f"{fake_server.url}/u")
    snapshot = {p: p.read_bytes() for p in (tmp_path / "cache").rglob("*") if p.is_file()}
    c.get(f"{fake_server.url}/u", refresh=True)
    assert {p: p.read_bytes() for p in (tmp_path / "cache").rglob("*") if p.is_file()} == snapshot


def test_no_cache_dir_means_no_cache(fake_server, reply, tmp_path):
    fake_server.route("/n", reply(200, "x"))
    c = client(tmp_path, cache=False)
    c.get(f"{fake_server.url}/n")
    c.get(f"{fake_server.url}/n")
    assert len(fake_server.hits("/n")) == 2


def test_requests_identify_the_client(fake_server, reply, tmp_path):
    fake_server.route("/ua", reply(200, "x"))
    client(tmp_path).get(f"{fake_server.url}/ua")
    assert fake_server.hits("/ua")[0].headers["User-Agent"] == DEFAULT_USER_AGENT
