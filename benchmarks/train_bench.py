"""Training benchmark: steps/s, samples/s, tokens/s and peak memory of LoRA training steps.

(a) Always: the tiny GLM-OCR model on CPU through the real trainer (ocr_ft.train.trainer.train) with the
    ``tiny.yaml`` settings (batch 2 x accumulation 2, images up to 256 tokens), 8 optimizer steps, once plain
    and once with ``group_by_length`` (tokens/s and padding fraction side by side).
(b) When CUDA is available: the full-size GLM-OCR architecture (text hidden 1536, 16 layers, 16 heads / 8 KV
    heads, head_dim 128, vocab 59,392; vision 24 layers, hidden 1024) with random weights in bf16, batch 2 of
    2,048-token sequences (1,024 image tokens + 1,024 text tokens, of which 1,000 are answer tokens), LoRA
    rank 8 on the language model, gradient checkpointing, AdamW: the seed recipe's step; then the same step
    without gradient checkpointing (``gpu_full_size_no_checkpointing``).

FLOPs of (b), per optimizer step.  T = batch * S tokens through the decoder (S = sequence length), N_lm the
decoder layers' (frozen) weights, N_lora the LoRA weights, L layers, d_attn = heads * head_dim = 2,048,
h = hidden 1,536, V = vocab, A = answer positions (the trainer runs the LM head on those only), P = image
patches (P_i per image), N_vp / N_vm the vision weights applied per patch (patch embedding, blocks) / per
merged token (downsample, merger; P/4 tokens), D vision layers, d_v = vision hidden.  The base model is
frozen: its weights get no gradient, so a backward pass through a frozen linear layer costs only the
activation gradient (2 FLOPs per weight per token), not the usual 4.

    model FLOPs (MFU)
      F_model = 4 * N_lm * T                 decoder linears: forward 2N + activation-gradient backward 2N
              + 6 * N_lora * T               LoRA: forward, activation and weight gradients (< 1 % here)
              + 6 * L * S * d_attn * T       causal attention scores/values: forward 2, backward 4 (no weights)
              + 4 * h * V * A                frozen LM head on the answer positions: forward + activation grad
              + 2 * N_vp * P + 2 * N_vm * P/4 + 4 * D * P_i * d_v * P   frozen vision tower, forward only
                                                                         (nothing trainable below it)
    hardware FLOPs (HFU) = F_model + the forward of every decoder layer again, recomputed in the backward
      by gradient checkpointing:  + 2 * N_lm * T + 2 * N_lora * T + 2 * L * S * d_attn * T
      (FlashAttention's own recompute inside its backward kernel is not counted.)
    MFU = F_model / step_time / peak;  HFU = F_hardware / step_time / peak.

The usual 6N-per-token convention counts weight gradients a frozen base never computes (2N per token): it
overstates the decoder linears' model FLOPs by half.  Those 2N happen to equal what recompute costs, which
made 6N look like the hardware count; recompute is hardware work, reported as HFU, not MFU.  (Full-size
step: about 20.6 model TFLOP and 25.2 hardware TFLOP, half of the model FLOPs in the frozen vision tower.)  The peak is the dense bf16 tensor-core peak of the
device, picked by its name (``peak_bf16``): H100 SXM and H200 989 TFLOP/s, H100 PCIe 756, A100 312.  Any
other device (and a MIG slice) has no peak on record: ``mfu``/``hfu`` are then null and ``peak_note`` says
why; ``--peak-tflops`` supplies one.

Targets: (a) >= 1.0 optimizer step/s (4 samples/step) on the 2-core CPU box (about 4 steps/s when the cores
are free; other jobs on the cores can cut it several-fold, see --threads); (b) MFU (model FLOPs, above)
>= 0.20 and peak memory <= 40 GiB.  A target that could not be measured (no GPU, no peak) is ``null`` in
``met`` and listed in ``targets_not_measured``; ``targets_met`` is true only when every target was measured
and met (``targets_met_measured``: every measured one was met).  Usage: python benchmarks/train_bench.py [--cpu-steps 8] [--gpu-steps 5] [--threads N]
[--peak-tflops X].  The last line of output is one JSON object with figures, targets and targets_met.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from ocr_ft.train.config import TINY_CONFIG_PATH, load_config

WORDS = ["매출액", "영업이익", "당기순이익", "자산총계", "부채총계", "자본총계", "구분", "당기", "전기", "합계"]
TARGETS = {"cpu_tiny_steps_per_s": 1.0, "gpu_mfu": 0.20, "gpu_peak_memory_gib": 40.0}
# Dense bf16 tensor-core peaks (FLOP/s), matched on torch.cuda.get_device_name(): (pattern, peak, label).
# "NVIDIA H100 80GB HBM3" is the SXM part; the NVL variants and MIG slices have other peaks: not listed.
PEAK_BF16 = (
    (r"\bH200\b(?!.*\bNVL\b)", 989e12, "H200"),
    (r"\bH100\b.*\bPCIe\b", 756e12, "H100 PCIe"),
    (r"\bH100\b.*\b(SXM\d*|HBM3)\b", 989e12, "H100 SXM"),
    (r"\bA100\b", 312e12, "A100"),
)


def peak_bf16(device_name: str) -> tuple[float | None, str]:
    """(dense bf16 peak in FLOP/s or None, what was matched or why there is none) for a CUDA device name."""
    if "MIG" in device_name:
        return None, f"{device_name!r} is a MIG slice: its share of the peak is not on record"
    for pattern, peak, label in PEAK_BF16:
        if re.search(pattern, device_name, flags=re.IGNORECASE):
            return peak, f"{label} dense bf16 peak"
    return None, f"unknown device {device_name!r}: no dense bf16 peak on record (pass --peak-tflops)"


def _sig(x: float, digits: int = 4) -> float:
    """``x`` to ``digits`` significant digits (tiny CPU-check figures stay non-zero)."""
    return float(f"{x:.{digits}g}")


def step_flops(*, n_lm: int, n_lora: int, layers: int, seq: int, d_attn: int, tokens: int, hidden: int,
               vocab: int, answers: int, n_vis_patch: int, n_vis_merge: int, vis_layers: int, vis_hidden: int,
               patches: int, patches_per_image: int, merge_factor: int = 4) -> dict[str, float]:
    """Model and hardware FLOPs of one frozen-base LoRA training step with gradient checkpointing (the
    formulas of the module docstring), with the parts they are made of."""
    parts = {
        "decoder_linears": 4 * n_lm * tokens,
        "lora": 6 * n_lora * tokens,
        "decoder_attention": 6 * layers * seq * d_attn * tokens,
        "lm_head": 4 * hidden * vocab * answers,
        "vision_forward": (2 * n_vis_patch * patches + 2 * n_vis_merge * patches / merge_factor
                           + 4 * vis_layers * patches_per_image * vis_hidden * patches),
    }
    recompute = 2 * n_lm * tokens + 2 * n_lora * tokens + 2 * layers * seq * d_attn * tokens
    model = float(sum(parts.values()))
    return {"model": model, "hardware": model + recompute, "recompute": float(recompute),
            **{k: float(v) for k, v in parts.items()}}


def _records(data_dir: Path, n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    (data_dir / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        r, c = rng.randint(4, 8), rng.randint(3, 5)
        w, h = rng.choice([(448, 196), (392, 224), (504, 168)])
        img = Image.new("RGB", (w, h), "white")
        d = ImageDraw.Draw(img)
        for k in range(r + 1):
            d.line([(0, k * (h - 1) // r), (w, k * (h - 1) // r)], fill="black")
        rel = f"images/t{i:03d}.png"
        img.save(data_dir / rel)
        body = "".join(
            "<tr>" + "".join(f"<td>{rng.choice(WORDS) if j == 0 else f'{rng.randint(1, 10**6):,}'}</td>"
                             for j in range(c)) + "</tr>" for _ in range(r))
        rows.append({"image_path": rel, "ground_truth_html": f"<table>{body}</table>", "content_hash": str(i),
                     "metadata": {"original_filename": rel}})
    return rows


def bench_cpu_tiny(steps: int, group_by_length: bool = False, records: int = 32) -> dict:
    from ocr_ft.train.tiny import build_tiny_model
    from ocr_ft.train.trainer import train

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        recs = _records(tmp / "data", records)
        model_dir = build_tiny_model(tmp / "tiny", [r["ground_truth_html"] for r in recs])
        cfg = load_config(TINY_CONFIG_PATH, base_model=str(model_dir), max_steps=steps, eval_at_start=False,
                          max_eval_samples=0, save_steps=10_000, group_by_length=group_by_length, report_to="none")
        s = train(cfg, recs, [], tmp / "data", tmp / "out", device="cpu").summary
    return {
        "group_by_length": group_by_length,
        "padding_fraction": round(s["padding_fraction"], 4),
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "steps": s["session_steps"],
        "samples_per_step": cfg.effective_batch_size,
        "mean_seq_tokens": s["token_stats"]["train"]["mean_tokens"],
        "steps_per_s": round(s["steps_per_second"], 3),
        "samples_per_s": round(s["samples_per_second"], 2),
        "tokens_per_s": round(s["tokens_per_second"], 1),
        "peak_memory_bytes": s["peak_memory_bytes"],
        "peak_memory_kind": s["peak_memory_kind"],
        "parameters": s["total_parameters"],
    }


def full_size_config():
    from transformers import GlmOcrConfig

    return GlmOcrConfig(
        text_config=dict(
            vocab_size=59392, hidden_size=1536, intermediate_size=4608, num_hidden_layers=16, num_attention_heads=16,
            num_key_value_heads=8, head_dim=128, max_position_embeddings=131072, pad_token_id=59246,
            eos_token_id=[59246, 59253], rope_parameters={"rope_type": "default", "mrope_section": [16, 24, 24],
                                                          "partial_rotary_factor": 1.0, "rope_theta": 10000},
        ),
        vision_config=dict(depth=24, hidden_size=1024, intermediate_size=4096, num_heads=16, out_hidden_size=1536,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2),
    )


def bench_full_size(steps: int, device: str = "cuda", cfg=None, warmup: int = 2, batch: int = 2, grid: int = 64,
                    text_len: int = 1024, answer_len: int = 1000, peak_flops: float | None = None,
                    gradient_checkpointing: bool = True) -> dict:
    """One LoRA training step of the seed recipe, timed. ``cfg`` defaults to the full-size GLM-OCR config;
    a smaller one (and ``device="cpu"``) is only for checking this code without a GPU.  ``peak_flops``
    overrides the peak picked by device name."""
    from transformers import GlmOcrForConditionalGeneration

    from ocr_ft.train.modeling import apply_lora
    from ocr_ft.train.trainer import answer_loss_sum

    dev = torch.device(device)
    cuda = dev.type == "cuda"
    cfg = cfg or full_size_config()
    torch.manual_seed(0)
    with torch.device(dev):
        model = GlmOcrForConditionalGeneration._from_config(cfg, dtype=torch.bfloat16)
    model.config.use_cache = False
    if gradient_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    train_cfg = load_config()  # seed recipe: rank 8, alpha 16, dropout 0.05, LM-only targets
    model = apply_lora(model, train_cfg).to(dev).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=train_cfg.learning_rate)

    n_img = grid * grid // 4
    patches_per_image = grid * grid
    prefix = 4
    seq = prefix + n_img + text_len
    vocab = cfg.text_config.vocab_size
    special = min(cfg.image_start_token_id, cfg.image_token_id, cfg.video_token_id)
    g = torch.Generator(device="cpu").manual_seed(0)
    ids = torch.cat([torch.randint(0, min(special, vocab), (batch, prefix), generator=g),
                     torch.full((batch, n_img), cfg.image_token_id),
                     torch.randint(0, min(special, vocab), (batch, text_len), generator=g)], dim=1)
    mm = torch.zeros_like(ids)
    mm[:, prefix:prefix + n_img] = 1
    labels = torch.full_like(ids, -100)
    labels[:, -answer_len:] = ids[:, -answer_len:]
    vc = cfg.vision_config
    batch_t = {
        "input_ids": ids, "attention_mask": torch.ones_like(ids), "mm_token_type_ids": mm, "labels": labels,
        "pixel_values": torch.randn(batch * patches_per_image,
                                    vc.in_channels * vc.temporal_patch_size * vc.patch_size**2, generator=g),
        "image_grid_thw": torch.tensor([[1, grid, grid]] * batch),
    }
    batch_t = {k: v.to(dev) for k, v in batch_t.items()}

    def step() -> None:
        s, n = answer_loss_sum(model, batch_t)
        (s / n).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    for _ in range(warmup):
        step()
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    dt = (time.perf_counter() - t0) / steps

    base = model.get_base_model()
    tc = cfg.text_config
    n_lm = sum(p.numel() for n, p in base.model.language_model.layers.named_parameters() if "lora_" not in n)
    n_lora = sum(p.numel() for n, p in base.model.language_model.named_parameters() if "lora_" in n)
    visual = base.model.visual
    n_vis = sum(p.numel() for n, p in visual.named_parameters() if "lora_" not in n)
    n_vis_merge = sum(p.numel() for m in (visual.downsample, visual.merger) for p in m.parameters())
    tokens = batch * seq
    f = step_flops(n_lm=n_lm, n_lora=n_lora, layers=tc.num_hidden_layers, seq=seq,
                   d_attn=tc.num_attention_heads * tc.head_dim, tokens=tokens, hidden=tc.hidden_size,
                   vocab=tc.vocab_size, answers=batch * (answer_len - 1),  # positions that predict an answer token
                   n_vis_patch=n_vis - n_vis_merge, n_vis_merge=n_vis_merge, vis_layers=vc.depth,
                   vis_hidden=vc.hidden_size, patches=batch * patches_per_image, patches_per_image=patches_per_image,
                   merge_factor=vc.spatial_merge_size**2)
    name = torch.cuda.get_device_name(dev) if cuda else "cpu"
    if peak_flops:
        peak, peak_note = peak_flops, "given with --peak-tflops"
    elif cuda:
        peak, peak_note = peak_bf16(name)
    else:
        peak, peak_note = None, "CPU run (code check only): no peak, no MFU"
    if not gradient_checkpointing:  # no recompute: hardware FLOPs are the model FLOPs
        f = {**f, "recompute": 0.0, "hardware": f["model"]}
    return {
        "device": name,
        "gradient_checkpointing": gradient_checkpointing,
        "seq_len": seq,
        "batch": batch,
        "steps": steps,
        "steps_per_s": round(1 / dt, 3),
        "samples_per_s": round(batch / dt, 2),
        "tokens_per_s": round(tokens / dt, 1),
        "peak_memory_bytes": int(torch.cuda.max_memory_allocated()) if cuda else None,
        "model_tflops_per_step": _sig(f["model"] / 1e12),
        "hardware_tflops_per_step": _sig(f["hardware"] / 1e12),
        "tflops_parts": {k: _sig(v / 1e12) for k, v in f.items() if k not in ("model", "hardware")},
        "achieved_model_tflops": _sig(f["model"] / dt / 1e12),
        "achieved_hardware_tflops": _sig(f["hardware"] / dt / 1e12),
        "peak_bf16_tflops": peak / 1e12 if peak else None,
        "peak_note": peak_note,
        "mfu": round(f["model"] / dt / peak, 4) if peak else None,
        "hfu": round(f["hardware"] / dt / peak, 4) if peak else None,
        "trainable_parameters": sum(p.numel() for p in params),
        "lm_layer_parameters": n_lm,
        "lora_parameters": n_lora,
        "vision_parameters": n_vis,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpu-steps", type=int, default=8)
    ap.add_argument("--gpu-steps", type=int, default=5)
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice); on a box shared "
                    "with other jobs 1 thread avoids OpenMP oversubscription stalls")
    ap.add_argument("--peak-tflops", type=float, help="dense bf16 peak of the GPU in TFLOP/s (default: by its name)")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)

    t0 = time.perf_counter()
    cpu = bench_cpu_tiny(a.cpu_steps)
    grouped = bench_cpu_tiny(a.cpu_steps, group_by_length=True)
    for run in (cpu, grouped):
        print(f"tiny CPU (group_by_length={run['group_by_length']}): {run['steps_per_s']} steps/s, "
              f"{run['samples_per_s']} samples/s, {run['tokens_per_s']} tokens/s, padding {run['padding_fraction']}",
              file=sys.stderr)
    gpu, gpu_no_ckpt, gpu_note = None, None, "not run: no GPU (torch.cuda.is_available() is false)"
    if torch.cuda.is_available():
        peak = a.peak_tflops * 1e12 if a.peak_tflops else None
        gpu, gpu_note = bench_full_size(a.gpu_steps, peak_flops=peak), None
        torch.cuda.empty_cache()
        # the same step without gradient checkpointing: faster, more memory (the two side by side)
        gpu_no_ckpt = bench_full_size(a.gpu_steps, peak_flops=peak, gradient_checkpointing=False)
        print(f"full-size GPU ({gpu['device']}): {gpu['steps_per_s']} steps/s, MFU {gpu['mfu']} (model FLOPs), "
              f"HFU {gpu['hfu']} (with recompute); peak: {gpu['peak_note']}", file=sys.stderr)

    met: dict[str, bool | None] = {"cpu_tiny_steps_per_s": cpu["steps_per_s"] >= TARGETS["cpu_tiny_steps_per_s"],
                                   "gpu_mfu": None, "gpu_peak_memory_gib": None}
    if gpu is not None:
        met["gpu_mfu"] = None if gpu["mfu"] is None else gpu["mfu"] >= TARGETS["gpu_mfu"]
        met["gpu_peak_memory_gib"] = gpu["peak_memory_bytes"] / 2**30 <= TARGETS["gpu_peak_memory_gib"]
    not_measured = [k for k, v in met.items() if v is None]
    result = {
        "benchmark": "train",
        "cpu_tiny": cpu,
        # the same run with micro-batches grouped by total tokens: tokens/s and padding side by side
        "cpu_tiny_length_grouped": grouped,
        "cpu_tokens_per_s_plain_vs_grouped": [cpu["tokens_per_s"], grouped["tokens_per_s"]],
        "cpu_padding_fraction_plain_vs_grouped": [cpu["padding_fraction"], grouped["padding_fraction"]],
        "gpu_full_size": gpu,
        "gpu_full_size_no_checkpointing": gpu_no_ckpt,
        "gpu_note": gpu_note,
        "targets": TARGETS,
        "met": met,
        "targets_not_measured": not_measured,
        "targets_met": not not_measured and all(met.values()),
        "targets_met_measured": all(v for v in met.values() if v is not None),
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(result, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
