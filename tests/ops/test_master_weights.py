"""fp32 master copies keep updates that bf16 weights alone would round away."""

from __future__ import annotations

import torch
from torch import nn

from ops.master_weights import MasterWeights


def _sgd_steps(model: nn.Linear, master: MasterWeights | None, steps: int) -> None:
    params = master.parameters() if master else list(model.parameters())
    optimizer = torch.optim.SGD(params, lr=1e-3)
    for _ in range(steps):
        model(torch.ones(1, 1, dtype=torch.bfloat16)).sum().backward()  # d/dw = 1: each step takes 1e-3
        if master:
            master.take_gradients()
        optimizer.step()
        optimizer.zero_grad()
        if master:
            master.write_back()


def _unit_weight() -> nn.Linear:
    model = nn.Linear(1, 1, bias=False)
    nn.init.ones_(model.weight)
    return model


def test_small_updates_add_up_on_the_masters_and_reach_the_bf16_weights():
    plain = _unit_weight().to(torch.bfloat16)
    _sgd_steps(plain, None, 10)
    assert plain.weight.item() == 1.0  # 1 - 1e-3 rounds back to 1 in bf16 (its spacing there is 2^-8)

    model = _unit_weight()
    master = MasterWeights(model)
    model.to(torch.bfloat16)
    _sgd_steps(model, master, 10)
    (master_weight,) = master.parameters()
    assert master_weight.dtype == torch.float32
    assert abs(master_weight.item() - 0.99) < 1e-6
    assert model.weight.dtype == torch.bfloat16
    assert model.weight.item() == torch.tensor(0.99).bfloat16().item() != 1.0
    assert model.weight.grad is None  # the gradient moved to the master, in fp32


def test_state_round_trip_restores_the_masters_and_the_model():
    model = _unit_weight()
    master = MasterWeights(model)
    model.to(torch.bfloat16)
    _sgd_steps(model, master, 3)
    saved = master.state_dict()

    other = _unit_weight().to(torch.bfloat16)
    restored = MasterWeights(other)
    restored.load_state_dict(saved)
    assert torch.equal(restored.parameters()[0], master.parameters()[0])
    assert torch.equal(other.weight, model.weight)
