"""Training benchmark: steps/s, samples/s, tokens/s and peak memory of LoRA training steps.

(a) Always, on the CPU: the tiny GLM-OCR model through the real trainer (ocr_ft.train.trainer.train) with the
    ``tiny.yaml`` settings (batch 2 x accumulation 2, images of 32-200 tokens), 8 optimizer steps on the same
    32 records side by side: plain, ``group_by_length`` and ``packing`` (tokens/s of real tokens, padding
    fraction), interleaved over ``--rounds`` rounds, the best round of each kept (the box is shared); then
    the same run through ``ocr-ft train`` in 1 process and, with ``--nproc 2`` (torchrun, gloo), in 2
    processes, each with ``--process-threads`` threads (default ``--threads``: 2 processes use twice the
    cores; 2 threads in one process stall on a busy box), no LoRA dropout: tokens/s and the final loss of
    each (the two must agree: same effective batch).
(b) When CUDA is available: the full-size GLM-OCR architecture (text hidden 1536, 16 layers, 16 heads / 8 KV
    heads, head_dim 128, vocab 59,392; vision 24 layers, hidden 1024) with random weights in bf16, LoRA rank 8
    on the language model, AdamW; one optimizer step = 8 samples of 1,500-2,600 tokens (784-1,296 image
    tokens + 700-1,300 text tokens, mean about 2,050) in 4 micro-batches of 2, through the trainer's own
    collate / pack code and loss. Variants side by side (``gpu_full_size``): ``plain`` (padded, gradient
    checkpointing: the seed recipe), ``length_grouped``, ``packed``, ``no_checkpointing``, ``qlora`` (frozen
    base in bitsandbytes NF4; ``not_measured`` with the reason when bitsandbytes is missing).

FLOPs of (b), per sample (a step's are the sum over its samples).  T = S tokens through the decoder
(S = sequence length), N_lm the
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
step of 8 samples, 1,488-2,328 tokens: about 79.8 model TFLOP and 97.4 hardware TFLOP, half of the model
FLOPs in the frozen vision tower.)  The peak is the dense bf16 tensor-core peak of the
device, picked by its name (``peak_bf16``): H100 SXM and H200 989 TFLOP/s, H100 PCIe 756, A100 312.  Any
other device (and a MIG slice) has no peak on record: ``mfu``/``hfu`` are then null and ``peak_note`` says
why; ``--peak-tflops`` supplies one.

FLOPs count real tokens only (a padded variant's padding is neither model nor counted hardware work, so
padding shows as lower MFU at the same step time); a step's FLOPs are the sum of its samples'.

Targets: (a) >= 1.0 optimizer step/s (4 samples/step) on the 2-core CPU box (about 4 steps/s when the cores
are free; other jobs on the cores can cut it several-fold, see --threads); packed >= plain in real tokens/s
(a ratio of two runs side by side); 2 processes' final loss within 1e-3 (relative) of 1 process's; (b) MFU
(model FLOPs, above) >= 0.20 and peak memory <= 40 GiB for ``plain``; packed >= plain in real tokens/s.  A target that could not be measured (no GPU, no peak) is ``null`` in
``met`` and listed in ``targets_not_measured``; ``targets_met`` is true only when every target was measured
and met (``targets_met_measured``: every measured one was met).  Usage: python benchmarks/train_bench.py [--cpu-steps 8] [--gpu-steps 5] [--threads N]
[--peak-tflops X] [--no-processes] [--process-threads N] [--rounds 2].  The last line of output is one JSON object with figures, targets and targets_met.
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
TARGETS = {"cpu_tiny_steps_per_s": 1.0, "cpu_packed_vs_plain_tokens_per_s": 1.0,
           "cpu_2proc_vs_1proc_final_loss_rel_diff": 1e-3, "gpu_mfu": 0.20, "gpu_peak_memory_gib": 40.0,
           "gpu_packed_vs_plain_tokens_per_s": 1.0}
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


# Image sizes of the CPU records: from 32 to 200 image tokens, so micro-batches mix short and long samples
CPU_IMAGE_SIZES = ((224, 112), (448, 196), (392, 224), (504, 168), (560, 280))
REPO = Path(__file__).resolve().parents[1]


def _records(data_dir: Path, n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    (data_dir / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        r, c = rng.randint(2, 10), rng.randint(3, 5)
        w, h = rng.choice(CPU_IMAGE_SIZES)
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


def cpu_setup(root: Path, records: int = 32) -> dict:
    """The CPU runs' records (images under ``root/data``) and the tiny model trained on their labels."""
    from ocr_ft.train.tiny import build_tiny_model

    recs = _records(root / "data", records)
    return {"root": root, "records": recs, "data_dir": root / "data",
            "model_dir": build_tiny_model(root / "tiny", [r["ground_truth_html"] for r in recs])}


