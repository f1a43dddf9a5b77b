"""benchmarks/train_bench.py: the FLOP formulas behind MFU / HFU, the peak by device name, the GPU variants
(plain, length-grouped, packed, checkpointing off, QLoRA) run on the CPU with a tiny config (no GPU needed),
the targets, and the CPU runs side by side (plain / grouped / packed; 1 vs 2 processes)."""

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


def _tiny_glm_config():
    from transformers import GlmOcrConfig

    from ocr_ft.train.tiny import TEXT_CONFIG, VISION_CONFIG

    return GlmOcrConfig(text_config=dict(TEXT_CONFIG), vision_config=dict(VISION_CONFIG))


SMALL = dict(warmup=0, samples=4, grids=(4, 6), text_lens=(8, 12))


def test_synthetic_samples_vary_in_length_and_pack_like_training_examples(bench):
    from ocr_ft.train.inputs import IGNORE_INDEX

    cfg = _tiny_glm_config()
    samples = bench.synthetic_samples(cfg, 4, grids=(4, 6), text_lens=(8, 12))
    lengths = [len(e["input_ids"]) for e in samples]
    assert len(set(lengths)) > 1
    for e in samples:
        grid = int(e["image_grid_thw"][0, 1])
        assert e["input_ids"].count(cfg.image_token_id) == sum(e["mm_token_type_ids"]) == grid * grid // 4
        assert e["pixel_values"].shape[0] == grid * grid
        assert e["labels"][: bench.PREFIX + grid * grid // 4] == [IGNORE_INDEX] * (bench.PREFIX + grid * grid // 4)
        assert e["labels"][-1] == e["input_ids"][-1] != IGNORE_INDEX
    grouped = bench.micro_batch_lists(lengths, 2, grouped=True)
    assert [lengths[i] for b in grouped for i in b] == sorted(lengths, reverse=True)
    assert bench.micro_batch_lists(lengths, 2, grouped=False) == [[0, 1], [2, 3]]


@pytest.mark.slow
def test_gpu_variants_run_on_cpu_with_a_tiny_config(bench):
    from ocr_ft.train.packing import PACKED_SDPA

    r = bench.gpu_variants(1, device="cpu", peak_flops=1e9, cfg=_tiny_glm_config(), **SMALL)
    assert list(r) == ["plain", "length_grouped", "packed", "no_checkpointing", "qlora"]
    assert "CUDA" in r["qlora"]["not_measured"]  # QLoRA needs a GPU and bitsandbytes: recorded, not run
    plain, grouped, packed, no_ckpt = r["plain"], r["length_grouped"], r["packed"], r["no_checkpointing"]
    assert plain["padding_fraction"] > 0 and packed["padding_fraction"] == 0.0
    assert grouped["padding_fraction"] <= plain["padding_fraction"]
    assert packed["token_counts_per_step"]["grid_tokens"] == plain["token_counts_per_step"]["real_tokens"]
    # the same samples in every variant: the same model FLOPs (real tokens only), whatever the batching
    assert plain["model_tflops_per_step"] == grouped["model_tflops_per_step"] == packed["model_tflops_per_step"]
    for run in (plain, grouped, packed):
        assert run["gradient_checkpointing"] is True and 0 < run["mfu"] < run["hfu"]
        assert run["lora_parameters"] == run["trainable_parameters"] > 0 and run["tokens_per_s"] > 0
    assert packed["attn_implementation"] == PACKED_SDPA and plain["attn_implementation"] == "sdpa"
    assert no_ckpt["gradient_checkpointing"] is False
    assert no_ckpt["hardware_tflops_per_step"] == no_ckpt["model_tflops_per_step"] and no_ckpt["mfu"] == no_ckpt["hfu"]
    no_peak = bench.bench_full_size(1, device="cpu", cfg=_tiny_glm_config(), packing=True, **SMALL)
    assert no_peak["mfu"] is None and no_peak["hfu"] is None and "CPU" in no_peak["peak_note"]


def test_targets_are_met_only_when_measured_and_in_the_right_direction(bench):
    figures = {"cpu_steps_per_s": 2.0, "cpu_packed_vs_plain": 1.2, "cpu_loss_rel_diff": 5e-4, "gpu": {},
               "gpu_packed_vs_plain": None}
    met = bench.evaluate_targets(figures)
    assert met["cpu_tiny_steps_per_s"] is True and met["cpu_packed_vs_plain_tokens_per_s"] is True
    assert met["cpu_2proc_vs_1proc_final_loss_rel_diff"] is True
    assert met["gpu_mfu"] is None and met["gpu_peak_memory_gib"] is None and met["gpu_packed_vs_plain_tokens_per_s"] is None
    worse = bench.evaluate_targets({**figures, "cpu_packed_vs_plain": 0.9, "cpu_loss_rel_diff": 0.01,
                                    "gpu": {"plain": {"mfu": 0.25, "peak_memory_bytes": 50 * 2**30}},
                                    "gpu_packed_vs_plain": 1.3})
    assert worse["cpu_packed_vs_plain_tokens_per_s"] is False and worse["cpu_2proc_vs_1proc_final_loss_rel_diff"] is False
    assert worse["gpu_mfu"] is True and worse["gpu_peak_memory_gib"] is False
    assert worse["gpu_packed_vs_plain_tokens_per_s"] is True
    assert bench._ratio({"tokens_per_s": 3.0}, {"tokens_per_s": 2.0}) == 1.5 and bench._ratio(None, {}) is None


@pytest.mark.slow
def test_cpu_bench_reports_padding_plain_grouped_and_packed(bench, tmp_path):
    # one full epoch (16 samples, 4 per step), so all runs see the same samples, batched differently
    setup = bench.cpu_setup(tmp_path, records=16)
    plain = bench.bench_cpu_tiny(4, setup=setup)
    grouped = bench.bench_cpu_tiny(4, group_by_length=True, setup=setup)
    packed = bench.bench_cpu_tiny(4, packing=True, setup=setup)
    assert plain["group_by_length"] is False and grouped["group_by_length"] is True and packed["packing"] is True
    assert plain["tokens_per_s"] > 0 and grouped["tokens_per_s"] > 0 and packed["tokens_per_s"] > 0
    assert 0.0 == packed["padding_fraction"] <= grouped["padding_fraction"] < plain["padding_fraction"] < 1.0
    assert packed["token_counts"]["real_tokens"] == plain["token_counts"]["real_tokens"]
    assert packed["token_counts"]["grid_tokens"] < plain["token_counts"]["grid_tokens"]


@pytest.mark.slow
def test_cpu_bench_one_and_two_processes_reach_the_same_loss(bench, tmp_path):
    setup = bench.cpu_setup(tmp_path, records=8)
    one = bench.bench_cpu_processes(2, 1, setup, threads=1)
    two = bench.bench_cpu_processes(2, 2, setup, threads=1)
    assert one["processes"] == 1 and two["processes"] == 2 and two["threads_per_process"] == 1
    assert one["steps"] == two["steps"] == 2 and one["tokens_per_s"] > 0 and two["tokens_per_s"] > 0
    assert two["final_train_loss"] == pytest.approx(one["final_train_loss"], rel=1e-3)
