"""The ``wiki`` source: ``wikitable`` tables of Korean Wikipedia pages, cleaned, with licence attribution.

MediaWiki API (``https://ko.wikipedia.org/w/api.php``) requests used:

* ``action=parse&page=TITLE&prop=text|revid&redirects=1&disableeditsection=1&format=json&formatversion=2``
  -> ``{"parse": {"title", "pageid", "revid", "text"}}`` (the rendered HTML), or
  ``{"error": {"code": "missingtitle", "info": ...}}`` for a page that does not exist;
* ``action=query&list=categorymembers&cmtitle=분류:...&cmnamespace=0&cmlimit=500`` with continuation: every
  answer's ``continue`` object is sent back as it is until there is none.

Errors ``maxlag``/``ratelimited``/``readonly`` and HTTP 429/5xx are retried, bounded. Wikimedia asks
clients to identify themselves with contact information: :func:`check_user_agent` refuses a User-Agent
without a URL or an e-mail (the Dagster resource applies it, naming ``OCR_FT_WIKI_USER_AGENT``).

Tables: every ``table.wikitable`` not inside another wikitable (a wikitable nested in one is kept inside its
cell). Cleaning (:func:`clean_table`) removes footnote references (``sup.reference``) and other
``sup.noprint`` marks, edit links (``span.mw-editsection``), hidden elements (``display:none``, ``sortkey``
spans: the sort keys that ``{{sort}}``-style templates put before the visible text), ``style``/``script``/
``link`` elements, images and captions (a caption is not part of the label, so it must not be drawn);
it keeps the visible text, ``rowspan``/``colspan``, line breaks, bold/italic, lists and nested tables, and
drops every other attribute (``style``, ``class``, ``data-sort-value``...). The cleaned table is what is
rendered; its normalised form is the label.

Text on Wikipedia is CC BY-SA 4.0: every pair's metadata carries the attribution (page title, revision id,
URL, permalink, licence).
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence
from urllib.parse import quote, urlsplit

import lxml.html
from lxml.html import HtmlElement

from ..dataset.records import Reject, SourceResult
from ..tables import TableParseError, normalize_html
from ..tables import parse_span
from .scraped_common import (
    PendingTable, measure_label, reject_reasons, render_pending, size_refusal, split_pending,
)
from .http import (
    DEFAULT_USER_AGENT, ApiError, HttpClient, Response, RetryableResponse, RetryPolicy, json_or_retry,
)

log = logging.getLogger(__name__)

SOURCE = "wiki"
WIKI_API_URL = "https://ko.wikipedia.org/w/api.php"
LICENSE = "CC BY-SA 4.0"
LICENSE_URL = "https://creativecommons.org/licenses/by-sa/4.0/"
RETRYABLE_ERRORS = {"maxlag", "ratelimited", "readonly", "internal_api_error_DBQueryError"}

_KEEP_TAGS = {"table", "thead", "tbody", "tfoot", "tr", "th", "td", "br", "b", "strong", "i", "em", "p", "ul", "ol",
              "li", "div", "sub", "sup", "small", "big", "u", "s"}
_DROP_TAGS = {"style", "script", "link", "meta", "img", "figure", "audio", "video", "caption", "noscript", "math",
              "svg", "input", "button"}
_KEEP_ATTRS = {"rowspan", "colspan"}
_HIDDEN = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden", re.IGNORECASE)


USER_AGENT_ENV = "OCR_FT_WIKI_USER_AGENT"
_CONTACT = re.compile(r"https?://\S+|[\w.+-]+@[\w-]+(\.[\w-]+)+")

#: The look of a MediaWiki ``wikitable`` (Vector skin): grey header cells, 1px borders, collapsed.
WIKITABLE_CSS = (
    "table{background:#f8f9fa;color:#202122;border:1px solid #a2a9b1;border-collapse:collapse;font-size:14px;"
    "line-height:1.6;}"
    "th,td{border:1px solid #a2a9b1;padding:0.2em 0.4em;}"
    "th{background:#eaecf0;text-align:center;font-weight:bold;}"
)


class WikiUserAgentError(ValueError):
    """The User-Agent carries no contact information (a URL or an e-mail), which Wikimedia's policy asks for."""


