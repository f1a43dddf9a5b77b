"""The ``dart`` source: tables from OpenDART filings (disclosure search, then each filing's documents).

OpenDART (https://opendart.fss.or.kr) endpoints used:

* ``list.json`` -- disclosure search: ``bgn_de``/``end_de`` (YYYYMMDD), ``corp_code``, ``pblntf_ty`` (one
  letter, e.g. ``A`` periodic reports), ``pblntf_detail_ty`` (e.g. ``A001`` annual, ``A002`` half-year,
  ``A003`` quarterly report), ``last_reprt_at`` (``Y``: final versions only), ``page_no``, ``page_count``
  (at most 100). The answer carries ``status``/``message``/``page_no``/``total_count``/``total_page`` and a
  ``list`` of filings (``rcept_no``, ``corp_name``, ``corp_code``, ``report_nm``, ``rcept_dt``...).
* ``document.xml`` -- ``rcept_no``: a ZIP of the filing's XML documents, or an XML/JSON error with a status.

Status codes: ``000`` ok; ``013`` no data (an empty result, not an error); ``020`` request limit exceeded
(backed off and retried, bounded, then :class:`DartRateLimitError`); ``010``/``011`` unregistered or
unusable key -> :class:`DartAuthError` naming ``DART_API_KEY``; anything else -> :class:`DartError` with the
status and message. The key never appears in messages or logs (see :mod:`ocr_ft.sources.http`).

:func:`collect_dart` is what the Dagster layer calls: one filing month (``"YYYY-MM"``) -> a
:class:`SourceResult` of rendered table pairs and rejects with reasons. Partition keys come from
:func:`dart_months`.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import re
import time
import zipfile
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterable, Sequence

import lxml.etree as etree

from ..dataset.records import Reject, SourceResult
from ..storage import atomic_write_bytes
from .dart_xml import (
    DART_CSS, DartXmlError, ExtractedTable, extract_tables, invalid_byte_count, styled_table_html,
)
from .scraped_common import PendingTable, reject_reasons, render_pending, split_pending
from .http import (
    ApiError, HttpClient, HttpError, Response, RetryableResponse, RetryPolicy, api_key_or_fail, json_or_retry,
)

log = logging.getLogger(__name__)

SOURCE = "dart"
DART_API_URL = "https://opendart.fss.or.kr/api"
DART_VIEWER_URL = "https://dart.fss.or.kr/dsaf001/main.do?rcpNo={rcept_no}"
API_KEY_ENV = "DART_API_KEY"
KEY_PARAM = "crtfc_key"
MAX_PAGE_COUNT = 100
DEFAULT_REPORT_TYPES = ("A001", "A002", "A003")  # annual, half-year and quarterly reports
MAX_ZIP_BYTES = 512 * 1024 * 1024  # uncompressed total; a larger archive is refused as a likely zip bomb

AUTH_STATUSES = {"010", "011", "012", "901"}
STATUS_NO_DATA = "013"
STATUS_NO_FILE = "014"
STATUS_RATE_LIMIT = "020"
STATUS_IP = "012"  # the caller's IP address is not on the key's allow-list
STATUS_MAINTENANCE = "800"  # the service is down for maintenance (hours)
RETRYABLE_STATUSES: set[str] = set()  # 020 is a daily quota and 800 lasts hours: neither is worth a retry
MAX_MEMBER_BYTES = 256 * 1024 * 1024  # one member, uncompressed
MAX_MEMBER_RATIO = 200  # uncompressed / compressed above this (for members over 1 MB) is a zip bomb
QUOTA_MESSAGE = "OpenDART status 020: daily quota spent; rerun after 00:00 KST"


class DartError(ApiError):
    """OpenDART answered with an error status (``status``, ``api_message``), or a document is unusable."""

    @property
    def status(self) -> str:
        """OpenDART's status code (``code`` under its own name)."""
        return self.code


class DartAuthError(DartError):
    """The API key is missing, unregistered or unusable. Fix the ``DART_API_KEY`` environment variable."""


class DartRateLimitError(DartError):
    """Status 020: the key's daily request quota is spent. The partition stops at once (no retries)."""


class DartMaintenanceError(DartError):
    """Status 800: OpenDART is down for maintenance."""


class DartDocumentError(DartError):
    """A filing's document archive is missing, truncated, corrupt or unsafe. ``rcept_no`` names it."""

    def __init__(self, message: str, rcept_no: str, status: str = "", reason: str = "document_unavailable"):
        super().__init__(message, status)
        self.rcept_no = rcept_no
        self.reason = reason


