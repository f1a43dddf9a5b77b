"""The dataset stage end to end, as plain functions over files under the data directory.

Layout (all JSONL written atomically)::

    sources/<source>/<partition>.jsonl     manifest of one source partition: pairs + load rejects
    validated/<source>/<partition>.jsonl   records + rejects of that partition
    dataset/dataset.jsonl                  deduplicated records of every source
    dataset/rejects.jsonl                  every reject (load, validate, dedup) with its reason
    dataset/groups.json                    content_hash -> duplicate group
    dataset/stats.json                     counts by source, category, reason
    splits/{train,val,test}.jsonl          the splits
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from ..storage import atomic_write_json, atomic_write_jsonl, read_jsonl, sha256_file, sha256_json
from .dedup import DedupConfig, deduplicate
from .records import RawPair, Record, Reject, SourceResult, split_manifest
from .splits import SplitConfig, leakage, make_splits
from .validate import ValidationLimits, validate_all

VALIDATION_VERSION = "2"  # 2: labels NFC not NFKC, hostile-input rejects. Bump when validate_pair's output changes, so cached per-pair results are redone


def manifest_path(data_dir: Path, source: str, partition: str) -> Path:
    return Path(data_dir) / "sources" / source / f"{partition}.jsonl"


def validated_path(data_dir: Path, source: str, partition: str) -> Path:
    return Path(data_dir) / "validated" / source / f"{partition}.jsonl"


def write_manifest(result: SourceResult, path: Path) -> str:
    """Write a source partition's manifest; return its content hash (the partition's data version)."""
    atomic_write_jsonl(path, result.manifest_rows())
    return sha256_file(path)


def _pair_key(pair: RawPair, limits: ValidationLimits) -> str:
    return sha256_json([VALIDATION_VERSION, pair.to_dict(), asdict(limits)])


def validate_partition(
    manifest: Path,
    out: Path,
    data_dir: Path,
    limits: ValidationLimits = ValidationLimits(),
    *,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Validate one manifest into ``out``, reusing the previous output's results for unchanged pairs.

    Returns stats: records, rejects by reason, reused, validated, data_version.
    """
    pairs, load_rejects = split_manifest(read_jsonl(manifest))
    previous: dict[str, dict] = {}
    if out.exists():
        for row in read_jsonl(out):
            if row.get("pair_key"):
                previous[row["pair_key"]] = row
    keys = [_pair_key(p, limits) for p in pairs]
    todo = [(k, p) for k, p in zip(keys, pairs) if k not in previous]
    results = validate_all([p for _, p in todo], str(data_dir), limits, workers=workers, progress=progress)
    fresh: dict[str, dict] = {}
    for (k, _), res in zip(todo, results):
        fresh[k] = {"pair_key": k, **res.to_dict()} if isinstance(res, Reject) else {"kind": "record", "pair_key": k, **res.to_dict()}
    rows = [previous.get(k) or fresh[k] for k in keys]
    rows += [j.to_dict() for j in load_rejects]
    atomic_write_jsonl(out, rows)
    reasons = Counter(r["reason"] for r in rows if r.get("kind") == "reject")
    return {
        "records": sum(1 for r in rows if r.get("kind") == "record"),
        "rejects": sum(reasons.values()),
        "reject_reasons": dict(sorted(reasons.items())),
        "reused": len(pairs) - len(todo),
        "validated": len(todo),
        "data_version": sha256_file(out),
    }


def read_validated(path: Path) -> tuple[list[Record], list[Reject]]:
    records, rejects = [], []
    for row in read_jsonl(path):
        row.pop("pair_key", None)
        if row.pop("kind", None) == "record":
            records.append(Record.from_dict(row))
        else:
            rejects.append(Reject.from_dict(row))
    return records, rejects


def build_dataset(validated_files: list[Path], out_dir: Path, cfg: DedupConfig = DedupConfig()) -> dict:
    """Merge every validated partition, deduplicate, and write the dataset folder. Returns stats."""
    records: list[Record] = []
    rejects: list[Reject] = []
    for path in sorted(validated_files):
        rs, js = read_validated(path)
        records.extend(rs)
        rejects.extend(js)
    result = deduplicate(records, cfg)
    rejects.extend(result.rejects)
    out_dir = Path(out_dir)
    atomic_write_jsonl(out_dir / "dataset.jsonl", (r.to_dict() for r in result.kept))
    atomic_write_jsonl(out_dir / "rejects.jsonl", (j.to_dict() for j in rejects))
    atomic_write_json(out_dir / "groups.json", result.groups, indent=None)
    stats = {
        "records": len(result.kept),
        "rejects": len(rejects),
        "by_source": dict(sorted(Counter(r.source for r in result.kept).items())),
        "by_category": dict(sorted(Counter(r.category for r in result.kept).items())),
        "reject_reasons": dict(sorted(Counter(j.reason for j in rejects).items())),
        "rejects_by_source": dict(sorted(Counter(j.source for j in rejects).items())),
        "dedup": result.stats,
        "data_version": sha256_file(out_dir / "dataset.jsonl"),
    }
    atomic_write_json(out_dir / "stats.json", stats)
    return stats


def load_dataset(dataset_dir: Path) -> tuple[list[Record], dict[str, str]]:
    dataset_dir = Path(dataset_dir)
    records = [Record.from_dict(r) for r in read_jsonl(dataset_dir / "dataset.jsonl")]
    groups = json.loads((dataset_dir / "groups.json").read_text(encoding="utf-8"))
    return records, groups


def build_splits(dataset_dir: Path, out_dir: Path, cfg: SplitConfig = SplitConfig()) -> dict:
    records, groups = load_dataset(dataset_dir)
    splits = make_splits(records, groups, cfg)
    problems = leakage(splits, groups)
    if problems:  # make_splits is group-aware by construction; this guards the invariant
        raise RuntimeError("split leakage: " + "; ".join(problems[:5]))
    out_dir = Path(out_dir)
    for name, rs in splits.items():
        atomic_write_jsonl(out_dir / f"{name}.jsonl", (r.to_dict() for r in rs))
    stats = {
        "counts": {n: len(rs) for n, rs in splits.items()},
        "by_category": {n: dict(sorted(Counter(r.category for r in rs).items())) for n, rs in splits.items()},
        "by_source": {n: dict(sorted(Counter(r.source for r in rs).items())) for n, rs in splits.items()},
        "config": {**asdict(cfg), "curated_test": list(cfg.curated_test)},
        "curated_not_found": curated_not_found(records, cfg.curated_test),
    }
    stats["data_version"] = sha256_json({n: sha256_file(out_dir / f"{n}.jsonl") for n in splits})
    atomic_write_json(out_dir / "stats.json", stats)
    return stats


def curated_not_found(records: list[Record], curated: tuple[str, ...]) -> list[str]:
    """Entries of the curated test list that name no record (a typo, or a pair that was rejected)."""
    known = {r.content_hash for r in records} | {r.metadata.get("original_filename") for r in records}
    return sorted(set(curated) - known)


def load_split(splits_dir: Path, name: str) -> list[Record]:
    return [Record.from_dict(r) for r in read_jsonl(Path(splits_dir) / f"{name}.jsonl")]
