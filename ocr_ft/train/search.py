"""Hyperparameter search over the LoRA recipe with Optuna, in a relational study storage that survives restarts.

A *search space* is a YAML file (``search_spaces/{conservative,aggressive,grid}.yaml`` ship with the package):

```yaml
description: ...
sampler: tpe            # tpe | random | grid (grid: every param must be a `choices` list)
pruner: median          # median | asha | none (on intermediate eval loss)
fixed: {eval_steps: 2}  # training keys set in every trial
params:
  learning_rate: {low: 5.0e-5, high: 3.0e-4, log: true}    # float range
  lora_rank: {choices: [8, 16]}                             # categorical
  num_epochs: {low: 1, high: 3, type: int}                  # int range
```

Every key under ``params`` and ``fixed`` must be a training config key (:class:`ocr_ft.train.config.TrainConfig`);
an unknown key raises :class:`SearchSpaceError` naming the file and the key.

:func:`run_study` trains one LoRA per trial with :func:`ocr_ft.train.trainer.train` (config overlay = base
config + fixed + sampled params; with ``n_jobs > 1`` each running trial trains in its own child process on its
own GPU, :func:`ocr_ft.train.isolated.train_isolated`), reports the intermediate eval loss to the pruner, and scores the trial by
``eval_loss`` (minimised) or ``teds`` on N validation images, greedy decoding (maximised). The study is loaded
if it exists: finished trials (complete, pruned, failed) are never rerun; a trial that was running when the
process died is marked failed (``interrupted``) and its parameters are enqueued again, so its training resumes
from its last checkpoint. A trial that raises (out of memory, NaN loss, ...) is recorded as failed with its
reason and the study goes on. No Dagster import here.
"""

from __future__ import annotations

import csv
import difflib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import yaml

from ocr_ft.storage import atomic_write_json, atomic_write_text, sha256_json

from .config import ConfigError, TrainConfig

SPACES_DIR = Path(__file__).with_name("search_spaces")
OBJECTIVES = ("eval_loss", "teds")
SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "asha", "none")
_TOP_KEYS = {"description", "sampler", "pruner", "fixed", "params", "objective"}
_PARAM_KEYS = {"low", "high", "log", "step", "type", "choices"}
_TRAIN_KEYS = set(TrainConfig.__dataclass_fields__)
# Keys a trial must not pick: they decide what model and data are trained, or how a run is operated.
_NOT_SEARCHABLE = {"base_model", "resume", "local_files_only"}


class SearchSpaceError(ValueError):
    """A search space file is wrong; the message names the file and the key."""


class TrialFailed(RuntimeError):
    """A trial could not produce a value (NaN loss, no usable validation sample...)."""


@dataclass(frozen=True)
class ParamSpec:
    name: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    kind: str = "float"  # float | int | categorical
    choices: tuple = ()

    def suggest(self, trial: Any) -> Any:
        if self.kind == "categorical":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.name, float(self.low), float(self.high), step=self.step, log=self.log)


@dataclass(frozen=True)
class SearchSpace:
    name: str
    params: tuple[ParamSpec, ...]
    fixed: Mapping[str, Any] = field(default_factory=dict)
    sampler: str = "tpe"
    pruner: str = "median"
    description: str = ""
    source: str = ""

    def grid(self) -> dict[str, list]:
        return {p.name: list(p.choices) for p in self.params}

    @property
    def grid_size(self) -> int:
        return math.prod(len(p.choices) for p in self.params)

    def fingerprint(self) -> str:
        return sha256_json({"params": [p.__dict__ for p in self.params], "fixed": dict(self.fixed),
                            "sampler": self.sampler, "pruner": self.pruner})