@dataclass(frozen=True)
class Filing:
    """One disclosure from ``list.json``."""

    rcept_no: str
    corp_code: str
    corp_name: str
    report_nm: str
    rcept_dt: str
    corp_cls: str = ""
    stock_code: str = ""
    flr_nm: str = ""
    rm: str = ""

    @classmethod
    def from_api(cls, row: dict[str, Any]) -> "Filing":
        return cls(**{k: str(row.get(k) or "").strip() for k in cls.__dataclass_fields__})

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


# --------------------------------------------------------------------------------------------------
# ZIP handling (zip-slip safe)
# --------------------------------------------------------------------------------------------------


def member_name(name: str) -> str:
    """A ZIP member's name as used here: one leading ``/`` of 2015-16 archives stripped, ``\\`` as ``/``."""
    posix = name.replace("\\", "/")
    return posix[1:] if posix.startswith("/") and not posix.startswith("//") else posix


def _unsafe_member(name: str) -> bool:
    posix = member_name(name)
    return (
        posix.startswith("/")
        or bool(re.match(r"^[A-Za-z]:", posix))
        or any(part == ".." for part in PurePosixPath(posix).parts)
    )


def _document_order(rcept_no: str):
    def key(item: tuple[str, bytes]) -> tuple[int, str]:
        stem = PurePosixPath(item[0]).stem.strip("_")
        return (0 if stem == rcept_no else 1, item[0])
    return key


_SUPPORTED_COMPRESSION = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}


def read_zip_documents(data: bytes, rcept_no: str, *, max_bytes: int = MAX_ZIP_BYTES,
                       max_member_bytes: int = MAX_MEMBER_BYTES, max_ratio: float = MAX_MEMBER_RATIO
                       ) -> list[tuple[str, bytes]]:
    """The members of a filing's ZIP as ``(name, bytes)``: the main document (``{rcept_no}.xml`` or
    ``_{rcept_no}.xml``) first, then the others by name; directories skipped; a leading ``/`` stripped.

    Raises :class:`DartDocumentError` naming ``rcept_no`` and a reason: ``zip_corrupt`` (truncated, bad
    central directory, CRC mismatch), ``zip_unsafe`` (``..``, a drive letter or an absolute path after the
    leading ``/``), ``zip_too_large`` (over ``max_bytes`` in all, ``max_member_bytes`` for one member, or a
    compression ratio over ``max_ratio``: checked from the headers before anything is decompressed, and the
    read itself is bounded), ``zip_unreadable`` (encrypted member, unsupported compression), ``zip_no_xml``
    (no member, or no ``.xml`` member; the count of members is in the message).
    """
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, EOFError, ValueError, NotImplementedError, RuntimeError) as exc:
        raise DartDocumentError(
            f"document ZIP of rcept_no {rcept_no} is truncated or corrupt ({len(data)} bytes): {exc}",
            rcept_no, reason="zip_corrupt",
        ) from None
    members: list[tuple[str, bytes]] = []
    with zf:
        infos = [i for i in zf.infolist() if not i.is_dir()]
        for info in infos:
            if _unsafe_member(info.filename):
                raise DartDocumentError(
                    f"document ZIP of rcept_no {rcept_no} has an unsafe entry {info.filename!r} "
                    "(absolute path, drive letter or '..'): refused",
                    rcept_no, reason="zip_unsafe",
                )
            if info.flag_bits & 0x1:
                raise DartDocumentError(
                    f"document ZIP of rcept_no {rcept_no}: member {info.filename!r} is encrypted: refused",
                    rcept_no, reason="zip_unreadable",
                )
            if info.compress_type not in _SUPPORTED_COMPRESSION:
                raise DartDocumentError(
                    f"document ZIP of rcept_no {rcept_no}: member {info.filename!r} uses unsupported "
                    f"compression method {info.compress_type}: refused",
                    rcept_no, reason="zip_unreadable",
                )
            ratio = info.file_size / max(info.compress_size, 1)
            if info.file_size > max_member_bytes or (info.file_size > 1024 * 1024 and ratio > max_ratio):
                raise DartDocumentError(
                    f"document ZIP of rcept_no {rcept_no}: member {info.filename!r} would unpack to "
                    f"{info.file_size} bytes from {info.compress_size} (ratio {ratio:.0f}; limits "
                    f"{max_member_bytes} bytes, ratio {max_ratio}): refused as a likely zip bomb",
                    rcept_no, reason="zip_too_large",
                )
        total = sum(i.file_size for i in infos)
        if total > max_bytes:
            raise DartDocumentError(
                f"document ZIP of rcept_no {rcept_no} would unpack to {total} bytes (limit {max_bytes}): refused",
                rcept_no, reason="zip_too_large",
            )
        xml_count = sum(1 for i in infos if i.filename.lower().endswith(".xml"))
        if not xml_count:
            raise DartDocumentError(
                f"document ZIP of rcept_no {rcept_no} holds no XML document ({len(infos)} member(s))",
                rcept_no, reason="zip_no_xml",
            )
        for info in infos:
            try:
                with zf.open(info) as fh:
                    payload = fh.read(info.file_size + 1)  # bounded: a lying header cannot make it read more
            except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as exc:
                raise DartDocumentError(
                    f"document ZIP of rcept_no {rcept_no} is truncated or corrupt at {info.filename!r}: {exc}",
                    rcept_no, reason="zip_corrupt",
                ) from None
            except (RuntimeError, NotImplementedError) as exc:
                raise DartDocumentError(
                    f"document ZIP of rcept_no {rcept_no}: member {info.filename!r} cannot be read "
                    f"({type(exc).__name__}: {exc})",
                    rcept_no, reason="zip_unreadable",
                ) from None
            if len(payload) > info.file_size:
                raise DartDocumentError(
                    f"document ZIP of rcept_no {rcept_no}: member {info.filename!r} is larger than its header "
                    "says: refused", rcept_no, reason="zip_corrupt",
                )
            members.append((member_name(info.filename), payload))
    return sorted(members, key=_document_order(rcept_no))


