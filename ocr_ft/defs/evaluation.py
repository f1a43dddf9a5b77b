"""The evaluation report: several base models and their fine-tunes on one split, in one comparison table.

Without a ``models`` list the asset evaluates the base model of the latest ``lora_checkpoint`` (``base``)
and that checkpoint (``finetuned``), as it always did.  With one, each entry is evaluated on the same split
into ``data/eval/<hash>/<name>/`` (resumable), in order; see :mod:`ocr_ft.evaluate.models` for the entries.

Failure policy: the list is checked before any model is loaded (a bad entry fails the asset, named).  A model
that then fails to load or predict is recorded in the report as failed with its reason and the others go on;
at the end the asset fails if the *primary* model (the one the checks judge) or its *baseline* failed, and
otherwise materializes with a warning in the log, the ``failed_models`` metadata and the
``evaluation_models_evaluated`` check (WARN).
"""

import gc
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from ..resources import OcrFtPaths
from ..storage import atomic_write_json, sha256_file, sha256_json
from .automation import on_upstream_change
from .training import GPU_TAGS, K8S_GPU_STEP_TAGS, LoraTrainingConfig, resolve_training_config

GROUP = "evaluation"
_REASON_CHARS = 600  # a failed model's reason, as kept in the report


class ModelEntry(dg.Config):
    """One model of an evaluation (see :mod:`ocr_ft.evaluate.models`); Dagster refuses unknown fields."""

    name: str = Field(description="Row in the report and sub-folder: letters, digits, _ . - (unique).")
    base_model: str | None = Field(None, description="Preset (tiny), model directory or hub id; null: the adapter "
                                   "run's base model, else the latest checkpoint's.")
    adapter: str | None = Field(None, description="null (the base alone), 'latest' (the latest lora_checkpoint) or a "
                                "training run / adapter directory.")
    max_new_tokens: int | None = Field(None, description="This model's generation budget (default: the evaluation's).")


class EvaluationConfig(dg.Config):
    split: str = Field("test", description="Split to evaluate on (test; val when test is too small).")
    limit: int | None = Field(None, description="Evaluate on the first N samples only.")
    batch_size: int = Field(4, description="Images per generate() call.")
    max_new_tokens: int = Field(2048, description="Generation budget per table (greedy, no repetition penalty).")
    teds_mode: str = Field("nested", description="nested (project default) or pubtabnet.")
    tolerance: float = Field(0.0, description="TEDS drop tolerated before the no-regression check fails.")
    models: list[ModelEntry] = Field(
        default_factory=list,
        description="Models to compare, each {name, base_model, adapter, max_new_tokens}, evaluated in order on the "
        "same split. Empty: the base model and the latest lora_checkpoint (names base, finetuned).")
    primary: str | None = Field(None, description="The model the checks judge (default: the last entry with an "
                                "adapter, else the last entry).")
    baseline: str | None = Field(None, description="The model the primary is compared against (default: the first "
                                 "entry without an adapter, preferring the primary's base_model).")


def _latest(paths: OcrFtPaths, what: str) -> dict:
    pointer = paths.sub(what, "latest.json")
    if not pointer.is_file():
        raise dg.Failure(f"{pointer} is missing: materialize the upstream asset first")
    return json.loads(pointer.read_text(encoding="utf-8"))


@dataclass
class _Model:
    name: str
    base_model: str  # what the predictor loads (a preset already resolved to its directory)
    adapter_dir: Path | None
    train_cfg: Any  # TrainConfig: prompt, pixel cap, precision
    max_new_tokens: int
    identity: list  # what the report's version hashes for this model


def _adapter_identity(adapter_dir: Path) -> str:
    from ..evaluate.models import adapter_run_dir

    files = sorted(p for p in (adapter_run_dir(adapter_dir) or adapter_dir).iterdir() if p.is_file())
    return sha256_json({p.name: sha256_file(p) for p in files})


