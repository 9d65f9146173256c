"""Pure array kernels, one layer a file: NumPy or CuPy in, same module out, no autograd.

Each file holds a layer's forward and backward side by side. A forward returns
what the backward needs (CS231n's ``(out, cache)``); a backward takes the
upstream gradient and that cache.
"""

import numbers


def check_pair(name, value, minimum):
    """An int or an (h, w) pair of ints, each at least ``minimum``, as a tuple of two ints.

    The one check of the window arguments (kernel_size, stride, padding) that
    conv.py and pool.py share: a TypeError names the argument when it is not an
    int or a pair of ints (a bool, a float, a string...), a ValueError when a
    value is below ``minimum`` (1 for a kernel size or a stride, 0 for padding).
    """
    pair = (value, value) if isinstance(value, numbers.Integral) else value
    if (
        not isinstance(pair, (tuple, list))
        or len(pair) != 2
        or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in pair)
    ):
        raise TypeError(f"{name} must be an int or a pair of ints (h, w), got {value!r}")
    if pair[0] < minimum or pair[1] < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value!r}")
    return int(pair[0]), int(pair[1])


def check_image_batch(caller, x):
    """The input check conv.py and pool.py share: x must be a floating-point (N, C, H, W) array."""
    if getattr(x, "ndim", None) != 4:
        raise ValueError(f"{caller} expects x of shape (N, C, H, W), got shape {getattr(x, 'shape', None)}")
    if x.dtype.kind != "f":
        raise TypeError(f"{caller} expects a floating-point x, got dtype {x.dtype}")
