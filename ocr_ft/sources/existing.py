"""The ``existing`` source: a folder of pre-labelled image + HTML pairs.

Two layouts are accepted, as in the seed: flat (``a.png`` beside ``a.html``) or split (``images/a.png`` and
``labels/a.html``). Pairs are matched on the file stem. Images go into the blob store as they are (after
optional preprocessing); labels are read as bytes so that a label that is not UTF-8 reaches validation
with its reason instead of crashing the load.

Every problem found here becomes a :class:`Reject` with stage ``load``: an image without a label, a label
without an image, a file that cannot be read, and every file the layout does not use (``stray_file``: a
pair at the root beside ``images/``, a file in a sub-folder, an image format not supported such as
``.bmp``/``.webp``/``.tif``), each counted in ``stats["stray_files"]``. Only hidden files (``.DS_Store``,
editor swap files) are passed over. Nothing else is dropped silently.

When preprocessing or augmentation is on, an image's header is read first (no pixel decoded) and an image
over ``max_decode_pixels`` is refused (``image_size``) before decoding. A 16-bit image is stored converted
to 8 bits per channel (``metadata.converted_from_16bit``): PIL's ``convert("RGB")`` would make it white.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from ..dataset.records import RawPair, Reject, SourceResult
from ..images import MAX_DECODE_PIXELS, ImageTooLarge, check_pixels, to_8bit_png
from ..storage import BlobStore

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
LABEL_SUFFIXES = (".html", ".htm")


def _index(folder: Path, suffixes: tuple[str, ...], shadowed: list[tuple[Path, Path]]) -> dict[str, Path]:
    """Files of ``folder`` with one of ``suffixes`` by stem. Of two files with one stem (``a.png`` and
    ``a.jpg``) the one whose suffix comes first in ``suffixes`` is used; the other goes to ``shadowed`` as
    ``(file, the file kept)``."""
    out: dict[str, Path] = {}
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in suffixes]
    for p in sorted(files, key=lambda p: (p.stem, suffixes.index(p.suffix.lower()), p.name)):
        if p.stem in out:
            shadowed.append((p, out[p.stem]))
        else:
            out[p.stem] = p
    return out


def stray_files(root: str | Path) -> list[tuple[Path, str]]:
    """Files under ``root`` that :func:`find_pairs` does not use, each with the reason in words."""
    root = Path(root)
    split = (root / "images").is_dir() or (root / "labels").is_dir()
    used_dirs = {root / "images", root / "labels"} if split else {root}
    wanted = {root / "images": IMAGE_SUFFIXES, root / "labels": LABEL_SUFFIXES}
    out: list[tuple[Path, str]] = []
    for p in sorted(root.rglob("*")):
        if not p.is_file() or p.name.startswith("."):
            continue
        suffix = p.suffix.lower()
        if p.parent not in used_dirs:
            if split and p.parent == root:
                why = "lies at the root of a folder with images/ and labels/: only those are read"
            else:
                why = f"lies in the sub-folder {p.parent.relative_to(root)}: sub-folders are not read"
            out.append((p, why))
        elif split and suffix not in wanted[p.parent]:
            out.append((p, f"has the unsupported suffix {suffix or '(none)'} for {p.parent.name}/"))
        elif not split and suffix not in IMAGE_SUFFIXES + LABEL_SUFFIXES:
            out.append((p, f"has the unsupported suffix {suffix or '(none)'} (images: png/jpg, labels: html)"))
    return out

def find_pairs(root: str | Path) -> tuple[dict[str, Path], dict[str, Path], list[tuple[Path, Path]]]:
    """Image and label files of ``root`` keyed by stem, for either layout, and the files shadowed by another
    file of the same stem."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"existing source folder {root} does not exist or is not a directory")
    shadowed: list[tuple[Path, Path]] = []
    if (root / "images").is_dir() or (root / "labels").is_dir():
        images = _index(root / "images", IMAGE_SUFFIXES, shadowed) if (root / "images").is_dir() else {}
        labels = _index(root / "labels", LABEL_SUFFIXES, shadowed) if (root / "labels").is_dir() else {}
    else:
        images = _index(root, IMAGE_SUFFIXES, shadowed)
        labels = _index(root, LABEL_SUFFIXES, shadowed)
    return images, labels, shadowed


