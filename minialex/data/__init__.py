"""``minialex.data``: MNIST and Fashion-MNIST (IDX files, verified download), transforms, a loader."""

from .loader import DataLoader, Subset
from .mnist import MNIST, FashionMNIST, default_root, download_file, read_idx, write_idx
from .transforms import (
    CenterCrop,
    Compose,
    Normalize,
    Pad,
    PCALighting,
    RandomCrop,
    RandomHorizontalFlip,
    RandomShiftCrop,
    Resize,
    TenCrop,
    ToFloat,
    pca_lighting_parameters,
    ten_crop_predict,
)

__all__ = [
    "Compose",
    "DataLoader",
    "FashionMNIST",
    "MNIST",
    "Normalize",
    "Pad",
    "RandomShiftCrop",
    "RandomCrop",
    "RandomHorizontalFlip",
    "CenterCrop",
    "TenCrop",
    "PCALighting",
    "pca_lighting_parameters",
    "ten_crop_predict",
    "Subset",
    "Resize",
    "ToFloat",
    "default_root",
    "download_file",
    "read_idx",
    "write_idx",
]
