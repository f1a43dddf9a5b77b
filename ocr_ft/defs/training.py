"""Training assets: the tiny offline base models and the LoRA checkpoint (trained out of process via Pipes)."""

import base64
import json
import os
import sys
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from ..resources import OcrFtPaths
from ..storage import atomic_write_json, read_jsonl, sha256_file, sha256_json
from .automation import on_upstream_change

GROUP = "training"
TINY = "tiny"
TINY_CODE_VERSION = "2"  # 2: the real GLM-OCR chat template and special tokens
GPU_TAGS = {"ocr_ft/gpu": "1"}
# The training pod spec: docker/k8s/training_pod.yaml in a checkout; the user-code image copies it and points
# OCR_FT_K8S_TRAINING_POD at the copy (a pip-installed package has no docker/ folder).
REPO_TRAINING_POD = Path(__file__).resolve().parents[2] / "docker" / "k8s" / "training_pod.yaml"
# With the k8s_job_executor, a step with this tag runs in its own pod with one GPU (evaluation needs one).
K8S_GPU_STEP_TAGS = {"dagster-k8s/config": {"container_config": {"resources": {"limits": {"nvidia.com/gpu": "1"}}}}}


class TinyModelConfig(dg.Config):
    seed: int = Field(0, description="Seed of the tiny model's random weights.")
    vocab_size: int = Field(8192, description="Size of the tokenizer trained on the training labels.")
    presets: list[str] = Field(default_factory=lambda: [TINY], description="Tiny presets to build, one per family "
                               "(`ocr-ft models` lists them: tiny, tiny-qwen-vl, ...); base_model names one of them.")


def tiny_presets() -> dict[str, Any]:
    from ..train.families import tiny_presets as presets

    return presets()


@dg.asset(deps=["splits"], group_name=GROUP, code_version=TINY_CODE_VERSION, automation_condition=on_upstream_change,
          kinds={"pytorch"}, description="Models of a few million parameters (GLM-OCR architecture by default; one per "
          "listed family preset) with a tokenizer trained on the training labels: the offline base models, loaded "
          "with from_pretrained like real weights.")
def tiny_base_model(context: dg.AssetExecutionContext, config: TinyModelConfig, paths: OcrFtPaths) -> dg.MaterializeResult:
    known = tiny_presets()
    bad = [p for p in config.presets if p not in known]
    if bad or not config.presets:
        raise dg.Failure(f"unknown tiny preset(s) {bad or config.presets}; presets: {', '.join(known)}")
    texts = [r["ground_truth_html"] for r in read_jsonl(paths.sub("splits", "train.jsonl"))]
    versions, metadata = [], {"labels": len(texts)}
    for preset in config.presets:
        family = known[preset]
        # the GLM-OCR preset keeps its version key (and so its folder) from before there were families
        key = [TINY_CODE_VERSION, config.seed, config.vocab_size, texts] + ([] if preset == TINY else [preset])
        version = sha256_json(key)
        out = paths.sub("models", preset, version[:16])
        if not (out / "config.json").is_file():
            context.log.info(f"building the tiny {family.title} model ({preset}) on {len(texts)} training labels")
            family.build_tiny(out, texts, seed=config.seed, vocab_size=config.vocab_size)
        else:
            context.log.info(f"tiny model {preset}/{out.name} already built for these labels")
        atomic_write_json(paths.sub("models", preset, "latest.json"), {"path": str(out), "data_version": version})
        weights = sum(p.stat().st_size for p in out.glob("*.safetensors"))
        suffix = "" if preset == TINY else f"_{preset}"
        metadata.update({f"path{suffix}": dg.MetadataValue.path(str(out)),
                         f"weights_mib{suffix}": round(weights / 2**20, 2)})
        versions.append(version)
    return dg.MaterializeResult(metadata=metadata,
                                data_version=dg.DataVersion(versions[0] if len(versions) == 1 else sha256_json(versions)))


class LoraTrainingConfig(dg.Config):
    base_model: str = Field(
        default_factory=lambda: os.environ.get("OCR_FT_BASE_MODEL", TINY),
        description="`tiny` (offline default, built by tiny_base_model) or another family's tiny preset (e.g. "
        "`tiny-qwen-vl`, listed in tiny_base_model's presets), a family name (`qwen_vl`: its default hub id), a local "
        "model directory, or a hub id such as zai-org/GLM-OCR (env OCR_FT_BASE_MODEL).",
    )
    config_file: str = Field(
        default_factory=lambda: os.environ.get("OCR_FT_TRAIN_CONFIG", ""),
        description="YAML overlay on the seed recipe (ocr_ft/train/default.yaml); env OCR_FT_TRAIN_CONFIG.",
    )
    overrides: dict[str, Any] = Field(default_factory=dict, description="Training keys set last, e.g. {max_steps: 50}.")
    log_every_s: float = Field(10.0, description="Seconds between progress lines in the run log.")
    use_search: bool = Field(False, description="Train with the best overlay of the last lora_search "
                             "(data/search/latest.json), under config_file; overrides still win.")


