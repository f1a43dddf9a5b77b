"""Padding-free packing: a micro-batch's samples concatenated into one row, no padding, no attention mask.

With ``packing: true`` the :class:`PackingCollator` lays the samples of a micro-batch end to end in a single
row (batch 1): ``input_ids``, ``labels`` and ``mm_token_type_ids`` are the samples' own lists concatenated,
``pixel_values`` / ``image_grid_thw`` the images in the same order, and ``packed_lengths`` the length of each
sample. :func:`prepare_packed_batch` (called by the trainer's loss on every batch, a no-op on padded ones)
turns ``packed_lengths`` into the position ids the model needs, computed sample by sample:

* rows 1-3: the multimodal RoPE positions (temporal, height, width) the model's own ``get_rope_index``
  gives for that sample alone, so every sample's positions restart at 0 exactly as in a padded batch;
* row 0: the text positions ``0 .. len-1`` of each sample.  GLM-OCR's text model (transformers 5.x) takes a
  ``[4, batch, seq]`` tensor as "packed": it uses rows 1-3 for the rotary embedding and hands row 0 to the
  mask builder.  With no attention mask and no cache, ``masking_utils`` finds the sample boundaries where
  row 0 does not go up by one (``find_packed_sequence_indices``) and builds a block-diagonal causal mask for
  eager / sdpa; flash-attention gets row 0 as ``position_ids`` and runs variable-length attention with
  sequence starts where it is 0.  No sample attends to another.

The vision tower is unchanged: it runs every image on its own (``cu_seqlens`` from ``image_grid_thw``), in a
packed batch as in a padded one.  The first label of every sample is -100 (it is the prompt), so the last
token of one sample never predicts the first token of the next.

What it saves: the padded grid (micro-batch size x longest sample) becomes the sum of the sample lengths;
the summed answer loss and the LoRA gradients are the padded batch's (``ocr_ft_tests/train/test_packing.py``).
A model family that cannot take packed positions is refused by :func:`check_packing` before training.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from ocr_ft.train.inputs import IGNORE_INDEX, ProcessorBundle, build_training_example

PACKED_LENGTHS = "packed_lengths"
# Attention implementation registered by this module (see :func:`prepare_model_for_packing`): sdpa run on each
# packed sample on its own (causal kernel, no mask) instead of one masked attention over the whole row.
PACKED_SDPA = "ocr_ft_packed_sdpa"
# Model types whose text model reads packed sequences from a [4, batch, seq] position tensor (text row first)
# and whose ``model.get_rope_index`` gives one sample's multimodal positions (checked in transformers 5.23's
# modeling_glm_ocr.py: GlmOcrTextModel.forward and GlmOcrModel.get_rope_index).
PACKING_MODEL_TYPES = frozenset({"glm_ocr"})
# Attention implementations that turn packed position ids into a block-diagonal mask (masking_utils for
# eager / sdpa, the varlen kernels for flash-attention).
PACKING_ATTENTION = frozenset({"eager", "sdpa", "flash_attention_2", "flash_attention_3", PACKED_SDPA})


def supports_packing(model: Any) -> tuple[bool, str]:
    """(whether ``model`` (a transformers model, PEFT-wrapped or not) can train on packed batches, why not)."""
    from ocr_ft.train.modeling import unwrap_model

    base = unwrap_model(model)
    cfg = getattr(base, "config", None)
    model_type = getattr(cfg, "model_type", None)
    if model_type not in PACKING_MODEL_TYPES:
        return False, (f"model type {model_type!r} has no packed-sequence support here (supported: "
                       f"{', '.join(sorted(PACKING_MODEL_TYPES))})")
    if not callable(getattr(getattr(base, "model", None), "get_rope_index", None)):
        return False, f"{type(base).__name__} has no model.get_rope_index to compute per-sample positions"
    text_cfg = getattr(cfg, "text_config", cfg)
    attn = getattr(text_cfg, "_attn_implementation", None) or getattr(cfg, "_attn_implementation", None)
    if attn is not None and attn not in PACKING_ATTENTION:
        return False, (f"attention implementation {attn!r} is not known to mask packed sequences (supported: "
                       f"{', '.join(sorted(PACKING_ATTENTION))})")
    return True, ""


def check_packing(model: Any) -> None:
    """Raise a ValueError naming the reason when ``packing: true`` cannot run on ``model``."""
    ok, why = supports_packing(model)
    if not ok:
        raise ValueError(f"packing: true is not possible for this base model: {why}. Set packing: false "
                         f"(group_by_length: true also cuts padding)")


# --------------------------------------------------------------------------- per-sample sdpa


def packed_sdpa_attention(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                          attention_mask: torch.Tensor | None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """transformers' sdpa attention, but a packed row (batch 1, no mask, text positions restarting at 0) is
    attended sample by sample with the causal kernel: attention costs the sum of the squared sample lengths,
    not the square of the row, and no row x row mask is built. Anything else goes to the stock sdpa."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    pos = kwargs.get("position_ids")
    if attention_mask is None and pos is not None and query.shape[0] == 1 and query.shape[2] == key.shape[2] > 1:
        starts = (pos.reshape(-1) == 0).nonzero().flatten().tolist()
        if len(starts) > 1 and starts[0] == 0:
            bounds = starts + [query.shape[2]]
            rest = {k: v for k, v in kwargs.items() if k != "position_ids"}
            outs = [sdpa_attention_forward(module, query[:, :, a:b], key[:, :, a:b], value[:, :, a:b], None,
                                           **rest)[0] for a, b in zip(bounds, bounds[1:])]
            return torch.cat(outs, dim=1), None
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


