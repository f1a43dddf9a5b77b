"""The ``fss`` source: statistics tables of the FSS financial statistics system (FISIS OpenAPI).

FISIS (https://fisis.fss.or.kr/openapi/...) endpoints used, every one with ``auth`` (the key) and ``lang``:

* ``companySearch.json`` -- ``partDiv``: the financial companies of a sector (``finance_cd``, ``finance_nm``);
* ``statisticsListSearch.json`` -- ``lrgDiv`` (sector, e.g. ``A`` domestic banks), optional ``smlDiv``: the
  statistics tables (``list_no``, ``list_nm``, ``lrg_div_nm``, ``sml_div_nm``);
* ``statisticsInfoSearch.json`` -- ``financeCd``, ``listNo``, ``term`` (``Q`` quarterly, ``Y`` yearly),
  ``startBaseMm``/``endBaseMm`` (YYYYMM), optional ``accountCd``: rows of ``base_month``, ``finance_cd``,
  ``finance_nm``, ``account_cd``, ``account_nm`` and value columns ``a``, ``b``... named by ``description``
  (``column_id``/``column_nm``) with their units in ``unit`` (comma separated, one per column or one for all).

Every answer is ``{"result": {"err_cd", "err_msg", ...}}``. ``000`` ok; ``010``-``013`` a bad, stopped, deleted
or sample key -> :class:`FssAuthError` naming ``FSS_API_KEY``; ``020`` the daily quota -> :class:`FssRateLimitError`
(retrying the same day cannot help, so it is not retried); ``900`` an internal error -> retried, bounded;
anything else -> :class:`FssError` with code and message. The key never appears in messages or logs.

The rows become HTML tables with multi-level headers (:func:`fss_table_html`): columns grouped by year,
then by period (quarter), then by value column; rows grouped by company (when several share a table) and by
account-name hierarchy (names split on ``separators``), merged with rowspan/colspan.

:func:`collect_fss` is what the Dagster layer calls, per statistics period: ``"2024Q1"`` (quarterly, the
table covering ``history`` quarters up to it) or ``"2023"`` (yearly). Partition keys come from :func:`fss_periods`.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from ..dataset.records import Reject, SourceResult
from ..storage import atomic_write_json
from ..tables import TableParseError, normalize_html
from .scraped_common import (
    PendingTable, measure_label, reject_reasons, render_pending, size_refusal, split_pending,
)
from .http import (
    ApiError, HttpClient, Response, RetryableResponse, RetryPolicy, api_key_or_fail, json_or_retry,
)

log = logging.getLogger(__name__)

SOURCE = "fss"
FISIS_API_URL = "https://fisis.fss.or.kr/openapi"
FISIS_STATS_URL = "https://fisis.fss.or.kr/fss/fsiview/indexw.html"
API_KEY_ENV = "FSS_API_KEY"
KEY_PARAM = "auth"
AUTH_CODES = {"010", "011", "012", "013"}
RATE_LIMIT_CODE = "020"
RETRYABLE_CODES = {"900"}
MAX_QUARTERS = 40  # FISIS refuses a window longer than 40 quarters
TERMS = ("Q", "H", "Y")  # quarterly, half-yearly, yearly: each list accepts some of them (SH025 only H, SH022 only Y)


class FssError(ApiError):
    """FISIS answered with an error code (``code``, ``api_message``)."""


class FssAuthError(FssError):
    """The FISIS key is missing or refused. Fix the ``FSS_API_KEY`` environment variable."""


class FssRateLimitError(FssError):
    """The daily request quota of the key is spent (code 020)."""


@dataclass(frozen=True)
class StatisticsList:
    list_no: str
    list_nm: str
    lrg_div_nm: str = ""
    sml_div_nm: str = ""


@dataclass(frozen=True)
class ValueColumn:
    id: str  # "a", "b", ...
    name: str  # column_nm, e.g. 금액, 구성비
    unit: str = ""


@dataclass
class StatisticsData:
    """The answer of ``statisticsInfoSearch``: rows and the value columns that name their ``a``, ``b``..."""

    list_no: str
    finance_cd: str
    term: str
    start_base_mm: str
    end_base_mm: str
    columns: list[ValueColumn] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    unit: str = ""
    date_of_settlement: str = ""


def _result(obj: Any) -> dict[str, Any]:
    if isinstance(obj, dict):
        inner = obj.get("result")
        return inner if isinstance(inner, dict) else obj
    return {}


def _rows(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list):
        return [r for r in value if isinstance(r, dict)]
    return []


class FssClient:
    """FISIS OpenAPI client. ``api_key`` comes from the caller (the Dagster resource reads ``FSS_API_KEY``).

    ``cache_dir`` keeps raw answers keyed without the key; ``max_attempts``/``backoff_base``/``backoff_max``
    bound the retries on timeouts, 5xx, connection resets and code 900; ``min_interval`` spaces requests.
    """

    def __init__(
        self,
        api_key: str,
        *,
        cache_dir: str | Path | None = None,
        base_url: str = FISIS_API_URL,
        lang: str = "kr",
        timeout: tuple[float, float] = (10.0, 60.0),
        max_attempts: int = 5,
        backoff_base: float = 2.0,
        backoff_max: float = 60.0,
        min_interval: float = 0.1,
        http: HttpClient | None = None,
    ):
        self._key = api_key_or_fail(api_key, FssAuthError, "FISIS", API_KEY_ENV)
        self.base_url = base_url.rstrip("/")
        self.lang = lang
        self.http = http or HttpClient(
            cache_dir=cache_dir,
            timeout=timeout,
            retry=RetryPolicy(max_attempts=max_attempts, backoff_base=backoff_base, backoff_max=backoff_max),
            secret_params=(KEY_PARAM,),
            min_interval=min_interval,
        )
        if KEY_PARAM not in self.http.secret_params:
            self.http.secret_params = (*self.http.secret_params, KEY_PARAM)
        self._terms_path = (self.http.cache_dir / "list_terms.json") if self.http.cache_dir is not None else None
        self._terms: dict[str, str] = {}
        if self._terms_path is not None and self._terms_path.is_file():
            try:
                loaded = json.loads(self._terms_path.read_text(encoding="utf-8"))
                self._terms = {str(k): str(v) for k, v in loaded.items() if v in TERMS}
            except (OSError, ValueError, AttributeError):
                self._terms = {}

    def known_term(self, list_no: str) -> str | None:
        """The term (Q, H or Y) this list answered with before, remembered across runs in the cache."""
        return self._terms.get(list_no)

    def remember_term(self, list_no: str, term: str) -> None:
        if self._terms.get(list_no) == term:
            return
        self._terms[list_no] = term
        if self._terms_path is not None:
            atomic_write_json(self._terms_path, dict(sorted(self._terms.items())))

    def __repr__(self) -> str:
        return f"FssClient(base_url={self.base_url!r}, api_key=***)"

    @staticmethod
    def _check(resp: Response) -> None:
        obj = json_or_retry(resp)
        res = _result(obj)
        code = str(res.get("err_cd", "")).strip()
        if code == "000":
            return
        message = str(res.get("err_msg", "")).strip()
        if code in RETRYABLE_CODES:
            raise RetryableResponse(f"FISIS error {code} ({message})", code=code)
        if code in AUTH_CODES:
            raise FssAuthError(
                f"FISIS rejected the API key (err_cd {code}: {message}) on {resp.request}; "
                f"check the {API_KEY_ENV} environment variable",
                code, message,
            )
        if code == RATE_LIMIT_CODE:
            raise FssRateLimitError(
                f"FISIS daily request quota exceeded (err_cd 020: {message}) on {resp.request}", code, message
            )
        raise FssError(f"FISIS error {code or '?'} ({message or 'no err_cd in the answer'}) on {resp.request}",
                       code, message)

    def _get(self, endpoint: str, params: dict[str, Any], refresh: bool = False) -> dict[str, Any]:
        url = f"{self.base_url}/{endpoint}"
        resp = self.http.get(url, {"lang": self.lang, KEY_PARAM: self._key, **params}, check=self._check,
                             refresh=refresh)
        return _result(resp.json())

    def companies(self, part_div: str, *, refresh: bool = False) -> list[dict[str, str]]:
        """Companies of a sector (``finance_cd``, ``finance_nm``...), in the API's order."""
        res = self._get("companySearch.json", {"partDiv": part_div}, refresh)
        return [{k: str(v) for k, v in row.items()} for row in _rows(res.get("list"))]

    def statistics_lists(
        self, lrg_div: str, sml_div: str | None = None, *, refresh: bool = False
    ) -> list[StatisticsList]:
        """Statistics tables of a sector (``lrgDiv``), optionally of one category (``smlDiv``)."""
        res = self._get("statisticsListSearch.json", {"lrgDiv": lrg_div, "smlDiv": sml_div}, refresh)
        return [
            StatisticsList(str(r.get("list_no", "")), str(r.get("list_nm", "")), str(r.get("lrg_div_nm", "")),
                           str(r.get("sml_div_nm", "")))
            for r in _rows(res.get("list"))
            if r.get("list_no")
        ]

    def accounts(self, list_no: str, *, refresh: bool = False) -> list[dict[str, str]]:
        """Accounts (``account_cd``, ``account_nm``) of a statistics table."""
        res = self._get("accountListSearch.json", {"listNo": list_no}, refresh)
        return [{k: str(v) for k, v in row.items()} for row in _rows(res.get("list"))]

    def statistics(
        self,
        list_no: str,
        finance_cd: str,
        term: str,
        start_base_mm: str,
        end_base_mm: str,
        *,
        account_cd: str | None = None,
        refresh: bool = False,
    ) -> StatisticsData:
        """Data of one statistics table for one company over ``startBaseMm``..``endBaseMm``."""
        if term not in TERMS:
            raise ValueError(f"term must be one of {', '.join(TERMS)}, not {term!r}")
        res = self._get(
            "statisticsInfoSearch.json",
            {"financeCd": finance_cd, "listNo": list_no, "term": term, "startBaseMm": start_base_mm,
             "endBaseMm": end_base_mm, "accountCd": account_cd},
            refresh,
        )
        return parse_statistics(res, list_no, finance_cd, term, start_base_mm, end_base_mm)


