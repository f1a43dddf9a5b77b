"""Training room: config, base-model families, model inputs, tiny presets, model loading, the LoRA trainer,
merge, plan.

Plain Python (no Dagster). Names are imported lazily so ``import ocr_ft.train`` does not pull in torch.

Typical use::

    from ocr_ft.train import load_config, train, load_finetuned, generate_html
    cfg = load_config(overrides_yaml, base_model=model_dir)
    result = train(cfg, train_records, val_records, data_dir, out_dir, on_log=print)
    model, bundle, cfg = load_finetuned(out_dir)
    html = generate_html(model, bundle, [pil_image])[0]
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TrainConfig": "config", "ConfigError": "config", "load_config": "config", "parse_set_overrides": "config",
    "DEFAULT_CONFIG_PATH": "config", "TINY_CONFIG_PATH": "config",
    "ProcessorBundle": "inputs", "TokenCount": "inputs", "ImageSizeError": "inputs", "build_prompt_inputs": "inputs",
    "build_training_example": "inputs", "build_generation_batch": "inputs", "collate": "inputs",
    "TrainingCollator": "inputs", "count_tokens": "inputs", "num_image_tokens": "inputs",
    "decode_generated": "inputs", "load_image": "inputs",
    "build_tiny_model": "tiny",
    "BaseModelError": "modeling", "MergeMismatchError": "modeling", "load_model_and_processor": "modeling",
    "load_processor": "modeling", "load_finetuned": "modeling", "generate_html": "modeling",
    "merge_adapter": "modeling", "apply_lora": "modeling", "lora_module_names": "modeling",
    "check_budget": "budget", "plan": "budget", "generation_budget": "budget",
    "generate_outputs": "modeling", "save_serving_files": "modeling", "render_prompt": "inputs",
    "inspect_format": "inspect_format", "TrainPlan": "budget", "BudgetReport": "budget",
    "train": "trainer", "TrainResult": "trainer",
    "write_llamafactory_config": "llamafactory", "llamafactory_config": "llamafactory",
    "FAMILIES": "families", "Family": "families", "get_family": "families", "family_of": "families",
    "list_families": "families", "UnknownFamilyError": "families", "resolve_base_model": "modeling",
    "family_for": "modeling",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ocr_ft.train' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"ocr_ft.train.{module}"), name)
    globals()[name] = value
    return value
