"""Training in a child process: same result as in-process, on_log exceptions stop the child and come back,
a crashing child reports its error, and a 2-trial study with n_jobs=2 trains each trial in its own process."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest
import yaml

from ocr_ft.train import isolated
from ocr_ft.train.isolated import IsolatedTrainError, TrainInterrupted, child_env, train_isolated

_TIMING = {"samples_per_second", "train_runtime_s", "steps_per_second", "tokens_per_second",
           "peak_memory_bytes", "fingerprint"}


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.fixture
def short_config(tiny_config):
    return tiny_config.replace(max_steps=2, save_steps=1, eval_steps=1, report_to="none", dataloader_workers=0)


def test_child_env_maps_cuda_index_to_the_visible_gpu():
    env, dev = child_env("cuda:1", {"CUDA_VISIBLE_DEVICES": "4,5", "HF_HOME": "/h"})
    assert (env["CUDA_VISIBLE_DEVICES"], dev, env["HF_HOME"]) == ("5", "cuda:0", "/h")
    env, dev = child_env("cuda:3", {})
    assert (env["CUDA_VISIBLE_DEVICES"], dev) == ("3", "cuda:0")
    env, dev = child_env("cpu", {"CUDA_VISIBLE_DEVICES": "0"})
    assert (env, dev) == ({"CUDA_VISIBLE_DEVICES": "0"}, "cpu")
    assert child_env(None, {}) == ({}, None)
    with pytest.raises(ValueError, match="CUDA_VISIBLE_DEVICES=0,1 shows 2"):
        child_env("cuda:2", {"CUDA_VISIBLE_DEVICES": "0,1"})


@pytest.mark.slow
def test_isolated_train_gives_the_in_process_summary_and_loss_log(tmp_path, short_config, table_data):
    from ocr_ft.train.trainer import train

    args = (table_data["train"][:8], table_data["val"][:2], table_data["data_dir"])
    here_logs: list[dict] = []
    here = train(short_config, *args, tmp_path / "here", on_log=here_logs.append, device="cpu")
    pids: list[int] = []
    child_logs: list[dict] = []
    there = train_isolated(short_config, *args, tmp_path / "there", on_log=child_logs.append, device="cpu",
                           on_start=pids.append)
    assert pids and pids[0] != os.getpid() and _gone(pids[0])
    assert there.output_dir == tmp_path / "there" and there.steps == here.steps == 2
    assert there.summary["status"] == "completed"
    for key in ("final_train_loss", "final_eval_loss", "initial_train_loss"):
        assert there.summary[key] == pytest.approx(here.summary[key], rel=1e-4), key
    assert {k: v for k, v in there.summary.items() if k not in _TIMING and "loss" not in k} == \
        {k: v for k, v in here.summary.items() if k not in _TIMING and "loss" not in k}
    rows = [json.loads(x) for x in (tmp_path / "there" / "loss_log.jsonl").read_text().splitlines()]
    ref = [json.loads(x) for x in (tmp_path / "here" / "loss_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [r["step"] for r in ref] and [r["step"] for r in rows][-2:] == [1, 2]
    for key in ("loss", "eval_loss"):
        assert [r.get(key) is None for r in rows] == [r.get(key) is None for r in ref], key
        assert [r[key] for r in rows if key in r] == pytest.approx([r[key] for r in ref if key in r], rel=1e-4), key
    assert sum(r.get("loss") is not None for r in rows) == 2 and sum(r.get("eval_loss") is not None for r in rows) >= 2
    # every on_log row came back to the parent, in order
    assert [(r["event"], r.get("step")) for r in child_logs] == [(r["event"], r.get("step")) for r in here_logs]
    assert (tmp_path / "there" / "adapter" / "adapter_config.json").is_file()


class Stop(Exception):
    pass


@pytest.mark.slow
def test_on_log_that_raises_stops_the_child_and_is_raised_again(tmp_path, tiny_config, table_data):
    config = tiny_config.replace(max_steps=50, save_steps=50, report_to="none", dataloader_workers=0)
    pids: list[int] = []
    seen: list[dict] = []

    raised_at: list[float] = []

    def on_log(row):
        seen.append(row)
        if row.get("event") == "train":
            raised_at.append(time.monotonic())
            raise Stop(f"stop at step {row['step']}")

    with pytest.raises(Stop, match="stop at step 1"):
        train_isolated(config, table_data["train"], table_data["val"], table_data["data_dir"], tmp_path / "run",
                       on_log=on_log, device="cpu", grace_s=5, on_start=pids.append)
    assert time.monotonic() - raised_at[0] < 10  # stopped at once (SIGTERM), not after training on
    assert _gone(pids[0]) and isolated.live_pids() == []
    assert [r["event"] for r in seen].count("train") == 1  # no row is delivered after the raise
    assert not (tmp_path / "run" / "summary.json").exists()  # 50 steps were never trained


def test_child_error_comes_back_with_its_type_message_and_traceback(tmp_path, tiny_config, table_data):
    config = tiny_config.replace(nproc=2)  # valid config, refused by train() inside the child
    with pytest.raises(IsolatedTrainError) as err:
        train_isolated(config, table_data["train"][:2], [], table_data["data_dir"], tmp_path / "run", device="cpu")
    msg = str(err.value)
    assert err.value.exc_type == "ValueError" and msg.startswith("ValueError: nproc: 2 needs 2 processes")
    assert "trainer.py" in msg and "Traceback" in err.value.child_traceback and err.value.exitcode == 1


def test_child_killed_without_a_word_reports_its_signal(tmp_path, tiny_config, table_data):
    with pytest.raises(IsolatedTrainError, match="killed by signal SIGKILL"):
        train_isolated(tiny_config, table_data["train"][:2], [], table_data["data_dir"], tmp_path / "run",
                       device="cpu", on_start=lambda pid: os.kill(pid, signal.SIGKILL))


@pytest.mark.slow
def test_stop_all_interrupts_a_waiting_train(tmp_path, tiny_config, table_data):
    config = tiny_config.replace(max_steps=50, save_steps=50, report_to="none", dataloader_workers=0)
    started = threading.Event()
    pids: list[int] = []
    raised: list[BaseException] = []

    def run():
        try:
            train_isolated(config, table_data["train"], [], table_data["data_dir"], tmp_path / "run",
                           on_log=lambda r: r.get("event") == "train" and started.set(), device="cpu",
                           on_start=pids.append)
        except BaseException as exc:  # noqa: BLE001
            raised.append(exc)

    t = threading.Thread(target=run)
    t.start()
    assert started.wait(120)
    t0 = time.monotonic()
    assert isolated.stop_all(grace_s=5) == 1
    t.join(30)
    assert not t.is_alive() and time.monotonic() - t0 < 15
    assert len(raised) == 1 and isinstance(raised[0], TrainInterrupted) and _gone(pids[0])


@pytest.mark.slow
def test_two_trial_study_with_two_jobs_trains_each_trial_in_its_own_process(tmp_path, table_data, tiny_config,
                                                                            monkeypatch):
    from ocr_ft.train.search import load_space, run_study

    space_path = tmp_path / "space.yaml"
    space_path.write_text(yaml.safe_dump({
        "sampler": "grid", "pruner": "none", "fixed": {"max_steps": 2, "eval_steps": 2, "save_steps": 2},
        "params": {"lora_rank": {"choices": [4, 8]}}}), encoding="utf-8")
    calls: list[tuple[str, int]] = []
    real = isolated.train_isolated

    def spy(config, *args, **kw):
        return real(config, *args, on_start=lambda pid: calls.append((config.lora_rank, pid)), **kw)

    monkeypatch.setattr(isolated, "train_isolated", spy)
    events: list[dict] = []
    res = run_study(load_space(space_path), tiny_config.replace(report_to="none", dataloader_workers=0),
                    table_data["train"], table_data["val"][:2], table_data["data_dir"], tmp_path / "search",
                    f"sqlite:///{tmp_path / 'studies.db'}", "t", n_trials=2, train_subset=4, n_jobs=2, device="cpu",
                    on_event=events.append)
    assert res.counts == {"complete": 2, "pruned": 0, "fail": 0, "interrupted": 0}
    assert sorted(rank for rank, _ in calls) == [4, 8]
    pids = {pid for _, pid in calls}
    assert len(pids) == 2 and os.getpid() not in pids
    # the children's training rows reached on_event, tagged with their trial
    assert {e["trial"] for e in events if e.get("event") == "train"} == {0, 1}


_PARENT_SCRIPT = """
import pickle, sys
from ocr_ft.train.isolated import train_isolated
config, records, data_dir, out = pickle.load(open(sys.argv[1], "rb"))
train_isolated(config, records, [], data_dir, out, on_log=None, device="cpu",
               on_start=lambda pid: print("CHILD", pid, flush=True))
