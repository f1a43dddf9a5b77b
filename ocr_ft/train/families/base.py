"""What a base-model family is: :class:`Family`, one frozen record of everything the training room needs to
know about a kind of OCR vision-language model (GLM-OCR, Qwen-VL, PaddleOCR-VL, GOT-OCR 2.0, ...).

Plain Python, no torch import at module level. Each family module (``glm_ocr.py``, ``qwen_vl.py``, ...)
defines one ``FAMILY = Family(...)``; ``ocr_ft/train/families/__init__.py`` registers them.

The model inputs of every family are built the same way (``ocr_ft/train/inputs.py``): the family's chat
template is rendered as text for one image and the table prompt, its single image placeholder
(:attr:`Family.image_token`) is expanded to ``n`` copies (``n`` = :attr:`Family.image_tokens` of the
resized image), and the image tensors the family's :attr:`Family.process_image` returns ride along. A family
whose inputs differ overrides the hooks (``render_prompt``, ``prompt_fields``, ``process_image``); the
collator pads every per-token list field with 0 and concatenates every tensor field on dim 0, and the
trainer passes every key except ``labels`` to ``model.model(**batch)``.

Hooks take the :class:`ocr_ft.train.inputs.ProcessorBundle` (tokenizer, image processor, pixel cap, ids of
the rendered prompt) as ``bundle``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

HTML = "html"


def identity(text: str) -> str:
    return text


def image_then_text(prompt: str) -> list[dict[str, Any]]:
    """One user turn: the image, then the prompt (GLM-OCR's, Qwen-VL's and PaddleOCR-VL's order)."""
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]


@dataclass(frozen=True)
class Family:
    """One base-model family. Fields without defaults must be given; hooks default to the dynamic-resolution
    path shared by GLM-OCR and Qwen-VL (patches merged ``merge_size`` x ``merge_size`` into one token)."""

    # --- identity
    name: str  # registry key, e.g. "glm_ocr"; also accepted as base_model (-> default_hub_id)
    title: str  # human name, e.g. "GLM-OCR"
    model_types: tuple[str, ...]  # config.json model_type values that belong to this family
    auto_model_class: str  # transformers Auto class name the weights load with, e.g. "AutoModelForImageTextToText"
    default_hub_id: str  # e.g. "zai-org/GLM-OCR"
    # --- the tiny offline preset
    tiny_preset: str  # preset name usable as base_model in the Dagster graph, e.g. "tiny", "tiny-qwen-vl"
    build_tiny: Callable[..., Path]  # build_tiny(out_dir, texts, seed=0, vocab_size=8192) -> out_dir
    # --- prompt and answer
    table_prompt: str  # the family's own task prompt for table recognition
    chat_template_file: Path | None = None  # the real chat template (package data) the tiny preset ships
    messages: Callable[[str], list[dict[str, Any]]] = image_then_text  # prompt -> chat messages (one image)
    fallback_template: str | None = None  # "{image}"/"{prompt}" format string when a tokenizer has no template
    render_prompt: Callable[[Any, str], str] | None = None  # (tokenizer, prompt) -> text; None: chat template
    answer_format: str = HTML  # "html", or the family's own table format (e.g. "otsl")
    to_target: Callable[[str], str] = identity  # label HTML -> the text the model is trained to write
    to_html: Callable[[str], str] = identity  # decoded model answer -> HTML text (tables are then extracted)
    stop_tokens: tuple[str, ...] = ()  # tokens besides EOS that end an answer (those absent from a vocab are skipped)
    answer_end_token: str | None = None  # appended to every training answer; None (or absent from the vocab): EOS
    # --- image
    image_token: str = "<|image|>"  # the placeholder the template renders once and the inputs repeat n times
    resize: Callable[[Any, int, int], tuple[int, int]] | None = None
    # (bundle, width, height) -> (height, width) the image processor resizes to (dynamic-resolution families;
    # raise ocr_ft.train.inputs.ImageSizeError when the image cannot be resized)
    image_tokens: Callable[[Any, int, int], int] = field(default=None)  # type: ignore[assignment]
    # (bundle, width, height) -> n image tokens; default dynamic_image_tokens (patches of `resize`, merged)
    process_image: Callable[[Any, "Image.Image"], tuple[dict[str, Any], int]] = field(default=None)  # type: ignore[assignment]
    # (bundle, rgb image) -> (tensor fields such as pixel_values / image_grid_thw, n image tokens);
    # default dynamic_process_image (the image processor under processor_size, n = grid.prod() // merge**2)
    processor_size: Callable[[Any], dict[str, int]] = field(default=None)  # type: ignore[assignment]
    # bundle -> the image processor's `size` for the bundle's pixel cap; default area_size
    prompt_fields: Callable[[Any, int], tuple[list[int], dict[str, list[int]]]] = field(default=None)  # type: ignore[assignment]
    # (bundle, n) -> (prompt ids, extra per-token fields); default expand_image_token
    load_image_processor: Callable[[str, str | None, dict[str, Any]], Any] | None = None
    # (source, backend or None, from_pretrained kwargs) -> image processor; None: AutoImageProcessor
    token_type_key: str | None = "mm_token_type_ids"  # per-token field, 1 on image tokens (None: not passed)
    default_patch_size: int = 14
    default_merge_size: int = 2
    # --- modules (for LoRA scoping and vision_lora)
    language_model_path: str = "model.language_model"
    vision_tower_path: str = "model.visual"
    # --- export and training features
    llamafactory_template: str | None = None  # LLaMA-Factory template name; None: no export (see llamafactory_note)
    llamafactory_note: str = ""  # what the YAML header says about the template (or why there is none)
    native_export: Callable[[Iterable[tuple[str, str]], Path], tuple[int, list[tuple[str, str]]]] | None = None
    # (samples of (image path, label html), out file) -> (written, [(image, reason left out)]): the family's own
    # fine-tuning data format (e.g. ERNIEKit JSONL, GOT's JSON); None: only the LLaMA-Factory export
    native_export_format: str = ""  # what native_export writes, e.g. "ERNIEKit SFT-VL JSONL"
    native_export_suffix: str = ".json"  # file suffix of that format
    supports_packing: bool = False
    notes: str = ""  # one line for `ocr-ft models` / the README
    extra: Mapping[str, Any] = field(default_factory=dict)  # anything family-specific

    def __post_init__(self) -> None:
        for name, default in (("image_tokens", dynamic_image_tokens), ("process_image", dynamic_process_image),
                              ("processor_size", area_size), ("prompt_fields", expand_image_token)):
            if getattr(self, name) is None:
                object.__setattr__(self, name, default)
        if self.image_tokens is dynamic_image_tokens and self.resize is None:
            raise ValueError(f"family {self.name!r}: give resize (dynamic resolution) or an image_tokens hook")
        if not self.model_types:
            raise ValueError(f"family {self.name!r}: model_types is empty")
        if self.answer_format != HTML and self.to_html is identity:
            raise ValueError(f"family {self.name!r}: answer format {self.answer_format!r} needs a to_html converter")

    # ---------------------------------------------------------------- convenience

    def extract_html(self, text: str | None) -> str:
        """The model output ``text`` (special tokens dropped) as table HTML: the family's own format converted
        by :attr:`to_html`, then the top-level tables extracted; ``""`` when there is no table."""
        from ocr_ft.evaluate.predictors import extract_table_html

        if not text:
            return ""
        try:
            converted = self.to_html(text)
        except ValueError:
            return ""
        return extract_table_html(converted)

    def module(self, model: Any, path: str) -> Any:
        """The sub-module of ``model`` (the bare transformers model) at dotted ``path``; None when absent."""
        m = model
        for part in path.split("."):
            m = getattr(m, part, None)
            if m is None:
                return None
        return m

    def summary_line(self) -> str:
        """One line for ``ocr-ft models``: name, Auto class, prompt, default hub id, tiny preset."""
        return (f"{self.name}\t{self.auto_model_class}\tprompt={self.table_prompt!r}\t{self.default_hub_id}\t"
                f"tiny={self.tiny_preset}")


