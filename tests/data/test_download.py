"""Downloads, for real, from HTTP servers on 127.0.0.1: verified, atomic, falling back across mirrors."""

import functools
import gzip
import hashlib
import http.server
import os
import shutil
import socket
import threading
from pathlib import Path

import numpy as np
import pytest

from minialex.data import MNIST, default_root, download_file, write_idx

SHARED_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
TIMEOUT = 5.0  # seconds: every network wait in this file is bounded

OFFICIAL_LABEL_MD5 = {
    ("mnist", "t10k-labels-idx1-ubyte.gz"): "ec29112dd5afa0611ce80d1b7f02629c",
    ("mnist", "train-labels-idx1-ubyte.gz"): "d53e105ee54ea40749a09fcbcd1e9432",
    ("fashion-mnist", "t10k-labels-idx1-ubyte.gz"): "bb300cfdad3c16e7a12a480ee83cd310",
}


def md5(data):
    return hashlib.md5(data).hexdigest()


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # keep the test output clean
        pass


class _TruncatingHandler(http.server.BaseHTTPRequestHandler):
    """Promises more bytes than it sends, then closes the connection."""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "100000")
        self.end_headers()
        self.wfile.write(b"\x1f\x8b" + b"x" * 100)
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, format, *args):
        pass


class _ChunkedTruncatingHandler(http.server.BaseHTTPRequestHandler):
    """Sends one chunk of a chunked body, then closes without the final zero-length chunk."""

    protocol_version = "HTTP/1.1"  # chunked transfer encoding needs HTTP/1.1

    def do_GET(self):
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        payload = b"\x1f\x8b" + b"x" * 100
        self.wfile.write(f"{len(payload):x}\r\n".encode() + payload + b"\r\n")
        self.wfile.write(b"400\r\n" + b"y" * 10)  # a 1024-byte chunk is announced, 10 bytes come
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, format, *args):
        pass


class LocalServer:
    """An HTTP server on 127.0.0.1 (port chosen by the OS) serving ``directory``, run in a thread."""

    def __init__(self, directory, handler=None):
        handler = handler or functools.partial(_Handler, directory=str(directory))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.timeout = TIMEOUT
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=TIMEOUT)


@pytest.fixture
def served(tmp_path):
    """A folder served over HTTP: returns (folder, base URL)."""
    folder = tmp_path / "served"
    folder.mkdir()
    server = LocalServer(folder)
    try:
        yield folder, server.url
    finally:
        server.close()


@pytest.fixture
def refused_url():
    """A URL on a port that is bound but never listening: connecting is refused at once."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/"
    finally:
        sock.close()


@pytest.fixture
def silent_url():
    """A server that accepts connections but never answers: the client must time out."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/"
    finally:
        sock.close()


@pytest.fixture
def truncating_url():
    server = LocalServer(None, handler=_TruncatingHandler)
    try:
        yield server.url
    finally:
        server.close()


@pytest.fixture
def chunked_truncating_url():
    server = LocalServer(None, handler=_ChunkedTruncatingHandler)
    try:
        yield server.url
    finally:
        server.close()


def small_idx_gz(folder, name, array):
    """Write ``array`` as a gzip IDX file in ``folder``; return its bytes' MD5."""
    path = Path(folder) / name
    write_idx(path, array)
    return md5(path.read_bytes())


def listing(folder):
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


# --------------------------------------------------------------------------- download_file


@pytest.mark.parametrize("dataset, filename", sorted(OFFICIAL_LABEL_MD5))
def test_download_of_a_real_label_file_lands_with_the_official_md5(served, tmp_path, dataset, filename):
    source = SHARED_DATA / dataset / filename
    if not source.is_file():
        pytest.skip(f"{source} is missing (expected ../shared/data beside the repository)")
    folder, url = served
    shutil.copy(source, folder / filename)
    target_dir = tmp_path / "cache"
    path = download_file(filename, OFFICIAL_LABEL_MD5[dataset, filename], target_dir, [url], timeout=TIMEOUT)
    assert Path(path) == target_dir / filename
    assert md5(Path(path).read_bytes()) == OFFICIAL_LABEL_MD5[dataset, filename]
    assert listing(target_dir) == [filename]  # no temporary file left beside it


