"""Token budgets and the training plan (``--dry-run``): what would be trained, without training.

Every sample's length is computed before training: image tokens (from the image size under the fixed pixel
cap, no pixel decoding needed) + chat-template tokens + label tokens + EOS. Samples longer than
``max_seq_len`` are left out and reported with their size, never truncated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from PIL import Image

from ocr_ft.train.config import TrainConfig
from ocr_ft.train.inputs import (ImageSizeError, ProcessorBundle, TokenCount, answer_text, count_tokens_many,
                                 num_image_tokens)


def field_of(record: Any, key: str, default: Any = None) -> Any:
    """``record[key]`` for dicts, ``record.key`` for :class:`ocr_ft.dataset.records.Record`."""
    if isinstance(record, dict):
        return record.get(key, default)
    return getattr(record, key, default)


def sample_name(record: Any) -> str:
    meta = field_of(record, "metadata") or {}
    return str(meta.get("original_filename") or field_of(record, "image_path") or "?")


def image_file(record: Any, data_dir: str | Path) -> Path:
    rel = field_of(record, "image_path")
    if not rel:
        raise ValueError(f"record {sample_name(record)!r} has no image_path")
    p = Path(rel)
    return p if p.is_absolute() else Path(data_dir) / p


@dataclass
class LeftOut:
    name: str
    image_path: str
    reason: str  # image_missing | image_unreadable | image_size | label_format | over_budget | empty_label
    detail: str
    tokens: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "image_path": self.image_path, "reason": self.reason, "detail": self.detail,
                "tokens": self.tokens}


@dataclass
class BudgetReport:
    """Samples that fit (with their token counts, in input order) and those left out (with why)."""

    kept: list[Any] = field(default_factory=list)
    counts: list[TokenCount] = field(default_factory=list)
    left_out: list[LeftOut] = field(default_factory=list)

    def stats(self) -> dict[str, Any]:
        totals = [c.total for c in self.counts]
        return {
            "kept": len(self.kept),
            "left_out": len(self.left_out),
            "max_tokens": max(totals) if totals else 0,
            "mean_tokens": round(sum(totals) / len(totals), 1) if totals else 0.0,
            "max_image_tokens": max((c.image for c in self.counts), default=0),
            "total_tokens": sum(totals),
        }


def check_budget(bundle: ProcessorBundle, records: Sequence[Any], data_dir: str | Path, max_seq_len: int,
                 decode: bool = False) -> BudgetReport:
    """Split ``records`` into those whose full sequence fits ``max_seq_len`` and those left out.

    The image size is read from the file header (``decode=True`` also decodes the pixels, to prove the file
    is a readable image).
    """
    report = BudgetReport()
    pending: list[tuple[Any, tuple[int, int]]] = []
    for r in records:
        name = sample_name(r)
        if not field_of(r, "image_path"):
            report.left_out.append(LeftOut(name, "", "image_missing", "record has no image_path"))
            continue
        path = image_file(r, data_dir)
        label = field_of(r, "ground_truth_html") or ""
        if not label.strip():
            report.left_out.append(LeftOut(name, str(path), "empty_label", "ground_truth_html is empty"))
            continue
        if not path.is_file():
            report.left_out.append(LeftOut(name, str(path), "image_missing", f"no file at {path}"))
            continue
        try:
            with Image.open(path) as im:
                size = im.size
                if decode:
                    im.load()
        except Exception as exc:  # noqa: BLE001 - any decoder failure means the sample cannot be used
            report.left_out.append(LeftOut(name, str(path), "image_unreadable", f"{type(exc).__name__}: {exc}"))
            continue
        pending.append((r, size))
    sized: list[tuple[Any, tuple[int, int]]] = []
    for r, size in pending:
        try:
            num_image_tokens(bundle, *size)
        except ImageSizeError as exc:
            report.left_out.append(LeftOut(sample_name(r), str(image_file(r, data_dir)), "image_size", str(exc)))
            continue
        try:  # a family with its own table format may not hold every label (e.g. OTSL: one table per answer)
            answer_text(bundle, field_of(r, "ground_truth_html"))
        except ValueError as exc:
            report.left_out.append(LeftOut(sample_name(r), str(image_file(r, data_dir)), "label_format",
                                           f"label cannot be written as {bundle.family.answer_format}: {exc}"))
            continue
        sized.append((r, size))
    counts = count_tokens_many(bundle, [s for _, s in sized], [field_of(r, "ground_truth_html") for r, _ in sized])
    for (r, _), c in zip(sized, counts):
        if c.total > max_seq_len:
            report.left_out.append(LeftOut(
                sample_name(r), str(image_file(r, data_dir)), "over_budget",
                f"{c.total} tokens (image {c.image} + prompt {c.prompt} + label {c.label}) > max_seq_len "
                f"{max_seq_len}", c.total,
            ))
        else:
            report.kept.append(r)
            report.counts.append(c)
    return report


def schedule_numbers(n_samples: int, config: TrainConfig) -> dict[str, int]:
    """Micro-batches and optimizer steps implied by ``n_samples`` training samples under ``config``."""
    micro = math.ceil(n_samples / config.per_device_batch_size)
    steps_per_epoch = math.ceil(micro / config.gradient_accumulation_steps)
    total = config.max_steps if config.max_steps is not None else steps_per_epoch * config.num_epochs
    return {
        "micro_batches_per_epoch": micro,
        "steps_per_epoch": steps_per_epoch,
        "total_steps": total,
        "warmup_steps": math.ceil(config.warmup_ratio * total),
    }


@dataclass
class TrainPlan:
    config: TrainConfig
    train: BudgetReport
    val: BudgetReport
    numbers: dict[str, int]
    family: str = ""  # the base model's family (ocr_ft.train.families)
    prompt: str = ""  # the prompt the run trains with (the family's own for the seed default)

    @property
    def total_steps(self) -> int:
        return self.numbers["total_steps"]

    @property
    def steps_per_epoch(self) -> int:
        return self.numbers["steps_per_epoch"]

    def to_dict(self) -> dict[str, Any]:
        c = self.config
        return {
            "base_model": c.base_model,
            "family": self.family,
            "prompt": self.prompt,
            "train": self.train.stats(),
            "val": self.val.stats(),
            "left_out": {"train": [x.to_dict() for x in self.train.left_out],
                         "val": [x.to_dict() for x in self.val.left_out]},
            "epochs": c.num_epochs,
            "per_device_batch_size": c.per_device_batch_size,
            "gradient_accumulation_steps": c.gradient_accumulation_steps,
            "effective_batch_size": c.effective_batch_size,
            "max_seq_len": c.max_seq_len,
            "max_pixels": c.max_pixels,
            "max_image_tokens": c.max_image_tokens,
            **self.numbers,
        }

    def format(self) -> str:
        d = self.to_dict()
        lines = [
            f"base model        {d['base_model']}" + (f" ({d['family']}, prompt {d['prompt']!r})" if d["family"] else ""),
            f"train samples     {d['train']['kept']} kept, {d['train']['left_out']} left out "
            f"(max {d['train']['max_tokens']} tokens, mean {d['train']['mean_tokens']})",
            f"val samples       {d['val']['kept']} kept, {d['val']['left_out']} left out",
            f"batch             {d['per_device_batch_size']} x {d['gradient_accumulation_steps']} accumulation "
            f"= {d['effective_batch_size']} effective",
            f"steps             {d['steps_per_epoch']} per epoch x {d['epochs']} epochs -> {d['total_steps']} total "
            f"({d['warmup_steps']} warmup)",
            f"token budget      max_seq_len {d['max_seq_len']}, image cap {d['max_pixels']} px = "
            f"{d['max_image_tokens']} tokens",
        ]
        for split, rows in d["left_out"].items():
            for x in rows:
                lines.append(f"left out ({split}) {x['name']}: {x['reason']} - {x['detail']}")
        return "\n".join(lines)


def plan(config: TrainConfig, records: Sequence[Any], data_dir: str | Path, val_records: Sequence[Any] = (),
         bundle: ProcessorBundle | None = None) -> TrainPlan:
    """Check data (images exist and decode), config and token budgets; return the plan without training.

    Loads only the tokenizer and image processor of ``config.base_model`` (no weights) unless ``bundle`` is
    given.
    """
    if bundle is None:
        from ocr_ft.train.modeling import load_processor

        bundle = load_processor(config.base_model, config)
    train = check_budget(bundle, records, data_dir, config.max_seq_len, decode=True)
    val = check_budget(bundle, val_records, data_dir, config.max_seq_len, decode=True)
    return TrainPlan(config, train, val, schedule_numbers(len(train.kept), config), bundle.family.name, bundle.prompt)


def generation_budget(tokenizer: Any, labels: Sequence[str], margin: float = 0.25, minimum: int = 64) -> int:
    """``max_new_tokens`` for evaluation: the longest label in tokens (+ EOS), plus ``margin`` (a fraction),
    at least ``minimum``. One number for local and endpoint evaluation, so no output is cut off because the
    budget was smaller than the truth (a cut-off output is then a real runaway, flagged ``truncated``)."""
    if margin < 0:
        raise ValueError(f"generation_budget: margin must be >= 0, got {margin}")
    texts = [lb.strip() for lb in labels if lb and lb.strip()]
    longest = max((len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]), default=0) if texts else 0
    return max(minimum, math.ceil((longest + 1) * (1 + margin)))
