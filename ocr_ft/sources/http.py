"""The HTTP layer shared by the API sources (OpenDART, FSS FISIS, Korean Wikipedia).

One :class:`HttpClient` per API gives:

* timeouts on every request (connect and read);
* bounded retries with exponential backoff (tenacity) on timeouts, connection errors (resets included),
  HTTP 5xx / 429 / 408, and on any response that the caller's ``check`` flags as worth another try
  (an API-level rate limit, a truncated ZIP). ``backoff_base`` is configurable so tests run in
  milliseconds; a numeric ``Retry-After`` header is honoured up to ``backoff_max`` (except with
  ``backoff_base=0``, which means never wait);
* a clear final :class:`HttpError` naming the request (method and URL with every secret parameter shown
  as ``***``) and the last failure. Secrets never appear in messages, in exception chains, or in the log
  records of this module and of urllib3 (a logging filter redacts registered secret values);
* a raw-response disk cache keyed by method + URL + parameters *without* the secret parameters, written
  atomically and only after ``check`` accepted the response. A resumed run therefore does not refetch
  what it already has, and an unchanged remote yields byte-identical bodies. ``refresh=True`` skips the
  cache read (e.g. a listing that grows over time) but still writes the new body.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping
from urllib.parse import quote, quote_plus, urlsplit

import requests
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt

from ..storage import atomic_write_bytes, atomic_write_json, sha256_json

log = logging.getLogger(__name__)

DEFAULT_USER_AGENT = "ocr-ft/0.1 (table-recognition training data collection; python-requests)"
REDACTED = "***"

# --------------------------------------------------------------------------------------------------
# Secret redaction (messages and log records)
# --------------------------------------------------------------------------------------------------

_SECRETS: set[str] = set()
_SECRETS_LOCK = threading.Lock()


def register_secret(value: str | None) -> None:
    """Remember ``value`` so that :func:`redact` and the log filter replace it with ``***`` everywhere (also
    in its URL-encoded form, as urllib3 logs it)."""
    if value and len(value) >= 4:  # very short values would redact ordinary text
        with _SECRETS_LOCK:
            _SECRETS.update({value, quote_plus(value), quote(value, safe="")})
        _install_log_filter()


def redact(text: str, extra: Iterable[str] = ()) -> str:
    """``text`` with every registered secret (and every value in ``extra``) replaced by ``***``."""
    with _SECRETS_LOCK:
        secrets = set(_SECRETS)
    secrets.update(s for s in extra if s)
    for s in sorted(secrets, key=len, reverse=True):
        text = text.replace(s, REDACTED)
    return text


class _RedactingFilter(logging.Filter):
    """Rewrites a record's message with secrets redacted (urllib3 logs full URLs, query string included)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken record is not ours to fix
            return True
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, ()
        return True


_FILTER = _RedactingFilter()
_FILTERED_LOGGERS = ("urllib3.connectionpool", "urllib3.util.retry", "requests", __name__)


def _install_log_filter() -> None:
    for name in _FILTERED_LOGGERS:
        lg = logging.getLogger(name)
        if _FILTER not in lg.filters:
            lg.addFilter(_FILTER)


# --------------------------------------------------------------------------------------------------
# Errors and responses
# --------------------------------------------------------------------------------------------------


class HttpError(RuntimeError):
    """A request failed for good. The message names the request (secrets redacted) and the last failure.

    ``code`` is a short machine code of the last failure: ``"timeout"``, ``"connection"``, ``"http_503"``,
    or the code a ``check`` gave with :class:`RetryableResponse` (e.g. DART's ``"020"``).
    """

    def __init__(self, message: str, *, request: str, code: str, status: int | None = None, attempts: int = 1):
        super().__init__(redact(message))  # central: a reason phrase or body that echoes a key never shows it
        self.request = redact(request)
        self.code = code
        self.status = status
        self.attempts = attempts


