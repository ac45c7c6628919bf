"""train_vision's bf16_weights option: the model trains in bf16 on fp32 master copies, learns as the fp32
model does within bf16's rounding, resumes bit-identically and exports the fp32 masters."""

from __future__ import annotations

import io
import itertools

import torch

from pipelines.train_vision.loop import (
    VisionLoopSettings,
    build_optimizer,
    for_export,
    restore_training_state,
    to_training_precision,
    train_steps,
    training_state,
)
from tests.pipelines.train_vision.test_gpu_options import _model

STEPS = 24


def _settings(bf16_weights: bool, max_steps: int = STEPS) -> VisionLoopSettings:
    return VisionLoopSettings(3e-3, 0.05, 2, max_steps, 1.0, layer_decay=0.9, bf16_weights=bf16_weights)


def _batch():
    generator = torch.Generator().manual_seed(1)
    return torch.randn(8, 3, 32, 32, generator=generator), torch.randn(8, 16, generator=generator)


def _run(model, settings, master, optimizer, scheduler, start: int, until: int) -> list[float]:
    losses: list[float] = []
    train_steps(
        model,
        itertools.repeat(_batch(), until - start),
        settings,
        optimizer,
        scheduler,
        start,
        lambda step, metrics: losses.append(metrics["loss"]),
        torch.device("cpu"),
        master=master,
    )
    return losses


def _trained(bf16_weights: bool):
    model = _model()
    settings = _settings(bf16_weights)
    master = to_training_precision(model, settings)
    optimizer, scheduler = build_optimizer(model, settings, master)
    losses = _run(model, settings, master, optimizer, scheduler, 0, STEPS)
    return model, master, optimizer, losses


def test_bf16_weights_learn_like_fp32_with_fp32_masters():
    _, _, _, fp32_losses = _trained(False)
    model, master, optimizer, losses = _trained(True)

    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in master.parameters()} == {torch.float32}
    assert all(s["exp_avg"].dtype == torch.float32 for s in optimizer.state.values())
    masters = dict(master.named_parameters())
    for name, parameter in model.named_parameters():  # the model holds its masters, rounded
        assert torch.equal(parameter, masters[name].detach().bfloat16()), name

    assert losses[-1] < 0.5 * losses[0]  # it learns the batch
    assert fp32_losses[-1] < 0.5 * fp32_losses[0]
    gaps = [abs(a - b) for a, b in zip(losses, fp32_losses)]
    assert max(gaps) < 0.02 * fp32_losses[0], gaps  # the same course, to bf16 rounding

    exported = for_export(model, master)
    assert {p.dtype for p in exported.parameters()} == {torch.float32}
    exported_weights = dict(exported.named_parameters())
    assert all(torch.equal(exported_weights[n], m) for n, m in masters.items())


def test_bf16_weights_resume_bit_identically():
    _, master_straight, _, straight = _trained(True)

    model = _model()
    settings = _settings(True)
    master = to_training_precision(model, settings)
    optimizer, scheduler = build_optimizer(model, settings, master)
    first = _run(model, settings, master, optimizer, scheduler, 0, STEPS // 2)
    buffer = io.BytesIO()
    torch.save(training_state(model, optimizer, scheduler, STEPS // 2, [], master), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)

    model = _model()
    master = to_training_precision(model, settings)
    optimizer, scheduler = build_optimizer(model, settings, master)
    start = restore_training_state(state, model, optimizer, scheduler, master)
    rest = _run(model, settings, master, optimizer, scheduler, start, STEPS)

    assert first + rest == straight
    resumed = dict(master.named_parameters())
    assert all(torch.equal(resumed[n], m) for n, m in master_straight.named_parameters())
