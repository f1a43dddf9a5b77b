"""A LLaMA-Factory training YAML that mirrors a :class:`TrainConfig` (LLaMA-Factory is not a dependency).

The datasets are referenced by the names the data export writes into its ``dataset_info.json``:
``ocr_ft_train`` and ``ocr_ft_val``. LoRA targets: ``lora_target: all`` with ``freeze_vision_tower`` makes
LLaMA-Factory put LoRA on every linear layer of the language model only (a comma list such as
``down_proj`` would also hit the vision tower's layers of the same name). The ``template`` is the base model
family's (GLM-OCR ``glm_ocr``, Qwen-VL ``qwen2_vl``, ...); a family LLaMA-Factory has no template for raises
:class:`NoTemplateError` saying why.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ocr_ft.dataset.export import DATASET_NAMES
from ocr_ft.storage import atomic_write_text
from ocr_ft.train.config import TrainConfig

TRAIN_DATASET = DATASET_NAMES["train"]
VAL_DATASET = DATASET_NAMES["val"]
TEMPLATE = "glm_ocr"  # the default family's


class NoTemplateError(ValueError):
    """The base model's family has no LLaMA-Factory template; the message says why."""


def model_family(config: TrainConfig):
    """The family of ``config.base_model`` (name, preset, known hub id or local dir; else its hub config)."""
    from ocr_ft.train.families import UnknownFamilyError, family_of

    try:
        return family_of(config.base_model)
    except UnknownFamilyError:
        from ocr_ft.train.modeling import family_for

        return family_for(config.base_model, config.local_files_only)


def template_for(config: TrainConfig) -> str:
    """LLaMA-Factory's template name for the base model's family; :class:`NoTemplateError` when it has none."""
    fam = model_family(config)
    if fam.llamafactory_template is None:
        raise NoTemplateError(f"LLaMA-Factory has no template for {fam.title} (base model {config.base_model!r}): "
                              f"{fam.llamafactory_note or 'no export for this family'}")
    return fam.llamafactory_template


# ``lora_targets`` -> LLaMA-Factory's ``lora_target`` (module leaf names; the vision tower stays frozen by
# ``freeze_vision_tower`` unless vision LoRA is asked for, and then its ``attn.qkv``/``attn.proj`` join in).
_LORA_TARGET = {
    "all_linear": "all",
    "attention": "q_proj,k_proj,v_proj,o_proj,qkv,proj",
    "mlp": "gate_up_proj,down_proj,gate_proj,up_proj",
}


def llamafactory_config(config: TrainConfig, dataset_dir: str | Path, output_dir: str | Path) -> dict[str, Any]:
    """The LLaMA-Factory ``llamafactory-cli train`` arguments equivalent to ``config``."""
    from ocr_ft.train.modeling import resolve_base_model

    template = template_for(config)
    return {
        # model
        "model_name_or_path": resolve_base_model(config.base_model),
        "image_max_pixels": config.max_pixels,
        "image_min_pixels": config.min_pixels,
        "trust_remote_code": True,
        # method
        "stage": "sft",
        "do_train": True,
        "finetuning_type": "lora",
        "lora_rank": config.lora_rank,
        "lora_alpha": config.lora_alpha,
        "lora_dropout": config.lora_dropout,
        "lora_target": _LORA_TARGET[config.lora_targets],
        "freeze_vision_tower": not config.vision_lora,
        "freeze_multi_modal_projector": not config.vision_lora,
        # dataset
        "dataset": TRAIN_DATASET,
        "eval_dataset": VAL_DATASET,
        "dataset_dir": str(dataset_dir),
        "template": template,
        "cutoff_len": config.max_seq_len,
        "overwrite_cache": True,
        "dataloader_num_workers": config.dataloader_workers,
        # output
        "output_dir": str(output_dir),
        "logging_steps": config.logging_steps,
        "save_steps": config.save_steps,
        "save_total_limit": config.save_total_limit,
        "plot_loss": True,
        "overwrite_output_dir": False,
        "report_to": "none",
        # train
        "per_device_train_batch_size": config.per_device_batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
        "learning_rate": config.learning_rate,
        "num_train_epochs": float(config.num_epochs),
        **({"max_steps": config.max_steps} if config.max_steps is not None else {}),
        "lr_scheduler_type": config.lr_scheduler if config.lr_scheduler != "constant" else "constant_with_warmup",
        "warmup_ratio": config.warmup_ratio,
        "weight_decay": config.weight_decay,
        "max_grad_norm": config.max_grad_norm,
        "bf16": config.precision != "fp32",
        "disable_gradient_checkpointing": not config.gradient_checkpointing,
        "seed": config.seed,
        # eval
        "per_device_eval_batch_size": config.per_device_batch_size,
        "eval_strategy": "steps",
        "eval_steps": config.eval_steps or config.save_steps,
    }


def write_llamafactory_config(config: TrainConfig, path: str | Path, dataset_dir: str | Path,
                              output_dir: str | Path = "saves/glm-ocr-table-lora") -> Path:
    """Write the YAML to ``path`` (atomically). ``dataset_dir`` holds the export's ``dataset_info.json``."""
    body_config = llamafactory_config(config, dataset_dir, output_dir)
    fam = model_family(config)
    header = (
        f"# LLaMA-Factory (>= 0.9.5, template {body_config['template']}) equivalent of the ocr-ft training config.\n"
        "# Run: llamafactory-cli train THIS_FILE\n"
        + fam.llamafactory_note +
        "# Note: LLaMA-Factory truncates to cutoff_len; the ocr-ft export leaves out samples whose estimated\n"
        "# tokens exceed it (`ocr-ft train --dry-run` counts them exactly with the model's tokenizer).\n"
    )
    body = yaml.safe_dump(body_config, sort_keys=False, allow_unicode=True)
    return atomic_write_text(path, header + body)