def resolve_training_config(cfg: LoraTrainingConfig, paths: OcrFtPaths) -> tuple[str, dict[str, Any], str]:
    """(config overlay file, overrides incl. base_model, identity of the base model)."""
    from ..train.config import TINY_CONFIG_PATH, load_config

    overrides = dict(cfg.overrides)
    config_file = cfg.config_file
    if cfg.base_model in tiny_presets():
        pointer = paths.sub("models", cfg.base_model, "latest.json")
        if not pointer.is_file():
            hint = "" if cfg.base_model == TINY else f" with presets including {cfg.base_model!r}"
            raise dg.Failure(f"base_model is `{cfg.base_model}` but tiny_base_model was never materialized{hint}; "
                             f"materialize it first")
        info = json.loads(pointer.read_text(encoding="utf-8"))
        overrides["base_model"] = info["path"]
        identity = info["data_version"]
        if not config_file:
            config_file = str(TINY_CONFIG_PATH)
    else:
        overrides["base_model"] = cfg.base_model
        local = Path(cfg.base_model)
        identity = (sha256_json({p.name: p.stat().st_size for p in sorted(local.iterdir()) if p.is_file()})
                    if local.is_dir() else cfg.base_model)
    if config_file and not Path(config_file).is_file():
        raise dg.Failure(f"training config overlay {config_file} does not exist")
    load_config(config_file or None, **overrides)  # fail here, with the key named, before launching anything
    return config_file, overrides, identity


class TrainingLauncher(dg.ConfigurableResource):
    """Where training runs: `subprocess` (this machine) or `k8s` (a GPU pod via the Kubernetes Pipes client,
    image from OCR_FT_USER_CODE_IMAGE, pod spec from docker/k8s/training_pod.yaml)."""

    kind: str = "subprocess"
    image: str = ""
    namespace: str = "ocr-ft"
    pod_spec_file: str = ""  # default: $OCR_FT_K8S_TRAINING_POD, else docker/k8s/training_pod.yaml of the checkout

    command: list[str] = ["python", "-m", "ocr_ft.defs.pipes_training"]

    def command_for(self, nproc: int = 1, python: str | None = None) -> list[str]:
        """The training command: the Pipes entry point, under torchrun with ``nproc`` processes when > 1."""
        from ..train.distributed import torchrun_command

        python = python or self.command[0]
        if nproc > 1:
            module = self.command[self.command.index("-m") + 1]
            return torchrun_command(nproc, module, self.command[self.command.index("-m") + 2:], python=python)
        return [python, *self.command[1:]]

    def k8s_pod_spec(self, nproc: int = 1) -> dict[str, Any]:
        """The training pod's spec (snake_case, as dagster-k8s takes it) from the pod spec file, asking for
        ``nproc`` GPUs (one per training process)."""
        import yaml

        path = Path(self.pod_spec_file or os.environ.get("OCR_FT_K8S_TRAINING_POD") or REPO_TRAINING_POD)
        if not path.is_file():
            raise dg.Failure(f"training pod spec {path} not found: set OCR_FT_K8S_TRAINING_POD or pod_spec_file")
        pod = yaml.safe_load(path.read_text(encoding="utf-8"))
        resources = pod["container_config"].setdefault("resources", {})
        for kind in ("requests", "limits"):
            if nproc > 1 or "nvidia.com/gpu" in resources.get(kind, {}):
                resources.setdefault(kind, {})["nvidia.com/gpu"] = str(nproc)
        return {**pod.get("pod_spec_config", {}),
                "containers": [{"name": "dagster-pipes-execution", **pod["container_config"]}]}

    def run(self, context: dg.AssetExecutionContext, extras: dict[str, Any], nproc: int = 1):
        if self.kind == "subprocess":
            return dg.PipesSubprocessClient().run(command=self.command_for(nproc, sys.executable), context=context,
                                                  extras=extras)
        if self.kind == "k8s":
            from dagster_k8s import PipesK8sClient  # the `deploy` extra

            return PipesK8sClient().run(context=context, image=self.image or os.environ["OCR_FT_USER_CODE_IMAGE"],
                                        command=self.command_for(nproc), namespace=self.namespace, extras=extras,
                                        base_pod_spec=self.k8s_pod_spec(nproc))
        raise dg.Failure(f"unknown training launcher kind {self.kind!r}: use subprocess or k8s")


