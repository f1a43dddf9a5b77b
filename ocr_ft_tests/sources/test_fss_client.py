"""FSS FISIS client against a local fake: error codes, key secrecy, merged headers, collect_fss, the cache."""

from __future__ import annotations

import logging

import pytest

from ocr_ft.sources.fss import (
    FssAuthError,
    FssClient,
    FssError,
    FssRateLimitError,
    StatisticsData,
    ValueColumn,
    collect_fss,
    fss_period,
    fss_periods,
    fss_table_html,
    header_rows,
    row_header_cells,
)
from ocr_ft.tables import normalize_html, parse_tables, build_grid, validate_label

KEY = "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6"


def ok(rows, **extra):
    return {"result": {"err_cd": "000", "err_msg": "정상", "total_count": str(len(rows)), "list": rows, **extra}}


def err(code, msg):
    return {"result": {"err_cd": code, "err_msg": msg}}


COMPANIES = [
    {"finance_cd": "0010927", "finance_nm": "국민은행", "finance_path": "국내은행>시중은행"},
    {"finance_cd": "0010001", "finance_nm": "[폐]옛은행", "finance_path": "국내은행>시중은행"},
    {"finance_cd": "0010030", "finance_nm": "신한은행", "finance_path": "국내은행>시중은행"},
]
LISTS = [
    {"lrg_div_nm": "국내은행", "sml_div_nm": "재무현황", "list_no": "SA003", "list_nm": "요약재무상태표(자산)"},
    {"lrg_div_nm": "국내은행", "sml_div_nm": "재무현황", "list_no": "SA021", "list_nm": "빈 통계"},
]
ACCOUNTS = [("A", "자산총계"), ("A1", "자산총계>현금및예치금"), ("A2", "자산총계>대출채권"), ("B", "부채총계")]
MONTHS = ["202306", "202309", "202312", "202403"]


def info_rows(finance_cd, finance_nm):
    return [
        {"base_month": m, "finance_cd": finance_cd, "finance_nm": finance_nm, "account_cd": cd, "account_nm": nm,
         "a": str(1000 * (i + 1) + j), "b": f"{10 + i}.5"}
        for j, m in enumerate(MONTHS) for i, (cd, nm) in enumerate(ACCOUNTS)
    ]


@pytest.fixture
def fisis(fake_server, reply):
    def info(params):
        if params["listNo"] == "SA021":
            return reply(200, ok([]))
        name = {c["finance_cd"]: c["finance_nm"] for c in COMPANIES}[params["financeCd"]]
        return reply(200, ok(info_rows(params["financeCd"], name),
                             description=[{"column_id": "a", "column_nm": "금액"}, {"column_id": "b", "column_nm": "구성비"}],
                             unit="백만원,%", date_of_settlement="12/31"))

    fake_server.route("/openapi/companySearch.json", reply(200, ok(COMPANIES)))
    fake_server.route("/openapi/statisticsListSearch.json", reply(200, ok(LISTS)))
    fake_server.route("/openapi/statisticsInfoSearch.json", info)
    return fake_server


def make_client(server, tmp_path, **kw):
    return FssClient(KEY, cache_dir=tmp_path / "cache", base_url=f"{server.url}/openapi", max_attempts=3,
                     backoff_base=0.0, min_interval=0.0, **kw)


def test_statistics_parses_columns_and_units(fisis, tmp_path):
    data = make_client(fisis, tmp_path).statistics("SA003", "0010927", "Q", "202306", "202403")
    assert data.columns == [ValueColumn("a", "금액", "백만원"), ValueColumn("b", "구성비", "%")]
    assert len(data.rows) == 16 and data.date_of_settlement == "12/31"
    hit = fisis.hits("/openapi/statisticsInfoSearch.json")[0].params
    assert hit == {"lang": "kr", "auth": KEY, "financeCd": "0010927", "listNo": "SA003", "term": "Q",
                   "startBaseMm": "202306", "endBaseMm": "202403"}


def test_lists_and_companies(fisis, tmp_path):
    c = make_client(fisis, tmp_path)
    assert [s.list_no for s in c.statistics_lists("A", "B")] == ["SA003", "SA021"]
    assert fisis.hits("/openapi/statisticsListSearch.json")[0].params["smlDiv"] == "B"
    assert [x["finance_nm"] for x in c.companies("A")] == ["국민은행", "[폐]옛은행", "신한은행"]


