"""IDX files and the shipped MNIST / Fashion-MNIST: round trips, clear errors, counts, histograms, no network."""

import gzip
import struct
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from minialex.data import MNIST, FashionMNIST, read_idx, write_idx
from minialex.data.mnist import IMAGES_MAGIC, LABELS_MAGIC, IDXError

# The shared data folder sits beside the repository root: <root>/../shared/data.
SHARED_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"

DTYPES = [np.dtype("u1"), np.dtype("i1"), np.dtype(">i2"), np.dtype(">i4"), np.dtype("float32"), np.dtype("float64")]


def shared_folder(name):
    folder = SHARED_DATA / name
    if not folder.is_dir():
        pytest.skip(f"the shared data folder {folder} is missing (expected ../shared/data beside the repository)")
    return folder


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: urlopen{args}")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def idx_bytes(array, magic_type=None):
    """A hand-built IDX payload (independent of write_idx)."""
    codes = {"u1": 0x08, "i1": 0x09, "i2": 0x0B, "i4": 0x0C, "f4": 0x0D, "f8": 0x0E}
    code = magic_type if magic_type is not None else codes[array.dtype.str[1:]]
    big = array.astype(array.dtype.newbyteorder(">"))
    return struct.pack(">HBB", 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + big.tobytes()


# --------------------------------------------------------------------------- IDX round trip


@st.composite
def idx_arrays(draw):
    dtype = draw(st.sampled_from(DTYPES))
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=6))
    elements = None
    if dtype.kind == "f":
        elements = st.floats(width=dtype.itemsize * 8, allow_nan=False)
    return draw(hnp.arrays(dtype, shape, elements=elements))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(array=idx_arrays(), compressed=st.booleans())
def test_write_then_read_idx_returns_the_same_array(tmp_path, array, compressed):
    path = tmp_path / ("a.idx.gz" if compressed else "a.idx")
    write_idx(path, array)
    back = read_idx(path)
    assert back.shape == array.shape
    assert back.dtype.newbyteorder("=") == array.dtype.newbyteorder("=")
    np.testing.assert_array_equal(back, array)
    raw = path.read_bytes()
    assert (raw[:2] == b"\x1f\x8b") == compressed
    # The bytes on disk are the IDX format itself (big-endian header and values).
    assert (gzip.decompress(raw) if compressed else raw) == idx_bytes(array)


def test_read_idx_reads_a_hand_built_file(tmp_path):
    array = np.arange(24, dtype=">i4").reshape(2, 3, 4) - 7
    path = tmp_path / "hand.idx"
    path.write_bytes(idx_bytes(array))
    np.testing.assert_array_equal(read_idx(path), array)


def test_write_idx_rejects_dtypes_without_an_idx_code(tmp_path):
    with pytest.raises(TypeError):
        write_idx(tmp_path / "x.idx", np.zeros(3, np.int64))
    with pytest.raises(ValueError):
        write_idx(tmp_path / "x.idx", np.array(5, np.uint8))


# --------------------------------------------------------------------------- corrupt files


@pytest.mark.parametrize("header", [b"\x01\x00\x08\x01", b"\x00\x00\x07\x01", b"\x00\x00\x08\x00", b"PK\x03\x04"])
def test_a_corrupt_magic_number_raises_idxerror_naming_the_file(tmp_path, header):
    path = tmp_path / "corrupt-magic.idx"
    path.write_bytes(header + struct.pack(">I", 3) + b"\x00\x01\x02")
    with pytest.raises(IDXError, match="corrupt-magic.idx") as info:
        read_idx(path)
    assert isinstance(info.value, ValueError)


def test_a_corrupt_magic_number_inside_gzip_names_the_file(tmp_path):
    path = tmp_path / "corrupt-magic.idx.gz"
    path.write_bytes(gzip.compress(b"\xff\xff\x08\x01" + struct.pack(">I", 2) + b"\x00\x01"))
    with pytest.raises(IDXError, match="corrupt-magic.idx.gz"):
        read_idx(path)


