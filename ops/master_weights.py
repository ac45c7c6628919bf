"""Low-precision weights with fp32 master copies (mixed-precision training as Megatron and DeepSpeed do
it): the model holds bf16 weights, so its forward and backward read half the bytes and need no autocast;
the optimizer steps fp32 copies of the trainable weights, so updates smaller than bf16's resolution
(about 0.4% of a weight) still add up; after each step the copies are rounded into the model."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn


class MasterWeights:
    """fp32 copies of a model's trainable parameters, by name. Hand `named_parameters()` to the
    optimizer instead of the model's; call `take_gradients()` after backward and `write_back()` after
    the optimizer step."""

    def __init__(self, model: nn.Module):
        self._pairs = [
            (name, parameter, nn.Parameter(parameter.detach().float().clone()))
            for name, parameter in model.named_parameters()
            if parameter.requires_grad
        ]

    def named_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        for name, _, master in self._pairs:
            yield name, master

    def parameters(self) -> list[nn.Parameter]:
        return [master for _, _, master in self._pairs]

    def take_gradients(self) -> None:
        """Move each model gradient onto its master copy, in fp32 (the model's are freed)."""
        for _, parameter, master in self._pairs:
            master.grad = None if parameter.grad is None else parameter.grad.float()
            parameter.grad = None

    @torch.no_grad()
    def write_back(self) -> None:
        """Round the master copies into the model's weights (in the model's dtype and device)."""
        for _, parameter, master in self._pairs:
            parameter.copy_(master)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: master.detach().cpu() for name, _, master in self._pairs}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = [name for name, _, _ in self._pairs if name not in state]
        if missing:
            raise KeyError(f"master weights: the checkpoint lacks {missing[:5]}")
        for name, _, master in self._pairs:
            master.copy_(state[name])
        self.write_back()
