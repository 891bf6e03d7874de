"""The inference contract: everything besides the weights that testing and ``mtssl.load`` need.

A run's :class:`InferenceSpec` is built once from its data set, recipe and eval config, saved in every
checkpoint (as a plain mapping, so a weights-only load reads it), and read back by the evaluator and
the predictor: the two apply the same window, threshold, normalisation and resampling.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from mtssl.tasks.outputs import head_of

__all__ = ["InferenceSpec"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class InferenceSpec:
    """How a trained model turns a raw image into probabilities and labels.

    Attributes:
        patch, stride: the sliding window (in the network's input grid, after ``downsample``).
        in_channels, spatial_dims, num_classes: the network's input and output sizes.
        output: the output tested (``seg``, or a decoder such as ``seg/1``).
        softmax: whether its probabilities are a softmax (with a background) or per-class sigmoids.
        threshold: a sigmoid output's foreground threshold; lcc: keep each class's largest component.
        class_names: one name per foreground class.
        normalization, ct_window: how raw intensities were normalised (:mod:`mtssl.data.normalize`).
        downsample: the factor the images were shrunk by before the network (probabilities are
            upsampled back to the input grid).
        spacing: the voxel spacing every image was resampled to before any downsampling (None: each
            kept its own); an input is resampled to it and its probabilities back to its own grid.
        physical_spacing: whether distances are in mm (else voxels).
        mirror_axes: the spatial axes the training augmentation mirrored, the only ones test-time
            mirroring flips (None, in checkpoints written before it: every axis).
        label_values: the value each class has in the data set's own label files, background first
            (ISBI 2012's membrane masks: ``(255, 0)``); a PNG prediction is written with them. None: class
            numbers (255 for the foreground of a binary PNG).
        slice_size: for a 2D network trained on slices zoomed to one size (ACDC), the size each slice
            of a volume is zoomed to before the network (nearest neighbour) and back from; None: a
            slice is slid over at its own size.
    """

    patch: tuple[int, ...]
    stride: tuple[int, ...]
    in_channels: int
    spatial_dims: int
    num_classes: int
    output: str = "seg"
    softmax: bool = False
    threshold: float = 0.5
    lcc: bool = True
    class_names: tuple[str, ...] = ()
    normalization: str = "none"
    ct_window: tuple[float, float] = (-125.0, 275.0)
    downsample: int = 1
    spacing: tuple[float, ...] | None = None
    physical_spacing: bool = False
    mirror_axes: tuple[int, ...] | None = None
    slice_size: tuple[int, ...] | None = None
    label_values: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if not self.class_names:
            object.__setattr__(self, "class_names", tuple(str(c) for c in range(1, self.num_classes + 1)))

    @property
    def head(self) -> str:
        """The task head of the tested output (``seg`` for ``seg/1``)."""
        return head_of(self.output)

    def channels(self) -> dict[str, Any]:
        """What each channel of a probability map is: softmax maps start with the background; sigmoid
        maps have one independent channel per foreground class and no background channel."""
        names = list(self.class_names)
        if self.softmax:
            return {"activation": "softmax", "background_channel": True, "channels": ["background", *names]}
        return {"activation": "sigmoid", "background_channel": False, "channels": names}

    def to_dict(self) -> dict[str, Any]:
        """Plain values (lists, not tuples) for a checkpoint or JSON."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> InferenceSpec:
        """The spec of a checkpoint's mapping (also the ``preprocessing`` mapping of mtssl 0.1 checkpoints)."""
        known = {f.name for f in dataclasses.fields(cls)}
        missing = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING and f.name not in values]
        if missing:
            raise ValueError(f"the checkpoint's inference spec lacks {', '.join(missing)}: it was not written by mtssl")
        kept = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in known}
        return cls(**kept)

    @classmethod
    def from_checkpoint(cls, state: Mapping[str, Any]) -> InferenceSpec:
        """The spec a checkpoint holds (``inference``, or ``preprocessing`` in older checkpoints)."""
        values = state.get("inference") or state.get("preprocessing")
        if not isinstance(values, Mapping):
            raise ValueError("the checkpoint holds no inference spec: it was not written by mtssl")
        return cls.from_dict(values)
