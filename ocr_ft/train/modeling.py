"""Load a base model of any registered family (GLM-OCR by default; hub id or local directory), put LoRA on
it, generate, and merge adapters. What is model-specific comes from ``ocr_ft.train.families``.

Public entry points for the rest of the project:

* :func:`load_model_and_processor` - base model (optionally with a LoRA adapter) + :class:`ProcessorBundle`.
* :func:`load_finetuned` - the model a training run produced, from its output directory.
* :func:`generate_html` - greedy table HTML for PIL images (no repetition penalty).
* :func:`merge_adapter` - merge an adapter into a full model, checked against the adapter's outputs.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from ocr_ft.storage import atomic_dir, atomic_write_json
from ocr_ft.train.config import TrainConfig, load_config
from ocr_ft.train.inputs import (ProcessorBundle, build_generation_batch, decode_generated, decode_generated_raw,
                                 is_truncated, load_image)

MODEL_TYPE = "glm_ocr"  # the default family's model_type
_WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin", "*.safetensors.index.json")


class BaseModelError(RuntimeError):
    """The base model (or adapter) is missing, corrupt, or of no supported family; the message names it."""


# --------------------------------------------------------------------------- environment


def resolve_local_files_only(flag: bool | None = None) -> bool:
    """``flag`` if given, else true when ``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` is set to a true value."""
    if flag is not None:
        return flag
    return any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on")
               for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_dtype(precision: str, device: torch.device) -> torch.dtype:
    """``auto``: bf16 on a bf16-capable GPU, fp32 elsewhere; ``bf16`` / ``fp32`` as asked."""
    if precision == "fp32":
        return torch.float32
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def check_model_dir(path: str | Path) -> Path:
    """Fail clearly unless ``path`` is a readable model directory (config.json + weights) of a supported family."""
    p = Path(path).expanduser()
    if not p.is_dir():
        raise BaseModelError(f"base model directory not found: {p}")
    from ocr_ft.train.families import FAMILIES, UnknownFamilyError, read_model_type

    try:
        got = read_model_type(p)  # the messages name config.json as missing or unreadable
    except UnknownFamilyError as exc:
        raise BaseModelError(str(exc)) from None
    if not any(got in f.model_types for f in FAMILIES.values()):
        known = ", ".join(f"{f.name} ({'/'.join(f.model_types)})" for f in FAMILIES.values())
        raise BaseModelError(f"base model {p}: expected a GLM-OCR model (model_type {MODEL_TYPE!r}) or another "
                             f"supported family, got model_type {got!r}; supported families: {known}")
    if not any(any(p.glob(pattern)) for pattern in _WEIGHT_PATTERNS):
        raise BaseModelError(f"base model {p}: no weights found (expected model.safetensors or pytorch_model.bin)")
    return p


def resolve_base_model(base_model: str | Path) -> str:
    """``base_model`` as ``from_pretrained`` takes it: a family name (``glm_ocr``, ``qwen_vl``, ...) becomes its
    default hub id; a tiny preset name must be built first (the Dagster graph does it; the CLI with
    ``ocr-ft train tiny --preset NAME``) unless a directory of that name exists."""
    from ocr_ft.train.families import FAMILIES, family_by_preset

    base = str(base_model)
    if base in FAMILIES and not Path(base).exists():
        return FAMILIES[base].default_hub_id
    fam = family_by_preset(base)
    if fam is not None and not Path(base).exists():
        raise BaseModelError(
            f"base model {base!r} is the tiny {fam.title} preset, which is built, not downloaded: build it with "
            f"`ocr-ft train tiny --preset {base} --texts-from LABELS.jsonl --out DIR` and pass DIR (the Dagster "
            f"graph's tiny_base_model asset does this for `base_model: {base}`)")
    return base


def family_for(base_model: str | Path, local_files_only: bool | None = None) -> Any:
    """The :class:`ocr_ft.train.families.Family` of ``base_model``: by name, preset, default hub id, a local
    directory's config.json, or else the hub config's ``model_type``. Raises :class:`BaseModelError`."""
    from ocr_ft.train.families import UnknownFamilyError, family_for_model_type, family_of

    base = str(base_model)
    p = Path(base).expanduser()
    if p.exists() or base.startswith((".", "/", "~")):
        check_model_dir(p)
    try:
        return family_of(base)
    except UnknownFamilyError as exc:
        if p.exists():
            raise BaseModelError(str(exc)) from None
    from transformers import AutoConfig

    offline = resolve_local_files_only(local_files_only)
    try:
        hf_config = AutoConfig.from_pretrained(base, local_files_only=offline)
    except Exception as exc:  # noqa: BLE001
        raise _wrap(base, "config", exc, offline) from exc
    try:
        return family_for_model_type(getattr(hf_config, "model_type", None), f"base model {base!r}")
    except UnknownFamilyError as exc:
        raise BaseModelError(str(exc)) from None


def effective_prompt(config: TrainConfig, family: Any) -> str:
    """The prompt a run uses: ``config.prompt``, except that the seed default (GLM-OCR's ``Table Recognition:``)
    stands for "the family's own table prompt" when the base model is of another family."""
    from ocr_ft.train.families import DEFAULT_FAMILY, get_family

    default = get_family(DEFAULT_FAMILY).table_prompt
    if config.prompt == default and family.name != DEFAULT_FAMILY:
        return family.table_prompt
    return config.prompt


def _source(base_model: str | Path, local_files_only: bool) -> tuple[str, dict[str, Any]]:
    """Resolve ``base_model`` to what ``from_pretrained`` takes, checking local directories up front."""
    base = resolve_base_model(base_model)
    p = Path(base).expanduser()
    if p.exists() or base.startswith((".", "/", "~")):
        return str(check_model_dir(p)), {"local_files_only": True}
    return base, {"local_files_only": local_files_only}


def _wrap(base_model: str, what: str, exc: Exception, local_files_only: bool) -> BaseModelError:
    hint = " (offline: HF_HUB_OFFLINE / local_files_only is set, so only the local cache is used)" if local_files_only else ""
    return BaseModelError(f"could not load the {what} of base model {base_model!r}{hint}: {type(exc).__name__}: {exc}")


# --------------------------------------------------------------------------- loading


def load_processor(
    base_model: str | Path,
    config: TrainConfig | None = None,
    local_files_only: bool | None = None,
) -> ProcessorBundle:
    """Tokenizer + PIL/torchvision image processor of ``base_model`` with ``config``'s prompt and pixel cap."""
    from transformers import AutoImageProcessor, AutoTokenizer

    config = config or load_config()
    offline = resolve_local_files_only(config.local_files_only if local_files_only is None else local_files_only)
    src, kw = _source(base_model, offline)
    family = family_for(src, offline)
    try:
        tokenizer = AutoTokenizer.from_pretrained(src, **kw)
    except Exception as exc:  # noqa: BLE001 - re-raised with the model named
        raise _wrap(str(base_model), "tokenizer", exc, offline) from exc
    backend = None if config.image_backend == "auto" else config.image_backend
    try:
        if family.load_image_processor is not None:
            image_processor = family.load_image_processor(src, backend, kw)
        else:
            image_processor = AutoImageProcessor.from_pretrained(src, backend=backend, **kw)
    except Exception as exc:  # noqa: BLE001
        raise _wrap(str(base_model), "image processor (preprocessor_config.json)", exc, offline) from exc
    try:
        return ProcessorBundle(tokenizer, image_processor, effective_prompt(config, family), config.min_pixels,
                               config.max_pixels, source=str(base_model), family=family)
    except ValueError as exc:
        raise BaseModelError(str(exc)) from exc


def load_model_and_processor(
    base_model: str | Path,
    config: TrainConfig | None = None,
    adapter_dir: str | Path | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    local_files_only: bool | None = None,
) -> tuple[Any, ProcessorBundle]:
    """Load ``base_model`` (hub id, local dir or family name) for inference, with the LoRA adapter at
    ``adapter_dir`` if given.

    ``config`` supplies the prompt, pixel cap, precision and image backend (seed defaults when None; the seed
    prompt means the family's own). The model is in eval mode on ``device`` (CUDA when available). Raises
    :class:`BaseModelError` naming the model when it is missing, corrupt or of no supported family.
    """
    config = config or load_config()
    bundle = load_processor(base_model, config, local_files_only)
    dev = resolve_device(device)
    model = load_base_model(base_model, dtype or resolve_dtype(config.precision, dev), config, local_files_only)
    if adapter_dir is not None:
        model = attach_adapter(model, adapter_dir)
    model.to(dev).eval()
    _check_token_ids(model, bundle)
    return model, bundle


def load_base_model(base_model: str | Path, dtype: torch.dtype, config: TrainConfig | None = None,
                    local_files_only: bool | None = None, **load_kwargs: Any) -> Any:
    """The bare ``*ForConditionalGeneration`` of the family's Auto class (on CPU, in ``dtype``; ``load_kwargs``
    such as ``quantization_config`` / ``device_map`` go to ``from_pretrained``)."""
    import transformers
    from transformers import AutoConfig

    from ocr_ft.train.families import UnknownFamilyError, family_for_model_type

    config = config or load_config()
    offline = resolve_local_files_only(config.local_files_only if local_files_only is None else local_files_only)
    src, kw = _source(base_model, offline)
    try:
        hf_config = AutoConfig.from_pretrained(src, **kw)
    except Exception as exc:  # noqa: BLE001
        raise _wrap(str(base_model), "config", exc, offline) from exc
    try:
        family = family_for_model_type(getattr(hf_config, "model_type", None), f"base model {base_model!r}")
    except UnknownFamilyError as exc:
        raise BaseModelError(str(exc)) from None
    auto = getattr(transformers, family.auto_model_class)
    try:
        model = auto.from_pretrained(src, config=hf_config, dtype=dtype, **kw, **load_kwargs)
    except Exception as exc:  # noqa: BLE001
        raise _wrap(str(base_model), "weights", exc, offline) from exc
    return model


def _check_token_ids(model: Any, bundle: ProcessorBundle) -> None:
    want = getattr(unwrap_model(model).config, "image_token_id", None)
    if want is not None and want != bundle.image_token_id:
        raise BaseModelError(
            f"{bundle.source}: tokenizer's {bundle.image_token} is id {bundle.image_token_id} but the model "
            f"config says image_token_id={want}; tokenizer and weights do not belong together"
        )


def unwrap_model(model: Any) -> Any:
    """The ``*ForConditionalGeneration`` inside a PEFT wrapper (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def attach_adapter(model: Any, adapter_dir: str | Path, trainable: bool = False) -> Any:
    """Wrap ``model`` with the PEFT LoRA adapter saved at ``adapter_dir``."""
    from peft import PeftModel

    p = Path(adapter_dir)
    if not (p / "adapter_config.json").is_file():
        raise BaseModelError(f"LoRA adapter not found: {p} has no adapter_config.json")
    if not any(p.glob("adapter_model.*")):
        raise BaseModelError(f"LoRA adapter {p}: no adapter weights (adapter_model.safetensors)")
    try:
        return PeftModel.from_pretrained(model, str(p), is_trainable=trainable)
    except Exception as exc:  # noqa: BLE001
        raise BaseModelError(f"could not load LoRA adapter {p}: {type(exc).__name__}: {exc}") from exc


def load_finetuned(run_dir: str | Path, device: str | torch.device | None = None,
                   local_files_only: bool | None = None) -> tuple[Any, ProcessorBundle, TrainConfig]:
    """The model a :func:`ocr_ft.train.trainer.train` run produced: base + ``run_dir/adapter``, same prompt and
    pixel cap as training (read from ``run_dir/config.yaml``)."""
    run = Path(run_dir)
    if not (run / "config.yaml").is_file():
        raise BaseModelError(f"training run {run}: config.yaml is missing (not a finished training output?)")
    config = load_config(run / "config.yaml")
    model, bundle = load_model_and_processor(config.base_model, config, adapter_dir=run / "adapter",
                                             device=device, local_files_only=local_files_only)
    return model, bundle, config


# --------------------------------------------------------------------------- LoRA


# ``lora_targets`` -> the block sub-module whose linear layers get LoRA (None: every linear layer of the tower).
# Both towers of GLM-OCR and Qwen-VL name them ``*.self_attn``/``*.attn`` and ``*.mlp``.
_TARGET_SCOPES = {"all_linear": None, "attention": ("self_attn", "attn"), "mlp": ("mlp",)}


_PEFT_LAYER_TYPES = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Embedding)


def lora_target_regex(model: Any, vision_lora: bool = False, targets: str = "all_linear") -> str:
    """Regex (PEFT full-match on module names) selecting the linear layers of the language model, plus the
    vision tower's when ``vision_lora``. Scoped by module path: ``down_proj`` etc. exist in both towers.
    ``targets`` narrows the choice to the attention or the MLP layers of every block (``all_linear``: all)."""
    if targets not in _TARGET_SCOPES:
        raise BaseModelError(f"lora_targets must be one of {sorted(_TARGET_SCOPES)}, got {targets!r}")
    wanted = _TARGET_SCOPES[targets]
    base = unwrap_model(model)
    family = model_family(base)
    lm, vis = family.module(base, family.language_model_path), family.module(base, family.vision_tower_path)
    if lm is None or vis is None:
        raise BaseModelError(f"{type(base).__name__} has no {family.language_model_path} / "
                             f"{family.vision_tower_path}: not a {family.title} model")
    names = {id(m): n for n, m in base.named_modules()}
    parts = []
    scopes = [lm] + ([vis] if vision_lora else [])
    for scope in scopes:
        prefix = names[id(scope)]
        linears = [n for n, m in scope.named_modules() if isinstance(m, torch.nn.Linear) and "." in n]
        # modules PEFT cannot put LoRA on (blocks, norms, ...); a leaf pattern must not name one of them (a Conv the
        # pattern happens to name, like GLM-OCR's patch_embed.proj, PEFT adapts: kept as it always was)
        others = [f"{prefix}.{n}" for n, m in scope.named_modules() if n and not isinstance(m, _PEFT_LAYER_TYPES)]
        scope_parts = []
        if wanted is None:
            leaves = sorted({n.rsplit(".", 1)[-1] for n in linears})
            if leaves:
                scope_parts.append(rf"{re.escape(prefix)}\.(?:.*\.)?(?:{'|'.join(map(re.escape, leaves))})")
        else:
            for parent in wanted:
                leaves = sorted({n.rsplit(".", 1)[-1] for n in linears if n.rsplit(".", 2)[-2] == parent})
                if leaves:
                    scope_parts.append(rf"{re.escape(prefix)}\.(?:.*\.)?{re.escape(parent)}\.(?:{'|'.join(map(re.escape, leaves))})")
        compact = re.compile("^(?:" + "|".join(scope_parts) + ")$") if scope_parts else None
        if compact is not None and any(compact.match(n) for n in others):
            # a leaf name also names a module PEFT cannot adapt (Qwen-VL's merger is mlp.0 / mlp.2, and "0" is
            # also a vision block): list the selected linear layers by full name instead
            chosen = [n for n in linears if compact.match(f"{prefix}.{n}")]
            scope_parts = [rf"{re.escape(prefix)}\.(?:{'|'.join(map(re.escape, chosen))})"]
        parts += scope_parts
    if not parts:
        raise BaseModelError(f"lora_targets={targets!r} selects no linear layer of {type(base).__name__}")
    return "^(?:" + "|".join(parts) + ")$"


def model_family(model: Any) -> Any:
    """The family of a loaded model (PEFT-wrapped or bare), from its config's ``model_type``."""
    from ocr_ft.train.families import UnknownFamilyError, family_for_model_type

    base = unwrap_model(model)
    try:
        return family_for_model_type(getattr(base.config, "model_type", None), type(base).__name__)
    except UnknownFamilyError as exc:
        raise BaseModelError(str(exc)) from None


def apply_lora(model: Any, config: TrainConfig) -> Any:
    """Freeze ``model`` and add trainable LoRA adapters per ``config`` (rank, alpha, dropout, vision_lora,
    lora_targets)."""
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout, bias="none",
        target_modules=lora_target_regex(model, config.vision_lora, config.lora_targets), task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


def lora_module_names(model: Any) -> list[str]:
    """Names of the modules that carry LoRA weights."""
    from peft.tuners.lora import LoraLayer

    return [n for n, m in unwrap_model(model).named_modules() if isinstance(m, LoraLayer)]


# --------------------------------------------------------------------------- generation


@dataclass
class Generated:
    """One image's generation: ``text`` (special tokens dropped; a family with its own table format has its raw
    output converted to HTML here instead), ``raw`` (special tokens kept, unconverted), ``truncated`` (cut off at
    ``max_new_tokens`` before any stop token), ``new_tokens`` (generated, up to the first stop token)."""

    text: str
    raw: str
    truncated: bool
    new_tokens: int


@torch.no_grad()
def generate_outputs(model: Any, bundle: ProcessorBundle, images: Sequence[Any], max_new_tokens: int = 2048,
                     batch_size: int = 1) -> list[Generated]:
    """Greedy decoding (no sampling, no repetition penalty) from the default prompt, with truncation flags."""
    from transformers import GenerationConfig

    device = next(model.parameters()).device
    gen = GenerationConfig(
        max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, repetition_penalty=1.0,
        eos_token_id=bundle.stop_token_ids, pad_token_id=bundle.pad_token_id,
    )
    out: list[Generated] = []
    stops = set(bundle.stop_token_ids)
    for i in range(0, len(images), batch_size):
        chunk = [load_image(im) if isinstance(im, (str, Path)) else im for im in images[i:i + batch_size]]
        batch = {k: v.to(device) for k, v in build_generation_batch(bundle, chunk).items()}
        sequences = model.generate(**batch, generation_config=gen)
        n = batch["input_ids"].shape[1]
        texts = decode_generated(bundle, sequences, n)
        raws = decode_generated_raw(bundle, sequences, n)
        for row, text, raw in zip(sequences, texts, raws):
            # a family with its own format converts the raw decode: a real vocabulary may mark its format tags
            # (e.g. OTSL's <fcel>) special, and skip_special_tokens would drop them
            text = text if bundle.family.answer_format == "html" else answer_as_html(bundle, raw)
            ids = row[n:].tolist()
            stop = next((k for k, t in enumerate(ids) if t in stops), None)
            out.append(Generated(text, raw, is_truncated(bundle, ids, max_new_tokens),
                                 len(ids) if stop is None else stop + 1))
    return out


def answer_as_html(bundle: ProcessorBundle, text: str) -> str:
    """Decoded answer ``text`` in HTML: unchanged for HTML families, the family's format converted otherwise
    (``""`` when it does not convert)."""
    family = bundle.family
    if family.answer_format == "html":
        return text
    try:
        return family.to_html(text)
    except ValueError:
        return ""


def generate_html(model: Any, bundle: ProcessorBundle, images: Sequence[Any], max_new_tokens: int = 2048,
                  batch_size: int = 1) -> list[str]:
    """Greedy decoding (no sampling, no repetition penalty) of table HTML for PIL images or image paths."""
    return [g.text for g in generate_outputs(model, bundle, images, max_new_tokens, batch_size)]


# --------------------------------------------------------------------------- serving files


def serving_generation_config(bundle: ProcessorBundle, max_new_tokens: int | None = None) -> Any:
    """Greedy decoding that stops on EOS and the family's turn markers (what local evaluation uses)."""
    from transformers import GenerationConfig

    kw = {"max_new_tokens": max_new_tokens} if max_new_tokens else {}
    return GenerationConfig(eos_token_id=bundle.stop_token_ids, pad_token_id=bundle.pad_token_id,
                            do_sample=False, num_beams=1, repetition_penalty=1.0, **kw)


def save_serving_files(out_dir: str | Path, bundle: ProcessorBundle, max_new_tokens: int | None = None,
                       generation_config: bool = True) -> Path:
    """Write what a server needs to see the training format into ``out_dir`` (an adapter or merged model dir):

    * the tokenizer with its chat template (``chat_template.jinja``): the template training rendered;
    * ``preprocessor_config.json`` whose ``size`` is the training pixel budget (``min_pixels``/``max_pixels``,
      as the processor's ``shortest_edge``/``longest_edge``) plus ``min_pixels``/``max_pixels`` keys, so
      ``vllm serve`` resizes images to the training resolution (a fixed-view family writes its ``size`` only);
    * ``generation_config.json`` (greedy, stop tokens; ``generation_config=False`` leaves it out).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    bundle.tokenizer.save_pretrained(out)
    ip = bundle.image_processor
    old_size = getattr(ip, "size", None)
    try:
        ip.size = dict(bundle.processor_size)
        ip.save_pretrained(out)
    finally:
        ip.size = old_size
    path = out / "preprocessor_config.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    size = dict(bundle.processor_size)
    data["size"] = size
    if "shortest_edge" in size and "longest_edge" in size:  # area bounds (dynamic resolution); GOT: a fixed view
        data["min_pixels"], data["max_pixels"] = size["shortest_edge"], size["longest_edge"]
    data["ocr_ft_pixel_budget"] = {"min_pixels": bundle.min_pixels, "max_pixels": bundle.max_pixels}
    atomic_write_json(path, data)
    if generation_config:
        serving_generation_config(bundle, max_new_tokens).save_pretrained(out)
    return out


# --------------------------------------------------------------------------- merge


class MergeMismatchError(RuntimeError):
    """The merged model's greedy outputs differ from the adapter's."""


@dataclass
class MergeResult:
    out_dir: Path
    checked: int  # samples whose merged and adapter outputs were compared (all identical)
    outputs: list[str]


def merge_adapter(
    base_model: str | Path,
    adapter_dir: str | Path,
    out_dir: str | Path,
    check_records: Sequence[Any] = (),
    data_dir: str | Path | None = None,
    config: TrainConfig | None = None,
    max_new_tokens: int = 256,
    save_dtype: torch.dtype = torch.float32,
) -> MergeResult:
    """Merge the LoRA adapter into ``base_model`` and save a standalone model directory at ``out_dir``.

    Merging happens in fp32. When ``check_records`` (records or dicts with ``image_path`` relative to
    ``data_dir``, or PIL images) are given, the saved merged model is reloaded and its greedy outputs must equal
    the adapter model's on each; otherwise :class:`MergeMismatchError` is raised and ``out_dir`` is not
    written.
    """
    config = config or load_config()
    config = config.replace(precision="fp32")
    model, bundle = load_model_and_processor(base_model, config, adapter_dir=adapter_dir, device="cpu",
                                             dtype=torch.float32)
    images = [_check_image(r, data_dir) for r in check_records]
    expected = generate_html(model, bundle, images, max_new_tokens) if images else []
    merged = model.merge_and_unload()
    out = Path(out_dir)
    with atomic_dir(out) as tmp:
        merged.to(save_dtype).save_pretrained(tmp)
        save_serving_files(tmp, bundle, max_new_tokens=None)
        if images:
            reloaded, rb = load_model_and_processor(tmp, config, device="cpu", dtype=save_dtype)
            got = generate_html(reloaded, rb, images, max_new_tokens)
            bad = [i for i, (a, b) in enumerate(zip(expected, got)) if a != b]
            if bad:
                i = bad[0]
                raise MergeMismatchError(
                    f"merged model differs from adapter {adapter_dir} on {len(bad)}/{len(images)} check samples; "
                    f"first (#{i}): adapter={expected[i][:200]!r} merged={got[i][:200]!r}"
                )
        atomic_write_json(tmp / "merge_manifest.json", {
            "base_model": str(base_model), "adapter_dir": str(adapter_dir), "checked_samples": len(images),
            "save_dtype": str(save_dtype).replace("torch.", ""),
        })
    return MergeResult(out, len(images), expected)


def _check_image(item: Any, data_dir: str | Path | None) -> Any:
    if hasattr(item, "size") and hasattr(item, "mode"):  # a PIL image
        return item
    rel = item["image_path"] if isinstance(item, dict) else item.image_path
    p = Path(rel)
    if not p.is_absolute():
        if data_dir is None:
            raise ValueError(f"check record image {rel!r} is relative but no data_dir was given")
        p = Path(data_dir) / p
    return load_image(p)
