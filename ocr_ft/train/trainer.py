"""LoRA training on ``transformers.Trainer`` (accelerate underneath), resumable, with answer-only loss.

Output directory layout::

    config.yaml               resolved TrainConfig of the run
    loss_log.jsonl            one row per logged step: step, epoch, loss, lr, grad_norm (+ eval_loss at eval steps)
    checkpoints/checkpoint-N/ the Trainer's checkpoint (adapter, optimizer, scheduler, RNG of every process,
                              trainer_state.json) + ocr_ft_checkpoint.json, written last: a folder without it is
                              half-written (the process was killed) and never resumed from
    adapter/                  final PEFT adapter (adapter_config.json + adapter_model.safetensors + serving files)
    summary.json              losses, steps, throughput, padding fraction, peak memory, samples left out by the budget
    tensorboard/              TensorBoard event files (train/loss, train/learning_rate, train/grad_norm, eval/loss)
                              when report_to lists tensorboard (the default); mlflow / wandb by their own settings

Loss (:func:`answer_loss_sum`, the one loss of training and evaluation): summed cross-entropy over the answer
tokens (label HTML + EOS), the LM head run only on the positions that predict them. ``compute_loss`` divides it by
the answer-token count of the whole optimizer step, which the Trainer counts (``num_items_in_batch``: labels
shifted by one, summed over the step's micro-batches and over all processes), and multiplies by the number of
processes because DDP / FSDP / DeepSpeed average gradients over them. So the gradient of a step equals the one
of a single process summing every answer token of the step, for any gradient accumulation and any N.

Data order: a function of (seed, epoch) (:func:`epoch_micro_batches`, optionally length-grouped), cut into
optimizer steps of ``gradient_accumulation_steps`` micro-batches; with N processes rank r takes micro-batches
r, r+N, ... of every step and accumulates ``gradient_accumulation_steps / N`` of them. A re-run on the same
directory resumes from the newest complete checkpoint: the Trainer restores optimizer, scheduler and RNG and
skips the batches already trained, so the resumed run continues exactly where the killed one stopped.
"""

from __future__ import annotations

import importlib.util
import json
import math
import resource
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from transformers import Trainer, TrainerCallback, TrainingArguments, set_seed

from ocr_ft.storage import atomic_write_json, atomic_write_jsonl, sha256_json
from ocr_ft.train import distributed as dist_
from ocr_ft.train import packing as packing_
from ocr_ft.train.budget import BudgetReport, check_budget, field_of, image_file, schedule_numbers
from ocr_ft.train.config import TrainConfig, load_config, report_targets
from ocr_ft.train.inputs import IGNORE_INDEX, ProcessorBundle, TrainingCollator, load_image
from ocr_ft.train.modeling import (
    apply_lora,
    load_base_model,
    load_processor,
    lora_module_names,
    resolve_device,
    resolve_dtype,
    save_serving_files,
    unwrap_model,
)

LogFn = Callable[[dict[str, Any]], None]
CHECKPOINTS = "checkpoints"
CHECKPOINT_PREFIX = "checkpoint-"  # the Trainer's folder names
CHECKPOINT_MARK = "ocr_ft_checkpoint.json"  # written last: the checkpoint is complete
TENSORBOARD = "tensorboard"
DISTRIBUTED_CONFIGS = Path(__file__).with_name("distributed_configs")
_SCHEDULERS = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}


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


def epoch_micro_batches(n: int, config: TrainConfig, epoch: int,
                        lengths: Sequence[int] | None = None) -> list[list[int]]:
    """Sample indices of every micro-batch of ``epoch``, in training order (all processes together).

    ``lengths`` (total tokens per sample) is required when ``config.group_by_length`` is on.
    """
    order = epoch_order(n, config.seed, epoch)
    bs, ga = config.per_device_batch_size, config.gradient_accumulation_steps
    if config.group_by_length:
        if lengths is None or len(lengths) != n:
            raise ValueError(f"group_by_length needs the token length of each of the {n} samples")
        order = length_grouped_order(order, lengths, bs * ga * LENGTH_GROUP_STEPS)
    batches = [order[i:i + bs] for i in range(0, n, bs)]
    if config.group_by_length:  # the batches themselves in a seeded per-epoch order, not longest first
        batches = [batches[k] for k in epoch_order(len(batches), config.seed + 1, epoch)]
    return batches


