"""The GPU shakedown's vision-loop checks: a few hundred steps of train_vision's step at small shapes that
must lower the loss and resume from a checkpoint to the same losses and weights, and the gathered CLIP
loss over two ranks (NCCL on two GPUs; gloo on CPU at --tiny) against one process on the whole batch."""

from __future__ import annotations

import os
import tempfile

from bench.gpu_checks import device_and_peak


def _small_model(device, seed: int):
    import torch

    from bench.paper_shapes import llm2clip_config
    from models.llm2clip import LLM2CLIPModel

    torch.manual_seed(seed)
    config, llm_dim, size = llm2clip_config(tiny=True)
    return LLM2CLIPModel(config).to(device), llm_dim, size


def _data(count: int, llm_dim: int, size: int, seed: int):
    """count (uint8 image, feature) pairs that belong together: each image is a fixed random projection
    of its feature, so the loss can fall below ln(batch)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(count, llm_dim, generator=generator)
    projection = torch.randn(llm_dim, 3 * size * size, generator=generator) / llm_dim**0.5
    pixels = ((features @ projection).view(count, 3, size, size).tanh() * 127 + 128).to(torch.uint8)
    return pixels, features


def _train(model, pixels, features, settings, device, start: int, stop: int, state=None):
    """Steps [start, stop) over fixed batches of 32; returns (losses, the training state at stop)."""
    import torch

    from pipelines.train_vision.loop import (
        build_optimizer,
        restore_training_state,
        train_steps,
        training_state,
    )

    optimizer, scheduler = build_optimizer(model, settings)
    if state is not None:
        restore_training_state(state, model, optimizer, scheduler)
        if device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"])
    batches = (
        (pixels[s % 8 * 32 : s % 8 * 32 + 32], features[s % 8 * 32 : s % 8 * 32 + 32])
        for s in range(start, stop)
    )
    losses = []  # the batches end at stop; the schedule stays the whole run's
    autocast = torch.bfloat16 if device.type == "cuda" else None
    train_steps(
        model,
        batches,
        settings,
        optimizer,
        scheduler,
        start,
        lambda s, m: losses.append(m["loss"]),
        device,
        autocast,
    )
    saved = training_state(model, optimizer, scheduler, stop, [])
    if device.type == "cuda":
        saved["cuda_rng"] = torch.cuda.get_rng_state()
    return losses, saved


def check_vision_loop(tiny: bool) -> dict:

    from pipelines.train_vision.loop import VisionLoopSettings

    device, name, _ = device_and_peak(tiny)
    steps = 60 if tiny else 300
    settings = VisionLoopSettings(
        learning_rate=1e-3, weight_decay=0.05, warmup_steps=10, max_steps=steps, max_grad_norm=1.0
    )
    model, llm_dim, size = _small_model(device, 0)
    pixels, features = _data(256, llm_dim, size, 1)
    whole, _ = _train(model, pixels, features, settings, device, 0, steps)
    half = steps // 2
    resumed_model, _, _ = _small_model(device, 0)
    first, state = _train(resumed_model, pixels, features, settings, device, 0, half)
    fresh, _, _ = _small_model(device, 99)  # other starting weights: the checkpoint must overwrite them
    second, _ = _train(fresh, pixels, features, settings, device, half, steps, state)
    resumed = first + second
    loss_gap = max(abs(a - b) for a, b in zip(whole, resumed))
    weight_gap = max(
        (a - b).abs().max().item() for a, b in zip(model.state_dict().values(), fresh.state_dict().values())
    )
    tenth = max(1, steps // 10)
    start_loss, end_loss = sum(whole[:tenth]) / tenth, sum(whole[-tenth:]) / tenth
    learned = end_loss < 0.7 * start_loss
    row = {
        "name": f"vision loop, tiny ViT + adapter, {steps} steps of 32, resumed at {half}",
        "loss_first_tenth": round(start_loss, 4),
        "loss_last_tenth": round(end_loss, 4),
        "resume_max_loss_gap": loss_gap,
        "resume_max_weight_gap": weight_gap,
        "bit_exact": loss_gap == 0 and weight_gap == 0,
    }
    notes = [f"{name}; the checkpoint holds torch's CPU RNG (production) and here the CUDA RNG too"]
    return {"status": "ok" if learned and len(resumed) == steps else "failed", "rows": [row], "notes": notes}


def _rank_loss(rank: int, world: int, backend: str, port: int, batch, out: str) -> None:
    import torch
    import torch.distributed as dist

    from pipelines.train_vision.loop import step_loss

    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    dist.init_process_group(backend, rank=rank, world_size=world)
    device = torch.device(f"cuda:{rank}") if backend == "nccl" else torch.device("cpu")
    model, _, _ = _small_model(device, 0)
    pixels, features = (t.to(device) for t in batch)
    share = pixels.shape[0] // world
    loss = step_loss(
        model,
        pixels[rank * share : (rank + 1) * share].float() / 255,
        features[rank * share : (rank + 1) * share],
    )
    loss.backward()
    grad = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    dist.all_reduce(grad)
    torch.save({"loss": loss.item(), "grad": (grad / world).cpu()}, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


def check_two_ranks(tiny: bool) -> dict:
    """Each rank's share of the global loss (its rows against every rank's gathered rows) equals, averaged
    over ranks, the single-process loss on the whole batch; the averaged gradients too."""
    import socket

    import torch
    import torch.multiprocessing as mp

    from pipelines.train_vision.loop import step_loss

    gpus = torch.cuda.device_count()
    if not tiny and gpus < 2:
        return {"status": "skipped", "rows": [], "notes": [f"{gpus} GPU(s): two ranks need two"]}
    backend = "gloo" if tiny else "nccl"
    model, llm_dim, size = _small_model(torch.device("cpu"), 0)
    batch = _data(16, llm_dim, size, 2)
    whole = step_loss(model, batch[0].float() / 255, batch[1])
    whole.backward()
    grad = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    with socket.socket() as probe, tempfile.TemporaryDirectory() as out:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        mp.spawn(_rank_loss, args=(2, backend, port, batch, out), nprocs=2, join=True)
        ranks = [torch.load(f"{out}/rank{r}.pt") for r in range(2)]
    loss_gap = abs(sum(r["loss"] for r in ranks) / 2 - whole.item())
    grad_gap = (ranks[0]["grad"] - grad).abs().max().item()
    row = {
        "name": f"gathered CLIP loss, 2 ranks ({backend}) vs 1 process, batch 16",
        "loss_gap": loss_gap,
        "grad_gap": grad_gap,
    }
    ok = loss_gap < 1e-3 and grad_gap < 1e-3  # GPU vs CPU arithmetic (TF32 matmuls on NCCL ranks)
    return {"status": "ok" if ok else "failed", "rows": [row], "notes": []}
