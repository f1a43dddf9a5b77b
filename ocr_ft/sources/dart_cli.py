"""``ocr-ft dart``: DART tools that work on files, without the API.

``ocr-ft dart extract DOCUMENT --out DIR`` reads one filing document (a dart3.xsd XML file) or a filing's
``document.xml`` ZIP, and writes every kept table (at least 2x2, see :mod:`ocr_ft.sources.dart_xml`) as
``DIR/NNNN.html`` in the normalised label form, numbered from 0001 (main document first). It applies exactly
what the ``dart`` asset applies: layout tables (``BORDER="0"``) left out, the selection policy and cap
(``--max-tables N``, default 30; ``--all`` keeps every real table), row windows for long tables; ``--render``
also writes ``NNNN.png``, the image of the pair with the DART viewer's look. Files named ``NNNN.html``/``.png``
left in DIR by an earlier run are removed first, so DIR holds exactly this run's tables.
The number of tables written is printed on stdout; what was skipped, and why, goes to stderr.
"""

from __future__ import annotations

import argparse
import re
import sys
import zipfile
from collections import Counter
from pathlib import Path

from ..storage import atomic_write_text
from .dart import SELECTION_POLICIES, DartDocumentError, documents_pending, read_zip_documents
from .scraped_common import PendingTable  # noqa: F401  (re-exported for callers building their own)
from .scraped_cli import write_pending



def _documents(path: Path) -> list[tuple[str, bytes]]:
    data = path.read_bytes()
    if data[:2] == b"PK" or zipfile.is_zipfile(path):
        return [(n, b) for n, b in read_zip_documents(data, path.stem) if n.lower().endswith(".xml")]
    return [(path.name, data)]


def extract(document: str | Path, out: str | Path, *, min_rows: int = 2, min_cols: int = 2,
            max_tables: int | None = 30, selection: str = "financial_first", render: bool = False,
            max_rows: int | None = 200, chromium_path: str = "/usr/bin/chromium") -> tuple[int, Counter]:
    """Write what the ``dart`` asset takes from ``document`` (XML or ZIP) to ``out``: the same layout filter,
    selection policy and cap, row windows (:func:`ocr_ft.sources.dart.documents_pending`); with ``render``
    also each pair's PNG. Returns (count written, skip reasons incl. ``layout_table`` and ``over_cap``)."""
    document, out = Path(document), Path(out)
    docs = _documents(document)
    rcept_no = document.stem
    pending: list = []
    rejects: list = []
    _found, over, layout = documents_pending(
        docs, rcept_no, {"rcept_no": rcept_no, "document_path": str(document)}, pending, rejects,
        min_rows=min_rows, min_cols=min_cols, max_rows=max_rows, max_tables=max_tables, selection=selection,
    )
    skipped: Counter = Counter(r.reason for r in rejects)
    for r in rejects:
        if r.reason == "document_parse_failed":
            print(f"ocr-ft dart extract: {r.detail}", file=sys.stderr)
    if layout:
        skipped["layout_table"] += layout
    if over:
        skipped["over_cap"] += over
    written, failed = write_pending(pending, out, render=render, chromium_path=chromium_path)
    skipped.update(failed)
    return written, skipped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ocr-ft dart", description="DART tools that work on local files.")
    sub = parser.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("extract", help="write each table of a DART XML document or document.xml ZIP as NNNN.html")
    ex.add_argument("document", help="a dart3.xsd XML file, or the ZIP that document.xml returns")
    ex.add_argument("--out", required=True, help="output directory (NNNN.html files there are replaced)")
    ex.add_argument("--min-rows", type=int, default=2, help="smallest table kept, in grid rows (default 2)")
    ex.add_argument("--min-cols", type=int, default=2, help="smallest table kept, in grid columns (default 2)")
    ex.add_argument("--max-tables", type=int, default=30, help="at most N tables, as the asset (default 30)")
    ex.add_argument("--all", action="store_true", help="keep every real table (no cap)")
    ex.add_argument("--selection", choices=SELECTION_POLICIES, default="financial_first",
                    help="which tables come first under the cap (default financial_first)")
    ex.add_argument("--render", action="store_true", help="also write NNNN.png, the image of each pair")
    args = parser.parse_args(argv)

    try:
        count, skipped = extract(args.document, args.out, min_rows=args.min_rows, min_cols=args.min_cols,
                                 max_tables=None if args.all else args.max_tables,
                                 selection="all" if args.all else args.selection, render=args.render)
    except FileNotFoundError as exc:
        print(f"ocr-ft dart extract: {exc.filename}: no such file", file=sys.stderr)
        return 1
    except DartDocumentError as exc:
        print(f"ocr-ft dart extract: {exc}", file=sys.stderr)
        return 1
    if skipped:
        detail = ", ".join(f"{n} {reason}" for reason, n in sorted(skipped.items()))
        print(f"ocr-ft dart extract: skipped {detail}", file=sys.stderr)
    print(count)
    return 0


if __name__ == "__main__":
    sys.exit(main())
