"""Korean Wikipedia client against a local MediaWiki fake: cleaning, attribution, categories, batches, cache."""

from __future__ import annotations

import pytest

from ocr_ft.sources.wiki import (
    LICENSE,
    WikiClient,
    WikiError,
    clean_table,
    collect_wiki,
    extract_wikitables,
    resolve_pages,
    wiki_batch_key,
    wiki_batch_keys,
    wiki_batches,
)
from ocr_ft.tables import validate_label

PAGE_HTML = """<div class="mw-content-ltr mw-parser-output" lang="ko" dir="ltr">
<p>대한민국의 은행 목록이다.<sup id="cite_ref-1" class="reference"><a href="#cite_note-1">[1]</a></sup></p>
<div class="mw-heading mw-heading2"><h2 id="시중은행">시중은행</h2><span class="mw-editsection"><span class="mw-editsection-bracket">[</span><a href="/w/index.php?title=x&action=edit">편집</a>]</span></div>
<style data-mw-deduplicate="TemplateStyles:r1">.mw-parser-output .x{color:red}</style>
<table class="wikitable sortable" style="text-align:center; width:100%">
<caption>2023년 말 기준</caption>
<tbody><tr><th rowspan="2" style="background:#eee">은행</th><th colspan="2">자산<sup class="reference"><a href="#n2">[주 1]</a></sup></th></tr>
<tr><th>총자산</th><th>증가율</th></tr>
<tr><td><a href="/wiki/KB국민은행" title="KB국민은행">KB국민은행</a><span class="mw-editsection">[편집]</span></td>
<td data-sort-value="530"><span style="display:none">0000530</span>530조 원</td>
<td><span data-sort-value="3.1">3.1%</span><sup class="noprint Inline-Template">[<i>출처 필요</i>]</sup></td></tr>
<tr><td><span class="flagicon"><img src="//upload.wikimedia.org/x.png" width="23" height="15"></span> 신한은행<br>(舊 조흥)</td>
<td><span class="sortkey">0000450</span>450조 원</td>
<td><table class="nested"><tr><td>내부 A</td><td>내부 B</td></tr><tr><td>1</td><td>2</td></tr></table></td></tr>
</tbody></table>
<div class="mw-heading mw-heading2"><h2 id="해외">해외</h2></div>
<table class="wikitable"><tr><th>단일</th></tr></table>
<table class="infobox"><tr><td>정보상자</td><td>무시</td></tr><tr><td>a</td><td>b</td></tr></table>
<table class="wikitable"><tr><td>FAIL_RENDER</td><td>x</td></tr><tr><td>y</td><td>z</td></tr></table>
</div>"""

CLEAN_LABEL = (
    '<table><tr><th rowspan="2">은행</th><th colspan="2">자산</th></tr><tr><th>총자산</th><th>증가율</th></tr>'
    "<tr><td>KB국민은행</td><td>530조 원</td><td>3.1%</td></tr>"
    "<tr><td>신한은행 (舊 조흥)</td><td>450조 원</td><td><table><tr><td>내부 A</td><td>내부 B</td></tr>"
    "<tr><td>1</td><td>2</td></tr></table></td></tr></table>"
)


def test_cleaning_removes_references_sort_keys_hidden_and_edit_links():
    tables = extract_wikitables(PAGE_HTML)
    assert [t.index for t in tables] == [1, 2, 3]
    first = tables[0]
    assert first.label_html == CLEAN_LABEL
    assert first.heading == "시중은행"
    display = first.display_html
    for gone in ("[1]", "[주 1]", "출처 필요", "0000530", "0000450", "편집", "caption", "2023년 말 기준", "style=",
                 "class=", "data-sort-value", "<img", "<a ", "<span"):
        assert gone not in display, gone
    for kept in ('rowspan="2"', 'colspan="2"', "<br>", "530조 원", "3.1%", "내부 A"):
        assert kept in display, kept
    report = validate_label(first.label_html)
    assert report.grid_consistent and report.nesting_level == 2


def test_infobox_is_not_a_wikitable_and_small_tables_are_found():
    tables = extract_wikitables(PAGE_HTML)
    assert (tables[1].n_rows, tables[1].n_cols) == (1, 1)
    assert all("정보상자" not in t.label_html for t in tables)


