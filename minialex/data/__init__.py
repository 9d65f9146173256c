"""``minialex.data``: MNIST and Fashion-MNIST (IDX files, verified download), transforms, a loader."""

from .loader import DataLoader, Subset
from .mnist import MNIST, FashionMNIST, default_root, download_file, read_idx, write_idx
from .transforms import Compose, Normalize, Pad, RandomShiftCrop, Resize, ToFloat

__all__ = [
    "Compose",
    "DataLoader",
    "FashionMNIST",
    "MNIST",
    "Normalize",
    "Pad",
    "RandomShiftCrop",
    "Subset",
    "Resize",
    "ToFloat",
    "default_root",
    "download_file",
    "read_idx",
    "write_idx",
]
