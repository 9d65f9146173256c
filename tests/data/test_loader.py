"""DataLoader and Subset: shapes, every index once an epoch, seeded order, drop_last, len, plain datasets."""

import math

import numpy as np
import pytest

import minialex as ma
from minialex.data import DataLoader, Subset


class IndexImages:
    """Example i is an image (1, 2, 2) filled with i, label i % 10: a batch tells which indices it holds."""

    def __init__(self, n):
        self.n = n
        self.batch_calls = 0

    def __len__(self):
        return self.n

    def get_batch(self, indices):
        self.batch_calls += 1
        indices = np.asarray(indices)
        images = np.broadcast_to(indices[:, None, None, None], (len(indices), 1, 2, 2)).astype(np.float32)
        return images, (indices % 10).astype(np.int64)


class PlainDataset:
    """Only __getitem__ and __len__, as a torch-style map dataset."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, index):
        if not 0 <= index < self.n:
            raise IndexError(index)
        return np.full((3, 4), index, dtype=np.int32), index * 2


def indices_of(images):
    flat = images.reshape(len(images), -1)
    assert np.all(flat == flat[:, :1]), "each image holds one index"
    return flat[:, 0].astype(np.int64).tolist()


def epoch_order(loader):
    return [i for images, _ in loader for i in indices_of(images)]


@pytest.mark.parametrize("n, batch_size, drop_last", [(10, 3, False), (10, 3, True), (12, 4, False), (12, 4, True),
                                                      (5, 8, False), (5, 8, True), (7, 1, False), (1, 1, True)])
def test_batch_shapes_len_and_the_last_short_batch(n, batch_size, drop_last):
    loader = DataLoader(IndexImages(n), batch_size=batch_size, drop_last=drop_last)
    batches = list(loader)
    expected_len = n // batch_size if drop_last else math.ceil(n / batch_size)
    assert len(loader) == expected_len == len(batches)
    sizes = [len(images) for images, _ in batches]
    full, rest = divmod(n, batch_size)
    assert sizes == [batch_size] * full + ([rest] if rest and not drop_last else [])
    for images, labels in batches:
        assert images.shape == (len(images), 1, 2, 2) and images.dtype == np.float32
        assert labels.shape == (len(images),) and labels.dtype == np.int64
        np.testing.assert_array_equal(labels, np.array(indices_of(images)) % 10)


@pytest.mark.parametrize("drop_last", [False, True])
def test_shuffled_epoch_visits_every_index_exactly_once(drop_last):
    ma.manual_seed(0)
    n, batch_size = 103, 10
    loader = DataLoader(IndexImages(n), batch_size=batch_size, shuffle=True, drop_last=drop_last)
    for _ in range(3):
        order = epoch_order(loader)
        if drop_last:
            assert len(order) == (n // batch_size) * batch_size
            assert len(set(order)) == len(order) and set(order) <= set(range(n))
        else:
            assert sorted(order) == list(range(n))


def test_without_shuffle_the_order_is_0_to_n():
    loader = DataLoader(IndexImages(23), batch_size=5)
    assert epoch_order(loader) == list(range(23))
    assert epoch_order(loader) == list(range(23))


def test_the_same_seed_gives_the_same_order():
    loader = DataLoader(IndexImages(50), batch_size=7, shuffle=True)
    ma.manual_seed(42)
    first = [epoch_order(loader) for _ in range(3)]
    ma.manual_seed(42)
    second = [epoch_order(loader) for _ in range(3)]
    assert first == second
    ma.manual_seed(43)
    assert epoch_order(loader) != first[0]


def test_epochs_are_shuffled_differently_and_not_in_order():
    ma.manual_seed(5)
    loader = DataLoader(IndexImages(50), batch_size=8, shuffle=True)
    orders = [epoch_order(loader) for _ in range(4)]
    assert len({tuple(order) for order in orders}) == 4
    assert all(order != list(range(50)) for order in orders)


def test_a_dataset_with_only_getitem_and_len_is_batched():
    ma.manual_seed(1)
    loader = DataLoader(PlainDataset(11), batch_size=4, shuffle=True)
    assert len(loader) == 3
    seen = []
    for images, labels in loader:
        assert images.shape == (len(labels), 3, 4) and images.dtype == np.int32
        assert labels.dtype == np.int64
        np.testing.assert_array_equal(labels, images[:, 0, 0] * 2)
        seen += images[:, 0, 0].tolist()
    assert sorted(seen) == list(range(11))


def test_batches_are_numpy_arrays_on_the_cpu():
    images, labels = next(iter(DataLoader(IndexImages(4), batch_size=4, device="cpu")))
    assert isinstance(images, np.ndarray) and isinstance(labels, np.ndarray)


@pytest.mark.parametrize("batch_size", [0, -1, 2.5, "4", None, True])
def test_a_bad_batch_size_raises_valueerror(batch_size):
    with pytest.raises(ValueError):
        DataLoader(IndexImages(4), batch_size=batch_size)


def test_an_unknown_device_raises():
    with pytest.raises(ValueError):
        DataLoader(IndexImages(4), batch_size=2, device="tpu")


def test_an_empty_dataset_gives_no_batches():
    loader = DataLoader(IndexImages(0), batch_size=3, shuffle=True)
    assert len(loader) == 0 and list(loader) == []


# --------------------------------------------------------------------------- Subset


def test_subset_holds_the_examples_at_its_indices():
    subset = Subset(IndexImages(100), [5, 7, 9, 50, 99])
    assert len(subset) == 5
    images, labels = subset.get_batch(np.array([4, 0]))
    assert indices_of(images) == [99, 5]
    np.testing.assert_array_equal(labels, [9, 5])


def test_a_loader_over_a_subset_visits_exactly_the_subset():
    ma.manual_seed(3)
    subset = Subset(IndexImages(100), np.arange(20, 40))
    loader = DataLoader(subset, batch_size=6, shuffle=True)
    assert len(loader) == 4
    assert sorted(epoch_order(loader)) == list(range(20, 40))
    assert epoch_order(DataLoader(subset, batch_size=6)) == list(range(20, 40))


@pytest.mark.parametrize("indices", [[0, 100], [-1], [[1, 2]]])
def test_subset_rejects_indices_outside_the_dataset(indices):
    with pytest.raises(ValueError):
        Subset(IndexImages(100), indices)


def test_an_empty_subset_is_allowed():
    assert len(Subset(IndexImages(10), [])) == 0


def test_a_subset_of_a_dataset_with_only_getitem_is_batched():
    # The loader accepts datasets with only __getitem__/__len__; a Subset of one must work too.
    loader = DataLoader(Subset(PlainDataset(10), [1, 3, 5]), batch_size=2)
    batches = list(loader)
    assert [len(labels) for _, labels in batches] == [2, 1]
    assert [int(image[0, 0]) for images, _ in batches for image in images] == [1, 3, 5]
    assert [int(label) for _, labels in batches for label in labels] == [2, 6, 10]
