"""Image preprocessing and augmentation for table images (OpenCV).

Images are ``numpy.ndarray`` (H x W x 3 BGR ``uint8``, or H x W grayscale) or encoded bytes; the array
functions take and return arrays, :func:`preprocess_bytes` and :func:`augment_bytes` take any encoded image
OpenCV reads and return PNG bytes.

* :func:`preprocess` applies the steps switched on in :class:`PreprocessOptions`, in this order: deskew, DPI
  normalisation (resample from a known source DPI to a target DPI), width fitting (into a width range), CLAHE.
  Used on scraped and existing images before validation; rendered images need none of it.
* :func:`estimate_skew` measures a table's rotation from its ruling lines and text rows (projection profiles
  over candidate angles, coarse then fine); :func:`deskew` rotates it back.
* :func:`augment` makes a mildly degraded copy (rotation, Gaussian noise, blur, JPEG re-encode) for the
  ``existing`` source; it is deterministic for a given seed and never changes what the label describes.

Angles are in degrees, positive counter-clockwise as seen on screen (OpenCV's convention).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = [
    "MAX_DECODE_PIXELS",
    "ImageTooLarge",
    "image_header",
    "to_8bit_png",
    "PreprocessOptions",
    "AugmentOptions",
    "decode_image",
    "encode_png",
    "rotate",
    "estimate_skew",
    "deskew",
    "normalize_dpi",
    "fit_width",
    "apply_clahe",
    "preprocess",
    "preprocess_bytes",
    "augment",
    "augment_bytes",
]

WHITE = (255, 255, 255)
MAX_DECODE_PIXELS = 40_000_000  # as validation's max_image_pixels: nothing larger is ever decoded here


class ImageTooLarge(ValueError):
    """The image's header announces more pixels than allowed; nothing was decoded."""

    reason = "image_size"


def image_header(data: bytes) -> tuple[int, int, str]:
    """``(width, height, mode)`` read from the header only (PIL's lazy open: no pixel is decoded).
    Raises ``ValueError`` when the bytes are not an image PIL knows."""
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.size[0], im.size[1], im.mode
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ValueError(f"not a readable image header: {exc}") from exc
    except Image.DecompressionBombError as exc:  # only when MAX_IMAGE_PIXELS is set globally
        raise ImageTooLarge(str(exc)) from exc


def check_pixels(data: bytes, max_pixels: int = MAX_DECODE_PIXELS) -> tuple[int, int]:
    """Refuse (:class:`ImageTooLarge`) an image whose header announces over ``max_pixels``, before decoding."""
    width, height, _ = image_header(data)
    if width * height > max_pixels:
        raise ImageTooLarge(f"{width}x{height} image exceeds {max_pixels} pixels; refused before decoding")
    return width, height


def to_8bit_png(data: bytes, max_pixels: int = MAX_DECODE_PIXELS) -> bytes | None:
    """PNG bytes of a 16-bit (or 32-bit integer/float) image scaled to 8 bits per channel, or ``None`` when the
    image already has 8 bits per channel. A 16-bit image handed to PIL's ``convert("RGB")`` clips to white."""
    _, _, mode = image_header(data)
    if mode not in ("I;16", "I;16B", "I;16L", "I", "F") and not _is_16bit_png(data):
        return None
    check_pixels(data, max_pixels)
    return encode_png(decode_image(data))


def _is_16bit_png(data: bytes) -> bool:
    # IHDR bit depth (byte 24) of a PNG: 16 for 16-bit RGB(A) that PIL may report as mode "RGB"
    return data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 24 and data[24] == 16


# ----------------------------------------------------------------------------- codecs