def resolve_models(config: EvaluationConfig, paths: OcrFtPaths) -> tuple[list[_Model], str, str | None]:
    """The models of ``config`` ready to load, with the primary and baseline names; raises ``dg.Failure``
    naming the entry for anything wrong before a model is loaded."""
    from ..evaluate.models import LATEST, ModelSpec, ModelSpecError, choose_roles, parse_model_specs
    from ..train.config import load_config

    try:
        specs = (parse_model_specs([m.model_dump() for m in config.models]) if config.models
                 else [ModelSpec("base"), ModelSpec("finetuned", adapter=LATEST)])
        primary, baseline = choose_roles(specs, config.primary, config.baseline)
    except ModelSpecError as exc:
        raise dg.Failure(f"evaluation_report config: {exc}") from None
    ckpt_pointer = paths.sub("checkpoints", "latest.json")
    ckpt: dict | None = None
    ckpt_error = f"{ckpt_pointer} is missing: materialize lora_checkpoint first"
    if ckpt_pointer.is_file():
        try:
            ckpt = json.loads(ckpt_pointer.read_text(encoding="utf-8"))
            ckpt["config"] = load_config(Path(ckpt["path"]) / "config.yaml")
        except Exception as exc:  # noqa: BLE001 - only fatal for an entry that needs the checkpoint
            ckpt, ckpt_error = None, f"the latest lora_checkpoint ({ckpt_pointer}) cannot be read: {exc}"

    def latest(why: str) -> dict:
        if ckpt is None:
            raise dg.Failure(f"{ckpt_error} ({why})")
        return ckpt

    models = []
    for i, spec in enumerate(specs):
        where = f"models[{i}] ({spec.name!r})" if config.models else spec.name
        run_dir = run_cfg = adapter_id = None
        try:
            if spec.adapter == LATEST:
                info = latest("adapter 'latest'")
                run_dir, run_cfg, adapter_id = Path(info["path"]), info["config"], info["data_version"]
            elif spec.adapter is not None:
                run_dir = Path(spec.adapter)
                run_cfg = load_config(run_dir / "config.yaml") if (run_dir / "config.yaml").is_file() else None
                adapter_id = _adapter_identity(run_dir)
            if spec.base_model is not None:
                training = LoraTrainingConfig(base_model=spec.base_model)
                config_file, overrides, base_id = resolve_training_config(training, paths)
                base = overrides["base_model"]
            elif run_cfg is not None:
                config_file, overrides, base_id = None, {}, run_cfg.base_model
                base = run_cfg.base_model
            else:
                base = base_id = latest("no base_model and no training run named")["config"].base_model
                config_file, overrides = None, {}
            if run_cfg is not None:
                train_cfg = run_cfg if run_cfg.base_model == base else run_cfg.replace(base_model=base)
            elif ckpt is not None and ckpt["config"].base_model == base:
                train_cfg = ckpt["config"]
            else:
                train_cfg = load_config(config_file or None, **overrides)
        except dg.Failure as exc:
            raise dg.Failure(f"evaluation_report config: {where}: {exc.description}") from None
        except Exception as exc:  # noqa: BLE001 - a config that does not build, named with its entry
            raise dg.Failure(f"evaluation_report config: {where}: {type(exc).__name__}: {exc}") from None
        models.append(_Model(spec.name, base, run_dir, train_cfg, spec.max_new_tokens or config.max_new_tokens,
                             [spec.name, base_id, adapter_id, spec.max_new_tokens]))
    return models, primary, baseline


def _free_memory() -> None:
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass


def _comparison_table_metadata(report: dict) -> dg.TableMetadataValue:
    from ..evaluate.report import TABLE_METRICS

    table = report["comparison_table"]
    columns = [dg.TableColumn("category", "string"), dg.TableColumn("model", "string"),
               dg.TableColumn("status", "string")]
    columns += [dg.TableColumn(m.key, "int" if m.key in ("n", "truncated", "failed") else "float")
                for m in TABLE_METRICS]
    records = []
    for row in table["rows"]:
        best = table["best"].get(row["group"], {})
        marks = [m.key for m in TABLE_METRICS if row["model"] in best.get(m.key, ())]
        status = f"failed: {row['error']}" if row["status"] == "failed" else (
            "best: " + ", ".join(marks) if marks else "ok")
        records.append(dg.TableRecord({"category": row["group"], "model": row["model"], "status": status,
                                       **{m.key: row.get(m.key) for m in TABLE_METRICS}}))
    return dg.MetadataValue.table(records, dg.TableSchema(columns=columns))


