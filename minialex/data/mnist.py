"""MNIST and Fashion-MNIST: IDX files, a verified download, and the datasets.

IDX format: a 4-byte magic number (two zero bytes, a type code - 0x08 for
unsigned bytes - and the number of dimensions), one big-endian uint32 per
dimension, then the values row-major. Images are magic 2051 (N, 28, 28),
labels magic 2049 (N,). The files usually come gzip-compressed.

Downloads go to a temporary file, are checked against the MD5 the dataset's
authors publish, and only then renamed into place: the cache never holds a
partial or unverified file.
"""

import gzip
import hashlib
import http.client
import os
import struct
import urllib.error
import urllib.request

import numpy as np

from ..io import atomic_write

# Type codes of the IDX format -> big-endian NumPy dtypes.
IDX_DTYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"),
              0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049


class IDXError(ValueError):
    """An IDX file is corrupt, truncated or not what was expected."""


def _open_bytes(path):
    with open(path, "rb") as file:
        raw = file.read()
    if raw[:2] == b"\x1f\x8b":  # the gzip signature
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError) as error:
            raise IDXError(f"{path}: the gzip stream is corrupt or truncated ({error})") from None
    return raw


def read_idx(path, expected_magic=None):
    """Read an IDX file (gzip-compressed or raw) into a NumPy array of its native shape."""
    raw = _open_bytes(path)
    if len(raw) < 4:
        raise IDXError(f"{path}: {len(raw)} bytes is too short for an IDX header")
    zero, type_code, ndim = struct.unpack(">HBB", raw[:4])
    magic = struct.unpack(">I", raw[:4])[0]
    if zero != 0 or type_code not in IDX_DTYPES or ndim == 0:
        raise IDXError(f"{path}: bad IDX magic number 0x{magic:08x} (not an IDX file)")
    if expected_magic is not None and magic != expected_magic:
        raise IDXError(f"{path}: magic number {magic}, expected {expected_magic}")
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise IDXError(f"{path}: the header needs {header_size} bytes, the file has {len(raw)}")
    shape = struct.unpack(f">{ndim}I", raw[4:header_size])
    dtype = IDX_DTYPES[type_code]
    expected = int(np.prod(shape)) * dtype.itemsize
    actual = len(raw) - header_size
    if actual != expected:
        what = "truncated" if actual < expected else "longer than its header says"
        raise IDXError(f"{path}: {what}: shape {shape} needs {expected} data bytes, found {actual}")
    return np.frombuffer(raw, dtype, offset=header_size).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path, array):
    """Write ``array`` as an IDX file (gzip-compressed when ``path`` ends in .gz), atomically."""
    array = np.asarray(array)
    codes = {dtype.newbyteorder("=").str: code for code, dtype in IDX_DTYPES.items()}
    code = codes.get(array.dtype.newbyteorder("=").str)
    if code is None:
        raise TypeError(f"write_idx: dtype {array.dtype} has no IDX type code")
    if array.ndim == 0 or array.ndim > 255:
        raise ValueError(f"write_idx: an IDX array needs 1 to 255 dimensions, got shape {array.shape}")
    header = struct.pack(">HBB", 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(IDX_DTYPES[code]).tobytes()
    with atomic_write(path) as file:
        file.write(gzip.compress(payload, mtime=0) if os.fspath(path).endswith(".gz") else payload)


# --------------------------------------------------------------------------- download


def md5_of(path, chunk_size=1 << 20):
    digest = hashlib.md5()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download_file(filename, md5, directory, mirrors, timeout=30.0):
    """Fetch ``filename`` from the first mirror that serves it with the right MD5.

    ``mirrors`` is a list of base URLs, or one base URL as a string. Each
    attempt streams into a temporary file in ``directory``; the file is
    renamed to its final name only after its MD5 matched. A mirror that fails
    in any way (HTTP error, refused connection, timeout, a transfer cut short,
    wrong MD5) is noted and the next one is tried. Raises RuntimeError
    listing every mirror's failure when none succeeded.
    """
    if isinstance(mirrors, str):
        mirrors = [mirrors]  # one URL, not a sequence of one-character "mirrors"
    mirrors = list(mirrors)
    if not mirrors:
        raise ValueError(f"download_file: mirrors is empty; give at least one base URL to fetch {filename} from")
    for mirror in mirrors:
        if not isinstance(mirror, str):
            raise TypeError(f"download_file: each mirror must be a URL string, got {mirror!r} ({type(mirror).__name__})")
    os.makedirs(directory, exist_ok=True)
    target = os.path.join(directory, filename)
    failures = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + filename
        try:
            _download_verified(url, md5, target, timeout)
            return target
        except _NotTheFile as error:
            failures.append(f"{url}: {error}")
        except (urllib.error.URLError, OSError, ValueError) as error:
            failures.append(f"{url}: {getattr(error, 'reason', None) or error}")
        except http.client.HTTPException as error:
            # Not an OSError: IncompleteRead (a chunked body cut short), RemoteDisconnected's
            # relatives, a garbled status line. The next mirror may still serve the file.
            failures.append(f"{url}: the transfer failed: {type(error).__name__}: {error}")
    raise RuntimeError(f"could not download {filename}; tried:\n  " + "\n  ".join(failures))


def _download_verified(url, md5, target, timeout):
    """Stream ``url`` into a temporary file; rename it to ``target`` only when complete and its MD5 matches.

    Any exception inside atomic_write deletes the temporary file, so nothing
    unverified enters the cache.
    """
    digest, received = hashlib.md5(), 0
    with urllib.request.urlopen(url, timeout=timeout) as response, atomic_write(target) as file:
        for chunk in iter(lambda: response.read(1 << 20), b""):
            digest.update(chunk)
            file.write(chunk)
            received += len(chunk)
        # A plain (not chunked) body that stops early just ends: compare with the promised length.
        promised = response.headers.get("Content-Length")
        if promised is not None and promised.isdigit() and received < int(promised):
            raise _NotTheFile(f"the transfer stopped after {received} of {promised} bytes")
        if digest.hexdigest() != md5:
            raise _NotTheFile(f"MD5 {digest.hexdigest()}, expected {md5}")


class _NotTheFile(Exception):
    """Bytes arrived, but they are not the published file (cut short, or the wrong MD5)."""


# --------------------------------------------------------------------------- datasets


def _check_labels(labels, num_classes, path):
    """Refuse labels outside 0..num_classes-1 now, not when their batch reaches the loss."""
    if labels.size == 0:
        return
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if len(bad):
        first = int(bad[0])
        raise IDXError(f"{path}: label {labels[first]} at index {first} is outside 0..{num_classes - 1} "
                       f"({num_classes} classes); {len(bad)} of {labels.size} labels are out of range")


def default_root():
    """The download cache: $MINIALEX_DATA, or ~/.cache/minialex."""
    return os.environ.get("MINIALEX_DATA") or os.path.join(os.path.expanduser("~"), ".cache", "minialex")


class MNIST:
    """The MNIST digits: ``images`` uint8 (N, 1, 28, 28), ``labels`` int64 (N,).

    ``root`` is the folder with the four .gz files; it is used as is when it
    holds them (no network). Otherwise they are downloaded into it (default:
    ``default_root()/<name>``) when ``download`` is true. ``transform`` maps a
    batch of images (N, 1, 28, 28) to arrays the model takes (see transforms.py).
    """

    name = "mnist"
    mirrors = (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    )
    # (file, MD5 of the .gz as published by the dataset's authors)
    files = {
        "train": (("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
                  ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432")),
        "test": (("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
                 ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c")),
    }
    classes = tuple(str(digit) for digit in range(10))

    def __init__(self, root=None, train=True, download=True, transform=None, mirrors=None):
        self.root = os.fspath(root) if root is not None else os.path.join(default_root(), self.name)
        self.train = bool(train)
        self.transform = transform
        split = self.files["train" if self.train else "test"]
        paths = []
        for filename, md5 in split:
            path = os.path.join(self.root, filename)
            if not os.path.exists(path):
                if not download:
                    raise FileNotFoundError(
                        f"{path} does not exist; pass download=True or a root that holds the {self.name} files"
                    )
                download_file(filename, md5, self.root, mirrors or self.mirrors)
            paths.append(path)
        images = read_idx(paths[0], IMAGES_MAGIC)
        labels = read_idx(paths[1], LABELS_MAGIC)
        if images.ndim != 3 or labels.ndim != 1:
            raise IDXError(f"{paths[0]}: expected images (N, H, W) and labels (N,), got {images.shape} and {labels.shape}")
        if len(images) != len(labels):
            raise IDXError(f"{self.root}: {len(images)} images but {len(labels)} labels")
        _check_labels(labels, len(self.classes), paths[1])
        self.images = images[:, None]  # (N, 1, H, W): one channel
        self.labels = labels.astype(np.int64)

    def __len__(self):
        return len(self.labels)

    def get_batch(self, indices):
        """(transformed images, labels) for an array of indices."""
        images = self.images[indices]
        return (self.transform(images) if self.transform else images), self.labels[indices]

    def __getitem__(self, index):
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} is out of range for {len(self)} examples")
        images, labels = self.get_batch(np.array([index]))
        return images[0], int(labels[0])

    def __repr__(self):
        return f"{type(self).__name__}(root={self.root!r}, train={self.train}, {len(self)} examples)"


class FashionMNIST(MNIST):
    """Zalando's Fashion-MNIST: MNIST's format and sizes, ten kinds of clothing."""

    name = "fashion-mnist"
    mirrors = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)
    files = {
        "train": (("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
                  ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe")),
        "test": (("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
                 ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310")),
    }
    classes = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