def parse_statistics(res: dict[str, Any], list_no: str, finance_cd: str, term: str, start_base_mm: str,
                     end_base_mm: str) -> StatisticsData:
    """A ``statisticsInfoSearch`` answer's ``result`` object as :class:`StatisticsData`."""
    description = res.get("description")
    if isinstance(description, dict) and "column_id" not in description:
        description = description.get("column")
    unit = str(res.get("unit") or "")
    named = [(str(d.get("column_id", "")).strip(), str(d.get("column_nm", "")).strip())
             for d in _rows(description)]
    named = [(cid, name) for cid, name in named if cid]
    units = [u.strip() for u in unit.split(",")] if unit else []
    if len(units) != len(named):
        units = [units[0] if len(set(units)) == 1 else "" for _ in named] if units else [""] * len(named)
    columns = [ValueColumn(cid, name or cid, u) for (cid, name), u in zip(named, units)]
    return StatisticsData(
        list_no=list_no, finance_cd=finance_cd, term=term, start_base_mm=start_base_mm, end_base_mm=end_base_mm,
        columns=columns, rows=_rows(res.get("list")), unit=unit,
        date_of_settlement=str(res.get("date_of_settlement") or ""),
    )


# --------------------------------------------------------------------------------------------------
# Periods (partitions)
# --------------------------------------------------------------------------------------------------

