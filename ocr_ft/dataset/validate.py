"""Per-pair validation: turns a source's :class:`RawPair` list into :class:`Record`s and :class:`Reject`s.

Checks, in order, each failure a reject with its reason code:

==================  ==========================================================================
``label_missing``   the pair has no label text
``label_not_utf8``  the label file is not UTF-8
``image_missing``   the image path is empty or the file is gone
``image_empty``     the image file has zero bytes
``image_corrupt``   the image does not decode
``image_16bit``     the image has 16-bit (or 32-bit) gray pixels, which would become white in training
``image_size``      the image is smaller than ``min_side`` or larger than ``max_image_pixels``
``no_table``        the label holds no ``<table>``
``grid_invalid``    the label's grid is inconsistent even after repair (span overlaps…)
``label_truncated`` the HTML parser would silently drop part of the label (element depth over 255)
``table_too_large`` a table's grid would cover more than ``max_grid_slots`` slots (refused before building)
``over_budget``     estimated image + label tokens exceed ``max_seq_len`` (the label alone is checked before
                    it is parsed)
``validate_error``  any other exception while validating the pair: its type and message, naming the pair
==================  ==========================================================================

Labels are repaired (see :func:`ocr_ft.tables.repair_html`) and stored in the normalised label form; the
repairs made are kept in ``metadata.repairs``.
"""

from __future__ import annotations

import io
import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from typing import Callable, Iterable

import imagehash
from PIL import Image

from ..storage import sha256_bytes, sha256_text
from ..tables import MAX_GRID_SLOTS, TableParseError, TableTooLarge, check_table_size, parse_tables, repair_html, validate_tables
from .records import RawPair, Record, Reject

Image.MAX_IMAGE_PIXELS = None  # size is checked explicitly below, with a clear reason


@dataclass(frozen=True)
class ValidationLimits:
    """Limits a pair must fit. ``max_seq_len`` and ``max_pixels`` default to the seed recipe's training values
    (``ocr_ft/train/default.yaml``); training re-checks every sample exactly with the real tokenizer."""

    min_side: int = 16
    max_image_pixels: int = 40_000_000
    max_seq_len: int = 4096
    max_pixels: int = 1_605_632  # pixel cap the model sees (train and inference): image tokens follow from it
    patch_factor: int = 28  # patch 14 x spatial merge 2: one image token per 28x28 pixels
    prompt_tokens: int = 16
    max_grid_slots: int = MAX_GRID_SLOTS


