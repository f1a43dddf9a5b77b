"""The LoRA training loop: transformers + peft, resumable, with answer-only loss.

Output directory layout::

    config.yaml          resolved TrainConfig of the run
    loss_log.jsonl       one row per logged step: step, epoch, loss, lr, grad_norm (+ eval_loss at eval steps)
    checkpoints/step-N/  adapter + optimizer/scheduler/RNG state + trainer_state.json (written atomically)
    adapter/             final PEFT adapter (adapter_config.json + adapter_model.safetensors)
    summary.json         losses, steps, throughput, padding fraction, peak memory, samples left out by the budget
    tensorboard/         TensorBoard event files (train/loss, train/learning_rate, train/grad_norm, eval/loss)
                         unless report_to: none

Loss: summed cross-entropy over answer tokens (label HTML + EOS) of all micro-batches of an optimizer step,
divided by their token count, so gradient accumulation gives the same gradient as one large batch. The data
order is a function of (seed, epoch), so a re-run on the same directory resumes from the newest checkpoint
at the exact micro-batch where it stopped.
"""

from __future__ import annotations

import json
import resource
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn.functional as F

from ocr_ft.storage import atomic_dir, atomic_write_json, atomic_write_jsonl, sha256_json
from ocr_ft.train.budget import BudgetReport, check_budget, field_of, image_file, schedule_numbers
from ocr_ft.train import distributed as dist_
from ocr_ft.train.config import TrainConfig, load_config
from ocr_ft.train.inputs import IGNORE_INDEX, ProcessorBundle, TrainingCollator, load_image
from ocr_ft.train import packing as packing_
from ocr_ft.train.modeling import (
    apply_lora,
    load_base_model,
    load_processor,
    lora_module_names,
    resolve_device,
    resolve_dtype,
    unwrap_model,
)

LogFn = Callable[[dict[str, Any]], None]
CHECKPOINTS = "checkpoints"
TENSORBOARD = "tensorboard"
_BOARD_TAGS = {"loss": "train/loss", "lr": "train/learning_rate", "grad_norm": "train/grad_norm",
               "eval_loss": "eval/loss"}


class _TensorBoard:
    """TensorBoard event files of the run (``tensorboard --logdir <run>/tensorboard``).

    A resumed run purges events after its checkpoint's step, so the curve is written once, not twice.
    """

    def __init__(self, log_dir: Path, start_step: int):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise RuntimeError("report_to: tensorboard needs the tensorboard package (pip install tensorboard), "
                               "or set report_to: none") from exc
        # rows up to the checkpoint's step are kept; later ones (written by the killed process) are dropped
        self.writer = SummaryWriter(str(log_dir), purge_step=start_step + 1 if start_step else None)

    def write(self, row: dict[str, Any]) -> None:
        for key, tag in _BOARD_TAGS.items():
            if row.get(key) is not None:
                self.writer.add_scalar(tag, float(row[key]), int(row["step"]))
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


@dataclass
class TrainResult:
    output_dir: Path
    summary: dict[str, Any]

    @property
    def adapter_dir(self) -> Path:
        return self.output_dir / "adapter"

    @property
    def config_path(self) -> Path:
        return self.output_dir / "config.yaml"

    @property
    def loss_log_path(self) -> Path:
        return self.output_dir / "loss_log.jsonl"

    @property
    def summary_path(self) -> Path:
        return self.output_dir / "summary.json"

    @property
    def steps(self) -> int:
        return int(self.summary["steps"])


# --------------------------------------------------------------------------- data order


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g).tolist()


# With group_by_length, the shuffled epoch order is cut into chunks of this many optimizer steps and each
# chunk is sorted by total tokens (longest first), as transformers' LengthGroupedSampler does with its
# "megabatches": batches hold similar lengths; the batches are then shuffled (seed, epoch), so the step order
# changes every epoch even when one chunk holds the whole dataset.
LENGTH_GROUP_STEPS = 50


def length_grouped_order(order: list[int], lengths: Sequence[int], chunk: int) -> list[int]:
    """``order`` cut into chunks of ``chunk`` samples, each sorted by ``lengths`` descending (stable)."""
    return [i for k in range(0, len(order), chunk)
            for i in sorted(order[k:k + chunk], key=lambda i: -lengths[i])]


