"""``ocr-ft demo``: materialize the whole offline graph on the embedded defaults.

Sources: the sample ``existing`` pairs shipped in ``data/samples/existing`` (with augmented copies), small
``synthetic`` and ``synthetic_shilu`` shards; then validation, dataset, splits, the LLaMA-Factory export,
the tiny GLM-OCR-architecture model, a LoRA run on it, and the evaluation report. Everything is recorded in
the persistent Dagster instance at ``$DAGSTER_HOME`` (default ``.dagster_home``), so ``dagster dev``
afterwards shows the runs, the materializations and their data versions.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path


def _ensure_home(home: Path) -> None:
    home.mkdir(parents=True, exist_ok=True)
    cfg = home / "dagster.yaml"
    if not cfg.exists():
        shipped = Path.cwd() / "dagster.yaml"
        if shipped.is_file():
            shutil.copyfile(shipped, cfg)
    os.environ["DAGSTER_HOME"] = str(home.resolve())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="ocr-ft demo", description=__doc__.splitlines()[0])
    ap.add_argument("--synthetic-shards", type=int, default=2, help="synthetic shards to build (default 2)")
    ap.add_argument("--per-shard", type=int, default=24, help="tables per synthetic/shilu shard (default 24)")
    ap.add_argument("--shilu-shards", type=int, default=1, help="synthetic_shilu shards to build (default 1)")
    ap.add_argument("--augment-copies", type=int, default=1, help="augmented copies of each existing pair")
    ap.add_argument("--epochs", type=int, default=30, help="LoRA epochs on the tiny model (default 30: a few minutes)")
    ap.add_argument("--lr", type=float, default=None, help="learning rate (default: ocr_ft/train/tiny.yaml's)")
    ap.add_argument("--eval-limit", type=int, default=None, help="evaluate on the first N test samples only")
    ap.add_argument("--max-new-tokens", type=int, default=1024, help="generation budget per table in the evaluation")
    ap.add_argument("--home", default=os.environ.get("DAGSTER_HOME", ".dagster_home"), help="DAGSTER_HOME")
    args = ap.parse_args(argv)

    _ensure_home(Path(args.home))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import dagster as dg

    from .definitions import defs

    instance = dg.DagsterInstance.get()
    assets = list(defs.assets) + list(defs.asset_checks)
    resources = defs.resources
    logging = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
    steps: list[tuple[str, list[str], str | None, dict]] = [
        ("existing pairs", ["existing", "existing_validated"], None,
         {"existing": {"config": {"augment_copies": args.augment_copies}}}),
    ]
    for i in range(args.synthetic_shards):
        steps.append((f"synthetic shard-{i:03d}", ["synthetic", "synthetic_validated"], f"shard-{i:03d}",
                      {"synthetic": {"config": {"per_shard": args.per_shard}}}))
    for i in range(args.shilu_shards):
        steps.append((f"synthetic_shilu shard-{i:03d}", ["synthetic_shilu", "synthetic_shilu_validated"], f"shard-{i:03d}",
                      {"synthetic_shilu": {"config": {"per_shard": args.per_shard}}}))
    overrides = {"num_epochs": args.epochs, **({"learning_rate": args.lr} if args.lr else {})}
    steps.append(("dataset, splits, export, tiny model, LoRA, evaluation",
                  ["dataset", "splits", "llamafactory_export", "tiny_base_model", "lora_checkpoint", "evaluation_report"],
                  None, {"lora_checkpoint": {"config": {"overrides": overrides, "log_every_s": 5}},
                         "evaluation_report": {"config": {"limit": args.eval_limit, "split": "test",
                                                          "max_new_tokens": args.max_new_tokens}}}))
    started = time.perf_counter()
    for n, (label, selection, partition, ops) in enumerate(steps, 1):
        print(f"\n=== [{n}/{len(steps)}] {label} ===", flush=True)
        t0 = time.perf_counter()
        result = dg.materialize(assets, selection=selection, partition_key=partition, instance=instance,
                                resources=resources, run_config={"ops": ops, **logging}, raise_on_error=False)
        if not result.success:
            print(f"\nocr-ft demo: step {label!r} failed (run {result.run_id}); see the log above or the run in "
                  "the UI", file=sys.stderr)
            return 1
        failed = [e for e in result.get_asset_check_evaluations() if not e.passed]
        errors = [e.asset_check_key.name for e in failed if e.severity == dg.AssetCheckSeverity.ERROR]
        warnings = [e.asset_check_key.name for e in failed if e.severity != dg.AssetCheckSeverity.ERROR]
        note = (f"; FAILED checks: {', '.join(errors)}" if errors else "") + (
            f"; warnings: {', '.join(warnings)}" if warnings else "")
        print(f"=== [{n}/{len(steps)}] {label}: done in {time.perf_counter() - t0:.0f}s{note} ===", flush=True)

    from .resources import default_paths

    paths = default_paths()
    report_dir = Path(json.loads(paths.sub("eval", "latest.json").read_text(encoding="utf-8"))["path"])
    home = os.environ["DAGSTER_HOME"]
    print(f"\nocr-ft demo finished in {time.perf_counter() - started:.0f}s.")
    print(f"  report:   {report_dir / 'report.html'}  (also report.md, report.json)")
    print(f"  dataset:  {paths.sub('dataset')}  (rejects.jsonl lists every refused pair with its reason)")
    print(f"  export:   {paths.sub('export', 'llamafactory')}")
    print(f"  open the UI on this instance:  DAGSTER_HOME={home} .venv/bin/dagster dev   (http://127.0.0.1:3000)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