def step_micro_batches(n: int, config: TrainConfig, step: int,
                       lengths: Sequence[int] | None = None) -> list[list[int]]:
    """Sample indices of each micro-batch of optimizer step ``step`` (0-based, global)."""
    epoch, j = divmod(step, schedule_numbers(n, config)["steps_per_epoch"])
    ga = config.gradient_accumulation_steps
    return epoch_micro_batches(n, config, epoch, lengths)[j * ga:(j + 1) * ga]


def padding_fraction(batch_lists: Sequence[Sequence[int]], lengths: Sequence[int]) -> float:
    """Share of the padded token grid (batch x longest sample, summed over micro-batches) that is padding."""
    return packing_.token_counts(batch_lists, lengths, packed=False)["padding_fraction"]


def _padding_batch(batch: Sequence[int]) -> list[int]:
    """A stand-in micro-batch (its samples encoded as ``-1 - i``) that trains nothing: every label is masked."""
    return [-1 - i for i in batch]


def _rank_share(lists: list[list[int]], rank: int, world_size: int) -> list[list[int]]:
    """Micro-batches ``rank, rank + N, ...`` of ``lists``, padded with padding batches so that every process runs
    the same number of passes (DDP, FSDP and DeepSpeed all synchronise on them)."""
    mine = lists[rank::world_size]
    want = math.ceil(len(lists) / world_size)
    return mine + [_padding_batch(lists[0])] * (want - len(mine)) if lists else []


class StepBatchSampler:
    """This process's micro-batches of every optimizer step of the epoch set by :meth:`set_epoch`.

    Rank r of N yields micro-batches r, r+N, ... of each step. When a step has fewer micro-batches than a
    multiple of N (the last step of an epoch), the short ranks yield padding batches (labels all masked, zero
    loss, zero gradient) so that every process runs the same number of forward / backward passes: DDP, FSDP and
    DeepSpeed all synchronise on them.
    """

    def __init__(self, n: int, config: TrainConfig, lengths: Sequence[int] | None, rank: int = 0, world_size: int = 1):
        self.n, self.config, self.lengths = n, config, lengths
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def steps(self, epoch: int) -> list[list[list[int]]]:
        """The micro-batches of each optimizer step of ``epoch`` (all processes)."""
        batches = epoch_micro_batches(self.n, self.config, epoch, self.lengths)
        ga = self.config.gradient_accumulation_steps
        return [batches[k:k + ga] for k in range(0, len(batches), ga)]

    def __iter__(self):
        for lists in self.steps(self.epoch):
            yield from _rank_share(lists, self.rank, self.world_size)

    def __len__(self) -> int:
        micro = math.ceil(self.n / self.config.per_device_batch_size)
        ga = self.config.gradient_accumulation_steps
        full, last = divmod(micro, ga)
        return full * (ga // self.world_size) + math.ceil(last / self.world_size)


class _PairDataset(torch.utils.data.Dataset):
    """(image, label, trains) of sample i; ``-1 - i`` is sample i as a padding sample (trains False)."""

    def __init__(self, records: Sequence[Any], data_dir: Path):
        self.records, self.data_dir = records, data_dir

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int):
        trains = i >= 0
        r = self.records[i if trains else -1 - i]
        return load_image(image_file(r, self.data_dir)), field_of(r, "ground_truth_html"), trains


