"""``MultiTaskModel``: one backbone and a head per task; ``build_model`` makes it from a config.

A backbone returns ``(B, F, *S)`` features, or one such map per decoder (MC-Net); every branch
gets its own heads. Outputs are a dict by task name; branch ``i >= 1`` adds ``"<task>/<i>"``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from mtssl.config import ConfigError, did_you_mean
from mtssl.registry import BACKBONES, TASKS
from mtssl.tasks.base import Task
from mtssl.tasks.outputs import output_name

__all__ = ["Backbone", "MultiTaskModel", "build_model"]


class Backbone(nn.Module):
    """Any network that maps ``(B, C_in, *S)`` images to ``(B, out_channels, *S)`` features, as a backbone.

    Example:
        >>> from mtssl.tasks.seg import Segmentation
        >>> net = nn.Sequential(nn.Conv3d(1, 8, 3, padding=1), nn.ReLU())
        >>> model = MultiTaskModel(Backbone(net, out_channels=8, spatial_dims=3), {"seg": Segmentation()})
        >>> model(torch.randn(1, 1, 8, 8, 8))["seg"].shape
        torch.Size([1, 1, 8, 8, 8])
    """

    def __init__(self, network: nn.Module, out_channels: int, spatial_dims: int) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if out_channels < 1:
            raise ValueError(f"out_channels must be positive, got {out_channels}")
        self.network, self.out_channels, self.spatial_dims = network, out_channels, spatial_dims

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        features = self.network(image)
        if features.shape[1] != self.out_channels or features.shape[2:] != image.shape[2:]:
            raise ValueError(
                f"the wrapped network returned {tuple(features.shape)} for an input {tuple(image.shape)}; a backbone "
                f"returns (B, {self.out_channels}, *S) features at the input's size (out_channels={self.out_channels})"
            )
        return features


class MultiTaskModel(nn.Module):
    """A backbone with named task heads.

    Args:
        backbone: a module with ``out_channels`` and ``spatial_dims`` (and ``branches`` when it
            returns a list of feature maps, one per decoder); wrap any other network in :class:`Backbone`.
        tasks: head name -> :class:`~mtssl.tasks.base.Task`.

    Example:
        >>> from mtssl.nets.vnet import VNet
        >>> from mtssl.tasks.seg import Segmentation
        >>> model = MultiTaskModel(VNet(n_filters=4), {"seg": Segmentation()})
        >>> model(torch.randn(2, 1, 16, 16, 16))["seg"].shape
        torch.Size([2, 1, 16, 16, 16])
    """

    def __init__(self, backbone: nn.Module, tasks: Mapping[str, Task]) -> None:
        super().__init__()
        if not tasks:
            raise ValueError("a MultiTaskModel needs at least one task, e.g. {'seg': Segmentation()}")
        for attribute in ("out_channels", "spatial_dims"):
            if not hasattr(backbone, attribute):
                raise TypeError(
                    f"the backbone {type(backbone).__name__} has no {attribute}: wrap it as "
                    "Backbone(network, out_channels=..., spatial_dims=...)"
                )
        for name, task in tasks.items():
            if not isinstance(task, Task):
                raise TypeError(f"task {name!r} must be a mtssl Task, got {type(task).__name__}")
        self.backbone = backbone
        self.tasks = dict(tasks)
        self.spatial_dims: int = backbone.spatial_dims
        self.branches: int = getattr(backbone, "branches", 1)
        self.heads = nn.ModuleList(
            nn.ModuleDict({name: task.head(backbone.out_channels, self.spatial_dims) for name, task in tasks.items()})
            for _ in range(self.branches)
        )

    @property
    def output_names(self) -> list[str]:
        """Keys of :meth:`forward`'s dict, in order."""
        return [output_name(name, i) for i in range(self.branches) for name in self.tasks]

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """``(B, C_in, *S)`` image to ``{name: (B, out_channels, *S)}``."""
        features = self.backbone(image)
        if not isinstance(features, (list, tuple)):
            features = [features]
        return {
            output_name(name, i): head(feats)
            for i, (feats, heads) in enumerate(zip(features, self.heads))
            for name, head in heads.items()
        }

    def to_channels_last(self) -> MultiTaskModel:
        """Convert the weights to ``channels_last_3d`` (3D) or ``channels_last`` (2D), in place."""
        fmt = torch.channels_last_3d if self.spatial_dims == 3 else torch.channels_last
        return self.to(memory_format=fmt)


def backbone_section(value: Any) -> dict[str, Any]:
    """``model.backbone`` as a dict, refusing what is not a config mapping (a network instance, above all)."""
    if isinstance(value, nn.Module):
        raise ConfigError(
            f"model.backbone is a {type(value).__name__} instance; it takes a config mapping such as "
            "{name: vnet, n_filters: 16}. To train your own network, register a factory for it "
            "(BACKBONES.register('my_net'), docs/plugins.md) and name it there"
        )
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"model.backbone must be a mapping such as {{name: vnet}}, got {type(value).__name__}")
    return dict(value)


def build_model(cfg: Mapping[str, Any]) -> MultiTaskModel:
    """Build a :class:`MultiTaskModel` from a config mapping.

    ``cfg`` is ``{"backbone": {"name": ..., **options}, "tasks": {head_name: {**options}}}`` (or a
    whole config holding that under ``"model"``). A head's task is its name unless it sets
    ``task:``, so two heads of one task can coexist. Options are validated by the registries.

    Example:
        >>> model = build_model({"backbone": {"name": "vnet"}, "tasks": {"seg": {}, "sdf": {}}})
        >>> sum(p.numel() for p in model.parameters())
        9448866
    """
    if "model" in cfg and "backbone" not in cfg:
        cfg = cfg["model"]
    unknown = [k for k in cfg if k not in ("backbone", "tasks")]
    if unknown:
        raise ConfigError(f"unknown model key {unknown[0]!r}{did_you_mean(unknown[0], ['backbone', 'tasks'])}")
    backbone_cfg = backbone_section(cfg.get("backbone"))
    if "name" not in backbone_cfg:
        raise ConfigError(f"model.backbone needs a name; known backbones: {', '.join(BACKBONES.names())}")
    backbone_name = backbone_cfg.pop("name")
    tasks_cfg = cfg.get("tasks") or {}
    if not isinstance(tasks_cfg, Mapping) or not tasks_cfg:
        raise ConfigError(f"model.tasks must map head names to task options; known tasks: {', '.join(TASKS.names())}")
    backbone = BACKBONES.create(backbone_name, **backbone_cfg)
    tasks = {}
    for head, options in tasks_cfg.items():
        options = dict(options or {})
        tasks[head] = TASKS.create(options.pop("task", head), **options)
    return MultiTaskModel(backbone, tasks)
