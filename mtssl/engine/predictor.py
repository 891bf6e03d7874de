"""``mtssl.load(checkpoint)``: a predictor for arrays and files that needs nothing but the checkpoint."""

from __future__ import annotations

import itertools
import re
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtssl.data.cases import DataError, numeric_array
from mtssl.data.normalize import normalize_image
from mtssl.data.resample import downsample_image, resampled_shape, resize, to_native
from mtssl.engine.checkpoint import CheckpointError, check_state_fits, load_checkpoint, load_state_checked
from mtssl.engine.evaluator import window_predictor
from mtssl.engine.protocol import largest_component, probabilities_to_labels
from mtssl.engine.sliding_window import slice_by_slice, sliding_window
from mtssl.engine.spec import InferenceSpec
from mtssl.model import MultiTaskModel

__all__ = ["Predictor", "case_name", "load", "output_files", "plan_outputs", "read_input", "write_prediction"]


def read_input(path: str | Path) -> tuple[np.ndarray, dict[str, Any]]:
    """A raw image from NIfTI, h5 (``image``), PNG/TIFF or ``.npy``, and what is needed to write it back."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no such input file: {path}")
    name = path.name.lower()
    if name.endswith((".png", ".tif", ".tiff")):
        from mtssl.data.images2d import read_image

        return read_image(path), {"format": "image", "suffix": path.suffix}  # dtype kept: it sets the scaling
    if not name.endswith((".nii", ".nii.gz", ".h5", ".hdf5", ".npy")):
        raise DataError(f"cannot read {path}: use NIfTI (.nii, .nii.gz), h5 (an 'image' dataset), PNG/TIFF or .npy")
    try:
        if name.endswith((".h5", ".hdf5")):
            import h5py

            with h5py.File(path, "r") as f:
                data, meta = f["image"][()], {"format": "h5"}
        elif name.endswith(".npy"):
            data, meta = np.load(path), {"format": "npy"}
        else:
            import nibabel as nib

            img = nib.load(str(path))
            data, meta = np.asarray(img.dataobj), {"format": "nifti", "affine": img.affine, "header": img.header}
    except Exception as exc:  # h5py, numpy and nibabel raise several types for damaged files
        raise DataError(f"{path} is not readable: {exc}") from exc
    return numeric_array(data, str(path)).astype(np.float32), meta


class Predictor:
    """Predicts probabilities and labels of whole images with the checkpoint's own inference spec.

    Call it with an array (spatial dims only, or channels first) or a file path; it returns
    ``(probabilities (K, *S) float32, labels (*S) uint8)`` as numpy arrays. With ``tta`` the
    probabilities are averaged over the image mirrored along every subset of the axes its training
    augmentation mirrored (``spec.mirror_axes``: axes 0 and 1 under ``rot90``/``flip``, 4 passes),
    each mirrored back first: nnU-Net's test-time augmentation, which also mirrors only the axes it
    trained on.

    A 2D model given a volume (a 3D array, or a 4D one with its channels first or last; never a PNG or
    TIFF) predicts it slice by slice, as the evaluator tests ACDC's volumes: along the volume's coarsest
    axis where its spacing says which (a NIfTI's through-plane axis), else along axis 0 (how h5 and
    ``.npy`` stacks such as SSL4MIS's ACDC hold their slices). The volume is normalised whole, as a data
    set of volumes normalises its cases, and test-time mirroring flips the in-plane axes only.
    """

    def __init__(self, model: MultiTaskModel, spec: InferenceSpec, device: torch.device, tta: bool = False) -> None:
        self.model, self.spec, self.device, self.tta = model.eval(), spec, device, tta
        if tta and spec.mirror_axes == ():
            warnings.warn(
                "the model was trained without mirroring (no rot90 or flip in data.augment), so test-time "
                "mirroring has no axis to flip: each image is predicted once",
                stacklevel=2,
            )
        # the evaluator's window prediction: the tested output's probabilities, as in training-time tests
        self._predict = window_predictor(model, spec.output, device)

    def normalize(self, image: np.ndarray) -> np.ndarray:
        """Raw ``(C, *S)`` image to the network's input, as the training data were prepared."""
        return normalize_image(image, self.spec.normalization, self.spec.ct_window)

    def _channels_first(self, image: np.ndarray, what: str = "the image", nd: int | None = None) -> np.ndarray:
        nd, channels = nd or self.spec.spatial_dims, self.spec.in_channels
        if image.ndim == nd:
            image = image[None]
        elif image.ndim == nd + 1 and image.shape[-1] == channels and image.shape[0] != channels:
            image = np.moveaxis(image, -1, 0)  # (H, W, C) images and (X, Y, Z, C) NIfTI
        if image.ndim != nd + 1 or image.shape[0] != channels:
            volumes = " (or volumes of them, slice by slice)" if nd != self.spec.spatial_dims else ""
            raise DataError(
                f"{what} has shape {tuple(image.shape)}, but the model takes {self.spec.spatial_dims}D images "
                f"with {channels} channel(s){volumes}: "
                f"give a {nd}D {'volume' if nd == 3 else 'image'} "
                f"({'spatial dims only, or ' if channels == 1 else ''}channels first or last)"
            )
        if not np.isfinite(image).all():
            bad = int((~np.isfinite(image)).sum())
            raise DataError(
                f"{what} has {bad} NaN or Inf values; a prediction would spread them (training refuses such "
                "data too): clean or re-export the image"
            )
        if min(image.shape[1:]) == 0:
            raise DataError(f"{what} is empty (shape {tuple(image.shape)})")
        return image

    @torch.no_grad()
    def __call__(
        self,
        x: np.ndarray | torch.Tensor | str | Path,
        *,
        source: str | None = None,
        spacing: tuple[float, ...] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Predict ``x``; ``source`` names it in error messages (a path given as ``x`` names itself).

        ``spacing`` is the image's voxel spacing (a NIfTI path's is read from its header): a model
        trained on resampled cases (``spec.spacing``) needs it, to resample the image as its training
        data were and its probabilities back to the image's own grid.
        """
        what, picture = source or "the image", False
        if isinstance(x, (str, Path)):
            what = str(x)
            x, meta = read_input(x)
            spacing, picture = spacing or input_spacing(meta), meta["format"] == "image"
        image = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        spec = self.spec
        channels = spec.in_channels
        if spec.spatial_dims == 2 and not picture and (image.ndim == 4 or (image.ndim == 3 and channels == 1)):
            return self._volume(image, what, spacing)
        # the raw dtype goes to the normalisation: "unit" divides an integer image by its dtype's maximum
        image = self.normalize(self._channels_first(image, what))
        tensor = torch.from_numpy(np.ascontiguousarray(image)).to(self.device)
        grid = self._grid(tuple(tensor.shape[1:]), spacing, what)
        probs = self._mirrored(lambda t: self._probabilities(t, grid), tensor, first_axis=1)
        return self._labels(probs)

    def _mirrored(self, predict: Any, tensor: torch.Tensor, first_axis: int) -> torch.Tensor:
        """``predict(tensor)``, or with ``tta`` its mean over the mirrored copies (each mirrored back);
        the model's spatial axes start at ``first_axis`` of ``tensor``."""
        axes = self.spec.mirror_axes if self.spec.mirror_axes is not None else range(self.spec.spatial_dims)
        spatial = [a + first_axis for a in axes]
        mirrors = [a for r in range(len(spatial) + 1) for a in itertools.combinations(spatial, r)] if self.tta else [()]
        return sum(predict(tensor.flip(axes)).flip(axes) for axes in mirrors) / len(mirrors)

    def _volume(self, image: np.ndarray, what: str, spacing: tuple[float, ...] | None) -> tuple[np.ndarray, np.ndarray]:
        """A 2D model's prediction of a volume, slice by slice (the class doc)."""
        spec = self.spec
        image = self.normalize(self._channels_first(image, what, nd=3))
        sides = tuple(spacing)[:3] if spacing is not None and len(spacing) >= 3 else None
        axis = int(np.argmax(sides)) if sides is not None and max(sides) > min(sides) else 0
        # (C, D, H, W): the slices along axis 1, as slice_by_slice and the evaluator take them
        stack = torch.from_numpy(np.ascontiguousarray(np.moveaxis(image, 1 + axis, 1))).to(self.device)
        in_plane = tuple(s for i, s in enumerate(sides) if i != axis) if sides is not None else None
        grid = self._grid(tuple(stack.shape[2:]), in_plane, what)

        def predict(volume: torch.Tensor) -> torch.Tensor:
            if spec.slice_size is not None or (grid is None and spec.downsample == 1):
                return slice_by_slice(self._predict, volume, spec.patch, spec.stride, size=spec.slice_size)
            return torch.stack([self._probabilities(volume[:, d], grid) for d in range(volume.shape[1])], dim=1)

        probs = self._mirrored(predict, stack, first_axis=2).movedim(1, 1 + axis)
        return self._labels(probs)

    def _labels(self, probs: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities and labels as numpy arrays (the largest component per class where the spec says)."""
        spec = self.spec
        labels = probabilities_to_labels(probs, spec.softmax, spec.threshold).cpu().numpy()
        if spec.lcc:
            labels = largest_component(labels, spec.num_classes)
        return probs.cpu().numpy(), labels.astype(np.uint8)

    def _grid(self, shape: tuple[int, ...], spacing: tuple[float, ...] | None, what: str) -> tuple[int, ...] | None:
        """The shape of the image on the model's target-spacing grid (None when the model kept each
        image's own spacing, or the image is at the target already)."""
        target = self.spec.spacing
        if target is None:
            return None
        if spacing is None:
            raise DataError(
                f"{what}: this model was trained on cases resampled to spacing {list(target)} mm, and the image's "
                "own spacing is unknown: give it as NIfTI (its header has it) or pass spacing=(...) to the predictor"
            )
        spacing = tuple(spacing)[: len(target)]  # a 4D NIfTI's header also lists its channel axis
        if len(spacing) != len(target):
            raise DataError(f"{what}: spacing {list(spacing)} has {len(spacing)} sides; the model's has {len(target)}")
        grid = resampled_shape(shape, tuple(spacing), target)
        return None if grid == shape else grid

    def _probabilities(self, tensor: torch.Tensor, grid: tuple[int, ...] | None = None) -> torch.Tensor:
        """``(C, *S)`` normalised image to ``(K, *S)`` probabilities: resampled to the model's ``grid``
        (when given) and shrunk by ``spec.downsample``, as in training; sliding windows; and back."""
        spec = self.spec
        small = downsample_image(resize(tensor, grid) if grid is not None else tensor, spec.downsample)
        probs = sliding_window(self._predict, small, spec.patch, spec.stride)
        return to_native(probs, tuple(tensor.shape[1:]), spec.downsample, grid)


def load(checkpoint: str | Path, device: str | torch.device | None = None, tta: bool = False) -> Predictor:
    """A :class:`Predictor` from a checkpoint file or a run folder (never imports the training loop);
    ``tta`` averages over mirrored copies (:class:`Predictor`)."""
    from mtssl.config import build_dataclass
    from mtssl.engine.build import RunConfig, build_recipe, build_run_model
    from mtssl.engine.distributed import pick_device
    from mtssl.engine.evaluator import resolve_checkpoint

    path = resolve_checkpoint(checkpoint)
    state = load_checkpoint(path)
    try:
        spec = InferenceSpec.from_checkpoint(state)
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    if not isinstance(state.get("config"), dict):
        raise CheckpointError(
            f"{path} holds no run config (its run was built from Python objects): build your model, "
            "load_state_checked(model, state['model'], ...) and wrap it as Predictor(model, spec, device)"
        )
    cfg = build_dataclass(RunConfig, state["config"])
    recipe = build_recipe(cfg)
    sizes = (spec.in_channels, spec.spatial_dims, spec.num_classes)
    # The shapes first, on the meta device (no memory): a checkpoint whose config asks for a far larger
    # model than its weights (n_filters: 256 beside a 4-filter state) is refused before anything is allocated.
    with torch.device("meta"):
        check_state_fits(build_run_model(cfg, recipe, *sizes), state["model"], str(path))
    model = build_run_model(cfg, recipe, *sizes)
    load_state_checked(model, state["model"], str(path))
    dev = pick_device(str(device)) if device is not None else pick_device("auto")
    return Predictor(model.to(dev), spec, dev, tta)


def output_format(path: Path) -> str:
    """The format a prediction of ``path`` is written in (that of the input): nifti, h5, image or npy."""
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return "nifti"
    if name.endswith((".h5", ".hdf5")):
        return "h5"
    if name.endswith((".png", ".tif", ".tiff")):
        return "image"
    return "npy"


def output_files(path: Path, name: str, with_probs: bool) -> dict[str, str]:
    """The files a prediction of the input ``path`` writes: the labels under the case's own name
    (``<name>.nii.gz``, as nnU-Net names its predictions, so that they pair with the label files), and
    with ``with_probs`` ``<name>_prob`` and ``<name>_prob.json``:
    ``{"labels": file, "probabilities": file, "channels": file}``."""
    fmt = output_format(path)
    labels = {"nifti": ".nii.gz", "h5": ".h5", "image": ".png", "npy": ".npy"}[fmt]
    files = {"labels": f"{name}{labels}"}
    if with_probs:
        files["probabilities"] = {"nifti": f"{name}_prob.nii.gz", "h5": files["labels"]}.get(fmt, f"{name}_prob.npy")
        files["channels"] = f"{name}_prob.json"
    return files


READABLE = (".nii.gz", ".nii", ".h5", ".hdf5", ".npy", ".png", ".tif", ".tiff")
CHANNEL_FILE = re.compile(r"(?P<case>.+)_(?P<channel>\d{4})(?P<ending>\.nii\.gz|\.nii|\.png|\.tiff?|\.bmp)")


def gather_inputs(items: Sequence[str | Path]) -> list[tuple[str | None, list[Path]]]:
    """Expand the inputs of ``mtssl predict`` into cases: ``(name, files)``, one file a case, except in a
    folder of nnU-Net channel files (``<case>_0000.nii.gz``, ``<case>_0001.nii.gz``, ...), whose files
    are grouped into one multi-channel case named ``<case>``. ``name`` is ``None`` where the file's
    own name serves (:func:`plan_outputs` makes those unique)."""
    cases: list[tuple[str | None, list[Path]]] = []
    for item in map(Path, items):
        if not item.is_dir():
            cases.append((None, [item]))
            continue
        files = sorted(p for p in item.iterdir() if p.is_file() and p.name.lower().endswith(READABLE))
        if not files:
            raise DataError(f"{item} holds no image files ({', '.join(READABLE)})")
        matches = [CHANNEL_FILE.fullmatch(p.name) for p in files]
        if all(matches):
            groups: dict[str, list[Path]] = {}
            for m, path in zip(matches, files):
                assert m is not None
                groups.setdefault(m["case"], []).append(path)
            cases += [(case, paths) for case, paths in groups.items()]
        else:
            cases += [(None, [p]) for p in files]
    return cases


def input_spacing(meta: Mapping[str, Any]) -> tuple[float, ...] | None:
    """The voxel spacing of an input read by :func:`read_input` (its NIfTI header's), or None."""
    header = meta.get("header")
    if header is None:
        return None
    zooms = header.get_zooms()
    return tuple(float(z) for z in zooms[:3])


def read_case_files(files: Sequence[Path]) -> tuple[np.ndarray, dict[str, Any]]:
    """One case's image from its file (or, for nnU-Net channel files, the channels stacked first) and
    the first file's metadata, to write the prediction back like it."""
    arrays, metas = zip(*(read_input(p) for p in files))
    if len(arrays) == 1:
        return arrays[0], metas[0]
    if any(a.shape != arrays[0].shape for a in arrays):
        raise DataError(f"the channel files {[p.name for p in files]} differ in shape {[a.shape for a in arrays]}")
    return np.stack(arrays), metas[0]


def case_name(path: Path) -> str:
    """An input's case name: its file name without the format's suffix (``case.nii.gz`` -> ``case``)."""
    name = path.name
    return name[: -len(".nii.gz")] if name.lower().endswith(".nii.gz") else Path(name).stem


def plan_outputs(
    inputs: Sequence[Path], out: Path, with_probs: bool, overwrite: bool = False, names: Sequence[str | None] = ()
) -> list[str]:
    """The output name of each input (or the given ``names``, where not ``None``), checked before anything
    is written.

    Inputs whose case names collide (LA's ``<ID>/mri_norm2.h5``) are named after their folders as well
    (``<ID>_mri_norm2``). Refused, naming the files: two inputs that would still write the same file
    (``case.nii`` and ``case.nii.gz``), an output that is one of the inputs, and an existing file
    (unless ``overwrite``): a prediction never replaces a file it did not just write.
    """
    given = list(names) or [None] * len(inputs)
    fixed = [n is not None for n in given]
    names = [n if n is not None else case_name(p) for n, p in zip(given, inputs)]
    original = list(names)
    # Colliding names from different folders take their folders' names; inputs of one folder that still
    # collide (case.nii beside case.nii.gz) keep theirs, and are refused below.
    folders: dict[str, set[Path]] = {}
    for p, n in zip(inputs, names):
        folders.setdefault(n, set()).add(p.resolve().parent)
    resolvable = {n for n, where in folders.items() if len(where) == names.count(n) > 1}
    for depth in range(1, 4):
        counts = Counter(names)
        if all(counts[n] == 1 for n in names):
            break
        names = [
            "_".join([*p.resolve().parts[-1 - depth : -1], case_name(p)])
            if counts[n] > 1 and not f and o in resolvable
            else n
            for p, n, f, o in zip(inputs, names, fixed, original)
        ]
    targets: dict[Path, Path] = {}
    sources = {p.resolve() for p in inputs}
    existing = []
    for path, name in zip(inputs, names):
        for file in output_files(path, name, with_probs).values():
            target = (out / file).resolve()
            if target in targets and targets[target] != path:
                raise DataError(
                    f"{targets[target]} and {path} would both be written to {out / file}; "
                    "predict them into different --out folders, or rename one"
                )
            targets[target] = path
            if target in sources:
                raise DataError(
                    f"the prediction of {path} would be written over the input {target}; give another --out"
                )
            if target.exists() and not overwrite:
                existing.append(str(out / file))
    if existing:
        shown = ", ".join(existing[:3]) + (f" and {len(existing) - 3} more" if len(existing) > 3 else "")
        raise DataError(f"{shown} exist already; give another --out, or --overwrite to replace them")
    return names


def _image_values(labels: Any, class_values: bool, label_values: Sequence[int] | None) -> Any:
    """The uint8 values of a label map written as an image (:func:`write_prediction`)."""
    if label_values is not None and not class_values:
        return np.asarray(label_values, dtype=np.uint8)[labels]
    scale = 255 // max(int(labels.max()), 1) if labels.max() <= 1 and not class_values else 1
    return (labels * scale).astype(np.uint8)


def write_prediction(
    path: Path,
    labels: Any,
    probs: Any,
    meta: Mapping[str, Any],
    out: Path,
    with_probs: bool,
    channels: Mapping[str, Any] | None = None,
    name: str | None = None,
    class_values: bool = False,
    label_values: Sequence[int] | None = None,
) -> Path:
    """Write a prediction of the input ``path`` into ``out`` in the input's format (:func:`output_files`:
    ``<name>`` with the labels, NIfTI keeping the input's header; with ``with_probs`` also
    ``<name>_prob`` and ``<name>_prob.json`` naming the probability channels, ``channels``:
    :meth:`InferenceSpec.channels`). ``name`` defaults to the input's case name (:func:`plan_outputs`
    chooses unique ones). A PNG holds ``label_values[c]`` for class ``c`` where the data set's masks
    have their own values (:attr:`InferenceSpec.label_values`: ISBI's membrane is 0 on 255); else the
    class numbers with ``class_values`` (nnU-Net's 2D labels), or a binary foreground as 255."""
    import json

    out.mkdir(parents=True, exist_ok=True)
    files = output_files(path, name or case_name(path), with_probs)
    target = out / files["labels"]
    if with_probs and channels is not None:  # beside every probability file, whatever its format
        (out / files["channels"]).write_text(json.dumps(dict(channels), indent=1))
    fmt = output_format(path)
    if fmt == "nifti":
        import nibabel as nib

        def like_input(array: Any, dtype: Any) -> Any:
            # The input's header (qform/sform codes, units, description), not only its affine.
            header = meta["header"].copy()
            header.set_data_dtype(dtype)
            return nib.Nifti1Image(np.asarray(array, dtype=dtype), meta["affine"], header=header)

        nib.save(like_input(labels, np.uint8), target)
        if with_probs:
            prob = like_input(np.moveaxis(probs, 0, -1), np.float32)
            if channels is not None:  # the 4th axis, in the header's 80-character description
                prob.header["descrip"] = ("channels: " + ", ".join(channels["channels"]))[:79].encode()
            nib.save(prob, out / files["probabilities"])
    elif fmt == "h5":
        import h5py

        with h5py.File(target, "w") as f:
            f.create_dataset("label", data=labels, compression="gzip")
            if with_probs:
                dataset = f.create_dataset("probability", data=probs, compression="gzip")
                for key, value in (channels or {}).items():
                    dataset.attrs[key] = value
    elif fmt == "image":
        from PIL import Image

        Image.fromarray(_image_values(labels, class_values, label_values)).save(target)
        if with_probs:
            np.save(out / files["probabilities"], probs)
    else:
        np.save(target, labels)
        if with_probs:
            np.save(out / files["probabilities"], probs)
    return target