_QUARTER = re.compile(r"^(\d{4})Q([1-4])$")


def _quarter_end_month(index: int) -> str:
    """YYYYMM of the last month of quarter ``index`` (year * 4 + quarter - 1)."""
    return f"{index // 4:04d}{(index % 4 + 1) * 3:02d}"

_YEAR = re.compile(r"^(\d{4})$")


@dataclass(frozen=True)
class FssPeriod:
    key: str  # the partition key, "2024Q1" or "2023"
    term: str  # "Q" or "Y"
    start_base_mm: str  # YYYYMM, the first period shown in the table
    end_base_mm: str  # YYYYMM, the partition's own period


def fss_period(key: str, history: int = 4) -> FssPeriod:
    """The FISIS query of a partition: ``"2024Q1"`` -> term ``Q``, base months 202306..202403 for
    ``history=4`` (the table shows the last 4 quarters); ``"2023"`` -> term ``Y``, 202012..202312."""
    if history < 1:
        raise ValueError("history must be at least 1 period")
    m = _QUARTER.match(key)
    if m:
        if history > MAX_QUARTERS:
            raise ValueError(f"FISIS serves at most {MAX_QUARTERS} quarters at once, not {history}")
        idx = int(m.group(1)) * 4 + int(m.group(2)) - 1
        start = idx - (history - 1)
        return FssPeriod(key, "Q", _quarter_end_month(start), _quarter_end_month(idx))
    m = _YEAR.match(key)
    if m:
        year = int(m.group(1))
        return FssPeriod(key, "Y", f"{year - history + 1:04d}12", f"{year:04d}12")
    raise ValueError(f"FSS partition {key!r} is neither a quarter (2024Q1) nor a year (2023)")


#: The look of a FISIS statistics table: ruled cells, shaded column headers, row headers left, numbers right.
FSS_CSS = (
    "table{border-collapse:collapse;border:1px solid #7f7f7f;font-size:13px;color:#222;}"
    "th,td{border:1px solid #a6a6a6;padding:3px 8px;}"
    "thead th{background:#e8edf3;text-align:center;font-weight:bold;}"
    "tbody th{background:#f7f7f7;text-align:left;font-weight:normal;}"
    "td{text-align:right;white-space:nowrap;}"
)

_TERM_MONTHS = {"Q": 3, "H": 6, "Y": 12}


