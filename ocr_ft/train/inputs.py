"""Model inputs for every base-model family, built from the tokenizer and the image processor directly.

What is model-specific (prompt, chat template, image geometry, answer format) comes from the bundle's
:class:`ocr_ft.train.families.Family` (``ocr_ft/train/families/README.md``); GLM-OCR, the default, is what
the rest of this docstring describes.

One code path for every machine: ``Glm46VProcessor`` needs a video processor (hence torchvision), so instead
the chat template is rendered as text, its single ``<|image|>`` is expanded to
``image_grid_thw.prod() // merge_size**2`` image tokens, and ``mm_token_type_ids`` (1 on image tokens) is
passed along, exactly what the stock processor would produce.

The sequence is ``template(image, prompt, add_generation_prompt=True) + ANSWER_PREFIX + answer + EOS``;
labels are -100 everywhere except the answer and the EOS (the supervised part is exactly answer + EOS). The
prompt part is the same ids :func:`build_prompt_inputs` gives for generation, so training and inference see
identical prompts.

The prompt is the one a server sends by default: the model's own chat template with
``add_generation_prompt=True`` and **no template kwargs** (no ``enable_thinking``). For GLM-OCR that is
``[gMASK]<sop><|user|>\n<|begin_of_image|><|image|>…<|end_of_image|>Table Recognition:<|assistant|>\n``:
what vLLM/SGLang, the model card, the official SDK and :class:`ocr_ft.evaluate.predictors.EndpointPredictor`
send.

What comes between ``<|assistant|>\n`` and the answer (``ANSWER_PREFIX``) is deliberately nothing. The
template writes a *past* assistant turn as ``<think></think>\n`` + content, but a server never sends that
block: it ends the prompt at ``<|assistant|>\n`` and the model writes on from there. Training the answer right
after ``<|assistant|>\n`` teaches the fine-tune to start the table at once on exactly the served prompt
(no empty think block to spend tokens on or to strip), and it is byte for byte what LLaMA-Factory's
``glm_ocr`` template trains (``<|assistant|>`` + ``\n{answer}<|endoftext|>``), so both training paths agree.
If the base model opens with a think block anyway, ``ocr-ft inspect-format --probe`` shows it and the
table extraction looks past it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from ocr_ft.train.families.glm_ocr import FALLBACK_TEMPLATE, TURN_END_TOKENS as _TURN_END_TOKENS  # noqa: F401

IGNORE_INDEX = -100
DEFAULT_IMAGE_TOKEN = "<|image|>"
# Text between the generation prompt (ending ``<|assistant|>\n``) and the answer: nothing (module docstring).
ANSWER_PREFIX = ""
# FALLBACK_TEMPLATE (what GLM-OCR's chat template renders for one image and one text part, used only when a
# tokenizer carries no chat template) and GLM's turn-end stop tokens live with the family (families/glm_ocr.py).


class ImageSizeError(ValueError):
    """The image cannot be resized for the vision tower (e.g. aspect ratio above 200)."""


@dataclass(frozen=True)
class TokenCount:
    image: int
    prompt: int  # template text tokens around the image
    label: int  # answer tokens + EOS
    total: int

    def to_dict(self) -> dict[str, int]:
        return {"image": self.image, "prompt": self.prompt, "label": self.label, "total": self.total}


@dataclass
class ProcessorBundle:
    """Tokenizer + image processor + the fixed prompt and pixel cap shared by training and inference."""

    tokenizer: Any = field(repr=False)
    image_processor: Any = field(repr=False)
    prompt: str
    min_pixels: int  # area bounds of the resized image, in pixels
    max_pixels: int
    source: str = ""  # where the tokenizer came from, for messages
    family: Any = field(default=None, repr=False)  # ocr_ft.train.families.Family; None: GLM-OCR
    image_token: str = field(init=False)
    image_token_id: int = field(init=False)
    eos_token_id: int = field(init=False)  # appended to every answer (the family's answer_end_token, else EOS)
    pad_token_id: int = field(init=False)
    stop_token_ids: list[int] = field(init=False)  # EOS + the family's turn markers: generation stops at any
    prefix_ids: list[int] = field(init=False, repr=False)  # template tokens before the image tokens
    suffix_ids: list[int] = field(init=False, repr=False)  # template tokens after them (prompt, assistant turn)
    patch_size: int = field(init=False)
    merge_size: int = field(init=False)
    temporal_patch_size: int = field(init=False)

    def __post_init__(self) -> None:
        if self.family is None:
            from ocr_ft.train.families import DEFAULT_FAMILY, get_family

            self.family = get_family(DEFAULT_FAMILY)
        fam = self.family
        tok = self.tokenizer
        self.image_token = getattr(tok, "image_token", None) or fam.image_token
        self.image_token_id = _token_id(tok, self.image_token, self.source)
        end = _optional_token_id(tok, fam.answer_end_token) if fam.answer_end_token else None
        if end is None and tok.eos_token_id is None:
            raise ValueError(f"tokenizer from {self.source or 'the base model'} has no EOS token")
        self.eos_token_id = end if end is not None else int(tok.eos_token_id)
        self.pad_token_id = int(tok.pad_token_id) if tok.pad_token_id is not None else self.eos_token_id
        stops = {self.eos_token_id} | ({int(tok.eos_token_id)} if tok.eos_token_id is not None else set())
        for t in fam.stop_tokens:
            tid = _optional_token_id(tok, t)
            if tid is not None:
                stops.add(tid)
        self.stop_token_ids = sorted(stops)
        text = render_prompt(tok, self.prompt, fam)
        if text.count(self.image_token) != 1:
            raise ValueError(
                f"the chat template of {self.source or 'the base model'} rendered {text.count(self.image_token)} "
                f"{self.image_token} tokens for one image (expected exactly one): {text!r}"
            )
        prefix, suffix = text.split(self.image_token)
        self.prefix_ids = tok.encode(prefix, add_special_tokens=False)
        self.suffix_ids = tok.encode(suffix, add_special_tokens=False)
        ip = self.image_processor
        self.patch_size = int(getattr(ip, "patch_size", None) or fam.default_patch_size)
        self.merge_size = int(getattr(ip, "merge_size", None) or fam.default_merge_size)
        self.temporal_patch_size = int(getattr(ip, "temporal_patch_size", None) or 2)

    @property
    def processor_size(self) -> dict[str, int]:
        """The image processor's ``size`` for the pixel cap (the family's; GLM-OCR's smart-resize compares
        ``temporal_patch_size * area`` to the bounds, so there the area bounds are scaled by it)."""
        return self.family.processor_size(self)

    @property
    def prompt_length(self) -> int:
        return len(self.prefix_ids) + len(self.suffix_ids)


def _optional_token_id(tokenizer: Any, token: str) -> int | None:
    """The id of ``token`` when the vocabulary has it (not unknown), else None."""
    tid = tokenizer.convert_tokens_to_ids(token)
    return tid if isinstance(tid, int) and tid != tokenizer.unk_token_id and tid >= 0 else None


def _token_id(tokenizer: Any, token: str, source: str) -> int:
    tid = tokenizer.convert_tokens_to_ids(token)
    if not isinstance(tid, int) or tid < 0 or (tokenizer.unk_token_id is not None and tid == tokenizer.unk_token_id):
        raise ValueError(f"tokenizer from {source or 'the base model'} has no {token} token")
    return tid


def prompt_messages(prompt: str) -> list[dict[str, Any]]:
    """The one user turn: the image first, then the prompt text (GLM-OCR's order)."""
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]


