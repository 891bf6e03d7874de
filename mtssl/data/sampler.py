"""Two-stream batches: labeled samples first, then unlabeled ones, as UA-MT's ``TwoStreamBatchSampler``.

Each epoch re-permutes the labeled indices; the unlabeled ones are drawn from a chain of fresh
permutations (cycled). Every sample also gets its own augmentation seed, derived from the
sampler's seed, the epoch and the sample's place, so batches are identical for any number of
workers.

Under DDP every rank draws the same permutations and takes its own slice of each *global* batch
(``world_size`` times the per-rank batch), so the ranks see disjoint samples within an epoch, and
the union of the ranks' batches is exactly the one-process batch of ``world_size * batch_size``
samples (labeled first), with the same augmentation seeds.

Fewer labeled samples than ``world_size * labeled_bs``: every rank still gets ``labeled_bs``
labeled samples per step. The labeled stream then continues into fresh permutations like the
unlabeled one, an epoch is one step, and a labeled sample can appear on two ranks in the same step
(a warning says so).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

from mtssl.data.cases import DataError

__all__ = ["TwoStreamBatchSampler"]

log = logging.getLogger(__name__)


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
        rank: this process's slice of each global batch (DDP); 0 alone.
        world_size: the number of slices (DDP ranks); 1 alone.
    """

    def __init__(
        self,
        labeled: Sequence[int],
        unlabeled: Sequence[int],
        batch_size: int,
        labeled_bs: int,
        seed: int = 1337,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if not 0 <= rank < world_size:
            raise DataError(f"rank {rank} is not in 0..world_size-1={world_size - 1}")
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
        self.rank, self.world_size = rank, world_size
        if len(self.labeled) < world_size * labeled_bs:
            log.warning(
                "%d labeled samples < %d ranks x labeled_bs=%d: a labeled sample can appear on two ranks in a step",
                len(self.labeled),
                world_size,
                labeled_bs,
            )

    def __len__(self) -> int:
        return max(len(self.labeled) // (self.world_size * self.labeled_bs), 1)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Choose the epoch the next iteration uses, and the batch it starts at (to resume mid-epoch)."""
        self.epoch, self.start = epoch, start

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        first = [self.labeled[i] for i in rng.permutation(len(self.labeled))]
        # Further labeled permutations only when the ranks need more than one (their own stream,
        # so the one-permutation case draws exactly what a single process always drew).
        labeled = self._cycle(self.labeled, np.random.default_rng([self.seed, self.epoch, 2]), first)
        unlabeled = self._cycle(self.unlabeled, rng)
        n_lab, n_unl, world = self.labeled_bs, self.batch_size - self.labeled_bs, self.world_size
        seeds = np.random.SeedSequence([self.seed, self.epoch, 1])
        start, self.start = self.start, 0
        self.epoch += 1
        for b in range(len(self)):
            # The global batch: every rank's labeled samples, then every rank's unlabeled ones.
            lab = [next(labeled) for _ in range(world * n_lab)]
            unl = [next(unlabeled) for _ in range(world * n_unl)]
            sample_seeds = [int(s.generate_state(1)[0]) for s in seeds.spawn(world * self.batch_size)]
            if b < start:  # batches before a resume point are drawn, not yielded, so the streams stay aligned
                continue
            r = self.rank
            mine = list(range(r * n_lab, (r + 1) * n_lab))
            mine += [world * n_lab + j for j in range(r * n_unl, (r + 1) * n_unl)]
            both = lab + unl
            yield [(both[j], sample_seeds[j]) for j in mine]

    @staticmethod
    def _cycle(items: Sequence[int], rng: np.random.Generator, first: Sequence[int] = ()) -> Iterator[int]:
        yield from first
        while items:
            for i in rng.permutation(len(items)):
                yield items[i]