def step_micro_batches(n: int, config: TrainConfig, step: int,
                       lengths: Sequence[int] | None = None) -> list[list[int]]:
    """Sample indices of each micro-batch of optimizer step ``step`` (0-based, global).

    ``lengths`` (total tokens per sample) is required when ``config.group_by_length`` is on.
    """
    nums = schedule_numbers(n, config)
    epoch, j = divmod(step, nums["steps_per_epoch"])
    order = epoch_order(n, config.seed, epoch)
    bs, ga = config.per_device_batch_size, config.gradient_accumulation_steps
    if config.group_by_length:
        if lengths is None or len(lengths) != n:
            raise ValueError(f"group_by_length needs the token length of each of the {n} samples")
        order = length_grouped_order(order, lengths, bs * ga * LENGTH_GROUP_STEPS)
    batches = [order[i:i + bs] for i in range(0, n, bs)]
    if config.group_by_length:  # the batches themselves in a seeded per-epoch order, not longest first
        batches = [batches[k] for k in epoch_order(len(batches), config.seed + 1, epoch)]
    return batches[j * ga:(j + 1) * ga]


def padding_fraction(batch_lists: Sequence[Sequence[int]], lengths: Sequence[int]) -> float:
    """Share of the padded token grid (batch x longest sample, summed over micro-batches) that is padding."""
    grid = sum(len(b) * max(lengths[i] for i in b) for b in batch_lists if b)
    real = sum(lengths[i] for b in batch_lists for i in b)
    return 1.0 - real / grid if grid else 0.0


class _PairDataset(torch.utils.data.Dataset):
    def __init__(self, records: Sequence[Any], data_dir: Path):
        self.records, self.data_dir = records, data_dir

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int):
        r = self.records[i]
        return load_image(image_file(r, self.data_dir)), field_of(r, "ground_truth_html")


def _batches(dataset, batch_lists: list[list[int]], bundle: ProcessorBundle, workers: int,
             packing: bool = False) -> Iterator[dict]:
    if not batch_lists:
        return iter(())
    # A private generator: creating the loader must not draw from the global RNG (LoRA dropout uses it), so a
    # resumed run continues with exactly the RNG state of the uninterrupted one.
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=batch_lists,
                                         collate_fn=(packing_.PackingCollator if packing else TrainingCollator)(bundle),
                                         num_workers=workers, generator=torch.Generator().manual_seed(0))
    return iter(loader)


# --------------------------------------------------------------------------- loss


def answer_loss_sum(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """(summed cross-entropy over answer tokens, number of answer tokens) for one padded or packed batch.

    The LM head runs only on positions that predict an answer token, which skips the image and prompt.
    """
    base = unwrap_model(model)
    batch = packing_.prepare_packed_batch(base, batch)  # packed: per-sample position ids; padded: unchanged
    # every key the collator made except the labels is a model input (each family's collator makes its own)
    out = base.model(**{k: v for k, v in batch.items() if k != "labels"}, use_cache=False)
    targets = batch["labels"][:, 1:]
    mask = targets != IGNORE_INDEX
    logits = base.lm_head(out.last_hidden_state[:, :-1][mask]).float()
    return F.cross_entropy(logits, targets[mask], reduction="sum"), int(mask.sum())


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


@torch.no_grad()
def eval_loss(model: Any, bundle: ProcessorBundle, records: Sequence[Any], data_dir: Path, batch_size: int,
              device: torch.device, workers: int = 0, world: dist_.World | None = None) -> float | None:
    """Mean answer-token cross-entropy of ``model`` on ``records`` (None when there are none).

    With several processes each takes every N-th batch and the sums are added up over processes.
    """
    if not records:
        return None
    world = world or dist_.World()
    was_training = model.training
    model.eval()
    total, tokens = 0.0, 0
    lists = [list(range(i, min(i + batch_size, len(records)))) for i in range(0, len(records), batch_size)]
    for batch in _batches(_PairDataset(records, data_dir), lists[world.rank::world.size], bundle, workers):
        s, n = answer_loss_sum(model, _to(batch, device))
        total, tokens = total + float(s), tokens + n
    total, tokens = dist_.all_reduce_sum(world, [total, tokens], device)
    model.train(was_training)
    return total / max(tokens, 1)


# --------------------------------------------------------------------------- checkpoints


def _checkpoint_dirs(out: Path) -> list[Path]:
    root = out / CHECKPOINTS
    found = [p for p in root.glob("step-*") if (p / "trainer_state.json").is_file()] if root.is_dir() else []
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def _rng_state() -> dict[str, Any]:
    rng = {"cpu": torch.random.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return rng


def _save_checkpoint(out: Path, model, optimizer, scheduler, state: dict[str, Any], keep: int,
                     world: dist_.World | None = None) -> Path:
    """Every rank calls it (the RNG states of all ranks are gathered); rank 0 alone writes."""
    world = world or dist_.World()
    target = out / CHECKPOINTS / f"step-{state['step']:08d}"
    rngs = dist_.gather_objects(world, _rng_state())
    if world.is_main:
        with atomic_dir(target) as tmp:
            model.save_pretrained(tmp)
            torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rngs[0],
                        "rng_ranks": rngs}, tmp / "training_state.pt")
            atomic_write_json(tmp / "trainer_state.json", {**state, "world_size": world.size})
        for old in _checkpoint_dirs(out)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    dist_.barrier(world)
    return target