class _Collator:
    """The family's :class:`TrainingCollator` (or, with ``packing``, the padding-free
    :class:`~ocr_ft.train.packing.PackingCollator`), with every label masked in a padding batch."""

    def __init__(self, bundle: ProcessorBundle, packing: bool = False):
        self.inner = (packing_.PackingCollator if packing else TrainingCollator)(bundle)

    def __call__(self, items):
        batch = self.inner([(image, label) for image, label, _ in items])
        if not any(trains for *_, trains in items):
            batch["labels"] = torch.full_like(batch["labels"], IGNORE_INDEX)
        return batch


# --------------------------------------------------------------------------- loss


def _inner_module(model: Any) -> Any:
    """The PEFT / transformers model inside a DDP or DeepSpeed wrapper."""
    while isinstance(getattr(model, "module", None), torch.nn.Module):
        model = model.module
    return model


def answer_loss_sum(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """(summed cross-entropy over answer tokens, number of answer tokens) for one padded or packed batch.

    The forward goes through ``model`` as given (DDP / FSDP / DeepSpeed wrappers see it); a pre-hook on the
    LM head hands it only the positions that predict an answer token, which skips the image and prompt.
    """
    # a packed batch gets per-sample position ids (the model builds a block-diagonal mask); padded: unchanged
    base = unwrap_model(_inner_module(model))
    batch = packing_.prepare_packed_batch(base, batch)
    targets = batch["labels"][:, 1:]
    mask = targets != IGNORE_INDEX
    head = base.get_output_embeddings()

    def answers_only(_module, args):
        return (args[0][:, :-1][mask], *args[1:])

    handle = head.register_forward_pre_hook(answers_only)
    try:
        # every key the collator made except the labels is a model input (each family's collator makes its own)
        out = model(**{k: v for k, v in batch.items() if k != "labels"}, use_cache=False)
    finally:
        handle.remove()
    return F.cross_entropy(out.logits.float(), targets[mask], reduction="sum"), int(mask.sum())


class AnswerLossTrainer(Trainer):
    """``Trainer`` with our data order (:class:`StepBatchSampler`), the answer-token loss normalised by the
    step's answer tokens, a token-weighted eval loss and checkpoints marked complete when written."""

    loss_is_scaled_for_ga = True  # compute_loss already divides by the whole step's answer tokens

    def __init__(self, *args, batch_sampler: StepBatchSampler, eval_batches: list[list[int]],
                 checkpoint_mark: dict[str, Any], **kwargs):
        super().__init__(*args, **kwargs)
        self.batch_sampler, self.eval_batches, self.checkpoint_mark = batch_sampler, eval_batches, checkpoint_mark
        # compute_loss takes num_items_in_batch: the Trainer counts labels[..., 1:] != -100 over the step's
        # micro-batches and sums the count over processes (average_tokens_across_devices)
        self.model_accepts_loss_kwargs = True
        self._loss_shifts_labels = True

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        total, count = answer_loss_sum(model, inputs)
        if num_items_in_batch is None:
            loss = total / max(count, 1)
        else:
            tokens = torch.as_tensor(num_items_in_batch, device=total.device, dtype=total.dtype).clamp(min=1)
            # the wrappers average gradients over processes; each process holds its share of the step's sum
            loss = total / tokens * self.accelerator.num_processes
        return (loss, None) if return_outputs else loss

    def get_train_dataloader(self):
        loader = torch.utils.data.DataLoader(
            self.train_dataset, batch_sampler=self.batch_sampler, collate_fn=self.data_collator,
            num_workers=self.args.dataloader_num_workers, pin_memory=self.args.dataloader_pin_memory,
            # a private generator: iterating the loader must not draw from the global RNG (LoRA dropout uses it)
            generator=torch.Generator().manual_seed(self.args.seed))
        loader = self.accelerator.prepare(loader)
        # our sampler already gives each process its share: accelerate's shard wrapper must pass it through
        shard = getattr(loader, "batch_sampler", None)
        if shard is not None and getattr(shard, "batch_sampler", None) is self.batch_sampler:
            shard.num_processes, shard.process_index = 1, 0
        return loader

    def _run_epoch(self, *args, **kwargs):
        # set here rather than through accelerate's set_epoch forwarding, which a resumed (skipping) loader loses
        self.batch_sampler.set_epoch(kwargs["epoch"])
        return super()._run_epoch(*args, **kwargs)

    @torch.no_grad()
    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """Mean answer-token cross-entropy over the eval samples (each process takes every N-th batch)."""
        model = self.model
        was_training = model.training
        model.eval()
        sums = torch.zeros(2, dtype=torch.float64, device=self.args.device)
        loader = torch.utils.data.DataLoader(self.eval_dataset, batch_sampler=self.eval_batches,
                                             collate_fn=self.data_collator,
                                             num_workers=self.args.dataloader_num_workers,
                                             generator=torch.Generator().manual_seed(0))
        for batch in loader:
            total, count = answer_loss_sum(model, self._prepare_inputs(batch))
            sums += torch.tensor([float(total), count], dtype=torch.float64, device=sums.device)
        sums = self.accelerator.reduce(sums, reduction="sum")
        model.train(was_training)
        metrics = {f"{metric_key_prefix}_loss": float(sums[0] / sums[1].clamp(min=1))}
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics=metrics)
        return metrics

    def _save_checkpoint(self, model, trial) -> None:
        super()._save_checkpoint(model, trial)
        self.accelerator.wait_for_everyone()  # every process has written its RNG state
        if self.args.should_save:
            folder = Path(self.args.output_dir) / f"{CHECKPOINT_PREFIX}{self.state.global_step}"
            atomic_write_json(folder / CHECKPOINT_MARK, {**self.checkpoint_mark, "step": self.state.global_step,
                                                         "world_size": self.accelerator.num_processes})
        self.accelerator.wait_for_everyone()