@dg.asset(deps=["lora_checkpoint", "splits"], group_name=GROUP, code_version="2", pool="gpu",
          op_tags={**GPU_TAGS, **K8S_GPU_STEP_TAGS},
          automation_condition=on_upstream_change, kinds={"pytorch"},
          description="TEDS (by nesting level), Korean CER, table F1, nesting accuracy and latency of the base model and "
          "the fine-tune (or of every model of the `models` list) on the test split, in one comparison table; JSON, "
          "Markdown and a self-contained HTML report.")
def evaluation_report(context: dg.AssetExecutionContext, config: EvaluationConfig, paths: OcrFtPaths) -> dg.MaterializeResult:
    from ..evaluate.predictors import LocalModelPredictor
    from ..evaluate.report import build_report, check_targets, comparison_markdown
    from ..evaluate.runner import TestSetError, check_images, evaluate, load_test_set

    models, primary, baseline = resolve_models(config, paths)
    test_set = paths.sub("splits", f"{config.split}.jsonl")
    if not test_set.is_file() or not test_set.read_text(encoding="utf-8").strip():
        raise dg.Failure(f"split {config.split!r} ({test_set}) is empty: nothing to evaluate on")
    try:  # the split is every model's: a problem with it fails the asset, not each model
        samples = load_test_set(test_set)
        check_images(samples[:config.limit] if config.limit is not None else samples, paths.root, test_set)
    except TestSetError as exc:
        raise dg.Failure(str(exc)) from None
    version = sha256_json([[m.identity for m in models], sha256_file(test_set), config.model_dump()])
    out = paths.sub("eval", version[:16])
    log = context.log.info
    runs, failed = {}, {}
    for m in models:
        log(f"evaluating {m.name} ({m.base_model}{' + adapter ' + str(m.adapter_dir) if m.adapter_dir else ''}) "
            f"on {test_set.name}")
        predictor = None
        try:
            predictor = LocalModelPredictor(m.base_model, adapter_dir=m.adapter_dir, config=m.train_cfg,
                                            batch_size=config.batch_size, max_new_tokens=m.max_new_tokens)
            runs[m.name] = evaluate(test_set, predictor, paths.root, out / m.name, m.name, limit=config.limit,
                                    mode=config.teds_mode, log=log)
        except Exception as exc:  # noqa: BLE001 - one model failing does not stop the others
            failed[m.name] = f"{type(exc).__name__}: {exc}"[:_REASON_CHARS]
            context.log.error(f"model {m.name} failed, going on with the others: {failed[m.name]}")
        finally:
            del predictor
            _free_memory()
    if not runs:
        raise dg.Failure("every model failed: " + "; ".join(f"{n}: {r}" for n, r in failed.items()))
    judged = [n for n in (primary, baseline) if n is not None and n in failed]
    report = build_report(runs, out, paths.root, tolerance=config.tolerance, failed=failed,
                          primary=primary if primary in runs else list(runs)[-1],
                          baseline=None if judged or baseline not in runs else baseline)
    if judged:
        raise dg.Failure(f"the {'primary' if primary in judged else 'baseline'} model failed ("
                         + "; ".join(f"{n}: {failed[n]}" for n in judged) + f"): the checks cannot judge it; "
                         f"the report of the models that ran is at {out / 'report.html'}")
    for name, reason in failed.items():
        context.log.warning(f"model {name} failed and is marked so in the report: {reason}")
    atomic_write_json(paths.sub("eval", "latest.json"), {"path": str(out), "data_version": version})
    ft = report["runs"][primary]["summary"]
    base = report["runs"][baseline]["summary"] if baseline else None

    def teds(summary, cat=None):
        if summary is None:
            return None
        block = summary["overall"] if cat is None else (summary["by_category"].get(cat) or {})
        return block.get("teds")

    metadata = {
        "samples": ft["overall"].get("n"),
        "primary": primary, "baseline": baseline,
        "models": len(models), "failed_models": "; ".join(f"{n}: {r}" for n, r in failed.items()) or "none",
        "teds_base": teds(base), "teds_finetuned": teds(ft),
        "teds_nested_2level": teds(ft, "nested_2level"), "teds_nested_3level": teds(ft, "nested_3level"),
        "cer_finetuned": ft["overall"].get("cer"),
        "content_f1_finetuned": ft["overall"].get("content_f1"),
        "nesting_accuracy_finetuned": ft["overall"].get("nesting_accuracy"),
        "latency_p50_s": (ft["overall"].get("latency") or {}).get("p50"),
        "latency_p95_s": (ft["overall"].get("latency") or {}).get("p95"),
        "pages_per_s": (ft.get("throughput") or {}).get("pages_per_s"),
        "teds_unscored": ft["overall"].get("teds_unscored"),
        "regression": (report.get("comparison") or {}).get("regression"),
        "targets_failed": ", ".join(t["name"] for t in check_targets(ft) if t["passed"] is False),
        "comparison_table": dg.MetadataValue.md(comparison_markdown(report)[:20000]),
        "comparison": _comparison_table_metadata(report),
        "report_html": dg.MetadataValue.path(str(out / "report.html")),
        "review_html": dg.MetadataValue.path(str(out / "review.html")),
        **{f"review_html_{name}": dg.MetadataValue.path(page) for name, page in report["review_pages"].items()},
        "report_md": dg.MetadataValue.md((out / "report.md").read_text(encoding="utf-8")[:20000]),
    }
    return dg.MaterializeResult(metadata={k: v for k, v in metadata.items() if v is not None},
                                data_version=dg.DataVersion(version))