def _cpu_config(setup: dict, steps: int, **changes):
    return load_config(TINY_CONFIG_PATH, base_model=str(setup["model_dir"]), max_steps=steps, eval_at_start=False,
                       max_eval_samples=0, save_steps=10_000, report_to="none", **changes)


def _cpu_figures(s: dict, cfg) -> dict:
    return {
        "group_by_length": cfg.group_by_length,
        "packing": cfg.packing,
        "padding_fraction": round(s["padding_fraction"], 4),
        "token_counts": s.get("token_counts"),
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "steps": s["session_steps"],
        "samples_per_step": cfg.effective_batch_size,
        "mean_seq_tokens": s["token_stats"]["train"]["mean_tokens"],
        "steps_per_s": round(s["steps_per_second"], 3),
        "samples_per_s": round(s["samples_per_second"], 2),
        "tokens_per_s": round(s["tokens_per_second"], 1),  # real tokens (image + prompt + answer), no padding
        "final_train_loss": s["final_train_loss"],
        "peak_memory_bytes": s["peak_memory_bytes"],
        "peak_memory_kind": s["peak_memory_kind"],
        "parameters": s["total_parameters"],
    }


def bench_cpu_tiny(steps: int, group_by_length: bool = False, records: int = 32, packing: bool = False,
                   setup: dict | None = None) -> dict:
    """``steps`` optimizer steps of the real trainer on the tiny model in this process (``setup`` from
    :func:`cpu_setup`, or a fresh one with ``records`` records)."""
    from ocr_ft.train.trainer import train

    with tempfile.TemporaryDirectory() as tmp:
        setup = setup or cpu_setup(Path(tmp), records)
        cfg = _cpu_config(setup, steps, group_by_length=group_by_length, packing=packing)
        s = train(cfg, setup["records"], [], setup["data_dir"], Path(tmp) / "out", device="cpu").summary
    return _cpu_figures(s, cfg)


def cpu_side_by_side(steps: int, setup: dict, rounds: int = 2) -> tuple[dict, dict, dict]:
    """(plain, length-grouped, packed) runs, interleaved ``rounds`` times; each variant's round with the most
    tokens/s is kept, with every round's tokens/s under ``tokens_per_s_rounds``."""
    variants = ({}, {"group_by_length": True}, {"packing": True})
    runs: list[list[dict]] = [[] for _ in variants]
    for _ in range(max(1, rounds)):
        for got, kw in zip(runs, variants):
            got.append(bench_cpu_tiny(steps, setup=setup, **kw))
    return tuple({**max(got, key=lambda r: r["tokens_per_s"]),
                  "tokens_per_s_rounds": [r["tokens_per_s"] for r in got]} for got in runs)


