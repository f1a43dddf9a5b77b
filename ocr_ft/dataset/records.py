"""Record types shared by every stage.

* :class:`RawPair` is what a source emits: one image (already in the blob store) and its HTML label.
* :class:`Reject` is a quarantine entry: what was refused, at which stage, and why.
* :class:`Record` is a validated dataset entry, the seed's JSONL entry plus content hash and image size.

Image paths are always relative to the data directory (see :class:`ocr_ft.storage.BlobStore`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

CATEGORIES = ("plain", "merged", "nested_2level", "nested_3level")
SOURCES = ("existing", "dart", "fss", "wiki", "synthetic", "synthetic_shilu")


def _shallow(obj) -> dict[str, Any]:
    """Field dict without dataclasses.asdict's deep copy (records are written, never mutated, after this)."""
    return {f.name: getattr(obj, f.name) for f in fields(obj)}


@dataclass
class RawPair:
    source: str
    original_filename: str
    image_path: str | None
    html: str | None
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "pair", **_shallow(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RawPair":
        return cls(
            source=d["source"],
            original_filename=d["original_filename"],
            image_path=d.get("image_path"),
            html=d.get("html"),
            metadata=dict(d.get("metadata") or {}),
        )


@dataclass
class Reject:
    source: str
    original_filename: str
    stage: str  # "load" | "validate" | "dedup"
    reason: str  # short machine code, e.g. "image_missing", "no_table", "exact_duplicate"
    detail: str = ""  # human sentence naming the bad input
    image_path: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "reject", **_shallow(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Reject":
        return cls(
            source=d["source"],
            original_filename=d["original_filename"],
            stage=d["stage"],
            reason=d["reason"],
            detail=d.get("detail", ""),
            image_path=d.get("image_path"),
            extra=dict(d.get("extra") or {}),
        )


@dataclass
class Record:
    image_path: str
    ground_truth_html: str
    nesting_level: int
    source: str
    category: str
    metadata: dict[str, Any]  # original_filename, validation{...}, plus source provenance
    content_hash: str  # sha256 of normalised label + image sha256: the record's identity
    image_sha256: str
    image_width: int
    image_height: int
    image_phash: str = ""  # 64-bit perceptual hash (hex) used by near-duplicate detection

    def to_dict(self) -> dict[str, Any]:
        return _shallow(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Record":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def split_manifest(rows: list[dict[str, Any]]) -> tuple[list[RawPair], list[Reject]]:
    """Split a source manifest (pairs and rejects in one JSONL) into its two kinds."""
    pairs, rejects = [], []
    for row in rows:
        if row.get("kind") == "reject":
            rejects.append(Reject.from_dict(row))
        else:
            pairs.append(RawPair.from_dict(row))
    return pairs, rejects


@dataclass
class SourceResult:
    """What one source partition produced: pairs ready for validation, and what it refused on the way."""

    pairs: list[RawPair] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)

    def manifest_rows(self) -> list[dict[str, Any]]:
        rows = [p.to_dict() for p in sorted(self.pairs, key=lambda p: (p.original_filename, p.image_path or ""))]
        rows += [r.to_dict() for r in sorted(self.rejects, key=lambda r: (r.original_filename, r.reason))]
        return rows