def load_existing(
    root: str | Path,
    store: BlobStore,
    *,
    source: str = "existing",
    preprocess: Callable[[bytes], tuple[bytes, dict]] | None = None,
    augment: Callable[[bytes, int], tuple[bytes, Any]] | None = None,
    augment_copies: int = 0,
    seed: int = 0,
    max_decode_pixels: int = MAX_DECODE_PIXELS,
    progress: Callable[[int, int], None] | None = None,
) -> SourceResult:
    """Load every pair under ``root`` into ``store``; return pairs and load-stage rejects.

    ``preprocess`` (image bytes -> (PNG bytes, report)) is applied to each image before it is stored, e.g.
    :func:`ocr_ft.images.preprocess_bytes` (DPI, deskew, CLAHE); its report goes to ``metadata.preprocess``.
    An image it cannot read is stored as it is (validation then refuses it as corrupt, naming it).

    With ``augment`` ((PNG bytes, seed) -> (PNG bytes, operations)) and ``augment_copies`` > 0, each pair
    also yields that many degraded copies (``<stem>__aug<k>.png``, same label). An original and its copies share ``metadata.family``, which keeps them out of near-duplicate
    removal and together in one split.
    """
    images, labels, shadowed = find_pairs(root)
    result = SourceResult(stats={"images_found": len(images), "labels_found": len(labels)})
    strays = stray_files(root)
    result.stats["stray_files"] = len(strays)
    for path, why in strays:
        result.rejects.append(Reject(source, path.name, "load", "stray_file", f"{path} {why}"))
    for extra, kept in shadowed:
        result.rejects.append(Reject(source, extra.name, "load", "duplicate_stem",
                                     f"{extra} has the same name as {kept.name}, which is used instead"))
    stems = sorted(set(images) | set(labels))
    for i, stem in enumerate(stems, 1):
        if progress and i > 1:
            progress(i - 1, len(stems))
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
                prep_report = None
                extra_meta: dict = {}
                if data and (preprocess is not None or (augment is not None and augment_copies > 0)):
                    try:  # header only: refuse before any decode
                        check_pixels(data, max_decode_pixels)
                    except ImageTooLarge as exc:
                        result.rejects.append(Reject(source, name, "load", "image_size", f"{img}: {exc}"))
                        continue
                    except ValueError:
                        pass  # not an image PIL reads: validation reports it as corrupt
                if data:
                    try:
                        eight = to_8bit_png(data, max_decode_pixels)
                    except ImageTooLarge as exc:
                        result.rejects.append(Reject(source, name, "load", "image_size", f"{img}: {exc}"))
                        continue
                    except Exception:
                        eight = None  # unreadable: validation names it
                    if eight is not None:
                        data = eight
                        extra_meta["converted_from_16bit"] = True
                if preprocess is not None and data:
                    try:
                        data, prep_report = preprocess(data)
                    except Exception as exc:  # a corrupt image is reported by validation, keep the raw bytes
                        result.stats["preprocess_failed"] = result.stats.get("preprocess_failed", 0) + 1
                        prep_report = {"error": f"{type(exc).__name__}: {exc}"}
                converted = (prep_report is not None and "error" not in prep_report) or bool(extra_meta)
                suffix = ".png" if converted else img.suffix.lower()
                _, rel = store.put_bytes(data, suffix)
                try:
                    html: str | None = label_bytes.decode("utf-8")
                    meta = {"label_path": str(lab), **extra_meta}
                except UnicodeDecodeError as exc:
                    html = None
                    meta = {"label_path": str(lab), **extra_meta, "label_error": f"not UTF-8 ({exc.reason} at byte {exc.start})"}
                if prep_report is not None:
                    meta["preprocess"] = prep_report
                if augment is not None and augment_copies > 0:
                    meta["family"] = f"{source}:{stem}"
                result.pairs.append(RawPair(source, img.name, rel, html, meta))
                for k in range(1, augment_copies + 1 if augment is not None else 1):
                    try:
                        aug, ops = augment(data, seed * 1_000_003 + i * 101 + k)
                    except Exception as exc:
                        result.rejects.append(Reject(source, f"{stem}__aug{k}.png", "load", "augment_failed",
                                                     f"{img.name}: {exc}"))
                        continue
                    _, aug_rel = store.put_bytes(aug, ".png")
                    result.pairs.append(RawPair(source, f"{stem}__aug{k}.png", aug_rel, html,
                                                {**meta, "augmented_from": img.name, "augmentation": ops}))
    if progress and stems:
        progress(len(stems), len(stems))
    return result
