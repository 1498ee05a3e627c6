"""Data-parallel distillation: one process per device, launched by torchrun.

    torchrun --nproc_per_node 2 -m spacy distill TEACHER CONFIG --output DIR

Every rank walks the same batches (the batches are seeded, not drawn), so
each global batch is the config's and each rank takes a contiguous share of
its rows. A step then runs as one process would run the whole batch:

1. each rank runs the student over its share;
2. the shares' outputs are gathered, so every rank holds the whole batch's
   logits and hidden states and makes the same plan (Eq. 4-6 rank rows over
   the batch, not over a share) and computes the same loss;
3. teacher and assistant answer the rows the plan misses in their caches,
   each rank a share of those rows, gathered into every rank's cache: every
   cache holds the same answers, and a row is counted once however many
   ranks read it;
4. backward: the loss is the same on every rank, so the gradient reaching
   each rank's share is the same everywhere; the gather's backward takes the
   rank's own slot, scaled by the world size as a reduce-scatter of equal
   parts would be, and the parameters' gradients are averaged across ranks,
   as DistributedDataParallel averages them. Student weights receive the sum
   of their shares' gradients, the alignment projections (which act on the
   gathered states) their whole gradient: the gradient of the one-process run.

What differs from one process is float rounding (a share is padded to its own
longest text, and sums run in another order) and dropout, whose masks each
rank draws from its own generator. Rank 0 alone evaluates, logs and writes
the output folder; the others wait for it.
"""
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, List, Optional, Sequence

import torch
import torch.distributed as dist

# How long a rank waits for the others in one collective (rank 0's
# evaluation and save included) before the run fails.
DEFAULT_TIMEOUT_S = 1800


class LaunchError(Exception):
    """The processes were started in a way the run cannot use; one line."""


@dataclass(frozen=True)
class World:
    """The processes of one run. A single process is `World()`, whose
    collectives do nothing.
    """

    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def shard(self, n: int) -> slice:
        """This rank's contiguous share of n rows: the first n % size ranks
        take one row more, so the shares concatenate to the rows in order.
        """
        base, extra = divmod(n, self.size)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (self.rank < extra))

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every rank's share, concatenated in rank order, on every rank.
        Differentiable: see the module docstring for the backward.
        """
        if not self.distributed:
            return tensor
        # float32 on the wire: a rank with no rows has no autocast dtype to match.
        return _Gather.apply(tensor.float(), self)

    def gather_list(self, tensors: Optional[List[torch.Tensor]]) -> Optional[List[torch.Tensor]]:
        return None if tensors is None else [self.gather(t) for t in tensors]

    def average_gradients(self, params: Sequence[torch.nn.Parameter]) -> None:
        """Average the parameters' gradients across ranks in one collective.
        A parameter that no rank's loss reached keeps no gradient (the
        optimizer skips it, weight decay included, as in one process); one
        that some rank's share did not reach counts zero there.
        """
        if not self.distributed:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        reached = torch.tensor([p.grad is not None for p in params], dtype=grads[0].dtype, device=grads[0].device)
        flat = torch.cat([g.reshape(-1) for g in grads] + [reached])
        dist.all_reduce(flat)
        offset = 0
        for param, grad, n_reached in zip(params, grads, flat[-len(params) :].tolist()):
            n = grad.numel()
            param.grad = (flat[offset : offset + n] / self.size).view_as(param).to(grad.dtype) if n_reached else None
            offset += n

    def broadcast_parameters(self, params: Sequence[torch.nn.Parameter]) -> None:
        """Rank 0's values in every rank, as DistributedDataParallel does on
        construction."""
        if not self.distributed:
            return
        with torch.no_grad():
            for param in params:
                dist.broadcast(param.data, src=0)

    def gather_objects(self, obj: Any) -> List[Any]:
        """Every rank's (picklable) object, in rank order, on every rank."""
        if not self.distributed:
            return [obj]
        out: List[Any] = [None] * self.size
        dist.all_gather_object(out, obj)
        return out

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's (picklable) object, on every rank."""
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def close(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()


class _Gather(torch.autograd.Function):
    """All-gather of row shares of uneven size, with the backward of step 4."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor, world: World) -> torch.Tensor:  # type: ignore[override]
        sizes = torch.tensor([tensor.shape[0]], device=tensor.device)
        all_sizes = [torch.zeros_like(sizes) for _ in range(world.size)]
        dist.all_gather(all_sizes, sizes)
        counts = [int(s) for s in all_sizes]
        longest = max(counts)
        padded = tensor.new_zeros((longest,) + tuple(tensor.shape[1:]))
        padded[: tensor.shape[0]] = tensor
        parts = [torch.empty_like(padded) for _ in range(world.size)]
        dist.all_gather(parts, padded.contiguous())
        ctx.start = sum(counts[: world.rank])
        ctx.n = counts[world.rank]
        ctx.size = world.size
        return torch.cat([part[:n] for part, n in zip(parts, counts)])

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Any:  # type: ignore[override]
        return grad[ctx.start : ctx.start + ctx.n] * ctx.size, None


def init_world(use_gpu: int, *, timeout_s: int = DEFAULT_TIMEOUT_S) -> "tuple[World, int]":
    """The process group a torchrun launch describes in its environment (a
    single process otherwise), and the GPU this process uses: its
    LOCAL_RANK under torchrun with --gpu-id, else --gpu-id itself.
    Backends: nccl on GPUs, gloo on CPUs.
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World(), use_gpu
    missing = [key for key in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if key not in os.environ]
    if missing:
        raise LaunchError(
            f"WORLD_SIZE is {size} but {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set: "
            "launch data-parallel runs with torchrun (torchrun --nproc_per_node N -m spacy distill ...)."
        )
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    backend = "gloo"
    if use_gpu >= 0:
        n_gpus = torch.cuda.device_count()
        per_node = int(os.environ.get("LOCAL_WORLD_SIZE", size))
        if n_gpus == 0:
            raise LaunchError(f"--gpu-id {use_gpu} asks for GPUs, but torch sees none on this node: drop --gpu-id to run on CPUs.")
        if local_rank >= n_gpus:
            raise LaunchError(
                f"torchrun starts {per_node} processes on this node but it has {n_gpus} GPU(s): "
                f"use --nproc_per_node {n_gpus} or less."
            )
        use_gpu, backend = local_rank, "nccl"
        torch.cuda.set_device(use_gpu)
    dist.init_process_group(backend, rank=rank, world_size=size, timeout=timedelta(seconds=timeout_s))
    world = World(rank, size)
    _check_same_backend(world, backend)
    return world, use_gpu


def _check_same_backend(world: World, backend: str) -> None:
    """Every rank on the same kind of device: a node started without
    --gpu-id beside nodes with it would fail in its first collective.
    Checked through the rendezvous store, which every backend shares.
    """
    store = dist.distributed_c10d._get_default_store()
    store.set(f"spacy_dekd/backend/{world.rank}", backend)
    for rank in range(world.size):
        theirs = store.get(f"spacy_dekd/backend/{rank}").decode()
        if theirs != backend:
            raise LaunchError(
                f"Rank {world.rank} runs {backend} ({'GPU' if backend == 'nccl' else 'CPU'}) but rank {rank} "
                f"runs {theirs}: give every node the same --gpu-id (or none)."
            )
