"""Data-parallel context from torchrun's environment: which process this is and where it runs.

    torchrun --standalone --nproc_per_node=2 -m model.train_cli --tokens DIR --out DIR

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK (plus MASTER_ADDR/PORT) in every process it
starts; `init_distributed` turns them into a process group (NCCL on CUDA, one GPU per local
rank; gloo on CPU) and a `DistContext`. Without them, or with WORLD_SIZE=1, nothing is
initialized and the context describes a single process, so the same code runs both ways.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from model.precision import resolve_device


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job; rank 0 alone writes files."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    try:
        return default if value in (None, "") else int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def init_distributed(device: str = "auto") -> DistContext:
    """The context of this process; joins the process group when torchrun started several.

    Idempotent: a second call returns the same context without re-initializing. Under
    torchrun on CUDA each process takes GPU `LOCAL_RANK` (nanoGPT's `cuda:{ddp_local_rank}`);
    anywhere else (CPU, and MPS, which has no collective backend) it runs on the CPU with gloo.
    """
    world_size = _env_int("WORLD_SIZE", 1)
    resolved = resolve_device(device)
    if world_size <= 1:
        return DistContext(device=resolved)
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if resolved.type == "cuda":
        resolved = torch.device("cuda", local_rank)
        torch.cuda.set_device(resolved)  # NCCL and *_object collectives use the current device
        backend = "nccl"
    else:
        resolved, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    return DistContext(rank, world_size, local_rank, resolved)


def cleanup() -> None:
    """Leave the process group (no-op when none was joined)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """The mean of `tensor` over all ranks (in place); the tensor itself in a single process.

    SUM then divide rather than ReduceOp.AVG: gloo does not implement AVG.
    """
    if _active():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        tensor /= dist.get_world_size()
    return tensor


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The sum of `tensor` over all ranks (in place)."""
    if _active():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank if it is True on any: ranks must agree on when to stop."""
    if not _active():
        return flag
    value = torch.tensor(float(flag), device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def max_over_ranks(values: list[float], device: torch.device) -> list[float]:
    """Each value's maximum over all ranks: a plan made from timings must be the same plan on
    every rank (the slowest rank's speed), or ranks would stop at different steps."""
    if not _active():
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor.tolist()


def gather_to_main(obj: object) -> list[object] | None:
    """Every rank's `obj` as a list on rank 0 (None elsewhere); `[obj]` in a single process."""
    if not _active():
        return [obj]
    gathered: list[object] | None = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(obj, gathered, dst=0)
    return gathered


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if _active():
        dist.barrier()