@pytest.mark.parametrize("code", ["010", "011", "012", "013"])
def test_bad_key_names_env_var_and_hides_key(fake_server, reply, tmp_path, caplog, code):
    caplog.set_level(logging.DEBUG)
    fake_server.route("/openapi/companySearch.json", reply(200, err(code, "미등록 인증키")))
    c = make_client(fake_server, tmp_path)
    with pytest.raises(FssAuthError) as info:
        c.companies("A")
    msg = str(info.value)
    assert "FSS_API_KEY" in msg and code in msg and "auth=***" in msg
    assert KEY not in msg and KEY not in caplog.text and KEY not in repr(c)
    assert len(fake_server.hits()) == 1


def test_internal_error_900_is_retried(fake_server, script, reply, tmp_path):
    fake_server.route("/openapi/companySearch.json", script(reply(200, err("900", "정의되지 않은 오류")),
                                                            reply(200, ok(COMPANIES))))
    assert len(make_client(fake_server, tmp_path).companies("A")) == 3
    assert len(fake_server.hits()) == 2


def test_daily_quota_is_not_retried(fake_server, reply, tmp_path):
    fake_server.route("/openapi/companySearch.json", reply(200, err("020", "일일검색 허용횟수 초과")))
    with pytest.raises(FssRateLimitError):
        make_client(fake_server, tmp_path).companies("A")
    assert len(fake_server.hits()) == 1


def test_other_codes_name_code_and_message(fake_server, reply, tmp_path):
    fake_server.route("/openapi/statisticsInfoSearch.json", reply(200, err("103", "조회기간이 40분기를 초과하였습니다.")))
    with pytest.raises(FssError, match="103.*40분기"):
        make_client(fake_server, tmp_path).statistics("SA003", "0010927", "Q", "201001", "202403")


def test_500_forever_names_request_without_key(fake_server, reply, tmp_path):
    fake_server.route("/openapi/companySearch.json", reply(502, "bad gateway"))
    with pytest.raises(Exception) as info:
        make_client(fake_server, tmp_path).companies("A")
    assert "companySearch.json?lang=kr&auth=***&partDiv=A" in str(info.value) and KEY not in str(info.value)


# ---- merged headers ---------------------------------------------------------------------------------


def test_header_rows_merge_shared_prefixes():
    rows = header_rows([["2023년", "4분기"], ["2024년", "1분기", "금액"], ["2024년", "1분기", "비율"]])
    assert rows == [
        [(0, "2023년", 1, 1), (1, "2024년", 1, 2)],
        [(0, "4분기", 2, 1), (1, "1분기", 1, 2)],
        [(1, "금액", 1, 1), (2, "비율", 1, 1)],
    ]


def test_row_header_cells_group_accounts():
    cells = row_header_cells([["자산"], ["자산", "현금"], ["자산", "대출"], ["부채"]])
    # the group cell spans its own row (with its own values) and its children; each name drawn once
    assert cells == [[("자산", 3, 1), ("", 1, 1)], [("현금", 1, 1)], [("대출", 1, 1)], [("부채", 1, 2)]]
    # a group without a row of its own spans only its children
    assert row_header_cells([["이익잉여금", "전입액"], ["이익잉여금", "적립금"]]) == [
        [("이익잉여금", 2, 1), ("전입액", 1, 1)], [("적립금", 1, 1)]]


def table_of(html):
    label = normalize_html(html)
    report = validate_label(label)
    assert report.grid_consistent, report.problems
    return label, build_grid(parse_tables(label)[0])


def test_fss_table_groups_periods_by_year_and_accounts_hierarchically():
    cols = [ValueColumn("a", "금액", "백만원"), ValueColumn("b", "구성비", "%")]
    data = StatisticsData("SA003", "0010927", "Q", "202306", "202403", cols, info_rows("0010927", "국민은행"))
    label, grid = table_of(fss_table_html([data]))
    assert label.startswith(
        '<table><thead><tr><th rowspan="3" colspan="2">구분</th><th colspan="6">2023년</th>'
        '<th colspan="2">2024년</th></tr><tr><th colspan="2">2분기</th>'
    )
    assert "<th>금액(백만원)</th><th>구성비(%)</th>" in label
    assert '<th rowspan="3">자산총계</th><th></th><td>1,000</td>' in label  # the group row holds its own values
    assert '<tr><th>현금및예치금</th><td>2,000</td><td>11.5</td><td>2,001</td>' in label
    assert '<th colspan="2">부채총계</th>' in label
    assert (grid.n_rows, grid.n_cols) == (3 + 4, 2 + 4 * 2)


