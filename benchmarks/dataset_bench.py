"""Dataset stage benchmark: 15,000 generated records through validation, dedup and splits.

Targets (2-core machine): the whole dataset stage <= 30 s, and a re-run after changing one file of one
source >= 5x faster than the full run (per-source validation results are reused, as the Dagster graph does
when only that source's partition is re-materialized).

Usage: python benchmarks/dataset_bench.py [--records 15000] [--sources 6]
The last line of output is one JSON object with figures, targets and targets_met.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageDraw

from ocr_ft.dataset.build import build_dataset, build_splits, validate_partition, write_manifest
from ocr_ft.dataset.records import SOURCES, RawPair, SourceResult
from ocr_ft.dataset.splits import SplitConfig
from ocr_ft.storage import BlobStore

WORDS = ["자산", "부채", "자본", "매출액", "영업이익", "당기순이익", "현금", "예수금", "대출채권", "이자수익"]


def make_image(rng: random.Random) -> bytes:
    img = Image.new("L", (120, 80), 255)
    d = ImageDraw.Draw(img)
    for _ in range(10):
        x, y = rng.randrange(110), rng.randrange(70)
        d.rectangle([x, y, x + rng.randrange(3, 40), y + rng.randrange(3, 25)], fill=rng.randrange(200))
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def make_html(rng: random.Random, i: int) -> str:
    rows = []
    kind = i % 4
    for r in range(rng.randrange(3, 8)):
        cells = [f"<td>{rng.choice(WORDS)} {rng.randrange(10**7):,}</td>" for _ in range(4)]
        if kind == 1 and r == 0:
            cells = ['<td colspan="2">구분</td>'] + cells[2:]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    html = "<table>" + "".join(rows) + "</table>"
    if kind >= 2:
        html = f"<table><tr><td>합계</td><td>{html}</td></tr><tr><td>{i}</td><td>-</td></tr></table>"
    if kind == 3:
        html = f"<table><tr><td>외부</td><td>{html}</td></tr></table>"
    return html


def generate(data_dir: Path, n: int, n_sources: int) -> dict[str, SourceResult]:
    store = BlobStore(data_dir / "blobs", base=data_dir)
    rng = random.Random(0)
    results = {s: SourceResult() for s in SOURCES[:n_sources]}
    names = list(results)
    for i in range(n):
        source = names[i % n_sources]
        _, rel = store.put_bytes(make_image(rng))
        results[source].pairs.append(RawPair(source, f"{source}_{i:05d}.png", rel, make_html(rng, i)))
    return results


def run_stage(data_dir: Path, sources: list[str]) -> float:
    start = time.perf_counter()
    for s in sources:
        validate_partition(data_dir / "sources" / s / "all.jsonl", data_dir / "validated" / s / "all.jsonl", data_dir)
    validated = sorted((data_dir / "validated").glob("*/all.jsonl"))
    build_dataset(validated, data_dir / "dataset")
    build_splits(data_dir / "dataset", data_dir / "splits", SplitConfig())
    return time.perf_counter() - start


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=15_000)
    ap.add_argument("--sources", type=int, default=6)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        t0 = time.perf_counter()
        results = generate(data_dir, args.records, args.sources)
        for s, res in results.items():
            write_manifest(res, data_dir / "sources" / s / "all.jsonl")
        print(f"generated {args.records} records in {time.perf_counter() - t0:.1f}s", file=sys.stderr)

        full = run_stage(data_dir, list(results))
        print(f"full dataset stage: {full:.2f}s ({args.records / full:.0f} records/s)")

        # one file of one source changes: only that source is re-validated (the others' outputs are reused)
        changed = list(results)[0]
        pair = results[changed].pairs[0]
        pair.html = pair.html.replace("</td>", " 수정</td>", 1)
        write_manifest(results[changed], data_dir / "sources" / changed / "all.jsonl")
        rerun = run_stage(data_dir, [changed])
        print(f"re-run after changing one file of {changed!r}: {rerun:.2f}s ({full / rerun:.1f}x faster)")

    figures = {"records": args.records, "full_s": round(full, 3), "records_per_s": round(args.records / full, 1),
               "rerun_one_source_s": round(rerun, 3), "rerun_speedup": round(full / rerun, 2)}
    targets = {"full_s_max": 30.0, "rerun_speedup_min": 5.0}
    met = figures["full_s"] <= targets["full_s_max"] and figures["rerun_speedup"] >= targets["rerun_speedup_min"]
    print(json.dumps({"benchmark": "dataset", **figures, "targets": targets, "targets_met": met}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
