"""torch.distributed helpers shared by the training loops; each is a no-op in a single process, so the
same loop runs under Ray Train (process group up) and alone (GPU checks, tests)."""

from __future__ import annotations

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

    return torch.cat(all_gather(local), dim=0)


def average_gradients(parameters: list[torch.nn.Parameter]) -> None:
    """Mean of every worker's gradients (what DDP does), done by hand: a step may run the model several
    times (queries, keys, negatives) before one backward, which DDP's hooks do not expect."""
    world = rank_and_world()[1]
    if world == 1:
        return
    for parameter in parameters:
        if parameter.grad is None:
            parameter.grad = torch.zeros_like(parameter)
        dist.all_reduce(parameter.grad)
        parameter.grad /= world
