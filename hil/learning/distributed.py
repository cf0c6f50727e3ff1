"""Multi-process training on PyTorch's own engine: torchrun environment, devices, DDP.

The same training command runs as one process or under
``torchrun --nproc_per_node=N`` (one node) or with a rendezvous endpoint (several nodes).
torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``;
:func:`setup` reads them, picks gloo on CPU and NCCL on CUDA, and binds each process to
``cuda:LOCAL_RANK`` when the config asks for ``cuda``.

How ranks share the work: batch ``step`` of the global stream holds items
``[step*B*W, (step+1)*B*W)`` (``B`` = batch size per rank, ``W`` = world size); rank ``r`` takes
the ``r``-th slice of ``B`` (:func:`shard`). That is the distributed sampler: disjoint items per
rank, their union equal to one process with batch ``B*W``; DDP averages the gradients, so ``W``
processes step exactly like one process with the global batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: rank, world size, local rank on its node, and its device."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes checkpoints, logs and bundles."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def resolve_device(spec: str, local_rank: int = 0) -> torch.device:
    """``cpu``, ``cuda`` (-> ``cuda:LOCAL_RANK``) or ``cuda:N``; a clear error when CUDA is absent."""
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or spec.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {spec!r} requested but this torch build sees no CUDA GPU (use device: cpu)")
        index = local_rank if spec == "cuda" else int(spec.split(":", 1)[1])
        if index >= torch.cuda.device_count():
            raise ValueError(f"device cuda:{index} does not exist ({torch.cuda.device_count()} GPU(s) visible)")
        return torch.device("cuda", index)
    raise ValueError(f"device must be cpu, cuda or cuda:N, got {spec!r}")


def setup(device_spec: str) -> DistContext:
    """Join the process group torchrun describes (if any) and return this process's context."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_spec, local_rank)
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world)
    return DistContext(rank=rank, world=world, local_rank=local_rank, device=device)


def teardown(ctx: DistContext) -> None:
    """Leave the process group (no-op for a single process)."""
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: nn.Module, ctx: DistContext) -> nn.Module:
    """DistributedDataParallel around ``model`` when there are several processes; ``model`` itself otherwise.

    DDP broadcasts rank 0's parameters at construction and averages gradients in backward, so
    the learnable masks stay identical on every rank.
    """
    if not ctx.distributed:
        return model
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def shard(global_items: range, ctx: DistContext) -> range:
    """This rank's contiguous share of a global batch's item indices (equal shares required)."""
    if len(global_items) % ctx.world:
        raise ValueError(f"global batch of {len(global_items)} does not split over {ctx.world} ranks")
    per_rank = len(global_items) // ctx.world
    start = global_items.start + ctx.rank * per_rank
    return range(start, start + per_rank)


def any_rank(flag: bool, ctx: DistContext) -> bool:
    """True on every rank when ``flag`` is true on any rank (stop decisions stay in lockstep)."""
    if not ctx.distributed:
        return flag
    value = torch.tensor([int(flag)], device=ctx.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())
