"""Scraped sources — DART (by filing month), FSS (by statistics period), Korean Wikipedia (by page batch) —
their validation assets, and the weekly rescrape schedules of DART and FSS."""

import os
from pathlib import Path

import dagster as dg
from pydantic import Field

from ..resources import DartResource, FssResource, OcrFtPaths, RendererResource, WikiResource
from ..sources.wiki import wiki_batch_key, wiki_batch_keys
from .common import materialize_source, progress_logger
from .sources import SOURCE_GROUP, validated_asset

DART_START = os.environ.get("OCR_FT_DART_START", "2023-01")  # YYYY-MM
FSS_START = os.environ.get("OCR_FT_FSS_START", "2020-01")  # first month of the first quarter
WIKI_BATCHES = int(os.environ.get("OCR_FT_WIKI_BATCHES", "4"))
DEFAULT_WIKI_PAGES = Path(__file__).resolve().parents[1] / "sources" / "wiki_pages.txt"
SEOUL = "Asia/Seoul"


def fss_period(partition_key: str) -> str:
    """The FSS statistics period of a partition: quarters are keyed by their first month, ``2024-04`` is
    ``2024Q2``."""
    year, month = partition_key.split("-")
    if (int(month) - 1) % 3:
        raise ValueError(f"FSS partition {partition_key!r} does not start a quarter")
    return f"{year}Q{(int(month) - 1) // 3 + 1}"


dart_partitions = dg.MonthlyPartitionsDefinition(start_date=DART_START, fmt="%Y-%m", end_offset=1, timezone=SEOUL)
# quarters, keyed by their first month; a quarter's partition exists once the quarter is over
fss_partitions = dg.TimeWindowPartitionsDefinition(cron_schedule="0 0 1 1,4,7,10 *", start=FSS_START, fmt="%Y-%m",
                                                   timezone=SEOUL)
wiki_partitions = dg.StaticPartitionsDefinition(wiki_batch_keys(WIKI_BATCHES))


class DartConfig(dg.Config):
    corp_codes: list[str] = Field(default_factory=list, description="DART corp codes; empty: every company.")
    report_types: list[str] = Field(["A001", "A002", "A003"], description="pblntf_detail_ty codes (or pblntf_ty letters).")
    max_filings: int | None = Field(100, description="First N filings of the month (None: all).")
    max_tables_per_filing: int | None = Field(30, description="At most N kept tables of each filing (None: all).")
    selection: str = Field("financial_first", description="Which tables a filing contributes: financial_first "
                           "(financial statements and notes first), document_order, or all (no cap).")
    refresh_listing: bool = Field(False, description="Ask the search again even when cached (set by the weekly schedule).")


@dg.asset(partitions_def=dart_partitions, group_name=SOURCE_GROUP, code_version="2", pool="dart_api", kinds={"python"},
          description="Tables of the DART filings received in one month (OpenDART list.json + document.xml), rendered.")
def dart(context: dg.AssetExecutionContext, config: DartConfig, paths: OcrFtPaths, dart: DartResource,
         renderer: RendererResource) -> dg.MaterializeResult:
    from ..sources.dart import collect_dart

    with renderer.open(paths) as r:
        result = collect_dart(dart.client(paths), context.partition_key, r, corp_codes=config.corp_codes or None,
                              report_types=config.report_types, max_filings=config.max_filings,
                              max_tables_per_filing=config.max_tables_per_filing, selection=config.selection,
                              refresh_listing=config.refresh_listing, progress=progress_logger(context, "dart"))
    return materialize_source(context, paths, "dart", result)


class FssConfig(dg.Config):
    lrg_div: str = Field("A", description="FISIS sector (A: domestic banks).")
    list_nos: list[str] = Field(default_factory=list, description="Statistics tables; empty: every table of the sector.")
    finance_cds: list[str] = Field(default_factory=list, description="Companies; empty: the first max_companies.")
    max_companies: int = 5
    history: int = Field(4, description="Periods shown per table.")
    max_tables: int | None = Field(60, description="At most N tables per partition (None: all).")
    refresh: bool = Field(False, description="Ask again even when cached (set by the weekly schedule).")


@dg.asset(partitions_def=fss_partitions, group_name=SOURCE_GROUP, code_version="1", pool="fss_api", kinds={"python"},
          description="FSS FISIS statistics of one quarter (partition 2024-04 = 2024Q2) as tables with multi-level "
          "headers, rendered.")