def term_window(term: str, end_base_mm: str, history: int) -> tuple[str, str]:
    """``(startBaseMm, endBaseMm)`` of ``history`` periods of ``term`` ending at the last period end on or
    before ``end_base_mm`` (H periods end in June and December, Y periods in December)."""
    step = _TERM_MONTHS[term]
    idx = int(end_base_mm[:4]) * 12 + int(end_base_mm[4:6]) - 1
    while (idx % 12 + 1) % step:
        idx -= 1
    start = idx - step * (history - 1)
    return f"{start // 12:04d}{start % 12 + 1:02d}", f"{idx // 12:04d}{idx % 12 + 1:02d}"


def fss_periods(start: str, end: str) -> list[str]:
    """Partition keys from ``start`` to ``end`` inclusive, both quarters (``2020Q1``) or both years (``2020``)."""
    qs, qe = _QUARTER.match(start), _QUARTER.match(end)
    if qs and qe:
        a = int(qs.group(1)) * 4 + int(qs.group(2)) - 1
        b = int(qe.group(1)) * 4 + int(qe.group(2)) - 1
        return [f"{i // 4:04d}Q{i % 4 + 1}" for i in range(a, b + 1)]
    ys, ye = _YEAR.match(start), _YEAR.match(end)
    if ys and ye:
        return [f"{y:04d}" for y in range(int(start), int(end) + 1)]
    raise ValueError(f"FSS periods {start!r}..{end!r}: give two quarters (2020Q1) or two years (2020)")


# --------------------------------------------------------------------------------------------------
# Rows -> HTML with merged headers
# --------------------------------------------------------------------------------------------------


MAX_VALUE_CHARS = 40  # a FISIS value longer than this is not a number any statement shows: the list is refused


class FssValueError(ValueError):
    """A FISIS value that cannot be shown (e.g. thousands of digits); the list becomes a reject."""


def _fmt(value: Any) -> str:
    """A FISIS value as a financial table shows it: thousands separators, ``-`` for nothing, and a leading
    zero where FISIS leaves it out (``.29`` -> ``0.29``, ``-.01`` -> ``-0.01``). Digits are grouped as text, so
    a huge digit string never reaches ``int()``; one over :data:`MAX_VALUE_CHARS` raises :class:`FssValueError`."""
    text = "" if value is None else str(value).strip()
    if not text:
        return "-"
    if len(text) > MAX_VALUE_CHARS:
        raise FssValueError(f"value of {len(text)} characters ({text[:12]}...) is not a number a table shows")
    m = re.fullmatch(r"([-+]?)(\d[\d,]*)?(\.\d+)?", text)
    if not m or not (m.group(2) or m.group(3)):
        return text
    sign, frac = m.group(1), m.group(3) or ""
    whole = (m.group(2) or "").replace(",", "").lstrip("0") or "0"
    groups = []
    while len(whole) > 3:
        groups.insert(0, whole[-3:])
        whole = whole[:-3]
    groups.insert(0, whole)
    return f"{'-' if sign == '-' else ''}{','.join(groups)}{frac}"


def _split(name: str, separators: Sequence[str]) -> list[str]:
    parts = [name]
    for sep in separators:
        parts = [p for part in parts for p in part.split(sep)]
    parts = [p.strip() for p in parts if p.strip()]
    return parts or [name.strip() or "-"]


def _period_label(base_month: str, term: str) -> str:
    month = int(base_month[4:6]) if len(base_month) >= 6 and base_month[4:6].isdigit() else 0
    if term == "Q" and month in (3, 6, 9, 12):
        return f"{month // 3}분기"
    if term == "H" and month in (6, 12):
        return "상반기" if month == 6 else "하반기"
    return f"{month}월" if month else base_month


def _th(text: str, rowspan: int = 1, colspan: int = 1) -> str:
    attrs = (f' rowspan="{rowspan}"' if rowspan > 1 else "") + (f' colspan="{colspan}"' if colspan > 1 else "")
    return f"<th{attrs}>{escape(text, quote=False)}</th>"


def header_rows(paths: list[list[str]]) -> list[list[tuple[int, str, int, int]]]:
    """Merged header cells of a column tree: for each header row, ``(leaf index, text, rowspan, colspan)``.

    Leaves that share a prefix with their neighbours share one cell per shared level (colspan); a leaf whose
    path is shorter than the deepest reaches down with rowspan.
    """
    depth = max((len(p) for p in paths), default=0)
    covered: set[tuple[int, int]] = set()
    rows: list[list[tuple[int, str, int, int]]] = []
    for h in range(depth):
        row = []
        for j, path in enumerate(paths):
            if h >= len(path) or (h, j) in covered:
                continue
            if h == len(path) - 1:
                row.append((j, path[h], depth - h, 1))
                continue
            k = 1
            while j + k < len(paths) and len(paths[j + k]) > h + 1 and paths[j + k][: h + 1] == path[: h + 1]:
                covered.add((h, j + k))
                k += 1
            row.append((j, path[h], 1, k))
        rows.append(row)
    return rows


