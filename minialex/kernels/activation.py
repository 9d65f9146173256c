"""ReLU, the activation after every AlexNet conv and fc layer.

    forward:  y = max(x, 0)
    backward: dx = dy * [x > 0]      (the gradient at x == 0 is 0, as in PyTorch)

Shapes: any; y and dx have x's shape and dtype.

On the CPU both passes split the batch (axis 0) over the cores
(minialex.kernels.threads): the same elementwise results, each range into
its slice of the output.
"""

from ..backend import get_array_module
from . import cuda as fast_paths
from . import threads
from .cuda import elementwise as cuda_elementwise


def relu_forward(x):
    """y = max(x, 0). The cache is the mask x > 0, all that backward needs."""
    if fast_paths.active(x):  # CuPy array: one fused ElementwiseKernel
        return cuda_elementwise.relu_forward(x)
    xp = get_array_module(x)
    if x.ndim == 0:
        return xp.maximum(x, 0), x > 0
    out, positive = xp.empty_like(x), xp.empty(x.shape, dtype=bool)

    def rows(start, stop):
        xp.greater(x[start:stop], 0, out=positive[start:stop])
        xp.maximum(x[start:stop], 0, out=out[start:stop])  # a Python 0 keeps x's dtype (NEP 50)

    threads.split(rows, x.shape[0], x[:1].size, array=x)
    return out, positive


def relu_backward(dout, positive):
    """dx = dout where x > 0, else 0."""
    if fast_paths.active(dout):  # CuPy array: one fused ElementwiseKernel
        return cuda_elementwise.relu_backward(dout, positive)
    # A product with the boolean mask is one plain multiply: ~9x faster than
    # xp.where(positive, dout, 0) on AlexNet's relu1 (2.1 vs 19 ms, batch 16).
    if dout.ndim == 0 or dout.shape != positive.shape:
        return dout * positive
    xp = get_array_module(dout)
    dx = xp.empty(dout.shape, dtype=xp.result_type(dout.dtype, positive.dtype))

    def rows(start, stop):
        xp.multiply(dout[start:stop], positive[start:stop], out=dx[start:stop])

    threads.split(rows, dout.shape[0], dout[:1].size, array=dout)
    return dx
