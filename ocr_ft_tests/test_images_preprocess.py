"""Image preprocessing (deskew, DPI, width, CLAHE) and deterministic augmentation."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from ocr_ft.images import (
    AugmentOptions,
    PreprocessOptions,
    apply_clahe,
    augment,
    augment_bytes,
    decode_image,
    deskew,
    encode_png,
    estimate_skew,
    fit_width,
    normalize_dpi,
    preprocess,
    preprocess_bytes,
    rotate,
)


def table_image(rows: int = 12, cols: int = 6, cell_w: int = 110, cell_h: int = 34, seed: int = 0) -> np.ndarray:
    """A ruled table with 'text' (digits drawn by OpenCV) in every cell, on white."""
    rng = np.random.default_rng(seed)
    pad = 20
    h, w = rows * cell_h + 2 * pad, cols * cell_w + 2 * pad
    img = np.full((h, w, 3), 255, np.uint8)
    for r in range(rows + 1):
        cv2.line(img, (pad, pad + r * cell_h), (pad + cols * cell_w, pad + r * cell_h), (0, 0, 0), 1)
    for c in range(cols + 1):
        cv2.line(img, (pad + c * cell_w, pad), (pad + c * cell_w, pad + rows * cell_h), (0, 0, 0), 1)
    for r in range(rows):
        for c in range(cols):
            text = f"{int(rng.integers(1, 10**6)):,}"
            cv2.putText(img, text, (pad + c * cell_w + 8, pad + r * cell_h + 23), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                        (30, 30, 30), 1, cv2.LINE_AA)
    return img


def borderless_text_image() -> np.ndarray:
    img = np.full((400, 700, 3), 255, np.uint8)
    for r in range(10):
        cv2.putText(img, f"Account {r:02d}    1,234,{r}00    (5,678)", (20, 40 + r * 35), cv2.FONT_HERSHEY_SIMPLEX,
                    0.7, (0, 0, 0), 2, cv2.LINE_AA)
    return img


@pytest.mark.parametrize("angle", [2.3, -2.3, 0.7, -4.1])
def test_estimate_skew_recovers_a_known_rotation(angle):
    skewed = rotate(table_image(), angle)
    assert abs(estimate_skew(skewed) - angle) < 0.5
    assert abs(estimate_skew(skewed) - angle) < 0.15  # in practice far tighter than the 0.5 degree bound


def test_estimate_skew_works_without_ruling_lines():
    skewed = rotate(borderless_text_image(), -1.8)
    assert abs(estimate_skew(skewed) + 1.8) < 0.5


def test_deskew_straightens_and_blank_image_is_left_alone():
    straight, angle = deskew(rotate(table_image(seed=3), 2.3))
    assert abs(angle - 2.3) < 0.5
    assert abs(estimate_skew(straight)) < 0.2
    blank = np.full((100, 200, 3), 255, np.uint8)
    out, angle = deskew(blank)
    assert angle == 0.0 and out is blank


def test_rotate_expands_the_canvas_and_fills_white():
    img = table_image()
    out = rotate(img, 3.0)
    assert out.shape[0] > img.shape[0] and out.shape[1] > img.shape[1]
    assert tuple(out[0, 0]) == (255, 255, 255) and tuple(out[-1, -1]) == (255, 255, 255)
    assert rotate(img, 0.0).shape == img.shape


def test_dpi_normalisation_and_width_fitting():
    img = table_image()
    h, w = img.shape[:2]
    half = normalize_dpi(img, source_dpi=300, target_dpi=150)
    assert half.shape[:2] == (round(h / 2), round(w / 2))
    assert normalize_dpi(img, 144, 144) is img
    with pytest.raises(ValueError):
        normalize_dpi(img, 0, 150)
    assert fit_width(img, max_width=400).shape[1] == 400
    assert fit_width(img, min_width=1000).shape[1] == 1000
    assert fit_width(img, min_width=100, max_width=5000) is img
    with pytest.raises(ValueError):
        fit_width(img, min_width=900, max_width=800)


def test_clahe_raises_local_contrast_of_a_faded_scan():
    faded = (table_image().astype(np.float32) * 0.25 + 150).astype(np.uint8)  # grey on light grey
    out = apply_clahe(faded, clip_limit=3.0)
    assert out.shape == faded.shape and out.dtype == np.uint8
    assert cv2.cvtColor(out, cv2.COLOR_BGR2GRAY).std() > 1.3 * cv2.cvtColor(faded, cv2.COLOR_BGR2GRAY).std()
    gray = cv2.cvtColor(faded, cv2.COLOR_BGR2GRAY)
    assert apply_clahe(gray).ndim == 2


def test_preprocess_defaults_to_identity_and_reports_steps():
    img = table_image()
    same, report = preprocess(img)
    assert np.array_equal(same, img) and report["input_size"] == report["output_size"]
    opts = PreprocessOptions(deskew=True, source_dpi=200, target_dpi=100, max_width=300, clahe=True, grayscale=True)
    out, report = preprocess(rotate(img, 1.5), opts)
    assert abs(report["skew_deg"] - 1.5) < 0.5 and report["deskewed"]
    assert out.shape[1] == 300 and out.ndim == 3
    assert np.array_equal(out[:, :, 0], out[:, :, 1])  # grey in 3 channels
    assert report["clahe"] and report["dpi"] == [200, 100]


def test_bytes_round_trip_and_alpha_is_composited_on_white():
    img = table_image(rows=3, cols=2)
    png, report = preprocess_bytes(encode_png(img))
    assert np.array_equal(decode_image(png), img)
    rgba = np.zeros((10, 10, 4), np.uint8)  # fully transparent black
    ok, buf = cv2.imencode(".png", rgba)
    assert ok and decode_image(buf.tobytes()).min() == 255
    with pytest.raises(ValueError):
        decode_image(b"not an image")


def test_augment_is_deterministic_per_seed_and_mild():
    img = table_image()
    a, ops_a = augment(img, seed=5)
    b, ops_b = augment(img, seed=5)
    assert ops_a == ops_b and np.array_equal(a, b)
    assert augment_bytes(encode_png(img), 5)[0] == augment_bytes(encode_png(img), 5)[0]
    others = [augment(img, seed=s) for s in range(6, 12)]
    assert any(o.shape != a.shape or not np.array_equal(o, a) for o, _ in others)
    for s in range(20):
        out, ops = augment(img, seed=s)
        if "rotate_deg" in ops:
            assert abs(ops["rotate_deg"]) <= AugmentOptions().max_rotation_deg
        # the table is still there: similar size, still mostly white with dark ink
        assert abs(out.shape[0] - img.shape[0]) < 40 and abs(out.shape[1] - img.shape[1]) < 40
        assert 150 < out.mean() < 255


def test_augment_with_everything_on_applies_every_operation():
    always = AugmentOptions(rotate_prob=1, noise_prob=1, blur_prob=1, jpeg_prob=1)
    _, ops = augment(table_image(), seed=1, options=always)
    assert set(ops) == {"rotate_deg", "noise_sigma", "blur_sigma", "jpeg_quality"}
    never = AugmentOptions(rotate_prob=0, noise_prob=0, blur_prob=0, jpeg_prob=0)
    img = table_image()
    out, ops = augment(img, seed=1, options=never)
    assert ops == {} and np.array_equal(out, img)
