"""The trainer: loss goes down, outputs are complete, budgets leave samples out, runs resume exactly."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from ocr_ft.train.config import load_config
from ocr_ft.train.trainer import train


def read_rows(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_loss_decreases_and_outputs_are_complete(trained_run, tiny_config):
    result, logs = trained_run
    s = result.summary
    assert s["status"] == "completed" and s["steps"] == 8 == s["total_steps"] and s["steps_per_epoch"] == 4
    assert s["final_train_loss"] < s["initial_train_loss"] - 0.5
    assert s["final_eval_loss"] < s["initial_eval_loss"]
    for key in ("samples_per_second", "tokens_per_second", "peak_memory_bytes", "train_runtime_s"):
        assert s[key] > 0, key
    assert (result.adapter_dir / "adapter_config.json").is_file()
    assert (result.adapter_dir / "adapter_model.safetensors").is_file()
    assert load_config(result.config_path) == tiny_config
    assert json.loads(result.summary_path.read_text()) == s
    rows = read_rows(result.loss_log_path)
    assert [r["step"] for r in rows] == list(range(0, 9))
    assert rows[0].keys() == {"step", "eval_loss"} and rows[-1]["eval_loss"] == s["final_eval_loss"]
    assert all({"loss", "lr", "grad_norm", "epoch"} <= r.keys() for r in rows[1:])
    assert rows[1]["lr"] == pytest.approx(5e-3) and rows[-1]["lr"] < rows[1]["lr"]  # cosine decays
    train_events = [e for e in logs if e["event"] == "train"]
    assert [e["step"] for e in train_events] == list(range(1, 9))
    assert all(e["total_steps"] == 8 and "loss" in e for e in train_events)
    assert logs[-1]["event"] == "done"


def test_over_budget_sample_is_reported_and_left_out(trained_run):
    result, logs = trained_run
    s = result.summary
    assert s["train_samples"] == 16
    [left] = s["left_out"]["train"]
    assert left["name"] == "huge_table.png" and left["reason"] == "over_budget" and left["tokens"] > 512
    assert "max_seq_len 512" in left["detail"]
    assert any(e["event"] == "left_out" and e["name"] == "huge_table.png" for e in logs)


def test_killed_run_resumes_at_the_right_step(trained_run, tiny_config, table_data, tmp_path):
    reference, _ = trained_run
    records = table_data["train"] + [table_data["oversized"]]
    out = tmp_path / "run"

    class Killed(Exception):
        pass

    def kill_at_step_5(row):
        if row["event"] == "train" and row["step"] == 5:
            raise Killed

    with pytest.raises(Killed):
        train(tiny_config, records, table_data["val"], table_data["data_dir"], out, on_log=kill_at_step_5)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-00000002", "step-00000004"]
    assert not (out / "summary.json").exists()

    events: list[dict] = []
    result = train(tiny_config, records, table_data["val"], table_data["data_dir"], out, on_log=events.append)
    start = next(e for e in events if e["event"] == "start")
    assert start["resumed_from_step"] == 4 and start["step"] == 4
    assert [e["step"] for e in events if e["event"] == "train"] == [5, 6, 7, 8]
    assert result.summary["resumed_from_step"] == 4 and result.steps == 8
    # identical to the uninterrupted run: same weights, same loss curve
    a = load_file(str(reference.adapter_dir / "adapter_model.safetensors"))
    b = load_file(str(result.adapter_dir / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    got, want = read_rows(result.loss_log_path), read_rows(reference.loss_log_path)
    assert [r["step"] for r in got] == [r["step"] for r in want]
    assert [r["loss"] for r in got[1:]] == pytest.approx([r["loss"] for r in want[1:]], rel=1e-5)

    # a finished run is returned as is
    again: list[dict] = []
    train(tiny_config, records, table_data["val"], table_data["data_dir"], out, on_log=again.append)
    assert [e["event"] for e in again if e["event"] != "left_out"] == ["already_complete"]


def test_changed_config_does_not_resume_silently(tiny_config, table_data, tmp_path):
    out = tmp_path / "run"

    def stop(row):
        if row["event"] == "checkpoint":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(tiny_config, table_data["train"], [], table_data["data_dir"], out, on_log=stop)
    changed = tiny_config.replace(learning_rate=1e-3, max_steps=2, eval_at_start=False)
    with pytest.raises(ValueError, match="different run"):
        train(changed, table_data["train"], [], table_data["data_dir"], out)
    # resume: false starts over in the same directory
    result = train(changed.replace(resume=False), table_data["train"], [], table_data["data_dir"], out)
    assert result.steps == 2 and result.summary["resumed_from_step"] is None
    assert not any((out / "checkpoints").glob("step-*"))  # the other run's checkpoints are gone


def test_no_fitting_sample_is_a_clear_error(tiny_config, table_data, tmp_path):
    with pytest.raises(ValueError, match="no training sample fits.*over_budget"):
        train(tiny_config, [table_data["oversized"]], [], table_data["data_dir"], tmp_path / "run")


def test_gradient_checkpointing_and_vision_lora_train_the_same_step(tiny_config, table_data, tmp_path):
    """The seed recipe's GPU settings (checkpointing on) run on CPU and change nothing numerically."""
    cfg = tiny_config.replace(max_steps=1, eval_at_start=False, max_eval_samples=0, vision_lora=True)
    runs = [train(cfg.replace(gradient_checkpointing=flag), table_data["train"], [], table_data["data_dir"],
                  tmp_path / str(flag)) for flag in (False, True)]
    assert runs[0].summary["initial_train_loss"] == pytest.approx(runs[1].summary["initial_train_loss"], rel=1e-6)
    a, b = (load_file(str(r.adapter_dir / "adapter_model.safetensors")) for r in runs)
    assert any(".visual." in k for k in a)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def board_scalars(run_dir, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def test_tensorboard_events_and_padding_fraction_are_written(trained_run):
    result, _ = trained_run
    s = result.summary
    rows = read_rows(result.loss_log_path)
    assert s["tensorboard_dir"] == "tensorboard" and any((result.output_dir / "tensorboard").glob("events.out.*"))
    losses = board_scalars(result.output_dir, "train/loss")
    assert [st for st, _ in losses] == [r["step"] for r in rows[1:]]
    assert [v for _, v in losses] == pytest.approx([r["loss"] for r in rows[1:]], rel=1e-5)
    assert [st for st, _ in board_scalars(result.output_dir, "eval/loss")] == [0, 8]
    # the tiny tables differ in size, so batches of two carry some padding, never most of the grid
    assert 0.0 < s["padding_fraction"] < 0.5 and s["group_by_length"] is False


def test_length_grouping_keeps_every_sample_once_and_cuts_padding(tiny_config):
    from ocr_ft.train.trainer import padding_fraction, step_micro_batches

    rng = __import__("random").Random(0)
    n, lengths = 64, [rng.randint(100, 2000) for _ in range(64)]
    cfg = tiny_config.replace(num_epochs=2, max_steps=None)
    grouped = cfg.replace(group_by_length=True)
    steps = n // cfg.effective_batch_size
    for c in (cfg, grouped):
        for epoch in range(2):
            lists = [b for s in range(epoch * steps, (epoch + 1) * steps) for b in step_micro_batches(n, c, s, lengths)]
            assert sorted(i for b in lists for i in b) == list(range(n))
    plain = [b for s in range(steps) for b in step_micro_batches(n, cfg, s, lengths)]
    packed = [b for s in range(steps) for b in step_micro_batches(n, grouped, s, lengths)]
    assert padding_fraction(packed, lengths) < padding_fraction(plain, lengths) / 2
    # the epochs still mix: the step order of epoch 1 is not epoch 0's again, and not longest first
    first = [step_micro_batches(n, grouped, s, lengths) for s in range(steps)]
    second = [step_micro_batches(n, grouped, s, lengths) for s in range(steps, 2 * steps)]
    assert first != second
    assert max(lengths[i] for i in first[0][0]) != max(lengths)
    with pytest.raises(ValueError, match="group_by_length needs"):
        step_micro_batches(n, grouped, 0)


def test_resumed_run_writes_each_tensorboard_step_once(tiny_config, table_data, tmp_path):
    out = tmp_path / "run"
    cfg = tiny_config.replace(max_steps=4, eval_at_start=False, max_eval_samples=0)

    def kill_at_step_3(row):
        if row["event"] == "train" and row["step"] == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, table_data["train"], [], table_data["data_dir"], out, on_log=kill_at_step_3)
    train(cfg, table_data["train"], [], table_data["data_dir"], out)
    assert [st for st, _ in board_scalars(out, "train/loss")] == [1, 2, 3, 4]


def test_qlora_on_cpu_is_a_clear_error_before_loading(tiny_config, table_data, tmp_path):
    cfg = tiny_config.replace(quantization="4bit")
    with pytest.raises(ValueError, match="quantization: 4bit.*needs a CUDA GPU.*on cpu"):
        train(cfg, table_data["train"], [], table_data["data_dir"], tmp_path / "run", device="cpu")
    assert not (tmp_path / "run").exists()  # nothing written


def test_qlora_config_is_nf4_with_the_run_dtype():
    from ocr_ft.train.trainer import qlora_config

    q = qlora_config(torch.bfloat16)
    assert q.load_in_4bit and q.bnb_4bit_quant_type == "nf4" and q.bnb_4bit_compute_dtype == torch.bfloat16
