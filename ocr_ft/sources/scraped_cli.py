"""``ocr-ft fss extract`` and ``ocr-ft wiki extract``: what the ``fss`` / ``wiki`` assets would write, from one
saved answer, offline.

``ocr-ft fss extract RESPONSE.json --out DIR [--render]``: RESPONSE.json is one ``statisticsInfoSearch`` answer
as FISIS sends it (``{"result": {"err_cd", "list": [...], "description": [...], "unit"}}``). One table per
company in it (the asset's default), built, size-checked and split into row windows exactly as the asset does.

``ocr-ft wiki extract PAGE --out DIR [--render]``: PAGE is a saved ``action=parse`` JSON answer (formatversion
1 or 2) or the page's HTML; every ``wikitable`` the asset would keep.

Both write ``DIR/NNNN.html`` (the labels, numbered from 0001; older ``NNNN.html``/``NNNN.png`` files are
removed first), with ``--render`` also ``DIR/NNNN.png`` (the image the pair would have: Chromium, the asset's
look), print the count on stdout and what was left out, with its reason, on stderr.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Sequence

from ..storage import BlobStore, atomic_write_text
from .scraped_common import PendingTable

_OUTPUT_NAME = re.compile(r"^\d{4,}\.(html|png)$")


def _prepare(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for old in out.iterdir():
        if old.is_file() and _OUTPUT_NAME.match(old.name):
            old.unlink()


def write_pending(pending: Sequence[PendingTable], out: str | Path, *, render: bool = False,
                  chromium_path: str = "/usr/bin/chromium") -> tuple[int, Counter]:
    """Write each table's label as ``NNNN.html`` (and its image as ``NNNN.png`` with ``render``); returns the
    count written and the render failures by reason."""
    out = Path(out)
    _prepare(out)
    failed: Counter = Counter()
    for i, p in enumerate(pending, 1):
        atomic_write_text(out / f"{i:04d}.html", p.label_html + "\n")
    if render and pending:
        from ..render import Renderer

        with tempfile.TemporaryDirectory() as tmp:
            store = BlobStore(Path(tmp) / "blobs", base=Path(tmp))
            with Renderer(store, Path(tmp) / "cache", chromium_path=chromium_path, pool_size=2) as r:
                results = r.render_many([(p.display_html, p.css) for p in pending])
            for i, res in enumerate(results, 1):
                if getattr(res, "image_path", None):
                    shutil.copyfile(Path(tmp) / res.image_path, out / f"{i:04d}.png")
                else:
                    failed[getattr(res, "reason", "render_failed")] += 1
                    print(f"{i:04d}: render failed: {res}", file=sys.stderr)
    return len(pending), failed


def fss_extract(response: str | Path, *, list_no: str | None = None, max_rows: int | None = 200):
    """``(pending tables, rejects)`` of one saved ``statisticsInfoSearch`` answer."""
    from .fss import FssError, _result, _rows, fss_pending, infer_term, parse_statistics

    path = Path(response)
    try:
        obj = json.loads(path.read_text(encoding="utf-8-sig"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise FssError(f"{path}: not a FISIS JSON answer ({exc})") from None
    res = _result(obj)
    code = str(res.get("err_cd", "000")).strip()
    if code not in ("000", ""):
        raise FssError(f"{path}: FISIS answered err_cd {code} ({res.get('err_msg', '')})", code,
                       str(res.get("err_msg", "")))
    rows = _rows(res.get("list"))
    list_no = list_no or next((str(r["list_no"]) for r in rows if r.get("list_no")), "") or path.stem
    months = sorted({str(r.get("base_month", "")) for r in rows})
    term = infer_term(months)
    pending, rejects = [], []
    for cd in dict.fromkeys(str(r.get("finance_cd", "")) for r in rows):
        data = parse_statistics(res, list_no, cd, term, months[0], months[-1])
        data.rows = [r for r in rows if str(r.get("finance_cd", "")) == cd]
        meta = {"list_no": list_no, "finance_cd": cd, "term": term, "start_base_mm": months[0],
                "end_base_mm": months[-1]}
        p, rj = fss_pending(data, f"fss_{list_no}_{cd}.png", meta, max_rows=max_rows)
        pending += p
        rejects += rj
    return pending, rejects


def wiki_extract(page: str | Path, *, max_rows: int | None = 200):
    """``(pending tables, rejects)`` of one saved ``action=parse`` answer or page HTML."""
    from .wiki import extract_wikitables, table_pending

    path = Path(page)
    text = path.read_text(encoding="utf-8-sig")
    html, title = text, path.stem
    if text.lstrip().startswith("{"):
        obj = json.loads(text)
        parse = obj.get("parse") if isinstance(obj, dict) else None
        if not isinstance(parse, dict):
            raise ValueError(f"{path}: JSON without a 'parse' object (not an action=parse answer)")
        html = parse.get("text")
        html = html.get("*", "") if isinstance(html, dict) else str(html or "")
        title = str(parse.get("title") or title)
    pending, rejects = [], []
    for t in extract_wikitables(html):
        p, rj = table_pending(t, f"wiki_{path.stem}_{t.index:03d}.png", {"title": title, "table_index": t.index},
                              max_rows=max_rows, where=f"{title!r} table {t.index}")
        pending += p
        rejects += rj
    return pending, rejects


def _main(prog: str, what: str, extractor, argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(prog=f"ocr-ft {prog}", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("extract", help=f"write the tables of {what} as NNNN.html (and NNNN.png with --render)")
    ex.add_argument("input", help=what)
    ex.add_argument("--out", required=True, help="output directory (NNNN.html/NNNN.png there are replaced)")
    ex.add_argument("--render", action="store_true", help="also write each pair's image NNNN.png (Chromium)")
    ex.add_argument("--max-rows", type=int, default=200, help="rows per window (default 200, as the asset)")
    args = parser.parse_args(argv)
    try:
        pending, rejects = extractor(args.input, max_rows=args.max_rows)
        count, failed = write_pending(pending, args.out, render=args.render)
    except FileNotFoundError as exc:
        print(f"ocr-ft {prog} extract: {exc.filename}: no such file", file=sys.stderr)
        return 1
    except Exception as exc:
        print(f"ocr-ft {prog} extract: {args.input}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    for r in rejects:
        print(f"ocr-ft {prog} extract: left out {r.original_filename}: {r.reason}: {r.detail}", file=sys.stderr)
    if failed:
        print(f"ocr-ft {prog} extract: render failures {dict(failed)}", file=sys.stderr)
    print(count)
    return 0


def fss_main(argv: list[str] | None = None) -> int:
    return _main("fss", "one saved FISIS statisticsInfoSearch JSON answer", fss_extract, argv)


def wiki_main(argv: list[str] | None = None) -> int:
    return _main("wiki", "a saved action=parse JSON answer or the page's HTML", wiki_extract, argv)


if __name__ == "__main__":
    sys.exit(fss_main())
