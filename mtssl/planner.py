"""``mtssl plan``: a dataset's fingerprint turned into a commented, runnable config.

nnU-Net's planner is the reference (Isensee et al., Nature Methods 18, 2021: "experiment planning");
where mtssl follows it and where not:

- **Fingerprint** (as nnU-Net): per training case with a label, its shape and spacing; per channel,
  the 0.5th, 50th and 99.5th intensity percentiles over foreground voxels; the class frequencies.
- **Normalisation** (as nnU-Net): a channel named CT is clipped to the foreground's 0.5-99.5
  percentiles (mtssl then scales the window to [0, 1], where nnU-Net z-scores it); any other
  modality is z-scored per volume and channel.
- **Spacing** (as nnU-Net): the target spacing is the median spacing per axis, except that for
  anisotropic data (an axis over 3 times coarser than the finest, as nnU-Net's threshold) the coarse
  axis takes the 10th percentile of its spacings. When some case's spacing differs from the target
  by more than 10 %, the plan sets ``data.spacing`` and every case is resampled to it (test cases
  are still scored on their native grid); otherwise the cases keep their own (nnU-Net resamples
  always, which for such data changes nothing but time). Shapes are planned at the target spacing.
- **Downsampling** (not nnU-Net's): on a CPU, the smallest integer factor that brings the median
  volume under :data:`CPU_VOLUME_VOXELS`, short of shrinking a side below 16 voxels (a thin axis
  keeps the native grid); test cases are still scored on their native grid.
- **Patch** (as nnU-Net, with V-Net's stride): the median shape rounded down to multiples of 16,
  its largest side shrunk by 16 until the patch fits the device's voxel budget
  (:data:`PATCH_VOXELS`: LA's 112x112x80 on a GPU, the CPU protocol's 64x64x32 on a CPU).
- **Batch**: 2 labeled + 2 unlabeled (the literature's two streams); 2 labeled alone for a recipe
  that reads no unlabeled sample (``Recipe.uses_unlabeled``), as nnU-Net's batch of 2: supervised
  would otherwise run the network on twice the images it learns from.
- **Foreground oversampling** (as nnU-Net): a third of the labeled crops centred on the foreground.
- **Iterations** (not nnU-Net's fixed 1000 epochs): from a time budget, the training steps and one
  test case timed on this machine, or given.
- **The recipe's run-dependent values**: its ramps are a fraction of the run (``ramp_until``) and
  DBiSL's ``h`` follows the patch, so the plan needs to set neither; it says so in the file.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import statistics
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Fingerprint", "Plan", "fingerprint", "make_plan", "plan_dataset", "render_plan"]

# Patch voxel budgets by device and dimensions: in 3D LA's literature patch on a GPU and the CPU LA
# protocol's on a CPU (both measured); in 2D the ISBI 2012 config's 256x256 on a CPU and 512x512 on a
# GPU (chosen, not measured).
PATCH_VOXELS = {("cuda", 3): 112 * 112 * 80, ("cpu", 3): 64 * 64 * 32, ("cuda", 2): 512 * 512, ("cpu", 2): 256 * 256}
# On a CPU a volume is shrunk by an integer factor until it holds at most this many voxels (the CPU LA
# protocol's 2x gives 96x71x44 = 300k from LA's median 192x142x88); an image, 512x512 pixels.
CPU_VOLUME_VOXELS = {3: 400_000, 2: 512 * 512}
STRIDE = 16  # V-Net's: every side of its input a multiple of 16


@dataclasses.dataclass(frozen=True)
class Fingerprint:
    """What a dataset holds (see the module doc)."""

    root: str
    spatial_dims: int
    channels: list[str]
    class_names: list[str]
    labeled: int
    unlabeled: int
    test: int
    shapes: list[list[int]]
    spacings: list[list[float]]
    foreground_percentiles: list[list[float]]  # per channel: 0.5, 50, 99.5
    class_fractions: dict[str, float]

    @property
    def median_shape(self) -> list[int]:
        return [int(statistics.median(s[i] for s in self.shapes)) for i in range(self.spatial_dims)]

    @property
    def median_spacing(self) -> list[float]:
        return [float(statistics.median(s[i] for s in self.spacings)) for i in range(self.spatial_dims)]


def fingerprint(root: str | Path, max_cases: int = 20) -> Fingerprint:
    """The fingerprint of an nnU-Net v2 folder, from (at most ``max_cases``) labeled training cases."""
    from mtssl.data.nnunet import NNUNetFolder

    folder = NNUNetFolder(root)
    train = folder.cases("imagesTr")
    labeled = [c for c in train if folder.label_file("labelsTr", c)]
    tests = [c for c in folder.cases("imagesTs") if folder.label_file("labelsTs", c)]
    if not labeled:
        from mtssl.data.cases import DataError

        raise DataError(f"{folder.root / 'labelsTr'} holds no label of an imagesTr case: nothing to plan from")
    shapes, spacings, samples = [], [], [[] for _ in folder.channels]
    counts = np.zeros(len(folder.class_names) + 1)
    rng = np.random.default_rng(0)
    for case in labeled[:max_cases]:
        data = folder.read_case(case, train[case], "labelsTr", "none", (0.0, 1.0))
        assert data.label is not None
        shapes.append(list(data.label.shape))
        spacings.append(list(data.spacing))
        counts += np.bincount(data.label.astype(np.int64).ravel(), minlength=len(counts))[: len(counts)]
        foreground = data.label > 0
        for c, channel in enumerate(data.image):
            values = channel[foreground] if foreground.any() else channel.ravel()
            samples[c].append(rng.choice(values, min(10_000, values.size), replace=False))
    percentiles = [np.percentile(np.concatenate(s), [0.5, 50, 99.5]).tolist() for s in samples]
    total = max(counts.sum(), 1)
    return Fingerprint(
        root=str(folder.root),
        spatial_dims=folder.spatial_dims,
        channels=folder.channels,
        class_names=folder.class_names,
        labeled=len(labeled),
        unlabeled=len(train) - len(labeled),
        test=len(tests),
        shapes=shapes,
        spacings=spacings,
        foreground_percentiles=[[round(float(v), 4) for v in p] for p in percentiles],
        class_fractions={name: float(counts[k] / total) for k, name in enumerate(["background", *folder.class_names])},
    )


@dataclasses.dataclass
class Plan:
    """A planned config and why each value is what it is."""

    config: dict[str, Any]
    why: dict[str, str]
    warnings: list[str]


def target_spacing(spacings: list[list[float]], shapes: list[list[int]]) -> list[float]:
    """nnU-Net's target spacing: the median per axis, except for anisotropic volumes (the coarsest
    median axis over 3 times the spacing of every other, and over 3 times fewer voxels than each),
    where that axis takes the 10th percentile of its spacings (nnU-Net's ``determine_fullres_target_spacing``).

    >>> target_spacing([[1.0, 1.0, 5.0], [1.0, 1.0, 6.0], [1.2, 1.2, 3.0]], [[200, 200, 20]] * 3)
    [1.0, 1.0, 3.4]
    >>> target_spacing([[1.0, 1.0, 5.0], [1.0, 1.0, 6.0]], [[200, 200, 100]] * 2)
    [1.0, 1.0, 5.5]
    """
    axes = list(zip(*spacings))
    target = [float(statistics.median(a)) for a in axes]
    sizes = [statistics.median(n) for n in zip(*shapes)]
    coarse = target.index(max(target))
    others = [i for i in range(len(target)) if i != coarse]
    if (
        len(target) == 3
        and target[coarse] > 3 * max(target[i] for i in others)
        and sizes[coarse] * 3 < min(sizes[i] for i in others)
    ):
        target[coarse] = max(float(np.percentile(axes[coarse], 10)), max(target[i] for i in others) + 1e-5)
    return [round(t, 4) for t in target]


def downsample_factor(median_shape: list[int], device: str) -> int:
    """On a CPU, the smallest integer factor bringing the median volume under :data:`CPU_VOLUME_VOXELS`,
    short of shrinking any side below 16 voxels (V-Net's stride).

    >>> downsample_factor([185, 143, 88], "cpu"), downsample_factor([256, 216, 10], "cpu")
    (2, 1)
    """
    if device != "cpu":
        return 1
    factor, budget = 1, CPU_VOLUME_VOXELS[len(median_shape)]
    while math.prod(math.ceil(n / factor) for n in median_shape) > budget:
        if min(math.ceil(n / (factor + 1)) for n in median_shape) < STRIDE:
            break  # no side below V-Net's stride: a thin axis (ACDC's 10 slices) keeps the native grid
        factor += 1
    return factor


def plan_patch(shape: list[int], budget: int) -> list[int]:
    """The median ``shape`` rounded down to multiples of 16 (at least 16), its largest side shrunk by 16
    until the patch holds at most ``budget`` voxels (nnU-Net's rule, with V-Net's stride)."""
    patch = [max(STRIDE, n // STRIDE * STRIDE) for n in shape]
    while math.prod(patch) > budget and max(patch) > STRIDE:
        patch[patch.index(max(patch))] -= STRIDE
    return patch


def make_plan(fp: Fingerprint, recipe: str, device: str, iterations: int | None = None) -> Plan:
    """The config a fingerprint calls for on ``device`` (``"cpu"`` or ``"cuda"``), before timing."""
    why: dict[str, str] = {}
    warnings: list[str] = []
    spacing = target_spacing(fp.spacings, fp.shapes)
    resample = any(abs(s[i] - spacing[i]) > 0.1 * spacing[i] for s in fp.spacings for i in range(fp.spatial_dims))
    median_shape = fp.median_shape
    if resample:
        median_shape = [
            int(statistics.median(n * s[i] / spacing[i] for n, s in zip((sh[i] for sh in fp.shapes), fp.spacings)))
            for i in range(fp.spatial_dims)
        ]
    factor = downsample_factor(median_shape, device)
    shrunk = [math.ceil(n / factor) for n in median_shape]
    budget = PATCH_VOXELS[device, fp.spatial_dims]
    patch = plan_patch(shrunk, budget)
    ct = all(name.strip().lower() == "ct" for name in fp.channels)
    window = [fp.foreground_percentiles[0][0], fp.foreground_percentiles[0][2]] if ct else None
    data: dict[str, Any] = {
        "name": "nnunet",
        "root": str(Path(fp.root).resolve()),
        "patch": patch,
        "downsample": factor,
        "fg_crop_prob": 0.33,
        "normalization": "ct" if ct else "zscore",
        "preload": True,
    }
    if window is not None:
        data["ct_window"] = window
    if resample:
        data["spacing"] = spacing
        why["data.spacing"] = (
            f"the cases' spacings differ by more than 10 % from the target {spacing} mm (the median per axis"
            f"{'; a coarse axis its 10th percentile' if spacing != [round(v, 4) for v in fp.median_spacing] else ''}): "
            "every case resampled to it, test cases scored on their native grid"
        )
    at = " at that spacing" if resample else ""
    why["data.downsample"] = f"median volume {'x'.join(map(str, median_shape))}{at}; " + (
        f"shrunk {factor}x to {'x'.join(map(str, shrunk))}, "
        f"under {CPU_VOLUME_VOXELS[fp.spatial_dims]:,} voxels for a CPU (scored on the native grid)"
        if factor > 1
        else "kept at its native grid"
    )
    why["data.patch"] = (
        f"the median shape{' after downsampling' if factor > 1 else ''} in multiples of 16 (V-Net's stride), "
        f"its largest side shrunk until it holds at most {budget:,} voxels ({device}, {fp.spatial_dims}D)"
    )
    why["data.normalization"] = (
        f"CT: clipped to the foreground's 0.5-99.5 percentiles {window}, scaled to [0, 1]"
        if ct
        else f"{', '.join(fp.channels)}: z-score per volume and channel (not CT)"
    )
    why["data.fg_crop_prob"] = "a third of the labeled crops centred on the foreground (nnU-Net's oversampling)"
    why["data.preload"] = f"{fp.labeled + fp.unlabeled + fp.test} cases read once into memory"
    from mtssl.registry import RECIPES

    unlabeled = RECIPES.create(recipe).uses_unlabeled
    config = {
        "recipe": {"name": recipe},
        "data": data,
        "model": {"backbone": {"name": "vnet", "n_filters": 16}},
        "train": {
            "iterations": iterations or 100,
            "batch_size": 4 if unlabeled else 2,
            "labeled_bs": 2,
            "optimizer": {"name": "adamw", "lr": 0.002, "weight_decay": 0.0001},
            "lr_schedule": {"name": "poly"},
            "checkpoint_every": 100,
            "log_every": 20,
            "progress": True,
        },
        "eval": {"patch": patch, "stride": [p // 2 for p in patch], "lcc": True, "select": "last"},
    }
    why["train.batch_size"] = (
        "2 labeled + 2 unlabeled per step, the literature's two streams"
        if unlabeled
        else f"2 labeled per step, as nnU-Net: {recipe} reads no unlabeled sample, so none is loaded or run"
    )
    why["train.optimizer"] = "AdamW 2e-3 with poly decay, the CPU LA protocol's (measured there)"
    why["eval"] = "windows of the training patch, half-overlapping; the largest component per class"
    why["recipe"] = (
        f"{recipe} with its defaults: its ramps end at a fraction of the run (ramp_until) and DBiSL's h "
        "follows the patch, so neither needs setting here"
    )
    return Plan(config, why, warnings)


def time_run(config: Mapping[str, Any], steps: int = 8) -> dict[str, float]:
    """Seconds to build a run (data read and checked), per training step, and to test one case, measured
    here with ``config``: the numbers a time budget is divided by."""
    from mtssl.engine.trainer import Trainer

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        trainer = Trainer.from_config({**config, "train": {**config["train"], "progress": False}}, Path(tmp) / "run")
        trainer.data.check()
        build = time.perf_counter() - start

        def endless() -> Any:
            for epoch in itertools.count():
                trainer.sampler.set_epoch(epoch)
                yield from trainer.loader

        batches = endless()
        trainer.step(next(batches))  # warm-up
        start = time.perf_counter()
        for _ in range(steps):
            trainer.step(next(batches))
        step = (time.perf_counter() - start) / steps
        test = 0.0
        if len(trainer.data.test):
            trainer.evaluator.config = dataclasses.replace(trainer.evaluator.config, max_cases=1)
            start = time.perf_counter()
            trainer.evaluator.evaluate(trainer.data.test)
            test = time.perf_counter() - start
        trainer.close()
    return {"build": build, "step": step, "test_case": test}


def plan_dataset(
    root: str | Path, recipe: str, minutes: float | None = None, iterations: int | None = None, device: str = "auto"
) -> tuple[Plan, Fingerprint, dict[str, float] | None]:
    """Fingerprint ``root``, plan for ``recipe`` on this machine's device and, given ``minutes``, time the
    plan here and set the iterations that fit (a tenth of the budget kept as a margin)."""
    from mtssl.engine.distributed import pick_device

    if (minutes is None) == (iterations is None):
        from mtssl.config import ConfigError

        raise ConfigError("give the run's length: --minutes M (a time budget) or --iterations N")
    dev = pick_device(device).type
    fp = fingerprint(root)
    plan = make_plan(fp, recipe, dev, iterations)
    timing = None
    if minutes is not None:
        timing = time_run(plan.config)
        left = 0.9 * minutes * 60 - timing["build"] - timing["test_case"] * fp.test
        fitted = int(left // timing["step"]) if left > 0 else 0
        if fitted < 50:
            plan.warnings.append(f"{minutes} minutes fit only {fitted} iterations here; give the run more time")
        plan.config["train"]["iterations"] = max(fitted, 1)
        plan.why["train.iterations"] = (
            f"{minutes:g} minutes here ({dev}): {timing['build']:.0f} s to read the data, "
            f"{timing['step']:.2f} s a step, {timing['test_case']:.0f} s a test case x {fp.test}, a tenth kept spare"
        )
    else:
        plan.why["train.iterations"] = "as given (--iterations)"
    return plan, fp, timing


def render_plan(plan: Plan, fp: Fingerprint) -> str:
    """The plan as a commented YAML config: the fingerprint on top, each value's reason above it."""
    import yaml

    head = [
        f"# mtssl plan of {fp.root}",
        f"# {fp.labeled} labeled + {fp.unlabeled} unlabeled training cases, {fp.test} test cases; "
        f"{len(fp.channels)} channel(s): {', '.join(fp.channels)}; classes: {', '.join(fp.class_names)}",
        f"# median shape {fp.median_shape}, median spacing {[round(s, 3) for s in fp.median_spacing]}; "
        f"foreground intensity percentiles (0.5, 50, 99.5) per channel: {fp.foreground_percentiles}",
        "# class fractions: " + ", ".join(f"{k} {v:.4f}" for k, v in fp.class_fractions.items()),
        *(f"# WARNING: {w}" for w in plan.warnings),
        "# Run it with: mtssl train THIS_FILE --out runs/NAME",
        "",
    ]
    lines = []
    for section, values in plan.config.items():
        reasons = [
            f"#   {k.split('.', 1)[1] if '.' in k else k}: {v}"
            for k, v in plan.why.items()
            if k.split(".")[0] == section
        ]
        if reasons:
            lines.append(f"# {section}:")
            lines += reasons
        lines += yaml.safe_dump({section: values}, sort_keys=False, default_flow_style=None).splitlines()
    return "\n".join(head + lines) + "\n"


def fingerprint_json(fp: Fingerprint) -> str:
    """The fingerprint as JSON (``plan.fingerprint.json`` beside the plan)."""
    return json.dumps(
        {**dataclasses.asdict(fp), "median_shape": fp.median_shape, "median_spacing": fp.median_spacing}, indent=1
    )