def extract_zip(data: bytes, dest: str | Path, rcept_no: str) -> list[Path]:
    """Write the filing ZIP's members under ``dest`` (checked by :func:`read_zip_documents` first, and each
    resolved path checked to lie inside ``dest``). Returns the written paths."""
    dest = Path(dest).resolve()
    written = []
    for name, payload in read_zip_documents(data, rcept_no):
        target = (dest / name.replace("\\", "/")).resolve()
        if dest not in target.parents:
            raise DartDocumentError(f"document ZIP of rcept_no {rcept_no}: entry {name!r} escapes {dest}", rcept_no,
                                    reason="zip_unsafe")
        atomic_write_bytes(target, payload)
        written.append(target)
    return written


# --------------------------------------------------------------------------------------------------
# The client
# --------------------------------------------------------------------------------------------------


def _status_error(status: str, message: str, request: str) -> DartError:
    if status == STATUS_RATE_LIMIT:
        return DartRateLimitError(f"{QUOTA_MESSAGE} on {request} ({message})", status, message)
    if status == STATUS_IP:
        return DartAuthError(
            f"OpenDART refused this machine's IP address (status 012: {message}) on {request}; add the IP to "
            "the key's allow-list at opendart.fss.or.kr (the key itself was accepted)",
            status, message,
        )
    if status == STATUS_MAINTENANCE:
        return DartMaintenanceError(
            f"OpenDART is down for maintenance (status 800: {message}) on {request}; rerun later", status, message
        )
    if status in AUTH_STATUSES:
        return DartAuthError(
            f"OpenDART rejected the API key (status {status}: {message}) on {request}; "
            f"check the {API_KEY_ENV} environment variable",
            status, message,
        )
    return DartError(f"OpenDART error status {status} ({message}) on {request}", status, message)


def _error_body(content: bytes) -> tuple[str, str] | None:
    """``(status, message)`` of an OpenDART error body (JSON or XML), or None if it is not one."""
    head = content.lstrip()[:1]
    if head == b"{":
        try:
            obj = json.loads(content.decode("utf-8-sig"))
        except (ValueError, UnicodeDecodeError):
            return None
        if isinstance(obj, dict) and "status" in obj:
            return str(obj.get("status")), str(obj.get("message") or "")
        return None
    if head == b"<":
        try:
            root = etree.fromstring(content, etree.XMLParser(recover=True, resolve_entities=False, no_network=True))
        except etree.XMLSyntaxError:
            return None
        if root is None:
            return None
        status = root.findtext(".//status")
        if status is not None:
            return status.strip(), (root.findtext(".//message") or "").strip()
    return None


