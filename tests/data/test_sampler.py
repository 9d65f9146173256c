"""DistributedSampler and DataLoader(shard=, sampler=): disjoint covering shares, one seeded order on every rank."""

import math
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minialex as ma
from minialex.data import DataLoader
from minialex.data.sampler import DistributedSampler


class IndexLabels:
    """Example i is an image (1, 2) filled with i, label i: a batch's labels are the indices it holds.

    Defined at module level, small and picklable, so worker processes can read it.
    """

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def get_batch(self, indices):
        indices = np.asarray(indices, dtype=np.int64)
        return np.repeat(indices[:, None, None], 2, axis=2).astype(np.float32), indices.copy()


def shares(n, world_size, *, epoch=0, **options):
    """Every rank's indices of one epoch, rank by rank, each from its own sampler."""
    result = []
    for rank in range(world_size):
        sampler = DistributedSampler(range(n), num_replicas=world_size, rank=rank, **options)
        sampler.set_epoch(epoch)
        result.append(list(sampler))
    return result


def interleave(rank_shares):
    """The one order the ranks' shares were dealt from: position k went to rank k % world_size."""
    world_size = len(rank_shares)
    return [rank_shares[k % world_size][k // world_size] for k in range(sum(map(len, rank_shares)))]


sampler_cases = dict(n=st.integers(0, 120), world_size=st.integers(1, 9), seed=st.integers(0, 2**63),
                     epoch=st.integers(0, 10**6), shuffle=st.booleans(), drop_last=st.booleans())


# --------------------------------------------------------------------------- the laws of the shares


@settings(max_examples=60, deadline=None)
@given(**sampler_cases)
def test_the_shares_are_disjoint_except_the_padding_and_cover_the_dataset(
        n, world_size, seed, epoch, shuffle, drop_last):
    got = shares(n, world_size, epoch=epoch, seed=seed, shuffle=shuffle, drop_last=drop_last)
    per_rank = n // world_size if drop_last else math.ceil(n / world_size)
    for rank, share in enumerate(got):
        sampler = DistributedSampler(range(n), num_replicas=world_size, rank=rank, seed=seed,
                                     shuffle=shuffle, drop_last=drop_last)
        assert len(share) == len(sampler) == sampler.num_samples == per_rank
        assert all(type(i) is int and 0 <= i < n for i in share)
    order = interleave(got)
    if drop_last:
        # The tail is dropped: no index twice, and all but fewer than world_size indices are used.
        assert len(set(order)) == len(order) == per_rank * world_size
        assert n - len(order) < world_size
    else:
        # Every index at least once; the padding repeats the start of the order, fewer than world_size of them.
        assert sorted(order[:n]) == list(range(n))
        padding = order[n:]
        assert len(padding) < world_size
        assert padding == [order[k % n] for k in range(len(padding))]


@settings(max_examples=40, deadline=None)
@given(**sampler_cases)
def test_the_order_comes_from_seed_and_epoch_alone_not_the_world_size_or_the_engine_rng(
        n, world_size, seed, epoch, shuffle, drop_last):
    options = dict(seed=seed, shuffle=shuffle, drop_last=drop_last)
    ma.manual_seed(0)
    expected = shares(n, world_size, epoch=epoch, **options)
    # Each rank seeds the engine differently (its own dropout masks): the shares must not change.
    for rank in range(world_size):
        ma.manual_seed(1000 + rank)
        draw_before = ma.backend.cpu_rng().bit_generator.state
        sampler = DistributedSampler(range(n), num_replicas=world_size, rank=rank, **options)
        sampler.set_epoch(epoch)
        assert list(sampler) == expected[rank]
        assert list(sampler) == expected[rank], "iterating twice gives the same order"
        assert ma.backend.cpu_rng().bit_generator.state == draw_before, "the sampler drew from the engine's RNG"
    # World size 1 is the whole permutation; any world size deals out that same permutation.
    [whole] = shares(n, 1, epoch=epoch, **options)
    assert sorted(whole) == list(range(n))
    if not shuffle:
        assert whole == list(range(n))
    order = interleave(expected)
    assert order == [whole[k % n] for k in range(len(order))]


@settings(max_examples=25, deadline=None)
@given(n=st.integers(20, 200), world_size=st.integers(1, 4), seed=st.integers(0, 2**32),
       epoch=st.integers(0, 1000), drop_last=st.booleans())
def test_set_epoch_reshuffles_and_going_back_gives_the_old_order(n, world_size, seed, epoch, drop_last):
    options = dict(seed=seed, drop_last=drop_last)
    before = interleave(shares(n, world_size, epoch=epoch, **options))
    after = interleave(shares(n, world_size, epoch=epoch + 1, **options))
    assert before != after  # two permutations of >= 20 items agree with probability <= 1/20!
    sampler = DistributedSampler(range(n), num_replicas=world_size, rank=0, **options)
    sampler.set_epoch(epoch + 1)
    sampler.set_epoch(epoch)
    assert sampler.epoch == epoch
    assert list(sampler) == before[0::world_size]


@settings(max_examples=25, deadline=None)
@given(n=st.integers(20, 200), seed=st.integers(0, 2**32))
def test_another_seed_gives_another_order(n, seed):
    assert shares(n, 1, seed=seed) != shares(n, 1, seed=seed + 1)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(0, 60), world_size=st.integers(1, 9), drop_last=st.booleans(), epoch=st.integers(0, 50))
def test_without_shuffle_the_ranks_interleave_the_plain_order(n, world_size, drop_last, epoch):
    got = shares(n, world_size, epoch=epoch, shuffle=False, drop_last=drop_last)
    total = len(got[0]) * world_size
    for rank, share in enumerate(got):
        assert share == [k % n for k in range(rank, total, world_size)]


def test_small_examples_by_hand():
    assert shares(10, 3, shuffle=False) == [[0, 3, 6, 9], [1, 4, 7, 0], [2, 5, 8, 1]]
    assert shares(10, 3, shuffle=False, drop_last=True) == [[0, 3, 6], [1, 4, 7], [2, 5, 8]]
    assert shares(2, 5, shuffle=False) == [[0], [1], [0], [1], [0]]
    assert shares(2, 5, shuffle=False, drop_last=True) == [[], [], [], [], []]
    assert shares(0, 3) == [[], [], []]


def test_indices_are_an_int64_array_and_the_epoch_starts_at_0():
    sampler = DistributedSampler(range(7), num_replicas=2, rank=1)
    assert sampler.epoch == 0
    indices = sampler.indices()
    assert isinstance(indices, np.ndarray) and indices.dtype == np.int64
    assert indices.tolist() == list(sampler)


def test_outside_a_process_group_the_sampler_is_rank_0_of_1():
    import minialex.distributed as dist

    assert not dist.is_initialized()
    sampler = DistributedSampler(range(11), seed=5)
    assert (sampler.num_replicas, sampler.rank) == (1, 0)
    assert sorted(sampler) == list(range(11))


# --------------------------------------------------------------------------- bad arguments


@pytest.mark.parametrize("name, value, options", [
    ("rank", 2, dict(num_replicas=2)),
    ("rank", 5, dict(num_replicas=2)),
    ("rank", -1, dict(num_replicas=2)),
    ("rank", True, dict(num_replicas=2)),
    ("rank", 0.0, dict(num_replicas=2)),
    ("rank", "0", dict(num_replicas=2)),
    ("num_replicas", 0, dict(rank=0)),
    ("num_replicas", -2, dict(rank=0)),
    ("num_replicas", True, dict(rank=0)),
    ("num_replicas", 2.0, dict(rank=0)),
    ("seed", -1, dict(num_replicas=1, rank=0)),
    ("seed", 1.5, dict(num_replicas=1, rank=0)),
    ("seed", "3", dict(num_replicas=1, rank=0)),
    ("seed", None, dict(num_replicas=1, rank=0)),
    ("seed", False, dict(num_replicas=1, rank=0)),
])
def test_a_bad_argument_raises_valueerror_naming_it_and_its_value(name, value, options):
    with pytest.raises(ValueError, match=rf"{name}\b.*{re.escape(repr(value))}"):
        DistributedSampler(range(10), **{name: value}, **options)


@pytest.mark.parametrize("epoch", [-1, 1.0, "2", None, True, np.float64(3)])
def test_a_bad_epoch_raises_valueerror_naming_it_and_its_value(epoch):
    sampler = DistributedSampler(range(10), num_replicas=2, rank=0)
    sampler.set_epoch(4)
    with pytest.raises(ValueError, match=rf"epoch\b.*{re.escape(repr(epoch))}"):
        sampler.set_epoch(epoch)
    assert sampler.epoch == 4  # unchanged


def test_numpy_integers_are_accepted():
    sampler = DistributedSampler(range(10), num_replicas=np.int64(3), rank=np.int32(2), seed=np.uint8(7))
    sampler.set_epoch(np.int64(2))
    assert list(sampler) == shares(10, 3, seed=7, epoch=2)[2]


# --------------------------------------------------------------------------- DataLoader(shard=...)


def rank_batches(n, world_size, batch_size, epoch=None, num_workers=0, **options):
    """Each rank's list of (images, labels) batches for one epoch of DataLoader(shard=(rank, world_size))."""
    result = []
    for rank in range(world_size):
        loader = DataLoader(IndexLabels(n), batch_size, shard=(rank, world_size), num_workers=num_workers, **options)
        if epoch is not None:
            loader.set_epoch(epoch)
        result.append(list(loader))
    return result


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 80), world_size=st.integers(1, 5), batch_size=st.integers(1, 9), shuffle=st.booleans(),
       drop_last=st.booleans(), seed=st.integers(0, 2**32), epoch=st.integers(0, 100))
