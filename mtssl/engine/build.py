"""What a run is made of: its config schema and the builders shared by training, dry runs, testing and loading.

:class:`RunConfig` is a whole run's config (``recipe``, ``data``, ``model``, ``train``, ``eval``);
:func:`build_components` turns one into the recipe, the data set and the model, with the model's heads
sized for the data. Nothing here trains: ``mtssl.load`` and ``mtssl evaluate`` build from here too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Literal

import torch

from mtssl.config import ConfigError, build_dataclass
from mtssl.data.dataset import SegmentationData
from mtssl.engine.optim import LRSchedule, Optimizer
from mtssl.engine.protocol import EvalConfig
from mtssl.engine.spec import InferenceSpec
from mtssl.model import MultiTaskModel, backbone_section, build_model
from mtssl.recipes.base import Recipe
from mtssl.registry import DATASETS, RECIPES
from mtssl.tasks.outputs import head_of
from mtssl.tasks.seg import Segmentation

__all__ = [
    "RunConfig",
    "TrainConfig",
    "backbone_config",
    "build_components",
    "build_recipe",
    "build_run_model",
    "fit_backbone_to_data",
    "inference_spec",
    "named_section",
    "plain",
    "resolved_config",
    "run_config",
    "seed_run",
]


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """The training loop's options (the literature's LA values by default).

    Under ``torchrun`` the batch sizes are per rank; ``sync_batchnorm`` (CUDA only) shares batch
    statistics across ranks and ``find_unused_parameters`` is DDP's option of that name, for
    recipes that leave a head out of some steps. ``keep_checkpoints`` is how many periodic
    checkpoints are kept: ``last.pt`` and the ``keep_checkpoints - 1`` before it
    (``checkpoints/iter-<N>.pt``), which a resume falls back to when ``last.pt`` is damaged.
    ``tensorboard`` also writes every log record and the test metrics as TensorBoard scalars
    under ``<run>/tensorboard`` (needs the ``tensorboard`` package: ``pip install mtssl[tensorboard]``).
    ``progress: false`` replaces the live progress bar with a plain line per log record (as in a log file).
    """

    iterations: int = 6000
    batch_size: int = 4
    labeled_bs: int = 2
    optimizer: Optimizer = dataclasses.field(default_factory=Optimizer)
    lr_schedule: LRSchedule = dataclasses.field(default_factory=LRSchedule)
    grad_clip: float | None = None
    amp: bool = True
    channels_last: bool = True
    deterministic: bool = False
    seed: int = 1337
    num_workers: int = 0
    device: str = "auto"
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2
    tensorboard: bool = False
    log_every: int = 50
    nan_check_every: int = 50
    nan_policy: Literal["stop", "skip"] = "stop"
    progress: bool = True
    sync_batchnorm: bool = False
    find_unused_parameters: bool = False

    def __post_init__(self) -> None:
        for key in ("iterations", "batch_size", "labeled_bs", "checkpoint_every", "log_every", "nan_check_every"):
            if getattr(self, key) < 1:
                raise ConfigError(f"train.{key} must be a positive integer, got {getattr(self, key)}")
        if self.labeled_bs > self.batch_size:
            raise ConfigError(
                f"train.labeled_bs ({self.labeled_bs}) is larger than train.batch_size ({self.batch_size}): "
                "the labeled samples are part of each batch"
            )
        if self.keep_checkpoints < 1:
            raise ConfigError(f"train.keep_checkpoints must be at least 1 (last.pt), got {self.keep_checkpoints}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunConfig:
    """A whole run: ``recipe``, ``model``, ``data`` (registry names plus options), ``train`` and ``eval``.

    ``run`` is the provenance record a run folder's ``config.yaml`` carries (versions, revision, seed,
    the labeled cases): it is accepted so that ``mtssl train RUN/config.yaml`` runs as it is, and it
    never changes what is computed (each run writes its own).
    """

    recipe: dict[str, Any]
    data: dict[str, Any]
    model: dict[str, Any] = dataclasses.field(default_factory=dict)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    run: dict[str, Any] | None = None


def run_config(config: Mapping[str, Any]) -> RunConfig:
    """``config`` validated into a :class:`RunConfig`, refusing one that does not say how long to train
    (``train.iterations``): a default of the LA protocol's 6000 iterations would be a silent trap."""
    train = config.get("train")
    if not isinstance(train, Mapping) or "iterations" not in train:
        raise ConfigError(
            "train.iterations is missing: say how long to train (the LA protocol trains 6000 iterations; "
            "mtssl plan DATASET --minutes M picks the iterations that fit a time budget)"
        )
    return build_dataclass(RunConfig, config)


def named_section(section: Mapping[str, Any], where: str) -> tuple[str, dict[str, Any]]:
    """A config section's registry ``name`` and the rest of its options (``where`` names it in errors)."""
    options = dict(section)
    if "name" not in options:
        raise ConfigError(f"{where} needs a name")
    return options.pop("name"), options


def build_recipe(cfg: RunConfig) -> Recipe:
    """The configured recipe."""
    name, options = named_section(cfg.recipe, "recipe")
    return RECIPES.create(name, **options)


