"""The trainer: loss goes down, outputs are complete, budgets leave samples out, runs resume exactly."""

from __future__ import annotations

import importlib.util
import json
import shutil

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
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-2", "checkpoint-4"]
    assert not (out / "summary.json").exists()
    # a checkpoint folder without its completion mark (a process killed while writing it) is never resumed from
    half = out / "checkpoints" / "checkpoint-6"
    shutil.copytree(out / "checkpoints" / "checkpoint-4", half)
    (half / "ocr_ft_checkpoint.json").unlink()

    events: list[dict] = []
    result = train(tiny_config, records, table_data["val"], table_data["data_dir"], out, on_log=events.append)
    start = next(e for e in events if e["event"] == "start")
    assert start["resumed_from_step"] == 4 and start["step"] == 4
    assert [e["step"] for e in events if e["event"] == "train"] == [5, 6, 7, 8]
    assert result.summary["resumed_from_step"] == 4 and result.steps == 8
    assert (half / "ocr_ft_checkpoint.json").is_file()  # rewritten, complete, by the resumed run at step 6
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
    assert not any((out / "checkpoints").glob("checkpoint-*"))  # the other run's are gone, none after the last step


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


def test_lm_head_runs_only_on_answer_positions(tiny_config, table_data):
    """answer_loss_sum hands the LM head exactly the positions that predict a label token."""
    from ocr_ft.train.inputs import IGNORE_INDEX, TrainingCollator, load_image
    from ocr_ft.train.modeling import load_model_and_processor
    from ocr_ft.train.trainer import answer_loss_sum

    model, bundle = load_model_and_processor(tiny_config.base_model, tiny_config, device="cpu")
    recs = table_data["train"][:2]
    batch = TrainingCollator(bundle)([(load_image(table_data["data_dir"] / r["image_path"]), r["ground_truth_html"])
                                      for r in recs])
    seen = []
    handle = model.lm_head.register_forward_hook(lambda m, args, out: seen.append(tuple(args[0].shape)))
    with torch.no_grad():
        total, count = answer_loss_sum(model, batch)
    handle.remove()
    answers = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
    assert count == answers and seen == [(answers, model.config.text_config.hidden_size)]
    assert answers < batch["input_ids"].numel() / 2  # image and prompt positions were skipped
    with torch.no_grad():
        assert float(total) / count == pytest.approx(float(model(**batch).loss), rel=1e-5)


def test_gradient_accumulation_gives_the_large_batch_update(tiny_config, table_data, tmp_path):
    """2 micro-batches of 2 accumulate to the update of one batch of 4: the loss is divided by the whole step's
    answer tokens (the Trainer's num_items_in_batch), not averaged per micro-batch."""
    cfg = tiny_config.replace(max_steps=1, eval_at_start=False, max_eval_samples=0, lora_dropout=0.0, report_to="none")
    small = train(cfg, table_data["train"], [], table_data["data_dir"], tmp_path / "ga2")
    large = train(cfg.replace(per_device_batch_size=4, gradient_accumulation_steps=1), table_data["train"], [],
                  table_data["data_dir"], tmp_path / "ga1")
    assert small.summary["initial_train_loss"] == pytest.approx(large.summary["initial_train_loss"], rel=1e-5)
    # the gradient itself (its norm before clipping; Adam's first step only keeps its signs, so the weights are
    # no finer test): a per-micro-batch mean would weight the two halves by 1/2 each instead of by their tokens
    norms = [read_rows(r.loss_log_path)[0]["grad_norm"] for r in (small, large)]
    assert norms[0] == pytest.approx(norms[1], rel=1e-4)
    unweighted = train(cfg.replace(gradient_accumulation_steps=1, max_steps=2), table_data["train"], [],
                       table_data["data_dir"], tmp_path / "mb")  # its first step is the first micro-batch alone
    assert read_rows(unweighted.loss_log_path)[0]["grad_norm"] != pytest.approx(norms[0], rel=1e-2)


