"""benchmarks/train_bench.py: the FLOP formulas behind MFU / HFU, the peak by device name, and the GPU step
code run on the CPU with a tiny config (no GPU needed)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "train_bench.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("train_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_step_flops_frozen_base_lora(bench):
    f = bench.step_flops(n_lm=1000, n_lora=10, layers=2, seq=8, d_attn=4, tokens=16, hidden=3, vocab=5, answers=6,
                         n_vis_patch=100, n_vis_merge=40, vis_layers=2, vis_hidden=4, patches=8,
                         patches_per_image=4)
    assert f["decoder_linears"] == 4 * 1000 * 16  # forward 2N + activation-gradient backward 2N, no 6N
    assert f["lora"] == 6 * 10 * 16
    assert f["decoder_attention"] == 6 * 2 * 8 * 4 * 16
    assert f["lm_head"] == 4 * 3 * 5 * 6  # frozen head: no weight gradient
    assert f["vision_forward"] == 2 * 100 * 8 + 2 * 40 * 8 / 4 + 4 * 2 * 4 * 4 * 8
    parts = ("decoder_linears", "lora", "decoder_attention", "lm_head", "vision_forward")
    assert f["model"] == sum(f[k] for k in parts)
    assert f["recompute"] == 2 * 1000 * 16 + 2 * 10 * 16 + 2 * 2 * 8 * 4 * 16  # checkpointed decoder forward
    assert f["hardware"] == f["model"] + f["recompute"]


@pytest.mark.parametrize("name, peak", [
    ("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H100 SXM5 80GB", 989e12), ("NVIDIA H200", 989e12),
    ("NVIDIA H100 PCIe", 756e12), ("NVIDIA A100-SXM4-80GB", 312e12), ("NVIDIA A100 80GB PCIe", 312e12),
    ("NVIDIA H100 NVL", None), ("NVIDIA H100 80GB HBM3 MIG 1g.10gb", None), ("Tesla T4", None),
])
def test_peak_by_device_name(bench, name, peak):
    got, note = bench.peak_bf16(name)
    assert got == peak
    if peak is None:
        assert name in note


def test_gpu_step_code_runs_on_cpu_with_a_tiny_config(bench):
    from transformers import GlmOcrConfig

    from ocr_ft.train.tiny import TEXT_CONFIG, VISION_CONFIG

    cfg = GlmOcrConfig(text_config=dict(TEXT_CONFIG), vision_config=dict(VISION_CONFIG))
    r = bench.bench_full_size(1, device="cpu", cfg=cfg, warmup=0, batch=1, grid=4, text_len=8, answer_len=4)
    assert r["mfu"] is None and r["hfu"] is None and "CPU" in r["peak_note"]
    assert 0 < r["model_tflops_per_step"] <= r["hardware_tflops_per_step"]
    assert r["lora_parameters"] == r["trainable_parameters"] > 0
    with_peak = bench.bench_full_size(1, device="cpu", cfg=cfg, warmup=0, batch=1, grid=4, text_len=8,
                                      answer_len=4, peak_flops=1e9)
    assert 0 < with_peak["mfu"] < with_peak["hfu"]
    no_ckpt = bench.bench_full_size(1, device="cpu", cfg=cfg, warmup=0, batch=1, grid=4, text_len=8,
                                    answer_len=4, peak_flops=1e9, gradient_checkpointing=False)
    assert no_ckpt["gradient_checkpointing"] is False and with_peak["gradient_checkpointing"] is True
    # same model FLOPs; without recompute the hardware FLOPs are just the model FLOPs
    assert no_ckpt["model_tflops_per_step"] == with_peak["model_tflops_per_step"]
    assert no_ckpt["hardware_tflops_per_step"] == no_ckpt["model_tflops_per_step"] and no_ckpt["mfu"] == no_ckpt["hfu"]


@pytest.mark.slow
def test_cpu_bench_reports_padding_with_and_without_length_grouping(bench):
    # one full epoch (16 samples, 4 per step), so both runs see the same samples, batched differently
    plain = bench.bench_cpu_tiny(4, records=16)
    grouped = bench.bench_cpu_tiny(4, group_by_length=True, records=16)
    assert plain["group_by_length"] is False and grouped["group_by_length"] is True
    assert plain["tokens_per_s"] > 0 and grouped["tokens_per_s"] > 0
    assert 0.0 <= grouped["padding_fraction"] < plain["padding_fraction"] < 1.0