def test_download_success_writes_the_file_with_the_right_md5(served, tmp_path):
    folder, url = served
    expected = small_idx_gz(folder, "small-labels.gz", np.arange(100, dtype=np.uint8) % 10)
    target_dir = tmp_path / "new" / "cache"  # created on demand
    path = download_file("small-labels.gz", expected, target_dir, [url], timeout=TIMEOUT)
    assert md5(Path(path).read_bytes()) == expected
    assert (Path(path).read_bytes()) == (folder / "small-labels.gz").read_bytes()
    assert listing(target_dir) == ["small-labels.gz"]


def test_download_of_a_file_larger_than_one_chunk_is_complete(served, tmp_path):
    folder, url = served
    payload = np.random.default_rng(0).integers(0, 256, 3 * (1 << 20) + 123, dtype=np.uint8).tobytes()
    (folder / "big.bin").write_bytes(payload)
    path = download_file("big.bin", md5(payload), tmp_path / "cache", [url], timeout=TIMEOUT)
    assert Path(path).read_bytes() == payload


def test_an_md5_mismatch_raises_naming_both_md5s_and_leaves_nothing(served, tmp_path):
    folder, url = served
    actual = small_idx_gz(folder, "labels.gz", np.arange(50, dtype=np.uint8))
    wrong = "0123456789abcdef0123456789abcdef"
    target_dir = tmp_path / "cache"
    with pytest.raises(RuntimeError) as info:
        download_file("labels.gz", wrong, target_dir, [url], timeout=TIMEOUT)
    message = str(info.value)
    assert "labels.gz" in message and wrong in message and actual in message
    assert listing(target_dir) == []  # neither the unverified file nor a temporary file


def test_an_md5_mismatch_keeps_an_existing_good_file_untouched(served, tmp_path):
    folder, url = served
    small_idx_gz(folder, "labels.gz", np.arange(50, dtype=np.uint8))
    target_dir = tmp_path / "cache"
    target_dir.mkdir()
    (target_dir / "labels.gz").write_bytes(b"previous contents")
    with pytest.raises(RuntimeError):
        download_file("labels.gz", "0" * 32, target_dir, [url], timeout=TIMEOUT)
    assert listing(target_dir) == ["labels.gz"]
    assert (target_dir / "labels.gz").read_bytes() == b"previous contents"


def test_a_404_on_the_first_mirror_falls_back_to_the_second(served, tmp_path):
    folder, url = served
    (folder / "first").mkdir()  # the first mirror serves nothing: 404
    (folder / "second").mkdir()
    expected = small_idx_gz(folder / "second", "labels.gz", np.arange(30, dtype=np.uint8))
    target_dir = tmp_path / "cache"
    path = download_file("labels.gz", expected, target_dir, [url + "first", url + "second/"], timeout=TIMEOUT)
    assert md5(Path(path).read_bytes()) == expected
    assert listing(target_dir) == ["labels.gz"]


def test_an_md5_mismatch_on_the_first_mirror_falls_back_to_the_second(served, tmp_path):
    folder, url = served
    (folder / "bad").mkdir()
    (folder / "good").mkdir()
    small_idx_gz(folder / "bad", "labels.gz", np.zeros(30, dtype=np.uint8))
    expected = small_idx_gz(folder / "good", "labels.gz", np.arange(30, dtype=np.uint8))
    target_dir = tmp_path / "cache"
    path = download_file("labels.gz", expected, target_dir, [url + "bad/", url + "good/"], timeout=TIMEOUT)
    assert md5(Path(path).read_bytes()) == expected
    assert listing(target_dir) == ["labels.gz"]


def test_a_refused_connection_on_the_first_mirror_falls_back_to_the_second(served, refused_url, tmp_path):
    folder, url = served
    expected = small_idx_gz(folder, "labels.gz", np.arange(30, dtype=np.uint8))
    target_dir = tmp_path / "cache"
    path = download_file("labels.gz", expected, target_dir, [refused_url, url], timeout=TIMEOUT)
    assert md5(Path(path).read_bytes()) == expected
    assert listing(target_dir) == ["labels.gz"]


def test_a_mirror_that_never_answers_times_out_and_falls_back(served, silent_url, tmp_path):
    folder, url = served
    expected = small_idx_gz(folder, "labels.gz", np.arange(30, dtype=np.uint8))
    target_dir = tmp_path / "cache"
    path = download_file("labels.gz", expected, target_dir, [silent_url, url], timeout=0.5)
    assert md5(Path(path).read_bytes()) == expected
    assert listing(target_dir) == ["labels.gz"]