def test_clean_table_leaves_the_page_untouched():
    import lxml.html

    root = lxml.html.fromstring(PAGE_HTML)
    table = root.xpath("//table[contains(@class,'wikitable')]")[0]
    before = lxml.html.tostring(table)
    clean_table(table)
    assert lxml.html.tostring(table) == before


def parse_reply(title, pageid, revid, html):
    return {"parse": {"title": title, "pageid": pageid, "revid": revid, "text": html}}


@pytest.fixture
def wiki(fake_server, reply):
    pages = {
        "대한민국의 은행 목록": reply(200, parse_reply("대한민국의 은행 목록", 4242, 36500001, PAGE_HTML)),
        "표 없는 문서": reply(200, parse_reply("표 없는 문서", 77, 1001, "<div><p>본문만 있다.</p></div>")),
        "없는 문서": reply(200, {"error": {"code": "missingtitle", "info": "The page you specified doesn't exist."}}),
    }

    def api(params):
        if params["action"] == "parse":
            return pages[params["page"]]
        members = {"": ([{"pageid": 1, "ns": 0, "title": "가"}, {"pageid": 2, "ns": 0, "title": "나"}],
                        {"cmcontinue": "page|NEXT|2", "continue": "-||"}),
                   "page|NEXT|2": ([{"pageid": 3, "ns": 0, "title": "다"}], None)}
        rows, cont = members[params.get("cmcontinue", "")]
        body = {"batchcomplete": True, "query": {"categorymembers": rows}}
        if cont:
            body["continue"] = cont
        return reply(200, body)

    fake_server.route("/w/api.php", api)
    return fake_server


def make_client(server, tmp_path, **kw):
    return WikiClient(api_url=f"{server.url}/w/api.php", cache_dir=tmp_path / "cache", max_attempts=3,
                      backoff_base=0.0, min_interval=0.0, **kw)


def test_collect_wiki_pairs_rejects_and_attribution(wiki, fake_renderer, tmp_path):
    pages = ["대한민국의 은행 목록", "표 없는 문서", "없는 문서"]
    result = collect_wiki(make_client(wiki, tmp_path), pages, fake_renderer)
    assert [p.original_filename for p in result.pairs] == ["wiki_4242_001.png"]
    pair = result.pairs[0]
    assert pair.html == CLEAN_LABEL and pair.source == "wiki"
    meta = pair.metadata
    assert meta["title"] == "대한민국의 은행 목록" and meta["revid"] == 36500001 and meta["pageid"] == 4242
    assert meta["license"] == LICENSE == "CC BY-SA 4.0" and "creativecommons.org/licenses/by-sa/4.0" in meta["license_url"]
    assert meta["url"] == f"{wiki.url}/wiki/%EB%8C%80%ED%95%9C%EB%AF%BC%EA%B5%AD%EC%9D%98_%EC%9D%80%ED%96%89_%EB%AA%A9%EB%A1%9D"
    assert meta["permalink"].endswith("&oldid=36500001") and "/w/index.php?title=" in meta["permalink"]
    assert "36500001" in meta["attribution"] and "CC BY-SA 4.0" in meta["attribution"]
    assert sorted((r.original_filename, r.reason) for r in result.rejects) == [
        ("wiki_4242_002.png", "table_too_small"), ("wiki_4242_003.png", "render_failed"),
        ("wiki_77", "no_tables"), ("wiki_없는 문서", "page_missing")]
    # The renderer draws the cleaned table (not the page), and what it draws normalises to the label.
    drawn = [html for html, _ in fake_renderer.calls[0]]
    assert drawn[0].startswith("<table>") and "530조 원" in drawn[0]

    hit = wiki.hits("/w/api.php")[0].params
    assert hit["action"] == "parse" and hit["prop"] == "text|revid" and hit["formatversion"] == "2"
    assert hit["redirects"] == "1" and hit["format"] == "json"

    before = len(wiki.hits())
    again = collect_wiki(make_client(wiki, tmp_path), pages, fake_renderer)
    assert len(wiki.hits()) == before + 1  # only the missing page is asked again (errors are never cached)
    assert again.manifest_rows() == result.manifest_rows()


