"""PaddleOCR-VL (``PaddlePaddle/PaddleOCR-VL``, model_type ``paddleocr_vl``): NaViT-style SigLIP encoder +
ERNIE-4.5-0.3B decoder, ``PaddleOCRVLForConditionalGeneration`` in transformers 5 (``AutoModelForImageTextToText``).

* Prompt ``Table Recognition:`` after the image (the model card's task prompts and the SFT guide, seed 002);
  chat template (package data, ``templates/paddleocr_vl_chat_template.jinja``, where it comes from:
  ``paddleocr_vl_chat_template.SOURCE.txt``):
  ``<|begin_of_sentence|>User: <|IMAGE_START|><|IMAGE_PLACEHOLDER|><|IMAGE_END|>Table Recognition:\\nAssistant: ``,
  the answer then ends with ``</s>``.
* The answer is OTSL (:mod:`ocr_ft.tables.otsl`): labels are written with the six tags PaddleOCR-VL knows
  (``<th>``/``<thead>`` are lost; a nested table's text goes into its outer cell), model output is read
  leniently, as PaddleX does, and becomes the normalised HTML form. Output that already is HTML is kept.
* Images: ``PaddleOCRVLImageProcessor`` (PIL backend without torchvision): 14-px patches, temporal patch 1,
  2x2 merge, its smart resize bounds the resized *area* by ``size`` (so the pixel cap is passed unscaled);
  one image token per merged 28x28 block; the model wants ``image_grid_thw`` and ``mm_token_type_ids``
  (M-RoPE), like GLM-OCR.
* Modules: ``model.language_model`` (LoRA), ``model.visual`` (SigLIP tower), ``model.projector`` (never LoRA).
* LLaMA-Factory (checked at its 2026-08 tree) has no PaddleOCR-VL template (``ernie_vl`` is ERNIE-4.5-VL's, a
  different prompt): no export template.
* :func:`write_erniekit_jsonl` writes samples in ERNIEKit's SFT-VL JSONL (``image_info``/``text_info``, the
  prompt ``mask``-ed, the OTSL answer ``no_mask``), PaddleOCR-VL's own fine-tuning route (seed 002).
* Tiny preset ``tiny-paddleocr-vl``: the same architecture at a few million parameters, the real chat template,
  a tokenizer trained here with PaddleOCR-VL's special tokens and the OTSL tags kept whole.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from ocr_ft.train.families.base import Family

TEMPLATES = Path(__file__).resolve().parent / "templates"
CHAT_TEMPLATE_FILE = TEMPLATES / "paddleocr_vl_chat_template.jinja"
TABLE_PROMPT = "Table Recognition:"
IMAGE_TOKEN = "<|IMAGE_PLACEHOLDER|>"
IMAGE_SPAN = "<|IMAGE_START|><|IMAGE_PLACEHOLDER|><|IMAGE_END|>"  # one image in the prompt
# Named as in PaddleOCR-VL's tokenizer (ERNIE-4.5: <unk>=0 pad, <s>=1, </s>=2 EOS); the tiny numbers them in
# this order.
SPECIAL_TOKENS = (
    "<unk>", "<s>", "</s>", "<|begin_of_sentence|>", "<|end_of_sentence|>",
    IMAGE_TOKEN, "<|IMAGE_START|>", "<|IMAGE_END|>", "<|VIDEO_PLACEHOLDER|>", "<|VIDEO_START|>", "<|VIDEO_END|>",
)
STOP_TOKENS = ("</s>", "<|end_of_sentence|>")
# The real preprocessor_config.json's values (PaddleOCRVLImageProcessor; see the SOURCE note).
PREPROCESSOR = dict(min_pixels=147384, max_pixels=2822400, patch_size=14, temporal_patch_size=1, merge_size=2,
                    image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5], resample=3)
# Tiny dimensions: the real geometry (14-px patches, 2x2 merge), small widths and depths. head_dim 64 ->
# M-RoPE sections summing to 32 (the real model: head_dim 128, sections [16, 24, 24]).
TEXT_CONFIG = dict(
    hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
    head_dim=64, max_position_embeddings=8192, rms_norm_eps=1e-5, hidden_act="silu", use_bias=False,
    rope_parameters={"rope_type": "default", "rope_theta": 500000.0, "mrope_section": [8, 12, 12]},
)
VISION_CONFIG = dict(
    hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2, patch_size=14,
    image_size=224, spatial_merge_size=2, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6,
)


# --------------------------------------------------------------------------- answer format


def to_target(label_html: str) -> str:
    """The OTSL PaddleOCR-VL is trained to write for a label (six tags; nested tables' text kept in the cell)."""
    from ocr_ft.tables.otsl import html_to_otsl

    return html_to_otsl(label_html, headers=False, nested="text")


def to_html(text: str) -> str:
    """Model output as HTML: OTSL read leniently (PaddleX's repairs) into the normalised form; text that holds
    a ``<table`` already, or no OTSL cell at all, is returned unchanged (the table extraction decides). The
    family's special tokens (``</s>``, image markers) are removed first, so text decoded with special tokens
    kept works too."""
    from ocr_ft.tables.otsl import looks_like_otsl, otsl_to_html

    for t in SPECIAL_TOKENS:  # decoded with special tokens kept (a vocabulary may mark the OTSL tags special)
        text = (text or "").replace(t, "")
    if not text or "<table" in text.lower() or not looks_like_otsl(text):
        return text or ""
    start = min(text.find(t) for t in ("<fcel>", "<ecel>", "<ched>", "<rhed>", "<srow>", "<lcel>", "<ucel>", "<xcel>")
                if t in text)
    return otsl_to_html(text[start:], strict=False)


def render_prompt(tokenizer: Any, prompt: str) -> str:
    """The generation prompt via the tokenizer's chat template, with the image rendered as
    ``<|IMAGE_START|><|IMAGE_PLACEHOLDER|><|IMAGE_END|>`` - the template's own default, the form PaddleX and
    vLLM send. Passed explicitly because transformers 5 hands every named special token to the template and a
    tokenizer whose ``image_token`` is ``<|IMAGE_PLACEHOLDER|>`` (what ``PaddleOCRVLProcessor`` needs) would
    otherwise render the placeholder without its start/end markers."""
    from ocr_ft.train.families.base import image_then_text

    if not getattr(tokenizer, "chat_template", None):
        return FAMILY.fallback_template.format(image=IMAGE_TOKEN, prompt=prompt)
    return tokenizer.apply_chat_template(image_then_text(prompt), tokenize=False, add_generation_prompt=True,
                                         image_token=IMAGE_SPAN)


# --------------------------------------------------------------------------- images


def resize(bundle: Any, width: int, height: int) -> tuple[int, int]:
    """(height, width) PaddleOCR-VL's image processor resizes to under the bundle's pixel cap."""
    from transformers.models.paddleocr_vl.image_processing_pil_paddleocr_vl import smart_resize

    from ocr_ft.train.inputs import ImageSizeError

    size = bundle.processor_size
    try:
        return smart_resize(height, width, factor=bundle.patch_size * bundle.merge_size,
                            min_pixels=size["shortest_edge"], max_pixels=size["longest_edge"])
    except ValueError as exc:
        raise ImageSizeError(f"image of {width}x{height} px cannot be resized: {exc}") from None


def image_processor():
    """PaddleOCR-VL's image processor with the real preprocessing values (PIL backend: no torchvision)."""
    from transformers.models.paddleocr_vl.image_processing_pil_paddleocr_vl import PaddleOCRVLImageProcessorPil

    return PaddleOCRVLImageProcessorPil(**PREPROCESSOR)


# --------------------------------------------------------------------------- ERNIEKit export


def erniekit_record(image_url: str, label_html: str, prompt: str = TABLE_PROMPT) -> dict[str, Any]:
    """One training sample in ERNIEKit's SFT-VL format, PaddleOCR-VL's own fine-tuning route (seed 002): the
    image before the first text, the prompt masked, the OTSL answer trained. Raises ValueError (OTSLError) for a
    label OTSL cannot hold."""
    return {"image_info": [{"matched_text_index": 0, "image_url": str(image_url)}],
            "text_info": [{"text": prompt, "tag": "mask"}, {"text": to_target(label_html), "tag": "no_mask"}]}


def write_erniekit_jsonl(samples: Iterable[tuple[str, str]], path: str | Path,
                         prompt: str = TABLE_PROMPT) -> tuple[int, list[tuple[str, str]]]:
    """Write ``(image_url, label_html)`` samples as ERNIEKit JSONL at ``path`` (atomically). Returns the number
    written and ``(image_url, reason)`` of each sample left out because OTSL cannot hold its label."""
    from ocr_ft.storage import atomic_write_jsonl

    rows, left_out = [], []
    for url, label in samples:
        try:
            rows.append(erniekit_record(url, label, prompt))
        except ValueError as exc:
            left_out.append((str(url), str(exc)))
    atomic_write_jsonl(path, rows)
    return len(rows), left_out


# --------------------------------------------------------------------------- tiny preset


def build_tiny(out_dir: str | Path, texts: Iterable[str], seed: int = 0, vocab_size: int = 8192) -> Path:
    """Write the tiny PaddleOCR-VL directory (config, weights, tokenizer + real chat template, preprocessor) at
    ``out_dir``, replaced atomically. The tokenizer is trained on ``texts`` (label HTML) and their OTSL form;
    deterministic for the same texts and seed."""
    from transformers import PaddleOCRVLConfig, PaddleOCRVLForConditionalGeneration

    from ocr_ft.storage import sha256_json
    from ocr_ft.tables.otsl import HEADER_TOKENS, OTSL_TOKENS
    from ocr_ft.train.tiny import save_tiny_model, train_tokenizer

    texts = [t for t in texts if t and t.strip()]
    if not texts:
        raise ValueError("build_tiny (paddleocr_vl) needs at least one non-empty label text to train the tokenizer on")
    corpus = list(texts)
    for t in texts:
        try:
            corpus.append(to_target(t))
        except ValueError:
            pass  # a label OTSL cannot express still trains the tokenizer as HTML
    tokenizer = train_tokenizer(
        corpus, vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
        chat_template=CHAT_TEMPLATE_FILE.read_text(encoding="utf-8"), eos_token="</s>", pad_token="<unk>",
        extra_tokens=[*OTSL_TOKENS, *HEADER_TOKENS], unk_token="<unk>", bos_token="<s>",
        cls_token="<|begin_of_sentence|>", sep_token="<|end_of_sentence|>",
        extra_special_tokens={"image_token": IMAGE_TOKEN},
    )
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    vocab = -(-len(tokenizer) // 64) * 64
    config = PaddleOCRVLConfig(
        text_config=dict(TEXT_CONFIG, vocab_size=vocab, pad_token_id=ids["<unk>"], bos_token_id=ids["<s>"],
                         eos_token_id=ids["</s>"], tie_word_embeddings=True),
        vision_config=dict(VISION_CONFIG),
        image_token_id=ids[IMAGE_TOKEN], video_token_id=ids["<|VIDEO_PLACEHOLDER|>"],
        vision_start_token_id=ids["<|IMAGE_START|>"], vision_end_token_id=ids["<|IMAGE_END|>"],
        tie_word_embeddings=True,
    )
    config.architectures = ["PaddleOCRVLForConditionalGeneration"]
    return save_tiny_model(out_dir, PaddleOCRVLForConditionalGeneration, config, seed,
                           {"eos_token_id": [ids["</s>"], ids["<|end_of_sentence|>"]], "pad_token_id": ids["<unk>"],
                            "bos_token_id": ids["<s>"]},
                           tokenizer, image_processor(),
                           {"preset": "tiny-paddleocr-vl", "family": "paddleocr_vl", "seed": seed,
                            "texts_sha256": sha256_json(texts), "num_texts": len(texts), "vocab_size": vocab,
                            "tokenizer_size": len(tokenizer)})


FAMILY = Family(
    name="paddleocr_vl",
    title="PaddleOCR-VL",
    model_types=("paddleocr_vl",),
    auto_model_class="AutoModelForImageTextToText",
    default_hub_id="PaddlePaddle/PaddleOCR-VL",
    tiny_preset="tiny-paddleocr-vl",
    build_tiny=build_tiny,
    table_prompt=TABLE_PROMPT,
    chat_template_file=CHAT_TEMPLATE_FILE,
    fallback_template="<|begin_of_sentence|>User: <|IMAGE_START|>{image}<|IMAGE_END|>{prompt}\nAssistant: ",
    render_prompt=render_prompt,
    answer_format="otsl",
    to_target=to_target,
    to_html=to_html,
    stop_tokens=STOP_TOKENS,
    image_token=IMAGE_TOKEN,
    resize=resize,
    token_type_key="mm_token_type_ids",
    default_patch_size=14,
    default_merge_size=2,
    language_model_path="model.language_model",
    vision_tower_path="model.visual",
    llamafactory_template=None,
    native_export=write_erniekit_jsonl,
    native_export_format="ERNIEKit SFT-VL JSONL (PaddleOCR-VL's own SFT route, OTSL answers)",
    native_export_suffix=".jsonl",
    llamafactory_note=(
        "# No LLaMA-Factory template: LLaMA-Factory (2026-08) has none for PaddleOCR-VL (ernie_vl is ERNIE-4.5-VL's\n"
        "# prompt). PaddleOCR-VL's own SFT route is ERNIEKit (erniekit train, seed 002) with OTSL answers.\n"
    ),
    notes="SigLIP-NaViT + ERNIE-4.5-0.3B; answers OTSL (converted to HTML; th/thead and nesting lost)",
    extra={"answer_tags": "fcel ecel lcel ucel xcel nl"},
)
