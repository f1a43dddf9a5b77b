"""Training configuration: one dataclass, loaded from YAML, validated with errors that name the bad key.

``load_config()`` starts from ``default.yaml`` (the seed recipe), overlays an optional YAML file, then keyword
overrides. Unknown keys and bad values raise :class:`ConfigError` naming the key, the value and where it
came from.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Mapping

import yaml

from ocr_ft.storage import atomic_write_text, sha256_json

DEFAULT_CONFIG_PATH = Path(__file__).with_name("default.yaml")
TINY_CONFIG_PATH = Path(__file__).with_name("tiny.yaml")

# Image geometry shared by GLM-OCR and the tiny preset: 14-px patches merged 2x2 into one language-model token.
PATCH_SIZE = 14
MERGE_SIZE = 2
PIXELS_PER_TOKEN = (PATCH_SIZE * MERGE_SIZE) ** 2  # 784

# Keys that change how a run is operated or observed, not what it computes: they are left out of the
# fingerprint, so changing them does not stop a run from resuming.
OPERATIONAL_KEYS = frozenset(
    {"save_steps", "save_total_limit", "logging_steps", "eval_steps", "max_eval_samples", "eval_at_start",
     "dataloader_workers", "local_files_only", "resume", "report_to", "nproc", "distributed"}
)


class ConfigError(ValueError):
    """A training configuration key or value is wrong; the message names it."""


@dataclass(frozen=True)
class TrainConfig:
    """Every knob of a LoRA fine-tune of a base model (GLM-OCR by default; any family of
    ``ocr_ft.train.families``). Defaults are the seed recipe (``default.yaml``)."""

    base_model: str = "zai-org/GLM-OCR"  # hub id, local model directory, or family name (-> its default hub id)
    prompt: str = "Table Recognition:"  # user text with the image; this seed default = the family's own prompt
    lora_rank: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    vision_lora: bool = False  # also put LoRA on the vision tower's linear layers (frozen otherwise)
    lora_targets: str = "all_linear"  # all_linear | attention | mlp: which linear layers of each block get LoRA
    learning_rate: float = 1e-4
    lr_scheduler: str = "cosine"  # cosine | linear | constant (all with linear warmup)
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0  # 0 disables clipping
    num_epochs: int = 3
    max_steps: int | None = None  # train exactly this many optimizer steps, overriding num_epochs
    per_device_batch_size: int = 2
    gradient_accumulation_steps: int = 8
    precision: str = "auto"  # auto (bf16 on a bf16-capable GPU, else fp32) | bf16 | fp32
    gradient_checkpointing: bool = True
    max_seq_len: int = 4096  # image + prompt + label tokens; longer samples are left out, never truncated
    max_pixels: int = 1_605_632  # cap on the resized image area; tokens <= max_pixels / 784 (bar very thin images)
    min_pixels: int = 12_544  # floor on the resized image area (pixels)
    image_backend: str = "pil"  # pil | torchvision | auto
    save_steps: int = 200  # checkpoint every N optimizer steps
    save_total_limit: int = 2  # checkpoints kept
    logging_steps: int = 10
    eval_steps: int | None = 200  # eval loss every N steps (None: only at start and end)
    max_eval_samples: int = 200  # eval loss on at most this many validation samples (0: no eval)
    eval_at_start: bool = True  # eval loss of the untouched base model at step 0
    seed: int = 42
    dataloader_workers: int = 2
    local_files_only: bool | None = None  # None: follow HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE
    resume: bool = True  # resume from the newest checkpoint in the output directory
    group_by_length: bool = False  # micro-batches of similar total token count (less padding), order still seeded
    packing: bool = False  # each micro-batch's samples in one row, no padding (ocr_ft.train.packing)
    report_to: str = "tensorboard"  # tensorboard (event files under <run>/tensorboard) | mlflow | wandb | none; or a
    # comma list such as "tensorboard,mlflow"
    quantization: str = "none"  # none | 4bit: QLoRA, frozen base in bitsandbytes NF4 (CUDA GPU only)
    nproc: int = 1  # processes (one per GPU; gloo CPU processes without one) launched with torchrun when > 1
    distributed: str = "ddp"  # ddp | fsdp | deepspeed_zero2 | deepspeed_zero3: how several processes share the work

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def effective_batch_size(self) -> int:
        return self.per_device_batch_size * self.gradient_accumulation_steps

    @property
    def max_image_tokens(self) -> int:
        return self.max_pixels // PIXELS_PER_TOKEN

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def fingerprint(self) -> str:
        """SHA-256 of the keys that change what training computes (not the operational ones)."""
        return sha256_json({k: v for k, v in self.to_dict().items() if k not in OPERATIONAL_KEYS})

    def replace(self, **changes: Any) -> "TrainConfig":
        return _build({**self.to_dict(), **changes}, source="replace()")

    def save(self, path: str | Path) -> Path:
        text = yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)
        return atomic_write_text(path, text)


_FIELDS = {f.name: f for f in fields(TrainConfig)}
_CHOICES = {
    "lr_scheduler": ("cosine", "linear", "constant"),
    "precision": ("auto", "bf16", "fp32"),
    "image_backend": ("pil", "torchvision", "auto"),
    "quantization": ("none", "4bit"),
    "lora_targets": ("all_linear", "attention", "mlp"),
    "distributed": ("ddp", "fsdp", "deepspeed_zero2", "deepspeed_zero3"),
}
REPORT_TO = ("tensorboard", "mlflow", "wandb", "none")
_FLOAT_KEYS = {"lora_dropout", "learning_rate", "warmup_ratio", "weight_decay", "max_grad_norm"}
_BOOL_KEYS = {"vision_lora", "gradient_checkpointing", "eval_at_start", "resume", "group_by_length",
              "packing"}
_OPTIONAL_BOOL_KEYS = {"local_files_only"}
_STR_KEYS = {"base_model", "prompt", "lr_scheduler", "precision", "image_backend", "report_to", "quantization",
            "lora_targets", "distributed"}
_OPTIONAL_INT_KEYS = {"max_steps", "eval_steps"}


def _coerce(key: str, value: Any, source: str) -> Any:
    def bad(expected: str) -> ConfigError:
        return ConfigError(f"{source}: {key} must be {expected}, got {value!r}")

    if key in _BOOL_KEYS or key in _OPTIONAL_BOOL_KEYS:
        if value is None and key in _OPTIONAL_BOOL_KEYS:
            return None
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if key in _STR_KEYS:
        if not isinstance(value, str) or not value.strip():
            raise bad("a non-empty string")
        return value
    if key in _FLOAT_KEYS:
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise bad("a number") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise bad("a finite number")
        return float(value)
    # integers
    if value is None and key in _OPTIONAL_INT_KEYS:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad("an integer" + (" or null" if key in _OPTIONAL_INT_KEYS else ""))
    return value


def _validate(cfg: TrainConfig) -> None:
    def check(ok: bool, key: str, rule: str) -> None:
        if not ok:
            raise ConfigError(f"{key} {rule}, got {getattr(cfg, key)!r}")

    for key, choices in _CHOICES.items():
        check(getattr(cfg, key) in choices, key, f"must be one of {', '.join(choices)}")
    bad = [r for r in report_targets(cfg.report_to) if r not in REPORT_TO]
    if bad or (len(report_targets(cfg.report_to)) > 1 and "none" in report_targets(cfg.report_to)):
        raise ConfigError(f"report_to must be one of {', '.join(REPORT_TO)} (or a comma list of the first three), "
                          f"got {cfg.report_to!r}")
    for key in ("lora_rank", "lora_alpha", "num_epochs", "per_device_batch_size", "gradient_accumulation_steps",
                "max_seq_len", "save_steps", "save_total_limit", "logging_steps", "nproc"):
        check(getattr(cfg, key) >= 1, key, "must be >= 1")
    for key in ("max_steps", "eval_steps"):
        check(getattr(cfg, key) is None or getattr(cfg, key) >= 1, key, "must be >= 1 or null")
    check(0.0 <= cfg.lora_dropout < 1.0, "lora_dropout", "must be in [0, 1)")
    check(cfg.learning_rate > 0, "learning_rate", "must be > 0")
    check(0.0 <= cfg.warmup_ratio < 1.0, "warmup_ratio", "must be in [0, 1)")
    check(cfg.weight_decay >= 0, "weight_decay", "must be >= 0")
    check(cfg.max_grad_norm >= 0, "max_grad_norm", "must be >= 0 (0 disables clipping)")
    check(cfg.min_pixels >= PIXELS_PER_TOKEN, "min_pixels", f"must be >= {PIXELS_PER_TOKEN} (one image token)")
    check(cfg.max_pixels >= cfg.min_pixels, "max_pixels", f"must be >= min_pixels ({cfg.min_pixels})")
    check(cfg.max_eval_samples >= 0, "max_eval_samples", "must be >= 0")
    check(cfg.dataloader_workers >= 0, "dataloader_workers", "must be >= 0")
    check(cfg.seed >= 0, "seed", "must be >= 0")
    check(cfg.gradient_accumulation_steps % cfg.nproc == 0, "gradient_accumulation_steps",
          f"must be a multiple of nproc={cfg.nproc} (each process accumulates gradient_accumulation_steps / nproc "
          f"micro-batches, so the effective batch is the same for any nproc)")
    check(cfg.max_image_tokens < cfg.max_seq_len, "max_pixels",
          f"allows {cfg.max_image_tokens} image tokens, which leaves no room in max_seq_len={cfg.max_seq_len}")


def report_targets(report_to: str) -> list[str]:
    """``"tensorboard, mlflow"`` -> ``["tensorboard", "mlflow"]``; ``"none"`` -> ``[]``."""
    names = [r.strip() for r in report_to.split(",") if r.strip()]
    return [] if names == ["none"] else names


def _build(values: Mapping[str, Any], source: str) -> TrainConfig:
    unknown = [k for k in values if k not in _FIELDS]
    if unknown:
        hints = []
        for k in unknown:
            close = difflib.get_close_matches(str(k), list(_FIELDS), n=1)
            hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ConfigError(f"{source}: unknown training config key(s): {', '.join(hints)}")
    coerced = {k: _coerce(k, v, source) for k, v in values.items()}
    return TrainConfig(**coerced)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"training config file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys, got {type(data).__name__}")
    return data


def load_config(path: str | Path | None = None, **overrides: Any) -> TrainConfig:
    """Seed defaults (``default.yaml``), then the YAML file at ``path`` (any subset of keys), then ``overrides``."""
    values = _read_yaml(DEFAULT_CONFIG_PATH)
    _build(values, str(DEFAULT_CONFIG_PATH))  # the shipped defaults must themselves be valid
    if path is not None:
        layer = _read_yaml(Path(path))
        _build({**values, **layer}, str(path))
        values.update(layer)
    if overrides:
        values.update(overrides)
    return _build(values, "overrides" if overrides else str(path or DEFAULT_CONFIG_PATH))


def parse_set_overrides(items: list[str]) -> dict[str, Any]:
    """``["lr=1e-3", "vision_lora=true"]`` -> a dict, each value read as YAML (so numbers and booleans work)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key = key.strip()
        if key in _STR_KEYS or not raw.strip():
            out[key] = raw  # "Table Recognition:" would read as a YAML mapping
            continue
        try:
            out[key] = yaml.safe_load(raw)
        except yaml.YAMLError:
            out[key] = raw
    return out
