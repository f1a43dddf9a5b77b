"""Multi-process training: one process per GPU (or CPU processes with gloo), launched by ``torchrun``.

``nproc: N`` (config key, ``--nproc N`` on ``ocr-ft train``) makes the CLI and the ``lora_checkpoint`` asset
start ``python -m torch.distributed.run --standalone --nproc-per-node N -m <entry point>``; each child sees
``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` and joins one process group (nccl on CUDA, gloo on CPU). Multi-node
runs use torchrun's own rendezvous (see the README), not a launcher of ours.

How the work is split: every process computes the same global schedule (micro-batches of each optimizer
step, from seed and epoch). Rank ``r`` of ``N`` takes micro-batches ``r, r+N, ...`` of each step, so each
process accumulates ``gradient_accumulation_steps / N`` micro-batches and the effective batch stays
``per_device_batch_size * gradient_accumulation_steps`` for any N. Gradients are summed over processes (each
already divided by the step's global answer-token count), so the update equals the one-process update up to
float summation order. Rank 0 alone writes files and reports progress.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any, Sequence

import torch


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def current_world() -> World:
    """Rank, world size and local rank from torchrun's environment (1 process when unset)."""
    env = os.environ
    return World(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))


def under_torchrun() -> bool:
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def init(world: World, device: torch.device) -> bool:
    """Join the process group (nccl on CUDA, gloo on CPU). True when this call created it."""
    import torch.distributed as dist

    if not world.distributed or dist.is_initialized():
        return False
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return True


def device_for(world: World, device: torch.device) -> torch.device:
    """One GPU per process: ``cuda:LOCAL_RANK`` when several processes share a CUDA machine."""
    if world.distributed and device.type == "cuda" and device.index is None:
        return torch.device("cuda", world.local_rank)
    return device


def barrier(world: World) -> None:
    if world.distributed:
        import torch.distributed as dist

        dist.barrier()


def all_reduce_sum(world: World, values: Sequence[float], device: torch.device) -> list[float]:
    if not world.distributed:
        return list(values)
    import torch.distributed as dist

    t = torch.tensor(list(values), dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def all_reduce_grads(world: World, params: Sequence[torch.Tensor]) -> None:
    """Sum the gradients of ``params`` over all processes (one flat buffer, one collective)."""
    if not world.distributed:
        return
    import torch.distributed as dist

    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat)
    offset = 0
    for p in params:
        n = p.grad.numel()
        p.grad.copy_(flat[offset:offset + n].view_as(p.grad))
        offset += n


def gather_objects(world: World, obj: Any) -> list[Any]:
    """``obj`` of every rank, in rank order (on every rank)."""
    if not world.distributed:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


def torchrun_command(nproc: int, module: str, args: Sequence[str] = (), python: str | None = None) -> list[str]:
    """The command that runs ``python -m module args`` in ``nproc`` processes on this machine."""
    return [python or sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "-m", module, *args]
