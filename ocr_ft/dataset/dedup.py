"""Deduplication across every source, and the duplicate groups that splits must keep together.

In order:

1. **exact** — same normalised label and same image bytes (``Record.content_hash``): the first is kept.
2. **conflicting labels** — the same image bytes with different labels: all are rejected, since there is no
   way to tell which label is right.
3. **file-name collision** — the same ``original_filename`` in two sources: the later source's entry is
   rejected (exports and reports are keyed by file name).
4. **near** — perceptual image hashes within ``max_hamming`` bits *and* cell text similarity at least
   ``min_text_similarity`` (rapidfuzz ratio, 0–1): the first of each connected group is kept. Augmented
   variants of one original (the same ``metadata.family``) are never removed as near duplicates of each other.

"First" is deterministic: sources in :data:`ocr_ft.dataset.records.SOURCES` order, then file name.

Kept records are then grouped (same normalised label, or the same augmentation family): a group never
crosses splits.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
from rapidfuzz import fuzz

from .records import SOURCES, Record, Reject

_TAGS = re.compile(r"<[^>]+>")


@dataclass(frozen=True)
class DedupConfig:
    max_hamming: int = 4
    min_text_similarity: float = 0.95
    block: int = 512


@dataclass
class DedupResult:
    kept: list[Record]
    rejects: list[Reject]
    groups: dict[str, str]  # content_hash -> group id (for splits)
    stats: dict = field(default_factory=dict)


class _UnionFind:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)  # the earliest index stays the root


def cell_text(html: str) -> str:
    return " ".join(_TAGS.sub(" ", html).split())


def _family(r: Record) -> str:
    return r.metadata.get("family") or r.content_hash


def _sort_key(r: Record):
    order = SOURCES.index(r.source) if r.source in SOURCES else len(SOURCES)
    return (order, r.source, r.metadata.get("original_filename", ""), r.content_hash)


def _reject(r: Record, reason: str, detail: str, **extra) -> Reject:
    return Reject(r.source, r.metadata.get("original_filename", ""), "dedup", reason, detail, r.image_path, extra)


def near_duplicate_pairs(records: list[Record], cfg: DedupConfig) -> list[tuple[int, int, int, float]]:
    """Index pairs (i < j) whose phash distance and text similarity both pass; with distance and similarity."""
    n = len(records)
    if n < 2:
        return []
    hashes = np.array([int(r.image_phash or "0", 16) for r in records], dtype=np.uint64)
    texts: dict[int, str] = {}
    out = []
    for start in range(0, n, cfg.block):
        block = hashes[start : start + cfg.block]
        dist = np.bitwise_count(block[:, None] ^ hashes[None, start:])  # only j >= start: each pair once
        ii, jj = np.nonzero(dist <= cfg.max_hamming)
        for a, b in zip(ii.tolist(), jj.tolist()):
            i, j = start + a, start + b
            if j <= i:
                continue
            ti = texts.setdefault(i, cell_text(records[i].ground_truth_html))
            tj = texts.setdefault(j, cell_text(records[j].ground_truth_html))
            sim = fuzz.ratio(ti, tj) / 100.0
            if sim >= cfg.min_text_similarity:
                out.append((i, j, int(dist[a, b]), sim))
    return out


def deduplicate(records: list[Record], cfg: DedupConfig = DedupConfig()) -> DedupResult:
    records = sorted(records, key=_sort_key)
    rejects: list[Reject] = []
    stats: dict[str, int] = defaultdict(int)

    # 1. exact
    seen: dict[str, Record] = {}
    stage1 = []
    for r in records:
        first = seen.get(r.content_hash)
        if first is not None:
            rejects.append(_reject(r, "exact_duplicate",
                                   f"same label and image as {first.source}/{first.metadata.get('original_filename')}",
                                   duplicate_of=first.content_hash))
            stats["exact_duplicate"] += 1
        else:
            seen[r.content_hash] = r
            stage1.append(r)

    # 2. same image, different labels
    by_image: dict[str, list[Record]] = defaultdict(list)
    for r in stage1:
        by_image[r.image_sha256].append(r)
    stage2 = []
    for r in stage1:
        group = by_image[r.image_sha256]
        if len(group) > 1:
            others = ", ".join(f"{o.source}/{o.metadata.get('original_filename')}" for o in group if o is not r)
            rejects.append(_reject(r, "conflicting_labels", f"the same image has a different label in {others}"))
            stats["conflicting_labels"] += 1
        else:
            stage2.append(r)

    # 3. file-name collisions across sources
    owner: dict[str, Record] = {}
    stage3 = []
    for r in stage2:
        name = r.metadata.get("original_filename", "")
        first = owner.get(name)
        if first is not None and first.source != r.source:
            rejects.append(_reject(r, "filename_collision", f"file name {name!r} is already used by source {first.source}",
                                   duplicate_of=first.content_hash))
            stats["filename_collision"] += 1
        else:
            owner.setdefault(name, r)
            stage3.append(r)

    # 4. near duplicates
    uf = _UnionFind(len(stage3))
    links: dict[int, tuple[int, int, float]] = {}
    for i, j, dist, sim in near_duplicate_pairs(stage3, cfg):
        if _family(stage3[i]) == _family(stage3[j]):
            continue
        uf.union(i, j)
        links.setdefault(j, (i, dist, sim))
    kept = []
    for idx, r in enumerate(stage3):
        root = uf.find(idx)
        if root != idx and _family(stage3[root]) != _family(r):
            first = stage3[root]
            _, dist, sim = links.get(idx, (root, -1, 0.0))
            rejects.append(_reject(r, "near_duplicate",
                                   f"near duplicate of {first.source}/{first.metadata.get('original_filename')}",
                                   duplicate_of=first.content_hash, phash_distance=dist, text_similarity=round(sim, 4)))
            stats["near_duplicate"] += 1
        else:
            kept.append(r)

    # groups for splits: same normalised label, or same augmentation family
    guf = _UnionFind(len(kept))
    first_by_key: dict[str, int] = {}
    for idx, r in enumerate(kept):
        for key in ("L" + r.ground_truth_html, "F" + _family(r)):
            if key in first_by_key:
                guf.union(first_by_key[key], idx)
            else:
                first_by_key[key] = idx
    groups = {r.content_hash: kept[guf.find(i)].content_hash for i, r in enumerate(kept)}
    stats["kept"] = len(kept)
    stats["groups"] = len(set(groups.values()))
    return DedupResult(kept=kept, rejects=rejects, groups=groups, stats=dict(stats))