def json_or_retry(resp: "Response") -> Any:
    """The JSON body of ``resp``. A body that is not JSON (a gateway's HTML error page, a cut-off answer) is a
    transient failure worth another attempt: :class:`RetryableResponse` with code ``bad_json``."""
    try:
        return resp.json()
    except (ValueError, UnicodeDecodeError):
        raise RetryableResponse(f"answer is not JSON ({resp.content[:60]!r})", code="bad_json") from None


def api_key_or_fail(api_key: str | None, error: type[Exception], service: str, env_var: str) -> str:
    """``api_key`` stripped and registered for redaction; ``error`` naming ``env_var`` when it is empty."""
    if not api_key or not api_key.strip():
        raise error(f"no {service} API key: set the {env_var} environment variable")
    key = api_key.strip()
    register_secret(key)
    return key


class ApiError(RuntimeError):
    """A remote API answered with an error of its own: ``code`` (its status or error code) and
    ``api_message`` (the message it sent). The message never contains the API key."""

    def __init__(self, message: str, code: str = "", api_message: str = ""):
        super().__init__(redact(message))  # central: an API message that echoes the key never shows it
        self.code = redact(str(code))
        self.api_message = redact(str(api_message))


class RetryableResponse(Exception):
    """Raised by a response ``check`` when the response is a transient failure worth another attempt."""

    def __init__(self, message: str, code: str = "retryable", retry_after: float | None = None):
        super().__init__(redact(message))
        self.code = code
        self.retry_after = retry_after


class _Transient(Exception):
    def __init__(self, message: str, code: str, status: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.code = code
        self.status = status
        self.retry_after = retry_after


@dataclass(frozen=True)
class Response:
    """A response body with what is needed to use it; ``request`` is the redacted request description."""

    status: int
    content: bytes
    content_type: str
    request: str
    from_cache: bool = False

    def json(self) -> Any:
        return json.loads(self.content.decode("utf-8-sig"))

    def text(self, encoding: str = "utf-8") -> str:
        return self.content.decode(encoding, errors="replace")


@dataclass
class RetryPolicy:
    """``max_attempts`` tries in all; the wait before try n+1 is ``backoff_base * 2**(n-1)`` seconds, at most
    ``backoff_max``."""

    max_attempts: int = 5
    backoff_base: float = 1.0
    backoff_max: float = 60.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.backoff_base < 0 or self.backoff_max < 0:
            raise ValueError("backoff_base and backoff_max must not be negative")


@dataclass
class HttpStats:
    requests: int = 0  # HTTP requests actually sent (retries included)
    cache_hits: int = 0
    retries: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"http_requests": self.requests, "cache_hits": self.cache_hits, "http_retries": self.retries}

    def since(self, start: dict[str, int]) -> dict[str, int]:
        """The counts added since ``start`` (an earlier :meth:`as_dict`): one collect's share of a shared client."""
        return {k: v - start.get(k, 0) for k, v in self.as_dict().items()}


# --------------------------------------------------------------------------------------------------
# The client
# --------------------------------------------------------------------------------------------------

_RETRY_STATUSES = {408, 429}


