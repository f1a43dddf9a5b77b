"""Hyperparameter search: space files, a 3-trial study, resume after a kill, failures recorded, best overlay."""

from __future__ import annotations

import json

import pytest
import yaml

from ocr_ft.train.config import load_config
from ocr_ft.train.search import SearchSpaceError, load_space, run_study

TINY_SPACE = {
    "sampler": "random", "pruner": "median",
    "fixed": {"max_steps": 2, "eval_steps": 1, "save_steps": 1},
    "params": {"learning_rate": {"low": 1e-3, "high": 1e-2, "log": True}, "lora_rank": {"choices": [4, 8]}},
}


def write_space(tmp_path, data, name="tiny_space"):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_shipped_spaces_load():
    assert {p.name for p in load_space("conservative").params} >= {"learning_rate", "lora_rank", "lora_alpha"}
    aggressive = load_space("aggressive")
    assert aggressive.pruner == "asha" and "vision_lora" in {p.name for p in aggressive.params}
    grid = load_space("grid")
    assert grid.sampler == "grid" and grid.grid_size == 8


@pytest.mark.parametrize("data, needle", [
    ({"params": {"learning_rte": {"low": 1e-5, "high": 1e-3}}}, "'learning_rte' (did you mean 'learning_rate'?)"),
    ({"params": {"lora_rank": {"choices": [4]}}, "prunner": "median"}, "unknown top-level key 'prunner'"),
    ({"params": {"lora_rank": {"chioces": [4]}}}, "unknown key of params.lora_rank: 'chioces'"),
    ({"params": {"lora_rank": {"choices": [4]}}, "fixed": {"max_step": 2}}, "'max_step'"),
    ({"params": {"learning_rate": {"low": 1e-3, "high": 1e-5}}}, "low < high"),
    ({"sampler": "grid", "params": {"learning_rate": {"low": 1e-5, "high": 1e-3}}}, "choices"),
])
def test_bad_space_file_gives_a_clear_error(tmp_path, data, needle):
    path = write_space(tmp_path, data)
    with pytest.raises(SearchSpaceError) as err:
        load_space(path)
    assert needle in str(err.value) and str(path) in str(err.value)


def test_unknown_space_name_lists_the_shipped_ones():
    with pytest.raises(SearchSpaceError, match="conservative"):
        load_space("nope")


def study_kwargs(tmp_path, table_data, tiny_config, space_path, **kw):
    return dict(space=load_space(space_path), base_config=tiny_config, train_records=table_data["train"],
                val_records=table_data["val"], data_dir=table_data["data_dir"], out_dir=tmp_path / "search",
                storage_url=f"sqlite:///{tmp_path / 'studies.db'}", study_name="t", **kw)


@pytest.mark.slow
def test_three_trial_study_completes_and_writes_outputs(tmp_path, table_data, tiny_config):
    res = run_study(**study_kwargs(tmp_path, table_data, tiny_config, write_space(tmp_path, TINY_SPACE), n_trials=3,
                                   train_subset=8))
    assert res.ran_now == 3 and sum(res.counts[s] for s in ("complete", "pruned", "fail")) == 3
    assert res.counts["complete"] >= 1 and res.best_value is not None
    rows = json.loads(res.trials_json.read_text())
    assert [r["number"] for r in rows] == [0, 1, 2]
    best_row = next(r for r in rows if r["number"] == res.best_trial)
    assert best_row["value"] == res.best_value == min(r["value"] for r in rows if r["state"] == "complete")
    overlay = yaml.safe_load(res.best_overlay.read_text())
    assert overlay["learning_rate"] == pytest.approx(res.best_params["learning_rate"]) and overlay["max_steps"] == 2
    assert res.plots["history"].stat().st_size > 1000
    assert "number" in res.trials_csv.read_text().splitlines()[0]
    # the best overlay is a valid training overlay
    assert load_config(res.best_overlay, base_model=tiny_config.base_model).lora_rank == overlay["lora_rank"]
    # asked again: nothing reruns
    again = run_study(**study_kwargs(tmp_path, table_data, tiny_config, write_space(tmp_path, TINY_SPACE), n_trials=3))
    assert again.ran_now == 0 and again.best_trial == res.best_trial


class Killed(BaseException):
    """Stands for SIGKILL: nothing in the study gets to record it (the trial stays RUNNING)."""


@pytest.mark.slow
def test_killed_study_resumes_at_trial_2_and_never_reruns_trial_1(tmp_path, table_data, tiny_config):
    space = write_space(tmp_path, TINY_SPACE)
    started: list[int] = []

    def kill_in_trial_1(row):
        if row.get("event") == "trial_start":
            started.append(row["trial"])
        if row.get("trial") == 1 and row.get("event") == "train":
            raise Killed()

    with pytest.raises(Killed):
        run_study(**study_kwargs(tmp_path, table_data, tiny_config, space, n_trials=3, train_subset=8,
                                 on_event=kill_in_trial_1))
    assert started == [0, 1]
    started.clear()
    events: list[dict] = []
    res = run_study(**study_kwargs(tmp_path, table_data, tiny_config, space, n_trials=3, train_subset=8,
                                   on_event=lambda r: (events.append(r), r.get("event") == "trial_start"
                                                       and started.append(r["trial"]))))
    assert started == [2, 3]  # trial 0 not rerun; the interrupted trial 1 runs again as trial 2
    rows = {r["number"]: r for r in json.loads(res.trials_json.read_text())}
    assert rows[1]["interrupted"] and "interrupted" in rows[1]["fail_reason"]
    assert rows[2]["param_learning_rate"] == rows[1]["param_learning_rate"]
    assert res.counts["interrupted"] == 1 and res.counts["complete"] + res.counts["pruned"] + res.counts["fail"] == 3
    assert any(e["event"] == "requeued" and e["trial"] == 1 for e in events)