def _load_checkpoint(ckpt: Path, model, optimizer, scheduler, world: dist_.World | None = None) -> dict[str, Any]:
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    set_peft_model_state_dict(model, load_file(str(ckpt / "adapter_model.safetensors")))
    st = torch.load(ckpt / "training_state.pt", map_location="cpu", weights_only=True)
    optimizer.load_state_dict(st["optimizer"])
    scheduler.load_state_dict(st["scheduler"])
    world = world or dist_.World()
    ranks = st.get("rng_ranks") or [st["rng"]]
    # the same number of processes continues each with its own RNG; another number continues with rank 0's
    rng = ranks[world.rank] if len(ranks) == world.size else ranks[0]
    torch.random.set_rng_state(rng["cpu"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return _read_json(ckpt / "trainer_state.json")


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- helpers


def _scheduler(optimizer, config: TrainConfig, total: int, warmup: int):
    from transformers import get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup, get_linear_schedule_with_warmup

    if config.lr_scheduler == "cosine":
        return get_cosine_schedule_with_warmup(optimizer, warmup, total)
    if config.lr_scheduler == "linear":
        return get_linear_schedule_with_warmup(optimizer, warmup, total)
    return get_constant_schedule_with_warmup(optimizer, warmup)


def _peak_memory(device: torch.device) -> tuple[int, str]:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device)), "cuda_max_memory_allocated"
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024, "process_max_rss"


def _data_fingerprint(records: Sequence[Any]) -> str:
    return sha256_json([
        field_of(r, "content_hash") or [field_of(r, "image_path"), field_of(r, "ground_truth_html")] for r in records
    ])


def _emit(on_log: LogFn | None, row: dict[str, Any]) -> None:
    if on_log is not None:
        on_log(dict(row))


def _completed_result(out: Path, fingerprint: str) -> TrainResult | None:
    path = out / "summary.json"
    if not path.is_file() or not (out / "adapter" / "adapter_config.json").is_file():
        return None
    summary = _read_json(path)
    if summary.get("status") == "completed" and summary.get("fingerprint") == fingerprint:
        return TrainResult(out, summary)
    return None


# --------------------------------------------------------------------------- train


def train(
    config: TrainConfig | None,
    train_records: Sequence[Any],
    val_records: Sequence[Any],
    data_dir: str | Path,
    output_dir: str | Path,
    on_log: LogFn | None = None,
    device: str | torch.device | None = None,
) -> TrainResult:
    """Fine-tune ``config.base_model`` with LoRA on ``train_records`` (records or dicts, image paths relative to
    ``data_dir``) and write the run to ``output_dir`` (layout in the module docstring).

    Re-running on the same ``output_dir`` resumes from the newest checkpoint (same config and data), or returns
    the finished result without training again. ``on_log`` receives progress dicts (``event``, ``step``,
    ``total_steps``, ``loss``, ``lr``, ``eval_loss`` ...). Exceptions from ``on_log`` stop training (the last
    checkpoint stays).
    """
    config = config or load_config()
    world = dist_.current_world()
    # under torchrun the launched world wins (a multi-node job has nnodes x nproc-per-node processes)
    if world.distributed and config.gradient_accumulation_steps % world.size:
        raise ValueError(f"gradient_accumulation_steps={config.gradient_accumulation_steps} must be a multiple of "
                         f"the {world.size} processes (WORLD_SIZE), so the effective batch stays the same")
    if not world.distributed and config.nproc > 1:
        raise ValueError(f"nproc: {config.nproc} needs {config.nproc} processes: launch with `ocr-ft train --nproc "
                         f"{config.nproc}` or `torchrun --nproc-per-node {config.nproc}` (see the README)")
    run_device = dist_.device_for(world, resolve_device(device))
    check_quantization(config, run_device)
    created = dist_.init(world, run_device)
    try:
        return _train(config, train_records, val_records, Path(data_dir), Path(output_dir),
                      on_log if world.is_main else None, run_device, world)
    finally:
        if created:
            import torch.distributed

            torch.distributed.destroy_process_group()