def test_sharded_loaders_take_the_same_steps_and_together_read_the_samplers_shares(
        n, world_size, batch_size, shuffle, drop_last, seed, epoch):
    options = dict(shuffle=shuffle, drop_last=drop_last, seed=seed)
    got = rank_batches(n, world_size, batch_size, epoch=epoch, **options)
    expected = shares(n, world_size, epoch=epoch, shuffle=shuffle, seed=seed)
    steps = {len(batches) for batches in got}
    assert len(steps) == 1, "every rank takes the same number of steps"
    loader = DataLoader(IndexLabels(n), batch_size, shard=(0, world_size), **options)
    assert steps == {len(loader)}
    for batches, share in zip(got, expected):
        labels = [int(i) for images, labels in batches for i in labels]
        for images, batch_labels in batches:
            assert len(batch_labels) == batch_size or not drop_last
            np.testing.assert_array_equal(images[:, 0, 0], batch_labels)
        kept = len(share) // batch_size * batch_size if drop_last else len(share)
        assert labels == share[:kept]
    if not drop_last:
        everything = {int(i) for batches in got for _, labels in batches for i in labels}
        assert everything == set(range(n))


def test_set_epoch_is_forwarded_to_the_sampler_and_reshuffles():
    loader = DataLoader(IndexLabels(50), 8, shuffle=True, shard=(1, 3), seed=11)
    assert isinstance(loader.sampler, DistributedSampler)
    assert (loader.sampler.rank, loader.sampler.num_replicas, loader.sampler.seed) == (1, 3, 11)
    first = [int(i) for _, labels in loader for i in labels]
    assert [int(i) for _, labels in loader for i in labels] == first, "no set_epoch: the same order again"
    loader.set_epoch(5)
    assert loader.sampler.epoch == 5
    fifth = [int(i) for _, labels in loader for i in labels]
    assert fifth != first and fifth == shares(50, 3, epoch=5, seed=11)[1]


