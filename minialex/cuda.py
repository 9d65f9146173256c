"""``ma.cuda``: whether the GPU path is usable here."""

from . import backend


def is_available():
    """True only where CuPy imports and sees a CUDA device."""
    return backend.cuda_available()


def device_count():
    """The number of CUDA devices CuPy sees (0 without CuPy)."""
    return backend.cuda_device_count()
