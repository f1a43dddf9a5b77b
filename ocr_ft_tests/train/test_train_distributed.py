"""Multi-process training on the CPU: 2 gloo processes under torchrun train like 1 process with the same
effective batch, rank 0 alone writes, and a killed 2-process run resumes at the right step."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ocr_ft.storage import atomic_write_jsonl as write_jsonl
from ocr_ft.train.config import ConfigError
from ocr_ft.train.distributed import torchrun_command
from ocr_ft.train.trainer import train

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("dist_train_script.py")
# 2 processes sum the same per-micro-batch gradients in another order (and all-reduce in float32): the loss
# curve matches the 1-process one to this relative tolerance (on this CPU the curves came out bit-identical)
LOSS_RTOL = 1e-4


def read_rows(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def env() -> dict:
    # torchrun's children must import this checkout's ocr_ft, and stay single-threaded on 2 cores
    return {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
            "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_config, table_data):
    root = tmp_path_factory.mktemp("dist")
    # no LoRA dropout: the dropout masks of 2 processes are drawn differently from 1 process's
    config = tiny_config.replace(lora_dropout=0.0, report_to="none")
    files = {"train": root / "train.jsonl", "val": root / "val.jsonl", "config": root / "config.yaml"}
    write_jsonl(files["train"], table_data["train"])
    write_jsonl(files["val"], table_data["val"])
    config.save(files["config"])
    return {"root": root, "config": config, "files": files, "data": table_data}


def torchrun(setup, out: Path, **extra) -> subprocess.CompletedProcess:
    f = setup["files"]
    args = {"config": str(f["config"]), "train": str(f["train"]), "val": str(f["val"]),
            "data_dir": str(setup["data"]["data_dir"]), "out": str(out), **extra}
    path = out.parent / f"{out.name}-args.json"
    path.write_text(json.dumps(args))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", str(SCRIPT), str(path)]
    return subprocess.run(cmd, cwd=REPO, env=env(), capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def one_process(setup):
    out = setup["root"] / "one"
    data = setup["data"]
    return train(setup["config"], data["train"], data["val"], data["data_dir"], out)


@pytest.fixture(scope="module")
def two_processes(setup):
    """The same run through `ocr-ft train --nproc 2` (which starts torchrun itself)."""
    out, f = setup["root"] / "two", setup["files"]
    cmd = [sys.executable, "-m", "ocr_ft.train.cli", "train", "--train", str(f["train"]), "--val", str(f["val"]),
           "--data-dir", str(setup["data"]["data_dir"]), "--out", str(out), "--config", str(f["config"]),
           "--nproc", "2", "--json"]
    proc = subprocess.run(cmd, cwd=REPO, env=env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def test_two_gloo_processes_follow_the_one_process_loss_curve(one_process, two_processes):
    out, proc = two_processes
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processes"] == 2 and one_process.summary["processes"] == 1
    assert summary["steps"] == one_process.steps == 8
    assert summary["effective_batch_size"] == one_process.summary["effective_batch_size"] == 4
    assert summary["samples_per_second"] > 0
    one, two = read_rows(one_process.loss_log_path), read_rows(out / "loss_log.jsonl")
    assert [r["step"] for r in two] == [r["step"] for r in one] == list(range(9))
    assert [r["loss"] for r in two[1:]] == pytest.approx([r["loss"] for r in one[1:]], rel=LOSS_RTOL)
    evals = lambda rows: [r["eval_loss"] for r in rows if "eval_loss" in r]  # noqa: E731
    assert evals(two) == pytest.approx(evals(one), rel=LOSS_RTOL)
    assert summary["final_train_loss"] < summary["initial_train_loss"] - 0.5
    a = load_file(str(one_process.adapter_dir / "adapter_model.safetensors"))
    b = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], rtol=1e-3, atol=1e-5) for k in a)
    # rank 0 alone printed the summary and wrote the outputs (one JSON document on stdout)
    assert json.loads(proc.stdout[proc.stdout.index("{\n"):])["processes"] == 2
    assert sorted(p.name for p in out.iterdir()) == ["adapter", "checkpoints", "config.yaml", "loss_log.jsonl",
                                                     "summary.json"]


def test_killed_two_process_run_resumes_at_the_right_step(setup, two_processes):
    reference, _ = two_processes
    out = setup["root"] / "killed"
    proc = torchrun(setup, out, kill_rank0_at_step=5)
    assert proc.returncode != 0  # rank 0 died by SIGKILL; torchrun stopped rank 1 and failed
    assert (out / "checkpoints").is_dir(), proc.stderr[-3000:]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-2", "checkpoint-4"]
    assert not (out / "summary.json").exists()
    mark = json.loads((out / "checkpoints" / "checkpoint-4" / "ocr_ft_checkpoint.json").read_text())
    assert mark["step"] == 4 and mark["world_size"] == 2
    # the Trainer saved the RNG state of each process, so both continue with their own
    assert {p.name for p in (out / "checkpoints" / "checkpoint-4").glob("rng_state_*.pth")} == {
        "rng_state_0.pth", "rng_state_1.pth"}

    proc = torchrun(setup, out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = json.loads((out / "events.json").read_text())
    start = next(e for e in events if e["event"] == "start")
    assert start["resumed_from_step"] == 4 and start["processes"] == 2
    assert [e["step"] for e in events if e["event"] == "train"] == [5, 6, 7, 8]
    got, want = read_rows(out / "loss_log.jsonl"), read_rows(reference / "loss_log.jsonl")
    assert [r["step"] for r in got] == [r["step"] for r in want]
    assert [r["loss"] for r in got[1:]] == pytest.approx([r["loss"] for r in want[1:]], rel=1e-5)
    a = load_file(str(reference / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_fsdp_two_processes_follow_the_one_process_loss_curve(setup, one_process):
    """distributed: fsdp (FSDP2, layers wrapped per decoder / vision block) runs on CPU with gloo and trains
    like DDP and like one process."""
    out = setup["root"] / "fsdp"
    proc = torchrun(setup, out, overrides={"distributed": "fsdp"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["distributed"] == "fsdp"
    one, two = read_rows(one_process.loss_log_path), read_rows(out / "loss_log.jsonl")
    assert [r["step"] for r in two] == [r["step"] for r in one]
    assert [r["loss"] for r in two[1:]] == pytest.approx([r["loss"] for r in one[1:]], rel=LOSS_RTOL)
    # the final adapter is gathered from the shards into the ordinary PEFT layout
    a = load_file(str(one_process.adapter_dir / "adapter_model.safetensors"))
    b = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], rtol=1e-3, atol=1e-5) for k in a)


def test_nproc_must_divide_gradient_accumulation(tiny_config):
    with pytest.raises(ConfigError, match="multiple of nproc=3"):
        tiny_config.replace(nproc=3)
    assert tiny_config.replace(nproc=2).fingerprint() == tiny_config.fingerprint()  # resumable with another N


def test_nproc_without_torchrun_is_a_clear_error(tiny_config, table_data, tmp_path):
    with pytest.raises(ValueError, match="torchrun --nproc-per-node 2"):
        train(tiny_config.replace(nproc=2), table_data["train"], [], table_data["data_dir"], tmp_path / "run")


def test_torchrun_command_is_standalone_with_n_processes():
    assert torchrun_command(4, "ocr_ft.defs.pipes_training", python="python") == [
        "python", "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=4", "-m",
        "ocr_ft.defs.pipes_training"]