def render_prompt(tokenizer: Any, prompt: str, family: Any = None) -> str:
    """The generation prompt for one image and ``prompt``, via the tokenizer's chat template, rendered as a
    server renders it by default: ``add_generation_prompt=True`` and no template kwargs. ``family`` (default
    GLM-OCR) may render it itself (``render_prompt``) and says the message order and the fallback template."""
    if family is None:
        from ocr_ft.train.families import DEFAULT_FAMILY, get_family

        family = get_family(DEFAULT_FAMILY)
    if family.render_prompt is not None:
        return family.render_prompt(tokenizer, prompt)
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(family.messages(prompt), tokenize=False, add_generation_prompt=True)
    if family.fallback_template is None:
        raise ValueError(f"the tokenizer has no chat template and family {family.name!r} has no fallback template")
    return family.fallback_template.format(image=family.image_token, prompt=prompt)


# --------------------------------------------------------------------------- image geometry


def resized_size(bundle: ProcessorBundle, width: int, height: int) -> tuple[int, int]:
    """(height, width) the image processor resizes a ``width`` x ``height`` image to (same arithmetic)."""
    if bundle.family.resize is None:
        raise ImageSizeError(f"family {bundle.family.name!r} does not resize images dynamically")
    return bundle.family.resize(bundle, width, height)


def num_image_tokens(bundle: ProcessorBundle, width: int, height: int) -> int:
    """Image tokens for an image of this size under the bundle's pixel cap, from the size alone."""
    return bundle.family.image_tokens(bundle, width, height)