def _train(config: TrainConfig, train_records: Sequence[Any], val_records: Sequence[Any], data_dir: Path,
           out: Path, on_log: LogFn | None, device: torch.device, world: dist_.World) -> TrainResult:
    if world.is_main:
        out.mkdir(parents=True, exist_ok=True)
    bundle = load_processor(config.base_model, config)
    budget = check_budget(bundle, train_records, data_dir, config.max_seq_len)
    val_budget = check_budget(bundle, val_records, data_dir, config.max_seq_len)
    for split, rep in (("train", budget), ("val", val_budget)):
        for x in rep.left_out:
            _emit(on_log, {"event": "left_out", "split": split, **x.to_dict()})
    if not budget.kept:
        reasons = sorted({x.reason for x in budget.left_out})
        raise ValueError(f"no training sample fits: {len(budget.left_out)} left out ({', '.join(reasons) or 'no input'})")
    fingerprint = sha256_json([config.fingerprint(), _data_fingerprint(budget.kept)])
    done = _completed_result(out, fingerprint)
    if done is not None:
        _emit(on_log, {"event": "already_complete", "step": done.steps, "total_steps": done.steps})
        return done

    checkpoints = _checkpoint_dirs(out)
    state_files = [c / "trainer_state.json" for c in checkpoints[-1:]] + [out / "summary.json"]
    previous = [_read_json(f).get("fingerprint") for f in state_files if f.is_file()]
    if previous and config.resume and any(f != fingerprint for f in previous):
        raise ValueError(
            f"{out} holds a different run (config or training data changed); use another output directory "
            f"or set resume: false to start over"
        )
    dist_.barrier(world)  # every rank has read the folder before rank 0 changes it
    if not config.resume:
        if world.is_main:
            for p in (out / CHECKPOINTS, out / "adapter"):
                shutil.rmtree(p, ignore_errors=True)
        checkpoints = []
    if world.is_main:
        for stale in (out / CHECKPOINTS).glob(".step-*") if (out / CHECKPOINTS).is_dir() else ():
            shutil.rmtree(stale, ignore_errors=True)  # half-written checkpoint of a killed process
        (out / "summary.json").unlink(missing_ok=True)
        config.save(out / "config.yaml")
    dist_.barrier(world)
    return _run(config, bundle, budget, val_budget, data_dir, out, fingerprint,
                checkpoints[-1] if checkpoints else None, on_log, device, world)


def check_quantization(config: TrainConfig, device: torch.device) -> None:
    """A clear error before any loading when ``quantization: 4bit`` cannot run here."""
    if config.quantization == "none":
        return
    if device.type != "cuda":
        raise ValueError(f"quantization: {config.quantization} (QLoRA, bitsandbytes NF4) needs a CUDA GPU; this "
                         f"run is on {device.type}. Set quantization: none to train the full-precision base here.")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ValueError("quantization: 4bit needs the bitsandbytes package: pip install 'ocr_ft[gpu]'") from None


