"""The EMA teacher (mean teacher): an exponential moving average of the student's weights."""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["EMATeacher"]


class EMATeacher:
    """``teacher = a * teacher + (1 - a) * student`` with ``a = min(1 - 1/(t + 1), decay)`` (UA-MT's warm-up).

    Parameters are averaged; buffers (batchnorm statistics) are the teacher's own, updated by its
    forward passes in train mode, as in the reference. ``mode`` says whether the teacher runs in
    train mode (dropout on, as UA-MT and DTC) or eval mode.
    """

    def __init__(self, student: nn.Module, decay: float = 0.99, mode: str = "train") -> None:
        self.model = copy.deepcopy(student)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.decay, self.mode = decay, mode

    @torch.no_grad()
    def update(self, student: nn.Module, iteration: int) -> None:
        alpha = min(1.0 - 1.0 / (iteration + 1), self.decay)
        for t, s in zip(self.model.parameters(), student.parameters()):
            t.mul_(alpha).add_(s.detach(), alpha=1.0 - alpha)

    @torch.no_grad()
    def __call__(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        self.model.train(self.mode == "train")
        return self.model(image)
