"""Gradient averaging in buckets: one all_reduce per bucket, the same mean as one per tensor."""

from __future__ import annotations

import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ops.distributed import _buckets, average_gradients


def test_buckets_keep_order_respect_the_limit_and_split_dtypes():
    tensors = [
        torch.zeros(3),
        torch.zeros(4),
        torch.zeros(10),
        torch.zeros(2, dtype=torch.float64),
        torch.zeros(1),
    ]
    buckets = _buckets(tensors, limit=8)
    assert [[t.numel() for t in b] for b in buckets] == [[3, 4], [10], [2], [1]]
    assert [t for b in buckets for t in b] == tensors


def _worker(rank: int, port: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    params = [torch.nn.Parameter(torch.zeros(shape)) for shape in ((3,), (2, 2), (7,), (1,))]
    for i, p in enumerate(params[:-1]):
        p.grad = torch.full_like(p, float(rank + 1) * (i + 1))
    # The last parameter got no gradient on either worker: it must come back as zeros, not be skipped.
    average_gradients(params, bucket_elements=5)
    if rank == 0:
        torch.save([p.grad for p in params], out)
    dist.destroy_process_group()


def test_bucketed_average_is_the_mean_of_both_workers(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_worker, args=(port, str(tmp_path / "grads.pt")), nprocs=2)
    grads = torch.load(tmp_path / "grads.pt", weights_only=True)
    for i, grad in enumerate(grads[:-1]):
        assert torch.allclose(grad, torch.full_like(grad, 1.5 * (i + 1)))
    assert torch.equal(grads[-1], torch.zeros(1))