def _unknown(key: str, known: set[str], what: str, source: str) -> SearchSpaceError:
    close = difflib.get_close_matches(key, sorted(known), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return SearchSpaceError(f"{source}: unknown {what} {key!r}{hint}")


def _number(value: Any, key: str, source: str) -> float:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SearchSpaceError(f"{source}: params.{key} bounds must be finite numbers, got {value!r}")
    return value


def _param(name: str, spec: Any, source: str) -> ParamSpec:
    if name not in _TRAIN_KEYS:
        raise _unknown(name, _TRAIN_KEYS, "training config key in params:", source)
    if name in _NOT_SEARCHABLE:
        raise SearchSpaceError(f"{source}: params.{name} cannot be searched")
    if not isinstance(spec, Mapping):
        raise SearchSpaceError(f"{source}: params.{name} must be a mapping (low/high or choices), got {spec!r}")
    for k in spec:
        if k not in _PARAM_KEYS:
            raise _unknown(str(k), _PARAM_KEYS, f"key of params.{name}:", source)
    if "choices" in spec:
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise SearchSpaceError(f"{source}: params.{name}.choices must be a non-empty list")
        if set(spec) - {"choices", "type"}:
            raise SearchSpaceError(f"{source}: params.{name} has choices and a range; give one")
        return ParamSpec(name, kind="categorical", choices=tuple(choices))
    if "low" not in spec or "high" not in spec:
        raise SearchSpaceError(f"{source}: params.{name} needs low and high (or choices)")
    low, high = _number(spec["low"], name, source), _number(spec["high"], name, source)
    kind = spec.get("type") or ("int" if isinstance(low, int) and isinstance(high, int) else "float")
    if kind not in ("int", "float"):
        raise SearchSpaceError(f"{source}: params.{name}.type must be int or float, got {kind!r}")
    if not low < high:
        raise SearchSpaceError(f"{source}: params.{name} needs low < high, got {low} and {high}")
    log = bool(spec.get("log", False))
    if log and low <= 0:
        raise SearchSpaceError(f"{source}: params.{name} is log-scaled, so low must be > 0")
    return ParamSpec(name, low=low, high=high, log=log, step=spec.get("step"), kind=kind)


def load_space(name_or_path: str | Path) -> SearchSpace:
    """A shipped space by name (``conservative``, ``aggressive``, ``grid``) or a YAML file by path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = SPACES_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            shipped = ", ".join(sorted(p.stem for p in SPACES_DIR.glob("*.yaml")))
            raise SearchSpaceError(f"no search space named {str(name_or_path)!r}; shipped: {shipped}")
    source = str(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SearchSpaceError(f"search space file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise SearchSpaceError(f"{source}: not valid YAML ({exc})") from None
    if not isinstance(data, Mapping):
        raise SearchSpaceError(f"{source}: expected a mapping with `params`, got {type(data).__name__}")
    for k in data:
        if k not in _TOP_KEYS:
            raise _unknown(str(k), _TOP_KEYS, "top-level key", source)
    raw_params = data.get("params") or {}
    if not isinstance(raw_params, Mapping) or not raw_params:
        raise SearchSpaceError(f"{source}: `params` must be a non-empty mapping of training keys")
    params = tuple(_param(str(k), v, source) for k, v in raw_params.items())
    fixed = dict(data.get("fixed") or {})
    for k in fixed:
        if k not in _TRAIN_KEYS:
            raise _unknown(str(k), _TRAIN_KEYS, "training config key in fixed:", source)
    both = set(fixed) & {p.name for p in params}
    if both:
        raise SearchSpaceError(f"{source}: {sorted(both)} both fixed and searched")
    sampler, pruner = data.get("sampler", "tpe"), data.get("pruner", "median")
    if sampler not in SAMPLERS:
        raise SearchSpaceError(f"{source}: sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    if pruner not in PRUNERS:
        raise SearchSpaceError(f"{source}: pruner must be one of {', '.join(PRUNERS)}, got {pruner!r}")
    if sampler == "grid" and any(p.kind != "categorical" for p in params):
        raise SearchSpaceError(f"{source}: a grid space needs `choices` for every param")
    return SearchSpace(name=path.stem, params=params, fixed=fixed, sampler=sampler, pruner=pruner,
                       description=str(data.get("description", "")), source=source)


def default_storage_url(dagster_home: str | Path) -> str:
    """SQLite file under DAGSTER_HOME: ``$DAGSTER_HOME/optuna/studies.db``."""
    path = Path(dagster_home) / "optuna" / "studies.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def redact_url(url: str) -> str:
    """The storage URL without its password, for logs and metadata."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def ensure_database(url: str) -> None:
    """Create the PostgreSQL database of ``url`` when it is missing (the study must not share the Dagster
    instance's database: both keep an ``alembic_version`` table). Other URLs are left alone."""
    if not url.startswith("postgresql"):
        return
    import sqlalchemy as sa

    target = sa.engine.make_url(url)
    engine = sa.create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            exists = conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :n"),
                                  {"n": target.database}).scalar()
            if not exists:
                conn.execute(sa.text(f'CREATE DATABASE "{target.database.replace(chr(34), "")}"'))
    finally:
        engine.dispose()


