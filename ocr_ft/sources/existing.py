"""The ``existing`` source: a folder of pre-labelled image + HTML pairs.

Two layouts are accepted, as in the seed: flat (``a.png`` beside ``a.html``) or split (``images/a.png`` and
``labels/a.html``). Pairs are matched on the file stem. Images go into the blob store as they are (after
optional preprocessing); labels are read as bytes so that a label that is not UTF-8 reaches validation
with its reason instead of crashing the load.

Every problem found here becomes a :class:`Reject` with stage ``load``: an image without a label, a label
without an image, a file that cannot be read. Nothing is dropped silently.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from ..dataset.records import RawPair, Reject, SourceResult
from ..storage import BlobStore

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
LABEL_SUFFIXES = (".html", ".htm")


def _index(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in suffixes:
            out.setdefault(p.stem, p)
    return out


def find_pairs(root: str | Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """Image and label files of ``root`` keyed by stem, for either layout."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"existing source folder {root} does not exist or is not a directory")
    if (root / "images").is_dir() or (root / "labels").is_dir():
        images = _index(root / "images", IMAGE_SUFFIXES) if (root / "images").is_dir() else {}
        labels = _index(root / "labels", LABEL_SUFFIXES) if (root / "labels").is_dir() else {}
    else:
        images = _index(root, IMAGE_SUFFIXES)
        labels = _index(root, LABEL_SUFFIXES)
    return images, labels


def load_existing(
    root: str | Path,
    store: BlobStore,
    *,
    source: str = "existing",
    preprocess: Callable[[bytes], bytes] | None = None,
    augment: Callable[[bytes, int], tuple[bytes, Any]] | None = None,
    augment_copies: int = 0,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> SourceResult:
    """Load every pair under ``root`` into ``store``; return pairs and load-stage rejects.

    ``preprocess`` (PNG bytes -> PNG bytes) is applied to each image before it is stored, e.g. deskew or
    CLAHE from :mod:`ocr_ft.images`. With ``augment`` ((PNG bytes, seed) -> (PNG bytes, operations)) and
    ``augment_copies`` > 0, each pair also yields that many degraded copies (``<stem>__aug<k>.png``, same
    label). An original and its copies share ``metadata.family``, which keeps them out of near-duplicate
    removal and together in one split.
    """
    images, labels = find_pairs(root)
    result = SourceResult(stats={"images_found": len(images), "labels_found": len(labels)})
    stems = sorted(set(images) | set(labels))
    for i, stem in enumerate(stems, 1):
        img, lab = images.get(stem), labels.get(stem)
        name = img.name if img else f"{stem}.png"
        if img is None:
            result.rejects.append(
                Reject(source, name, "load", "image_missing", f"label {lab} has no image named {stem}.png/.jpg")
            )
        elif lab is None:
            result.rejects.append(Reject(source, name, "load", "label_missing", f"image {img} has no {stem}.html"))
        else:
            try:
                data = img.read_bytes()
                label_bytes = lab.read_bytes()
            except OSError as exc:
                result.rejects.append(Reject(source, name, "load", "unreadable", f"{exc.filename}: {exc.strerror}"))
            else:
                if preprocess is not None and data:
                    try:
                        data = preprocess(data)
                    except Exception as exc:  # a corrupt image is reported by validation, keep the raw bytes
                        result.stats.setdefault("preprocess_failed", []).append(f"{img.name}: {exc}")
                suffix = ".png" if img.suffix.lower() == ".png" or preprocess else img.suffix.lower()
                _, rel = store.put_bytes(data, suffix)
                try:
                    html: str | None = label_bytes.decode("utf-8")
                    meta = {"label_path": str(lab)}
                except UnicodeDecodeError as exc:
                    html = None
                    meta = {"label_path": str(lab), "label_error": f"not UTF-8 ({exc.reason} at byte {exc.start})"}
                if augment is not None and augment_copies > 0:
                    meta["family"] = f"{source}:{stem}"
                result.pairs.append(RawPair(source, img.name, rel, html, meta))
                for k in range(1, augment_copies + 1 if augment is not None else 1):
                    try:
                        aug, ops = augment(data, seed * 1_000_003 + i * 101 + k)
                    except Exception as exc:
                        result.rejects.append(Reject(source, f"{stem}__aug{k}.png", "load", "augment_failed", f"{img.name}: {exc}"))
                        continue
                    _, aug_rel = store.put_bytes(aug, ".png")
                    result.pairs.append(RawPair(source, f"{stem}__aug{k}.png", aug_rel, html,
                                                {**meta, "augmented_from": img.name, "augmentation": ops}))
        if progress:
            progress(i, len(stems))
    return result