def test_fss_table_single_value_column_and_shared_unit_yearly():
    cols = [ValueColumn("a", "말잔", "억원")]
    rows = [{"base_month": m, "account_cd": "A", "account_nm": "예수금", "a": v} for m, v in [("202212", "-1234.5"), ("202312", "99")]]
    label, grid = table_of(fss_table_html([StatisticsData("SA010", "1", "Y", "202212", "202312", cols, rows)]))
    assert label == ("<table><thead><tr><th>구분 (단위: 억원)</th><th>2022년</th><th>2023년</th></tr></thead>"
                     "<tbody><tr><th>예수금</th><td>-1,234.5</td><td>99</td></tr></tbody></table>")


def test_fss_table_groups_companies():
    cols = [ValueColumn("a", "금액", "백만원")]
    data = [StatisticsData("SA003", cd, "Q", "202403", "202403", cols,
                           [r for r in info_rows(cd, nm) if r["base_month"] == "202403"])
            for cd, nm in [("0010927", "국민은행"), ("0010030", "신한은행")]]
    label, grid = table_of(fss_table_html(data))
    assert '<th rowspan="4">국민은행</th><th rowspan="3">자산총계</th><th></th>' in label
    assert '<th rowspan="4">신한은행</th>' in label
    assert grid.n_rows == 2 + 8


# ---- collect_fss ------------------------------------------------------------------------------------


def test_collect_fss(fisis, fake_renderer, tmp_path):
    result = collect_fss(make_client(fisis, tmp_path), "2024Q1", fake_renderer, list_nos=["SA003", "SA021", "SX999"])
    assert sorted(p.original_filename for p in result.pairs) == [
        "fss_2024Q1_SA003_0010030.png", "fss_2024Q1_SA003_0010927.png"]  # closed "[폐]" company skipped
    pair = result.pairs[0]
    assert pair.source == "fss" and validate_label(pair.html).has_colspan
    assert pair.metadata["list_nm"] == "요약재무상태표(자산)" and pair.metadata["term"] == "Q"
    assert pair.metadata["start_base_mm"] == "202306" and pair.metadata["end_base_mm"] == "202403"
    assert sorted((r.original_filename, r.reason) for r in result.rejects) == [
        ("fss_2024Q1_SA021_0010030.png", "no_data"), ("fss_2024Q1_SA021_0010927.png", "no_data"),
        ("fss_2024Q1_SX999", "statistics_list_unknown")]
    hit = fisis.hits("/openapi/statisticsInfoSearch.json")[0].params
    assert (hit["term"], hit["startBaseMm"], hit["endBaseMm"]) == ("Q", "202306", "202403")

    before = len(fisis.hits())
    again = collect_fss(make_client(fisis, tmp_path), "2024Q1", fake_renderer, list_nos=["SA003", "SA021", "SX999"])
    assert len(fisis.hits()) == before and again.stats["http_requests"] == 0
    assert again.manifest_rows() == result.manifest_rows()


def test_collect_fss_grouped_companies(fisis, fake_renderer, tmp_path):
    result = collect_fss(make_client(fisis, tmp_path), "2024Q1", fake_renderer, list_nos=["SA003"],
                         finance_cds=["0010927", "0010030"], group_companies=True, history=1)
    assert [p.original_filename for p in result.pairs] == ["fss_2024Q1_SA003.png"]
    assert "국민은행" in result.pairs[0].html and "신한은행" in result.pairs[0].html
    assert result.pairs[0].metadata["finance_cds"] == ["0010927", "0010030"]


def test_periods():
    assert fss_period("2024Q1").term == "Q"
    assert (fss_period("2024Q1").start_base_mm, fss_period("2024Q1").end_base_mm) == ("202306", "202403")
    assert (fss_period("2023Q4", history=1).start_base_mm, fss_period("2023Q4", 1).end_base_mm) == ("202312", "202312")
    assert (fss_period("2023").term, fss_period("2023").start_base_mm, fss_period("2023").end_base_mm) == ("Y", "202012", "202312")
    assert fss_periods("2023Q3", "2024Q2") == ["2023Q3", "2023Q4", "2024Q1", "2024Q2"]
    assert fss_periods("2021", "2023") == ["2021", "2022", "2023"]
    for bad in ("2024Q5", "24Q1", "2024-03"):
        with pytest.raises(ValueError):
            fss_period(bad)
    with pytest.raises(ValueError):
        fss_period("2024Q1", history=41)


