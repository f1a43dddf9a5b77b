import pytest

from ocr_ft.tables import (
    TableParseError,
    build_grid,
    nesting_depth,
    normalize_html,
    parse_tables,
    repair_html,
    validate_label,
)


def test_grid_honours_rowspan_and_colspan():
    html = """<table>
      <tr><th rowspan="2">구분</th><th colspan="2">2024년</th></tr>
      <tr><th>1분기</th><th>2분기</th></tr>
      <tr><td>자산</td><td>1,000</td><td>2,000</td></tr></table>"""
    (table,) = parse_tables(html)
    grid = build_grid(table)
    assert grid.consistent, grid.problems
    assert (grid.n_rows, grid.n_cols) == (3, 3)
    # the rowspan cell covers (0,0) and (1,0); the second row's first cell lands in column 1
    assert grid.slots[0][0] == grid.slots[1][0]
    placed = {cell.text: (r, c) for r, c, cell in grid.cells}
    assert placed["1분기"] == (1, 1) and placed["2분기"] == (1, 2)


def test_overlapping_rowspan_and_colspan_is_reported():
    html = """<table>
      <tr><td>a</td><td rowspan="2">b</td><td>c</td></tr>
      <tr><td colspan="2">d</td><td>e</td></tr></table>"""
    rep = validate_label(html)
    assert not rep.grid_consistent
    assert any("overlaps" in p for p in rep.problems)


def test_rowspan_past_last_row_and_ragged_rows_are_reported():
    rep = validate_label("<table><tr><td rowspan=3>a</td><td>b</td></tr><tr><td>c</td></tr></table>")
    assert any("runs past the last row" in p for p in rep.problems)
    rep = validate_label("<table><tr><td>a</td><td>b</td><td>c</td></tr><tr><td>d</td></tr></table>")
    assert any("ragged" in p for p in rep.problems)


def test_three_level_nesting():
    html = ("<table><tr><td>outer<table><tr><td>mid</td><td><table><tr><td>in</td></tr></table></td></tr>"
            "</table></td></tr></table>")
    assert nesting_depth(html) == 3
    rep = validate_label(html)
    assert rep.nesting_level == 3 and rep.table_count == 1 and rep.row_count == 1
    (table,) = parse_tables(html)
    outer_cell = table.rows[0].cells[0]
    assert outer_cell.text == "outer"  # a cell's text excludes its nested tables
    assert outer_cell.tables[0].rows[0].cells[0].text == "mid"
    assert nesting_depth("<p>no table</p>") == 0
    assert nesting_depth("<table><tr><td>x</td></tr></table>") == 1


def test_normalised_form_drops_attributes_and_normalises_text():
    html = ('<TABLE class="x" style="border:1"><THEAD><TR><TH style="a" COLSPAN="2">　단위：백만원 </TH></TR></THEAD>'
            '<TR><TD rowspan="1" align=right>１,０００<br>원</TD><TD><span>  △5 </span></TD></TR></TABLE>')
    out = normalize_html(html)
    # whitespace (incl. ideographic space) collapses; full-width forms stay as the document has them (no NFKC)
    assert out == ('<table><thead><tr><th colspan="2">단위：백만원</th></tr></thead>'
                   '<tbody><tr><td>１,０００ 원</td><td>△5</td></tr></tbody></table>')
    assert normalize_html(out) == out  # idempotent


def test_labels_keep_document_characters_and_nfkc_is_only_an_option():
    from ocr_ft.tables import normalize_text

    text = "㈜한국 ① ㎡ △ Ⅱ ＡＢＣ"
    out = normalize_html(f"<table><tr><td>{text}</td></tr></table>")
    assert text in out
    assert normalize_text("e\u0301  x") == "\u00e9 x"  # NFC composes, whitespace collapses
    assert normalize_text("㈜ ①", nfkc=True) == "(주) 1"


def test_text_is_escaped_in_normalised_form():
    out = normalize_html("<table><tr><td>a &lt; b &amp; c</td></tr></table>")
    assert out == "<table><tr><td>a &lt; b &amp; c</td></tr></table>"


def test_validation_report_fields():
    rep = validate_label('<table><tr><td colspan="2">합계</td></tr><tr><td>1</td><td>2</td></tr></table>')
    assert rep.seed_fields() == {"table_count": 1, "row_count": 2, "cell_count": 3, "has_rowspan": False,
                                 "has_colspan": True, "text_length": 4}
    assert rep.ok


def test_repair_records_what_it_fixed():
    res = repair_html("<tr><td>a<td>b</tr><tr><td>c</tr>")
    assert res.html == "<table><tr><td>a</td><td>b</td></tr><tr><td>c</td><td></td></tr></table>"
    joined = " | ".join(res.repairs)
    assert "no <table>" in joined and "closed 3 <td>" in joined and "padded row 2" in joined
    res = repair_html("<table>잡음<tr><td rowspan=3>a</td><td>b</td></tr><tr><td>c</td></tr></table>")
    assert "잡음" not in res.html
    assert any("dropped text" in r for r in res.repairs) and any("clipped rowspan=3" in r for r in res.repairs)
    assert validate_label(res.html).ok
    clean = repair_html("<table><tr><td>x</td></tr></table>")
    assert not clean.changed


def test_repair_wraps_cells_outside_rows():
    res = repair_html("<table><td>a</td><td>b</td></table>")
    assert res.html == "<table><tr><td>a</td><td>b</td></tr></table>"
    assert any("outside any <tr>" in r for r in res.repairs)


def test_bad_bytes_give_clear_errors():
    with pytest.raises(TableParseError, match="not UTF-8"):
        parse_tables("<table><tr><td>가</td></tr></table>".encode("cp949"))
    with pytest.raises(TableParseError, match="empty"):
        parse_tables("   ")
    assert "no <table>" in validate_label("<p>hello</p>").problems[0]


def test_repair_records_unusable_span_values():
    res = repair_html('<table><tr><td rowspan="0">a</td><td colspan="x">b</td></tr></table>')
    assert res.html == "<table><tr><td>a</td><td>b</td></tr></table>"
    assert any('rowspan=\'0\' is below 1' in r for r in res.repairs), res.repairs
    assert any("colspan='x' is not a number" in r for r in res.repairs), res.repairs