def decode_image(data: bytes, max_pixels: int = MAX_DECODE_PIXELS) -> np.ndarray:
    """Decode PNG/JPEG/... bytes to a BGR array (alpha composited on white). Raises ``ValueError``; an image
    whose header announces over ``max_pixels`` raises :class:`ImageTooLarge` before anything is decoded."""
    try:
        check_pixels(data, max_pixels)
    except ImageTooLarge:
        raise
    except ValueError:
        pass  # a format PIL cannot read: OpenCV may (its own limit applies), or fails below
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise ValueError("image bytes could not be decoded")
    if arr.dtype == np.uint16:  # 16-bit PNG: scale 0..65535 to 0..255 (integer, no float copy)
        arr = (arr >> 8).astype(np.uint8)
    elif arr.dtype != np.uint8:
        arr = cv2.normalize(arr, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    if arr.ndim == 2:
        return cv2.cvtColor(arr, cv2.COLOR_GRAY2BGR)
    if arr.shape[2] == 4:
        alpha = arr[:, :, 3:4].astype(np.float32) / 255.0
        rgb = arr[:, :, :3].astype(np.float32)
        return np.clip(rgb * alpha + 255.0 * (1 - alpha), 0, 255).astype(np.uint8)
    return arr


def encode_png(img: np.ndarray, compression: int = 6) -> bytes:
    ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, compression])
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()


def _gray(img: np.ndarray) -> np.ndarray:
    return img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)


def _border_value(img: np.ndarray):
    return 255 if img.ndim == 2 else WHITE


# ----------------------------------------------------------------------------- geometry


def rotate(img: np.ndarray, angle: float, expand: bool = True) -> np.ndarray:
    """Rotate by ``angle`` degrees counter-clockwise about the centre, filling with white.

    With ``expand`` the canvas grows so no corner is cut off.
    """
    h, w = img.shape[:2]
    centre = (w / 2.0, h / 2.0)
    m = cv2.getRotationMatrix2D(centre, angle, 1.0)
    out_w, out_h = w, h
    if expand:
        cos, sin = abs(m[0, 0]), abs(m[0, 1])
        out_w = int(math.ceil(h * sin + w * cos))
        out_h = int(math.ceil(h * cos + w * sin))
        m[0, 2] += out_w / 2.0 - centre[0]
        m[1, 2] += out_h / 2.0 - centre[1]
    return cv2.warpAffine(
        img, m, (out_w, out_h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_CONSTANT,
        borderValue=_border_value(img),
    )


def _ink_points(img: np.ndarray, max_side: int = 1600, max_points: int = 400_000):
    """Coordinates (x, y) of dark pixels (Otsu), on a copy scaled so its longer side is at most ``max_side``."""
    gray = _gray(img)
    scale = min(1.0, max_side / max(gray.shape))
    if scale < 1.0:
        gray = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    _, ink = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY_INV | cv2.THRESH_OTSU)
    ys, xs = np.nonzero(ink)
    if xs.size > max_points:  # deterministic thinning
        step = int(math.ceil(xs.size / max_points))
        xs, ys = xs[::step], ys[::step]
    return xs.astype(np.float64), ys.astype(np.float64)


def _profile_score(xs: np.ndarray, ys: np.ndarray, angle: float) -> float:
    """Sharpness of the row profile after undoing a rotation of ``angle``: sum of squared bin counts.

    A point of content rotated by ``angle`` (counter-clockwise) sits, un-rotated, at row
    ``x*sin(a) + y*cos(a)``; horizontal rules and text rows are sharpest at the true angle.
    """
    a = math.radians(angle)
    rows = xs * math.sin(a) + ys * math.cos(a)
    rows -= rows.min()
    hist = np.bincount(rows.astype(np.int64))
    return float(np.dot(hist, hist))


def estimate_skew(img: np.ndarray, max_angle: float = 10.0, precision: float = 0.05) -> float:
    """Estimated rotation of a table image in degrees (positive: content turned counter-clockwise).

    Searches ``[-max_angle, max_angle]`` in 0.5 degree steps, then refines around the best angle down to
    ``precision``, maximising the sharpness of the horizontal projection of the dark pixels (ruling lines and
    text rows). Returns 0.0 for an image without ink. ``deskew(img)`` is ``rotate(img, -estimate_skew(img))``.
    """
    xs, ys = _ink_points(img)
    if xs.size < 50:
        return 0.0
    step = 0.5
    candidates = np.arange(-max_angle, max_angle + 1e-9, step)
    best = max(candidates, key=lambda a: _profile_score(xs, ys, a))
    while step > precision:
        lo, hi, step = best - step, best + step, step / 5.0
        candidates = np.arange(lo, hi + 1e-9, step)
        best = max(candidates, key=lambda a: _profile_score(xs, ys, a))
    return float(round(best, 3))