def row_header_cells(paths: list[list[str]]) -> list[list[tuple[str, int, int]]]:
    """Merged row-header cells: for each body row, ``(text, rowspan, colspan)`` left to right.

    ``paths`` are the body rows in tree order (a group's rows follow it). A name shared by consecutive rows
    is one cell with rowspan; a row that is itself a group (later rows extend its path) gets its name as
    that group cell, spanning its own row and its descendants, plus an empty cell over the deeper levels
    (its own values sit on this group row); a leaf's name reaches right with colspan. So every name is
    drawn once, leaf names in the leaf cells.
    """
    depth = max((len(p) for p in paths), default=0)
    covered: set[tuple[int, int]] = set()
    out: list[list[tuple[str, int, int]]] = []
    for i, path in enumerate(paths):
        cells = []
        for lvl in range(len(path)):
            if (i, lvl) in covered:
                continue
            prefix = path[: lvl + 1]
            own = lvl == len(path) - 1
            k = 1
            while (i + k < len(paths) and len(paths[i + k]) > lvl + (1 if own else 0)
                   and paths[i + k][: lvl + 1] == prefix and (own or len(paths[i + k]) > lvl + 1)):
                covered.add((i + k, lvl))
                k += 1
            if own and k == 1:
                cells.append((path[lvl], 1, depth - lvl))
            elif own:
                cells.append((path[lvl], k, 1))
                cells.append(("", 1, depth - lvl - 1))
            else:
                cells.append((path[lvl], k, 1))
        out.append(cells)
    return out


def account_tree(rows: Sequence[dict[str, Any]], separators: Sequence[str] = ("_", ">")) -> list[tuple[str, list[str]]]:
    """``(account_cd, path)`` of every distinct account, in tree order.

    The path is the account name split on ``separators`` (FISIS writes ``예수부채_원화예수금_요구불예금``).
    When a name's parent path is no account of the list but the account whose code is the longest proper
    prefix of this code sits one level up (FISIS renames a parent: ``예수부채_양도성예금증서`` A113 over
    ``예수부채_양도성예수금_은행간CD`` A1130), the account goes under that one; otherwise its missing parents
    become group rows without values. Siblings are ordered by ``account_cd`` (FISIS sends rows in its own
    order); a sibling whose code prefixes another's (a total such as 부채총계 A1 over A11, A15) comes after them.
    """
    accounts: dict[str, list[str]] = {}
    for r in rows:
        cd = str(r.get("account_cd", "")).strip()
        nm = str(r.get("account_nm", "")).strip()
        key = cd or nm
        if key and key not in accounts:
            accounts[key] = _split(nm or cd, separators)
    by_path = {tuple(p): cd for cd, p in accounts.items()}
    for cd, path in list(accounts.items()):
        if len(path) > 1 and tuple(path[:-1]) not in by_path:
            parents = [c for c in accounts if c != cd and cd.startswith(c) and len(accounts[c]) == len(path) - 1]
            if parents:
                new = accounts[max(parents, key=len)] + [path[-1]]
                if tuple(new) not in by_path:
                    del by_path[tuple(path)]
                    accounts[cd] = new
                    by_path[tuple(new)] = cd

    # tree: node = path tuple; code of a group without its own row = the smallest code under it
    children: dict[tuple[str, ...], list[tuple[str, ...]]] = {}
    codes: dict[tuple[str, ...], str] = {}
    for cd, path in accounts.items():
        t = tuple(path)
        codes[t] = cd
        for lvl in range(1, len(t) + 1):
            node, parent = t[:lvl], t[: lvl - 1]
            kids = children.setdefault(parent, [])
            if node not in kids:
                kids.append(node)
    def code_of(node: tuple[str, ...]) -> str:
        if node in codes:
            return codes[node]
        return min((code_of(k) for k in children.get(node, [])), default="")

    out: list[tuple[str, list[str]]] = []

    def walk(node: tuple[str, ...]) -> None:
        kids = children.get(node, [])
        kc = {k: code_of(k) for k in kids}
        def key(k):
            c = kc[k]
            total = k in codes and any(o != k and kc[o] != c and kc[o].startswith(c) for o in kids)
            return (c + ("~" if total else ""), k)
        for k in sorted(kids, key=key):
            if k in codes:
                out.append((codes[k], list(k)))
            walk(k)

    walk(())
    return out


def infer_term(months: Iterable[str]) -> str:
    """The term of rows by their base months: only Decembers -> Y, only Junes and Decembers -> H, else Q."""
    ms = {m[4:6] for m in months if len(m) >= 6}
    if ms <= {"12"}:
        return "Y"
    if ms <= {"06", "12"}:
        return "H"
    return "Q"