def check_user_agent(user_agent: str | None) -> str:
    """``user_agent`` when it carries a URL or an e-mail address, else :class:`WikiUserAgentError` saying what
    to set (Wikimedia may block clients without contact information without notice)."""
    ua = (user_agent or "").strip()
    if not _CONTACT.search(ua):
        raise WikiUserAgentError(
            f"the wiki User-Agent {ua!r} has no contact information; Wikimedia's User-Agent policy asks for a URL "
            f"or an e-mail address. Set {USER_AGENT_ENV}, e.g. {USER_AGENT_ENV}='ocr-ft/0.1 "
            f"(https://example.org/contact; ml-team@example.org)'"
        )
    return ua


class WikiError(ApiError):
    """The MediaWiki API answered with an error (``code``, ``info``)."""

    @property
    def info(self) -> str:
        """MediaWiki's error text (``api_message`` under its own name)."""
        return self.api_message


class WikiPageMissing(WikiError):
    """The page does not exist (``missingtitle``) or its title is invalid."""


@dataclass
class WikiPage:
    title: str
    pageid: int
    revid: int
    html: str
    url: str
    permalink: str

    def attribution(self) -> dict[str, Any]:
        """Licence attribution for anything derived from this page."""
        return {
            "title": self.title, "pageid": self.pageid, "revid": self.revid, "url": self.url,
            "permalink": self.permalink, "license": LICENSE, "license_url": LICENSE_URL,
            "attribution": f"\"{self.title}\", 한국어 위키백과 기여자, 판 {self.revid}, {LICENSE} "
                           f"({self.permalink})",
        }


class WikiClient:
    """MediaWiki API client (Korean Wikipedia by default) with the shared cache and retries.

    ``refresh`` on the calls asks again even when cached (a page changes with each revision; the cache makes
    a resumed run reuse what it fetched). ``min_interval`` spaces requests (Wikimedia asks for serial,
    unhurried API use); ``maxlag`` (seconds) asks the servers to refuse when replication lags more.
    """

    def __init__(
        self,
        *,
        api_url: str = WIKI_API_URL,
        cache_dir: str | Path | None = None,
        user_agent: str = DEFAULT_USER_AGENT,
        timeout: tuple[float, float] = (10.0, 60.0),
        max_attempts: int = 5,
        backoff_base: float = 2.0,
        backoff_max: float = 60.0,
        min_interval: float = 0.2,
        maxlag: int | None = 5,
        http: HttpClient | None = None,
    ):
        self.api_url = api_url
        self.maxlag = maxlag
        self.http = http or HttpClient(
            cache_dir=cache_dir,
            timeout=timeout,
            retry=RetryPolicy(max_attempts=max_attempts, backoff_base=backoff_base, backoff_max=backoff_max),
            headers={"User-Agent": user_agent},
            min_interval=min_interval,
        )
        parts = urlsplit(api_url)
        self.site = f"{parts.scheme}://{parts.netloc}"
        self.script_path = parts.path.rsplit("/", 1)[0]  # "/w"

    @staticmethod
    def _title_path(title: str) -> str:
        return quote(title.replace(" ", "_"), safe="/:()")

    def page_url(self, title: str) -> str:
        return f"{self.site}/wiki/{self._title_path(title)}"

    def permalink(self, title: str, revid: int) -> str:
        return f"{self.site}{self.script_path}/index.php?title={self._title_path(title)}&oldid={revid}"

    @staticmethod
    def _check(resp: Response) -> None:
        obj = json_or_retry(resp)
        err = obj.get("error") if isinstance(obj, dict) else None
        if not err:
            return
        code, info = str(err.get("code", "")), str(err.get("info", ""))
        if code in RETRYABLE_ERRORS:
            lag = err.get("lag")
            raise RetryableResponse(f"MediaWiki error {code} ({info})", code=code,
                                    retry_after=float(lag) if isinstance(lag, (int, float)) else None)
        if code in ("missingtitle", "invalidtitle", "nosuchpageid"):
            raise WikiPageMissing(f"{resp.request}: page missing ({code}: {info})", code, info)
        raise WikiError(f"{resp.request}: MediaWiki error {code} ({info})", code, info)

    def _get(self, params: dict[str, Any], refresh: bool) -> dict[str, Any]:
        full = {**params, "format": "json", "formatversion": "2"}
        if self.maxlag is not None:
            full["maxlag"] = str(self.maxlag)
        return self.http.get(self.api_url, full, check=self._check, refresh=refresh).json()

    def parse_page(self, title: str, *, refresh: bool = False) -> WikiPage:
        """The rendered HTML and revision of ``title`` (redirects followed). Raises :class:`WikiPageMissing`."""
        obj = self._get(
            {"action": "parse", "page": title, "prop": "text|revid", "redirects": "1", "disableeditsection": "1",
             "disabletoc": "1"},
            refresh,
        )
        parse = obj.get("parse") or {}
        text = parse.get("text")
        if isinstance(text, dict):  # formatversion=1 shape, tolerated
            text = text.get("*", "")
        real_title = str(parse.get("title") or title)
        revid = int(parse.get("revid") or 0)
        return WikiPage(
            title=real_title, pageid=int(parse.get("pageid") or 0), revid=revid, html=str(text or ""),
            url=self.page_url(real_title), permalink=self.permalink(real_title, revid),
        )

    def category_members(
        self, category: str, *, namespace: int = 0, limit: int | None = None, refresh: bool = False
    ) -> list[str]:
        """Titles in ``category`` (``분류:`` prefix added when missing), following ``continue`` to the end or
        to ``limit`` titles."""
        if not re.match(r"^(분류|Category):", category, re.IGNORECASE):
            category = f"분류:{category}"
        titles: list[str] = []
        cont: dict[str, Any] = {}
        while True:
            obj = self._get(
                {"action": "query", "list": "categorymembers", "cmtitle": category, "cmnamespace": str(namespace),
                 "cmlimit": "500", **cont},
                refresh,
            )
            for m in (obj.get("query") or {}).get("categorymembers") or []:
                titles.append(str(m.get("title")))
                if limit is not None and len(titles) >= limit:
                    return titles
            nxt = obj.get("continue")
            if not isinstance(nxt, dict) or not nxt:
                return titles
            cont = {str(k): str(v) for k, v in nxt.items()}