def deskew(img: np.ndarray, max_angle: float = 10.0, min_angle: float = 0.1) -> tuple[np.ndarray, float]:
    """Rotate the image so its rows are horizontal. Returns ``(image, estimated angle)``; an estimate below
    ``min_angle`` leaves the image untouched."""
    angle = estimate_skew(img, max_angle=max_angle)
    if abs(angle) < min_angle:
        return img, angle
    return rotate(img, -angle, expand=True), angle


# ----------------------------------------------------------------------------- resolution and contrast


def normalize_dpi(img: np.ndarray, source_dpi: float, target_dpi: float) -> np.ndarray:
    """Resample an image scanned/rendered at ``source_dpi`` to ``target_dpi`` (area when shrinking, cubic
    when enlarging)."""
    if source_dpi <= 0 or target_dpi <= 0:
        raise ValueError(f"DPI must be positive (source {source_dpi}, target {target_dpi})")
    return _scale(img, target_dpi / source_dpi)


def fit_width(img: np.ndarray, min_width: int | None = None, max_width: int | None = None) -> np.ndarray:
    """Scale (keeping the aspect ratio) so the width lies in ``[min_width, max_width]``; unchanged if it does."""
    if min_width and max_width and min_width > max_width:
        raise ValueError(f"min_width {min_width} > max_width {max_width}")
    w = img.shape[1]
    if max_width and w > max_width:
        return _scale(img, max_width / w, width=max_width)
    if min_width and w < min_width:
        return _scale(img, min_width / w, width=min_width)
    return img


def _scale(img: np.ndarray, factor: float, width: int | None = None) -> np.ndarray:
    if abs(factor - 1.0) < 1e-6:
        return img
    h, w = img.shape[:2]
    new_w = width if width is not None else max(1, round(w * factor))
    new_h = max(1, round(h * factor))
    interp = cv2.INTER_AREA if factor < 1 else cv2.INTER_CUBIC
    return cv2.resize(img, (new_w, new_h), interpolation=interp)


def apply_clahe(img: np.ndarray, clip_limit: float = 2.0, tile_grid: int = 8) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation on lightness (L of Lab for colour images)."""
    clahe = cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=(tile_grid, tile_grid))
    if img.ndim == 2:
        return clahe.apply(img)
    lab = cv2.cvtColor(img, cv2.COLOR_BGR2LAB)
    lab[:, :, 0] = clahe.apply(lab[:, :, 0])
    return cv2.cvtColor(lab, cv2.COLOR_LAB2BGR)


# ----------------------------------------------------------------------------- preprocessing pipeline


@dataclass(frozen=True)
class PreprocessOptions:
    """Which preprocessing steps run (all off by default, so ``preprocess`` is then the identity).

    * ``deskew``: rotate back a skew between ``deskew_min_angle`` and ``deskew_max_angle`` degrees.
    * ``source_dpi`` + ``target_dpi``: resample between the two (both needed).
    * ``min_width`` / ``max_width``: then scale into this width range (pixels).
    * ``clahe``: contrast equalisation with ``clahe_clip_limit`` and ``clahe_tile_grid``.
    * ``grayscale``: return a 3-channel gray image (models expect 3 channels).
    """

    deskew: bool = False
    deskew_max_angle: float = 10.0
    deskew_min_angle: float = 0.1
    source_dpi: float | None = None
    target_dpi: float | None = None
    min_width: int | None = None
    max_width: int | None = None
    clahe: bool = False
    clahe_clip_limit: float = 2.0
    clahe_tile_grid: int = 8
    grayscale: bool = False


def preprocess(img: np.ndarray, options: PreprocessOptions = PreprocessOptions()) -> tuple[np.ndarray, dict]:
    """Apply ``options`` to ``img``. Returns ``(image, report)``; the report records what was done
    (``skew_deg``, ``scale``, ``clahe``, input and output sizes) for the pair's metadata."""
    report: dict = {"input_size": [int(img.shape[1]), int(img.shape[0])]}
    out = img
    if options.deskew:
        out, angle = deskew(out, max_angle=options.deskew_max_angle, min_angle=options.deskew_min_angle)
        report["skew_deg"] = angle
        report["deskewed"] = abs(angle) >= options.deskew_min_angle
    width_before_resample = out.shape[1]
    if options.source_dpi and options.target_dpi:
        out = normalize_dpi(out, options.source_dpi, options.target_dpi)
        report["dpi"] = [options.source_dpi, options.target_dpi]
    if options.min_width or options.max_width:
        out = fit_width(out, options.min_width, options.max_width)
    if options.clahe:
        out = apply_clahe(out, options.clahe_clip_limit, options.clahe_tile_grid)
        report["clahe"] = True
    if options.grayscale:
        out = cv2.cvtColor(_gray(out), cv2.COLOR_GRAY2BGR)
        report["grayscale"] = True
    report["output_size"] = [int(out.shape[1]), int(out.shape[0])]
    report["scale"] = round(out.shape[1] / width_before_resample, 4)  # of the DPI/width resampling
    return out, report