"""


# the child writes nothing to its stderr pipe either (a write to it after the parent died would end the child too)
_QUIET = {"TQDM_DISABLE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error",
          "PYTHONWARNINGS": "ignore"}


@pytest.mark.slow
def test_a_killed_parent_leaves_no_orphan(tmp_path, tiny_config, table_data):
    import pickle
    import subprocess
    import sys

    config = tiny_config.replace(max_steps=500, save_steps=500, report_to="none", dataloader_workers=0)
    job = tmp_path / "job.pkl"
    job.write_bytes(pickle.dumps((config, table_data["train"], str(table_data["data_dir"]), str(tmp_path / "run"))))
    script = tmp_path / "parent.py"
    script.write_text(_PARENT_SCRIPT, encoding="utf-8")
    parent = subprocess.Popen([sys.executable, str(script), str(job)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, **_QUIET, "PYTHONPATH": os.pathsep.join(
                                  [str(isolated.Path(isolated.__file__).resolve().parents[2]),
                                   os.environ.get("PYTHONPATH", "")])})
    try:
        child_pid = None
        line = parent.stdout.readline()
        assert line.startswith("CHILD"), line
        child_pid = int(line.split()[1])
        time.sleep(4)  # the child has its job and is loading the model; no on_log: it never writes to the parent
        assert not _gone(child_pid)
        parent.kill()  # SIGKILL: the parent runs no cleanup at all
        parent.wait()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not _gone(child_pid):
            time.sleep(0.1)
        assert _gone(child_pid), "the training child outlived its killed parent"
    finally:
        if parent.poll() is None:
            parent.kill()


@pytest.mark.slow
def test_interrupted_parallel_study_stops_its_children_and_the_trials_run_again(tmp_path, table_data, tiny_config):
    import _thread

    from ocr_ft.train.search import load_space, run_study

    space_path = tmp_path / "space.yaml"
    space_path.write_text(yaml.safe_dump({
        "sampler": "random", "pruner": "none", "fixed": {"max_steps": 30, "eval_steps": 30, "save_steps": 30},
        "params": {"learning_rate": {"low": 1e-3, "high": 1e-2, "log": True}}}), encoding="utf-8")
    kw = dict(space=load_space(space_path), base_config=tiny_config.replace(report_to="none", dataloader_workers=0),
              train_records=table_data["train"], val_records=table_data["val"][:2], data_dir=table_data["data_dir"],
              out_dir=tmp_path / "search", storage_url=f"sqlite:///{tmp_path / 'studies.db'}", study_name="t",
              n_trials=2, train_subset=4, n_jobs=2, device="cpu")
    training: set[int] = set()

    def ctrl_c_when_both_train(row):
        if row.get("event") == "train":
            training.add(row["trial"])
            if training == {0, 1}:
                training.add(-1)
                _thread.interrupt_main()  # as a Ctrl-C in the terminal: KeyboardInterrupt in the main thread

    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run_study(**kw, on_event=ctrl_c_when_both_train)
    assert time.monotonic() - t0 < 120 and isolated.live_pids() == []
    import optuna

    trials = optuna.load_study(study_name="t", storage=kw["storage_url"]).get_trials()
    # left running and marked interrupted: the next run_study fails them as interrupted and enqueues them again
    assert [(t.state.name, t.user_attrs.get("interrupted")) for t in trials] == [("RUNNING", True)] * 2
