"""Inverted dropout (AlexNet's regulariser before fc6 and fc7).

Training: keep each unit with probability 1 - p and scale the kept ones by
1 / (1 - p), so the expected value of every unit is unchanged and the
network needs no rescaling at test time:

    mask = [u >= p] / (1 - p),  u ~ Uniform[0, 1)
    forward:  y = x * mask
    backward: dx = dy * mask       (the same mask: it is all backward needs)

The 2012 paper used the other form: drop without scaling while training and
multiply the outputs by 0.5 at test time. Both give the same expected
activations; inverted dropout keeps evaluation a plain forward pass.

Evaluation (or p == 0) is the identity; that choice is made by the caller.
"""

from .. import backend
from . import cuda as fast_paths
from .cuda import elementwise as cuda_elementwise


def dropout_mask(shape, p, dtype, device="cpu"):
    """The scaled keep mask [u >= p] / (1 - p) of ``dtype``, from the engine's RNG."""
    uniform = backend.uniform(shape, dtype, device)
    keep = uniform >= p
    return keep.astype(dtype) * dtype.type(1.0 / (1.0 - p))


def dropout_forward(x, p):
    """y = x * mask. Returns (y, mask); the mask is the cache."""
    if fast_paths.active(x):  # CuPy array: mask and scale in one ElementwiseKernel
        return cuda_elementwise.dropout_forward(x, p)
    mask = dropout_mask(x.shape, p, x.dtype, backend.device_of(x))
    return x * mask, mask


def dropout_backward(dout, mask):
    """dx = dout * mask."""
    return dout * mask