def _sampler(space: SearchSpace, seed: int):
    import optuna

    if space.sampler == "grid":
        return optuna.samplers.GridSampler(space.grid(), seed=seed)
    if space.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=5)


def _pruner(space: SearchSpace):
    import optuna

    if space.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0)
    if space.pruner == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    return optuna.pruners.NopPruner()


@dataclass
class StudyResult:
    study_name: str
    storage: str  # redacted
    objective: str
    direction: str
    best_trial: int | None
    best_value: float | None
    best_params: dict[str, Any]
    best_overlay: Path | None
    trials_csv: Path
    trials_json: Path
    counts: dict[str, int]
    importances: dict[str, float]
    plots: dict[str, Path]
    ran_now: int

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        for k in ("best_overlay", "trials_csv", "trials_json"):
            d[k] = str(d[k]) if d[k] is not None else None
        d["plots"] = {k: str(v) for k, v in self.plots.items()}
        return d


def _teds_score(config: TrainConfig, run_dir: Path, val_records: Sequence[Mapping], data_dir: Path,
                n: int, max_new_tokens: int, device: Any) -> float:
    from ocr_ft.evaluate.predictors import LocalModelPredictor
    from ocr_ft.evaluate.teds_metric import teds_batch

    chosen = list(val_records)[:n]
    if not chosen:
        raise TrialFailed("objective teds needs validation samples, the val split is empty")
    predictor = LocalModelPredictor(config.base_model, adapter_dir=run_dir, config=config, device=device,
                                    batch_size=4, max_new_tokens=max_new_tokens)
    preds = predictor.predict([data_dir / r["image_path"] for r in chosen])
    scores = teds_batch([(p.html, r["ground_truth_html"]) for p, r in zip(preds, chosen)], workers=1)
    return float(sum(s.teds or 0.0 for s in scores) / len(scores))  # a timed-out or failed pair scores 0


def _as_dict(r: Any) -> dict:
    return r if isinstance(r, dict) else r.to_dict()