# --------------------------------------------------------------------------------------------------
# Cleaning
# --------------------------------------------------------------------------------------------------


def _classes(el: HtmlElement) -> set[str]:
    return set((el.get("class") or "").split())


def _is_wikitable(el: HtmlElement) -> bool:
    return el.tag == "table" and "wikitable" in _classes(el)


def _removable(el: HtmlElement) -> bool:
    if el.tag in _DROP_TAGS:
        return True
    cls = _classes(el)
    if el.tag == "sup" and cls & {"reference", "noprint", "mw-ref"}:
        return True
    if cls & {"mw-editsection", "sortkey", "reference", "mw-cite-backlink", "noprint", "mw-empty-elt"}:
        return True
    return bool(_HIDDEN.search(el.get("style") or ""))


def clean_table(table: HtmlElement) -> str:
    """The cleaned HTML of a wikitable (a copy; ``table`` is not modified). See the module docstring."""
    table = lxml.html.fromstring(lxml.html.tostring(table, encoding="unicode", with_tail=False))
    for el in [e for e in table.iter() if isinstance(e.tag, str) and e is not table and _removable(e)]:
        if el.getparent() is not None:
            el.drop_tree()  # keeps the tail text
    for el in [e for e in table.iter() if not isinstance(e.tag, str)]:  # comments, processing instructions
        el.drop_tree()
    for el in list(table.iter()):
        if el is not table and el.tag not in _KEEP_TAGS:
            el.drop_tag()  # a, span, abbr...: the text stays, the element goes
    for el in table.iter():
        for attr in list(el.attrib):
            if attr not in _KEEP_ATTRS or el.tag not in ("td", "th"):
                del el.attrib[attr]
    return lxml.html.tostring(table, encoding="unicode", with_tail=False)


@dataclass
class WikiTable:
    index: int  # 1-based among the page's top-level wikitables
    heading: str  # nearest preceding section heading
    display_html: str  # cleaned table, what is rendered
    label_html: str  # normalised label
    n_rows: int
    n_cols: int
    text_length: int
    error: str = ""  # why the table could not be read (``span_invalid: ...`` or the exception's type and message)


def _refused_span(display: str) -> str:
    """The first numeric rowspan/colspan the table model refuses (thousands of digits, over its limit), or ""."""
    root = lxml.html.fromstring(display)
    for cell in root.iter("td", "th"):
        for name in ("rowspan", "colspan"):
            raw = cell.get(name)
            if raw is not None and re.match(r"\s*\d", raw):
                _, problem = parse_span(raw, name)
                if problem:
                    return problem
    return ""


