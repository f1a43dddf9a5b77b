"""Multi-process training: one process per GPU (or CPU processes with gloo), launched by ``torchrun``.

``nproc: N`` (config key, ``--nproc N`` on ``ocr-ft train``) makes the CLI and the ``lora_checkpoint`` asset
start ``python -m torch.distributed.run --standalone --nproc-per-node N -m <entry point>``; each child sees
``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` and joins one process group (nccl on CUDA, gloo on CPU). Multi-node
runs use torchrun's own rendezvous (see the README), not a launcher of ours.

The training itself is ``transformers.Trainer`` (accelerate underneath: DDP, FSDP or DeepSpeed by the config key
``distributed``); this module only knows the world, joins the process group early (the trainer checks the run
folder on every rank before the Trainer exists), and builds the torchrun command. How the work is split is in
:mod:`ocr_ft.train.trainer` (each process takes micro-batches ``rank, rank + N, ...`` of every optimizer step).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Sequence

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


def torchrun_command(nproc: int, module: str, args: Sequence[str] = (), python: str | None = None) -> list[str]:
    """The command that runs ``python -m module args`` in ``nproc`` processes on this machine."""
    return [python or sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "-m", module, *args]