@torch.no_grad()
def eval_loss(model: Any, bundle: ProcessorBundle, records: Sequence[Any], data_dir: str | Path, batch_size: int,
              device: str | torch.device, workers: int = 0) -> float | None:
    """Mean answer-token cross-entropy of ``model`` on ``records`` in this process (None when there are none):
    the number a run logs as ``eval_loss``, for checking a saved or reloaded adapter outside a training run."""
    if not records:
        return None
    device = torch.device(device)
    was_training = model.training
    model.eval()
    total, tokens = 0.0, 0
    loader = torch.utils.data.DataLoader(_PairDataset(records, Path(data_dir)),
                                         batch_sampler=_eval_batches(len(records), batch_size, dist_.World()),
                                         collate_fn=_Collator(bundle), num_workers=workers)
    try:
        for batch in loader:
            s, n = answer_loss_sum(model, {k: v.to(device) if isinstance(v, torch.Tensor) else v
                                           for k, v in batch.items()})
            total, tokens = total + float(s), tokens + n
    finally:
        model.train(was_training)
    return total / max(tokens, 1)


def _eval_batches(n: int, batch_size: int, world: dist_.World) -> list[list[int]]:
    """This process's eval batches: every N-th, padded so that all processes run the same number."""
    lists = [list(range(i, min(i + batch_size, n))) for i in range(0, n, batch_size)]
    return _rank_share(lists, world.rank, world.size)


# --------------------------------------------------------------------------- progress, logs, checkpoints


def loss_rows(log_history: Sequence[dict[str, Any]], steps_per_epoch: int) -> list[dict[str, Any]]:
    """The Trainer's log history as loss_log.jsonl rows: one per logged step, eval loss merged into its step."""
    rows: dict[int, dict[str, Any]] = {}
    for entry in log_history:
        step = int(entry.get("step", 0))
        if "loss" in entry:
            rows.setdefault(step, {"step": step}).update(
                epoch=round(step / steps_per_epoch, 4), loss=entry["loss"], lr=entry.get("learning_rate"),
                grad_norm=entry.get("grad_norm"))
        if "eval_loss" in entry:
            rows.setdefault(step, {"step": step})["eval_loss"] = entry["eval_loss"]
    return [rows[s] for s in sorted(rows)]