def estimate_image_tokens(width: int, height: int, max_pixels: int, factor: int = 28) -> int:
    """Image tokens of a ``width`` x ``height`` image after resizing under the pixel cap (smart resize)."""
    h = max(factor, round(height / factor) * factor)
    w = max(factor, round(width / factor) * factor)
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    return (h // factor) * (w // factor)


def estimate_label_tokens(html: str) -> int:
    """Upper-side estimate of label tokens: one per Hangul/CJK character, one per 3 other characters."""
    wide = sum(1 for ch in html if ord(ch) >= 0x1100)
    return wide + math.ceil((len(html) - wide) / 3)


def category_of(nesting_level: int, has_rowspan: bool, has_colspan: bool) -> str:
    if nesting_level >= 3:
        return "nested_3level"
    if nesting_level == 2:
        return "nested_2level"
    if has_rowspan or has_colspan:
        return "merged"
    return "plain"


def image_phash(img: Image.Image) -> str:
    return str(imagehash.phash(img.convert("L")))


def validate_pair(pair: RawPair, data_dir: str, limits: ValidationLimits = ValidationLimits()) -> Record | Reject:
    """Validate one pair; never raises: any unexpected exception becomes a ``validate_error`` reject."""
    try:
        return _validate_pair(pair, data_dir, limits)
    except Exception as exc:  # one bad item never stops the others
        return Reject(pair.source, pair.original_filename, "validate", "validate_error",
                      f"{pair.original_filename}: {type(exc).__name__}: {str(exc)[:300]}", pair.image_path)


def _validate_pair(pair: RawPair, data_dir: str, limits: ValidationLimits) -> Record | Reject:
    def reject(reason: str, detail: str) -> Reject:
        return Reject(pair.source, pair.original_filename, "validate", reason, detail, pair.image_path)

    if pair.html is None:
        if pair.metadata.get("label_error"):
            return reject("label_not_utf8", f"label {pair.metadata.get('label_path', '')}: {pair.metadata['label_error']}")
        return reject("label_missing", "pair has no label")
    if not pair.image_path:
        return reject("image_missing", "pair has no image")
    path = pair.image_path if os.path.isabs(pair.image_path) else os.path.join(data_dir, pair.image_path)
    where = f"image of {pair.original_filename} ({path})"
    # bound the work before doing it: a label too long for the budget on its own is refused unparsed
    label_tokens = estimate_label_tokens(pair.html) if isinstance(pair.html, str) else len(pair.html) // 3
    if label_tokens + limits.prompt_tokens > limits.max_seq_len:
        return reject("over_budget", f"label of {pair.original_filename} alone is about {label_tokens} tokens "
                                     f"> max_seq_len {limits.max_seq_len} (refused before parsing)")
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        return reject("image_missing", f"{where}: {exc.strerror}")
    if not data:
        return reject("image_empty", f"{where} has zero bytes")
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
            if width * height > limits.max_image_pixels:
                return reject("image_size", f"{width}x{height} exceeds {limits.max_image_pixels} pixels")
            mode = img.mode
            if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                return reject("image_16bit", f"{where} has {mode} pixels, which training's RGB conversion turns "
                                             "white; store it with 8 bits per channel (the existing source does)")
            img.load()
            phash = image_phash(img)
    except Exception as exc:  # PIL raises many types for corrupt data
        return reject("image_corrupt", f"{where} does not decode: {exc}")
    if min(width, height) < limits.min_side:
        return reject("image_size", f"{width}x{height} is below the {limits.min_side}px minimum side")
    try:
        fixed = repair_html(pair.html)
        tables = parse_tables(fixed.html) if fixed.html else []
        for t in tables:
            check_table_size(t, limits.max_grid_slots)
    except TableParseError as exc:
        return reject(exc.reason, f"label of {pair.original_filename}: {exc}")
    except TableTooLarge as exc:
        return reject(exc.reason, f"label of {pair.original_filename}: {exc}")
    if not tables:
        return reject("no_table", "label holds no <table>")
    if fixed.problems:
        return reject("grid_invalid", f"label of {pair.original_filename}: " + "; ".join(fixed.problems[:5]))
    report = validate_tables(tables)
    if not report.grid_consistent:
        return reject("grid_invalid", "; ".join(report.problems[:5]))
    tokens = estimate_image_tokens(width, height, limits.max_pixels, limits.patch_factor)
    tokens += estimate_label_tokens(fixed.html) + limits.prompt_tokens
    if tokens > limits.max_seq_len:
        return reject("over_budget", f"about {tokens} tokens (image + label) > max_seq_len {limits.max_seq_len}")
    image_sha = sha256_bytes(data)
    metadata = dict(pair.metadata)
    metadata.pop("label_path", None)
    metadata["original_filename"] = pair.original_filename
    metadata["validation"] = report.seed_fields()
    metadata["estimated_tokens"] = tokens
    if fixed.repairs:
        metadata["repairs"] = fixed.repairs
    return Record(
        image_path=pair.image_path,
        ground_truth_html=fixed.html,
        nesting_level=report.nesting_level,
        source=pair.source,
        category=category_of(report.nesting_level, report.has_rowspan, report.has_colspan),
        metadata=metadata,
        content_hash=sha256_text(fixed.html + "\0" + image_sha),
        image_sha256=image_sha,
        image_width=width,
        image_height=height,
        image_phash=phash,
    )


def _validate_chunk(args) -> list[dict]:
    pairs, data_dir, limits = args
    out = []
    for p in pairs:
        r = validate_pair(RawPair.from_dict(p), data_dir, ValidationLimits(**limits))
        out.append(r.to_dict() if isinstance(r, Reject) else {"kind": "record", **r.to_dict()})
    return out


def validate_all(
    pairs: Iterable[RawPair],
    data_dir: str,
    limits: ValidationLimits = ValidationLimits(),
    *,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    chunk_size: int = 256,
) -> list[Record | Reject]:
    """Validate many pairs, in a process pool when there are enough of them; one result per pair, in order."""
    pairs = list(pairs)
    workers = workers if workers is not None else min(os.cpu_count() or 1, 8)
    chunks = [pairs[i : i + chunk_size] for i in range(0, len(pairs), chunk_size)]
    payload = [([p.to_dict() for p in c], data_dir, asdict(limits)) for c in chunks]
    results: list[Record | Reject] = []

    def collect(rows):
        for row in rows:
            if row.get("kind") == "record":
                row.pop("kind")
                results.append(Record.from_dict(row))
            else:
                results.append(Reject.from_dict(row))
        if progress:
            progress(len(results), len(pairs))

    if workers > 1 and len(pairs) > chunk_size:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for rows in pool.map(_validate_chunk, payload):
                collect(rows)
    else:
        for item in payload:
            collect(_validate_chunk(item))
    return results


def validate_pairs(pairs: Iterable[RawPair], data_dir: str, limits: ValidationLimits = ValidationLimits(),
                   **kwargs) -> tuple[list[Record], list[Reject]]:
    """Like :func:`validate_all`, with records and rejects returned apart."""
    results = validate_all(pairs, data_dir, limits, **kwargs)
    return [r for r in results if isinstance(r, Record)], [r for r in results if isinstance(r, Reject)]
