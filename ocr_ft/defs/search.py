"""The `lora_search` asset: an Optuna study over the LoRA recipe (ocr_ft.train.search), wiring only."""


import base64
import json
import os
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from ..resources import OcrFtPaths
from ..storage import atomic_write_json, read_jsonl, sha256_file
from .training import GPU_TAGS, GROUP, TINY, LoraTrainingConfig, resolve_training_config, tiny_presets

STORAGE_ENV = "OCR_FT_OPTUNA_STORAGE"  # e.g. postgresql://user:pass@host/db (docker/, k8s); default SQLite


class LoraSearchConfig(dg.Config):
    space: str = Field("conservative", description="Search space: a shipped name (conservative, aggressive, grid) "
                       "or the path of a YAML file (format in ocr_ft/train/search.py).")
    n_trials: int = Field(12, description="Trials the study should have finished; a rerun only runs the missing ones.")
    objective: str = Field("", description="eval_loss (minimised) or teds (greedy decoding on teds_samples validation "
                           "images, maximised). Empty: eval_loss for the tiny model, teds for a real one.")
    teds_samples: int = Field(16, description="Validation images the TEDS objective decodes per trial.")
    max_new_tokens: int = Field(1024, description="Generation budget per image for the TEDS objective.")
    train_subset: int = Field(0, description="Train each trial on the first N training samples (0: all).")
    parallel_trials: int = Field(0, description="Trials at once, one per GPU. 0: the limit of the `gpu` pool.")
    storage: str = Field(default_factory=lambda: os.environ.get(STORAGE_ENV, ""),
                         description=f"Optuna RDB URL (env {STORAGE_ENV}); empty: the deployment's PostgreSQL when "
                         "DAGSTER_POSTGRES_HOST is set (docker/, k8s), else SQLite under $DAGSTER_HOME/optuna/.")
    seed: int = Field(0, description="Sampler seed.")
    base_model: str = Field(default_factory=lambda: os.environ.get("OCR_FT_BASE_MODEL", TINY),
                            description="As lora_checkpoint's base_model.")
    config_file: str = Field(default_factory=lambda: os.environ.get("OCR_FT_TRAIN_CONFIG", ""),
                             description="Base training overlay every trial starts from (as lora_checkpoint's).")
    overrides: dict[str, Any] = Field(default_factory=dict, description="Training keys set in every trial, e.g. {max_steps: 20}.")


def _gpu_pool_limit(instance: dg.DagsterInstance) -> int:
    try:
        info = instance.event_log_storage.get_concurrency_info("gpu")
        return max(1, int(info.limit or info.slot_count or 1))
    except Exception:  # noqa: BLE001 - storages without pools: one at a time
        return 1


def _storage_url(cfg: LoraSearchConfig, instance: dg.DagsterInstance, paths: OcrFtPaths) -> str:
    from ..train.search import default_storage_url

    if cfg.storage:
        return cfg.storage
    if os.environ.get("DAGSTER_POSTGRES_HOST"):  # docker/ and k8s: the deployment's PostgreSQL, as the instance
        from urllib.parse import quote

        user, password = os.environ.get("DAGSTER_POSTGRES_USER", "dagster"), os.environ.get("DAGSTER_POSTGRES_PASSWORD", "")
        auth = quote(user) + (f":{quote(password)}" if password else "")
        return (f"postgresql+psycopg2://{auth}@{os.environ['DAGSTER_POSTGRES_HOST']}:"
                f"{os.environ.get('DAGSTER_POSTGRES_PORT', '5432')}/{os.environ.get('DAGSTER_POSTGRES_DB', 'dagster')}_optuna")  # own database: see ensure_database
    home = os.environ.get("DAGSTER_HOME")
    return default_storage_url(home if home else paths.sub("search"))


def _png_md(path: Path, alt: str) -> dg.MetadataValue:
    encoded = base64.b64encode(path.read_bytes()).decode("ascii")
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{encoded})")


