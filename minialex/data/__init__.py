"""``minialex.data``: MNIST and Fashion-MNIST (IDX files, verified download), ImageFolder, transforms, a loader."""

from .folder import ImageDecodeError, ImageFolder
from .loader import DataLoader, Subset
from .sampler import DistributedSampler
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
    "DistributedSampler",
    "FashionMNIST",
    "ImageDecodeError",
    "ImageFolder",
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
