"""``SegmentationData``: what every data set entry returns, and the two-stream loader over it."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from mtssl.data.augment import Augment
from mtssl.data.cases import Case, CaseData, DataError, Split, check_case
from mtssl.data.sampler import TwoStreamBatchSampler

__all__ = ["CaseStore", "SegmentationData", "TrainSet", "VolumeSet", "collate"]


class CaseStore:
    """Loads cases and checks each once; ``preload`` keeps them all in memory from the start."""

    def __init__(
        self,
        cases: Sequence[Case],
        num_classes: int,
        spatial_dims: int,
        preload: bool,
        stacks: Sequence[str] = (),
    ) -> None:
        self.cases = {c.id: c for c in cases}
        self.stacks = set(stacks)  # cases that are stacks of 2D slices (C, D, H, W), tested slice by slice
        if len(self.cases) != len(cases):
            seen: set[str] = set()
            twice = sorted({c.id for c in cases if c.id in seen or seen.add(c.id)})
            raise DataError(
                f"case ids must be unique, but {', '.join(repr(i) for i in twice[:5])} appear(s) more than once "
                "(a list file naming a case twice, or a case both in training and test); remove the duplicate"
            )
        self.num_classes, self.spatial_dims, self.preload = num_classes, spatial_dims, preload
        self._memory: dict[str, CaseData] = {}
        if preload:
            for case in cases:
                self._memory[case.id] = self._load(case)

    def _load(self, case: Case) -> CaseData:
        data = case.load()
        image = np.asarray(data.image, dtype=np.float32)
        label = None if data.label is None else np.asarray(data.label, dtype=np.uint8)
        dims = self.spatial_dims + (case.id in self.stacks)
        check_case(case.id, image, label, self.num_classes, dims)
        return dataclasses.replace(data, image=image, label=label, spacing=tuple(float(s) for s in data.spacing))

    def __getitem__(self, case_id: str) -> CaseData:
        if case_id in self._memory:
            return self._memory[case_id]
        return self._load(self.cases[case_id])

    def check_all(self, in_channels: int, patch: Sequence[int] | None = None) -> int:
        """Load and check every case (shape, dtype, NaN/Inf, label values, channels), one at a time,
        and that ``patch`` fits in at least one of them along each axis.

        Nothing is kept beyond what ``preload`` keeps anyway. Returns how many cases were checked.
        """
        largest = None
        for case in self.cases.values():
            data = self[case.id]
            if data.image.shape[0] != in_channels:
                raise DataError(
                    f"case {case.id}: {data.image.shape[0]} image channels where the other cases have {in_channels}; "
                    "every case needs the same channels"
                )
            if case.id in self.stacks:  # tested slice by slice; the patch applies to its slices
                continue
            size = data.image.shape[1:]
            largest = size if largest is None else tuple(max(a, b) for a, b in zip(largest, size))
        if patch is not None and largest is not None and any(p > n for p, n in zip(patch, largest)):
            raise DataError(
                f"data.patch {tuple(patch)} is larger than every volume (the largest extent per axis is "
                f"{tuple(largest)}); choose a patch that fits the data"
            )
        return len(self.cases)


class TrainSet(Dataset):
    """Augmented training patches; index with ``(index, seed)`` pairs from :class:`TwoStreamBatchSampler`.

    Unlabeled samples carry an all-zero label and ``labeled=False``: their labels never reach a loss.
    """

    def __init__(self, store: CaseStore, ids: Sequence[str], n_labeled: int, augment: Augment) -> None:
        self.store, self.ids, self.n_labeled, self.augment = store, list(ids), n_labeled, augment

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, Any]:
        index, seed = item if isinstance(item, tuple) else (item, item)
        case_id = self.ids[index]
        data = self.store[case_id]
        labeled = index < self.n_labeled
        label = data.label if labeled and data.label is not None else np.zeros(data.image.shape[1:], np.uint8)
        image, label = self.augment(data.image, label, np.random.default_rng(seed), labeled, case_id)
        return {
            "image": torch.from_numpy(image),
            "label": torch.from_numpy(label.astype(np.int64)),
            "labeled": labeled,
            "spacing": torch.tensor(data.spacing, dtype=torch.float64),
            "case": case_id,
        }


class VolumeSet(Sequence):
    """Whole cases for validation or testing: ``image`` ``(C, *S)``, ``label`` ``(*S)``, ``spacing``, ``case``."""

    def __init__(self, store: CaseStore, ids: Sequence[str]) -> None:
        self.store, self.ids = store, list(ids)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, Any]:  # type: ignore[override]
        data = self.store[self.ids[index]]
        label = None if data.label is None else torch.from_numpy(data.label.astype(np.int64))
        item = {
            "image": torch.from_numpy(data.image),
            "label": label,
            "spacing": torch.tensor(data.spacing, dtype=torch.float64),
            "case": self.ids[index],
        }
        if data.native_label is not None:  # scored at the native resolution (mtssl.data.resample)
            item["native_label"] = torch.from_numpy(data.native_label.astype(np.int64))
            item["factor"] = data.factor
            item["native_spacing"] = torch.tensor(data.native_spacing or data.spacing, dtype=torch.float64)
            if data.grid is not None:
                item["grid"] = data.grid
        return item


def collate(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack samples into DESIGN.md's batch: image, label, labeled, spacing, case."""
    return {
        "image": torch.stack([s["image"] for s in samples]),
        "label": torch.stack([s["label"] for s in samples]),
        "labeled": torch.tensor([s["labeled"] for s in samples], dtype=torch.bool),
        "spacing": torch.stack([s["spacing"] for s in samples]),
        "case": [s["case"] for s in samples],
    }