def _emit(on_log: LogFn | None, row: dict[str, Any]) -> None:
    if on_log is not None:
        on_log(dict(row))


class _RunCallback(TrainerCallback):
    """loss_log.jsonl and the ``on_log`` progress events (rank 0), step timing, and the run's flow: log and
    evaluate at the last step, no Trainer checkpoint after it (the adapter is the final output)."""

    def __init__(self, out: Path, on_log: LogFn | None, is_main: bool, start: dict[str, Any], steps_per_epoch: int,
                 step_samples: Sequence[int], has_eval: bool):
        self.out, self.progress, self.is_main, self.start = out, on_log, is_main, start
        self.steps_per_epoch, self.step_samples, self.has_eval = steps_per_epoch, step_samples, has_eval
        self.train_time, self.samples_done, self._t0 = 0.0, 0, 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        _emit(self.progress, {**self.start, "step": state.global_step, "total_steps": state.max_steps})

    def on_step_begin(self, args, state, control, **kwargs):
        self._t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if args.device.type == "cuda":
            torch.cuda.synchronize(args.device)
        self.train_time += time.perf_counter() - self._t0
        self.samples_done += self.step_samples[state.global_step - 1]
        if state.global_step >= state.max_steps:
            control.should_log = True
            control.should_evaluate = self.has_eval
            control.should_save = False

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if self.is_main:
            atomic_write_jsonl(self.out / "loss_log.jsonl", loss_rows(state.log_history, self.steps_per_epoch))
        total = state.max_steps
        if "loss" in logs:
            row = loss_rows([{**logs, "step": state.global_step}], self.steps_per_epoch)[0]
            _emit(self.progress, {"event": "train", "total_steps": total, **row,
                                "samples_per_second": self.samples_done / self.train_time if self.train_time else 0.0})
        if "eval_loss" in logs:
            _emit(self.progress, {"event": "eval", "step": state.global_step, "total_steps": total,
                                "eval_loss": logs["eval_loss"]})

    def on_save(self, args, state, control, **kwargs):
        path = Path(args.output_dir) / f"{CHECKPOINT_PREFIX}{state.global_step}"
        _emit(self.progress, {"event": "checkpoint", "step": state.global_step, "total_steps": state.max_steps,
                            "path": str(path)})


def _checkpoint_dirs(out: Path) -> list[Path]:
    """Complete checkpoints (marked), oldest first."""
    root = out / CHECKPOINTS
    found = [p for p in root.glob(f"{CHECKPOINT_PREFIX}*") if (p / CHECKPOINT_MARK).is_file()] if root.is_dir() else []
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX):]))


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def _peak_memory(device: torch.device) -> tuple[int, str]:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device)), "cuda_max_memory_allocated"
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024, "process_max_rss"


def _data_fingerprint(records: Sequence[Any]) -> str:
    return sha256_json([
        field_of(r, "content_hash") or [field_of(r, "image_path"), field_of(r, "ground_truth_html")] for r in records
    ])


def _completed_result(out: Path, fingerprint: str) -> TrainResult | None:
    path = out / "summary.json"
    if not path.is_file() or not (out / "adapter" / "adapter_config.json").is_file():
        return None
    summary = _read_json(path)
    if summary.get("status") == "completed" and summary.get("fingerprint") == fingerprint:
        return TrainResult(out, summary)
    return None


# --------------------------------------------------------------------------- Trainer settings


def check_integrations(config: TrainConfig) -> None:
    """A clear error before any loading when a report_to target or the distributed strategy lacks its package."""
    for name in report_targets(config.report_to):
        if name != "tensorboard" and importlib.util.find_spec(name) is None:
            raise ValueError(f"report_to: {name} needs the {name} package (pip install {name}); or set report_to: "
                             f"tensorboard or none")
    if config.distributed.startswith("deepspeed") and importlib.util.find_spec("deepspeed") is None:
        raise ValueError(f"distributed: {config.distributed} needs the deepspeed package: pip install deepspeed "
                         f"(or pip install 'ocr_ft[deepspeed]'), on a CUDA machine; or set distributed: ddp")


