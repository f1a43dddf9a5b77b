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

import logging
import re
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from ..dataset.records import Reject, SourceResult
from ..tables import TableParseError, normalize_html
from .scraped_common import PendingTable, measure_label, reject_reasons, render_pending, size_refusal
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
        if term not in ("Q", "Y"):
            raise ValueError(f"term must be 'Q' or 'Y', not {term!r}")
        res = self._get(
            "statisticsInfoSearch.json",
            {"financeCd": finance_cd, "listNo": list_no, "term": term, "startBaseMm": start_base_mm,
             "endBaseMm": end_base_mm, "accountCd": account_cd},
            refresh,
        )
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


def _fmt(value: Any) -> str:
    """A FISIS value as a financial table shows it: thousands separators, ``-`` for nothing."""
    text = "" if value is None else str(value).strip()
    if not text:
        return "-"
    m = re.fullmatch(r"([-+]?)(\d[\d,]*)(\.\d+)?", text)
    if not m:
        return text
    sign, whole, frac = m.group(1), int(m.group(2).replace(",", "")), m.group(3) or ""
    return f"{'-' if sign == '-' else ''}{whole:,}{frac}"


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

    Consecutive rows sharing a path prefix share one cell per shared level (rowspan); a row whose path is
    shorter than the deepest reaches right with colspan.
    """
    depth = max((len(p) for p in paths), default=0)
    covered: set[tuple[int, int]] = set()
    out: list[list[tuple[str, int, int]]] = []
    for i, path in enumerate(paths):
        cells = []
        for lvl in range(len(path)):
            if (i, lvl) in covered:
                continue
            if lvl == len(path) - 1:
                cells.append((path[lvl], 1, depth - lvl))
                continue
            k = 1
            while i + k < len(paths) and len(paths[i + k]) > lvl + 1 and paths[i + k][: lvl + 1] == path[: lvl + 1]:
                covered.add((i + k, lvl))
                k += 1
            cells.append((path[lvl], k, 1))
        out.append(cells)
    return out


def fss_table_html(
    data: Sequence[StatisticsData],
    *,
    company_names: dict[str, str] | None = None,
    separators: Sequence[str] = (">",),
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
            if term == "Q":
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
    row_keys: list[tuple[str, str, str]] = []
    seen: set[tuple[str, str, str]] = set()
    row_paths: list[list[str]] = []
    values: dict[tuple[tuple[str, str, str], str, str], str] = {}
    for d, r in rows:
        acct = str(r.get("account_cd", "")) or str(r.get("account_nm", ""))
        key = (d.finance_cd, acct, str(r.get("account_nm", "")))
        if key not in seen:
            seen.add(key)
            row_keys.append(key)
            company = names.get(d.finance_cd) or str(r.get("finance_nm", "")) or d.finance_cd
            row_paths.append(([company] if multi else []) + _split(str(r.get("account_nm", "")) or acct, separators))
        for c in columns:
            values[(key, str(r.get("base_month", "")), c.id)] = _fmt(r.get(c.id))

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
    separators: Sequence[str] = (">",),
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

    Pairs are named ``fss_<period>_<list_no>_<finance_cd>.png`` (``fss_<period>_<list_no>.png`` when grouped).
    Rejects (stage ``load``): ``statistics_list_unknown``, ``no_data``, ``table_too_small``, ``table_empty``,
    ``table_too_large``, ``render_failed``. Authentication, quota and network failures raise.
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
    jobs = [(s, [code]) for s in lists for code in codes] if not group_companies else [(s, codes) for s in lists]
    for n, (stat, group) in enumerate(jobs, 1):
        if max_tables is not None and len(pending) >= max_tables:
            break
        data = [client.statistics(stat.list_no, code, p.term, p.start_base_mm, p.end_base_mm, refresh=refresh)
                for code in group]
        data = [d for d in data if d.rows]
        suffix = "" if group_companies else f"_{group[0]}"
        filename = f"fss_{period}_{stat.list_no}{suffix}.png"
        meta = {
            "list_no": stat.list_no, "list_nm": stat.list_nm, "lrg_div": lrg_div, "lrg_div_nm": stat.lrg_div_nm,
            "sml_div_nm": stat.sml_div_nm, "finance_cds": group, "finance_nms": [names.get(c, "") for c in group],
            "period": period, "term": p.term, "start_base_mm": p.start_base_mm, "end_base_mm": p.end_base_mm,
            "units": sorted({c.unit for d in data for c in d.columns if c.unit}), "url": FISIS_STATS_URL,
        }
        if progress is not None:
            progress(n, len(jobs))
        if not data:
            result.rejects.append(Reject(SOURCE, filename, "load", "no_data",
                                         f"FISIS {stat.list_no} ({stat.list_nm}) has no rows for {', '.join(group)} "
                                         f"in {p.start_base_mm}..{p.end_base_mm}", extra={"list_no": stat.list_no}))
            continue
        try:
            label = normalize_html(fss_table_html(data, company_names=names, separators=separators))
            n_rows, n_cols, text = measure_label(label)
        except TableParseError as exc:  # cannot happen with our own HTML, but a reject beats a crash
            result.rejects.append(Reject(SOURCE, filename, "load", "table_unreadable", str(exc)))
            continue
        refusal = size_refusal(n_rows, n_cols, text, min_rows=min_rows, min_cols=min_cols, max_rows=max_rows)
        if refusal:
            result.rejects.append(Reject(SOURCE, filename, "load", refusal[0],
                                         f"FISIS {stat.list_no} {', '.join(group)}: {refusal[1]}",
                                         extra={"list_no": stat.list_no}))
            continue
        pending.append(PendingTable(filename, label, label, {**meta, "rows": n_rows, "cols": n_cols}))

    pairs, render_rejects = render_pending(SOURCE, pending, renderer, css=css, progress=progress)
    result.pairs += pairs
    result.rejects += render_rejects
    result.stats = {
        "period": period, "term": p.term, "start_base_mm": p.start_base_mm, "end_base_mm": p.end_base_mm,
        "statistics_tables": len(lists), "companies": len(codes), "tables_built": len(pending),
        "pairs": len(result.pairs), "rejects": len(result.rejects), "reject_reasons": reject_reasons(result.rejects),
        **client.http.stats.since(http_start),
    }
    return result