def test_second_collect_of_existing_pages_makes_zero_requests(wiki, fake_renderer, tmp_path):
    pages = ["대한민국의 은행 목록", "표 없는 문서"]
    collect_wiki(make_client(wiki, tmp_path), pages, fake_renderer)
    before = len(wiki.hits())
    again = collect_wiki(make_client(wiki, tmp_path), pages, fake_renderer)
    assert len(wiki.hits()) == before and again.stats["http_requests"] == 0
    collect_wiki(make_client(wiki, tmp_path), pages, fake_renderer, refresh=True)
    assert len(wiki.hits()) == before + 2


def test_category_members_follow_continue(wiki, tmp_path):
    c = make_client(wiki, tmp_path)
    assert c.category_members("대한민국의 은행") == ["가", "나", "다"]
    hits = wiki.hits("/w/api.php")
    assert hits[0].params["cmtitle"] == "분류:대한민국의 은행" and hits[0].params["list"] == "categorymembers"
    assert hits[1].params["cmcontinue"] == "page|NEXT|2" and hits[1].params["continue"] == "-||"
    assert c.category_members("분류:대한민국의 은행", limit=2) == ["가", "나"]
    assert resolve_pages(c, ["Z 문서", "가"], ["대한민국의 은행"]) == ["Z 문서", "가", "나", "다"]


def test_maxlag_then_success(fake_server, script, reply, tmp_path):
    fake_server.route("/w/api.php", script(
        reply(200, {"error": {"code": "maxlag", "info": "Waiting for a database server: 6 seconds lagged.", "lag": 6}}),
        reply(200, parse_reply("문서", 1, 2, "<div></div>"))))
    page = make_client(fake_server, tmp_path).parse_page("문서")
    assert page.revid == 2 and len(fake_server.hits()) == 2
    assert fake_server.hits()[0].params["maxlag"] == "5"


def test_other_api_errors_are_raised(fake_server, reply, tmp_path):
    fake_server.route("/w/api.php", reply(200, {"error": {"code": "badvalue", "info": "Unrecognized value."}}))
    with pytest.raises(WikiError, match="badvalue"):
        make_client(fake_server, tmp_path).parse_page("문서")


def test_user_agent_is_sent(fake_server, reply, tmp_path):
    fake_server.route("/w/api.php", reply(200, parse_reply("문서", 1, 2, "<div></div>")))
    make_client(fake_server, tmp_path, user_agent="ocr-ft-test/1.0 (ml@bank.example)").parse_page("문서")
    assert fake_server.hits()[0].headers["User-Agent"] == "ocr-ft-test/1.0 (ml@bank.example)"


def test_batches_are_stable_when_pages_are_added():
    pages = [f"문서 {i}" for i in range(40)]
    before = wiki_batches(pages, 8)
    after = wiki_batches(pages + ["새 문서"], 8)
    changed = [k for k in before if before[k] != after[k]]
    assert changed == [wiki_batch_key("새 문서", 8)]
    assert list(before) == wiki_batch_keys(8) == [f"batch-{i:03d}" for i in range(8)]
    assert sorted(t for ts in before.values() for t in ts) == sorted(pages)
    assert wiki_batches(["가", " 가 ", ""], 2) == {**{k: [] for k in wiki_batch_keys(2)}, wiki_batch_key("가", 2): ["가"]}


# ---- User-Agent, real excerpt, hostile tables, caps ----------------------------------------------------


def test_user_agent_must_carry_contact_information():
    from ocr_ft.sources.wiki import WikiUserAgentError, check_user_agent

    for ok_ua in ("ocr-ft/0.1 (ml@bank.example)", "ocr-ft/0.1 (https://bank.example/ocr)"):
        assert check_user_agent(ok_ua) == ok_ua
    for bad in ("", "ocr-ft/0.1", "ocr-ft/0.1 (table-recognition dataset builder; set OCR_FT_WIKI_USER_AGENT)"):
        with pytest.raises(WikiUserAgentError, match="OCR_FT_WIKI_USER_AGENT"):
            check_user_agent(bad)


def real_excerpt() -> str:
    from factories import shared_external

    return shared_external("real", "wiki", "enwiki_2014_wikitable_excerpt.html").read_text(encoding="utf-8")