def bench_cpu_processes(steps: int, nproc: int, setup: dict, threads: int) -> dict:
    """The same run through ``ocr-ft train`` (``--nproc N`` launches torchrun with gloo processes), ``threads``
    CPU threads per process. No LoRA dropout, so every process count computes the same losses."""
    import os
    import subprocess

    from ocr_ft.storage import atomic_write_jsonl

    root = setup["root"] / f"proc{nproc}"
    root.mkdir(parents=True, exist_ok=True)
    cfg = _cpu_config(setup, steps, lora_dropout=0.0)
    cfg.save(root / "config.yaml")
    atomic_write_jsonl(root / "train.jsonl", setup["records"])
    per_process = max(1, threads)
    cmd = [sys.executable, "-m", "ocr_ft.train.cli", "train", "--config", str(root / "config.yaml"),
           "--train", str(root / "train.jsonl"), "--data-dir", str(setup["data_dir"]), "--out", str(root / "out"),
           "--json"] + (["--nproc", str(nproc)] if nproc > 1 else [])
    env = {**os.environ, "OMP_NUM_THREADS": str(per_process),
           "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)}
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` failed ({done.returncode}): {done.stderr[-2000:]}")
    s = json.loads((root / "out" / "summary.json").read_text(encoding="utf-8"))
    return {"processes": s["processes"], "threads_per_process": per_process, "steps": s["session_steps"],
            "steps_per_s": round(s["steps_per_second"], 3), "tokens_per_s": round(s["tokens_per_second"], 1),
            "final_train_loss": s["final_train_loss"], "wall_s_with_startup": round(wall, 1)}


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


# GPU sample set: 8 samples of image grid 56/64/72 patches a side (784/1,024/1,296 image tokens) and 700/1,000/
# 1,300 text tokens (all but PROMPT_TEXT of them answer tokens): 1,500-2,600 tokens, about 2,050 on average.
GPU_GRIDS = (56, 64, 72)
GPU_TEXT_LENS = (700, 1000, 1300)
PROMPT_TEXT = 24
PREFIX = 4


def synthetic_samples(cfg, n: int = 8, grids=GPU_GRIDS, text_lens=GPU_TEXT_LENS, seed: int = 0) -> list[dict]:
    """``n`` training examples (the shape :func:`ocr_ft.train.inputs.build_training_example` makes) with random
    token ids and pixels, lengths varying over ``grids`` x ``text_lens``, in a seeded random order."""
    from ocr_ft.train.inputs import IGNORE_INDEX

    g = torch.Generator(device="cpu").manual_seed(seed)
    vc = cfg.vision_config
    special = min(cfg.image_start_token_id, cfg.image_token_id, cfg.video_token_id, cfg.text_config.vocab_size)
    combos = [(grids[i % len(grids)], text_lens[(i // len(grids)) % len(text_lens)]) for i in range(n)]
    random.Random(seed).shuffle(combos)
    out = []
    for grid, text_len in combos:
        n_img = grid * grid // vc.spatial_merge_size**2
        ids = (torch.randint(0, special, (PREFIX,), generator=g).tolist() + [cfg.image_token_id] * n_img
               + torch.randint(0, special, (text_len,), generator=g).tolist())
        answer_from = PREFIX + n_img + min(PROMPT_TEXT, text_len - 1)
        out.append({
            "input_ids": ids,
            "labels": [IGNORE_INDEX] * answer_from + ids[answer_from:],
            "mm_token_type_ids": [0] * PREFIX + [1] * n_img + [0] * text_len,
            "pixel_values": torch.randn(grid * grid, vc.in_channels * vc.temporal_patch_size * vc.patch_size**2,
                                        generator=g),
            "image_grid_thw": torch.tensor([[1, grid, grid]]),
        })
    return out


def micro_batch_lists(lengths, batch: int, grouped: bool) -> list[list[int]]:
    """Consecutive samples in their (random) order, or, length-grouped, longest first."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i]) if grouped else list(range(len(lengths)))
    return [order[i:i + batch] for i in range(0, len(order), batch)]


def full_size_model(cfg, dev: torch.device, gradient_checkpointing: bool, quantization: str):
    """Random-weight GLM-OCR in bf16 with the seed recipe's LoRA, set up as the trainer does (QLoRA: the
    random weights saved, reloaded in bitsandbytes NF4 and prepared with peft's prepare_model_for_kbit_training)."""
    from transformers import GlmOcrForConditionalGeneration

    from ocr_ft.train.modeling import apply_lora
    from ocr_ft.train.trainer import check_quantization, qlora_config

    train_cfg = load_config(quantization=quantization)  # seed recipe: rank 8, alpha 16, dropout 0.05, LM only
    check_quantization(train_cfg, dev)  # ValueError with the reason: no CUDA, no bitsandbytes
    torch.manual_seed(0)
    if quantization == "4bit":
        from peft import prepare_model_for_kbit_training

        with tempfile.TemporaryDirectory() as tmp:
            with torch.device(dev):
                GlmOcrForConditionalGeneration._from_config(cfg, dtype=torch.bfloat16).save_pretrained(tmp)
            if dev.type == "cuda":
                torch.cuda.empty_cache()
            model = GlmOcrForConditionalGeneration.from_pretrained(
                tmp, dtype=torch.bfloat16, quantization_config=qlora_config(torch.bfloat16), device_map={"": dev})
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing,
                                                gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        with torch.device(dev):
            model = GlmOcrForConditionalGeneration._from_config(cfg, dtype=torch.bfloat16)
        if gradient_checkpointing:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
    model = apply_lora(model, train_cfg)
    if quantization == "none":
        model = model.to(dev)
    return model.train()


def _weight_counts(cfg) -> dict[str, int]:
    """Weights of the bare architecture, counted on the meta device (a 4-bit model's packed tensors would
    under-count them)."""
    from transformers import GlmOcrForConditionalGeneration

    with torch.device("meta"):
        m = GlmOcrForConditionalGeneration._from_config(cfg)
    visual = m.model.visual
    n_vis = sum(p.numel() for p in visual.parameters())
    return {"n_lm": sum(p.numel() for p in m.model.language_model.layers.parameters()), "n_vis": n_vis,
            "n_vis_merge": sum(p.numel() for mod in (visual.downsample, visual.merger) for p in mod.parameters())}


def bench_full_size(steps: int, device: str = "cuda", cfg=None, warmup: int = 2, batch: int = 2, samples: int = 8,
                    grids=GPU_GRIDS, text_lens=GPU_TEXT_LENS, grouped: bool = False, packing: bool = False,
                    gradient_checkpointing: bool = True, quantization: str = "none",
                    peak_flops: float | None = None) -> dict:
    """Optimizer steps of the seed recipe's LoRA over ``samples`` samples of varying length (micro-batches of
    ``batch``: padded, length-grouped or packed through the trainer's own collate / pack code and loss),
    timed. ``cfg`` defaults to the full-size GLM-OCR config; a smaller one (and ``device="cpu"``) is only for
    checking this code without a GPU. ``peak_flops`` overrides the peak picked by device name."""
    from ocr_ft.train.inputs import collate
    from ocr_ft.train.packing import pack_examples, prepare_model_for_packing, token_counts
    from ocr_ft.train.trainer import answer_loss_sum

    dev = torch.device(device)
    cuda = dev.type == "cuda"
    cfg = cfg or full_size_config()
    examples = synthetic_samples(cfg, samples, grids, text_lens)
    lengths = [len(e["input_ids"]) for e in examples]
    lists = micro_batch_lists(lengths, batch, grouped)
    pad = cfg.text_config.pad_token_id if cfg.text_config.pad_token_id is not None else 0
    batches = [{k: v.to(dev) for k, v in (pack_examples([examples[i] for i in b]) if packing else
                                         collate([examples[i] for i in b], pad)).items()} for b in lists]
    answers = [sum(1 for t in e["labels"][1:] if t != -100) for e in examples]
    step_answers = sum(answers)

    model = full_size_model(cfg, dev, gradient_checkpointing, quantization)
    if packing:  # as the trainer does: checks the model and runs sdpa per packed sample
        prepare_model_for_packing(model)
    attn = model.get_base_model().config.text_config._attn_implementation
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=load_config().learning_rate)

    def step() -> None:
        for mb in batches:
            s, _ = answer_loss_sum(model, mb)
            (s / step_answers).backward()
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

    tc, vc = cfg.text_config, cfg.vision_config
    w = _weight_counts(cfg)
    n_lora = sum(p.numel() for n, p in model.get_base_model().model.language_model.named_parameters() if "lora_" in n)
    # FLOPs are linear in the samples: the step's are the sum of each sample's (real tokens only: padding is
    # neither model nor counted hardware work)
    per_sample = []
    for e, n_ans in zip(examples, answers):
        p_i = int(e["image_grid_thw"].prod())
        per_sample.append(step_flops(
            n_lm=w["n_lm"], n_lora=n_lora, layers=tc.num_hidden_layers, seq=len(e["input_ids"]),
            d_attn=tc.num_attention_heads * tc.head_dim, tokens=len(e["input_ids"]), hidden=tc.hidden_size,
            vocab=tc.vocab_size, answers=n_ans, n_vis_patch=w["n_vis"] - w["n_vis_merge"],
            n_vis_merge=w["n_vis_merge"], vis_layers=vc.depth, vis_hidden=vc.hidden_size, patches=p_i,
            patches_per_image=p_i, merge_factor=vc.spatial_merge_size**2))
    f = {k: sum(x[k] for x in per_sample) for k in per_sample[0]}
    if not gradient_checkpointing:  # no recompute: hardware FLOPs are the model FLOPs
        f = {**f, "recompute": 0.0, "hardware": f["model"]}
    name = torch.cuda.get_device_name(dev) if cuda else "cpu"
    if peak_flops:
        peak, peak_note = peak_flops, "given with --peak-tflops"
    elif cuda:
        peak, peak_note = peak_bf16(name)
    else:
        peak, peak_note = None, "CPU run (code check only): no peak, no MFU"
    counts = token_counts(lists, lengths, packing)
    return {
        "device": name,
        "gradient_checkpointing": gradient_checkpointing,
        "length_grouped": grouped,
        "packing": packing,
        "quantization": quantization,
        "attn_implementation": attn,
        "mean_seq_len": round(sum(lengths) / len(lengths), 1),
        "seq_lens": sorted(set(lengths)),
        "batch": batch,
        "samples_per_step": len(examples),
        "micro_batches_per_step": len(lists),
        "steps": steps,
        "padding_fraction": round(counts["padding_fraction"], 4),
        "token_counts_per_step": counts,
        "steps_per_s": round(1 / dt, 3),
        "samples_per_s": round(len(examples) / dt, 2),
        "tokens_per_s": round(sum(lengths) / dt, 1),  # real tokens
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
        "lm_layer_parameters": w["n_lm"],
        "lora_parameters": n_lora,
        "vision_parameters": w["n_vis"],
    }


# The GPU variants, side by side: (name, bench_full_size keyword arguments)
GPU_VARIANTS = (
    ("plain", {}),
    ("length_grouped", {"grouped": True}),
    ("packed", {"packing": True}),
    ("no_checkpointing", {"gradient_checkpointing": False}),
    ("qlora", {"quantization": "4bit"}),
)


def gpu_variants(steps: int, device: str = "cuda", peak_flops: float | None = None, **sizes) -> dict:
    """Every variant of :data:`GPU_VARIANTS`; one that cannot run here (QLoRA without bitsandbytes) is
    ``{"not_measured": reason}``, one that fails (e.g. out of memory) ``{"failed": error}``."""
    import gc

    out: dict[str, dict] = {}
    for name, kw in GPU_VARIANTS:
        try:
            out[name] = bench_full_size(steps, device=device, peak_flops=peak_flops, **sizes, **kw)
        except ValueError as exc:  # check_quantization: what is missing
            out[name] = {"not_measured": str(exc)}
        except Exception as exc:  # noqa: BLE001 - one variant's failure must not lose the others
            out[name] = {"failed": f"{type(exc).__name__}: {exc}"[:500]}
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return out


def _ratio(a: dict | None, b: dict | None, key: str = "tokens_per_s") -> float | None:
    """a[key] / b[key] when both were measured."""
    if not a or not b or a.get(key) is None or not b.get(key):
        return None
    return round(a[key] / b[key], 3)


def evaluate_targets(figures: dict) -> dict[str, bool | None]:
    """Each target met (True/False) or not measured (None)."""
    def at_least(v, t):
        return None if v is None else v >= t

    def at_most(v, t):
        return None if v is None else v <= t

    gpu_plain = (figures.get("gpu") or {}).get("plain") or {}
    mem = gpu_plain.get("peak_memory_bytes")
    return {
        "cpu_tiny_steps_per_s": at_least(figures["cpu_steps_per_s"], TARGETS["cpu_tiny_steps_per_s"]),
        "cpu_packed_vs_plain_tokens_per_s": at_least(figures["cpu_packed_vs_plain"],
                                                     TARGETS["cpu_packed_vs_plain_tokens_per_s"]),
        "cpu_2proc_vs_1proc_final_loss_rel_diff": at_most(figures["cpu_loss_rel_diff"],
                                                          TARGETS["cpu_2proc_vs_1proc_final_loss_rel_diff"]),
        "gpu_mfu": at_least(gpu_plain.get("mfu"), TARGETS["gpu_mfu"]),
        "gpu_peak_memory_gib": at_most(None if mem is None else mem / 2**30, TARGETS["gpu_peak_memory_gib"]),
        "gpu_packed_vs_plain_tokens_per_s": at_least(figures.get("gpu_packed_vs_plain"),
                                                     TARGETS["gpu_packed_vs_plain_tokens_per_s"]),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpu-steps", type=int, default=8)
    ap.add_argument("--gpu-steps", type=int, default=5)
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice); on a box shared "
                    "with other jobs 1 thread avoids OpenMP oversubscription stalls")
    ap.add_argument("--peak-tflops", type=float, help="dense bf16 peak of the GPU in TFLOP/s (default: by its name)")
    ap.add_argument("--no-processes", action="store_true", help="skip the 1- vs 2-process CPU runs")
    ap.add_argument("--process-threads", type=int, help="CPU threads of each process of the 1- vs 2-process runs "
                    "(default: --threads, or torch's choice)")
    ap.add_argument("--rounds", type=int, default=2, help="CPU plain/grouped/packed runs, interleaved; the best "
                    "round of each counts (other jobs on the cores slow single runs at random)")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        setup = cpu_setup(Path(tmp))
        cpu, grouped, packed = cpu_side_by_side(a.cpu_steps, setup, a.rounds)
        for run in (cpu, grouped, packed):
            print(f"tiny CPU (group_by_length={run['group_by_length']}, packing={run['packing']}): "
                  f"{run['steps_per_s']} steps/s, {run['tokens_per_s']} tokens/s, padding {run['padding_fraction']}",
                  file=sys.stderr)
        procs, procs_note = None, "skipped (--no-processes)"
        if not a.no_processes:
            threads = a.process_threads or torch.get_num_threads()
            procs = {"1": bench_cpu_processes(a.cpu_steps, 1, setup, threads),
                     "2": bench_cpu_processes(a.cpu_steps, 2, setup, threads)}
            procs_note = None
            print(f"tiny CPU, 1 vs 2 processes: {procs['1']['tokens_per_s']} vs {procs['2']['tokens_per_s']} tokens/s, "
                  f"final loss {procs['1']['final_train_loss']:.5f} vs {procs['2']['final_train_loss']:.5f}",
                  file=sys.stderr)

    gpu, gpu_note = None, "not run: no GPU (torch.cuda.is_available() is false)"
    if torch.cuda.is_available():
        gpu, gpu_note = gpu_variants(a.gpu_steps, peak_flops=a.peak_tflops * 1e12 if a.peak_tflops else None), None
        for name, run in gpu.items():
            print(f"full-size GPU {name}: " + (f"{run['tokens_per_s']} tokens/s, MFU {run['mfu']}, padding "
                  f"{run['padding_fraction']}, peak {run['peak_memory_bytes'] / 2**30:.1f} GiB"
                  if "tokens_per_s" in run else json.dumps(run)), file=sys.stderr)

    loss_diff = None
    if procs:
        l1, l2 = procs["1"]["final_train_loss"], procs["2"]["final_train_loss"]
        loss_diff = abs(l2 - l1) / abs(l1) if l1 else None
    gpu_ok = {k: v for k, v in (gpu or {}).items() if "tokens_per_s" in v}
    figures = {"cpu_steps_per_s": cpu["steps_per_s"], "cpu_packed_vs_plain": _ratio(packed, cpu),
               "cpu_loss_rel_diff": loss_diff, "gpu": gpu_ok,
               "gpu_packed_vs_plain": _ratio(gpu_ok.get("packed"), gpu_ok.get("plain"))}
    met = evaluate_targets(figures)
    not_measured = [k for k, v in met.items() if v is None]
    result = {
        "benchmark": "train",
        "cpu_tiny": cpu,
        "cpu_tiny_length_grouped": grouped,
        "cpu_tiny_packed": packed,
        # the same records and steps plain / length-grouped / packed: real tokens per second and padding
        "cpu_tokens_per_s_plain_grouped_packed": [cpu["tokens_per_s"], grouped["tokens_per_s"], packed["tokens_per_s"]],
        "cpu_padding_fraction_plain_grouped_packed": [cpu["padding_fraction"], grouped["padding_fraction"],
                                                      packed["padding_fraction"]],
        "cpu_tokens_per_s_plain_vs_grouped": [cpu["tokens_per_s"], grouped["tokens_per_s"]],
        "cpu_padding_fraction_plain_vs_grouped": [cpu["padding_fraction"], grouped["padding_fraction"]],
        "cpu_ratios_vs_plain": {"length_grouped": _ratio(grouped, cpu), "packed": _ratio(packed, cpu)},
        "cpu_processes": procs,
        "cpu_processes_note": procs_note,
        "cpu_2proc_vs_1proc_tokens_per_s": _ratio((procs or {}).get("2"), (procs or {}).get("1")),
        "cpu_2proc_vs_1proc_final_loss_rel_diff": loss_diff,
        "gpu_full_size": gpu,
        "gpu_ratios_vs_plain": ({k: _ratio(v, gpu_ok.get("plain")) for k, v in gpu_ok.items() if k != "plain"}
                                if gpu_ok.get("plain") else None),
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