def count_tokens(bundle: ProcessorBundle, width: int, height: int, label: str) -> TokenCount:
    """Sequence length of one training sample: image tokens + template text + answer + EOS."""
    image = num_image_tokens(bundle, width, height)
    label_n = len(bundle.tokenizer.encode(answer_text(bundle, label), add_special_tokens=False)) + 1
    return TokenCount(image=image, prompt=bundle.prompt_length, label=label_n,
                      total=image + bundle.prompt_length + label_n)


def count_tokens_many(bundle: ProcessorBundle, sizes: Sequence[tuple[int, int]], labels: Sequence[str]) -> list[TokenCount]:
    """:func:`count_tokens` for many samples, tokenizing the labels in one batch. Raises ImageSizeError."""
    encoded = (bundle.tokenizer([answer_text(bundle, lb) for lb in labels], add_special_tokens=False)["input_ids"]
               if labels else [])
    out = []
    for (w, h), ids in zip(sizes, encoded):
        image = num_image_tokens(bundle, w, h)
        out.append(TokenCount(image, bundle.prompt_length, len(ids) + 1, image + bundle.prompt_length + len(ids) + 1))
    return out


def answer_text(bundle: ProcessorBundle, label: str) -> str:
    """The text the model is trained to write for the HTML ``label``: the family's target format, stripped."""
    return bundle.family.to_target(label.strip()).strip()


# --------------------------------------------------------------------------- images


def load_image(path: str | Path) -> Image.Image:
    """Decode an image file to RGB; transparent pixels are composited onto white."""
    with Image.open(path) as im:
        im.load()
        return to_rgb(im)


def to_rgb(image: Image.Image) -> Image.Image:
    """``image`` as 8-bit RGB (alpha composited on white). A 16-bit or 32-bit grey image is scaled to 8 bits,
    not clipped: PIL's own ``convert("RGB")`` turns a 16-bit scan into a white page."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(image)
        if image.mode.startswith("I;16") or (image.mode == "I" and arr.size and 255 < int(arr.max()) <= 65535):
            grey = (arr.astype(np.uint32) >> 8).astype(np.uint8)
        else:
            lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
            grey = (np.zeros(arr.shape, np.uint8) if hi <= lo
                    else ((arr.astype(np.float32) - lo) * (255.0 / (hi - lo))).astype(np.uint8))
        return Image.fromarray(grey, mode="L").convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, (255, 255, 255))
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return image.convert("RGB")


def image_fields(bundle: ProcessorBundle, image: Image.Image) -> tuple[dict[str, torch.Tensor], int]:
    """The family's image tensors (GLM-OCR, Qwen-VL: ``pixel_values`` + ``image_grid_thw``) for one image
    under the bundle's pixel cap, and its number of image tokens."""
    return bundle.family.process_image(bundle, to_rgb(image))