def _heading_text(el: HtmlElement) -> str:
    parts = [t for t in el.itertext()]
    return re.sub(r"\s+", " ", "".join(parts)).strip()


def extract_wikitables(html: str) -> list[WikiTable]:
    """Every top-level wikitable of a parsed page, cleaned, with its nearest preceding heading."""
    if not html or not html.strip():
        return []
    root = lxml.html.fromstring(f"<div>{html}</div>")
    for junk in root.xpath("//*[contains(concat(' ', normalize-space(@class), ' '), ' mw-editsection ')]"):
        junk.drop_tree()
    out: list[WikiTable] = []
    heading = ""
    for el in root.iter():
        if not isinstance(el.tag, str):
            continue
        if el.tag in ("h2", "h3", "h4", "h5", "h6"):
            heading = _heading_text(el)
        elif _is_wikitable(el) and not any(_is_wikitable(a) for a in el.iterancestors()):
            display, label, n_rows, n_cols, text, error = "", "", 0, 0, 0, ""
            try:
                display = clean_table(el)
                bad = _refused_span(display)
                if bad:
                    error = f"span_invalid: {bad}"
                else:
                    label = normalize_html(display)
                    n_rows, n_cols, text = measure_label(label)
            except TableParseError:
                label, n_rows, n_cols, text = "", 0, 0, 0
            except Exception as exc:  # any failure is this table's, named in its reject
                error = f"{type(exc).__name__}: {str(exc)[:300]}"
            out.append(WikiTable(len(out) + 1, heading, display, label, n_rows, n_cols, text, error))
    return out


# --------------------------------------------------------------------------------------------------
# Partitions: stable page batches
# --------------------------------------------------------------------------------------------------


def wiki_batch_keys(n_batches: int) -> list[str]:
    """Every batch key, ``batch-000`` .. ``batch-{n-1}``: the static partitions of the wiki source."""
    if n_batches < 1:
        raise ValueError("n_batches must be at least 1")
    return [f"batch-{i:03d}" for i in range(n_batches)]


def wiki_batch_key(title: str, n_batches: int) -> str:
    """The batch of a page: a hash of its title, so adding or removing a page changes only its own batch."""
    digest = hashlib.sha256(title.strip().replace("_", " ").encode("utf-8")).digest()
    return f"batch-{int.from_bytes(digest[:8], 'big') % n_batches:03d}"


def wiki_batches(titles: Iterable[str], n_batches: int) -> dict[str, list[str]]:
    """``{batch key: sorted titles}`` for every key (empty batches included)."""
    batches: dict[str, list[str]] = {k: [] for k in wiki_batch_keys(n_batches)}
    for t in dict.fromkeys(t.strip() for t in titles if t and t.strip()):
        batches[wiki_batch_key(t, n_batches)].append(t)
    return {k: sorted(v) for k, v in batches.items()}


def resolve_pages(
    client: WikiClient,
    pages: Iterable[str] = (),
    categories: Iterable[str] = (),
    *,
    max_per_category: int | None = None,
    refresh: bool = False,
) -> list[str]:
    """The configured pages plus the members of the configured categories, deduplicated and sorted."""
    titles = {p.strip() for p in pages if p and p.strip()}
    for cat in categories:
        titles.update(client.category_members(cat, limit=max_per_category, refresh=refresh))
    return sorted(titles)


# --------------------------------------------------------------------------------------------------
# collect_wiki
# --------------------------------------------------------------------------------------------------