class DartClient:
    """OpenDART client: disclosure search with paging, and filing documents as ZIPs.

    ``api_key`` comes from the caller (the Dagster resource reads ``DART_API_KEY``). ``cache_dir`` keeps raw
    responses (keyed without the key) so a resumed run does not refetch. ``max_attempts``/``backoff_base``/
    ``backoff_max`` bound the retries on timeouts, 5xx, connection resets, status 020 and truncated ZIPs;
    ``min_interval`` spaces requests (OpenDART blocks clients that exceed about 1,000 requests a minute).
    """

    def __init__(
        self,
        api_key: str,
        *,
        cache_dir: str | Path | None = None,
        base_url: str = DART_API_URL,
        timeout: tuple[float, float] = (10.0, 120.0),
        max_attempts: int = 5,
        backoff_base: float = 2.0,
        backoff_max: float = 60.0,
        min_interval: float = 0.1,
        http: HttpClient | None = None,
        maintenance_wait: float = 5.0,
    ):
        self.maintenance_wait = maintenance_wait
        self._key = api_key_or_fail(api_key, DartAuthError, "OpenDART", API_KEY_ENV)
        self.base_url = base_url.rstrip("/")
        self.http = http or HttpClient(
            cache_dir=cache_dir,
            timeout=timeout,
            retry=RetryPolicy(max_attempts=max_attempts, backoff_base=backoff_base, backoff_max=backoff_max),
            secret_params=(KEY_PARAM,),
            min_interval=min_interval,
        )
        if KEY_PARAM not in self.http.secret_params:
            self.http.secret_params = (*self.http.secret_params, KEY_PARAM)

    def __repr__(self) -> str:
        return f"DartClient(base_url={self.base_url!r}, api_key=***)"

    # ---- list.json -------------------------------------------------------------------------------

    def _check_json(self, resp: Response) -> None:
        obj = json_or_retry(resp)
        status = str(obj.get("status", "")) if isinstance(obj, dict) else ""
        if status in ("000", STATUS_NO_DATA):
            return
        message = str(obj.get("message", "")) if isinstance(obj, dict) else ""
        if status in RETRYABLE_STATUSES:
            raise RetryableResponse(f"OpenDART status {status} ({message})", code=status)
        if status == STATUS_MAINTENANCE:
            time.sleep(self.maintenance_wait)  # a short wait, then fail: maintenance lasts hours
        raise _status_error(status or "?", message or "no status in the answer", resp.request)

    def _get(self, endpoint: str, params: dict[str, Any], check: Callable[[Response], None], refresh: bool) -> Response:
        url = f"{self.base_url}/{endpoint}"
        try:
            return self.http.get(url, {KEY_PARAM: self._key, **params}, check=check, refresh=refresh)
        except HttpError as exc:
            if exc.code == STATUS_RATE_LIMIT:
                raise DartRateLimitError(
                    f"OpenDART request limit exceeded (status 020) on every one of {exc.attempts} attempts: {exc}",
                    STATUS_RATE_LIMIT,
                ) from None
            raise

    def list_page(
        self,
        bgn_de: str,
        end_de: str,
        *,
        page_no: int = 1,
        page_count: int = MAX_PAGE_COUNT,
        corp_code: str | None = None,
        pblntf_ty: str | None = None,
        pblntf_detail_ty: str | None = None,
        last_reprt_at: str | None = None,
        refresh: bool = False,
    ) -> dict[str, Any]:
        """One page of ``list.json`` as the API's JSON object (status 013 gives an empty ``list``)."""
        params = {
            "bgn_de": bgn_de, "end_de": end_de, "corp_code": corp_code, "pblntf_ty": pblntf_ty,
            "pblntf_detail_ty": pblntf_detail_ty, "last_reprt_at": last_reprt_at,
            "page_no": str(page_no), "page_count": str(min(max(page_count, 1), MAX_PAGE_COUNT)),
        }
        obj = self._get("list.json", params, self._check_json, refresh).json()
        if str(obj.get("status")) == STATUS_NO_DATA:
            return {**obj, "list": [], "total_count": 0, "total_page": 0}
        return obj

    def list_filings(
        self,
        bgn_de: str,
        end_de: str,
        *,
        corp_code: str | None = None,
        pblntf_ty: str | None = None,
        pblntf_detail_ty: str | None = None,
        last_reprt_at: str | None = None,
        page_count: int = MAX_PAGE_COUNT,
        max_pages: int | None = None,
        refresh: bool = False,
    ) -> list[Filing]:
        """Every filing of the search, following ``total_page`` (at most ``max_pages`` pages)."""
        filings: list[Filing] = []
        page = 1
        while True:
            obj = self.list_page(
                bgn_de, end_de, page_no=page, page_count=page_count, corp_code=corp_code, pblntf_ty=pblntf_ty,
                pblntf_detail_ty=pblntf_detail_ty, last_reprt_at=last_reprt_at, refresh=refresh,
            )
            filings += [Filing.from_api(row) for row in obj.get("list") or []]
            total_page = int(obj.get("total_page") or 0)
            if page >= total_page or (max_pages is not None and page >= max_pages):
                return filings
            page += 1

    # ---- document.xml ----------------------------------------------------------------------------

    def _check_document(self, rcept_no: str) -> Callable[[Response], None]:
        def check(resp: Response) -> None:
            if resp.content[:2] == b"PK":
                try:
                    read_zip_documents(resp.content, rcept_no)
                except DartDocumentError as exc:
                    if exc.reason == "zip_corrupt":
                        raise RetryableResponse(str(exc), code="zip_corrupt") from None
                    # refused (unsafe, too large, encrypted, no XML): a lasting answer, cached so that a
                    # rerun does not download it again; documents() refuses it again from the cache
                return
            err = _error_body(resp.content)
            if err is None:
                raise RetryableResponse(
                    f"document.xml of rcept_no {rcept_no} is neither a ZIP nor an OpenDART error "
                    f"({len(resp.content)} bytes starting {resp.content[:16]!r})",
                    code="zip_corrupt",
                )
            status, message = err
            if status in RETRYABLE_STATUSES:
                raise RetryableResponse(f"OpenDART status {status} ({message})", code=status)
            if status == STATUS_MAINTENANCE:
                time.sleep(self.maintenance_wait)
            if status not in (STATUS_NO_FILE, STATUS_NO_DATA):
                raise _status_error(status, message, resp.request)
            # "no file" is a lasting answer about this filing: accepted, so it is cached like a document.

        return check

    def document_zip(self, rcept_no: str, *, refresh: bool = False) -> bytes:
        """The filing's ``document.xml`` ZIP, verified complete (cached once verified).

        Raises :class:`DartDocumentError` naming ``rcept_no`` (no file: status 013/014, cached like a
        document so that a resumed run does not ask again; archive still truncated or corrupt after the
        retries; unsafe entry), :class:`DartAuthError`, :class:`DartRateLimitError`, or :class:`HttpError`
        (network failure after the retries).
        """
        try:
            content = self._get("document.xml", {"rcept_no": rcept_no}, self._check_document(rcept_no), refresh).content
        except HttpError as exc:
            if exc.code == "zip_corrupt":
                raise DartDocumentError(
                    f"document ZIP of rcept_no {rcept_no} still truncated or corrupt after {exc.attempts} "
                    f"attempt(s): {exc}",
                    rcept_no, reason="zip_corrupt",
                ) from None
            raise
        if content[:2] != b"PK":
            status, message = _error_body(content) or ("?", "not a ZIP")
            raise DartDocumentError(
                f"OpenDART has no document file for rcept_no {rcept_no} (status {status}: {message})",
                rcept_no, status, reason="document_unavailable",
            )
        return content

    def documents(self, rcept_no: str, *, refresh: bool = False) -> list[tuple[str, bytes]]:
        """The filing's XML documents as ``(member name, bytes)`` (main document first: it sorts first)."""
        return read_zip_documents(self.document_zip(rcept_no, refresh=refresh), rcept_no)

    def download_documents(self, rcept_no: str, dest: str | Path, *, refresh: bool = False) -> list[Path]:
        """Unpack the filing's documents under ``dest`` (zip-slip safe); return the written paths."""
        return extract_zip(self.document_zip(rcept_no, refresh=refresh), dest, rcept_no)