def run_study(
    space: SearchSpace,
    base_config: TrainConfig,
    train_records: Sequence[Any],
    val_records: Sequence[Any],
    data_dir: str | Path,
    out_dir: str | Path,
    storage_url: str,
    study_name: str,
    n_trials: int,
    objective: str = "eval_loss",
    teds_samples: int = 8,
    max_new_tokens: int = 512,
    train_subset: int | None = None,
    n_jobs: int = 1,
    seed: int = 0,
    device: Any = None,
    devices: Sequence[Any] | None = None,
    on_event: Callable[[dict], None] | None = None,
    train_fn: Callable[..., Any] | None = None,
) -> StudyResult:
    """Run (or resume) the study until ``n_trials`` trials have finished; write the best overlay, the trial
    table and the plots under ``out_dir``. ``on_event`` receives trial and training progress dicts (an
    exception from it propagates like a kill). ``train_fn`` defaults to :func:`ocr_ft.train.trainer.train`.
    ``n_jobs`` trials run at once (threads); each takes a device from ``devices`` (default: ``cuda:0``..
    when that many GPUs are visible, else ``device`` for all) and gives it back when it ends. With
    ``n_jobs > 1`` and no ``train_fn``, each trial trains in its own child process
    (:func:`ocr_ft.train.isolated.train_isolated`: ``CUDA_VISIBLE_DEVICES`` set to its GPU), since accelerate
    allows one Trainer per process; an interrupt stops the children. ``n_jobs == 1`` trains in this process."""
    import queue

    import optuna
    from optuna.trial import TrialState

    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
    if n_trials < 1:
        raise ValueError(f"n_trials must be >= 1, got {n_trials}")
    n_jobs = max(1, n_jobs)
    isolated = train_fn is None and n_jobs > 1
    if train_fn is None:
        if isolated:  # accelerate keeps one state per process: one child process per running trial
            from .isolated import train_isolated as train_fn
        else:
            from .trainer import train as train_fn
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    train_records = [_as_dict(r) for r in train_records][: train_subset or None]
    val_records = [_as_dict(r) for r in val_records]
    direction = "minimize" if objective == "eval_loss" else "maximize"
    emit = on_event or (lambda row: None)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if devices is None:
        devices = [device] * n_jobs
        if n_jobs > 1:
            import torch

            if torch.cuda.device_count() >= n_jobs:
                devices = [f"cuda:{i}" for i in range(n_jobs)]
    free: "queue.Queue[Any]" = queue.Queue()
    for d in devices:
        free.put(d)

    ensure_database(storage_url)
    storage = optuna.storages.RDBStorage(storage_url)
    study = optuna.create_study(study_name=study_name, storage=storage, direction=direction,
                                sampler=_sampler(space, seed), pruner=_pruner(space), load_if_exists=True)
    study.set_user_attr("space", space.name)
    study.set_user_attr("objective", objective)
    # A trial left RUNNING (process killed) or marked interrupted is not finished: fail it and queue it again.
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.RUNNING:
            storage.set_trial_user_attr(t._trial_id, "interrupted", True)
            storage.set_trial_user_attr(t._trial_id, "fail_reason", "interrupted: the run stopped during this trial")
            requeue = not t.user_attrs.get("requeued")
            if requeue:
                storage.set_trial_user_attr(t._trial_id, "requeued", True)
            storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            if requeue:
                study.enqueue_trial(t.params, skip_if_exists=False)
                emit({"event": "requeued", "trial": t.number, "params": t.params})

    def finished() -> int:
        done = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
        return sum(1 for t in study.get_trials(deepcopy=False, states=done) if not t.user_attrs.get("interrupted"))

    def objective_fn(trial: "optuna.Trial") -> float:
        params = {p.name: p.suggest(trial) for p in space.params}
        overlay = {**dict(space.fixed), **params}
        try:
            config = base_config.replace(**overlay)
        except ConfigError as exc:
            trial.set_user_attr("fail_reason", f"invalid config: {exc}")
            raise
        run_dir = out_dir / "trials" / sha256_json(overlay)[:16]
        trial.set_user_attr("run_dir", str(run_dir))
        emit({"event": "trial_start", "trial": trial.number, "params": params})

        def on_log(row: dict) -> None:
            emit({**row, "trial": trial.number})
            loss = row.get("loss")
            if row.get("event") == "train" and loss is not None and not math.isfinite(loss):
                raise TrialFailed(f"NaN/inf training loss at step {row.get('step')}")
            ev = row.get("eval_loss")
            if row.get("event") == "eval" and ev is not None and row.get("step"):
                if not math.isfinite(ev):
                    raise TrialFailed(f"NaN/inf eval loss at step {row.get('step')}")
                trial.report(float(ev), int(row["step"]))
                if trial.should_prune():
                    raise optuna.TrialPruned(f"eval loss {ev:.4f} at step {row['step']} below the median of others")

        trial_device = free.get()
        trial.set_user_attr("device", str(trial_device))
        try:
            result = train_fn(config, train_records, val_records, data_dir, run_dir, on_log=on_log,
                              device=trial_device)
            s = result.summary
            trial.set_user_attr("final_eval_loss", s.get("final_eval_loss"))
            trial.set_user_attr("final_train_loss", s.get("final_train_loss"))
            trial.set_user_attr("steps", s.get("steps"))
            if objective == "eval_loss":
                value = s.get("final_eval_loss")
                if value is None:
                    raise TrialFailed("no eval loss: set max_eval_samples > 0 and give a val split")
            else:
                value = _teds_score(config, run_dir, val_records, data_dir, teds_samples, max_new_tokens,
                                    trial_device)
            if not math.isfinite(value):
                raise TrialFailed(f"objective {objective} is {value}")
        except optuna.TrialPruned:
            emit({"event": "trial_pruned", "trial": trial.number})
            raise
        except Exception as exc:  # recorded with its reason; the study goes on
            reason = f"{type(exc).__name__}: {exc}"
            if "out of memory" in str(exc).lower():
                reason = f"out of memory: {exc}"
            trial.set_user_attr("fail_reason", reason[:1000])
            emit({"event": "trial_failed", "trial": trial.number, "reason": reason})
            raise
        except BaseException:
            trial.set_user_attr("interrupted", True)
            raise
        finally:
            free.put(trial_device)
        emit({"event": "trial_done", "trial": trial.number, "value": value})
        return float(value)

    before = finished()
    remaining = n_trials - before
    if space.sampler == "grid":
        remaining = min(remaining, space.grid_size - before)
    if remaining > 0:
        # catch: a failing trial is recorded (FAIL + fail_reason) and the next one starts
        optimize = lambda: study.optimize(objective_fn, n_trials=remaining, n_jobs=n_jobs, catch=(Exception,),
                                          gc_after_trial=True)
        if isolated:
            _optimize_stopping_children(optimize)
        else:
            optimize()
    return _write_outputs(study, space, base_config, out_dir, storage_url, objective, direction, finished() - before)