@pytest.mark.parametrize("cut", [1, 5, 100, 700])
def test_a_truncated_raw_file_raises_a_clear_error(tmp_path, cut):
    raw = idx_bytes(np.arange(28 * 28, dtype=np.uint8).reshape(1, 28, 28))
    path = tmp_path / "cut.idx"
    path.write_bytes(raw[:-cut])
    with pytest.raises(IDXError, match=r"cut\.idx.*truncated"):
        read_idx(path)


@pytest.mark.parametrize("keep", [0, 2, 3, 10])
def test_a_file_shorter_than_its_header_raises_a_clear_error(tmp_path, keep):
    path = tmp_path / "short.idx"
    path.write_bytes(idx_bytes(np.zeros((2, 3), np.uint8))[:keep])
    with pytest.raises(IDXError, match="short.idx"):
        read_idx(path)


@pytest.mark.parametrize("cut", [1, 4, 8, 30])
def test_a_truncated_gzip_file_raises_a_clear_error(tmp_path, cut):
    rng = np.random.default_rng(0)
    compressed = gzip.compress(idx_bytes(rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)))
    path = tmp_path / "cut.idx.gz"
    path.write_bytes(compressed[:-cut])
    with pytest.raises(IDXError, match=r"cut\.idx\.gz"):
        read_idx(path)


def test_a_gzip_file_whose_content_is_truncated_raises_a_clear_error(tmp_path):
    # A well-formed gzip stream of a truncated IDX payload.
    path = tmp_path / "short-payload.idx.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros((4, 5), np.uint8))[:-3]))
    with pytest.raises(IDXError, match=r"short-payload\.idx\.gz.*truncated"):
        read_idx(path)


@pytest.mark.parametrize("compressed", [False, True])
def test_a_file_longer_than_its_header_says_raises(tmp_path, compressed):
    payload = idx_bytes(np.zeros((4, 5), np.uint8)) + b"\x00\x00"
    path = tmp_path / ("long.idx.gz" if compressed else "long.idx")
    path.write_bytes(gzip.compress(payload) if compressed else payload)
    with pytest.raises(IDXError, match="long.idx.*longer"):
        read_idx(path)


def test_labels_read_as_images_raise_a_magic_mismatch(tmp_path):
    labels = tmp_path / "labels.idx"
    write_idx(labels, np.arange(10, dtype=np.uint8))
    with pytest.raises(IDXError, match=r"labels\.idx.*2049.*2051"):
        read_idx(labels, IMAGES_MAGIC)
    images = tmp_path / "images.idx"
    write_idx(images, np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(IDXError, match=r"images\.idx.*2051.*2049"):
        read_idx(images, LABELS_MAGIC)
    assert read_idx(labels, LABELS_MAGIC).shape == (10,)
    assert read_idx(images, IMAGES_MAGIC).shape == (2, 28, 28)


def _fake_split(root, images, labels, prefix="t10k"):
    root.mkdir(parents=True, exist_ok=True)
    write_idx(root / f"{prefix}-images-idx3-ubyte.gz", images)
    write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", labels)


def test_mnist_with_swapped_image_and_label_files_raises(tmp_path, no_network):
    root = tmp_path / "swapped"
    root.mkdir()
    write_idx(root / "t10k-images-idx3-ubyte.gz", np.arange(5, dtype=np.uint8))
    write_idx(root / "t10k-labels-idx1-ubyte.gz", np.zeros((5, 28, 28), np.uint8))
    with pytest.raises(IDXError, match="t10k-images-idx3-ubyte.gz"):
        MNIST(root, train=False, download=False)


def test_mnist_with_different_image_and_label_counts_raises(tmp_path, no_network):
    root = tmp_path / "mismatch"
    _fake_split(root, np.zeros((5, 28, 28), np.uint8), np.zeros(4, np.uint8))
    with pytest.raises(IDXError, match="5 images but 4 labels"):
        MNIST(root, train=False, download=False)


def test_mnist_reads_a_small_fake_folder(tmp_path, no_network):
    root = tmp_path / "small"
    images = np.random.default_rng(1).integers(0, 256, (7, 28, 28), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1, 5, 9, 2], np.uint8)
    _fake_split(root, images, labels)
    data = MNIST(root, train=False, download=False)
    assert len(data) == 7
    np.testing.assert_array_equal(data.images[:, 0], images)
    assert data.labels.dtype == np.int64
    np.testing.assert_array_equal(data.labels, labels)
    image, label = data[5]
    assert image.shape == (1, 28, 28) and label == 9
    np.testing.assert_array_equal(data[-1][0][0], images[-1])
    with pytest.raises(IndexError):
        data[7]
    batch, batch_labels = data.get_batch(np.array([6, 0]))
    np.testing.assert_array_equal(batch[:, 0], images[[6, 0]])
    np.testing.assert_array_equal(batch_labels, [2, 3])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(count=st.integers(1, 12), data=st.data(), fashion=st.booleans())
