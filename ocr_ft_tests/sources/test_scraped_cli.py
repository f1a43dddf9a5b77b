"""`ocr-ft fss extract` and `ocr-ft wiki extract` on the real samples: the tables the assets would write."""

from __future__ import annotations

import csv
import json

import pytest

from factories import shared_external
from ocr_ft.cli import main
from ocr_ft.tables import parse_tables, validate_label


def sa004_response(tmp_path):
    with open(shared_external("real", "fss", "SA004_kookmin_201703_rows.csv"), encoding="utf-8") as fh:
        rows = [{"base_month": r["년월"], "finance_cd": r["금융회사코드"], "finance_nm": r["금융회사명"],
                 "account_cd": r["코드"], "account_nm": r["구분"], "a": r["금액"], "b": r["구성비"]}
                for r in csv.DictReader(fh)]
    path = tmp_path / "SA004.json"
    path.write_text(json.dumps({"result": {"err_cd": "000", "err_msg": "정상", "list": rows, "unit": "원,%",
                                           "description": [{"column_id": "a", "column_nm": "금액"},
                                                           {"column_id": "b", "column_nm": "구성비"}]}},
                               ensure_ascii=False), encoding="utf-8")
    return path, rows


def test_fss_extract_writes_the_hierarchical_table(tmp_path, capsys):
    path, rows = sa004_response(tmp_path)
    out = tmp_path / "out"
    (out).mkdir()
    (out / "0007.html").write_text("stale")
    assert main(["fss", "extract", str(path), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == "1"
    assert sorted(p.name for p in out.iterdir()) == ["0001.html"]
    label = (out / "0001.html").read_text(encoding="utf-8")
    assert validate_label(label).grid_consistent and validate_label(label).has_rowspan
    texts = [c.text for c in parse_tables(label)[0].cells()]
    assert "금액(원)" in texts and "0.29" in texts and not any("_" in t for t in texts)


def test_fss_extract_refuses_an_error_answer(tmp_path, capsys):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"result": {"err_cd": "011", "err_msg": "인증키 오류"}}), encoding="utf-8")
    assert main(["fss", "extract", str(path), "--out", str(tmp_path / "o")]) == 1
    assert "011" in capsys.readouterr().err


def test_wiki_extract_html_and_parse_json(tmp_path, capsys):
    html = shared_external("real", "wiki", "enwiki_2014_wikitable_excerpt.html").read_text(encoding="utf-8")
    page = tmp_path / "page.json"
    page.write_text(json.dumps({"parse": {"title": "States", "pageid": 1, "revid": 2, "text": html}}), encoding="utf-8")
    for src in (shared_external("real", "wiki", "enwiki_2014_wikitable_excerpt.html"), page):
        out = tmp_path / f"out_{src.suffix[1:]}"
        assert main(["wiki", "extract", str(src), "--out", str(out)]) == 0
        assert capsys.readouterr().out.strip() == "1"
        label = (out / "0001.html").read_text(encoding="utf-8")
        assert label.count("km²") == 3 and "km2" not in label


@pytest.mark.browser
def test_extract_render_writes_the_images(tmp_path, capsys):
    from PIL import Image

    path, _ = sa004_response(tmp_path)
    assert main(["fss", "extract", str(path), "--out", str(tmp_path / "f"), "--render"]) == 0
    assert main(["wiki", "extract", str(shared_external("real", "wiki", "enwiki_2014_wikitable_excerpt.html")),
                 "--out", str(tmp_path / "w"), "--render"]) == 0
    for d in ("f", "w"):
        with Image.open(tmp_path / d / "0001.png") as im:
            w, h = im.size
            px = im.convert("RGB").getpixel((w // 2, 2))
        assert w > 300 and h > 100
        assert px != (255, 255, 255)  # the top border / grey header cells are drawn (the source's look)