def test_a_connection_dropped_mid_transfer_falls_back_and_leaves_nothing_partial(served, truncating_url, tmp_path):
    folder, url = served
    expected = small_idx_gz(folder, "labels.gz", np.arange(30, dtype=np.uint8))
    target_dir = tmp_path / "cache"
    with pytest.raises(RuntimeError, match="labels.gz"):
        download_file("labels.gz", expected, target_dir, [truncating_url], timeout=TIMEOUT)
    assert listing(target_dir) == []
    path = download_file("labels.gz", expected, target_dir, [truncating_url, url], timeout=TIMEOUT)
    assert md5(Path(path).read_bytes()) == expected
    assert listing(target_dir) == ["labels.gz"]


def test_a_chunked_transfer_cut_short_falls_back_to_the_next_mirror(served, chunked_truncating_url, tmp_path):
    folder, url = served
    expected = small_idx_gz(folder, "labels.gz", np.arange(30, dtype=np.uint8))
    target_dir = tmp_path / "cache"
    path = download_file("labels.gz", expected, target_dir, [chunked_truncating_url, url], timeout=TIMEOUT)
    assert md5(Path(path).read_bytes()) == expected
    assert listing(target_dir) == ["labels.gz"]


def test_a_chunked_transfer_cut_short_everywhere_is_a_runtimeerror_and_leaves_nothing(chunked_truncating_url,
                                                                                     truncating_url, tmp_path):
    target_dir = tmp_path / "cache"
    mirrors = [chunked_truncating_url, truncating_url]
    with pytest.raises(RuntimeError) as info:
        download_file("labels.gz", "f" * 32, target_dir, mirrors, timeout=TIMEOUT)
    message = str(info.value)
    assert "IncompleteRead" in message  # the chunked mirror's failure, named
    assert "stopped after 102 of 100000 bytes" in message  # the plain one stopped short of its Content-Length
    for mirror in mirrors:
        assert mirror + "labels.gz" in message
    assert listing(target_dir) == []


def test_a_single_mirror_string_is_one_mirror_not_one_per_character(served, tmp_path):
    folder, url = served
    expected = small_idx_gz(folder, "labels.gz", np.arange(30, dtype=np.uint8))
    path = download_file("labels.gz", expected, tmp_path / "cache", url, timeout=TIMEOUT)
    assert md5(Path(path).read_bytes()) == expected


def test_a_single_failing_mirror_string_is_reported_as_that_url(refused_url, tmp_path):
    with pytest.raises(RuntimeError) as info:
        download_file("labels.gz", "f" * 32, tmp_path / "cache", refused_url, timeout=TIMEOUT)
    tried = str(info.value).splitlines()[1:]
    assert len(tried) == 1 and tried[0].strip().startswith(refused_url + "labels.gz")


def test_mnist_accepts_a_single_mirror_string(served, tmp_path, monkeypatch):
    folder, url = served
    _, files = tiny_files(folder)
    monkeypatch.setattr(TinyMNIST, "files", files)
    assert len(TinyMNIST(root=tmp_path / "root", train=False, download=True, mirrors=url)) == 5


@pytest.mark.parametrize("mirrors, error", [([], ValueError), ([b"http://127.0.0.1/"], TypeError), ([None], TypeError)])
def test_mirrors_that_are_no_urls_are_refused_before_any_network(tmp_path, mirrors, error):
    with pytest.raises(error, match="mirror"):
        download_file("labels.gz", "f" * 32, tmp_path / "cache", mirrors, timeout=TIMEOUT)


def test_all_mirrors_failing_raises_a_runtimeerror_listing_each(served, refused_url, tmp_path):
    folder, url = served
    (folder / "empty").mkdir()
    (folder / "bad").mkdir()
    small_idx_gz(folder / "bad", "labels.gz", np.zeros(8, dtype=np.uint8))
    mirrors = [url + "empty/", refused_url, url + "bad/"]
    target_dir = tmp_path / "cache"
    with pytest.raises(RuntimeError) as info:
        download_file("labels.gz", "f" * 32, target_dir, mirrors, timeout=TIMEOUT)
    message = str(info.value)
    assert "labels.gz" in message
    for mirror in mirrors:
        assert mirror + "labels.gz" in message
    assert "not found" in message.lower() or "404" in message
    assert "refused" in message.lower()
    assert "f" * 32 in message  # the expected MD5 of the mismatching mirror
    assert listing(target_dir) == []


# --------------------------------------------------------------------------- datasets with download


class TinyMNIST(MNIST):
    """MNIST's class with small files: ``files`` set per test to the MD5s of generated IDX files."""

    name = "tiny-mnist"
    mirrors = ()
    files = {}