@dg.asset(deps=["splits", "tiny_base_model"], group_name=GROUP, code_version="2", pool="gpu", op_tags=GPU_TAGS,
          automation_condition=on_upstream_change, kinds={"pytorch"},
          description="LoRA adapter of the base model trained on the train split (transformers.Trainer + peft), in a separate "
          "process through Dagster Pipes. Output folder addressed by the hash of config, data and base model.")
def lora_checkpoint(context: dg.AssetExecutionContext, config: LoraTrainingConfig, paths: OcrFtPaths,
                    training_launcher: TrainingLauncher) -> dg.MaterializeResult:
    from ..train.config import load_config

    config_file, overrides, identity = resolve_training_config(config, paths)
    search_meta = _search_overlay(paths, overrides) if config.use_search else {}
    train_path, val_path = paths.sub("splits", "train.jsonl"), paths.sub("splits", "val.jsonl")
    if not train_path.is_file():
        raise dg.Failure(f"{train_path} is missing: materialize splits first")
    train_cfg = load_config(config_file or None, **overrides)
    fingerprint = sha256_json([train_cfg.fingerprint(), identity, sha256_file(train_path),
                               sha256_file(val_path) if val_path.is_file() else ""])
    out = paths.sub("checkpoints", fingerprint[:16])
    context.log.info(f"training {config.base_model} -> {out}")
    extras = {"train": str(train_path), "val": str(val_path), "data_dir": str(paths.root), "output_dir": str(out),
              "config_file": config_file, "overrides": overrides, "fingerprint": fingerprint,
              "log_every_s": config.log_every_s}
    if train_cfg.nproc > 1:
        context.log.info(f"launching {train_cfg.nproc} training processes with torchrun")
    result = training_launcher.run(context, extras, nproc=train_cfg.nproc).get_materialize_result()
    atomic_write_json(paths.sub("checkpoints", "latest.json"), {"path": str(out), "data_version": fingerprint})
    extra = {**search_meta, **_loss_curve(out / "loss.png")}  # search_meta: which trial of which study
    if extra:
        result = dg.MaterializeResult(asset_key=result.asset_key, metadata={**(result.metadata or {}), **extra},
                                      check_results=result.check_results, data_version=result.data_version,
                                      tags=result.tags)
    return result


def _loss_curve(plot: Path) -> dict[str, Any]:
    """The loss plot the training process wrote, as an image on the asset page (the UI renders Markdown images
    from data URLs); embedded here rather than sent through Pipes, whose file reader can split a large line."""
    if not plot.is_file():
        return {}
    encoded = base64.b64encode(plot.read_bytes()).decode("ascii")
    return {"loss_curve": dg.MetadataValue.md(f"![loss](data:image/png;base64,{encoded})")}


def _search_overlay(paths: OcrFtPaths, overrides: dict[str, Any]) -> dict[str, Any]:
    """Merge the best lora_search overlay under ``overrides`` (in place); metadata naming its study and trial."""
    import yaml

    pointer = paths.sub("search", "latest.json")
    if not pointer.is_file():
        raise dg.Failure("use_search is true but lora_search was never materialized; materialize it first")
    best = json.loads(pointer.read_text(encoding="utf-8"))
    overlay = yaml.safe_load(Path(best["overlay"]).read_text(encoding="utf-8")) or {}
    for key, value in overlay.items():
        overrides.setdefault(key, value)
    return {"search_study": best["study"], "search_trial": best["trial"], "search_objective": best["objective"],
            "search_value": best["value"], "search_overlay": dg.MetadataValue.path(best["overlay"])}


@dg.asset_check(asset=lora_checkpoint, description="The final training loss is clearly below the initial one (<= 90%).")
def lora_loss_decreased(paths: OcrFtPaths) -> dg.AssetCheckResult:
    pointer = json.loads(paths.sub("checkpoints", "latest.json").read_text(encoding="utf-8"))
    summary = json.loads((Path(pointer["path"]) / "summary.json").read_text(encoding="utf-8"))
    first, last = summary.get("initial_train_loss"), summary.get("final_train_loss")
    passed = first is not None and last is not None and last <= 0.9 * first
    return dg.AssetCheckResult(passed=bool(passed), metadata={"initial_train_loss": first, "final_train_loss": last,
                                                             "ratio": round(last / first, 4) if first and last else None})


TRAINING_ASSETS = [tiny_base_model, lora_checkpoint]
TRAINING_CHECKS = [lora_loss_decreased]
