"""GOT-OCR 2.0 (``stepfun-ai/GOT-OCR-2.0-hf``, model_type ``got_ocr2``): SAM-ViTDet encoder (1024x1024 input,
16-px patches, a conv neck) + two stride-2 convolutions + Qwen2-0.5B decoder;
``GotOcr2ForConditionalGeneration`` in transformers 5 (``AutoModelForImageTextToText``).

* No chat template: the checkpoint has none and ``GotOcr2Processor`` builds the conversation by hand (MPT
  style, GOT's ``conv_mpt``). :func:`render_prompt` writes exactly what ``GotOcr2Processor`` writes for one
  image with ``format=True``::

      <|im_start|>system\\nYou should follow the instructions carefully and explain your answers in detail.
      <|im_end|><|im_start|>user\\n<img><imgpad></img>\\n OCR with format: <|im_end|><|im_start|>assistant\\n

  (no line break after ``detail.``; the space before ``OCR`` is the processor's, whose query is
  ``f"{box} OCR..."``; GOT's own demo, ``run_ocr_2.0.py``, has none). The answer ends with ``<|im_end|>``.
  ``OCR with format:`` (not plain ``OCR:``) is the task that writes tables as tables. The tokenizer's EOS is
  Qwen's ``<|endoftext|>`` (as in ``stepfun-ai/GOT-OCR-2.0-hf``), so ``answer_end_token`` makes training
  answers end with ``<|im_end|>`` as GOT's own training does; generation stops at either.
* The answer is a LaTeX ``tabular`` (:mod:`ocr_ft.tables.latex`): GOT's formatted output is Mathpix Markdown,
  tables as ``tabular`` with ``\\multirow``/``\\multicolumn``. Labels are written that way (``<th>``/``<thead>``
  lost, nested tables as nested ``tabular``s); model output is read leniently into the normalised HTML form;
  output that already is HTML is kept.
* Images: every image is resized to one ``size`` x ``size`` view (1024 for the real model; GOT's
  ``crop_to_patches`` multi-tile mode is not used, so ``min_pixels``/``max_pixels`` do not apply) and gives a
  fixed number of image tokens: the patch grid halved twice by the projector's stride-2 convolutions, 256 for
  1024 px. No ``image_grid_thw``, no ``mm_token_type_ids`` (plain 1-D RoPE).
* Modules: ``model.language_model`` (LoRA), ``model.vision_tower`` (SAM encoder), ``model.multi_modal_projector``.
* LLaMA-Factory (2026-08 tree) has no GOT-OCR 2.0 template: no export template.
* :func:`write_got_json` writes samples as the JSON GOT's own ``train_GOT.py`` reads (``image`` +
  human/gpt ``conversations``; seed 003).
* Tiny preset ``tiny-got-ocr2``: the same architecture with a 256-px view (16 image tokens), a Qwen2 decoder of
  a few million parameters, a tokenizer trained here with GOT's special tokens (EOS ``<|endoftext|>``, like the
  real one) and LaTeX table commands whole.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable

from ocr_ft.train.families.base import Family

TABLE_PROMPT = "OCR with format: "
IMAGE_TOKEN = "<imgpad>"
SYSTEM = "system\nYou should follow the instructions carefully and explain your answers in detail."
# GOT's tokenizer additions to Qwen's (GOT/utils/constants.py, GotOcr2Processor); the tiny numbers them so.
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<ref>", "</ref>", "<box>", "</box>",
                  "<quad>", "</quad>", "<img>", "</img>", IMAGE_TOKEN)
STOP_TOKENS = ("<|im_end|>", "<|endoftext|>")
LATEX_TOKENS = ("\\begin{tabular}", "\\end{tabular}", "\\multirow", "\\multicolumn", "{*}", "{c}", " & ", " \\\\")
PATCH_SIZE = 16
TINY_VIEW = 256  # px: 16x16 patches -> 4x4 = 16 image tokens (the real model: 1024 px -> 256)
TEXT_CONFIG = dict(
    model_type="qwen2", hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=8192, rms_norm_eps=1e-6, hidden_act="silu",
    tie_word_embeddings=True, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
    use_sliding_window=False,
)
VISION_CONFIG = dict(
    hidden_size=64, output_channels=32, num_hidden_layers=2, num_attention_heads=2, image_size=TINY_VIEW,
    patch_size=PATCH_SIZE, window_size=8, global_attn_indexes=[1], mlp_dim=128,
)


# --------------------------------------------------------------------------- prompt and answer


def render_prompt(tokenizer: Any, prompt: str) -> str:
    """The conversation ``GotOcr2Processor`` builds for one image and ``prompt`` (module docstring)."""
    return (f"<|im_start|>{SYSTEM}<|im_end|><|im_start|>user\n<img>{IMAGE_TOKEN}</img>\n {prompt}<|im_end|>"
            "<|im_start|>assistant\n")


def to_target(label_html: str) -> str:
    """The ``tabular`` GOT is trained to write for a label; a label of several tables gives one ``tabular``
    each, a blank line apart (Mathpix Markdown's paragraphs), which :func:`to_html` reads back as many tables.
    Raises :class:`ocr_ft.tables.latex.LatexTableError` (a ValueError) for a label without a table or with an
    inconsistent grid (validation rejects those)."""
    from ocr_ft.tables import parse_tables
    from ocr_ft.tables.latex import LatexTableError, table_to_tabular

    tables = parse_tables(label_html)
    if not tables:
        raise LatexTableError("the label holds no table")
    return "\n\n".join(table_to_tabular(t) for t in tables)


def to_html(text: str) -> str:
    """Model output as HTML: every ``tabular`` read leniently; text holding a ``<table`` or no ``tabular`` is
    returned unchanged (the table extraction decides)."""
    from ocr_ft.tables.latex import looks_like_tabular, tabular_to_html

    for t in SPECIAL_TOKENS:  # decoded with special tokens kept
        text = (text or "").replace(t, "")
    if not text or "<table" in text.lower() or not looks_like_tabular(text):
        return text or ""
    return tabular_to_html(text, strict=False)


# --------------------------------------------------------------------------- images


def view_size(bundle: Any) -> tuple[int, int]:
    """(height, width) of the one view every image is resized to (the image processor's ``size``)."""
    size = bundle.image_processor.size
    get = size.get if isinstance(size, dict) else (lambda k, d=None: getattr(size, k, d))
    h, w = get("height"), get("width")
    if not h or not w:
        raise ValueError(f"GOT-OCR 2.0 image processor from {bundle.source or 'the base model'}: size {size!r} "
                         "has no height/width")
    return int(h), int(w)


def processor_size(bundle: Any) -> dict[str, int]:
    """The image processor ``size`` (also written to a merged model's ``preprocessor_config.json``): the one
    square view, whatever the pixel cap says."""
    h, w = view_size(bundle)
    return {"height": h, "width": w}


def tokens_per_view(bundle: Any) -> int:
    """Image tokens of one view: the patch grid after the projector's two stride-2 convolutions."""
    h, w = view_size(bundle)
    p = bundle.patch_size
    return math.ceil(math.ceil(h / p / 2) / 2) * math.ceil(math.ceil(w / p / 2) / 2)


def image_tokens(bundle: Any, width: int, height: int) -> int:
    """Fixed: every image becomes one view (module docstring)."""
    from ocr_ft.train.inputs import ImageSizeError

    if width < 1 or height < 1:
        raise ImageSizeError(f"image of {width}x{height} px cannot be resized")
    return tokens_per_view(bundle)


def process_image(bundle: Any, image: Any) -> tuple[dict[str, Any], int]:
    """``pixel_values`` (1, 3, size, size) of the one view, and its token count."""
    image_tokens(bundle, *image.size)
    out = bundle.image_processor(images=[image], crop_to_patches=False, return_tensors="pt")
    return {"pixel_values": out["pixel_values"]}, tokens_per_view(bundle)


def image_processor(view: int = 1024):
    """GOT's image processor (PIL backend: no torchvision) for a ``view`` x ``view`` input, CLIP mean/std."""
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil

    return GotOcr2ImageProcessorPil(size={"height": view, "width": view})


# --------------------------------------------------------------------------- GOT's own training data


def got_record(image: str, label_html: str, prompt: str = TABLE_PROMPT) -> dict[str, Any]:
    """One sample in the JSON GOT's ``train_GOT.py`` reads (seed 003; GOT README "Data format"): the image
    path and a human/gpt turn pair, ``<image>\n`` + the prompt, then the ``tabular`` answer."""
    return {"image": str(image), "conversations": [{"from": "human", "value": f"<image>\n{prompt}"},
                                                   {"from": "gpt", "value": to_target(label_html)}]}


def write_got_json(samples: Iterable[tuple[str, str]], path: str | Path,
                   prompt: str = TABLE_PROMPT) -> tuple[int, list[tuple[str, str]]]:
    """Write ``(image, label_html)`` samples as GOT's training JSON (one list) at ``path`` (atomically). Returns
    the number written and ``(image, reason)`` of each sample left out (a label with no table or a broken grid)."""
    from ocr_ft.storage import atomic_write_json

    rows, left_out = [], []
    for image, label in samples:
        try:
            rows.append(got_record(image, label, prompt))
        except ValueError as exc:
            left_out.append((str(image), str(exc)))
    atomic_write_json(path, rows, indent=None)
    return len(rows), left_out


# --------------------------------------------------------------------------- tiny preset


def build_tiny(out_dir: str | Path, texts: Iterable[str], seed: int = 0, vocab_size: int = 8192) -> Path:
    """Write the tiny GOT-OCR 2.0 directory (config, weights, tokenizer, preprocessor) at ``out_dir``, replaced
    atomically; the tokenizer is trained on ``texts`` and their ``tabular`` form. Deterministic per texts + seed."""
    from transformers import GotOcr2Config, GotOcr2ForConditionalGeneration

    from ocr_ft.storage import sha256_json
    from ocr_ft.train.tiny import save_tiny_model, train_tokenizer

    texts = [t for t in texts if t and t.strip()]
    if not texts:
        raise ValueError("build_tiny (got_ocr2) needs at least one non-empty label text to train the tokenizer on")
    corpus = list(texts)
    for t in texts:
        try:
            corpus.append(to_target(t))
        except ValueError:
            pass
    tokenizer = train_tokenizer(
        corpus, vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), chat_template="",
        eos_token="<|endoftext|>", pad_token="<|endoftext|>", extra_tokens=list(LATEX_TOKENS),
    )
    tokenizer.chat_template = None  # GOT has no chat template (module docstring)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    vocab = -(-len(tokenizer) // 64) * 64
    per_view = math.ceil(math.ceil(TINY_VIEW / PATCH_SIZE / 2) / 2) ** 2
    config = GotOcr2Config(
        text_config=dict(TEXT_CONFIG, vocab_size=vocab, pad_token_id=ids["<|endoftext|>"],
                         eos_token_id=ids["<|endoftext|>"], bos_token_id=None),
        vision_config=dict(VISION_CONFIG),
        image_token_index=ids[IMAGE_TOKEN], image_seq_length=per_view, tie_word_embeddings=True,
    )
    config.architectures = ["GotOcr2ForConditionalGeneration"]
    return save_tiny_model(out_dir, GotOcr2ForConditionalGeneration, config, seed,
                           {"eos_token_id": [ids["<|im_end|>"], ids["<|endoftext|>"]], "pad_token_id": ids["<|endoftext|>"]},
                           tokenizer, image_processor(TINY_VIEW),
                           {"preset": "tiny-got-ocr2", "family": "got_ocr2", "seed": seed,
                            "texts_sha256": sha256_json(texts), "num_texts": len(texts), "vocab_size": vocab,
                            "tokenizer_size": len(tokenizer), "image_tokens": per_view})


FAMILY = Family(
    name="got_ocr2",
    title="GOT-OCR 2.0",
    model_types=("got_ocr2",),
    auto_model_class="AutoModelForImageTextToText",
    default_hub_id="stepfun-ai/GOT-OCR-2.0-hf",
    tiny_preset="tiny-got-ocr2",
    build_tiny=build_tiny,
    table_prompt=TABLE_PROMPT,
    chat_template_file=None,
    render_prompt=render_prompt,
    answer_format="latex",
    to_target=to_target,
    to_html=to_html,
    stop_tokens=STOP_TOKENS,
    answer_end_token="<|im_end|>",
    image_token=IMAGE_TOKEN,
    image_tokens=image_tokens,
    process_image=process_image,
    processor_size=processor_size,
    token_type_key=None,
    default_patch_size=PATCH_SIZE,
    default_merge_size=4,
    language_model_path="model.language_model",
    vision_tower_path="model.vision_tower",
    llamafactory_template=None,
    native_export=write_got_json,
    native_export_format="GOT-OCR 2.0 train_GOT.py JSON (image + human/gpt conversations, tabular answers)",
    native_export_suffix=".json",
    llamafactory_note=(
        "# No LLaMA-Factory template: LLaMA-Factory (2026-08) has none for GOT-OCR 2.0; GOT's own route is its\n"
        "# repository's train_GOT.py (deepspeed, seed 003) with ShareGPT-style human/gpt turns.\n"
    ),
    notes="SAM-ViTDet + Qwen2-0.5B, one 1024-px view = 256 tokens; answers LaTeX tabular (converted to HTML)",
    extra={"view_px": 1024, "crop_to_patches": False},
)