def _optimize_stopping_children(optimize: Callable[[], None]) -> None:
    """Run ``optimize`` in a helper thread so that this thread can take a KeyboardInterrupt (Optuna's thread pool
    would otherwise wait for the running trials to end): then every training child is stopped, each running trial
    stays running (:class:`ocr_ft.train.isolated.TrainInterrupted`; a resumed study runs it again), and the
    interrupt is raised here."""
    import threading

    from .isolated import stop_all

    failure: list[BaseException] = []

    def target() -> None:
        try:
            optimize()
        except BaseException as exc:  # noqa: BLE001 - raised again in the calling thread
            failure.append(exc)

    worker = threading.Thread(target=target, name="optuna-optimize", daemon=True)
    worker.start()
    try:
        while worker.is_alive():
            worker.join(0.2)
    except BaseException:
        stop_all()
        worker.join()
        raise
    if failure:
        raise failure[0]


def _trial_rows(study) -> list[dict[str, Any]]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        rows.append({
            "number": t.number, "state": t.state.name.lower(), "value": t.value,
            "interrupted": bool(t.user_attrs.get("interrupted")), "fail_reason": t.user_attrs.get("fail_reason"),
            "duration_s": round(t.duration.total_seconds(), 2) if t.duration else None,
            "last_step": t.last_step, **{f"param_{k}": v for k, v in t.params.items()},
            "run_dir": t.user_attrs.get("run_dir"),
        })
    return rows