# ---- real FISIS rows (../shared/external/real/fss) ---------------------------------------------------


def real_sa004_rows():
    import csv

    from factories import shared_external

    with open(shared_external("real", "fss", "SA004_kookmin_201703_rows.csv"), encoding="utf-8") as fh:
        return [{"base_month": r["년월"], "finance_cd": r["금융회사코드"], "finance_nm": r["금융회사명"],
                 "account_cd": r["코드"], "account_nm": r["구분"], "a": r["금액"], "b": r["구성비"]}
                for r in csv.DictReader(fh)]


def test_real_sa004_rows_give_a_hierarchical_table_with_every_account():
    from ocr_ft.tables import parse_tables

    rows = real_sa004_rows()
    data = StatisticsData("SA004", "0010927", "Q", "201703", "201703",
                          [ValueColumn("a", "금액"), ValueColumn("b", "구성비")], rows)
    label, grid = table_of(fss_table_html([data]))
    cells = [c for c in parse_tables(label)[0].cells()]
    texts = [c.text for c in cells]
    assert not any("_" in t for t in texts)  # never a raw path
    for r in rows:  # every account: its leaf name and both values
        assert r["account_nm"].split("_")[-1] in texts, r["account_nm"]
    assert len(rows) == 19 and grid.n_rows == 3 + 19  # 3 header rows, one row per account
    # values as a table shows them
    assert "0.29" in texts and "-0.01" in texts and ".29" not in texts and "234,598,387,000,000" in texts
    # group cells span their own row and their descendants, in tree order from account_cd
    assert '<th rowspan="13">예수부채</th><th colspan="3"></th><td>234,598,387,000,000</td>' in label
    assert '<th rowspan="5">원화예수금</th>' in label
    order = [t for t in texts if t in ("요구불예금", "외화예수금", "양도성예금증서", "(현재가치할인차금)", "차입부채",
                                      "부채총계")]
    assert order == ["요구불예금", "외화예수금", "양도성예금증서", "(현재가치할인차금)", "차입부채", "부채총계"]
    # FISIS renamed the parent (양도성예수금 vs 양도성예금증서): the children go under A113 by code
    assert '<th rowspan="3">양도성예금증서</th>' in label and "양도성예수금" not in texts


def test_long_real_table_is_split_along_group_boundaries_with_its_header(fake_renderer):
    from ocr_ft.sources.scraped_common import PendingTable, TokenBudget, split_pending

    data = StatisticsData("SA004", "0010927", "Q", "201703", "201703",
                          [ValueColumn("a", "금액"), ValueColumn("b", "구성비")], real_sa004_rows())
    label = normalize_html(fss_table_html([data]))
    budget = TokenBudget(max_seq_len=2048 + 16 + 600)  # 600 label tokens: the table (~1,000) does not fit
    windows, rejects = split_pending("fss", PendingTable("t.png", label, label, {}), budget=budget)
    assert not rejects and len(windows) >= 2
    header = label[: label.index("</thead>")]
    texts = []
    for w in windows:
        assert w.label_html.startswith(header)  # header rows repeated
        assert validate_label(w.label_html).grid_consistent
        from ocr_ft.dataset.validate import estimate_label_tokens
        assert estimate_label_tokens(w.label_html) <= budget.label_tokens
        texts += [c.text for c in parse_tables(w.label_html)[0].cells()][8:]
    # the first cut is where 예수부채's group ends: no group is cut when one boundary allows it
    # cuts fall where a top-level group ends: no group cell is repeated in two windows
    for group in ("예수부채", "차입부채"):
        assert sum(group in w.label_html for w in windows) == 1, group
    for leaf in ("요구불예금", "한은차입금", "부채총계", "(대손준비금 전입 필요액)"):
        assert sum(leaf in w.label_html for w in windows) == 1
    assert [w.original_filename for w in windows][:2] == ["t_p01.png", "t_p02.png"]