def tiny_files(folder, train_count=12, test_count=5):
    rng = np.random.default_rng(7)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (train_count, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte.gz": (np.arange(train_count) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (test_count, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte.gz": (np.arange(test_count)[::-1] % 10).astype(np.uint8),
    }
    md5s = {name: small_idx_gz(folder, name, array) for name, array in arrays.items()}
    files = {
        "train": (("train-images-idx3-ubyte.gz", md5s["train-images-idx3-ubyte.gz"]),
                  ("train-labels-idx1-ubyte.gz", md5s["train-labels-idx1-ubyte.gz"])),
        "test": (("t10k-images-idx3-ubyte.gz", md5s["t10k-images-idx3-ubyte.gz"]),
                 ("t10k-labels-idx1-ubyte.gz", md5s["t10k-labels-idx1-ubyte.gz"])),
    }
    return arrays, files


def test_mnist_download_true_fetches_verifies_and_loads(served, refused_url, tmp_path, monkeypatch):
    folder, url = served
    arrays, files = tiny_files(folder)
    monkeypatch.setattr(TinyMNIST, "files", files)
    root = tmp_path / "root"
    train = TinyMNIST(root=root, train=True, download=True, mirrors=[refused_url, url])
    assert listing(root) == ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]
    assert len(train) == 12 and train.images.shape == (12, 1, 28, 28)
    np.testing.assert_array_equal(train.images[:, 0], arrays["train-images-idx3-ubyte.gz"])
    np.testing.assert_array_equal(train.labels, arrays["train-labels-idx1-ubyte.gz"])
    test = TinyMNIST(root=root, train=False, download=True, mirrors=[url])
    assert len(test) == 5
    np.testing.assert_array_equal(test.labels, arrays["t10k-labels-idx1-ubyte.gz"])
    assert len(listing(root)) == 4


def test_mnist_second_construction_uses_the_cache_without_network(served, tmp_path, monkeypatch):
    folder, url = served
    _, files = tiny_files(folder)
    monkeypatch.setattr(TinyMNIST, "files", files)
    root = tmp_path / "root"
    TinyMNIST(root=root, train=False, download=True, mirrors=[url])

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted with a full cache")

    monkeypatch.setattr("urllib.request.urlopen", refuse)
    assert len(TinyMNIST(root=root, train=False, download=True, mirrors=[url])) == 5


def test_mnist_download_with_a_wrong_md5_raises_and_caches_nothing(served, tmp_path, monkeypatch):
    folder, url = served
    _, files = tiny_files(folder)
    (images, _), (labels, labels_md5) = files["test"]
    monkeypatch.setattr(TinyMNIST, "files", {"test": ((images, "0" * 32), (labels, labels_md5))})
    root = tmp_path / "root"
    with pytest.raises(RuntimeError, match="0" * 32):
        TinyMNIST(root=root, train=False, download=True, mirrors=[url])
    assert listing(root) == []


def test_mnist_download_goes_to_minialex_data_by_default(served, tmp_path, monkeypatch):
    folder, url = served
    _, files = tiny_files(folder)
    monkeypatch.setattr(TinyMNIST, "files", files)
    cache = tmp_path / "env-cache"
    monkeypatch.setenv("MINIALEX_DATA", str(cache))
    data = TinyMNIST(train=False, download=True, mirrors=[url])
    assert Path(data.root) == cache / "tiny-mnist"
    assert listing(cache / "tiny-mnist") == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]


def test_download_false_with_missing_files_raises_filenotfounderror(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted with download=False")

    monkeypatch.setattr("urllib.request.urlopen", refuse)
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte.gz"):
        MNIST(root=tmp_path, train=False, download=False)
    assert listing(tmp_path) == []


def test_default_root_honours_minialex_data(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIALEX_DATA", str(tmp_path / "somewhere"))
    assert default_root() == str(tmp_path / "somewhere")


def test_default_root_without_the_variable_is_the_user_cache(tmp_path, monkeypatch):
    monkeypatch.delenv("MINIALEX_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("USERPROFILE", str(tmp_path))
    assert Path(default_root()) == tmp_path / ".cache" / "minialex"


def test_gzip_of_served_tiny_files_is_readable(served):
    # Sanity check of the helper: what is served is a real gzip IDX file.
    folder, _ = served
    small_idx_gz(folder, "x.gz", np.arange(4, dtype=np.uint8))
    assert gzip.decompress((folder / "x.gz").read_bytes())[:4] == b"\x00\x00\x08\x01"
