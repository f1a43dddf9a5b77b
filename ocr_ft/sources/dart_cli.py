"""``ocr-ft dart``: DART tools that work on files, without the API.

``ocr-ft dart extract DOCUMENT --out DIR`` reads one filing document (a dart3.xsd XML file) or a filing's
``document.xml`` ZIP, and writes every kept table (at least 2x2, see :mod:`ocr_ft.sources.dart_xml`) as
``DIR/NNNN.html`` in the normalised label form, numbered from 0001 over the documents in name order. Files
named ``NNNN.html`` left in DIR by an earlier run are removed first, so DIR holds exactly this run's tables.
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
from .dart import DartDocumentError, read_zip_documents
from .dart_xml import DartXmlError, extract_tables

_OUTPUT_NAME = re.compile(r"^\d{4,}\.html$")


def _documents(path: Path) -> list[tuple[str, bytes]]:
    data = path.read_bytes()
    if data[:2] == b"PK" or zipfile.is_zipfile(path):
        return [(n, b) for n, b in read_zip_documents(data, path.stem) if n.lower().endswith(".xml")]
    return [(path.name, data)]


def extract(document: str | Path, out: str | Path, *, min_rows: int = 2, min_cols: int = 2) -> tuple[int, Counter]:
    """Write the kept tables of ``document`` (XML or ZIP) to ``out``; return (count written, skip reasons)."""
    document, out = Path(document), Path(out)
    docs = _documents(document)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.iterdir():
        if old.is_file() and _OUTPUT_NAME.match(old.name):
            old.unlink()
    written = 0
    skipped: Counter = Counter()
    for name, payload in docs:
        try:
            doc = extract_tables(payload, min_rows=min_rows, min_cols=min_cols)
        except DartXmlError as exc:
            print(f"ocr-ft dart extract: {name}: {exc}", file=sys.stderr)
            skipped["document_parse_failed"] += 1
            continue
        for table in doc.tables:
            if table.kept:
                written += 1
                atomic_write_text(out / f"{written:04d}.html", table.html + "\n")
            else:
                skipped[table.reason] += 1
    return written, skipped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ocr-ft dart", description="DART tools that work on local files.")
    sub = parser.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("extract", help="write each table of a DART XML document or document.xml ZIP as NNNN.html")
    ex.add_argument("document", help="a dart3.xsd XML file, or the ZIP that document.xml returns")
    ex.add_argument("--out", required=True, help="output directory (NNNN.html files there are replaced)")
    ex.add_argument("--min-rows", type=int, default=2, help="smallest table kept, in grid rows (default 2)")
    ex.add_argument("--min-cols", type=int, default=2, help="smallest table kept, in grid columns (default 2)")
    args = parser.parse_args(argv)

    try:
        count, skipped = extract(args.document, args.out, min_rows=args.min_rows, min_cols=args.min_cols)
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
