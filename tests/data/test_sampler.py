import itertools

import pytest
import torch

from mtssl.data.cases import DataError
from mtssl.data.sampler import TwoStreamBatchSampler
from mtssl.registry import DATASETS


def test_two_streams():
    sampler = TwoStreamBatchSampler(range(6), range(6, 20), batch_size=5, labeled_bs=2, seed=3)
    assert len(sampler) == 3
    epoch = list(sampler)
    assert len(epoch) == 3 and all(len(b) == 5 for b in epoch)
    labeled = [i for b in epoch for i, _ in b[:2]]
    unlabeled = [i for b in epoch for i, _ in b[2:]]
    assert sorted(labeled) == list(range(6))  # every labeled sample once per epoch
    assert all(6 <= i < 20 for i in unlabeled) and len(set(unlabeled)) == 9  # one permutation, no repeats yet
    assert list(sampler) != epoch  # the next epoch is re-permuted


def test_unlabeled_cycles_through_all():
    sampler = TwoStreamBatchSampler(range(8), range(8, 11), batch_size=4, labeled_bs=1, seed=0)
    unlabeled = [i for b in sampler for i, _ in b[1:]]
    assert len(unlabeled) == 24
    for start in range(0, 24, 3):  # each block of 3 is a permutation of the 3 unlabeled samples
        assert sorted(unlabeled[start : start + 3]) == [8, 9, 10]


def test_seeded_and_resumable():
    a = TwoStreamBatchSampler(range(4), range(4, 10), 4, 2, seed=1)
    b = TwoStreamBatchSampler(range(4), range(4, 10), 4, 2, seed=1)
    first = [list(a), list(a)]
    b.set_epoch(1)
    assert list(b) == first[1]  # the epoch is the whole state
    c = TwoStreamBatchSampler(range(4), range(4, 10), 4, 2, seed=2)
    assert list(c) != first[0]


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((range(1), range(3), 4, 2), "1 labeled samples cannot fill labeled_bs=2"),
        ((range(4), range(3), 4, 0), "labeled_bs must be in 1..batch_size=4"),
        ((range(4), [], 4, 2), "there are none; set labeled_bs = batch_size"),
    ],
)
def test_errors(args, match):
    with pytest.raises(DataError, match=match):
        TwoStreamBatchSampler(*args)


def first_batches(loader, n):
    return list(itertools.islice(itertools.chain.from_iterable(iter(loader) for _ in itertools.count()), n))


def test_first_50_batches_identical_for_0_and_2_workers():
    data = DATASETS.create("phantom", labeled=8, augment=("rot90", "flip", "crop", {"noise": {"std": 0.1}}))
    serial = first_batches(data.loader(4, 2, num_workers=0, seed=5), 50)
    parallel = first_batches(data.loader(4, 2, num_workers=2, seed=5), 50)
    assert len(serial) == len(parallel) == 50
    for s, p in zip(serial, parallel):
        assert s["case"] == p["case"]
        assert torch.equal(s["image"], p["image"]) and torch.equal(s["label"], p["label"])


def test_ranks_see_disjoint_samples_and_their_union_is_the_one_process_batch():
    world, labeled, unlabeled = 3, range(12), range(12, 30)
    ranks = [TwoStreamBatchSampler(labeled, unlabeled, 4, 2, seed=7, rank=r, world_size=world) for r in range(world)]
    whole = TwoStreamBatchSampler(labeled, unlabeled, 4 * world, 2 * world, seed=7)
    assert all(len(s) == len(whole) == 2 for s in ranks)
    for _ in range(2):  # two epochs
        per_rank = [list(s) for s in ranks]
        for step, batch in enumerate(whole):
            shares = [per_rank[r][step] for r in range(world)]
            union = [x for s in shares for x in s[:2]] + [x for s in shares for x in s[2:]]
            assert union == batch  # same samples, same augmentation seeds, labeled first
            seen = [i for s in shares for i, _ in s]
            assert len(set(seen)) == len(seen)  # no sample on two ranks in a step
        labeled_seen = [i for batches in per_rank for b in batches for i, _ in b[:2]]
        assert sorted(labeled_seen) == list(labeled)  # every labeled sample once per epoch, across the ranks


def test_fewer_labeled_than_ranks_times_labeled_bs(caplog):
    with caplog.at_level("WARNING"):
        ranks = [TwoStreamBatchSampler(range(3), range(3, 9), 3, 2, seed=1, rank=r, world_size=2) for r in range(2)]
    assert "3 labeled samples < 2 ranks x labeled_bs=2" in caplog.text
    assert [len(s) for s in ranks] == [1, 1]  # an epoch is one step
    for _ in range(5):
        shares = [next(iter(s)) for s in ranks]
        assert all(len(b) == 3 and all(i < 3 for i, _ in b[:2]) for b in shares)  # labeled_bs labeled on each rank
        labeled = [i for b in shares for i, _ in b[:2]]
        assert set(range(3)) <= set(labeled)  # the first permutation is used in full before any repeat


def test_bad_rank():
    with pytest.raises(DataError, match=r"rank 2 is not in 0\.\.world_size-1=1"):
        TwoStreamBatchSampler(range(4), range(4, 8), 4, 2, rank=2, world_size=2)
