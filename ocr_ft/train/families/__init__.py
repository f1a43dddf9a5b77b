"""Registry of base-model families (see ``base.py`` for what a family is and ``README.md`` for adding one).

* :data:`FAMILIES` - name -> :class:`Family`, in registration order (GLM-OCR first: the default).
* :func:`get_family` - a family by name.
* :func:`family_of` - the family of a ``base_model`` string (family name, tiny preset name, default hub id,
  or a local model directory whose ``config.json`` names a ``model_type``) or of a config dict.
* :func:`list_families` - the families in order.

Adding a family: write ``ocr_ft/train/families/<name>.py`` defining ``FAMILY = Family(...)`` and add the
module name to ``_MODULES`` below.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any, Mapping

from ocr_ft.train.families.base import HTML, Family, identity, image_then_text  # noqa: F401

# Family modules, in the order `ocr-ft models` lists them. A module still missing from a checkout is skipped
# (only when the module itself is absent; an error inside one propagates).
_MODULES = ("glm_ocr", "qwen_vl", "paddleocr_vl", "got_ocr2")
DEFAULT_FAMILY = "glm_ocr"


class UnknownFamilyError(ValueError):
    """A base model, config or name that no registered family claims; the message lists the families."""


def _load() -> dict[str, Family]:
    out: dict[str, Family] = {}
    for mod in _MODULES:
        full = f"{__name__}.{mod}"
        try:
            module = importlib.import_module(full)
        except ModuleNotFoundError as exc:
            if exc.name == full:
                continue
            raise
        fam = module.FAMILY
        if fam.name in out:
            raise RuntimeError(f"two family modules register the name {fam.name!r}")
        out[fam.name] = fam
    return out


FAMILIES: dict[str, Family] = _load()


def list_families() -> list[Family]:
    return list(FAMILIES.values())


def _known() -> str:
    return "; ".join(f"{f.name} (model_type {', '.join(f.model_types)}; preset {f.tiny_preset})" for f in FAMILIES.values())


def get_family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise UnknownFamilyError(f"unknown model family {name!r}; known families: {_known()}") from None


def family_for_model_type(model_type: Any, what: str = "base model") -> Family:
    for fam in FAMILIES.values():
        if model_type in fam.model_types:
            return fam
    raise UnknownFamilyError(f"{what}: model_type {model_type!r} is not a supported family; known families: {_known()}")


def family_by_preset(name: str) -> Family | None:
    """The family whose tiny preset is called ``name`` (None when no preset is)."""
    return next((f for f in FAMILIES.values() if f.tiny_preset == name), None)


def tiny_presets() -> dict[str, Family]:
    return {f.tiny_preset: f for f in FAMILIES.values()}


def read_model_type(model_dir: str | Path) -> Any:
    """``model_type`` of the ``config.json`` in ``model_dir``; ValueError naming the file when unreadable."""
    path = Path(model_dir).expanduser() / "config.json"
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UnknownFamilyError(f"base model {path.parent}: config.json is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UnknownFamilyError(f"base model {path.parent}: config.json is unreadable ({exc})") from None
    return cfg.get("model_type") if isinstance(cfg, dict) else None


def family_of(base_model: str | Path | Mapping[str, Any] | Any) -> Family:
    """The family of ``base_model``: a config dict (or transformers config object) by its ``model_type``; a
    family name; a tiny preset name; a family's default hub id; a local directory by its ``config.json``.
    Anything else (a hub id with no local directory) raises :class:`UnknownFamilyError` - the caller that
    can read the hub config (``ocr_ft.train.modeling``) then asks by model_type."""
    if isinstance(base_model, Mapping):
        return family_for_model_type(base_model.get("model_type"), "config")
    if hasattr(base_model, "model_type") and not isinstance(base_model, (str, Path)):
        return family_for_model_type(getattr(base_model, "model_type"), type(base_model).__name__)
    text = str(base_model)
    if text in FAMILIES:
        return FAMILIES[text]
    fam = family_by_preset(text)
    if fam is not None:
        return fam
    for fam in FAMILIES.values():
        if text == fam.default_hub_id:
            return fam
    p = Path(text).expanduser()
    if p.is_dir():
        return family_for_model_type(read_model_type(p), f"base model {p}")
    raise UnknownFamilyError(f"base model {text!r}: not a family name, tiny preset, known hub id or local "
                             f"model directory; known families: {_known()}")