# --------------------------------------------------------------------------------------------------
# Partitions
# --------------------------------------------------------------------------------------------------

_MONTH = re.compile(r"^(\d{4})-(\d{2})$")


def parse_month(month: str) -> tuple[int, int]:
    m = _MONTH.match(month)
    if not m or not 1 <= int(m.group(2)) <= 12:
        raise ValueError(f"DART partition {month!r} is not a month of the form YYYY-MM")
    return int(m.group(1)), int(m.group(2))


def month_range(month: str) -> tuple[str, str]:
    """``"2024-02"`` -> ``("20240201", "20240229")``: the ``bgn_de``/``end_de`` of a filing month."""
    year, mon = parse_month(month)
    first = dt.date(year, mon, 1)
    nxt = dt.date(year + (mon == 12), mon % 12 + 1, 1)
    return first.strftime("%Y%m%d"), (nxt - dt.timedelta(days=1)).strftime("%Y%m%d")


def dart_months(start: str, end: str | None = None) -> list[str]:
    """Partition keys ``"YYYY-MM"`` from ``start`` to ``end`` inclusive (``end`` default: this month)."""
    y, m = parse_month(start)
    today = dt.date.today()
    ey, em = parse_month(end) if end else (today.year, today.month)
    keys = []
    while (y, m) <= (ey, em):
        keys.append(f"{y:04d}-{m:02d}")
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return keys


# --------------------------------------------------------------------------------------------------
# Rendering pending tables into pairs (shared by the API sources)
# --------------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------------
# collect_dart
# --------------------------------------------------------------------------------------------------