def _write_outputs(study, space: SearchSpace, base_config: TrainConfig, out_dir: Path, storage_url: str,
                   objective: str, direction: str, ran_now: int) -> StudyResult:
    from optuna.trial import TrialState

    rows = _trial_rows(study)
    trials_json = atomic_write_json(out_dir / "trials.json", rows)
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    trials_csv = out_dir / "trials.csv"
    with open(trials_csv, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys or ["number"])
        writer.writeheader()
        writer.writerows(rows)
    counts = {state: sum(1 for r in rows if r["state"] == state and not r["interrupted"])
              for state in ("complete", "pruned", "fail")}
    counts["interrupted"] = sum(1 for r in rows if r["interrupted"])
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    best = study.best_trial if complete else None
    overlay_path = None
    if best is not None:
        overlay = {**dict(space.fixed), **best.params}
        header = (f"# Best trial {best.number} of study {study.study_name} ({objective} = {best.value:.6g}).\n"
                  f"# A training overlay: load_config(this file, base_model=...) or lora_checkpoint use_search: true.\n")
        overlay_path = atomic_write_text(out_dir / "best_overlay.yaml",
                                         header + yaml.safe_dump(overlay, sort_keys=True, allow_unicode=True))
        atomic_write_json(out_dir / "best.json", {"study": study.study_name, "trial": best.number,
                                                  "value": best.value, "objective": objective,
                                                  "params": best.params, "overlay": str(overlay_path)})
    importances: dict[str, float] = {}
    if len(complete) >= 2:
        try:
            import optuna

            importances = {k: round(float(v), 4) for k, v in optuna.importance.get_param_importances(study).items()}
        except Exception:  # noqa: BLE001 - e.g. every completed trial had the same params: no plot
            importances = {}
    plots = _plots(rows, importances, objective, direction, out_dir)
    return StudyResult(
        study_name=study.study_name, storage=redact_url(storage_url), objective=objective, direction=direction,
        best_trial=best.number if best else None, best_value=best.value if best else None,
        best_params=dict(best.params) if best else {}, best_overlay=overlay_path, trials_csv=trials_csv,
        trials_json=trials_json, counts=counts, importances=importances, plots=plots, ran_now=ran_now,
    )


def _plots(rows: list[dict], importances: dict[str, float], objective: str, direction: str,
           out_dir: Path) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots: dict[str, Path] = {}
    done = [r for r in rows if r["state"] == "complete" and r["value"] is not None]
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
    if done:
        xs, ys = [r["number"] for r in done], [r["value"] for r in done]
        ax.scatter(xs, ys, label=f"{objective} (complete)")
        best, run = [], None
        for y in ys:
            run = y if run is None else (min(run, y) if direction == "minimize" else max(run, y))
            best.append(run)
        ax.step(xs, best, where="post", color="tab:red", label="best so far")
    for state, marker in (("pruned", "x"), ("fail", "v")):
        xs = [r["number"] for r in rows if r["state"] == state and not r["interrupted"]]
        if xs:
            y0 = min((r["value"] for r in done), default=0.0)
            ax.scatter(xs, [y0] * len(xs), marker=marker, color="grey", label=state)
    ax.set_xlabel("trial")
    ax.set_ylabel(objective)
    ax.set_title("optimisation history")
    ax.grid(alpha=0.3)
    if rows:
        ax.legend(fontsize=8)
    fig.tight_layout()
    plots["history"] = out_dir / "history.png"
    fig.savefig(plots["history"])
    plt.close(fig)
    if importances:
        fig, ax = plt.subplots(figsize=(6, 0.4 * len(importances) + 1.2), dpi=100)
        names = list(importances)[::-1]
        ax.barh(names, [importances[n] for n in names])
        ax.set_xlabel("importance (Optuna default evaluator, normalised)")
        ax.set_title("parameter importances")
        fig.tight_layout()
        plots["importances"] = out_dir / "importances.png"
        fig.savefig(plots["importances"])
        plt.close(fig)
    return plots


def study_name_for(space: SearchSpace, objective: str, base_identity: str, data_identity: str) -> str:
    """One study per space, objective, base model and training data: change one and a new study starts."""
    return f"lora-{space.name}-{objective}-{sha256_json([space.fingerprint(), base_identity, data_identity])[:12]}"