def test_shard_without_shuffle_reads_the_interleaved_plain_order():
    [batches] = rank_batches(10, 1, 4, shuffle=False)
    assert [labels.tolist() for _, labels in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    got = rank_batches(7, 2, 3, shuffle=False)
    assert [[labels.tolist() for _, labels in batches] for batches in got] == [[[0, 2, 4], [6]], [[1, 3, 5], [0]]]


def test_the_engine_rng_does_not_change_a_sharded_order():
    loaders = [DataLoader(IndexLabels(30), 4, shuffle=True, shard=(0, 2), seed=3) for _ in range(2)]
    orders = []
    for seed, loader in zip([0, 99], loaders):
        ma.manual_seed(seed)
        orders.append([labels.tolist() for _, labels in loader])
    assert orders[0] == orders[1]


@pytest.mark.parametrize("shard", [(2, 2), (-1, 2), (0, 0), (0,), (0, 1, 2), "01", 3, (True, 2)])
def test_a_bad_shard_raises_valueerror(shard):
    with pytest.raises(ValueError):
        DataLoader(IndexLabels(10), 2, shard=shard)


@pytest.mark.parametrize("options", [dict(shard=(0, 2)), dict(shuffle=True), dict(shard=(0, 1), shuffle=True)])
def test_a_sampler_with_shard_or_shuffle_raises_valueerror(options):
    with pytest.raises(ValueError, match="sampler"):
        DataLoader(IndexLabels(10), 2, sampler=[0, 1, 2], **options)


@pytest.mark.parametrize("sampler", [5, object(), (i for i in range(3)), 2.5])
def test_a_sampler_that_is_not_an_iterable_with_a_length_raises_typeerror(sampler):
    with pytest.raises(TypeError, match="sampler"):
        DataLoader(IndexLabels(10), 2, sampler=sampler)


@pytest.mark.parametrize("options", [dict(), dict(shuffle=True), dict(sampler=[3, 1, 2])])
def test_set_epoch_without_a_sampler_that_has_epochs_raises_typeerror(options):
    loader = DataLoader(IndexLabels(10), 2, **options)
    with pytest.raises(TypeError, match="set_epoch"):
        loader.set_epoch(1)


def test_a_custom_sampler_gives_the_batches_in_its_order():
    sampler = [5, 3, 3, 0, 9, 1, 8]
    loader = DataLoader(IndexLabels(10), 3, sampler=sampler)
    assert len(loader) == 3
    assert [labels.tolist() for _, labels in loader] == [[5, 3, 3], [0, 9, 1], [8]]
    dropped = DataLoader(IndexLabels(10), 3, sampler=sampler, drop_last=True)
    assert len(dropped) == 2 and [labels.tolist() for _, labels in dropped] == [[5, 3, 3], [0, 9, 1]]
    numpy_sampler = DataLoader(IndexLabels(10), 4, sampler=np.array([9, 8, 7], dtype=np.int32))
    assert [labels.tolist() for _, labels in numpy_sampler] == [[9, 8, 7]]
    assert list(DataLoader(IndexLabels(10), 4, sampler=[])) == []


def test_a_distributed_sampler_can_be_passed_as_the_sampler():
    sampler = DistributedSampler(IndexLabels(20), num_replicas=3, rank=2, seed=4)
    loader = DataLoader(IndexLabels(20), 5, sampler=sampler)
    loader.set_epoch(2)
    assert sampler.epoch == 2
    assert [i for _, labels in loader for i in labels.tolist()] == shares(20, 3, seed=4, epoch=2)[2]


@pytest.mark.parametrize("sampler", [[0, 10], [-1, 2], [10**12], [[1, 2]]])
def test_sampler_indices_outside_the_dataset_raise_valueerror(sampler):
    loader = DataLoader(IndexLabels(10), 2, sampler=sampler)
    with pytest.raises(ValueError, match="0..9"):
        list(loader)


@pytest.mark.parametrize("sampler", [[0, 1.5], ["3"]])
def test_sampler_indices_that_are_not_integers_raise_valueerror(sampler):
    with pytest.raises(ValueError, match="integer indices"):
        list(DataLoader(IndexLabels(10), 2, sampler=sampler))


def test_a_sharded_loader_with_a_worker_gives_the_same_batches_as_without():
    options = dict(shuffle=True, seed=7)
    expected = rank_batches(23, 2, 4, epoch=3, **options)
    got = rank_batches(23, 2, 4, epoch=3, num_workers=1, **options)
    assert [len(batches) for batches in got] == [len(batches) for batches in expected] == [3, 3]
    for batches, want in zip(got, expected):
        for (images, labels), (want_images, want_labels) in zip(batches, want):
            np.testing.assert_array_equal(images, want_images)
            np.testing.assert_array_equal(labels, want_labels)
