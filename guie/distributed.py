"""torchrun support: process-group setup from the launcher's environment, barriers and sums.

Launched as ``torchrun --nproc_per_node N -m guie.train ...`` (add ``--nnodes`` and rendezvous
options for several machines), every rank runs the same command; without torchrun this is a
world of one and every call is a no-op.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum of ``values`` over all ranks."""
        if not self.enabled:
            return values
        t = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(t)
        return t.tolist()

    def device(self, requested: torch.device) -> torch.device:
        """Each rank's own GPU under CUDA; CPU stays CPU."""
        if requested.type == "cuda" and self.enabled:
            torch.cuda.set_device(self.local_rank)
            return torch.device("cuda", self.local_rank)
        return requested


def init_distributed() -> DistContext:
    """Join the process group torchrun describes in the environment (gloo on CPU, nccl on GPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def shutdown(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()
