"""The tiny preset: an ordinary GLM-OCR model directory, deterministic, with a locally trained tokenizer."""

from __future__ import annotations

import json

import pytest

from ocr_ft.storage import sha256_file
from ocr_ft.train.tiny import SPECIAL_TOKENS, build_tiny_model

TEXTS = [
    '<table><tr><td rowspan="2">매출액</td><td>1,234</td></tr><tr><td colspan="2">영업이익 합계</td></tr></table>',
    "<table><tr><th>구분</th><td>당기 12,345</td></tr></table>",
]


def _digest(d):
    return {p.name: sha256_file(p) for p in sorted(d.iterdir())}


def test_deterministic_for_same_texts_and_seed(tmp_path):
    a = build_tiny_model(tmp_path / "a", TEXTS, seed=3)
    b = build_tiny_model(tmp_path / "b", TEXTS, seed=3)
    c = build_tiny_model(tmp_path / "c", TEXTS, seed=4)
    assert _digest(a) == _digest(b)
    assert _digest(a)["model.safetensors"] != _digest(c)["model.safetensors"]
    assert _digest(a)["tokenizer.json"] == _digest(c)["tokenizer.json"]
    names = set(_digest(a))
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
            "preprocessor_config.json", "generation_config.json"} <= names


def test_loads_like_real_weights(tiny_model_dir):
    from transformers import GlmOcrForConditionalGeneration

    from ocr_ft.train.config import load_config
    from ocr_ft.train.modeling import load_model_and_processor

    model, bundle = load_model_and_processor(tiny_model_dir, load_config(base_model=str(tiny_model_dir)), device="cpu")
    assert isinstance(model, GlmOcrForConditionalGeneration)
    cfg = json.loads((tiny_model_dir / "config.json").read_text())
    assert cfg["model_type"] == "glm_ocr" and cfg["image_token_id"] == bundle.image_token_id
    n = sum(p.numel() for p in model.parameters())
    assert 1_000_000 < n < 10_000_000
    # GLM-OCR's vision geometry, so the image-token arithmetic is the real one
    assert (bundle.patch_size, bundle.merge_size, bundle.temporal_patch_size) == (14, 2, 2)
    assert model.config.vision_config.spatial_merge_size == 2


def test_tokenizer_units(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    for t in SPECIAL_TOKENS:
        assert tok.convert_tokens_to_ids(t) != tok.unk_token_id and len(tok.encode(t, add_special_tokens=False)) == 1
    for unit in ["<table>", "</table>", "<tr>", "</tr>", "<td>", "</td>", ' rowspan="', ' colspan="', "매", "출", "7"]:
        assert len(tok.encode(unit, add_special_tokens=False)) == 1, unit
    text = '<table><tr><td rowspan="2">자산총계</td><td>12,345</td></tr></table>'
    ids = tok.encode(text, add_special_tokens=False)
    assert tok.decode(ids) == text
    assert tok.decode(ids, skip_special_tokens=True) == text  # table tags are ordinary tokens, kept on decode
    # unseen characters still round-trip (byte-level fallback)
    assert tok.decode(tok.encode("漢字 €", add_special_tokens=False)) == "漢字 €"
    rendered = tok.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Table Recognition:"}]}],
        tokenize=False, add_generation_prompt=True)
    assert rendered == "[gMASK]<sop><|user|>\n<|begin_of_image|><|image|><|end_of_image|>Table Recognition:<|assistant|>\n"


def test_needs_texts(tmp_path):
    with pytest.raises(ValueError, match="at least one"):
        build_tiny_model(tmp_path / "x", ["", "  "])
