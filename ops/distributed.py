"""torch.distributed helpers shared by the training loops; each is a no-op in a single process, so the
same loop runs under Ray Train (process group up) and alone (tests, bench)."""

from __future__ import annotations

import warnings

import torch
import torch.distributed as dist


def rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_with_grad(local: torch.Tensor) -> torch.Tensor:
    """All workers' rows, keeping the gradient to the local ones (identity without torch.distributed)."""
    if rank_and_world()[1] == 1:
        return local
    from torch.distributed.nn.functional import all_gather

    with warnings.catch_warnings():
        # torch 2.13 deprecates this autograd all_gather in favour of a private API
        # (torch.distributed._functional_collectives); its FutureWarning came on every step of every worker.
        warnings.filterwarnings(
            "ignore", message=r".*nn\.functional\.all_gather is deprecated", category=FutureWarning
        )
        return torch.cat(all_gather(local), dim=0)


# Elements per all_reduce: about 100 MB of fp32, DDP's default bucket. One collective per bucket instead
# of one per tensor: per-call latency dominated the 2-worker step (bench/scaling.py).
BUCKET_ELEMENTS = 25_000_000


def _buckets(tensors: list[torch.Tensor], limit: int) -> list[list[torch.Tensor]]:
    """Consecutive tensors of one dtype and device, at most `limit` elements a bucket (a bigger tensor
    goes alone)."""
    buckets: list[list[torch.Tensor]] = []
    size = 0
    for tensor in tensors:
        fits = buckets and size + tensor.numel() <= limit
        same_kind = buckets and (buckets[-1][0].dtype, buckets[-1][0].device) == (tensor.dtype, tensor.device)
        if fits and same_kind:
            buckets[-1].append(tensor)
            size += tensor.numel()
        else:
            buckets.append([tensor])
            size = tensor.numel()
    return buckets


def average_gradients(parameters: list[torch.nn.Parameter], bucket_elements: int = BUCKET_ELEMENTS) -> None:
    """Mean of every worker's gradients (what DDP does), done by hand: a step may run the model several
    times (queries, keys, negatives) before one backward, which DDP's hooks do not expect."""
    world = rank_and_world()[1]
    if world == 1:
        return
    grads = []
    for parameter in parameters:
        if parameter.grad is None:
            parameter.grad = torch.zeros_like(parameter)
        grads.append(parameter.grad)
    for bucket in _buckets(grads, bucket_elements):
        flat = torch.cat([g.reshape(-1) for g in bucket])
        dist.all_reduce(flat)
        flat /= world
        offset = 0
        for grad in bucket:
            grad.copy_(flat[offset : offset + grad.numel()].view_as(grad))
            offset += grad.numel()
