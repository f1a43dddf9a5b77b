"""Training benchmark: steps/s, samples/s, tokens/s and peak memory of LoRA training steps.

(a) Always: the tiny GLM-OCR model on CPU through the real trainer (ocr_ft.train.trainer.train) with the
    ``tiny.yaml`` settings (batch 2 x accumulation 2, images up to 256 tokens), 8 optimizer steps.
(b) When CUDA is available: the full-size GLM-OCR architecture (text hidden 1536, 16 layers, 16 heads / 8 KV
    heads, head_dim 128, vocab 59,392; vision 24 layers, hidden 1024) with random weights in bf16, batch 2 of
    2,048-token sequences (1,024 image tokens + 1,024 text tokens, of which 1,000 are answer tokens), LoRA
    rank 8 on the language model, gradient checkpointing, AdamW: the seed recipe's step.

MFU formula (b), per optimizer step, against the GPU's dense bf16 peak (H100/H200: 989 TFLOP/s):
    F = 6 * N_lm * T                      decoder-layer weights (attention + MLP), T = batch * seq tokens
      + 6 * L * S * d_attn * T            causal attention scores/values (fwd 2 + bwd 4), S = seq, d_attn = 2048
      + 6 * h * V * A                     LM head on the A answer positions only (the trainer skips the rest)
      + 2 * N_vis * P + 4 * D * P_i * d_v * P   frozen vision tower, forward only (P patches, P_i per image)
    MFU = F / step_time / peak.
The 6*N term is the usual "as if every weight were trained" convention; for LoRA with gradient checkpointing it
is also close to the hardware count (forward 2N + recomputed forward 2N + input-gradient backward 2N).

Targets: (a) >= 1.0 optimizer step/s (4 samples/step) on the 2-core CPU box (about 4 steps/s when the cores
are free; other jobs on the cores can cut it several-fold, see --threads); (b) MFU >= 0.20 and peak memory
<= 40 GiB. Usage: python benchmarks/train_bench.py [--cpu-steps 8] [--gpu-steps 5] [--threads N]
The last line of output is one JSON object with figures, targets and targets_met.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from ocr_ft.train.config import TINY_CONFIG_PATH, load_config

WORDS = ["매출액", "영업이익", "당기순이익", "자산총계", "부채총계", "자본총계", "구분", "당기", "전기", "합계"]
TARGETS = {"cpu_tiny_steps_per_s": 1.0, "gpu_mfu": 0.20, "gpu_peak_memory_gib": 40.0}
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


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


def bench_cpu_tiny(steps: int) -> dict:
    from ocr_ft.train.tiny import build_tiny_model
    from ocr_ft.train.trainer import train

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        recs = _records(tmp / "data", 32)
        model_dir = build_tiny_model(tmp / "tiny", [r["ground_truth_html"] for r in recs])
        cfg = load_config(TINY_CONFIG_PATH, base_model=str(model_dir), max_steps=steps, eval_at_start=False,
                          max_eval_samples=0, save_steps=10_000)
        s = train(cfg, recs, [], tmp / "data", tmp / "out", device="cpu").summary
    return {
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
                    text_len: int = 1024, answer_len: int = 1000) -> dict:
    """One LoRA training step of the seed recipe, timed. ``cfg`` defaults to the full-size GLM-OCR config;
    a smaller one (and ``device="cpu"``) is only for checking this code without a GPU."""
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
    n_vis = sum(p.numel() for p in base.model.visual.parameters())
    tokens = batch * seq
    d_attn = tc.num_attention_heads * tc.head_dim
    answers = batch * (answer_len - 1)  # positions that predict an answer token
    flops = (6 * n_lm * tokens + 6 * tc.num_hidden_layers * seq * d_attn * tokens
             + 6 * tc.hidden_size * tc.vocab_size * answers
             + 2 * n_vis * batch * patches_per_image
             + 4 * vc.depth * patches_per_image * vc.hidden_size * batch * patches_per_image)
    name = torch.cuda.get_device_name(dev) if cuda else "cpu"
    peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
    return {
        "device": name,
        "seq_len": seq,
        "batch": batch,
        "steps": steps,
        "steps_per_s": round(1 / dt, 3),
        "samples_per_s": round(batch / dt, 2),
        "tokens_per_s": round(tokens / dt, 1),
        "peak_memory_bytes": int(torch.cuda.max_memory_allocated()) if cuda else None,
        "tflops_per_step": round(flops / 1e12, 3),
        "achieved_tflops": round(flops / dt / 1e12, 2),
        "peak_bf16_tflops": peak / 1e12 if peak else None,
        "mfu": round(flops / dt / peak, 4) if peak else None,
        "trainable_parameters": sum(p.numel() for p in params),
        "lm_layer_parameters": n_lm,
        "vision_parameters": n_vis,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpu-steps", type=int, default=8)
    ap.add_argument("--gpu-steps", type=int, default=5)
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice); on a box shared "
                    "with other jobs 1 thread avoids OpenMP oversubscription stalls")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)

    t0 = time.perf_counter()
    cpu = bench_cpu_tiny(a.cpu_steps)
    print(f"tiny CPU: {cpu['steps_per_s']} steps/s, {cpu['samples_per_s']} samples/s, {cpu['tokens_per_s']} tokens/s",
          file=sys.stderr)
    gpu, gpu_note = None, "skipped: torch.cuda.is_available() is false"
    if torch.cuda.is_available():
        gpu, gpu_note = bench_full_size(a.gpu_steps), None
        print(f"full-size GPU: {gpu['steps_per_s']} steps/s, MFU {gpu['mfu']}", file=sys.stderr)

    met = {"cpu_tiny_steps_per_s": cpu["steps_per_s"] >= TARGETS["cpu_tiny_steps_per_s"]}
    if gpu is not None:
        met["gpu_mfu"] = gpu["mfu"] is not None and gpu["mfu"] >= TARGETS["gpu_mfu"]
        met["gpu_peak_memory_gib"] = gpu["peak_memory_bytes"] / 2**30 <= TARGETS["gpu_peak_memory_gib"]
    result = {
        "benchmark": "train",
        "cpu_tiny": cpu,
        "gpu_full_size": gpu,
        "gpu_note": gpu_note,
        "targets": TARGETS,
        "met": met,
        "targets_met": all(met.values()),
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(result, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