def strategy_options(config: TrainConfig, world_size: int, model: Any = None) -> dict[str, Any]:
    """TrainingArguments for ``config.distributed``: {} for DDP (accelerate's default with several processes),
    ``fsdp`` / ``fsdp_config`` from distributed_configs/fsdp.json, or ``deepspeed`` = the ZeRO-2/3 JSON."""
    if config.distributed == "ddp":
        return {}
    if config.distributed == "fsdp":
        if world_size < 2:
            raise ValueError(f"distributed: fsdp shards the model over several processes; this run has {world_size}. "
                             f"Set nproc >= 2, or distributed: ddp")
        fsdp_config = _read_json(DISTRIBUTED_CONFIGS / "fsdp.json")
        if model is not None:  # wrap the decoder (and vision) layer classes this model actually has
            present = {type(m).__name__ for m in model.modules()}
            wanted = [c for c in fsdp_config.get("transformer_layer_cls_to_wrap", []) if c in present]
            fsdp_config["transformer_layer_cls_to_wrap"] = wanted or list(
                getattr(unwrap_model(model), "_no_split_modules", None) or [])
        return {"fsdp": True, "fsdp_config": fsdp_config}
    return {"deepspeed": str(DISTRIBUTED_CONFIGS / f"{config.distributed}.json")}


def check_accumulation(config: TrainConfig, world_size: int) -> None:
    """Each of the ``world_size`` processes accumulates ``gradient_accumulation_steps / world_size`` micro-batches,
    so the effective batch is the same for any number of processes; anything else is refused."""
    if config.gradient_accumulation_steps % world_size:
        raise ValueError(f"gradient_accumulation_steps={config.gradient_accumulation_steps} must be a multiple of "
                         f"the {world_size} processes (WORLD_SIZE), so the effective batch stays the same")


def training_arguments(config: TrainConfig, out: Path, total_steps: int, warmup_steps: int, device: torch.device,
                       dtype: torch.dtype, world_size: int = 1, has_eval: bool = False, eval_at_start: bool = False,
                       model: Any = None) -> TrainingArguments:
    """The Trainer's settings for ``config`` (the run folder ``out``; checkpoints under ``out/checkpoints``)."""
    check_accumulation(config, world_size)
    others = [r for r in report_targets(config.report_to) if r != "tensorboard"]  # tensorboard: our own writer
    return TrainingArguments(
        output_dir=str(out / CHECKPOINTS),
        per_device_train_batch_size=config.per_device_batch_size,
        per_device_eval_batch_size=config.per_device_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps // world_size,
        average_tokens_across_devices=True,
        max_steps=total_steps,
        learning_rate=config.learning_rate,
        lr_scheduler_type=_SCHEDULERS[config.lr_scheduler],
        warmup_steps=warmup_steps,
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        optim="adamw_torch",
        bf16=dtype == torch.bfloat16,
        activation_checkpointing=config.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False},
        logging_strategy="steps",
        logging_steps=config.logging_steps,
        logging_first_step=True,
        logging_nan_inf_filter=False,  # a NaN loss must show (the search fails such trials)
        eval_strategy="steps" if has_eval and config.eval_steps else "no",
        eval_steps=config.eval_steps if has_eval and config.eval_steps else None,
        eval_on_start=eval_at_start,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        seed=config.seed,
        dataloader_num_workers=config.dataloader_workers,
        report_to=others or "none",
        remove_unused_columns=False,
        label_names=["labels"],
        ddp_find_unused_parameters=False,  # every LoRA weight is used in every forward
        use_cpu=device.type == "cpu",
        disable_tqdm=True,
        **strategy_options(config, world_size, model),
    )


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
    check_accumulation(config, world.size)
    if not world.distributed and config.nproc > 1:
        raise ValueError(f"nproc: {config.nproc} needs {config.nproc} processes: launch with `ocr-ft train --nproc "
                         f"{config.nproc}` or `torchrun --nproc-per-node {config.nproc}` (see the README)")
    run_device = dist_.device_for(world, resolve_device(device))
    if not world.distributed and run_device.type == "cuda" and (run_device.index or 0) != 0:
        raise ValueError(f"device {run_device}: the Trainer trains on the process's first GPU; choose the GPU with "
                         f"CUDA_VISIBLE_DEVICES={run_device.index} and device cuda")
    check_quantization(config, run_device)
    check_integrations(config)
    if config.distributed == "fsdp":
        strategy_options(config, world.size)  # the error for a single process, before loading anything
    created = dist_.init(world, run_device)
    try:
        return _train(config, train_records, val_records, Path(data_dir), Path(output_dir),
                      on_log if world.is_main else None, run_device, world)
    finally:
        if created:
            import torch.distributed

            if torch.distributed.is_initialized():
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
    state_files = [c / CHECKPOINT_MARK for c in checkpoints[-1:]] + [out / "summary.json"]
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
        root = out / CHECKPOINTS
        for stale in (p for p in root.iterdir() if p.is_dir() and p not in checkpoints) if root.is_dir() else ():
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