def test_labels_outside_the_classes_are_refused_at_load_naming_file_and_value(tmp_path_factory, count, data, fashion):
    """Any label >= the number of classes, anywhere in the file, is an IDXError at construction, not at its batch."""
    labels = np.array(data.draw(st.lists(st.integers(0, 9), min_size=count, max_size=count)), np.uint8)
    position = data.draw(st.integers(0, count - 1))
    bad_value = data.draw(st.integers(10, 255))
    labels[position] = bad_value
    root = tmp_path_factory.mktemp("bad-labels")
    _fake_split(root, np.zeros((count, 28, 28), np.uint8), labels)
    dataset_class = FashionMNIST if fashion else MNIST
    with pytest.raises(IDXError) as info:
        dataset_class(root, train=False, download=False)
    message = str(info.value)
    first_bad = int(np.flatnonzero(labels >= 10)[0])
    assert "t10k-labels-idx1-ubyte.gz" in message
    assert f"label {labels[first_bad]} at index {first_bad}" in message and "0..9" in message


def test_labels_at_the_edge_of_the_classes_load(tmp_path, no_network):
    root = tmp_path / "edge"
    _fake_split(root, np.zeros((2, 28, 28), np.uint8), np.array([0, 9], np.uint8))
    np.testing.assert_array_equal(MNIST(root, train=False, download=False).labels, [0, 9])


def test_mnist_download_false_with_missing_files_raises_filenotfounderror(tmp_path, no_network):
    with pytest.raises(FileNotFoundError, match="download=True"):
        MNIST(tmp_path / "empty", train=True, download=False)


# --------------------------------------------------------------------------- the shipped files

MNIST_TRAIN_HISTOGRAM = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_HISTOGRAM = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.mark.parametrize(
    "train, count, histogram, mean_pixel",
    [(True, 60000, MNIST_TRAIN_HISTOGRAM, 33.318), (False, 10000, MNIST_TEST_HISTOGRAM, 33.791)],
    ids=["train", "test"],
)
def test_shipped_mnist_has_the_published_counts_histogram_and_mean(no_network, train, count, histogram, mean_pixel):
    data = MNIST(root=shared_folder("mnist"), train=train, download=False)
    assert len(data) == count
    assert data.images.shape == (count, 1, 28, 28)
    assert data.images.dtype == np.uint8
    assert data.labels.shape == (count,)
    assert np.bincount(data.labels, minlength=10).tolist() == histogram
    assert data.images.mean(dtype=np.float64) == pytest.approx(mean_pixel, abs=5e-4)
    assert data.images.max() == 255 and data.images.min() == 0


@pytest.mark.parametrize("train, per_class", [(True, 6000), (False, 1000)], ids=["train", "test"])
def test_shipped_fashion_mnist_has_the_published_counts_per_class(no_network, train, per_class):
    data = FashionMNIST(root=shared_folder("fashion-mnist"), train=train, download=False)
    assert len(data) == 10 * per_class
    assert data.images.shape == (10 * per_class, 1, 28, 28)
    assert data.images.dtype == np.uint8
    assert np.bincount(data.labels, minlength=10).tolist() == [per_class] * 10
    assert len(FashionMNIST.classes) == 10


def test_shipped_files_load_with_download_true_without_touching_the_network(no_network):
    # download=True must not matter when root already holds the files.
    data = MNIST(root=shared_folder("mnist"), train=False, download=True)
    assert len(data) == 10000


def test_shipped_first_test_labels_are_the_known_ones(no_network):
    # The first MNIST test digits are 7, 2, 1, 0, 4, 1, 4, 9, 5, 9 (a fact every tutorial shows).
    data = MNIST(root=shared_folder("mnist"), train=False, download=False)
    assert data.labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
