"""The evaluation report: the base model and the fine-tuned checkpoint on the test split, side by side."""

import json
from pathlib import Path

import dagster as dg
from pydantic import Field

from ..resources import OcrFtPaths
from ..storage import atomic_write_json, sha256_file, sha256_json
from .automation import on_upstream_change
from .training import GPU_TAGS, K8S_GPU_STEP_TAGS

GROUP = "evaluation"


class EvaluationConfig(dg.Config):
    split: str = Field("test", description="Split to evaluate on (test; val when test is too small).")
    limit: int | None = Field(None, description="Evaluate on the first N samples only.")
    batch_size: int = Field(4, description="Images per generate() call.")
    max_new_tokens: int = Field(2048, description="Generation budget per table (greedy, no repetition penalty).")
    teds_mode: str = Field("nested", description="nested (project default) or pubtabnet.")
    tolerance: float = Field(0.0, description="TEDS drop tolerated before the no-regression check fails.")


def _latest(paths: OcrFtPaths, what: str) -> dict:
    pointer = paths.sub(what, "latest.json")
    if not pointer.is_file():
        raise dg.Failure(f"{pointer} is missing: materialize the upstream asset first")
    return json.loads(pointer.read_text(encoding="utf-8"))


@dg.asset(deps=["lora_checkpoint", "splits"], group_name=GROUP, code_version="1", pool="gpu",
          op_tags={**GPU_TAGS, **K8S_GPU_STEP_TAGS},
          automation_condition=on_upstream_change, kinds={"pytorch"},
          description="TEDS (by nesting level), Korean CER, table F1, nesting accuracy and latency of the base model and "
          "the fine-tune on the test split; JSON, Markdown and a self-contained HTML report.")
def evaluation_report(context: dg.AssetExecutionContext, config: EvaluationConfig, paths: OcrFtPaths) -> dg.MaterializeResult:
    from ..evaluate.predictors import LocalModelPredictor
    from ..evaluate.report import build_report, check_targets
    from ..evaluate.runner import evaluate
    from ..train.config import load_config

    ckpt = _latest(paths, "checkpoints")
    run_dir = Path(ckpt["path"])
    train_cfg = load_config(run_dir / "config.yaml")
    test_set = paths.sub("splits", f"{config.split}.jsonl")
    if not test_set.is_file() or not test_set.read_text(encoding="utf-8").strip():
        raise dg.Failure(f"split {config.split!r} ({test_set}) is empty: nothing to evaluate on")
    version = sha256_json([ckpt["data_version"], sha256_file(test_set), config.model_dump()])
    out = paths.sub("eval", version[:16])
    log = context.log.info
    runs = {}
    for name, adapter in (("base", None), ("finetuned", run_dir)):
        log(f"evaluating {name} ({train_cfg.base_model}{' + adapter' if adapter else ''}) on {test_set.name}")
        predictor = LocalModelPredictor(train_cfg.base_model, adapter_dir=adapter, config=train_cfg,
                                        batch_size=config.batch_size, max_new_tokens=config.max_new_tokens)
        runs[name] = evaluate(test_set, predictor, paths.root, out / name, name, limit=config.limit,
                              mode=config.teds_mode, log=log)
        del predictor
    report = build_report(runs, out, paths.root, tolerance=config.tolerance)
    atomic_write_json(paths.sub("eval", "latest.json"), {"path": str(out), "data_version": version})
    ft = report["runs"]["finetuned"]["summary"]
    base = report["runs"]["base"]["summary"]

    def teds(summary, cat=None):
        block = summary["overall"] if cat is None else (summary["by_category"].get(cat) or {})
        return block.get("teds")

    metadata = {
        "samples": ft["overall"].get("n"),
        "teds_base": teds(base), "teds_finetuned": teds(ft),
        "teds_nested_2level": teds(ft, "nested_2level"), "teds_nested_3level": teds(ft, "nested_3level"),
        "cer_finetuned": ft["overall"].get("cer"),
        "content_f1_finetuned": ft["overall"].get("content_f1"),
        "nesting_accuracy_finetuned": ft["overall"].get("nesting_accuracy"),
        "latency_p50_s": (ft["overall"].get("latency") or {}).get("p50"),
        "latency_p95_s": (ft["overall"].get("latency") or {}).get("p95"),
        "pages_per_s": (ft.get("throughput") or {}).get("pages_per_s"),
        "teds_unscored": ft["overall"].get("teds_unscored"),
        "regression": report["comparison"]["regression"],
        "targets_failed": ", ".join(t["name"] for t in check_targets(ft) if t["passed"] is False),
        "report_html": dg.MetadataValue.path(str(out / "report.html")),
        "review_html": dg.MetadataValue.path(str(out / "review.html")),
        "report_md": dg.MetadataValue.md((out / "report.md").read_text(encoding="utf-8")[:20000]),
    }
    return dg.MaterializeResult(metadata={k: v for k, v in metadata.items() if v is not None},
                                data_version=dg.DataVersion(version))


def _report(paths: OcrFtPaths) -> dict:
    out = Path(_latest(paths, "eval")["path"])
    return json.loads((out / "report.json").read_text(encoding="utf-8"))


@dg.asset_check(asset=evaluation_report, description="The fine-tune's TEDS is not below the base model's (overall "
                "and per category): the regression users of GLM-OCR fine-tunes report most.")
def evaluation_no_regression(paths: OcrFtPaths) -> dg.AssetCheckResult:
    cmp = _report(paths)["comparison"]
    return dg.AssetCheckResult(passed=not cmp["regression"], severity=dg.AssetCheckSeverity.ERROR,
                               metadata={"regressions": "\n".join(cmp["regressions"]) or "none",
                                         "teds_delta": cmp["metrics"]["teds"]["delta"]})


@dg.asset_check(asset=evaluation_report, description="The seed's targets (TEDS 2-level >= 0.90, 3-level >= 0.85, "
                "CER <= 1 %, latency <= 0.5 s/page); a miss is a warning.")
def evaluation_seed_targets(paths: OcrFtPaths) -> dg.AssetCheckResult:
    targets = _report(paths)["runs"]["finetuned"]["targets"]
    missed = [t for t in targets if t["passed"] is False]
    return dg.AssetCheckResult(passed=not missed, severity=dg.AssetCheckSeverity.WARN,
                               metadata={t["name"]: f"{t['value']} {t['op']} {t['threshold']}: "
                                         f"{'pass' if t['passed'] else 'n/a' if t['passed'] is None else 'FAIL'}"
                                         for t in targets})


EVALUATION_ASSETS = [evaluation_report]
EVALUATION_CHECKS = [evaluation_no_regression, evaluation_seed_targets]