def process_image(bundle: ProcessorBundle, image: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
    """``(pixel_values, image_grid_thw)`` for one image under the bundle's pixel cap (dynamic-resolution
    families; :func:`image_fields` is the general form)."""
    fields_, _ = image_fields(bundle, image)
    return fields_["pixel_values"], fields_["image_grid_thw"]


# --------------------------------------------------------------------------- sequences


# Keys of an example that are not extra per-token fields.
_CORE_KEYS = ("input_ids", "labels", "attention_mask")


def _prompt_example(bundle: ProcessorBundle, image: Image.Image) -> dict[str, Any]:
    """``input_ids`` + the family's per-token fields (lists) + its image tensors, for the prompt of ``image``."""
    tensors, n = image_fields(bundle, image)
    ids, extra = bundle.family.prompt_fields(bundle, n)
    return {"input_ids": ids, **extra, **tensors}


def build_training_example(bundle: ProcessorBundle, image: Image.Image, label: str) -> dict[str, Any]:
    """One sample: ``input_ids``/``labels`` and the family's per-token fields (GLM-OCR: ``mm_token_type_ids``)
    as lists, plus the image tensors."""
    ex = _prompt_example(bundle, image)
    prompt_ids = ex.pop("input_ids")
    lead = bundle.tokenizer.encode(ANSWER_PREFIX, add_special_tokens=False) if ANSWER_PREFIX else []
    answer = bundle.tokenizer.encode(answer_text(bundle, label), add_special_tokens=False) + [bundle.eos_token_id]
    out: dict[str, Any] = {
        "input_ids": prompt_ids + lead + answer,
        "labels": [IGNORE_INDEX] * (len(prompt_ids) + len(lead)) + answer,
    }
    for k, v in ex.items():
        out[k] = list(v) + [0] * (len(lead) + len(answer)) if isinstance(v, list) else v
    return out


def build_prompt_inputs(bundle: ProcessorBundle, image: Image.Image) -> dict[str, torch.Tensor]:
    """Generation inputs (batch of one) for ``image``: pass them to ``model.generate(**inputs)``."""
    ex = _prompt_example(bundle, image)
    ids = ex.pop("input_ids")
    out = {"input_ids": torch.tensor([ids], dtype=torch.long), "attention_mask": torch.ones(1, len(ids), dtype=torch.long)}
    for k, v in ex.items():
        out[k] = torch.tensor([v], dtype=torch.long) if isinstance(v, list) else v
    return out


def collate(examples: Sequence[dict[str, Any]], pad_token_id: int, padding_side: str = "right") -> dict[str, torch.Tensor]:
    """Pad a list of examples (from :func:`build_training_example` or prompt-only dicts with list ids).

    ``input_ids`` are padded with ``pad_token_id``, ``labels`` with -100, every other list field (per-token,
    e.g. ``mm_token_type_ids``) with 0; tensor fields (image tensors) are concatenated on dim 0."""
    if not examples:
        raise ValueError("cannot collate an empty batch")
    longest = max(len(e["input_ids"]) for e in examples)
    has_labels = "labels" in examples[0]
    first = examples[0]
    token_keys = [k for k, v in first.items() if k not in _CORE_KEYS and isinstance(v, list)]
    tensor_keys = [k for k, v in first.items() if k not in _CORE_KEYS and not isinstance(v, list)]
    batch: dict[str, list] = {"input_ids": [], "attention_mask": [], **{k: [] for k in token_keys}}
    if has_labels:
        batch["labels"] = []
    for e in examples:
        n = len(e["input_ids"])
        pad = longest - n

        def padded(seq: list[int], value: int) -> list[int]:
            return list(seq) + [value] * pad if padding_side == "right" else [value] * pad + list(seq)

        batch["input_ids"].append(padded(e["input_ids"], pad_token_id))
        batch["attention_mask"].append(padded([1] * n, 0))
        for k in token_keys:
            batch[k].append(padded(e[k], 0))
        if has_labels:
            batch["labels"].append(padded(e["labels"], IGNORE_INDEX))
    out = {k: torch.tensor(v, dtype=torch.long) for k, v in batch.items()}
    for k in tensor_keys:
        out[k] = torch.cat([e[k] for e in examples], dim=0)
    return out


def build_generation_batch(bundle: ProcessorBundle, images: Sequence[Image.Image]) -> dict[str, torch.Tensor]:
    """Left-padded generation inputs for several images."""
    return collate([_prompt_example(bundle, image) for image in images], bundle.pad_token_id, padding_side="left")


class TrainingCollator:
    """Callable for a DataLoader: list of ``(image, label)`` pairs -> padded training batch."""

    def __init__(self, bundle: ProcessorBundle):
        self.bundle = bundle

    def __call__(self, items: Sequence[tuple[Image.Image, str]]) -> dict[str, torch.Tensor]:
        examples = [build_training_example(self.bundle, image, label) for image, label in items]
        return collate(examples, self.bundle.pad_token_id, padding_side="right")


def decode_generated(bundle: ProcessorBundle, sequences: torch.Tensor, prompt_length: int) -> list[str]:
    """Text of the generated part of ``model.generate`` output (special tokens dropped, whitespace stripped)."""
    return [
        bundle.tokenizer.decode(row[prompt_length:].tolist(), skip_special_tokens=True).strip()
        for row in sequences
    ]


def is_truncated(bundle: ProcessorBundle, generated: Sequence[int], max_new_tokens: int) -> bool:
    """Whether generation was cut off: ``max_new_tokens`` tokens were produced and none was a stop token."""
    stops = set(bundle.stop_token_ids)
    ids = [int(t) for t in generated]
    return len(ids) >= max_new_tokens and not any(t in stops for t in ids)


def decode_generated_raw(bundle: ProcessorBundle, sequences: torch.Tensor, prompt_length: int) -> list[str]:
    """The generated part with special tokens kept (think blocks, stop tokens), padding removed."""
    out = []
    for row in sequences:
        ids = row[prompt_length:].tolist()
        stop = next((k for k, t in enumerate(ids) if t in bundle.stop_token_ids), None)
        ids = ids if stop is None else ids[:stop + 1]  # up to the first stop token; padding after it dropped
        out.append(bundle.tokenizer.decode(ids, skip_special_tokens=False))
    return out
