"""GLM-OCR (``zai-org/GLM-OCR``, model_type ``glm_ocr``): CogViT encoder + GLM-0.5B decoder, the default family.

Prompt ``Table Recognition:`` after the image (the model card's table task); the answer is HTML. The image
processor is GLM-4.6V's (``Glm46VImageProcessorPil``), whose smart resize compares
``temporal_patch_size * area`` to its ``size`` bounds, so the pixel cap is scaled by ``temporal_patch_size``.
The tiny preset is :func:`ocr_ft.train.tiny.build_tiny_model` (preset name ``tiny``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ocr_ft.train.families.base import Family

TURN_END_TOKENS = ("<|user|>", "<|observation|>", "<|endoftext|>")
FALLBACK_TEMPLATE = "[gMASK]<sop><|user|>\n<|begin_of_image|>{image}<|end_of_image|>{prompt}<|assistant|>\n"


def temporal_size(bundle: Any) -> dict[str, int]:
    t = bundle.temporal_patch_size
    return {"shortest_edge": bundle.min_pixels * t, "longest_edge": bundle.max_pixels * t}


def resize(bundle: Any, width: int, height: int) -> tuple[int, int]:
    from transformers.models.glm46v.image_processing_pil_glm46v import smart_resize

    from ocr_ft.train.inputs import ImageSizeError

    t = bundle.temporal_patch_size
    size = bundle.processor_size
    try:
        return smart_resize(
            num_frames=t, height=height, width=width, temporal_factor=t,
            factor=bundle.patch_size * bundle.merge_size,
            min_pixels=size["shortest_edge"], max_pixels=size["longest_edge"],
        )
    except ValueError as exc:
        raise ImageSizeError(f"image of {width}x{height} px cannot be resized: {exc}") from None


def build_tiny(out_dir: str | Path, texts, seed: int = 0, vocab_size: int = 8192) -> Path:
    from ocr_ft.train.tiny import build_tiny_model

    return build_tiny_model(out_dir, texts, seed=seed, vocab_size=vocab_size)


FAMILY = Family(
    name="glm_ocr",
    title="GLM-OCR",
    model_types=("glm_ocr",),
    auto_model_class="AutoModelForImageTextToText",
    default_hub_id="zai-org/GLM-OCR",
    tiny_preset="tiny",
    build_tiny=build_tiny,
    table_prompt="Table Recognition:",
    chat_template_file=Path(__file__).resolve().parent.parent / "glm_ocr_chat_template.jinja",
    fallback_template=FALLBACK_TEMPLATE,
    stop_tokens=TURN_END_TOKENS,
    image_token="<|image|>",
    resize=resize,
    processor_size=temporal_size,
    token_type_key="mm_token_type_ids",
    language_model_path="model.language_model",
    vision_tower_path="model.visual",
    llamafactory_template="glm_ocr",
    llamafactory_note=(
        "# Format: glm_ocr renders [gMASK]<sop><|user|>\\n<|begin_of_image|>...<|end_of_image|>Table Recognition:\n"
        "# <|assistant|>\\n{html}<|endoftext|>, the text ocr-ft trains on and a server sends by default (no think\n"
        "# block); it also puts the loss on the \\n after <|assistant|> (see the export's README.md).\n"
    ),
    supports_packing=True,  # ocr_ft.train.packing (per-sample multimodal RoPE positions)
    notes="default; CogViT + GLM-0.5B, HTML with rowspan/colspan",
)
