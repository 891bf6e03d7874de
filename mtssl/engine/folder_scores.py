"""Score label maps already on disk against the truth: ``mtssl evaluate-folder PRED TRUTH``.

Any predictions, mtssl's or another tool's, scored with the metrics a run's test uses (Dice, Jaccard,
HD95 and ASD per case and class, medpy's definitions): the files pair by case name (``case.nii.gz``
in both folders, as nnU-Net's ``imagesTs`` predictions and ``labelsTs`` do); NIfTI distances are in
mm from the truth's header, other formats in voxels.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtssl import metrics
from mtssl.data.cases import DataError, numeric_array
from mtssl.engine.protocol import METRIC_NAMES, distance_unit, summarize

__all__ = ["class_names_of", "read_label", "score_folders"]

LABEL_ENDINGS = (".nii.gz", ".nii", ".h5", ".hdf5", ".npy", ".png", ".tif", ".tiff")


def _case(path: Path) -> str:
    name = path.name
    for ending in LABEL_ENDINGS:
        if name.lower().endswith(ending):
            return name[: -len(ending)]
    return path.stem


def read_label(path: Path) -> tuple[np.ndarray, tuple[float, ...] | None]:
    """A label map (class numbers) and, for NIfTI, its voxel spacing in mm."""
    name = path.name.lower()
    try:
        if name.endswith((".nii", ".nii.gz")):
            import nibabel as nib

            img = nib.load(str(path))
            array, spacing = np.asarray(img.dataobj), tuple(float(z) for z in img.header.get_zooms()[:3])
        elif name.endswith((".h5", ".hdf5")):
            import h5py

            with h5py.File(path, "r") as f:
                array, spacing = f["label"][()], None
        elif name.endswith(".npy"):
            array, spacing = np.load(path), None
        else:
            from PIL import Image

            with Image.open(path) as image:
                array, spacing = np.asarray(image), None
    except Exception as exc:  # each reader raises its own types for a damaged file
        raise DataError(f"{path} is not a readable label file: {exc}") from exc
    return numeric_array(array, str(path), integer=True).astype(np.uint8), spacing


def _files(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise DataError(f"{folder} is not a folder")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.name.lower().endswith(LABEL_ENDINGS) and not _case(path).endswith("_prob"):
            found[_case(path)] = path
    return found


def score_folders(
    pred: str | Path, truth: str | Path, num_classes: int | None = None, class_names: Sequence[str] = ()
) -> dict[str, Any]:
    """The summary (as a run's ``metrics.json``) of the predictions in ``pred`` against ``truth``.

    Every truth case needs a prediction of the same case name and shape; ``num_classes`` defaults to
    the largest class in the truth. A prediction beside the truth's cases is ignored with a warning.
    """
    predictions, labels = _files(Path(pred)), _files(Path(truth))
    if not labels:
        raise DataError(f"{truth} holds no label files ({', '.join(LABEL_ENDINGS)})")
    missing = [c for c in labels if c not in predictions]
    if missing:
        raise DataError(f"{pred} has no prediction of {len(missing)} truth case(s): {missing[:5]}")
    extra = [c for c in predictions if c not in labels]
    if extra:
        warnings.warn(
            f"{pred}: {len(extra)} predictions without a truth case are not scored: {extra[:5]}", stacklevel=2
        )
    pairs = {c: (read_label(predictions[c]), read_label(labels[c])) for c in labels}
    classes = num_classes or max(max(int(t.max()) for (_, _), (t, _) in pairs.values()), 1)
    rows, physical = [], True
    for case, ((p, _), (t, spacing)) in pairs.items():
        if p.shape != t.shape:
            raise DataError(f"case {case}: the prediction's shape {p.shape} differs from the truth's {t.shape}")
        physical = physical and spacing is not None
        for c in range(1, classes + 1):
            pred_c, true_c = torch.from_numpy(p == c)[None], torch.from_numpy(t == c)[None]
            with warnings.catch_warnings():  # empty masks are counted in the summary instead
                warnings.simplefilter("ignore", metrics.EmptyMaskWarning)
                values = metrics.compute(pred_c, true_c, METRIC_NAMES, spacing)
            rows.append(
                {
                    "case": case,
                    "class": c,
                    **{k: float(v[0]) for k, v in values.items()},
                    "empty_prediction": not bool(pred_c.any()),
                    "empty_label": not bool(true_c.any()),
                }
            )
    ndim = next(iter(pairs.values()))[1][0].ndim  # (prediction, truth), each (labels, spacing)
    summary = summarize(rows, distance_unit(physical, ndim), f"predictions in {pred}")
    names = list(class_names) or [str(c) for c in range(1, classes + 1)]
    summary["class_names"] = {str(c): n for c, n in enumerate(names, 1)}
    return summary


def class_names_of(dataset_json: str | Path) -> list[str]:
    """The foreground class names of an nnU-Net v2 (name -> value) or MSD (value -> name) dataset.json."""
    meta = json.loads(Path(dataset_json).read_text())
    labels = meta.get("labels") or {}
    if all(str(k).isdigit() for k in labels):  # MSD: {"0": "background", "1": "organ"}
        return [str(labels[k]) for k in sorted(labels, key=int) if int(k) > 0]
    return [str(k) for k, v in sorted(labels.items(), key=lambda kv: int(kv[1])) if int(v) > 0]
