"""Two-stream batches: labeled samples first, then unlabeled ones, as UA-MT's ``TwoStreamBatchSampler``.

Each epoch re-permutes the labeled indices; the unlabeled ones are drawn from a chain of fresh
permutations (cycled). Every sample also gets its own augmentation seed, derived from the
sampler's seed, the epoch and the sample's place, so batches are identical for any number of
workers.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

from mtssl.data.cases import DataError

__all__ = ["TwoStreamBatchSampler"]


class TwoStreamBatchSampler(Sampler[list[tuple[int, int]]]):
    """Yields batches of ``(index, seed)``: ``labeled_bs`` labeled, then ``batch_size - labeled_bs`` unlabeled.

    One epoch is ``len(labeled) // labeled_bs`` batches. ``set_epoch`` (or each new iteration)
    changes the permutations; the state is the epoch alone, so a resumed run continues exactly.

    Args:
        labeled: indices of labeled samples.
        unlabeled: indices of unlabeled samples (may be empty when ``labeled_bs == batch_size``).
        batch_size: samples per batch.
        labeled_bs: labeled samples per batch.
        seed: base seed.
    """

    def __init__(
        self, labeled: Sequence[int], unlabeled: Sequence[int], batch_size: int, labeled_bs: int, seed: int = 1337
    ) -> None:
        if not 0 < labeled_bs <= batch_size:
            raise DataError(f"labeled_bs must be in 1..batch_size={batch_size}, got {labeled_bs}")
        if len(labeled) < labeled_bs:
            raise DataError(f"{len(labeled)} labeled samples cannot fill labeled_bs={labeled_bs} per batch")
        if batch_size > labeled_bs and not unlabeled:
            raise DataError(
                f"batch_size={batch_size} asks for {batch_size - labeled_bs} unlabeled samples per batch, but there "
                "are none; set labeled_bs = batch_size for supervised training"
            )
        self.labeled, self.unlabeled = list(labeled), list(unlabeled)
        self.batch_size, self.labeled_bs, self.seed = batch_size, labeled_bs, seed
        self.epoch, self.start = 0, 0

    def __len__(self) -> int:
        return len(self.labeled) // self.labeled_bs

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Choose the epoch the next iteration uses, and the batch it starts at (to resume mid-epoch)."""
        self.epoch, self.start = epoch, start

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        labeled = [self.labeled[i] for i in rng.permutation(len(self.labeled))]
        unlabeled = self._cycle(rng)
        n_unlabeled = self.batch_size - self.labeled_bs
        seeds = np.random.SeedSequence([self.seed, self.epoch, 1])
        start, self.start = self.start, 0
        self.epoch += 1
        for b in range(len(self)):
            indices = labeled[b * self.labeled_bs : (b + 1) * self.labeled_bs]
            indices += [next(unlabeled) for _ in range(n_unlabeled)]
            sample_seeds = seeds.spawn(len(indices))
            if b >= start:  # batches before a resume point are drawn, not yielded, so the streams stay aligned
                yield [(i, int(s.generate_state(1)[0])) for i, s in zip(indices, sample_seeds)]

    def _cycle(self, rng: np.random.Generator) -> Iterator[int]:
        while self.unlabeled:
            for i in rng.permutation(len(self.unlabeled)):
                yield self.unlabeled[i]