def table_pending(
    t: WikiTable, filename: str, meta: dict[str, Any], *, min_rows: int = 2, min_cols: int = 2,
    max_rows: int | None = 200, where: str = "",
) -> tuple[list[PendingTable], list[Reject]]:
    """What one wikitable becomes: pairs to render (the cleaned table drawn with :data:`WIKITABLE_CSS`, its
    normalised form the label; row windows when it is over the token budget) or a reject with its reason."""
    where = where or filename
    if t.error:
        reason = "span_invalid" if t.error.startswith("span_invalid") else "table_failed"
        return [], [Reject(SOURCE, filename, "load", reason, f"{where}: {t.error}", extra=meta)]
    if not t.label_html:
        return [], [Reject(SOURCE, filename, "load", "table_unreadable",
                           f"{where}: nothing table-like left after cleaning", extra=meta)]
    refusal = size_refusal(t.n_rows, t.n_cols, t.text_length, min_rows=min_rows, min_cols=min_cols, max_rows=None)
    if refusal:
        return [], [Reject(SOURCE, filename, "load", refusal[0], f"{where}: {refusal[1]}", extra=meta)]
    try:
        return split_pending(SOURCE, PendingTable(filename, t.display_html, t.label_html, meta, WIKITABLE_CSS),
                             max_rows=max_rows)
    except Exception as exc:
        return [], [Reject(SOURCE, filename, "load", "table_failed", f"{where}: {type(exc).__name__}: {exc}",
                           extra=meta)]


def collect_wiki(
    client: WikiClient,
    pages: Sequence[str],
    renderer: Any,
    *,
    max_tables_per_page: int | None = None,
    min_rows: int = 2,
    min_cols: int = 2,
    max_rows: int | None = 200,
    refresh: bool = False,
    css: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> SourceResult:
    """One wiki partition: the wikitables of ``pages`` (one batch), cleaned and rendered.

    Knobs: ``max_tables_per_page`` (the first N good tables of a page), ``min_rows``/``min_cols``/
    ``max_rows`` (size rules), ``refresh`` (fetch the pages again even when cached: the latest revision),
    ``css`` (renderer), ``progress(done, total)`` (over pages, then over renders).

    Pairs are named ``wiki_<pageid>_<NNN>.png`` (NNN: the table's position among the page's wikitables;
    ``..._p01.png``... for the row windows of a table over the token budget or ``max_rows``), drawn with
    :data:`WIKITABLE_CSS`. Rejects (stage ``load``): ``page_missing``, ``no_tables``, ``table_too_small``,
    ``table_empty``, ``table_too_large`` (cannot be split), ``table_unreadable``, ``span_invalid``,
    ``table_failed`` (any exception, type and message), ``over_cap`` (beyond ``max_tables_per_page``),
    ``render_failed``. Network failures raise.
    """
    http_start = client.http.stats.as_dict()
    result = SourceResult()
    pending: list[PendingTable] = []
    titles = list(dict.fromkeys(p.strip() for p in pages if p and p.strip()))
    found = 0
    for n, title in enumerate(titles, 1):
        if progress is not None:
            progress(n - 1, len(titles))
        try:
            page = client.parse_page(title, refresh=refresh)
        except WikiPageMissing as exc:
            result.rejects.append(Reject(SOURCE, f"wiki_{title}", "load", "page_missing", str(exc),
                                         extra={"title": title}))
            continue
        attribution = page.attribution()
        tables = extract_wikitables(page.html)
        found += len(tables)
        if not tables:
            result.rejects.append(Reject(SOURCE, f"wiki_{page.pageid}", "load", "no_tables",
                                         f"page {page.title!r} (revid {page.revid}) has no wikitable",
                                         extra=attribution))
            continue
        kept = 0
        for t in tables:
            filename = f"wiki_{page.pageid}_{t.index:03d}.png"
            meta = {**attribution, "table_index": t.index, "heading": t.heading, "rows": t.n_rows, "cols": t.n_cols}
            windows, refused = table_pending(t, filename, meta, min_rows=min_rows, min_cols=min_cols,
                                             max_rows=max_rows, where=f"page {page.title!r} table {t.index}")
            if windows and max_tables_per_page is not None and kept >= max_tables_per_page:
                result.rejects.append(Reject(SOURCE, filename, "load", "over_cap",
                                             f"page {page.title!r} table {t.index}: beyond max_tables_per_page "
                                             f"{max_tables_per_page}", extra=meta))
                continue
            kept += bool(windows)
            pending += windows
            result.rejects += refused
    if progress is not None and titles:
        progress(len(titles), len(titles))
    pairs, render_rejects = render_pending(SOURCE, pending, renderer, css=css, progress=progress)
    result.pairs += pairs
    result.rejects += render_rejects
    result.stats = {
        "pages": len(titles), "tables_found": found, "tables_kept": len(pending), "pairs": len(result.pairs),
        "rejects": len(result.rejects), "reject_reasons": reject_reasons(result.rejects),
        **client.http.stats.since(http_start),
    }
    return result
