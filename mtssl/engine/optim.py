"""Optimizers and learning-rate schedules (the LR is a function of the iteration: nothing to checkpoint)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Literal

import torch

from mtssl.config import ConfigError

__all__ = ["LRSchedule", "Optimizer", "build_optimizer"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Optimizer:
    """``sgd`` (the literature's: lr 0.01, momentum 0.9, weight decay 1e-4) or ``adamw``."""

    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ConfigError(f"train.optimizer.lr must be positive, got {self.lr}")
        if self.weight_decay < 0:
            raise ConfigError(f"train.optimizer.weight_decay must not be negative, got {self.weight_decay}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class LRSchedule:
    """``step``: lr * gamma ** (t // step) (the literature's: x0.1 every 2500); ``poly``; ``constant``."""

    name: Literal["step", "poly", "constant"] = "step"
    step: int = 2500
    gamma: float = 0.1
    power: float = 0.9

    def __call__(self, base_lr: float, iteration: int, total: int) -> float:
        if self.name == "step":
            return base_lr * self.gamma ** (iteration // self.step)
        if self.name == "poly":
            return base_lr * (1 - min(iteration, total) / total) ** self.power
        return base_lr


def build_optimizer(params: Iterable[torch.nn.Parameter], cfg: Optimizer) -> torch.optim.Optimizer:
    """The configured optimizer over ``params``."""
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