@pytest.mark.slow
def test_failed_trial_is_recorded_with_its_reason_and_the_study_goes_on(tmp_path, table_data, tiny_config):
    from ocr_ft.train.trainer import train

    calls = []

    def oom_on_first(config, *args, **kw):
        calls.append(config.learning_rate)
        if len(calls) == 1:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        if len(calls) == 2:
            kw["on_log"]({"event": "train", "step": 1, "loss": float("nan")})
        return train(config, *args, **kw)

    res = run_study(**study_kwargs(tmp_path, table_data, tiny_config, write_space(tmp_path, TINY_SPACE), n_trials=3,
                                   train_subset=8, train_fn=oom_on_first))
    rows = json.loads(res.trials_json.read_text())
    assert [r["state"] for r in rows[:2]] == ["fail", "fail"] and rows[2]["state"] == "complete"
    assert rows[0]["fail_reason"].startswith("out of memory") and "NaN" in rows[1]["fail_reason"]
    assert res.counts == {"complete": 1, "pruned": 0, "fail": 2, "interrupted": 0} and res.best_trial == 2


class FakeResult:
    def __init__(self, loss):
        self.summary = {"final_eval_loss": loss, "final_train_loss": loss, "steps": 4}


def test_trial_worse_than_the_median_is_pruned_and_shown_as_pruned(tmp_path, table_data, tiny_config):
    """The pruner sees the intermediate eval losses the trainer reports (a stand-in trainer: no training)."""
    space = write_space(tmp_path, {"sampler": "grid", "pruner": "median", "params": {"lora_rank": {"choices": [4, 8]}}})
    curves = {}

    def fake_train(config, train, val, data_dir, out, on_log, device=None):
        losses = [1.0, 0.8, 0.6, 0.4] if not curves else [2.0, 1.9, 1.8, 1.7]  # the second trial is worse
        curves[config.lora_rank] = losses
        for step, loss in enumerate(losses, start=1):
            on_log({"event": "eval", "step": step, "eval_loss": loss})
        return FakeResult(losses[-1])

    res = run_study(**study_kwargs(tmp_path, table_data, tiny_config, space, n_trials=5, train_fn=fake_train))
    rows = json.loads(res.trials_json.read_text())
    assert len(rows) == 2  # a grid of 2 stops at 2 even when more trials are asked for
    assert [r["state"] for r in rows] == ["complete", "pruned"] and rows[1]["last_step"] == 1
    assert res.counts["pruned"] == 1 and res.best_trial == 0


@pytest.mark.slow
def test_teds_objective_decodes_validation_images_and_is_maximised(tmp_path, table_data, tiny_config):
    space = write_space(tmp_path, {**TINY_SPACE, "params": {"lora_rank": {"choices": [4]}}})
    res = run_study(**study_kwargs(tmp_path, table_data, tiny_config, space, n_trials=1, train_subset=4,
                                   objective="teds", teds_samples=2, max_new_tokens=8))
    assert res.direction == "maximize" and res.counts["complete"] == 1
    assert 0.0 <= res.best_value <= 1.0


def test_storage_url_never_shows_the_password_and_follows_the_deployment(tmp_path, monkeypatch):
    from ocr_ft.defs.search import LoraSearchConfig, _storage_url
    from ocr_ft.resources import OcrFtPaths
    from ocr_ft.train.search import redact_url

    assert redact_url("postgresql+psycopg2://dagster:s3cr%40t@db:5432/x") == "postgresql+psycopg2://dagster:***@db:5432/x"
    paths = OcrFtPaths(data_dir=str(tmp_path / "data"))
    for k in ("DAGSTER_POSTGRES_HOST", "DAGSTER_HOME", "OCR_FT_OPTUNA_STORAGE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    assert _storage_url(LoraSearchConfig(), None, paths) == f"sqlite:///{tmp_path / 'home' / 'optuna' / 'studies.db'}"
    monkeypatch.setenv("DAGSTER_POSTGRES_HOST", "postgres")
    monkeypatch.setenv("DAGSTER_POSTGRES_USER", "dagster")
    monkeypatch.setenv("DAGSTER_POSTGRES_PASSWORD", "p@ss")
    monkeypatch.setenv("DAGSTER_POSTGRES_DB", "dagster")
    url = _storage_url(LoraSearchConfig(), None, paths)
    assert url == "postgresql+psycopg2://dagster:p%40ss@postgres:5432/dagster_optuna"
    assert "p%40ss" not in redact_url(url) and "p@ss" not in redact_url(url)