def _type_params(report_type: str) -> dict[str, str]:
    """``"A"`` -> ``pblntf_ty``; ``"A001"`` -> ``pblntf_detail_ty``."""
    if re.fullmatch(r"[A-J]", report_type):
        return {"pblntf_ty": report_type}
    if re.fullmatch(r"[A-J]\d{3}", report_type):
        return {"pblntf_detail_ty": report_type}
    raise ValueError(f"report type {report_type!r} is neither a pblntf_ty (A-J) nor a pblntf_detail_ty (e.g. A001)")


def list_month_filings(
    client: DartClient,
    month: str,
    *,
    corp_codes: Iterable[str] | None = None,
    report_types: Sequence[str] | None = DEFAULT_REPORT_TYPES,
    final_only: bool = True,
    refresh: bool = False,
) -> list[Filing]:
    """Every filing of ``month`` matching the corp codes and report types, deduplicated, sorted by
    ``(rcept_dt, rcept_no)``. One search per (corp code, report type) pair."""
    bgn, end = month_range(month)
    corps = list(corp_codes) if corp_codes else [None]
    types = list(report_types) if report_types else [None]
    found: dict[str, Filing] = {}
    for corp in corps:
        for rtype in types:
            tparams = _type_params(rtype) if rtype else {}
            for f in client.list_filings(
                bgn, end, corp_code=corp, last_reprt_at="Y" if final_only else None, refresh=refresh, **tparams
            ):
                found.setdefault(f.rcept_no, f)
    return sorted(found.values(), key=lambda f: (f.rcept_dt, f.rcept_no))


