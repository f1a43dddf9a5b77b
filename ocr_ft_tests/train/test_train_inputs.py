"""Model inputs: image-token arithmetic vs the real processor, labels, padding, train/inference prompt parity."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from ocr_ft.train.inputs import (
    IGNORE_INDEX,
    ImageSizeError,
    build_generation_batch,
    build_prompt_inputs,
    build_training_example,
    collate,
    count_tokens,
    num_image_tokens,
    to_rgb,
)

LABEL = '<table><tr><td rowspan="2">매출액</td><td>1,234</td></tr><tr><td>5,678</td></tr></table>'


@pytest.fixture(scope="module")
def bundle(tiny_config):
    from ocr_ft.train.modeling import load_processor

    return load_processor(tiny_config.base_model, tiny_config)


@pytest.fixture(scope="module")
def big_bundle(tiny_config):
    """Same processor with the seed's pixel cap (2048 image tokens)."""
    from ocr_ft.train.config import load_config
    from ocr_ft.train.modeling import load_processor

    return load_processor(tiny_config.base_model, load_config(base_model=tiny_config.base_model))


SIZES = [(224, 84), (20, 10), (27, 400), (1000, 30), (1654, 2339), (3000, 3000), (333, 777), (5000, 60), (64, 64)]


@pytest.mark.parametrize("size", SIZES)
def test_fast_image_token_count_equals_processor(bundle, big_bundle, size):
    for b in (bundle, big_bundle):
        out = b.image_processor(images=[Image.new("RGB", size, "white")], size=b.processor_size, return_tensors="pt")
        grid = out["image_grid_thw"][0]
        assert num_image_tokens(b, *size) == int(grid.prod()) // b.merge_size**2
        assert out["pixel_values"].shape[0] == int(grid.prod())
        if max(size) / min(size) < 20:  # thinner images keep a 28-px side, which can exceed the area cap
            assert num_image_tokens(b, *size) <= b.max_pixels // 784


def test_pixel_cap_is_the_configured_area(big_bundle):
    # An A4 page at 200 dpi would be ~5,000 tokens uncapped; the cap holds it to max_pixels / 784.
    assert 1900 < num_image_tokens(big_bundle, 1654, 2339) <= 2048
    # below the cap the image keeps its size, rounded to 28-px multiples: 812 x 392 -> 29 x 14 tokens
    assert num_image_tokens(big_bundle, 800, 400) == 29 * 14


def test_extreme_aspect_ratio_is_a_clear_error(bundle):
    with pytest.raises(ImageSizeError, match="12000x20"):
        num_image_tokens(bundle, 12000, 20)


def test_training_example_labels_only_the_answer(bundle):
    ex = build_training_example(bundle, Image.new("RGB", (224, 84), "white"), LABEL)
    ids, labels, mm = ex["input_ids"], ex["labels"], ex["mm_token_type_ids"]
    assert len(ids) == len(labels) == len(mm)
    n_img = int(ex["image_grid_thw"][0].prod()) // bundle.merge_size**2
    assert sum(mm) == n_img == ids.count(bundle.image_token_id)
    assert all(ids[i] == bundle.image_token_id for i, m in enumerate(mm) if m == 1)
    answer = [t for t in labels if t != IGNORE_INDEX]
    start = labels.index(answer[0])
    assert all(t == IGNORE_INDEX for t in labels[:start]) and labels[start:] == ids[start:]
    assert answer[-1] == bundle.eos_token_id
    assert bundle.tokenizer.decode(answer[:-1]) == LABEL
    # the prompt part is exactly what generation gets
    prompt = build_prompt_inputs(bundle, Image.new("RGB", (224, 84), "white"))
    assert prompt["input_ids"][0].tolist() == ids[:start]
    assert prompt["mm_token_type_ids"][0].tolist() == mm[:start]
    assert torch.equal(prompt["pixel_values"], ex["pixel_values"])
    # and count_tokens predicts the length without touching pixels
    c = count_tokens(bundle, 224, 84, LABEL)
    assert (c.total, c.image, c.label) == (len(ids), n_img, len(answer))


def test_collate_pads_right_for_training_and_left_for_generation(bundle):
    a = build_training_example(bundle, Image.new("RGB", (224, 84), "white"), LABEL)
    b = build_training_example(bundle, Image.new("RGB", (84, 84), "white"), "<table><tr><td>1</td></tr></table>")
    batch = collate([a, b], bundle.pad_token_id)
    n = max(len(a["input_ids"]), len(b["input_ids"]))
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape == (2, n)
    short = 1 if len(b["input_ids"]) < n else 0
    k = len([a, b][short]["input_ids"])
    assert batch["attention_mask"][short, k:].sum() == 0 and (batch["labels"][short, k:] == IGNORE_INDEX).all()
    assert batch["pixel_values"].shape[0] == a["pixel_values"].shape[0] + b["pixel_values"].shape[0]
    assert batch["image_grid_thw"].shape == (2, 3)
    gen = build_generation_batch(bundle, [Image.new("RGB", (224, 84)), Image.new("RGB", (84, 84))])
    assert (gen["attention_mask"][:, -1] == 1).all()  # left padded: every row ends with a real token
    assert "labels" not in gen


def test_loss_matches_transformers_causal_lm_loss(bundle, tiny_config):
    """Our answer-only loss equals the model's own label loss (same tokens, same mean)."""
    from ocr_ft.train.modeling import load_model_and_processor
    from ocr_ft.train.trainer import answer_loss_sum

    model, _ = load_model_and_processor(tiny_config.base_model, tiny_config, device="cpu")
    batch = collate([
        build_training_example(bundle, Image.new("RGB", (224, 84), "white"), LABEL),
        build_training_example(bundle, Image.new("RGB", (140, 84), "gray"), "<table><tr><td>7</td></tr></table>"),
    ], bundle.pad_token_id)
    with torch.no_grad():
        s, n = answer_loss_sum(model, batch)
        ref = model(**batch).loss
    assert torch.isfinite(ref)
    assert float(s) / n == pytest.approx(float(ref), rel=1e-5)


def test_rgba_is_composited_on_white():
    im = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert to_rgb(im).getpixel((0, 0)) == (255, 255, 255)


def test_16bit_grey_image_is_scaled_not_turned_white():
    import numpy as np
    from PIL import Image

    from ocr_ft.train.inputs import to_rgb

    arr = np.full((8, 8), 65535, np.uint16)
    arr[2:6, 2:6] = 0  # a black square on a white page
    img = Image.fromarray(arr)  # mode I;16
    assert img.mode.startswith("I;16")
    rgb = np.asarray(to_rgb(img))
    assert rgb.shape == (8, 8, 3)
    assert rgb[0, 0].tolist() == [255, 255, 255] and rgb[3, 3].tolist() == [0, 0, 0]
    wide = np.asarray(to_rgb(img.convert("I")))  # 32-bit holding 16-bit values
    assert wide[3, 3].tolist() == [0, 0, 0] and wide[0, 0].tolist() == [255, 255, 255]
