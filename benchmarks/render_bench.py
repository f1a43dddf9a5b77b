"""Rendering speed: the project's renderer (one browser, page pool, CDP capture, cache) against a naive one.

Workload: 200 typical tables, 12 rows x 6 columns of Korean account names and amounts with a header row,
generated deterministically (``random.Random(2024)``).

Baseline (naive, the usual Playwright script): one browser, one context with the same settings (JS off,
the same device scale factor and viewport, every request aborted), and for each table, in turn: a new page,
``set_content`` of the same composed document, an element screenshot of the first ``<table>``, the PNG put
in a blob store, the page closed.

Ours: :class:`ocr_ft.render.Renderer` (``pool_size`` pages, default 4) with an empty cache, ``render_many``
over the 200; then the same 200 again in the same renderer (all cache hits). Both timings include starting
the browser. Images from both are compared byte for byte.

Shard re-materialization: the ``synthetic`` asset materialized through Dagster for one shard of 100 tables,
twice, as two runs (each builds its own renderer, as a re-run does): the first with an empty render cache,
the second with the cache the first left on disk.

Targets on the 2-core dev machine: >= 1.5x the baseline, >= 12 tables/s, re-materializing an unchanged
shard >= 20x faster than the first time. The last line printed is one JSON object.

Run: ``.venv/bin/python benchmarks/render_bench.py [--tables 200] [--pool 4]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ocr_ft.render import (  # noqa: E402
    CHROMIUM_ARGS,
    DEFAULT_CHROMIUM,
    VIEWPORT_HEIGHT,
    RenderSettings,
    Renderer,
    compose_document,
)
from ocr_ft.sources.synthetic import vocab  # noqa: E402
from ocr_ft.storage import BlobStore  # noqa: E402

SPEEDUP_TARGET = 1.5
THROUGHPUT_TARGET = 12.0
CACHE_SPEEDUP_TARGET = 20.0

CSS = (
    "table{border-collapse:collapse;font-size:14px}"
    "th,td{border:1px solid #444;padding:4px 8px}th{background:#eef2f8}td.n{text-align:right}"
)


def typical_tables(n: int, seed: int = 2024) -> list[str]:
    """``n`` distinct 12 x 6 Korean tables (header + 11 rows: account, four amounts, a ratio)."""
    rng = random.Random(seed)
    accounts = [a for _, groups, _ in vocab.BS_TREE for _, leaves in groups for a in leaves]
    out = []
    for i in range(n):
        head = "<tr><th>과목</th>" + "".join(f"<th>{2024 - k}년</th>" for k in range(4)) + "<th>비중(%)</th></tr>"
        rows = []
        for _ in range(11):
            amounts = "".join(
                f'<td class="n">{"△" if rng.random() < 0.1 else ""}{rng.randrange(1, 10**8):,}</td>' for _ in range(4)
            )
            rows.append(f"<tr><td>{rng.choice(accounts)}</td>{amounts}<td class=\"n\">{rng.uniform(0, 100):.2f}</td></tr>")
        title = f"<div>{rng.choice(vocab.BANKS)} 주요 계정 현황 #{i} (단위: 백만원)</div>"
        out.append(f"<style>{CSS}</style>{title}<table>{head}{''.join(rows)}</table>")
    return out


async def _baseline(docs: list[str], settings: RenderSettings, store: BlobStore) -> list[str]:
    from playwright.async_api import async_playwright

    async def abort(route):
        await route.abort()

    digests = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=DEFAULT_CHROMIUM, args=list(CHROMIUM_ARGS))
        context = await browser.new_context(
            java_script_enabled=False,
            device_scale_factor=settings.device_scale_factor,
            viewport={"width": settings.viewport_width, "height": VIEWPORT_HEIGHT},
            offline=True,
        )
        await context.route("**/*", abort)
        for doc in docs:
            page = await context.new_page()
            await page.set_content(doc, timeout=settings.timeout_ms)
            png = await page.locator("table").first.screenshot(timeout=settings.timeout_ms)
            digests.append(store.put_bytes(png, ".png")[0])
            await page.close()
        await browser.close()
    return digests


def _shard_rematerialization(data_dir: Path, per_shard: int) -> tuple[float, float, bool]:
    """Seconds of the first and of an unchanged second materialization of one ``synthetic`` shard (two runs
    through Dagster, each with its own renderer), and whether both recorded the same data version."""
    import dagster as dg

    from ocr_ft.defs.sources import synthetic
    from ocr_ft.resources import OcrFtPaths, RendererResource

    instance = dg.DagsterInstance.ephemeral()
    resources = {"paths": OcrFtPaths(data_dir=str(data_dir)), "renderer": RendererResource()}
    run_config = {"ops": {"synthetic": {"config": {"per_shard": per_shard}}}}
    times, versions = [], []
    for _ in range(2):
        t0 = time.perf_counter()
        res = dg.materialize([synthetic], partition_key="shard-000", instance=instance, resources=resources,
                             run_config=run_config)
        times.append(time.perf_counter() - t0)
        (event,) = res.get_asset_materialization_events()
        versions.append(event.materialization.tags["dagster/data_version"])
    return times[0], times[1], versions[0] == versions[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tables", type=int, default=200)
    ap.add_argument("--pool", type=int, default=4)
    ap.add_argument("--shard-size", type=int, default=100, help="tables in the re-materialized synthetic shard")
    args = ap.parse_args()

    settings = RenderSettings()
    tables = typical_tables(args.tables)
    docs = [compose_document(t, None, settings) for t in tables]
    print(f"{len(tables)} tables of 12 x 6 cells, device_scale_factor {settings.device_scale_factor}, "
          f"{os.cpu_count()} CPUs")

    with tempfile.TemporaryDirectory(prefix="render_bench_") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        base_digests = asyncio.run(_baseline(docs, settings, BlobStore(tmp / "baseline")))
        baseline_s = time.perf_counter() - t0
        baseline_rate = len(tables) / baseline_s
        print(f"baseline (new page per table, sequential): {baseline_s:.2f} s, {baseline_rate:.1f} tables/s")

        t0 = time.perf_counter()
        with Renderer(BlobStore(tmp / "blobs"), tmp / "cache", settings=settings, pool_size=args.pool) as r:
            first = r.render_many(tables)
            first_s = time.perf_counter() - t0
            t1 = time.perf_counter()
            second = r.render_many(tables)
            cached_s = time.perf_counter() - t1
            stats = r.stats
        failures = sum(1 for x in first if not hasattr(x, "sha256"))
        ours_rate = len(tables) / first_s
        print(f"ours (pool of {args.pool}, empty cache): {first_s:.2f} s, {ours_rate:.1f} tables/s, "
              f"{failures} failures, {stats.rendered} renders")
        all_cached = all(getattr(x, "cached", False) for x in second)
        print(f"ours again (cache): {cached_s * 1000:.1f} ms, all cached: {all_cached}")
        identical = sum(1 for a, b in zip(first, base_digests) if getattr(a, "sha256", None) == b)
        print(f"images identical to the baseline's: {identical}/{len(tables)}")

        shard_first_s, shard_again_s, same_version = _shard_rematerialization(tmp / "shard", args.shard_size)
        print(f"synthetic shard of {args.shard_size}: first materialization {shard_first_s:.2f} s, "
              f"unchanged re-materialization {shard_again_s:.2f} s, same data version: {same_version}")

    speedup = baseline_s / first_s
    cache_speedup = first_s / cached_s if cached_s > 0 else float("inf")
    shard_speedup = shard_first_s / shard_again_s
    print(f"speedup vs baseline: {speedup:.2f}x; warm-cache re-render: {cache_speedup:.0f}x faster; "
          f"shard re-materialization: {shard_speedup:.1f}x faster")
    figures = {
        "tables": len(tables),
        "cpus": os.cpu_count(),
        "pool_size": args.pool,
        "device_scale_factor": settings.device_scale_factor,
        "baseline_s": round(baseline_s, 3),
        "baseline_tables_per_s": round(baseline_rate, 2),
        "ours_s": round(first_s, 3),
        "ours_tables_per_s": round(ours_rate, 2),
        "ours_failures": failures,
        "cached_s": round(cached_s, 4),
        "all_cached_on_second_run": all_cached,
        "speedup_vs_baseline": round(speedup, 2),
        "cache_speedup_same_renderer": round(cache_speedup, 1),
        "shard_tables": args.shard_size,
        "shard_first_s": round(shard_first_s, 3),
        "shard_rematerialize_s": round(shard_again_s, 3),
        "shard_rematerialize_speedup": round(shard_speedup, 1),
        "shard_same_data_version": same_version,
        "images_identical_to_baseline": identical,
        "timings_include_browser_start": True,
    }
    targets = {
        f"speedup_vs_baseline>={SPEEDUP_TARGET}": speedup >= SPEEDUP_TARGET,
        f"tables_per_s>={THROUGHPUT_TARGET:g}": ours_rate >= THROUGHPUT_TARGET,
        f"shard_rematerialize_speedup>={CACHE_SPEEDUP_TARGET:g}": shard_speedup >= CACHE_SPEEDUP_TARGET
        and same_version and all_cached,
        "no_render_failures": failures == 0,
    }
    print(json.dumps({"benchmark": "render", **figures, "targets": targets, "targets_met": all(targets.values())},
                     ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
