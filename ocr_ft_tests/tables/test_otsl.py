"""OTSL (PaddleOCR-VL's table format) <-> HTML: round trips on real labels, span cases, malformed input."""

from __future__ import annotations

import json

import pytest

from ocr_ft.tables import TableTooLarge, build_grid, normalize_html, parse_tables
from ocr_ft.tables.otsl import (OTSLError, html_to_otsl, looks_like_otsl, otsl_to_html, otsl_to_table,
                                table_to_otsl)


def cells_of(html: str, headers: bool = False) -> list[tuple]:
    """Every cell of the one table as (row, col, rowspan, colspan, text[, header]), from the grid model."""
    (table,) = parse_tables(html)
    grid = build_grid(table)
    assert grid.consistent, grid.problems
    out = []
    for r, c, cell in grid.cells:
        key = (r, c, cell.rowspan, cell.colspan, cell.text)
        out.append(key + ((cell.header, table.rows[r].section),) if headers else key)
    return out


# --------------------------------------------------------------------------- real labels


def real_labels() -> dict[str, str]:
    """Labels of every real source sample under /work/shared/external (DART, FSS, wiki, PubTabNet)."""
    import csv

    from factories import shared_external
    from ocr_ft.sources.dart_xml import extract_tables
    from ocr_ft.sources.fss import StatisticsData, ValueColumn, fss_table_html
    from ocr_ft.sources.wiki import extract_wikitables, table_pending

    labels: dict[str, str] = {}
    doc = extract_tables(shared_external("real", "dart", "major_issue_report_2025_dart4.xml").read_bytes())
    for t in doc.kept:
        labels[f"dart_{t.index}"] = t.html
    with open(shared_external("real", "fss", "SA004_kookmin_201703_rows.csv"), encoding="utf-8") as fh:
        rows = [{"base_month": r["년월"], "finance_cd": r["금융회사코드"], "finance_nm": r["금융회사명"],
                 "account_cd": r["코드"], "account_nm": r["구분"], "a": r["금액"], "b": r["구성비"]}
                for r in csv.DictReader(fh)]
    data = StatisticsData("SA004", "0010927", "Q", "201703", "201703",
                          [ValueColumn("a", "금액"), ValueColumn("b", "구성비")], rows)
    labels["fss_sa004"] = normalize_html(fss_table_html([data]))
    page = shared_external("real", "wiki", "enwiki_2014_wikitable_excerpt.html").read_text(encoding="utf-8")
    for i, t in enumerate(extract_wikitables(page)):
        pending, _ = table_pending(t, f"wiki_{i}.png", {})
        labels.update({f"wiki_{i}_{k}": p.label_html for k, p in enumerate(pending)})
    gt = json.loads(shared_external("pubtabnet", "sample_gt.json").read_text(encoding="utf-8"))
    labels.update({f"ptn_{name}": normalize_html(v["html"]) for name, v in gt.items()})
    return labels


@pytest.fixture(scope="module")
def all_labels() -> dict[str, str]:
    out = real_labels()
    assert {k.split("_")[0] for k in out} == {"dart", "fss", "wiki", "ptn"}
    return out


@pytest.fixture(scope="module")
def labels(all_labels) -> dict[str, str]:
    """The real labels validation accepts (a consistent grid): the ones that can reach training."""
    from ocr_ft.tables import validate_label

    out = {k: v for k, v in all_labels.items() if validate_label(v).grid_consistent}
    assert len(out) >= 20
    return out


def test_real_labels_validation_rejects_are_refused_too(all_labels, labels):
    rejected = set(all_labels) - set(labels)
    assert rejected  # a real wiki and a real PubTabNet table have ragged rows
    for name in rejected:
        with pytest.raises(OTSLError, match="inconsistent.*ragged row"):
            html_to_otsl(all_labels[name])


def test_real_labels_round_trip_cell_for_cell(labels):
    spanned = 0
    for name, label in labels.items():
        otsl = html_to_otsl(label)
        assert otsl.endswith("<nl>") and "<td" not in otsl, name
        back = otsl_to_html(otsl)
        assert cells_of(back) == cells_of(label), name
        spanned += any(rs > 1 or cs > 1 for _, _, rs, cs, _ in cells_of(label))
    assert spanned >= 3  # the real samples exercise rowspan/colspan, not only flat grids