def fss_pending(
    data: StatisticsData, filename: str, meta: dict[str, Any], *, company_names: dict[str, str] | None = None,
    separators: Sequence[str] = ("_", ">"), min_rows: int = 2, min_cols: int = 2, max_rows: int | None = 200,
) -> tuple[list[PendingTable], list[Reject]]:
    """What one list of one company becomes: pairs to render (row windows when over the token budget) or a
    reject naming the list (``value_invalid``, ``table_failed``, a size reason)."""
    where = f"FISIS {data.list_no} {data.finance_cd}"
    extra = {"list_no": data.list_no}
    try:
        label = normalize_html(fss_table_html([data], company_names=company_names, separators=separators))
        n_rows, n_cols, text = measure_label(label)
    except Exception as exc:
        reason = "value_invalid" if isinstance(exc, FssValueError) else "table_failed"
        return [], [Reject(SOURCE, filename, "load", reason, f"{where}: {type(exc).__name__}: {str(exc)[:300]}",
                           extra=extra)]
    refusal = size_refusal(n_rows, n_cols, text, min_rows=min_rows, min_cols=min_cols, max_rows=None)
    if refusal:
        return [], [Reject(SOURCE, filename, "load", refusal[0], f"{where}: {refusal[1]}", extra=extra)]
    return split_pending(SOURCE, PendingTable(filename, label, label, {**meta, "rows": n_rows, "cols": n_cols}, FSS_CSS),
                         max_rows=max_rows)


def fss_table_html(
    data: Sequence[StatisticsData],
    *,
    company_names: dict[str, str] | None = None,
    separators: Sequence[str] = ("_", ">"),
    corner_label: str = "구분",
) -> str:
    """One HTML table (with ``<thead>``) from the rows of one statistics table, for one or more companies.

    Columns: year > period (quarterly data only) > value column (only when there are several; a value
    column name is itself split on ``separators``). Rows: company (only when ``data`` holds several
    companies) > account name split on ``separators``. Header levels are merged with colspan/rowspan, the
    corner cell spans them all. Units: in the corner (``단위: 백만원``) when all columns share one, else in
    each value column's header. Returns ``""`` when there are no rows.
    """
    rows = [(d, r) for d in data for r in d.rows]
    if not rows:
        return ""
    term = data[0].term
    columns: list[ValueColumn] = []
    for d in data:
        for c in d.columns:
            if c.id not in {x.id for x in columns}:
                columns.append(c)
    columns = [c for c in columns if any(str(r.get(c.id, "")).strip() for _, r in rows)] or columns
    units = {c.unit for c in columns}
    shared_unit = units.pop() if len(units) == 1 else ""
    months = sorted({str(r.get("base_month", "")) for _, r in rows})

    col_paths: list[list[str]] = []
    col_keys: list[tuple[str, str]] = []
    for month in months:
        for c in columns:
            path = [f"{month[:4]}년"]
            if term in ("Q", "H"):
                path.append(_period_label(month, term))
            if len(columns) > 1:
                vpath = _split(c.name, separators)
                if c.unit and not shared_unit:
                    vpath[-1] = f"{vpath[-1]}({c.unit})"
                path += vpath
            col_paths.append(path)
            col_keys.append((month, c.id))

    multi = len({d.finance_cd for d in data}) > 1
    names = company_names or {}
    row_keys: list[tuple[str, str]] = []
    row_paths: list[list[str]] = []
    values: dict[tuple[tuple[str, str], str, str], str] = {}
    for d in data:
        company = names.get(d.finance_cd) or next((str(r.get("finance_nm", "")) for r in d.rows if r.get("finance_nm")),
                                                  "") or d.finance_cd
        for r in d.rows:
            acct = str(r.get("account_cd", "")).strip() or str(r.get("account_nm", "")).strip()
            for c in columns:
                try:
                    values[((d.finance_cd, acct), str(r.get("base_month", "")), c.id)] = _fmt(r.get(c.id))
                except FssValueError as exc:
                    raise FssValueError(f"account {acct} ({r.get('account_nm', '')}) {c.name} "
                                        f"{r.get('base_month', '')}: {exc}") from None
        for acct, path in account_tree(d.rows, separators):
            row_keys.append((d.finance_cd, acct))
            row_paths.append(([company] if multi else []) + path)

    head = header_rows(col_paths)
    depth = max(len(p) for p in row_paths)
    corner = corner_label + (f" (단위: {shared_unit})" if shared_unit else "")
    parts = ["<table><thead>"]
    for h, cells in enumerate(head):
        parts.append("<tr>")
        if h == 0:
            parts.append(_th(corner, rowspan=len(head), colspan=depth))
        parts += [_th(text, rs, cs) for _, text, rs, cs in cells]
        parts.append("</tr>")
    parts.append("</thead><tbody>")
    for key, cells in zip(row_keys, row_header_cells(row_paths)):
        parts.append("<tr>")
        parts += [_th(text, rs, cs) for text, rs, cs in cells]
        parts += [f"<td>{escape(values.get((key, m, cid), '-'), quote=False)}</td>" for m, cid in col_keys]
        parts.append("</tr>")
    parts.append("</tbody></table>")
    return "".join(parts)