def _report(paths: OcrFtPaths) -> dict:
    out = Path(_latest(paths, "eval")["path"])
    return json.loads((out / "report.json").read_text(encoding="utf-8"))


@dg.asset_check(asset=evaluation_report, description="The primary model's TEDS (the fine-tune; `primary` in the "
                "config) is not below its baseline's (the base model; `baseline`), overall and per category: the "
                "regression users of GLM-OCR fine-tunes report most. A report of a single model has nothing to "
                "compare and passes, saying so.")
def evaluation_no_regression(paths: OcrFtPaths) -> dg.AssetCheckResult:
    report = _report(paths)
    cmp = report.get("comparison")
    primary = report.get("primary", "finetuned")
    if cmp is None:
        return dg.AssetCheckResult(passed=True, severity=dg.AssetCheckSeverity.ERROR,
                                   metadata={"primary": primary, "judged": "no: a single model, no baseline"})
    return dg.AssetCheckResult(passed=not cmp["regression"], severity=dg.AssetCheckSeverity.ERROR,
                               metadata={"primary": cmp["finetuned"], "baseline": cmp["base"],
                                         "regressions": "\n".join(cmp["regressions"]) or "none",
                                         "teds_delta": cmp["metrics"]["teds"]["delta"]})


@dg.asset_check(asset=evaluation_report, description="The seed's targets (TEDS 2-level >= 0.90, 3-level >= 0.85, "
                "CER <= 1 %, latency <= 0.5 s/page) for the primary model; a miss is a warning.")
def evaluation_seed_targets(paths: OcrFtPaths) -> dg.AssetCheckResult:
    report = _report(paths)
    primary = report.get("primary", "finetuned")
    targets = report["runs"][primary]["targets"]
    missed = [t for t in targets if t["passed"] is False]
    return dg.AssetCheckResult(passed=not missed, severity=dg.AssetCheckSeverity.WARN,
                               metadata={"primary": primary, **{
                                   t["name"]: f"{t['value']} {t['op']} {t['threshold']}: "
                                   f"{'pass' if t['passed'] else 'n/a' if t['passed'] is None else 'FAIL'}"
                                   for t in targets}})


@dg.asset_check(asset=evaluation_report, description="Every model of the evaluation loaded and predicted; one that "
                "failed is in the report with its reason (a warning: the primary and baseline ran).")
def evaluation_models_evaluated(paths: OcrFtPaths) -> dg.AssetCheckResult:
    failed = _report(paths).get("failed") or {}
    return dg.AssetCheckResult(passed=not failed, severity=dg.AssetCheckSeverity.WARN,
                               metadata={"failed": "\n".join(f"{n}: {r}" for n, r in failed.items()) or "none"})


EVALUATION_ASSETS = [evaluation_report]
EVALUATION_CHECKS = [evaluation_no_regression, evaluation_seed_targets, evaluation_models_evaluated]