def test_real_labels_with_headers_keep_th_cells(labels):
    kept_head = 0
    for name, label in labels.items():
        back = otsl_to_html(html_to_otsl(label, headers=True))
        (src,), (got,) = parse_tables(label), parse_tables(back)
        src_cells = [(c.text, c.rowspan, c.colspan, c.header) for c in src.cells()]
        assert [(c.text, c.rowspan, c.colspan, c.header) for c in got.cells()] == src_cells, name
        if any(r.section == "thead" for r in src.rows) and all(
                c.header for r in src.rows if r.section == "thead" for c in r.cells):
            assert cells_of(back, headers=True) == cells_of(label, headers=True), name
            kept_head += 1
    assert kept_head >= 1  # FSS's header rows are all <th>: the head section comes back


def test_without_headers_th_and_thead_are_lost():
    label = "<table><thead><tr><th>구분</th><th>금액</th></tr></thead><tbody><tr><td>예금</td><td>1</td></tr></tbody></table>"
    back = otsl_to_html(html_to_otsl(label))
    assert back == "<table><tr><td>구분</td><td>금액</td></tr><tr><td>예금</td><td>1</td></tr></table>"
    assert html_to_otsl(label, headers=True) == "<ched>구분<ched>금액<nl><fcel>예금<fcel>1<nl>"
    assert otsl_to_html(html_to_otsl(label, headers=True)) == normalize_html(label)


# --------------------------------------------------------------------------- hand-made spans


def test_span_tags_for_colspan_rowspan_and_both():
    label = ('<table><tr><td rowspan="2">a</td><td colspan="2">b</td></tr><tr><td>c</td><td></td></tr>'
             '<tr><td colspan="2" rowspan="2">x &amp; y</td><td>5</td></tr><tr><td>6</td></tr></table>')
    otsl = html_to_otsl(label)
    assert otsl == ("<fcel>a<fcel>b<lcel><nl><ucel><fcel>c<ecel><nl>"
                    "<fcel>x & y<lcel><fcel>5<nl><ucel><xcel><fcel>6<nl>")
    assert otsl_to_html(otsl) == normalize_html(label)


def test_paddleocr_vl_seed_example_reads_as_a_flat_table():
    seed = "<fcel>分组<fcel>频数<fcel>频率<nl><fcel>[41,51)<fcel>2<fcel>\\( \\frac{2}{30} \\)<nl>"
    (t,) = parse_tables(otsl_to_html(seed))
    assert [[c.text for c in r.cells] for r in t.rows] == [["分组", "频数", "频率"], ["[41,51)", "2", "\\( \\frac{2}{30} \\)"]]


def test_empty_spanned_cell_and_missing_final_nl():
    table = otsl_to_table("<ecel><lcel><nl><fcel>1<fcel>2")
    assert [(c.text, c.colspan) for c in table.cells()] == [("", 2), ("1", 1), ("2", 1)]


def test_html_characters_are_text_not_markup():
    label = "<table><tr><td>a &lt;b&gt; &amp; c</td></tr></table>"
    otsl = html_to_otsl(label)
    assert otsl == "<fcel>a <b> & c<nl>"
    assert otsl_to_html(otsl) == label


def test_nested_table_refused_or_flattened():
    label = "<table><tr><td>outer<table><tr><td>in1</td><td>in2</td></tr></table></td><td>z</td></tr></table>"
    with pytest.raises(OTSLError, match="row 1 col 1: a nested table"):
        html_to_otsl(label)
    assert html_to_otsl(label, nested="text") == "<fcel>outer in1 in2<fcel>z<nl>"
    with pytest.raises(ValueError, match="nested must be"):
        html_to_otsl(label, nested="drop")


# --------------------------------------------------------------------------- malformed input


@pytest.mark.parametrize("html, message", [
    ("<p>no table</p>", "has 0 top-level tables"),
    ("<table><tr><td>a</td></tr></table><table><tr><td>b</td></tr></table>", "has 2 top-level tables"),
    ("<table><tr><td>a</td><td>b</td></tr><tr><td>c</td></tr></table>", "ragged row"),
    ("<table><tr><td>a</td><td rowspan='2'>b</td></tr><tr><td colspan='2'>c</td></tr></table>", "overlaps"),
    ("<table><tr><td>a &lt;fcel&gt; b</td></tr></table>", "row 1 col 1: cell text 'a <fcel> b' contains an OTSL tag"),
])
def test_html_that_otsl_cannot_express(html, message):
    with pytest.raises(OTSLError, match=message):
        html_to_otsl(html)