def packed_sdpa_mask(*args: Any, **kwargs: Any) -> torch.Tensor | None:
    """The mask for :data:`PACKED_SDPA`: none without a padding mask (causality and sample boundaries are the
    attention function's), transformers' sdpa mask with one."""
    from transformers.masking_utils import sdpa_mask

    if kwargs.get("attention_mask") is None:
        return None
    return sdpa_mask(*args, **kwargs)


def _register_packed_sdpa() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(PACKED_SDPA, packed_sdpa_attention)
    AttentionMaskInterface.register(PACKED_SDPA, packed_sdpa_mask)


def prepare_model_for_packing(model: Any) -> str:
    """Check that ``model`` can pack (ValueError otherwise) and, when its language model uses sdpa, switch that
    (not the vision tower) to :data:`PACKED_SDPA`. Returns the language model's attention implementation."""
    from ocr_ft.train.modeling import unwrap_model

    check_packing(model)
    base = unwrap_model(model)
    text_cfg = getattr(base.config, "text_config", base.config)
    if getattr(text_cfg, "_attn_implementation", None) == "sdpa":
        _register_packed_sdpa()
        base.set_attn_implementation({"text_config": PACKED_SDPA})
    return text_cfg._attn_implementation


def pack_examples(examples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """One packed row (batch 1) from examples of :func:`ocr_ft.train.inputs.build_training_example`."""
    if not examples:
        raise ValueError("cannot pack an empty batch")
    ids: list[int] = []
    labels: list[int] = []
    mm: list[int] = []
    for e in examples:
        n = len(e["input_ids"])
        if not n or len(e["labels"]) != n or len(e["mm_token_type_ids"]) != n:
            raise ValueError(f"cannot pack an example with {n} input ids, {len(e['labels'])} labels and "
                             f"{len(e['mm_token_type_ids'])} token types (all must be equal and non-zero)")
        ids += e["input_ids"]
        labels += [IGNORE_INDEX] + list(e["labels"][1:])  # the first token predicts nothing across samples
        mm += e["mm_token_type_ids"]
    return {
        "input_ids": torch.tensor([ids], dtype=torch.long),
        "labels": torch.tensor([labels], dtype=torch.long),
        "mm_token_type_ids": torch.tensor([mm], dtype=torch.long),
        "pixel_values": torch.cat([e["pixel_values"] for e in examples], dim=0),
        "image_grid_thw": torch.cat([e["image_grid_thw"] for e in examples], dim=0),
        PACKED_LENGTHS: torch.tensor([len(e["input_ids"]) for e in examples], dtype=torch.long),
    }


class PackingCollator:
    """Callable for a DataLoader: list of ``(image, label)`` pairs -> one packed row (module docstring)."""

    def __init__(self, bundle: ProcessorBundle):
        self.bundle = bundle

    def __call__(self, items: Sequence[tuple[Any, str]]) -> dict[str, torch.Tensor]:
        return pack_examples([build_training_example(self.bundle, image, label) for image, label in items])


def _image_runs(token_types: torch.Tensor) -> int:
    """Number of images in one sample: runs of image tokens (type 1) in its ``mm_token_type_ids``."""
    img = token_types == 1
    if not img.numel():
        return 0
    return int(img[0]) + int((img[1:] & ~img[:-1]).sum())


def packed_position_ids(base_model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """``[4, 1, total]`` position ids of a packed row: text positions, then each sample's multimodal RoPE
    positions from ``base_model.model.get_rope_index`` on that sample alone."""
    ids, types = batch["input_ids"], batch["mm_token_type_ids"]
    lengths = [int(n) for n in batch[PACKED_LENGTHS].tolist()]
    if ids.shape[0] != 1 or sum(lengths) != ids.shape[1]:
        raise ValueError(f"packed batch: input_ids of shape {tuple(ids.shape)} do not hold one row of the "
                         f"samples' lengths {lengths} (sum {sum(lengths)})")
    grids = batch.get("image_grid_thw")
    rope, text, start, image = [], [], 0, 0
    for n in lengths:
        seg_types = types[:, start:start + n]
        k = _image_runs(seg_types[0])
        grid = grids[image:image + k] if k else None
        if k and (grids is None or grid.shape[0] != k):
            raise ValueError(f"packed batch: sample at offset {start} has {k} image(s) but image_grid_thw has "
                             f"{0 if grids is None else grids.shape[0] - image} left")
        pos, _ = base_model.model.get_rope_index(ids[:, start:start + n], seg_types, image_grid_thw=grid)
        rope.append(pos)
        text.append(torch.arange(n, device=ids.device, dtype=pos.dtype))
        start, image = start + n, image + k
    return torch.cat([torch.cat(text)[None, None], torch.cat(rope, dim=-1)], dim=0)


def prepare_packed_batch(base_model: Any, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``batch`` itself when it is padded; for a packed one, the model inputs: ``packed_lengths`` replaced by
    the per-sample ``position_ids`` (and no attention mask, so the mask is built from them)."""
    if PACKED_LENGTHS not in batch:
        return batch
    if batch.get("attention_mask") is not None:
        raise ValueError("a packed batch must not carry an attention_mask: the mask comes from its position ids")
    out = {k: v for k, v in batch.items() if k != PACKED_LENGTHS}
    out["position_ids"] = packed_position_ids(base_model, batch)
    return out


def token_counts(batch_lists: Sequence[Sequence[int]], lengths: Sequence[int], packed: bool) -> dict[str, Any]:
    """Real tokens, the token grid the model ran on, and the padding share of it for these micro-batches.

    Padded: each micro-batch is ``len(batch) x longest``; packed: the sum of its lengths (no padding)."""
    real = sum(lengths[i] for b in batch_lists for i in b)
    grid = real if packed else sum(len(b) * max(lengths[i] for i in b) for b in batch_lists if b)
    return {"real_tokens": real, "grid_tokens": grid, "padding_tokens": grid - real,
            "padding_fraction": 1.0 - real / grid if grid else 0.0}