def backbone_config(cfg: RunConfig, recipe: Recipe) -> dict[str, Any]:
    """The backbone section to build (with its ``name``): the recipe's options under the config's,
    unless the config picks another backbone."""
    chosen = backbone_section(cfg.model.get("backbone"))
    same = chosen.get("name", recipe.backbone["name"]) == recipe.backbone["name"]
    return {**dict(recipe.backbone), **chosen} if same else chosen


def fit_backbone_to_data(backbone: dict[str, Any], in_channels: int, spatial_dims: int) -> dict[str, Any]:
    """The backbone section with the data's ``in_channels`` and ``spatial_dims``, refusing other values."""
    backbone = dict(backbone)
    for key, value in (("spatial_dims", spatial_dims), ("in_channels", in_channels)):
        if backbone.get(key, value) != value:
            raise ConfigError(
                f"model.backbone.{key} is {backbone[key]} but the data set's is {value}: "
                f"{'2D data needs a 2D backbone and 3D data a 3D one; ' if key == 'spatial_dims' else ''}"
                f"remove model.backbone.{key} (it follows the data)"
            )
        backbone.setdefault(key, value)
    return backbone


def build_run_model(
    cfg: RunConfig, recipe: Recipe, in_channels: int, spatial_dims: int, num_classes: int
) -> MultiTaskModel:
    """The recipe's heads on the configured backbone (``vnet`` by default), sized for the data."""
    backbone = fit_backbone_to_data(backbone_config(cfg, recipe), in_channels, spatial_dims)
    overrides = dict(cfg.model.get("tasks") or {})
    unknown = [k for k in overrides if k not in recipe.tasks]
    if unknown:
        raise ConfigError(f"model.tasks.{unknown[0]}: the recipe's heads are {', '.join(recipe.tasks)}")
    tasks = {
        head: {"num_classes": num_classes, **dict(options), **dict(overrides.get(head) or {})}
        for head, options in recipe.tasks.items()
    }
    for head, options in tasks.items():
        if options["num_classes"] != num_classes:
            raise ConfigError(
                f"model.tasks.{head}.num_classes is {options['num_classes']} but the data set has {num_classes} "
                f"foreground class(es): remove model.tasks.{head}.num_classes (it follows the data), or set the "
                "data set's classes"
            )
    try:
        return build_model({"backbone": backbone, "tasks": tasks})
    except ImportError as exc:  # an optional dependency of the backbone: the config chose it
        raise ConfigError(f"model.backbone.name: {exc}") from exc


def build_components(cfg: RunConfig) -> tuple[Recipe, SegmentationData, MultiTaskModel]:
    """The recipe, the data and the model that a config describes (the model's heads fit the data)."""
    recipe = build_recipe(cfg)
    data_name, data_options = named_section(cfg.data, "data")
    data = DATASETS.create(data_name, **data_options)
    return recipe, data, build_run_model(cfg, recipe, data.in_channels, data.spatial_dims, data.num_classes)


def inference_spec(
    recipe: Recipe, data: SegmentationData, model: MultiTaskModel, config: EvalConfig | None = None
) -> InferenceSpec:
    """What testing and ``mtssl.load`` need besides the weights, for ``model`` trained by ``recipe`` on ``data``."""
    config = config or EvalConfig()
    if recipe.evaluate not in model.output_names:
        raise ConfigError(
            f"recipe.evaluate names the output {recipe.evaluate!r}, which the model does not have; its outputs "
            f"are {', '.join(model.output_names)}"
        )
    head = model.tasks[head_of(recipe.evaluate)]
    patch = tuple(config.patch or data.patch)
    known = {"normalization", "ct_window", "downsample", "spacing", "label_values"}
    unknown = sorted(set(data.preprocessing) - known)
    if unknown:
        raise ConfigError(
            f"the data set's preprocessing has {', '.join(unknown)}, which inference cannot apply; "
            f"it may name {', '.join(sorted(known))}"
        )
    return InferenceSpec(
        patch=patch,
        stride=tuple(config.stride or [max(p // 2, 1) for p in patch]),
        in_channels=data.in_channels,
        spatial_dims=data.spatial_dims,
        num_classes=data.num_classes,
        output=recipe.evaluate,
        softmax=bool(isinstance(head, Segmentation) and head.softmax),
        threshold=config.threshold,
        lcc=config.lcc,
        physical_spacing=data.physical_spacing,
        class_names=tuple(data.class_names),
        mirror_axes=tuple(getattr(data, "mirror_axes", range(data.spatial_dims))),
        slice_size=getattr(data, "slice_size", None),
        **{k: tuple(v) if isinstance(v, list) else v for k, v in data.preprocessing.items() if v is not None},
    )


def plain(value: Any) -> Any:
    """Dataclasses and tuples as plain YAML/JSON-able values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def resolved_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A run config with every default filled in, as plain values (a config written by another mtssl
    version that no longer validates is returned as it is)."""
    try:
        return plain(build_dataclass(RunConfig, config))
    except ConfigError:
        return plain(config)


def seed_run(train: TrainConfig, device: torch.device) -> None:
    """Seed the global RNG with ``train.seed`` (before the model is built) and set the determinism flags."""
    if train.deterministic:
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(train.seed)