def preprocess_bytes(data: bytes, options: PreprocessOptions = PreprocessOptions()) -> tuple[bytes, dict]:
    """:func:`preprocess` on encoded bytes; returns PNG bytes and the report."""
    out, report = preprocess(decode_image(data), options)
    return encode_png(out), report


# ----------------------------------------------------------------------------- augmentation


@dataclass(frozen=True)
class AugmentOptions:
    """Mild degradations for augmenting pre-labelled images; each applies with its probability.

    The result still shows exactly the table the label describes: rotations are small and expand the
    canvas, noise/blur/JPEG keep text legible at these strengths.
    """

    rotate_prob: float = 0.7
    max_rotation_deg: float = 1.5
    noise_prob: float = 0.5
    noise_sigma: tuple[float, float] = (2.0, 8.0)
    blur_prob: float = 0.3
    blur_sigma: tuple[float, float] = (0.3, 0.9)
    jpeg_prob: float = 0.6
    jpeg_quality: tuple[int, int] = (55, 92)


def augment(img: np.ndarray, seed: int, options: AugmentOptions = AugmentOptions()) -> tuple[np.ndarray, dict]:
    """A degraded copy of ``img``, the same for the same ``seed``. Returns ``(image, ops)``, ``ops`` listing
    the operations applied with their parameters (for metadata). When no operation was drawn, the JPEG
    re-encode is applied (unless ``jpeg_prob`` is 0), so a copy always differs from its original."""
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    out = img
    ops: dict = {}
    if rng.random() < options.rotate_prob:
        angle = round(rng.uniform(-options.max_rotation_deg, options.max_rotation_deg), 3)
        out = rotate(out, angle, expand=True)
        ops["rotate_deg"] = angle
    if rng.random() < options.blur_prob:
        sigma = round(rng.uniform(*options.blur_sigma), 3)
        out = cv2.GaussianBlur(out, (0, 0), sigmaX=sigma)
        ops["blur_sigma"] = sigma
    if rng.random() < options.noise_prob:
        sigma = round(rng.uniform(*options.noise_sigma), 3)
        out = _add_noise(out, sigma, nrng)
        ops["noise_sigma"] = sigma
    # a copy with no degradation at all would be a duplicate: then the JPEG re-encode applies (if enabled)
    if rng.random() < options.jpeg_prob or (not ops and options.jpeg_prob > 0):
        quality = rng.randint(*options.jpeg_quality)
        ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise ValueError("JPEG encoding failed")
        out = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
        ops["jpeg_quality"] = quality
    return out, ops


def _add_noise(img: np.ndarray, sigma: float, nrng: np.random.Generator, block_rows: int = 256) -> np.ndarray:
    """Gaussian noise added in blocks of rows, in float32: memory stays a few MB over the image itself
    (no float64 copy of the whole image)."""
    out = np.empty_like(img)
    for r0 in range(0, img.shape[0], block_rows):
        block = img[r0 : r0 + block_rows].astype(np.float32)
        block += nrng.standard_normal(block.shape, dtype=np.float32) * np.float32(sigma)
        np.clip(block, 0, 255, out=block)
        out[r0 : r0 + block_rows] = block
    return out


def augment_bytes(data: bytes, seed: int, options: AugmentOptions = AugmentOptions()) -> tuple[bytes, dict]:
    """:func:`augment` on encoded bytes; returns PNG bytes and the operations applied."""
    out, ops = augment(decode_image(data), seed, options)
    return encode_png(out), ops