def collect_dart(
    client: DartClient,
    month: str,
    renderer: Any,
    *,
    corp_codes: Iterable[str] | None = None,
    report_types: Sequence[str] | None = DEFAULT_REPORT_TYPES,
    final_only: bool = True,
    max_filings: int | None = None,
    max_tables_per_filing: int | None = None,
    selection: str = "financial_first",
    min_rows: int = 2,
    min_cols: int = 2,
    max_rows: int | None = 200,
    refresh_listing: bool = False,
    refresh_documents: bool = False,
    css: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> SourceResult:
    """One DART partition: the tables of the filings received in ``month`` (``"YYYY-MM"``), rendered.

    Knobs: ``corp_codes`` (None: every company), ``report_types`` (``pblntf_ty`` letters or
    ``pblntf_detail_ty`` codes; default annual/half-year/quarterly reports), ``final_only`` (only the final
    version of amended reports), ``max_filings`` (the first N filings by receipt date and number),
    ``max_tables_per_filing`` with ``selection`` (see :func:`select_tables`: ``financial_first``,
    ``document_order`` or ``all``), ``min_rows``/``min_cols`` (the 2x2
    rule), ``max_rows`` (longer tables are refused: they do not fit the image token budget),
    ``refresh_listing`` (re-ask the search even when cached: set it on scheduled rescrapes of a month still
    in progress), ``refresh_documents`` (re-download documents even when cached: a filing's documents do not
    change, and "no file" answers are cached too, so this is for repairing a cache), ``css`` (passed to the
    renderer), ``progress(done, total)`` (over filings, then over renders).

    Pairs are named ``dart_<rcept_no>_<NNNN>.png`` with NNNN the table's position among all top-level tables
    of the filing (documents in name order), so names are stable across runs. Rejects (stage ``load``):
    ``no_tables``, ``table_too_small``, ``table_empty``, ``table_too_large``, ``table_unreadable``,
    ``span_too_large``, ``table_too_deep``, ``document_parse_failed``, ``document_unavailable``,
    ``zip_corrupt``, ``zip_unsafe``, ``zip_too_large``, ``zip_unreadable``, ``zip_no_xml``, ``render_failed``.
    ``BORDER="0"`` layout tables are no reject: they are counted in ``stats["layout_table"]``. Authentication, rate-limit and network failures raise: the partition fails and a
    rerun resumes from the cache.
    """
    http_start = client.http.stats.as_dict()
    filings = list_month_filings(
        client, month, corp_codes=corp_codes, report_types=report_types, final_only=final_only, refresh=refresh_listing
    )
    listed = len(filings)
    if max_filings is not None:
        filings = filings[:max_filings]
    result = SourceResult()
    pending: list[PendingTable] = []
    tables_seen = capped = 0
    layout = [0]  # BORDER="0" layout tables seen (not pairs, not rejects)
    for n, filing in enumerate(filings, 1):
        before = len(pending)
        found, over = _collect_filing(
            client, filing, pending, result.rejects, min_rows=min_rows, min_cols=min_cols, max_rows=max_rows,
            max_tables=max_tables_per_filing, refresh=refresh_documents, layout=layout, selection=selection,
        )
        tables_seen += found
        capped += over
        log.debug("dart %s: %d tables kept", filing.rcept_no, len(pending) - before)
        if progress is not None:
            progress(n, len(filings))
    pairs, render_rejects = render_pending(SOURCE, pending, renderer, css=css, progress=progress)
    result.pairs += pairs
    result.rejects += render_rejects
    result.stats = {
        "month": month,
        "filings_listed": listed,
        "filings_processed": len(filings),
        "tables_found": tables_seen,
        "tables_kept": len(pending),
        "tables_over_cap": capped,
        "layout_table": layout[0],
        "pairs": len(result.pairs),
        "rejects": len(result.rejects),
        "reject_reasons": reject_reasons(result.rejects),
        **client.http.stats.since(http_start),
    }
    return result


_AMENDMENT = re.compile(r"^\s*\[(기재정정|첨부정정|첨부추가|변경등록)\]\s*")


def is_amendment(report_nm: str) -> bool:
    """``[기재정정]…``, ``[첨부정정]…``: an amended filing."""
    return bool(_AMENDMENT.match(report_nm or ""))


def find_original(client: "DartClient", filing: Filing, *, lookback_days: int = 365) -> Filing | None:
    """The original filing an amendment corrects: the same company's latest earlier filing whose report name
    is the amendment's without its ``[…정정]`` prefix (searched over ``lookback_days`` before it)."""
    base = _AMENDMENT.sub("", filing.report_nm).strip()
    try:
        end = dt.datetime.strptime(filing.rcept_dt, "%Y%m%d").date()
    except ValueError:
        return None
    begin = end - dt.timedelta(days=lookback_days)
    candidates = [
        f for f in client.list_filings(begin.strftime("%Y%m%d"), filing.rcept_dt, corp_code=filing.corp_code)
        if f.rcept_no < filing.rcept_no and not is_amendment(f.report_nm) and f.report_nm.strip() == base
    ]
    return max(candidates, key=lambda f: f.rcept_no, default=None)


SELECTION_POLICIES = ("financial_first", "document_order", "all")
_FINANCIAL = re.compile(r"재무|연결|별도|손익|포괄이익|현금흐름|자본변동|주석|FINANCIAL", re.IGNORECASE)
_SECTION_III = re.compile(r"^\s*(III|Ⅲ)\s*[.．]")


def is_financial(table: ExtractedTable) -> bool:
    """A table of the financial statements or their notes: under section III (재무에 관한 사항) or a
    section/title naming 재무제표, 연결/별도, 손익, 현금흐름, 자본변동 or 주석."""
    return bool(_SECTION_III.match(table.section_title or "")) or bool(
        _FINANCIAL.search(table.section_title or "") or _FINANCIAL.search(table.title or "")
    )


def select_tables(items: Sequence, *, policy: str = "financial_first", max_tables: int | None = None,
                  key: Callable[[Any], ExtractedTable] = lambda t: t) -> tuple[list, int]:
    """Which kept tables a filing contributes, in document order; returns ``(chosen, number left out)``.

    ``financial_first`` (default): the financial statements and their notes (:func:`is_financial`) first,
    then the rest, up to ``max_tables``; ``document_order``: the first ``max_tables``; ``all``: every one
    (the cap ignored). ``max_tables=None``: no cap."""
    if policy not in SELECTION_POLICIES:
        raise ValueError(f"unknown DART selection policy {policy!r}; choose one of {', '.join(SELECTION_POLICIES)}")
    items = list(items)
    if policy == "all" or max_tables is None or len(items) <= max_tables:
        return items, 0
    order = list(range(len(items)))
    if policy == "financial_first":
        order.sort(key=lambda i: (not is_financial(key(items[i])), i))
    picked = sorted(order[:max(max_tables, 0)])
    return [items[i] for i in picked], len(items) - len(picked)


def _collect_filing(
    client: DartClient,
    filing: Filing,
    pending: list[PendingTable],
    rejects: list[Reject],
    *,
    min_rows: int,
    min_cols: int,
    max_rows: int | None,
    max_tables: int | None,
    refresh: bool,
    layout: list[int] | None = None,
    selection: str = "financial_first",
) -> tuple[int, int]:
    """Fetch and parse one filing; append its kept tables to ``pending`` and its refusals to ``rejects``.
    Returns the number of top-level tables found and the number of good tables left out by ``max_tables``."""
    rcept_no = filing.rcept_no
    base_meta = {
        "rcept_no": rcept_no, "corp_code": filing.corp_code, "corp_name": filing.corp_name,
        "report_nm": filing.report_nm, "rcept_dt": filing.rcept_dt, "url": DART_VIEWER_URL.format(rcept_no=rcept_no),
    }
    try:
        members = client.documents(rcept_no, refresh=refresh)
    except DartDocumentError as exc:
        original = None
        if exc.status in (STATUS_NO_FILE, STATUS_NO_DATA) and is_amendment(filing.report_nm):
            original = find_original(client, filing)
        if original is None:
            rejects.append(Reject(SOURCE, f"dart_{rcept_no}.zip", "load", exc.reason, str(exc), extra=base_meta))
            return 0, 0
        try:
            members = client.documents(original.rcept_no, refresh=refresh)
        except DartDocumentError as exc2:
            rejects.append(Reject(SOURCE, f"dart_{rcept_no}.zip", "load", exc2.reason,
                                  f"{exc}; its original filing {original.rcept_no}: {exc2}", extra=base_meta))
            return 0, 0
        base_meta = {**base_meta, "document_from": original.rcept_no, "amended_fallback": True,
                     "original_report_nm": original.report_nm}
    found, over, n_layout = documents_pending(
        members, rcept_no, base_meta, pending, rejects, min_rows=min_rows, min_cols=min_cols, max_rows=max_rows,
        max_tables=max_tables, selection=selection,
    )
    if layout is not None:
        layout[0] += n_layout
    return found, over


def documents_pending(
    members: Sequence[tuple[str, bytes]],
    rcept_no: str,
    base_meta: dict,
    pending: list[PendingTable],
    rejects: list[Reject],
    *,
    min_rows: int = 2,
    min_cols: int = 2,
    max_rows: int | None = 200,
    max_tables: int | None = None,
    selection: str = "financial_first",
) -> tuple[int, int, int]:
    """What one filing's documents contribute (the ``dart`` asset and ``ocr-ft dart extract`` alike): layout
    tables counted, refused tables as rejects, the kept ones chosen by ``selection`` up to ``max_tables``,
    styled for rendering (:func:`~ocr_ft.sources.dart_xml.styled_table_html`) and split into row windows
    over ``max_rows``. Appends to ``pending``/``rejects``; returns ``(tables found, left out by the cap,
    layout tables)``."""
    layout_counter = [0]
    index = over = parsed = 0
    good: list[tuple[ExtractedTable, str, dict]] = []
    for name, payload in members:
        if not name.lower().endswith(".xml"):
            continue
        try:
            doc = extract_tables(payload, min_rows=min_rows, min_cols=min_cols, max_rows=None)  # long tables: row windows below
        except DartXmlError as exc:
            rejects.append(Reject(SOURCE, f"dart_{rcept_no}/{name}", "load", "document_parse_failed",
                                  f"rcept_no {rcept_no} document {name}: {exc}", extra=base_meta))
            continue
        except Exception as exc:  # one bad document never stops the others
            rejects.append(Reject(SOURCE, f"dart_{rcept_no}/{name}", "load", "document_parse_failed",
                                  f"rcept_no {rcept_no} document {name}: {type(exc).__name__}: {str(exc)[:300]}",
                                  extra=base_meta))
            continue
        parsed += 1
        for table in doc.tables:
            index += 1
            filename = f"dart_{rcept_no}_{index:04d}.png"
            meta = {
                **base_meta, "document": name, "document_name": doc.document_name, "encoding": doc.encoding,
                "invalid_bytes": invalid_byte_count(doc.encoding),
                "table_index": index, "document_table_index": table.index, "section_title": table.section_title,
                "title": table.title, "rows": table.n_rows, "cols": table.n_cols,
            }
            if table.reason == "layout_table":  # BORDER="0" framing: counted, not a reject of data
                layout_counter[0] += 1
                continue
            if not table.kept:
                rejects.append(Reject(SOURCE, filename, "load", table.reason,
                                      f"rcept_no {rcept_no} {name} table {table.index}: {table.detail}", extra=meta))
                continue
            good.append((table, filename, meta))
    chosen, over = select_tables(good, policy=selection, max_tables=max_tables, key=lambda g: g[0])
    for table, filename, meta in chosen:
        meta["selection"] = selection
        try:
            display = styled_table_html(table.element) if table.element is not None else table.html
        except Exception:  # the look is a nicety; the label's own HTML still renders the same cells
            display = table.html
        # Over the token budget: split_pending cuts row windows (scraped_common); what it still refuses
        # comes back as rejects counted by reason.
        windows, refused = split_pending(SOURCE, PendingTable(filename, display, table.html, meta, css=DART_CSS),
                                         max_rows=max_rows)
        pending += windows
        rejects += refused
    if index == 0 and parsed:
        rejects.append(Reject(SOURCE, f"dart_{rcept_no}.zip", "load", "no_tables",
                              f"rcept_no {rcept_no}: no table in {parsed} document(s)", extra=base_meta))
    return index, over, layout_counter[0]