def _trial_table(rows: list[dict]) -> str:
    params = sorted({k for r in rows for k in r if k.startswith("param_")})
    head = ["trial", "state", "value", *[p[6:] for p in params], "reason"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        state = "interrupted" if r["interrupted"] else r["state"]
        value = "" if r["value"] is None else f"{r['value']:.5g}"
        cells = [str(r["number"]), state, value, *[str(r.get(p, "")) for p in params],
                 (r.get("fail_reason") or "").replace("|", "/")[:80]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


@dg.asset(deps=["splits", "tiny_base_model"], group_name=GROUP, code_version="1", pool="gpu", op_tags=GPU_TAGS,
          kinds={"optuna"},
          description="Optuna study over the LoRA recipe (search spaces in ocr_ft/train/search_spaces/), stored in a "
          "relational database so a killed run resumes; outputs the best training overlay and the trial table.")
def lora_search(context: dg.AssetExecutionContext, config: LoraSearchConfig, paths: OcrFtPaths) -> dg.MaterializeResult:
    from ..train.config import load_config
    from ..train.search import SearchSpaceError, load_space, redact_url, run_study, study_name_for

    try:
        space = load_space(config.space)
    except SearchSpaceError as exc:
        raise dg.Failure(str(exc)) from None
    base = LoraTrainingConfig(base_model=config.base_model, config_file=config.config_file,
                              overrides=dict(config.overrides))
    config_file, overrides, identity = resolve_training_config(base, paths)
    base_cfg = load_config(config_file or None, **overrides)
    train_path, val_path = paths.sub("splits", "train.jsonl"), paths.sub("splits", "val.jsonl")
    if not train_path.is_file() or not val_path.is_file():
        raise dg.Failure(f"{train_path} or {val_path} is missing: materialize splits first")
    objective = config.objective or ("eval_loss" if config.base_model in tiny_presets() else "teds")
    data_identity = sha256_file(train_path) + sha256_file(val_path) + str(config.train_subset)
    study_name = study_name_for(space, objective, identity + base_cfg.fingerprint(), data_identity)
    url = _storage_url(config, context.instance, paths)
    n_jobs = config.parallel_trials or _gpu_pool_limit(context.instance)
    out = paths.sub("search", study_name)
    context.log.info(f"study {study_name} ({space.name}, {objective}) in {redact_url(url)}: {config.n_trials} trials, "
                     f"{n_jobs} at once")

    def on_event(row: dict) -> None:
        if row.get("event") in ("trial_start", "trial_done", "trial_pruned", "trial_failed", "requeued"):
            context.log.info(", ".join(f"{k}={v}" for k, v in row.items()))

    res = run_study(space, base_cfg, read_jsonl(train_path), read_jsonl(val_path), paths.root, out, url,
                    study_name, config.n_trials, objective=objective, teds_samples=config.teds_samples,
                    max_new_tokens=config.max_new_tokens, train_subset=config.train_subset or None, n_jobs=n_jobs,
                    seed=config.seed, on_event=on_event)
    if res.best_overlay is None:
        raise dg.Failure(f"study {study_name}: no trial completed ({res.counts}); see {res.trials_csv}")
    atomic_write_json(paths.sub("search", "latest.json"), {
        "study": study_name, "trial": res.best_trial, "value": res.best_value, "objective": objective,
        "overlay": str(res.best_overlay), "space": space.name})
    rows = json.loads(res.trials_json.read_text(encoding="utf-8"))
    metadata = {
        "study": study_name, "storage": res.storage, "space": space.name, "objective": objective,
        "direction": res.direction, "best_value": res.best_value, "best_trial": res.best_trial,
        "best_params": dg.MetadataValue.json(res.best_params),
        "trials_complete": res.counts["complete"], "trials_pruned": res.counts["pruned"],
        "trials_failed": res.counts["fail"], "trials_interrupted": res.counts["interrupted"],
        "trials_run_now": res.ran_now, "importances": dg.MetadataValue.json(res.importances),
        "best_overlay": dg.MetadataValue.path(str(res.best_overlay)),
        "trials_csv": dg.MetadataValue.path(str(res.trials_csv)),
        "trials": dg.MetadataValue.md(_trial_table(rows)),
    }
    if "history" in res.plots:
        metadata["optimisation_history"] = _png_md(res.plots["history"], "optimisation history")
    if "importances" in res.plots:
        metadata["parameter_importances"] = _png_md(res.plots["importances"], "parameter importances")
    return dg.MaterializeResult(metadata=metadata,
                                data_version=dg.DataVersion(f"{study_name}:{res.best_trial}:{len(rows)}"))


SEARCH_ASSETS = [lora_search]
