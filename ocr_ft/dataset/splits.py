"""Deterministic, stratified, group-aware train/val/test splits.

* The same records, seed and ratios always give the same splits (order of input does not matter).
* Stratified by ``(category, source)``: each stratum is split close to the requested ratios; rounding left
  over by small strata carries to the next, so val and test are filled even from many small strata.
* A duplicate group (see :mod:`ocr_ft.dataset.dedup`) is assigned as a whole: it never crosses splits.
* A curated test list (file names or content hashes) is honoured: those records, and their groups, go to
  ``test`` whatever the ratios say.
* Optional oversampling repeats rare categories in ``train`` only, so copies never leak into val/test.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass, field

from .records import Record

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class SplitConfig:
    seed: int = 42
    val_ratio: float = 0.10
    test_ratio: float = 0.05
    curated_test: tuple[str, ...] = ()  # original file names or content hashes forced into test
    oversample: dict[str, int] = field(default_factory=dict)  # category -> copies in train (e.g. 2)

    def __post_init__(self):
        if not (0 <= self.val_ratio < 1 and 0 <= self.test_ratio < 1 and self.val_ratio + self.test_ratio < 1):
            raise ValueError(f"split ratios val={self.val_ratio} test={self.test_ratio} must be in [0,1) and sum below 1")
        for cat, n in self.oversample.items():
            if int(n) < 1:
                raise ValueError(f"oversample factor for {cat!r} must be >= 1, got {n}")


def _rank(seed: int, key: str) -> str:
    return hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()


def assign_splits(records: list[Record], groups: dict[str, str], cfg: SplitConfig) -> dict[str, str]:
    """content_hash -> split name."""
    ratios = {"train": 1 - cfg.val_ratio - cfg.test_ratio, "val": cfg.val_ratio, "test": cfg.test_ratio}
    members: dict[str, list[Record]] = defaultdict(list)
    for r in records:
        members[groups.get(r.content_hash, r.content_hash)].append(r)
    curated = set(cfg.curated_test)
    assignment: dict[str, str] = {}
    strata: dict[tuple[str, str], list[str]] = defaultdict(list)
    for gid, rs in members.items():
        if any(r.content_hash in curated or r.metadata.get("original_filename") in curated for r in rs):
            for r in rs:
                assignment[r.content_hash] = "test"
            continue
        head = min(rs, key=lambda r: r.content_hash)
        strata[(head.category, head.source)].append(gid)
    # Within a stratum each group goes to the split furthest below its share so far. What a small stratum
    # cannot give exactly (a 3-record stratum has no room for a 10 % val share) is carried over to the next
    # strata, so small strata still fill val and test overall.
    carry = dict.fromkeys(SPLITS, 0.0)
    for key in sorted(strata):
        gids = sorted(strata[key], key=lambda g: _rank(cfg.seed, g))
        counts = dict.fromkeys(SPLITS, 0)
        total = 0
        for gid in gids:
            size = len(members[gid])
            total += size
            split = max(SPLITS, key=lambda s: (ratios[s] * total - counts[s] + carry[s], -SPLITS.index(s)))
            counts[split] += size
            for r in members[gid]:
                assignment[r.content_hash] = split
        for s in SPLITS:
            carry[s] += ratios[s] * total - counts[s]
    return assignment


def make_splits(records: list[Record], groups: dict[str, str], cfg: SplitConfig) -> dict[str, list[Record]]:
    """Records of each split, sorted by content hash; ``train`` oversampled as configured."""
    assignment = assign_splits(records, groups, cfg)
    out: dict[str, list[Record]] = {s: [] for s in SPLITS}
    for r in sorted(records, key=lambda r: r.content_hash):
        out[assignment[r.content_hash]].append(r)
    if cfg.oversample:
        extra = []
        for r in out["train"]:
            extra.extend([r] * (int(cfg.oversample.get(r.category, 1)) - 1))
        out["train"].extend(extra)
    return out


def leakage(splits: dict[str, list[Record]], groups: dict[str, str]) -> list[str]:
    """Problems found: a record or a duplicate group present in more than one split."""
    where: dict[str, set[str]] = defaultdict(set)
    for name, rs in splits.items():
        for r in rs:
            where[groups.get(r.content_hash, r.content_hash)].add(name)
    return [f"group {g[:12]} is in {sorted(s)}" for g, s in sorted(where.items()) if len(s) > 1]
