"""DataLoader and Subset: shapes, every index once an epoch, seeded order, drop_last, len, plain datasets, workers."""

import math
import os
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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


# --------------------------------------------------------------------------- num_workers


@pytest.mark.parametrize("num_workers", [-1, 1.5, "2", None, True])
def test_a_bad_num_workers_raises_valueerror(num_workers):
    with pytest.raises(ValueError, match="num_workers"):
        DataLoader(IndexImages(4), batch_size=2, num_workers=num_workers)


@pytest.mark.parametrize("prefetch_factor", [0, -1, 1.0, False])
def test_a_bad_prefetch_factor_raises_valueerror(prefetch_factor):
    with pytest.raises(ValueError, match="prefetch_factor"):
        DataLoader(IndexImages(4), batch_size=2, num_workers=1, prefetch_factor=prefetch_factor)


class RandomFlip:
    """A random transform drawn from the engine's RNG: flips each image left-right or not, adds a random offset."""

    def __call__(self, images):
        rng = ma.backend.cpu_rng()
        flip = rng.random(len(images)) < 0.5
        images = np.where(flip[:, None, None, None], images[..., ::-1], images).astype(np.int64)
        return images + rng.integers(0, 1000, (len(images), 1, 1, 1))


@pytest.fixture(scope="module")
def image_tree(tmp_path_factory):
    """A small ImageFolder on disk: 3 classes of 4 PNG images (grey, 3x2) and one JPEG, with distinct pixels."""
    Image = pytest.importorskip("PIL.Image", reason="ImageFolder decodes with Pillow (the vision extra)")
    root = tmp_path_factory.mktemp("tree")
    rng = np.random.default_rng(0)
    for name in ["b", "c", "a"]:
        os.makedirs(root / name)
        for i in range(4):
            Image.fromarray(rng.integers(0, 256, (3, 2), dtype=np.uint8)).save(root / name / f"{i}.png")
        Image.fromarray(rng.integers(0, 256, (3, 2), dtype=np.uint8)).save(root / name / "j.jpg")
    return root


def epoch(loader, seed):
    """The batches of one epoch from ``seed``, and the engine RNG's next draw after it."""
    ma.manual_seed(seed)
    batches = [(images, labels) for images, labels in loader]
    return batches, int(ma.backend.cpu_rng().integers(2**62))


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(num_workers=st.integers(1, 3), batch_size=st.integers(1, 7), shuffle=st.booleans(),
       drop_last=st.booleans(), subset=st.booleans(), seed=st.integers(0, 2**16))
def test_workers_yield_the_same_batches_in_the_same_order_as_the_main_process(
        image_tree, num_workers, batch_size, shuffle, drop_last, subset, seed):
    from minialex.data import folder

    dataset = folder.ImageFolder(image_tree, transform=RandomFlip())
    if subset:
        dataset = Subset(dataset, [14, 0, 3, 7, 9, 11, 2])
    options = dict(batch_size=batch_size, shuffle=shuffle, drop_last=drop_last)
    expected, draw_after = epoch(DataLoader(dataset, **options), seed)
    got, workers_draw_after = epoch(DataLoader(dataset, num_workers=num_workers, prefetch_factor=1, **options), seed)
    assert workers_draw_after == draw_after  # the main process's RNG made the same draws, no more, no fewer
    assert len(got) == len(expected) == len(DataLoader(dataset, **options))
    for (images, labels), (want_images, want_labels) in zip(got, expected):
        assert images.dtype == want_images.dtype and labels.dtype == want_labels.dtype == np.int64
        np.testing.assert_array_equal(images, want_images)
        np.testing.assert_array_equal(labels, want_labels)


class RecordingExecutor(ProcessPoolExecutor):
    """Remembers its worker processes and whether shutdown was called."""

    made = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.workers, self.shut_down = [], False
        RecordingExecutor.made.append(self)

    def submit(self, *args, **kwargs):
        future = super().submit(*args, **kwargs)
        self.workers = list(self._processes.values())
        return future

    def shutdown(self, *args, **kwargs):
        self.workers = list((self._processes or {}).values()) or self.workers
        super().shutdown(*args, **kwargs)
        self.shut_down = True


@pytest.fixture
def recording_executor(monkeypatch):
    from minialex.data import loader

    RecordingExecutor.made = []
    monkeypatch.setattr(loader, "ProcessPoolExecutor", RecordingExecutor)
    return RecordingExecutor.made


def assert_all_shut_down(made):
    assert len(made) == 1 and made[0].shut_down and made[0].workers
    assert all(worker.exitcode is not None for worker in made[0].workers), "a worker process is still running"


def test_breaking_out_of_the_loop_or_raising_in_it_shuts_the_workers_down(image_tree, recording_executor):
    from minialex.data import folder

    loader = DataLoader(folder.ImageFolder(image_tree), batch_size=2, num_workers=2)
    for images, _ in loader:
        assert images.shape == (2, 1, 3, 2)
        break
    assert_all_shut_down(recording_executor)
    recording_executor.clear()
    with pytest.raises(ZeroDivisionError):
        for _ in loader:
            1 / 0
    assert_all_shut_down(recording_executor)


def test_a_corrupt_image_read_by_a_worker_raises_here_with_the_workers_message(tmp_path, recording_executor):
    Image = pytest.importorskip("PIL.Image", reason="ImageFolder decodes with Pillow (the vision extra)")
    from minialex.data import folder

    for i in range(6):
        os.makedirs(tmp_path / "a", exist_ok=True)
        Image.fromarray(np.full((2, 2), i, np.uint8)).save(tmp_path / "a" / f"{i}.png")
    (tmp_path / "a" / "3.png").write_bytes(b"not a png")
    loader = DataLoader(folder.ImageFolder(tmp_path, transform=lambda images: images), batch_size=2, num_workers=1)
    seen = []
    with pytest.raises(folder.ImageDecodeError, match="Pillow cannot decode") as error:
        for images, _ in loader:
            seen.append(images[:, 0, 0, 0].tolist())
    assert str(tmp_path / "a" / "3.png") in str(error.value)
    assert seen == [[0, 1]]  # the batches before the bad one arrived, in order
    assert_all_shut_down(recording_executor)
