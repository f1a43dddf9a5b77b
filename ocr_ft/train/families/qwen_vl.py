"""Qwen-VL (``Qwen/Qwen2.5-VL-3B-Instruct``; model_types ``qwen2_5_vl``, ``qwen2_vl``, ``qwen3_vl``).

All three share the input path this project builds (checked in transformers 5.x: ``pixel_values`` +
``image_grid_thw`` from ``Qwen2VLImageProcessor``, ``<|image_pad|>`` repeated ``grid.prod() // merge**2``
times between ``<|vision_start|>``/``<|vision_end|>``, ``mm_token_type_ids`` for the M-RoPE index; towers at
``model.visual`` / ``model.language_model``). The image processor's smart resize compares the plain area to
its ``size`` bounds (no temporal factor). Qwen-VL has no table-specific task prompt: a plain instruction asks
for HTML. A real checkpoint brings its own chat template; the tiny preset ships Qwen2.5-VL's
(``qwen2_5_vl_chat_template.jinja``, see its SOURCE note). Answers end with ``<|im_end|>``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from ocr_ft.train.families.base import Family

CHAT_TEMPLATE_PATH = Path(__file__).resolve().parent.parent / "qwen2_5_vl_chat_template.jinja"
PROMPT = ("Convert the table in this image to HTML. Output only the <table> element, using rowspan and colspan "
          "for merged cells.")
# Special tokens of the Qwen2.5-VL tokenizer, by name (the tiny vocabulary numbers them from 0).
SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
    "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>",
]
STOP_TOKENS = ("<|im_end|>", "<|endoftext|>")
FALLBACK_TEMPLATE = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                     "<|vision_start|>{image}<|vision_end|>{prompt}<|im_end|>\n<|im_start|>assistant\n")

# Tiny dimensions: Qwen2.5-VL's vision geometry (14-px patches, 2x2 merge, temporal patch 2, 112-px windows),
# small widths and depths. head_dim = 256 / 4 = 64, so the M-RoPE sections sum to 32.
TEXT_CONFIG = dict(
    hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
    max_position_embeddings=8192, rms_norm_eps=1e-6, tie_word_embeddings=False,
    rope_parameters={"rope_type": "default", "mrope_section": [8, 12, 12], "rope_theta": 10000.0},
)
VISION_CONFIG = dict(
    depth=2, hidden_size=128, intermediate_size=256, num_heads=2, out_hidden_size=256, patch_size=14,
    spatial_merge_size=2, temporal_patch_size=2, window_size=112, fullatt_block_indexes=[1],
)


def resize(bundle: Any, width: int, height: int) -> tuple[int, int]:
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    from ocr_ft.train.inputs import ImageSizeError

    size = bundle.processor_size
    try:
        return smart_resize(height=height, width=width, factor=bundle.patch_size * bundle.merge_size,
                            min_pixels=size["shortest_edge"], max_pixels=size["longest_edge"])
    except ValueError as exc:
        raise ImageSizeError(f"image of {width}x{height} px cannot be resized: {exc}") from None


def build_tiny(out_dir: str | Path, texts: Iterable[str], seed: int = 0, vocab_size: int = 8192) -> Path:
    """The tiny Qwen2.5-VL directory at ``out_dir`` (replaced atomically): a few million parameters, a tokenizer
    trained here on ``texts`` with Qwen's special tokens and real chat template. Deterministic per texts + seed."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from ocr_ft.storage import sha256_json
    from ocr_ft.train.tiny import save_tiny_model, train_tokenizer

    texts = [t for t in texts if t and t.strip()]
    if not texts:
        raise ValueError("build_tiny (qwen_vl) needs at least one non-empty label text to train the tokenizer on")
    tokenizer = train_tokenizer(texts, vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                chat_template=CHAT_TEMPLATE_PATH.read_text(encoding="utf-8"),
                                eos_token="<|im_end|>", pad_token="<|endoftext|>")
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    eos = [ids["<|im_end|>"], ids["<|endoftext|>"]]
    vocab = -(-len(tokenizer) // 64) * 64
    config = Qwen2_5_VLConfig(
        text_config=dict(TEXT_CONFIG, vocab_size=vocab, pad_token_id=ids["<|endoftext|>"],
                         bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"]),
        vision_config=dict(VISION_CONFIG),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    config.architectures = ["Qwen2_5_VLForConditionalGeneration"]
    return save_tiny_model(out_dir, Qwen2_5_VLForConditionalGeneration, config, seed,
                           {"eos_token_id": eos, "pad_token_id": ids["<|endoftext|>"]},
                           tokenizer, Qwen2VLImageProcessorPil(),
                           {"preset": "tiny-qwen-vl", "seed": seed, "texts_sha256": sha256_json(texts),
                            "num_texts": len(texts), "vocab_size": vocab, "tokenizer_size": len(tokenizer)})


FAMILY = Family(
    name="qwen_vl",
    title="Qwen-VL",
    model_types=("qwen2_5_vl", "qwen2_vl", "qwen3_vl"),
    auto_model_class="AutoModelForImageTextToText",
    default_hub_id="Qwen/Qwen2.5-VL-3B-Instruct",
    tiny_preset="tiny-qwen-vl",
    build_tiny=build_tiny,
    table_prompt=PROMPT,
    chat_template_file=CHAT_TEMPLATE_PATH,
    fallback_template=FALLBACK_TEMPLATE,
    stop_tokens=STOP_TOKENS,
    answer_end_token="<|im_end|>",  # the Instruct tokenizers' EOS too; a base checkpoint's may be <|endoftext|>
    image_token="<|image_pad|>",
    resize=resize,
    token_type_key="mm_token_type_ids",
    language_model_path="model.language_model",
    vision_tower_path="model.visual",
    llamafactory_template="qwen2_vl",
    llamafactory_note=(
        "# Format: qwen2_vl renders <|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n<|im_start|>user\\n\n"
        "# <|vision_start|><|image_pad|>...<|vision_end|>PROMPT<|im_end|>\\n<|im_start|>assistant\\n{html}<|im_end|>,\n"
        "# the Qwen2.5-VL chat template ocr-ft trains on (LLaMA-Factory also supervises the \\n after <|im_end|>).\n"
    ),
    notes="Qwen2/2.5/3-VL; plain instruction prompt, HTML answer",
)