def _retry_after_seconds(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


@dataclass
class HttpClient:
    """A ``requests`` session with timeouts, bounded retries, secret redaction and a disk cache.

    ``secret_params`` are query parameter names whose values are secrets (``crtfc_key``, ``auth``): they are
    left out of the cache key and shown as ``***`` in every description of a request. ``cache_dir=None``
    disables the cache. ``min_interval`` (seconds) spaces consecutive network requests, to be polite to
    the remote and to stay under its rate limit.
    """

    cache_dir: str | Path | None = None
    timeout: tuple[float, float] = (10.0, 60.0)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    secret_params: tuple[str, ...] = ()
    headers: Mapping[str, str] = field(default_factory=dict)
    min_interval: float = 0.0
    session: requests.Session | None = None

    def __post_init__(self) -> None:
        self.cache_dir = Path(self.cache_dir) if self.cache_dir is not None else None
        if self.session is None:
            self.session = requests.Session()
            self.session.headers["User-Agent"] = DEFAULT_USER_AGENT
        self.session.headers.update(self.headers)
        self.stats = HttpStats()
        self._last_request = 0.0
        self._lock = threading.Lock()
        _install_log_filter()

    # ---- naming and keys ---------------------------------------------------------------------

    def _secret_values(self, params: Mapping[str, Any] | None) -> list[str]:
        return [str(v) for k, v in (params or {}).items() if k in self.secret_params and v]

    def describe(self, method: str, url: str, params: Mapping[str, Any] | None = None) -> str:
        """``METHOD url?query`` with secret parameter values replaced by ``***``."""
        shown = [f"{k}={REDACTED if k in self.secret_params else v}"
                 for k, v in (params or {}).items() if v is not None]
        return f"{method.upper()} {url}{'?' + '&'.join(shown) if shown else ''}"

    def cache_key(self, method: str, url: str, params: Mapping[str, Any] | None = None) -> str:
        """SHA-256 of method, URL and the non-secret parameters (sorted): the same request, the same key."""
        public = sorted((str(k), str(v)) for k, v in (params or {}).items()
                        if v is not None and k not in self.secret_params)
        return sha256_json({"method": method.upper(), "url": url, "params": public})

    # ---- cache -------------------------------------------------------------------------------

    def _cache_paths(self, key: str) -> tuple[Path, Path]:
        assert self.cache_dir is not None
        base = self.cache_dir / key[:2]
        return base / f"{key}.body", base / f"{key}.meta.json"

    def _cache_read(self, key: str, request: str) -> Response | None:
        if self.cache_dir is None:
            return None
        body_path, meta_path = self._cache_paths(key)
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            body = body_path.read_bytes()
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        if meta.get("size") != len(body):  # a body from an older write that the meta does not describe
            return None
        return Response(
            status=int(meta.get("status", 200)),
            content=body,
            content_type=meta.get("content_type", ""),
            request=request,
            from_cache=True,
        )

    def _cache_write(self, key: str, resp: Response) -> None:
        if self.cache_dir is None:
            return
        body_path, meta_path = self._cache_paths(key)
        atomic_write_bytes(body_path, resp.content)
        # The meta is written last: a reader that finds it finds a complete body. No timestamps, so an
        # unchanged remote gives identical cache files.
        atomic_write_json(
            meta_path,
            {"request": resp.request, "status": resp.status, "content_type": resp.content_type,
             "size": len(resp.content)},
        )

    def is_cached(self, url: str, params: Mapping[str, Any] | None = None, method: str = "GET") -> bool:
        if self.cache_dir is None:
            return False
        body_path, meta_path = self._cache_paths(self.cache_key(method, url, params))
        return body_path.exists() and meta_path.exists()

    # ---- requests ----------------------------------------------------------------------------

    def _throttle(self) -> None:
        if self.min_interval <= 0:
            return
        with self._lock:
            wait = self._last_request + self.min_interval - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            self._last_request = time.monotonic()

    def _wait(self, state: RetryCallState) -> float:
        pol = self.retry
        wait = min(pol.backoff_base * (2 ** (state.attempt_number - 1)), pol.backoff_max)
        exc = state.outcome.exception() if state.outcome else None
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None and pol.backoff_base > 0:
            wait = min(max(wait, retry_after), pol.backoff_max)
        return wait

    def _before_sleep(self, request: str) -> Callable[[RetryCallState], None]:
        def hook(state: RetryCallState) -> None:
            self.stats.retries += 1
            exc = state.outcome.exception() if state.outcome else None
            log.warning(
                "%s: attempt %d of %d failed (%s); retrying in %.2fs",
                request,
                state.attempt_number,
                self.retry.max_attempts,
                exc,
                state.next_action.sleep if state.next_action else 0.0,
            )

        return hook

    def _attempt(
        self,
        method: str,
        url: str,
        params: Mapping[str, Any] | None,
        request: str,
        check: Callable[[Response], None] | None,
    ) -> Response:
        secrets = self._secret_values(params)
        self._throttle()
        self.stats.requests += 1
        try:
            # never follow a redirect with a keyed URL: the key would go to wherever Location points
            r = self.session.request(method, url, params=params, timeout=self.timeout, allow_redirects=not secrets)
        except requests.Timeout as exc:
            raise _Transient(f"timed out ({type(exc).__name__})", "timeout") from None
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
            raise _Transient(f"connection failed: {redact(str(exc), secrets)}", "connection") from None
        except requests.RequestException as exc:
            raise HttpError(
                f"{request} failed: {redact(str(exc), secrets)}", request=request, code="request", attempts=1
            ) from None
        if 300 <= r.status_code < 400:
            location = urlsplit(r.headers.get("Location", "") or "")
            raise HttpError(
                f"{request} failed: HTTP {r.status_code} redirect to host {location.netloc or '?'} not followed "
                "(a request carrying an API key is never redirected)",
                request=request, code="redirect", status=r.status_code,
            )
        if r.status_code >= 500 or r.status_code in _RETRY_STATUSES:
            raise _Transient(
                f"HTTP {r.status_code} {r.reason or ''}".strip(),
                f"http_{r.status_code}",
                status=r.status_code,
                retry_after=_retry_after_seconds(r.headers.get("Retry-After")),
            )
        if r.status_code >= 400:
            raise HttpError(
                f"{request} failed: HTTP {r.status_code} {r.reason or ''}".strip(),
                request=request,
                code=f"http_{r.status_code}",
                status=r.status_code,
            )
        resp = Response(
            status=r.status_code, content=r.content, content_type=r.headers.get("Content-Type", ""), request=request
        )
        if check is not None:
            try:
                check(resp)
            except ApiError as exc:  # the API's own error: without the (unredacted) context it was raised in
                exc.__context__ = None
                exc.__cause__ = None
                exc.__suppress_context__ = True
                raise exc
            except RetryableResponse as exc:
                raise _Transient(redact(str(exc), secrets), exc.code, status=r.status_code,
                                 retry_after=exc.retry_after) from None
        return resp

    def get(
        self,
        url: str,
        params: Mapping[str, Any] | None = None,
        *,
        check: Callable[[Response], None] | None = None,
        cache: bool = True,
        refresh: bool = False,
    ) -> Response:
        """GET ``url`` with ``params``; served from the cache when present (unless ``refresh``).

        ``check(response)`` validates a 2xx response: it raises :class:`RetryableResponse` to retry, any
        other exception to fail at once (propagated unchanged); only a response it accepts is cached.
        Raises :class:`HttpError` when the attempts are spent or the server answers 4xx.
        """
        method = "GET"
        params = {k: v for k, v in (params or {}).items() if v is not None}
        for secret in self._secret_values(params):
            register_secret(secret)
        request = self.describe(method, url, params)
        key = self.cache_key(method, url, params)
        hit = self._cache_read(key, request) if cache and not refresh else None
        if hit is not None:  # ``check`` accepted it before it was written
            self.stats.cache_hits += 1
            return hit
        retrying = Retrying(
            stop=stop_after_attempt(self.retry.max_attempts),
            wait=self._wait,
            retry=retry_if_exception_type(_Transient),
            before_sleep=self._before_sleep(request),
            reraise=True,
        )
        try:
            resp = retrying(self._attempt, method, url, params, request, check)
        except _Transient as exc:
            raise HttpError(
                f"{request} failed after {self.retry.max_attempts} attempt(s): {exc}",
                request=request,
                code=exc.code,
                status=exc.status,
                attempts=self.retry.max_attempts,
            ) from None
        if cache:
            self._cache_write(key, resp)
        return resp