# --------------------------------------------------------------------------------------------------
# collect_fss
# --------------------------------------------------------------------------------------------------


def _fetch_list(client: FssClient, list_no: str, group: Sequence[str], p: FssPeriod, history: int,
                refresh: bool) -> tuple[str, list[StatisticsData]]:
    """The rows of one list for ``group``, asked with a term the list accepts: the one it answered with before,
    else the partition's term, then the others (Q, H, Y); the first that gives rows is remembered."""
    known = client.known_term(list_no)
    order = [known] if known else [p.term] + [t for t in TERMS if t != p.term]
    last_exc: FssError | None = None
    first: tuple[str, list[StatisticsData]] | None = None
    for term in order:
        start, end = term_window(term, p.end_base_mm, history)
        try:
            data = [client.statistics(list_no, code, term, start, end, refresh=refresh) for code in group]
        except (FssAuthError, FssRateLimitError):
            raise
        except FssError as exc:  # this term refused: try the next one
            last_exc = exc
            continue
        if any(d.rows for d in data):
            client.remember_term(list_no, term)
            return term, data
        first = first or (term, data)
    if first is not None:
        return first
    assert last_exc is not None
    raise last_exc


def collect_fss(
    client: FssClient,
    period: str,
    renderer: Any,
    *,
    lrg_div: str = "A",
    sml_divs: Iterable[str] | None = None,
    list_nos: Iterable[str] | None = None,
    finance_cds: Iterable[str] | None = None,
    max_companies: int | None = 5,
    history: int = 4,
    group_companies: bool = False,
    separators: Sequence[str] = ("_", ">"),
    min_rows: int = 2,
    min_cols: int = 2,
    max_rows: int | None = 200,
    max_tables: int | None = None,
    refresh: bool = False,
    css: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> SourceResult:
    """One FSS partition: the statistics tables of ``period`` (``"2024Q1"`` or ``"2023"``), rendered.

    Knobs: ``lrg_div`` (sector, e.g. ``A`` domestic banks), ``sml_divs`` (statistics categories; None: all),
    ``list_nos`` (statistics tables; None: every table of the sector), ``finance_cds`` (companies; None: the
    first ``max_companies`` active companies of the sector by code), ``history`` (periods shown per table,
    up to and including ``period``), ``group_companies`` (one table per statistics table with the companies
    as row groups, instead of one table per company), ``separators`` (account/column name hierarchy),
    ``min_rows``/``min_cols``/``max_rows`` (size rules), ``max_tables`` (stop after N tables), ``refresh``
    (ask FISIS again even when cached), ``css`` (renderer), ``progress(done, total)``.

    Pairs are named ``fss_<period>_<list_no>_<finance_cd>.png`` (``fss_<period>_<list_no>.png`` when grouped;
    ``..._p01.png``, ``_p02``... for the row windows of a table over the token budget or ``max_rows``).
    Each list is asked with a term it accepts (see :func:`_fetch_list`); an H or Y list whose period does not
    end in this quarter is counted in ``stats["left_out_term_<T>_not_due"]``.
    Rejects (stage ``load``): ``statistics_list_unknown``, ``list_error`` (FISIS refused that list),
    ``no_data``, ``value_invalid``, ``table_failed`` (any other exception, type and message), ``table_too_small``,
    ``table_empty``, ``table_too_large`` (cannot be split), ``over_cap`` (beyond ``max_tables``), ``render_failed``.
    Authentication, quota and network failures raise.
    """
    http_start = client.http.stats.as_dict()
    p = fss_period(period, history)
    result = SourceResult()
    lists: list[StatisticsList] = []
    for sml in (list(sml_divs) if sml_divs else [None]):
        for s in client.statistics_lists(lrg_div, sml, refresh=refresh):
            if s.list_no not in {x.list_no for x in lists}:
                lists.append(s)
    if list_nos is not None:
        wanted = list(dict.fromkeys(list_nos))
        by_no = {s.list_no: s for s in lists}
        for no in wanted:
            if no not in by_no:
                result.rejects.append(Reject(SOURCE, f"fss_{period}_{no}", "load", "statistics_list_unknown",
                                             f"FISIS sector {lrg_div} has no statistics table {no}"))
        lists = [by_no[no] for no in wanted if no in by_no]

    companies = client.companies(lrg_div, refresh=refresh)
    names = {c.get("finance_cd", ""): c.get("finance_nm", "") for c in companies}
    if finance_cds is not None:
        codes = list(dict.fromkeys(finance_cds))
    else:
        active = sorted(c["finance_cd"] for c in companies
                        if c.get("finance_cd") and "[폐]" not in c.get("finance_nm", ""))  # [폐]: closed
        codes = active[:max_companies] if max_companies is not None else active

    pending: list[PendingTable] = []
    left_out: Counter = Counter()
    tables_built = 0
    jobs = [(s, [code]) for s in lists for code in codes] if not group_companies else [(s, codes) for s in lists]
    for n, (stat, group) in enumerate(jobs, 1):
        suffix = "" if group_companies else f"_{group[0]}"
        filename = f"fss_{period}_{stat.list_no}{suffix}.png"
        if max_tables is not None and tables_built >= max_tables:
            result.rejects.append(Reject(SOURCE, filename, "load", "over_cap",
                                         f"FISIS {stat.list_no} {', '.join(group)} not fetched: the partition's "
                                         f"max_tables {max_tables} was reached", extra={"list_no": stat.list_no}))
            continue
        if progress is not None:
            progress(n, len(jobs))
        try:
            term, data = _fetch_list(client, stat.list_no, group, p, history, refresh)
        except (FssAuthError, FssRateLimitError):
            raise
        except FssError as exc:  # one list's error is a reject of that list, the others go on
            result.rejects.append(Reject(SOURCE, filename, "load", "list_error",
                                         f"FISIS {stat.list_no} ({stat.list_nm}) {', '.join(group)}: {exc}",
                                         extra={"list_no": stat.list_no, "err_cd": exc.code}))
            continue
        start, end = term_window(term, p.end_base_mm, history)
        if end != p.end_base_mm:  # an H or Y list has no period ending in this quarter
            left_out[f"term_{term}_not_due"] += 1
            continue
        data = [d for d in data if d.rows]
        meta = {
            "list_no": stat.list_no, "list_nm": stat.list_nm, "lrg_div": lrg_div, "lrg_div_nm": stat.lrg_div_nm,
            "sml_div_nm": stat.sml_div_nm, "finance_cds": group, "finance_nms": [names.get(c, "") for c in group],
            "period": period, "term": term, "start_base_mm": start, "end_base_mm": end,
            "units": sorted({c.unit for d in data for c in d.columns if c.unit}), "url": FISIS_STATS_URL,
        }
        if not data:
            result.rejects.append(Reject(SOURCE, filename, "load", "no_data",
                                         f"FISIS {stat.list_no} ({stat.list_nm}) has no rows for {', '.join(group)} "
                                         f"in {start}..{end}", extra={"list_no": stat.list_no}))
            continue
        try:
            label = normalize_html(fss_table_html(data, company_names=names, separators=separators))
            n_rows, n_cols, text = measure_label(label)
        except Exception as exc:  # a bad value or anything unexpected: a reject naming the list, never a crash
            reason = "value_invalid" if isinstance(exc, FssValueError) else "table_failed"
            result.rejects.append(Reject(SOURCE, filename, "load", reason,
                                         f"FISIS {stat.list_no} {', '.join(group)}: {type(exc).__name__}: "
                                         f"{str(exc)[:300]}", extra={"list_no": stat.list_no}))
            continue
        refusal = size_refusal(n_rows, n_cols, text, min_rows=min_rows, min_cols=min_cols, max_rows=None)
        if refusal:
            result.rejects.append(Reject(SOURCE, filename, "load", refusal[0],
                                         f"FISIS {stat.list_no} {', '.join(group)}: {refusal[1]}",
                                         extra={"list_no": stat.list_no}))
            continue
        tables_built += 1
        windows, refused = split_pending(SOURCE, PendingTable(filename, label, label,
                                                              {**meta, "rows": n_rows, "cols": n_cols}, FSS_CSS),
                                         max_rows=max_rows)
        pending += windows
        result.rejects += refused

    pairs, render_rejects = render_pending(SOURCE, pending, renderer, css=css, progress=progress)
    result.pairs += pairs
    result.rejects += render_rejects
    result.stats = {
        "period": period, "term": p.term, "start_base_mm": p.start_base_mm, "end_base_mm": p.end_base_mm,
        "statistics_tables": len(lists), "companies": len(codes), "tables_built": tables_built,
        "windows": len(pending), **{f"left_out_{k}": v for k, v in sorted(left_out.items())},
        "pairs": len(result.pairs), "rejects": len(result.rejects), "reject_reasons": reject_reasons(result.rejects),
        **client.http.stats.since(http_start),
    }
    return result