def test_value_of_thousands_of_digits_is_a_reject_of_that_list(fake_server, reply, tmp_path, fake_renderer):
    def info(params):
        rows = info_rows(params["financeCd"], "국민은행")
        if params["listNo"] == "SA003":
            rows[0]["a"] = "9" * 5000
        return reply(200, ok(rows, description=[{"column_id": "a", "column_nm": "금액"}], unit="백만원"))

    fake_server.route("/openapi/companySearch.json", reply(200, ok(COMPANIES[:1])))
    fake_server.route("/openapi/statisticsListSearch.json", reply(200, ok(
        LISTS[:1] + [{"lrg_div_nm": "국내은행", "sml_div_nm": "재무현황", "list_no": "SA004", "list_nm": "부채"}])))
    fake_server.route("/openapi/statisticsInfoSearch.json", info)
    result = collect_fss(make_client(fake_server, tmp_path), "2024Q1", fake_renderer)
    assert [p.original_filename for p in result.pairs] == ["fss_2024Q1_SA004_0010927.png"]
    (rej,) = result.rejects
    assert rej.reason == "value_invalid" and "SA003" in rej.detail and rej.original_filename.startswith("fss_2024Q1_SA003")


def test_term_is_learned_per_list_and_one_lists_error_is_a_reject(fake_server, reply, tmp_path, fake_renderer):
    """SH025 answers only H, SH022 answers only Y, SX001 fails: each list its own outcome, the partition goes on."""
    accepts = {"SA003": "Q", "SH025": "H", "SH022": "Y"}

    def info(params):
        if params["listNo"] == "SX001":
            return reply(200, err("101", "잘못된 통계표 번호"))
        if params["term"] != accepts[params["listNo"]]:
            return reply(200, err("102", "주기 오류"))
        months = {"Q": ["202309", "202312"], "H": ["202306", "202312"], "Y": ["202212", "202312"]}[params["term"]]
        rows = [{"base_month": m, "finance_cd": "0010927", "account_cd": "A", "account_nm": "자산", "a": "1"}
                for m in months] + [{"base_month": m, "finance_cd": "0010927", "account_cd": "B",
                                     "account_nm": "부채", "a": "2"} for m in months]
        return reply(200, ok(rows, description=[{"column_id": "a", "column_nm": "금액"}], unit="억원"))

    lists = [{"list_no": n, "list_nm": n} for n in ("SA003", "SH025", "SH022", "SX001")]
    fake_server.route("/openapi/companySearch.json", reply(200, ok(COMPANIES[:1])))
    fake_server.route("/openapi/statisticsListSearch.json", reply(200, ok(lists)))
    fake_server.route("/openapi/statisticsInfoSearch.json", info)
    result = collect_fss(make_client(fake_server, tmp_path), "2023Q4", fake_renderer, history=2)
    terms = {p.metadata["list_no"]: p.metadata["term"] for p in result.pairs}
    assert terms == {"SA003": "Q", "SH025": "H", "SH022": "Y"}
    assert "하반기" in next(p.html for p in result.pairs if p.metadata["list_no"] == "SH025")
    assert [(r.reason, r.extra["list_no"]) for r in result.rejects] == [("list_error", "SX001")]
    # remembered: a fresh client asks each list once with its own term, and an H list has no table in Q3
    fake_server.requests.clear()
    again = collect_fss(make_client(fake_server, tmp_path), "2023Q3", fake_renderer, history=2, refresh=True)
    asked = {(h.params["listNo"], h.params["term"]) for h in fake_server.hits("/openapi/statisticsInfoSearch.json")}
    assert {t for n, t in asked if n == "SH025"} == {"H"} and {t for n, t in asked if n == "SA003"} == {"Q"}
    assert again.stats["left_out_term_H_not_due"] == 1 and again.stats["left_out_term_Y_not_due"] == 1
    assert {p.metadata["list_no"] for p in again.pairs} == {"SA003"}


def test_tables_over_max_tables_are_counted_not_dropped(fisis, fake_renderer, tmp_path):
    result = collect_fss(make_client(fisis, tmp_path), "2024Q1", fake_renderer, list_nos=["SA003"], max_tables=1)
    assert len(result.pairs) == 1
    assert [(r.reason, r.original_filename) for r in result.rejects] == [("over_cap", "fss_2024Q1_SA003_0010927.png")]