@pytest.mark.parametrize("otsl, message", [
    ("", "holds no cell"),
    ("plain text", "text before the first OTSL tag"),
    ("<nl><fcel>a<nl>", "row 1 is empty"),
    ("<lcel><nl>", "row 1 col 1: <lcel> has no cell to its left"),
    ("<fcel>a<ucel><nl>", "row 1 col 2: <ucel> has no cell above it"),
    ("<fcel>a<xcel><nl>", "row 1 col 2: <xcel> is in the first row or column"),
    ("<fcel>a<fcel>b<nl><ucel><xcel><nl>", "joins two different cells"),
    ("<fcel>a<lcel><nl><ucel><ecel><nl>", "row 1 col 1: the cell's span tags do not form a rectangle"),
    ("<fcel>a<lcel>b<nl>", "row 1 col 2: <lcel> continues a span but carries text 'b'"),
    ("<ecel>x<nl>", "is an empty cell but carries text"),
    ("<fcel>a<fcel>b<nl><fcel>c<nl>", r"rows differ in width \(row 1: 2 slots; row 2: 1\)"),
])
def test_malformed_otsl_is_refused_with_the_place_named(otsl, message):
    with pytest.raises(OTSLError, match=message):
        otsl_to_table(otsl)


def test_lenient_reading_always_gives_a_consistent_grid():
    cases = {
        "<fcel>a<fcel>b<fcel>c<nl><fcel>d<nl><fcel>e<fcel>f<fcel>g<nl>": [3, 3, 3],  # ragged: padded
        "<fcel>a<nl><fcel>b<ecel><ecel><ecel><nl><fcel>f<nl>": [1, 1, 1],  # trailing empty slots: cut
        "<fcel>a<nl><fcel>b<ecel><ecel><fcel>e<nl><fcel>f<nl>": [4, 4, 4],  # a filled cell is never cut
        "<lcel><fcel>a<nl>": [2],  # a span with nothing to attach to becomes an empty cell
        "<fcel>a<lcel><nl><ucel><ecel><nl>": [2, 2],  # L-shaped span: the rectangle from the anchor is kept
        "<fcel>a<lcel>b<nl>": [2],  # text on a span tag is kept as a cell
    }
    for otsl, widths in cases.items():
        table = otsl_to_table(otsl, strict=False)
        grid = build_grid(table)
        assert grid.consistent, (otsl, grid.problems)
        assert [grid.n_cols] * grid.n_rows == widths, otsl
    texts = [c.text for c in otsl_to_table("<fcel>a<lcel>b<nl>", strict=False).cells()]
    assert texts == ["a", "b"]
    l_shape = otsl_to_table("<fcel>a<lcel><nl><ucel><ecel><nl>", strict=False)
    assert [(c.text, c.rowspan, c.colspan) for c in l_shape.cells()] == [("a", 1, 2), ("", 1, 1), ("", 1, 1)]


def test_lenient_width_is_the_median_row_and_a_runaway_row_is_cut_cheaply():
    # a repetition loop: one row of 200,000 empty slots among 3-slot rows is cut back, quickly
    runaway = "<fcel>a<fcel>b<fcel>c<nl>" * 3 + "<fcel>x" + "<ecel>" * 200_000 + "<nl>"
    table = otsl_to_table(runaway, strict=False)
    assert [len(r.cells) for r in table.rows] == [3, 3, 3, 3] and table.rows[3].cells[0].text == "x"
    # the width never cuts a filled cell, even when most rows are shorter
    wide = otsl_to_table("<fcel>a<nl><fcel>b<nl><fcel>c<ecel><ecel><fcel>d<nl>", strict=False)
    assert [len(r.cells) for r in wide.rows] == [4, 4, 4]


def test_grid_size_is_bounded_before_it_is_built():
    with pytest.raises(TableTooLarge):
        otsl_to_table("<ecel>" * 50 + "<nl>", max_slots=49)


def test_table_to_otsl_refuses_an_inconsistent_grid_and_detects_otsl():
    (t,) = parse_tables("<table><tr><td>a</td><td>b</td></tr><tr><td>c</td></tr></table>")
    with pytest.raises(OTSLError, match="inconsistent"):
        table_to_otsl(t)
    assert looks_like_otsl("Assistant: <fcel>a<nl>") and not looks_like_otsl("<table><tr><td>a</td></tr></table>")
    assert not looks_like_otsl("") and not looks_like_otsl("<nl><lcel>")