class SegmentationData:
    """A data set ready to train and test on.

    Attributes:
        train: augmented patches; labeled cases first (``split.labeled``), then ``split.unlabeled``.
        val: whole labeled cases held out for model selection (may be empty).
        test: whole test cases.
        split: which cases are labeled, unlabeled, validation and test, and how that was chosen.
        num_classes: foreground classes; labels lie in ``0..num_classes``.
        spatial_dims, in_channels, patch: as the names say.
        preprocessing: how raw inputs were normalised (``{"normalization": "none" | "zscore" | ...}``),
            saved in checkpoints so that inference can repeat it.
        physical_spacing: whether ``spacing`` is physical (mm), so distances are reported in mm.
        stacked: whether the validation and test cases are stacks of 2D slices ``(C, D, H, W)`` for a
            2D network trained on slices (ACDC): each is predicted slice by slice and scored as a volume.
        slice_size: with ``stacked``, the size each slice is zoomed to before the network and its
            probabilities zoomed back from (nearest neighbour, SSL4MIS's test); None: slid over at its
            own size.
        class_names: one name per foreground class (``dataset.json``'s), shown in tables and
            ``metrics.json``; ``"1"``, ``"2"``, ... by default.
    """

    def __init__(
        self,
        train_cases: Sequence[Case],
        test_cases: Sequence[Case],
        split: Split,
        num_classes: int,
        spatial_dims: int,
        patch: Sequence[int],
        augment: Sequence[str | dict[str, Any]],
        fg_crop_prob: float = 0.0,
        preload: bool = True,
        preprocessing: dict[str, Any] | None = None,
        physical_spacing: bool = False,
        class_names: Sequence[str] | None = None,
        stacked: bool = False,
        slice_size: Sequence[int] | None = None,
    ) -> None:
        if len(patch) != spatial_dims:
            raise DataError(f"patch {tuple(patch)} must have {spatial_dims} sizes")
        by_id = {c.id: c for c in train_cases}
        wanted = [*split.labeled, *split.unlabeled, *split.val]
        if stacked and spatial_dims != 2:
            raise DataError(
                f"stacked validation and test cases are for a 2D network (spatial_dims 2), not {spatial_dims}"
            )
        stacks = [*split.val, *(c.id for c in test_cases)] if stacked else []
        self.stacked = stacked
        self.slice_size = tuple(slice_size) if slice_size is not None else None
        self.store = CaseStore(
            [by_id[i] for i in wanted] + list(test_cases), num_classes, spatial_dims, preload, stacks
        )
        self.split = split
        self.preprocessing = dict(preprocessing or {"normalization": "none"})
        self.physical_spacing = physical_spacing
        self.num_classes, self.spatial_dims, self.patch = num_classes, spatial_dims, tuple(patch)
        self.class_names = tuple(class_names or (str(c) for c in range(1, num_classes + 1)))
        if len(self.class_names) != num_classes:
            raise DataError(f"{len(self.class_names)} class names {self.class_names} for {num_classes} classes")
        pipeline = Augment(augment, patch, fg_crop_prob)
        self.crops = pipeline.crops
        self.mirror_axes = pipeline.mirror_axes  # where test-time mirroring is in the training distribution
        self.train = TrainSet(self.store, [*split.labeled, *split.unlabeled], len(split.labeled), pipeline)
        self.val = VolumeSet(self.store, split.val)
        self.test = VolumeSet(self.store, [c.id for c in test_cases])
        first = self.store[wanted[0]]
        self.in_channels = first.image.shape[0]

    def check(self) -> int:
        """Check every case before a run: a bad one fails in seconds, not mid-run or after training.

        Returns how many cases were checked (see :meth:`CaseStore.check_all`).
        """
        return self.store.check_all(self.in_channels, self.patch if self.crops else None)

    @property
    def labeled_indices(self) -> list[int]:
        return list(range(len(self.split.labeled)))

    @property
    def unlabeled_indices(self) -> list[int]:
        return list(range(len(self.split.labeled), len(self.train)))

    def sampler(
        self, batch_size: int = 4, labeled_bs: int = 2, seed: int = 1337, rank: int = 0, world_size: int = 1
    ) -> TwoStreamBatchSampler:
        """The two-stream batch sampler over :attr:`train` (this rank's share under DDP)."""
        return TwoStreamBatchSampler(
            self.labeled_indices, self.unlabeled_indices, batch_size, labeled_bs, seed, rank, world_size
        )

    def loader(
        self,
        batch_size: int = 4,
        labeled_bs: int = 2,
        num_workers: int = 0,
        seed: int = 1337,
        pin_memory: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> DataLoader:
        """A DataLoader of two-stream batches (one epoch per iteration; see :class:`TwoStreamBatchSampler`).

        It has its own torch generator, so creating an iterator never draws from the global RNG
        (which drives dropout): a resumed run stays bit-identical.
        """
        return DataLoader(
            self.train,
            batch_sampler=self.sampler(batch_size, labeled_bs, seed, rank, world_size),
            collate_fn=collate,
            num_workers=num_workers,
            pin_memory=pin_memory,
            generator=torch.Generator().manual_seed(seed),
        )
