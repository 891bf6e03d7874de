"""Cases (one volume or image each), their checks, and the choice of labeled and validation cases."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from mtssl.files import atomic_write_json

__all__ = [
    "Case",
    "CaseData",
    "DataError",
    "Split",
    "check_case",
    "numeric_array",
    "read_json",
    "read_list",
    "select_split",
]


class DataError(ValueError):
    """A data set, file or case that cannot be used as it is."""


@dataclasses.dataclass(frozen=True)
class CaseData:
    """One loaded case: ``image`` ``(C, *S)`` float32, ``label`` ``(*S)`` uint8 or None, voxel ``spacing``.

    A case resampled to a target spacing and/or downsampled by an integer ``factor``
    (:mod:`mtssl.data.resample`) may keep its ``native_label``, against which it is then scored: the
    probabilities go back through ``factor`` to the target-spacing ``grid`` (its shape, when the case
    was resampled) and from there to the native label's shape, whose spacing is ``native_spacing``.
    """

    image: np.ndarray
    label: np.ndarray | None
    spacing: tuple[float, ...]
    native_label: np.ndarray | None = None
    factor: int = 1
    grid: tuple[int, ...] | None = None
    native_spacing: tuple[float, ...] | None = None


@dataclasses.dataclass(frozen=True)
class Case:
    """A case id and how to load it (the loader runs at most once when the data set preloads)."""

    id: str
    load: Callable[[], CaseData]


def numeric_array(array: Any, what: str, integer: bool = False) -> np.ndarray:
    """``array`` as a real numeric NumPy array, or a :class:`DataError` naming ``what`` and its dtype.

    With ``integer``, float values must be whole numbers (labels stored as floats are accepted) and
    lie in ``0..255``.
    """
    array = np.asarray(array)
    if array.dtype.kind not in "biuf":
        raise DataError(f"{what} has dtype {array.dtype}; expected real numbers (re-export it as float or int)")
    if integer and array.size:
        if array.dtype.kind == "f" and not np.array_equal(array, np.round(array)):
            raise DataError(f"{what} holds non-integer values; a label map needs whole class numbers")
        low, high = array.min(), array.max()
        if low < 0 or high > 255:
            raise DataError(f"{what} values span {low}..{high}; labels must lie in 0..255 (remap the classes)")
    return array


def check_case(case_id: str, image: np.ndarray, label: np.ndarray | None, num_classes: int, spatial_dims: int) -> None:
    """Fail with a message naming the case for bad shapes, NaN/Inf, or labels outside the classes.

    Args:
        case_id: used in messages.
        image: ``(C, *S)``.
        label: ``(*S)`` or None.
        num_classes: foreground classes; labels must lie in ``0..num_classes``.
        spatial_dims: 2 or 3.
    """
    if image.ndim != spatial_dims + 1:
        raise DataError(
            f"case {case_id}: image must have {spatial_dims} spatial dims (plus channels); got {image.shape}"
        )
    if min(image.shape[1:]) == 0:
        raise DataError(
            f"case {case_id}: the image is empty (shape {image.shape}); re-export the file or drop the case"
        )
    if not np.isfinite(image).all():
        bad = int((~np.isfinite(image)).sum())
        raise DataError(f"case {case_id}: image has {bad} NaN or Inf values; clean or re-export the file")
    if label is None:
        return
    if label.shape != image.shape[1:]:
        raise DataError(f"case {case_id}: image shape {image.shape[1:]} and label shape {label.shape} differ")
    top = int(label.max()) if label.size else 0
    if top > num_classes or (label.size and int(label.min()) < 0):
        values = np.unique(label)
        raise DataError(
            f"case {case_id}: label values {values[:10].tolist()} lie outside 0..{num_classes} "
            f"(num_classes={num_classes} foreground classes); set num_classes or remap the labels"
        )


def read_json(path: Path, what: str) -> Any:
    """A JSON file's value, or a :class:`DataError` naming ``what`` it is and why it does not parse."""
    if not path.is_file():
        raise DataError(f"{what} {path} not found")
    try:
        return json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{what} {path} is not valid JSON ({exc})") from None


def read_list(path: str | Path) -> list[str]:
    """Case ids, one per line (blank lines ignored)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"list file not found: {path}")
    ids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    twice = sorted({i for i in ids if ids.count(i) > 1})
    if twice:
        raise DataError(f"{path} names {', '.join(repr(i) for i in twice[:5])} more than once; list each case once")
    return ids


@dataclasses.dataclass(frozen=True)
class Split:
    """Which training cases are labeled, unlabeled and held out for validation, and how that was chosen."""

    labeled: tuple[str, ...]
    unlabeled: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]
    how: str

    def save(self, path: str | Path) -> None:
        """Write the split as JSON (atomically), e.g. beside a run."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, dataclasses.asdict(self))


def select_split(
    train_ids: Sequence[str],
    test_ids: Sequence[str],
    labeled: int | str | None,
    selection: Literal["first", "random"] = "first",
    val: float | str | None = None,
    seed: int = 1337,
) -> Split:
    """Choose the labeled, unlabeled and validation cases among ``train_ids``.

    Args:
        train_ids: the training pool, in the data set's order.
        test_ids: the test cases (recorded only).
        labeled: how many are labeled (the first N, or N seeded at random), a list file of ids,
            or None for all.
        selection: ``"first"`` (the literature's) or ``"random"`` (seeded) when ``labeled`` is a count.
        val: a seeded fraction of the labeled cases, or a list file, held out for model selection.
        seed: for the random choices.
    """
    pool = list(train_ids)
    rng = np.random.default_rng(seed)
    if labeled is None:
        chosen, how = list(pool), "all training cases labeled"
    elif isinstance(labeled, str):
        chosen = read_list(labeled)
        missing = [c for c in chosen if c not in pool]
        if missing:
            raise DataError(f"labeled list {labeled} names cases not in the training set: {missing[:5]}")
        how = f"labeled cases from {labeled}"
    else:
        if labeled > len(pool):
            raise DataError(f"labeled={labeled} but the training set has only {len(pool)} cases")
        if selection == "first":
            chosen, how = pool[:labeled], f"first {labeled} training cases labeled"
        else:
            chosen = [pool[i] for i in sorted(rng.choice(len(pool), labeled, replace=False))]
            how = f"{labeled} training cases labeled, chosen at random with seed {seed}"
    if val is None:
        held = []
    elif isinstance(val, str):
        held = read_list(val)
        how += f"; validation cases from {val}"
    else:
        count = round(val * len(chosen))
        held = [chosen[i] for i in sorted(rng.choice(len(chosen), count, replace=False))]
        how += f"; {count} labeled cases held out for validation (fraction {val}, seed {seed})"
    labeled_ids = [c for c in chosen if c not in held]
    if not labeled_ids:
        raise DataError(f"the labeled set is empty ({how}); label at least one training case")
    unlabeled = [c for c in pool if c not in chosen and c not in held]
    return Split(tuple(labeled_ids), tuple(unlabeled), tuple(held), tuple(test_ids), how)