def _build_model(config: TrainConfig, dtype: torch.dtype, device: torch.device):
    """The base model (4-bit on the GPU for QLoRA) with LoRA adapters; the Trainer moves it to the device and
    turns on gradient checkpointing."""
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
    model = apply_lora(model, config)
    if config.packing:
        packing_.prepare_model_for_packing(model)  # refuses a model that cannot pack
    return model


def _run(config: TrainConfig, bundle: ProcessorBundle, budget: BudgetReport, val_budget: BudgetReport,
         data_dir: Path, out: Path, fingerprint: str, resume_from: Path | None, on_log: LogFn | None,
         device: torch.device, world: dist_.World) -> TrainResult:
    dtype = resolve_dtype(config.precision, device)
    n = len(budget.kept)
    nums = schedule_numbers(n, config)
    total, spe = nums["total_steps"], nums["steps_per_epoch"]
    seq_tokens = [c.total for c in budget.counts]
    eval_records = val_budget.kept[: config.max_eval_samples]
    start_step = int(_read_json(resume_from / CHECKPOINT_MARK)["step"]) if resume_from is not None else 0
    resumed = start_step if resume_from is not None else None

    set_seed(config.seed)  # the LoRA initialisation
    model = _build_model(config, dtype, device)
    sampler = StepBatchSampler(n, config, seq_tokens if config.group_by_length else None, world.rank, world.size)
    step_lists = [lists for e in range(math.ceil(total / spe)) for lists in sampler.steps(e)][:total]
    args = training_arguments(config, out, total, nums["warmup_steps"], device, dtype, world.size,
                              has_eval=bool(eval_records),
                              eval_at_start=bool(eval_records) and config.eval_at_start and resume_from is None,
                              model=model)
    run_cb = _RunCallback(out, on_log, world.is_main, {
        "event": "start", "train_samples": n, "val_samples": len(eval_records), "left_out": len(budget.left_out),
        "device": str(device), "dtype": str(dtype).replace("torch.", ""), "resumed_from_step": resumed,
        "processes": world.size}, spe, [sum(len(b) for b in lists) for lists in step_lists], bool(eval_records))
    callbacks: list[TrainerCallback] = [run_cb]
    board = "tensorboard" in report_targets(config.report_to) and world.is_main
    if board:
        callbacks.append(_tensorboard_callback(out / TENSORBOARD, start_step))
    trainer = AnswerLossTrainer(
        model=model, args=args, data_collator=_Collator(bundle, config.packing), train_dataset=_PairDataset(budget.kept, data_dir),
        eval_dataset=_PairDataset(eval_records, data_dir) if eval_records else None, callbacks=callbacks,
        batch_sampler=sampler, eval_batches=_eval_batches(len(eval_records), config.per_device_batch_size, world),
        checkpoint_mark={"fingerprint": fingerprint})
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    for cb in (PrinterCallback, ProgressCallback):  # progress goes through on_log
        trainer.remove_callback(cb)
    if world.is_main and resume_from is None:
        atomic_write_jsonl(out / "loss_log.jsonl", [])
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from is not None else None)

    # the final adapter: every process takes part (FSDP / ZeRO-3 gather the weights), rank 0 writes
    staging = out / ".adapter.staging"
    if world.is_main:
        shutil.rmtree(staging, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    trainer.save_model(str(staging))
    if world.is_main:
        (staging / "training_args.bin").unlink(missing_ok=True)
        save_serving_files(staging, bundle)  # issue 11: template + pixel budget
        shutil.rmtree(out / "adapter", ignore_errors=True)
        staging.replace(out / "adapter")
    peak, peak_kind = _peak_memory(device)
    rows = loss_rows(trainer.state.log_history, spe)
    if world.is_main:
        atomic_write_jsonl(out / "loss_log.jsonl", rows)
    train_losses = [r["loss"] for r in rows if "loss" in r]
    eval_losses = [(r["step"], r["eval_loss"]) for r in rows if r.get("eval_loss") is not None]
    session = step_lists[start_step:]
    train_time = run_cb.train_time
    samples_done = sum(len(b) for lists in session for b in lists)
    tokens_done = sum(seq_tokens[i] for lists in session for b in lists for i in b)
    peft_model = trainer.model
    tokens = packing_.token_counts([b for lists in session for b in lists], seq_tokens, config.packing)
    summary = {
        "status": "completed",
        "fingerprint": fingerprint,
        "base_model": config.base_model,
        "device": str(device),
        "dtype": str(dtype).replace("torch.", ""),
        "steps": total,
        "total_steps": total,
        "epochs": total / spe,
        "steps_per_epoch": spe,
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
        "resumed_from_step": resumed,
        "session_steps": total - start_step,
        "train_runtime_s": round(train_time, 3),
        "steps_per_second": (total - start_step) / train_time if train_time else None,
        "samples_per_second": samples_done / train_time if train_time else None,
        "tokens_per_second": tokens_done / train_time if train_time else None,
        "group_by_length": config.group_by_length,
        "packing": config.packing,
        "padding_fraction": tokens["padding_fraction"],  # of the token grid (0 when packed)
        "token_counts": tokens,  # real / grid / padding tokens of this session's micro-batches
        "tensorboard_dir": TENSORBOARD if board else None,
        "peak_memory_bytes": peak,
        "peak_memory_kind": peak_kind,
        "trainable_parameters": sum(p.numel() for p in peft_model.parameters() if p.requires_grad),
        "total_parameters": sum(p.numel() for p in peft_model.parameters()),
        "lora_modules": len(lora_module_names(peft_model)),
        "vision_lora": config.vision_lora,
        "quantization": config.quantization,
        "distributed": config.distributed if world.distributed else None,
        "report_to": report_targets(config.report_to),
        "adapter_dir": "adapter",
        "processes": world.size,
    }
    if world.is_main:
        atomic_write_json(out / "summary.json", summary)
    dist_.barrier(world)
    _emit(on_log, {"event": "done", "step": total, "total_steps": total,
                   "final_train_loss": summary["final_train_loss"], "final_eval_loss": summary["final_eval_loss"]})
    return TrainResult(out, summary)


def _tensorboard_callback(log_dir: Path, start_step: int) -> TrainerCallback:
    """The Trainer's TensorBoard callback writing under ``<run>/tensorboard``; a resumed run purges events after
    its checkpoint's step (written by the killed process), so the curve is written once, not twice."""
    from transformers.integrations import TensorBoardCallback

    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        raise RuntimeError("report_to: tensorboard needs the tensorboard package (pip install tensorboard), "
                           "or set report_to: none") from exc
    return TensorBoardCallback(SummaryWriter(str(log_dir), purge_step=start_step + 1 if start_step else None))