def fss(context: dg.AssetExecutionContext, config: FssConfig, paths: OcrFtPaths, fss: FssResource,
        renderer: RendererResource) -> dg.MaterializeResult:
    from ..sources.fss import collect_fss

    with renderer.open(paths) as r:
        result = collect_fss(fss.client(paths), fss_period(context.partition_key), r, lrg_div=config.lrg_div,
                             list_nos=config.list_nos or None, finance_cds=config.finance_cds or None,
                             max_companies=config.max_companies, history=config.history, max_tables=config.max_tables,
                             refresh=config.refresh, progress=progress_logger(context, "fss"))
    return materialize_source(context, paths, "fss", result)


def read_page_list(path: str | Path) -> list[str]:
    p = Path(path)
    if not p.is_file():
        raise dg.Failure(f"wiki page list {p} does not exist")
    lines = (line.split("#", 1)[0].strip() for line in p.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line]


class WikiConfig(dg.Config):
    pages_file: str = Field(default_factory=lambda: os.environ.get("OCR_FT_WIKI_PAGES", str(DEFAULT_WIKI_PAGES)),
                            description="Text file of page titles (env OCR_FT_WIKI_PAGES).")
    categories: list[str] = Field(default_factory=list, description="Categories whose member pages are added.")
    max_tables_per_page: int | None = None
    refresh: bool = Field(False, description="Fetch the pages again (latest revision) even when cached.")


@dg.asset(partitions_def=wiki_partitions, group_name=SOURCE_GROUP, code_version="1", pool="wiki_api", kinds={"python"},
          description="Cleaned wikitables of one batch of Korean Wikipedia pages (CC BY-SA 4.0, attribution in metadata).")
def wiki(context: dg.AssetExecutionContext, config: WikiConfig, paths: OcrFtPaths, wiki: WikiResource,
         renderer: RendererResource) -> dg.MaterializeResult:
    from ..sources.wiki import WikiUserAgentError, collect_wiki, resolve_pages

    try:
        client = wiki.client(paths)
    except WikiUserAgentError as exc:  # refuse to start: Wikimedia may block an anonymous client without notice
        raise dg.Failure(description=str(exc)) from None
    titles = resolve_pages(client, read_page_list(config.pages_file), config.categories)
    batch = [t for t in titles if wiki_batch_key(t, WIKI_BATCHES) == context.partition_key]
    context.log.info(f"{len(batch)} of {len(titles)} pages fall in {context.partition_key}")
    with renderer.open(paths) as r:
        result = collect_wiki(client, batch, r, max_tables_per_page=config.max_tables_per_page, refresh=config.refresh,
                              progress=progress_logger(context, "wiki"))
    return materialize_source(context, paths, "wiki", result, pages=len(batch))


dart_validated = validated_asset("dart", dart_partitions)
fss_validated = validated_asset("fss", fss_partitions)
wiki_validated = validated_asset("wiki", wiki_partitions)


@dg.schedule(cron_schedule="0 3 * * 1", target=dart, execution_timezone=SEOUL, name="dart_weekly_rescrape",
             description="Mondays 03:00 KST: rescrape the newest DART month (the listing grows during the month).")
def dart_weekly_rescrape(context: dg.ScheduleEvaluationContext):
    key = context.scheduled_execution_time.strftime("%Y-%m")
    if key not in dart_partitions.get_partition_keys(dynamic_partitions_store=None, current_time=context.scheduled_execution_time):
        return dg.SkipReason(f"DART partition {key} is not defined (start {DART_START})")
    return dg.RunRequest(run_key=f"dart-{key}-{context.scheduled_execution_time:%Y%m%d}", partition_key=key,
                         run_config={"ops": {"dart": {"config": {"refresh_listing": True}}}})


@dg.schedule(cron_schedule="0 4 * * 1", target=fss, execution_timezone=SEOUL, name="fss_weekly_rescrape",
             description="Mondays 04:00 KST: rescrape the newest complete FSS quarter (figures get revised).")
def fss_weekly_rescrape(context: dg.ScheduleEvaluationContext):
    keys = fss_partitions.get_partition_keys(current_time=context.scheduled_execution_time)
    if not keys:
        return dg.SkipReason(f"no FSS quarter has ended since {FSS_START}")
    key = keys[-1]
    return dg.RunRequest(run_key=f"fss-{key}-{context.scheduled_execution_time:%Y%m%d}", partition_key=key,
                         run_config={"ops": {"fss": {"config": {"refresh": True}}}})


SCRAPED_ASSETS = [dart, fss, wiki]
SCRAPED_VALIDATION_ASSETS = [dart_validated, fss_validated, wiki_validated]
SCHEDULES = [dart_weekly_rescrape, fss_weekly_rescrape]