def test_training_arguments_follow_the_config(tiny_config, tmp_path):
    from ocr_ft.train.trainer import training_arguments

    cfg = tiny_config.replace(gradient_accumulation_steps=4, lr_scheduler="constant", report_to="none",
                              gradient_checkpointing=True, eval_steps=3, dataloader_workers=1)
    args = training_arguments(cfg, tmp_path, total_steps=10, warmup_steps=2, device=torch.device("cpu"),
                              dtype=torch.float32, world_size=2, has_eval=True)
    assert args.output_dir == str(tmp_path / "checkpoints")
    assert args.gradient_accumulation_steps == 2 and args.per_device_train_batch_size == 2  # 4 / 2 processes
    assert args.max_steps == 10 and args.warmup_steps == 2 and args.lr_scheduler_type == "constant_with_warmup"
    assert args.learning_rate == cfg.learning_rate and args.max_grad_norm == cfg.max_grad_norm
    assert args.activation_checkpointing and args.activation_checkpointing_kwargs == {"use_reentrant": False}
    assert args.eval_strategy == "steps" and args.eval_steps == 3 and args.save_steps == 2
    assert args.report_to == [] and args.remove_unused_columns is False and args.dataloader_num_workers == 1
    assert args.ddp_find_unused_parameters is False and not args.bf16 and args.use_cpu
    assert args.average_tokens_across_devices and not args.logging_nan_inf_filter
    with pytest.raises(ValueError, match="multiple of the 3 processes"):
        training_arguments(cfg, tmp_path, 10, 0, torch.device("cpu"), torch.float32, world_size=3)


def test_distributed_strategies_ship_valid_configs_and_clear_errors(tiny_config, table_data, tmp_path):
    from ocr_ft.train.trainer import DISTRIBUTED_CONFIGS, check_integrations, strategy_options

    for stage in (2, 3):
        ds = json.loads((DISTRIBUTED_CONFIGS / f"deepspeed_zero{stage}.json").read_text())
        assert ds["zero_optimization"]["stage"] == stage
        # the HF integration fills these from TrainingArguments, so batch and accumulation stay ours
        assert ds["gradient_accumulation_steps"] == ds["train_micro_batch_size_per_gpu"] == "auto"
        opts = strategy_options(tiny_config.replace(distributed=f"deepspeed_zero{stage}"), 2)
        assert opts == {"deepspeed": str(DISTRIBUTED_CONFIGS / f"deepspeed_zero{stage}.json")}
    fsdp = strategy_options(tiny_config.replace(distributed="fsdp"), 2)
    assert fsdp["fsdp"] is True and "GlmOcrTextDecoderLayer" in fsdp["fsdp_config"]["transformer_layer_cls_to_wrap"]
    assert strategy_options(tiny_config, 2) == {}  # ddp: accelerate's default with several processes
    with pytest.raises(ValueError, match="fsdp shards the model over several processes.*nproc >= 2"):
        train(tiny_config.replace(distributed="fsdp"), table_data["train"], [], table_data["data_dir"], tmp_path / "f")
    if importlib.util.find_spec("deepspeed") is None:
        with pytest.raises(ValueError, match="deepspeed_zero3 needs the deepspeed package: pip install deepspeed"):
            check_integrations(tiny_config.replace(distributed="deepspeed_zero3"))
    for name in ("mlflow", "wandb"):
        if importlib.util.find_spec(name) is None:
            with pytest.raises(ValueError, match=f"report_to: {name} needs the {name} package"):
                train(tiny_config.replace(report_to=f"tensorboard,{name}"), table_data["train"], [],
                      table_data["data_dir"], tmp_path / name)
    assert not (tmp_path / "f").exists() and not (tmp_path / "mlflow").exists()  # refused before writing


def test_report_to_and_distributed_keys_are_validated(tiny_config):
    from ocr_ft.train.config import ConfigError, report_targets

    assert report_targets("tensorboard, mlflow") == ["tensorboard", "mlflow"] and report_targets("none") == []
    with pytest.raises(ConfigError, match="report_to must be one of"):
        tiny_config.replace(report_to="comet")
    with pytest.raises(ConfigError, match="report_to must be one of"):
        tiny_config.replace(report_to="none,wandb")
    with pytest.raises(ConfigError, match="distributed must be one of ddp, fsdp, deepspeed_zero2, deepspeed_zero3"):
        tiny_config.replace(distributed="zero4")
    # how the processes share the work does not change what is computed: a run resumes under another strategy
    assert tiny_config.replace(distributed="fsdp").fingerprint() == tiny_config.fingerprint()