def qlora_config(dtype: torch.dtype):
    """NF4 with double quantization, computing in the run's dtype (the QLoRA paper's recipe)."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=dtype)


def _run(config: TrainConfig, bundle: ProcessorBundle, budget: BudgetReport, val_budget: BudgetReport,
         data_dir: Path, out: Path, fingerprint: str, resume_from: Path | None, on_log: LogFn | None,
         device: torch.device, world: dist_.World) -> TrainResult:
    dtype = resolve_dtype(config.precision, device)
    n = len(budget.kept)
    nums = schedule_numbers(n, config)
    total, warmup = nums["total_steps"], nums["warmup_steps"]
    answer_tokens = [c.label for c in budget.counts]
    seq_tokens = [c.total for c in budget.counts]
    eval_records = val_budget.kept[: config.max_eval_samples]

    torch.manual_seed(config.seed)
    if config.quantization == "4bit":
        from peft import prepare_model_for_kbit_training

        model = load_base_model(config.base_model, dtype, config, quantization_config=qlora_config(dtype),
                                device_map={"": device})
        # norms in fp32, inputs requiring grad for checkpointing through the frozen 4-bit layers
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=config.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        model = load_base_model(config.base_model, dtype, config)
    model.config.use_cache = False
    if config.gradient_checkpointing and config.quantization == "none":
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model = apply_lora(model, config)
    if config.packing:
        packing_.prepare_model_for_packing(model)  # refuses a model that cannot pack
    if config.quantization == "none":
        model = model.to(device)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = _scheduler(optimizer, config, total, warmup)

    log_rows: list[dict[str, Any]] = []
    start_step, resumed_from = 0, None
    if resume_from is not None:
        state = _load_checkpoint(resume_from, model, optimizer, scheduler, world)
        start_step = resumed_from = int(state["step"])
        log_rows = list(state.get("log_history", []))
    if world.is_main:
        atomic_write_jsonl(out / "loss_log.jsonl", log_rows)
    _emit(on_log, {"event": "start", "step": start_step, "total_steps": total, "train_samples": n,
                   "val_samples": len(eval_records), "left_out": len(budget.left_out), "device": str(device),
                   "dtype": str(dtype).replace("torch.", ""), "resumed_from_step": resumed_from,
                   "processes": world.size})

    board = (_TensorBoard(out / TENSORBOARD, start_step)
             if config.report_to == "tensorboard" and world.is_main else None)

    def record(row: dict[str, Any]) -> None:
        if log_rows and log_rows[-1]["step"] == row["step"]:
            log_rows[-1].update(row)
        else:
            log_rows.append(row)
        if world.is_main:
            atomic_write_jsonl(out / "loss_log.jsonl", log_rows)
        if board is not None:
            board.write(row)

    dataset = _PairDataset(budget.kept, data_dir)
    if start_step == 0 and config.eval_at_start and eval_records:
        ev = eval_loss(model, bundle, eval_records, data_dir, config.per_device_batch_size, device, config.dataloader_workers, world)
        record({"step": 0, "eval_loss": ev})
        _emit(on_log, {"event": "eval", "step": 0, "total_steps": total, "eval_loss": ev})

    step_lists = [step_micro_batches(n, config, s, seq_tokens) for s in range(start_step, total)]
    # this process's share: micro-batches rank, rank + N, ... of every step
    batches = _batches(dataset, [b for lists in step_lists for b in lists[world.rank::world.size]], bundle,
                       config.dataloader_workers, config.packing)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    train_time, samples_done, tokens_done = 0.0, 0, 0
    window_loss, window_tokens = 0.0, 0
    for step, lists in zip(range(start_step, total), step_lists):
        t0 = time.perf_counter()
        step_tokens = sum(answer_tokens[i] for b in lists for i in b)
        loss_sum = 0.0
        for _ in lists[world.rank::world.size]:
            batch = _to(next(batches), device)
            s, _n = answer_loss_sum(model, batch)
            (s / step_tokens).backward()
            loss_sum += float(s.detach())
        if world.distributed:  # sum of every process's share = the one-process gradient
            dist_.all_reduce_grads(world, params)
            loss_sum = dist_.all_reduce_sum(world, [loss_sum], device)[0]
        grad_norm = (torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm) if config.max_grad_norm > 0
                     else torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params if p.grad is not None])))
        optimizer.step()
        lr = scheduler.get_last_lr()[0]
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        train_time += time.perf_counter() - t0
        samples_done += sum(len(b) for b in lists)
        tokens_done += sum(seq_tokens[i] for b in lists for i in b)
        window_loss, window_tokens = window_loss + loss_sum, window_tokens + step_tokens
        done = step + 1
        if done == 1 or done % config.logging_steps == 0 or done == total:
            row = {"step": done, "epoch": round(done / nums["steps_per_epoch"], 4),
                   "loss": window_loss / window_tokens, "lr": lr, "grad_norm": float(grad_norm)}
            window_loss, window_tokens = 0.0, 0
            record(row)
            _emit(on_log, {"event": "train", "total_steps": total, **row,
                           "samples_per_second": samples_done / train_time})
        if eval_records and ((config.eval_steps and done % config.eval_steps == 0) or done == total):
            ev = eval_loss(model, bundle, eval_records, data_dir, config.per_device_batch_size, device,
                           config.dataloader_workers, world)
            record({"step": done, "eval_loss": ev})
            _emit(on_log, {"event": "eval", "step": done, "total_steps": total, "eval_loss": ev})
        if done % config.save_steps == 0 and done < total:
            path = _save_checkpoint(out, model, optimizer, scheduler,
                                    {"step": done, "total_steps": total, "fingerprint": fingerprint,
                                     "log_history": log_rows}, config.save_total_limit, world)
            _emit(on_log, {"event": "checkpoint", "step": done, "total_steps": total, "path": str(path)})

    if board is not None:
        board.close()
    if world.is_main:
        with atomic_dir(out / "adapter") as tmp:
            model.save_pretrained(tmp)
            __import__("ocr_ft.train.modeling", fromlist=["x"]).save_serving_files(tmp, bundle)  # issue 11: template + pixel budget
    peak, peak_kind = _peak_memory(device)
    train_losses = [r["loss"] for r in log_rows if "loss" in r]
    eval_losses = [(r["step"], r["eval_loss"]) for r in log_rows if r.get("eval_loss") is not None]
    tokens = packing_.token_counts([b for lists in step_lists for b in lists], seq_tokens, config.packing)
    summary = {
        "status": "completed",
        "fingerprint": fingerprint,
        "base_model": config.base_model,
        "device": str(device),
        "dtype": str(dtype).replace("torch.", ""),
        "steps": total,
        "total_steps": total,
        "epochs": total / nums["steps_per_epoch"],
        "steps_per_epoch": nums["steps_per_epoch"],
        "effective_batch_size": config.effective_batch_size,
        "train_samples": n,
        "eval_samples": len(eval_records),
        "left_out": {"train": [x.to_dict() for x in budget.left_out],
                     "val": [x.to_dict() for x in val_budget.left_out]},
        "token_stats": {"train": budget.stats(), "val": val_budget.stats()},
        "initial_train_loss": train_losses[0] if train_losses else None,
        "final_train_loss": train_losses[-1] if train_losses else None,
        "initial_eval_loss": eval_losses[0][1] if eval_losses and eval_losses[0][0] == 0 else None,
        "final_eval_loss": eval_losses[-1][1] if eval_losses else None,
        "resumed_from_step": resumed_from,
        "session_steps": total - start_step,
        "train_runtime_s": round(train_time, 3),
        "steps_per_second": (total - start_step) / train_time if train_time else None,
        "samples_per_second": samples_done / train_time if train_time else None,
        "tokens_per_second": tokens_done / train_time if train_time else None,
        "group_by_length": config.group_by_length,
        "packing": config.packing,
        "padding_fraction": tokens["padding_fraction"],  # of the token grid (0 when packed)
        "token_counts": tokens,  # real / grid / padding tokens of this session's micro-batches
        "tensorboard_dir": TENSORBOARD if board is not None else None,
        "peak_memory_bytes": peak,
        "peak_memory_kind": peak_kind,
        "trainable_parameters": sum(p.numel() for p in params),
        "total_parameters": sum(p.numel() for p in model.parameters()),
        "lora_modules": len(lora_module_names(model)),
        "vision_lora": config.vision_lora,
        "quantization": config.quantization,
        "adapter_dir": "adapter",
        "processes": world.size,
    }
    if world.is_main:
        atomic_write_json(out / "summary.json", summary)
    dist_.barrier(world)
    _emit(on_log, {"event": "done", "step": total, "total_steps": total,
                   "final_train_loss": summary["final_train_loss"], "final_eval_loss": summary["final_eval_loss"]})
    return TrainResult(out, summary)
