"""LaTeX tabular (GOT-OCR 2.0's formatted table output) <-> HTML."""

from __future__ import annotations

import json

import pytest

from ocr_ft.tables import TableTooLarge, build_grid, normalize_html, parse_tables, validate_label
from ocr_ft.tables.latex import (LatexTableError, html_to_tabular, looks_like_tabular, tabular_to_html,
                                 tabular_to_tables)


def shape(html: str) -> list[tuple]:
    """(row, col, rowspan, colspan, text, nesting) of every cell of every table, headers ignored."""
    out = []
    for t in parse_tables(html):
        grid = build_grid(t)
        assert grid.consistent, grid.problems
        out.extend((r, c, x.rowspan, x.colspan, x.text, [shape_of(n) for n in x.tables]) for r, c, x in grid.cells)
    return out


def shape_of(table) -> list:
    return [(c.text, c.rowspan, c.colspan) for c in table.cells()]


@pytest.fixture(scope="module")
def real_labels() -> dict[str, str]:
    from factories import shared_external
    from ocr_ft.sources.dart_xml import extract_tables
    from ocr_ft.sources.wiki import extract_wikitables, table_pending

    labels = {f"dart_{t.index}": t.html for t in
              extract_tables(shared_external("real", "dart", "major_issue_report_2025_dart4.xml").read_bytes()).kept}
    page = shared_external("real", "wiki", "enwiki_2014_wikitable_excerpt.html").read_text(encoding="utf-8")
    for i, t in enumerate(extract_wikitables(page)):
        labels.update({f"wiki_{i}_{k}": p.label_html for k, p in enumerate(table_pending(t, f"w{i}.png", {})[0])})
    gt = json.loads(shared_external("pubtabnet", "sample_gt.json").read_text(encoding="utf-8"))
    labels.update({f"ptn_{k}": normalize_html(v["html"]) for k, v in gt.items()})
    return {k: v for k, v in labels.items() if validate_label(v).grid_consistent}


def test_real_labels_round_trip_cell_for_cell(real_labels):
    assert len(real_labels) >= 20 and any(k.startswith("dart") for k in real_labels)
    for name, label in real_labels.items():
        tex = html_to_tabular(label)
        assert tex.startswith("\\begin{tabular}{") and tex.endswith("\\end{tabular}"), name
        assert shape(tabular_to_html(tex, strict=True)) == shape(label), name


def test_spans_escapes_and_nested_tables_round_trip():
    label = ('<table><tr><td rowspan="2">a</td><td colspan="2">b &amp; 50% $x_1 {y}</td></tr><tr><td>c</td>'
             '<td></td></tr><tr><td colspan="2" rowspan="2">합계</td><td>5</td></tr>'
             '<tr><td>6<table><tr><td>n1</td><td>n2 \\ ~^#</td></tr></table></td></tr></table>')
    tex = html_to_tabular(label)
    assert "\\multirow{2}{*}{a}" in tex and "\\multicolumn{2}{c}{b \\& 50\\% \\$x\\_1 \\{y\\}}" in tex
    assert "\\multicolumn{2}{c}{\\multirow{2}{*}{합계}}" in tex and "\\multicolumn{2}{c}{} & 6 \\begin{tabular}" in tex
    assert tabular_to_html(tex, strict=True) == normalize_html(label)


def test_header_cells_come_back_as_td():
    label = "<table><thead><tr><th>구분</th></tr></thead><tbody><tr><td>1</td></tr></tbody></table>"
    assert tabular_to_html(html_to_tabular(label)) == "<table><tr><td>구분</td></tr><tr><td>1</td></tr></table>"