def test_real_excerpt_keeps_superscript_two_in_label_and_drawn_html():
    import lxml.html

    from ocr_ft.sources.wiki import WIKITABLE_CSS, table_pending
    from ocr_ft.tables import normalize_text, parse_tables

    (t,) = extract_wikitables(real_excerpt())
    pending, rejects = table_pending(t, "wiki_1_001.png", {})
    assert not rejects and len(pending) == 1
    p = pending[0]
    label_cells = [c.text for c in parse_tables(p.label_html)[0].cells()]
    assert label_cells.count("km²") == 3 and "km2" not in p.label_html
    assert "Alaska" in label_cells and "1,723,337" in label_cells and "85.76%" in label_cells
    # what is drawn is the label's text cell for cell (sort keys, hidden values, references, flags gone)
    drawn = lxml.html.fromstring(p.display_html)
    drawn_cells = [normalize_text(c.text_content()) for c in drawn.iter("td", "th")]
    assert drawn_cells == label_cells
    assert p.css == WIKITABLE_CSS and "#eaecf0" in p.css and "border" in p.css


def test_hostile_spans_and_failures_are_rejects_naming_the_table(wiki, fake_renderer, tmp_path, monkeypatch, reply):
    import ocr_ft.sources.wiki as wiki_mod

    huge = "9" * 5000
    html = ("<div><table class='wikitable'><tr><th colspan='%s'>a</th><th>b</th></tr><tr><td>1</td><td>2</td></tr>"
            "</table><table class='wikitable'><tr><th>x</th><th>y</th></tr><tr><td>BOOM</td><td>2</td></tr></table>"
            "<table class='wikitable'><tr><th>p</th><th>q</th></tr><tr><td>3</td><td>4</td></tr></table>"
            "<table class='wikitable'><tr><th>r</th><th>s</th></tr><tr><td>5</td><td>6</td></tr></table></div>") % huge
    real_clean = wiki_mod.clean_table

    def clean(el):
        if "BOOM" in el.text_content():
            raise RuntimeError("cleaner exploded")
        return real_clean(el)

    monkeypatch.setattr(wiki_mod, "clean_table", clean)
    wiki.route("/w/api.php", lambda params: reply(200, parse_reply("적대적 문서", 9, 10, html)))
    result = collect_wiki(make_client(wiki, tmp_path), ["적대적 문서"], fake_renderer, max_tables_per_page=1)
    reasons = sorted((r.original_filename, r.reason) for r in result.rejects)
    assert reasons == [("wiki_9_001.png", "span_invalid"), ("wiki_9_002.png", "table_failed"),
                       ("wiki_9_004.png", "over_cap")]
    assert [p.original_filename for p in result.pairs] == ["wiki_9_003.png"]
    failed = next(r for r in result.rejects if r.reason == "table_failed")
    assert "RuntimeError" in failed.detail and "cleaner exploded" in failed.detail and "적대적 문서" in failed.detail
    assert result.stats["reject_reasons"]["over_cap"] == 1


def test_long_wikitable_is_split_into_windows_with_its_header(wiki, fake_renderer, tmp_path, reply):
    rows = "".join(f"<tr><td>{i}번째 은행 이름이 제법 긴 항목</td><td>{i * 1000:,}</td></tr>" for i in range(400))
    html = f"<div><table class='wikitable'><tr><th>은행</th><th>자산</th></tr>{rows}</table></div>"
    wiki.route("/w/api.php", lambda params: reply(200, parse_reply("적대적 문서", 9, 10, html)))
    result = collect_wiki(make_client(wiki, tmp_path), ["긴 문서"], fake_renderer)
    assert not result.rejects and len(result.pairs) >= 2
    seen = []
    for p in result.pairs:
        assert p.html.startswith("<table><tr><th>은행</th><th>자산</th></tr>")
        assert p.metadata["window"]["count"] == len(result.pairs)
        seen += [c.text for c in __import__("ocr_ft.tables", fromlist=["x"]).parse_tables(p.html)[0].cells()][2:]
    assert seen[::2] == [f"{i}번째 은행 이름이 제법 긴 항목" for i in range(400)]  # every row once, in order
