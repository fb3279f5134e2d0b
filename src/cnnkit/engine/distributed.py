"""Distributed data parallel (DDP) set-up for runs started with `torchrun --nproc_per_node N`.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; without them everything here is a no-op and the run
is a single process. Rank 0 alone logs, shows progress and writes checkpoints (the others wait at a
barrier after each write); every rank trains on its own shard of each batch permutation, and evaluation
metrics are summed across ranks.

NCCL's rules, kept here for every backend: each process binds its own GPU (`torch.cuda.set_device`, before
the group exists) so that object collectives (`broadcast_object_list`, `all_gather_object`, which pickle into
a tensor on the *current* device) do not all land on cuda:0; and every tensor handed to a collective lies on
the rank's device (`DistInfo.device`): NCCL reduces CUDA tensors only, so `all_reduce_sum` moves a CPU
tensor there and back. With gloo on CPUs the same code runs, which is how the tests check it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from cnnkit.errors import CheckpointError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")  # this rank's device: where collectives' tensors must lie

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group when launched by torchrun (gloo on CPU, NCCL on CUDA).

    Args:
        device: This process's device; a CUDA device must carry its index (`training_device` pins a bare
            "cuda" to LOCAL_RANK's GPU). It becomes the current CUDA device before the group is created.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo(device=device)
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)  # before any collective: NCCL and the object collectives use it
    if not dist.is_initialized():
        if device.type == "cuda":
            # device_id binds the communicator to this GPU at once (no lazy guess of the device later).
            dist.init_process_group(backend="nccl", device_id=device)
        else:
            dist.init_process_group(backend="gloo")
    return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(),
                    local_rank=int(os.environ.get("LOCAL_RANK", "0")), device=device)


def all_reduce_sum(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum a tensor over all ranks in place (identity for a single process).

    The collective runs on `info.device`: a tensor elsewhere (a meter's CPU counts under NCCL) is copied
    there, reduced, and copied back into `tensor`.
    """
    if not info.enabled:
        return tensor
    work = tensor if tensor.device == info.device else tensor.to(info.device)
    dist.all_reduce(work, op=dist.ReduceOp.SUM)
    if work is not tensor:
        tensor.copy_(work)
    return tensor


def broadcast_object(value, info: DistInfo):
    """Rank 0's value of a picklable Python object, on every rank (e.g. the run directory name)."""
    if not info.enabled:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0, device=info.device)
    return holder[0]


def check_same_on_all_ranks(value, info: DistInfo, what: str) -> None:
    """Raise on every rank if `value` differs from rank 0's (e.g. the epoch each rank resumed from).

    Raises:
        CheckpointError: naming `what`, both values, and the usual cause (a run directory that is not shared).
    """
    reference = broadcast_object(value, info)
    mismatch = all_reduce_sum(torch.tensor([int(value != reference)], device=info.device), info)
    if int(mismatch.item()):
        raise CheckpointError(
            f"{what} differs between the processes (rank {info.rank}: {value!r}, rank 0: {reference!r}): under "
            "torchrun on several machines the run directory must be one shared folder (NFS, Lustre ...) that "
            "every node reads and rank 0 writes; resume from a run directory that all nodes see")


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def gather_rows(tensor: torch.Tensor, differentiable: bool = False) -> torch.Tensor:
    """Every rank's (B, ...) rows concatenated in rank order, (world x B, ...); the tensor itself on one process.

    differentiable=True keeps the graph (torch.distributed.nn's all_gather): each rank's rows get the sum over
    the ranks of the gradients that flow into them. A loss computed identically on every rank over the gathered
    rows, and DDP's averaging of the parameters' gradients, then give exactly the gradient of that loss on one
    process holding the whole batch (SimCLR's NT-Xent with every rank's negatives).
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    if differentiable:
        from torch.distributed.nn.functional import all_gather

        return torch.cat(all_gather(tensor.contiguous()))
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.detach().contiguous())
    return torch.cat(parts)