def test_reads_got_style_output_with_rules_and_wrappers():
    text = ("Title\n\\begin{tabular}{|l|c|c|}\n\\hline \\textbf{구분} & \\multicolumn{2}{|c|}{2024년} \\\\\n"
            "\\cline{2-3} & 상반기 & 하반기 \\\\\n\\hline \\multirow{2}*{예금} & 1 & 2 \\\\\n & 3 & 4 \\\\[2pt]\n"
            "\\hline\n\\end{tabular}\nmore text \\begin{tabular}{c} z \\end{tabular}")
    tables = tabular_to_tables(text)
    assert len(tables) == 2
    assert [(c.text, c.rowspan, c.colspan) for c in tables[0].cells()] == [
        ("구분", 1, 1), ("2024년", 1, 2), ("", 1, 1), ("상반기", 1, 1), ("하반기", 1, 1),
        ("예금", 2, 1), ("1", 1, 1), ("2", 1, 1), ("3", 1, 1), ("4", 1, 1)]
    assert all(build_grid(t).consistent for t in tables)
    assert tabular_to_html(text).count("<table>") == 2
    assert looks_like_tabular(text) and not looks_like_tabular("<table></table>") and tabular_to_html("no table") == ""


def test_short_rows_are_padded():
    (t,) = tabular_to_tables("\\begin{tabular}{ccc} a & b & c \\\\ d \\\\ \\end{tabular}", strict=True)
    assert [[c.text for c in r.cells] for r in t.rows] == [["a", "b", "c"], ["d", "", ""]]


@pytest.mark.parametrize("text, message", [
    ("\\begin{tabular}{cc} a & b \\\\ c", "never closed"),
    ("\\begin{tabular}{cc} \\multirow{2}{*}{a} & b \\\\ x & c \\\\ \\end{tabular}", "row 2: text 'x' in a slot"),
    ("\\begin{tabular}{cc} \\multirow{3}{*}{a} & b \\\\ & c \\\\ \\end{tabular}", r"row 1: \\multirow\{3\} runs past"),
    ("\\begin{tabular}{cc} \\multicolumn{0}{c}{a} \\\\ \\end{tabular}", "must be a number from 1"),
    ("\\begin{tabular}{cc} \\multicolumn{2}{c} \\\\ \\end{tabular}", "without its three arguments"),
    ("\\begin{tabular}{cc} \\multirow{2}{*} \\\\ \\end{tabular}", "without its text argument"),
])
def test_malformed_tabular_is_refused_when_strict(text, message):
    with pytest.raises(LatexTableError, match=message):
        tabular_to_tables(text, strict=True)


def test_lenient_reading_repairs_model_output():
    cut = tabular_to_tables("\\begin{tabular}{cc} a & b \\\\ c")  # cut off mid-table
    assert [[c.text for c in r.cells] for r in cut[0].rows] == [["a", "b"], ["c", ""]]
    (t,) = tabular_to_tables("\\begin{tabular}{cc} \\multirow{3}{*}{a} & b \\\\ x & c \\\\ \\end{tabular}")
    assert [(c.text, c.rowspan) for c in t.cells()] == [("a", 1), ("b", 1), ("x", 1), ("c", 1)]
    assert build_grid(t).consistent


def test_limits_and_bad_input():
    with pytest.raises(LatexTableError, match="exactly one top-level table, the HTML has 0"):
        html_to_tabular("<p>none</p>")
    with pytest.raises(LatexTableError, match="inconsistent"):
        html_to_tabular("<table><tr><td>a</td><td>b</td></tr><tr><td>c</td></tr></table>")
    big = "\\begin{tabular}{cc}" + "a & b \\\\" * 30 + "\\end{tabular}"
    assert len(tabular_to_tables(big, max_slots=60)[0].rows) == 30
    with pytest.raises(TableTooLarge):
        tabular_to_tables(big, max_slots=40)
    deep = "\\begin{tabular}{c} " * 40 + "x" + " \\end{tabular}" * 40
    with pytest.raises(LatexTableError, match="nested over 16 deep"):
        tabular_to_tables(deep)
    three = "\\begin{tabular}{c} a " * 3 + " \\end{tabular}" * 3
    assert tabular_to_html(three, strict=True).count("<table>") == 3
    with pytest.raises(LatexTableError, match="expected text"):
        tabular_to_tables(None)  # type: ignore[arg-type]