# --------------------------------------------------------------------------- default hooks


def area_size(bundle: Any) -> dict[str, int]:
    """The image processor ``size`` whose bounds are the resized image's area (Qwen2-VL's processors)."""
    return {"shortest_edge": bundle.min_pixels, "longest_edge": bundle.max_pixels}


def dynamic_image_tokens(bundle: Any, width: int, height: int) -> int:
    """Image tokens of a dynamic-resolution family: patches of the resized image, ``merge x merge`` per token."""
    h, w = bundle.family.resize(bundle, width, height)
    return (h // bundle.patch_size) * (w // bundle.patch_size) // bundle.merge_size**2


def dynamic_process_image(bundle: Any, image: "Image.Image") -> tuple[dict[str, Any], int]:
    """``pixel_values`` + ``image_grid_thw`` from the image processor under the bundle's cap, and the token count."""
    bundle.family.resize(bundle, *image.size)  # raises ImageSizeError with the size named
    out = bundle.image_processor(images=[image], size=bundle.processor_size, return_tensors="pt")
    grid = out["image_grid_thw"]
    return {"pixel_values": out["pixel_values"], "image_grid_thw": grid}, int(grid[0].prod().item()) // bundle.merge_size**2


def expand_image_token(bundle: Any, n: int) -> tuple[list[int], dict[str, list[int]]]:
    """The rendered prompt with its one image placeholder repeated ``n`` times; ``token_type_key`` marks them."""
    ids = bundle.prefix_ids + [bundle.image_token_id] * n + bundle.suffix_ids
    key = bundle.family.token_type_key
    if key is None:
        return ids, {}
    return ids, {key: [0] * len(bundle.prefix_ids) + [1] * n + [0] * len(bundle.suffix_ids)}
