"""ReLU, dropout and the softmax cross-entropy gradient as fused CuPy ElementwiseKernels.

Each generic version is two to four CuPy calls, i.e. as many kernel launches
and passes over memory; each kernel here reads its inputs once and writes
its outputs once. One thread per element; ``T`` is the float type of the
arrays (float32 or float64), filled in by CuPy from the arguments.

    relu forward:   positive = x > 0;  y = positive ? x : 0   (NaN passes through, as in xp.maximum)
    relu backward:  dx = positive ? dout : 0
    dropout:        mask = (u >= p) ? 1/(1-p) : 0;  y = x * mask        (u ~ U[0, 1) from the engine's RNG)
    xent gradient:  dlogits[n, c] = (exp(log_probs[n, c]) - [c == target[n]]) * (dloss / N)

The kernels are built on first use (``functools.lru_cache``), never per call.
"""

import functools

from minialex import backend

from . import cupy


@functools.lru_cache(maxsize=None)
def _relu_forward_kernel():
    return cupy().ElementwiseKernel(
        "T x",
        "T y, bool positive",
        """
        positive = x > (T)0;
        y = (positive || x != x) ? x : (T)0;   // x != x: NaN stays NaN, so a diverging loss shows
        """,
        "minialex_relu_forward",
    )


@functools.lru_cache(maxsize=None)
def _relu_backward_kernel():
    return cupy().ElementwiseKernel(
        "T dout, bool positive", "T dx", "dx = positive ? dout : (T)0;", "minialex_relu_backward"
    )


@functools.lru_cache(maxsize=None)
def _dropout_kernel():
    return cupy().ElementwiseKernel(
        "T x, T u, T p, T scale",
        "T y, T mask",
        """
        mask = u >= p ? scale : (T)0;
        y = x * mask;
        """,
        "minialex_dropout_forward",
    )


@functools.lru_cache(maxsize=None)
def _xent_gradient_kernel():
    # target is "raw": indexed by row, not broadcast against the (N, C) logits.
    # i is the element's flat index in the C-contiguous (N, C) output.
    return cupy().ElementwiseKernel(
        "T log_prob, raw I target, T dloss, int64 classes, int64 rows",
        "T dlogit",
        """
        const long long row = (long long)i / classes;
        const long long column = (long long)i - row * classes;
        const T onehot = column == (long long)target[row] ? (T)1 : (T)0;
        dlogit = (exp(log_prob) - onehot) * (dloss / (T)rows);
        """,
        "minialex_cross_entropy_backward",
    )


def relu_forward(x):
    """(y, positive): y = max(x, 0) and the mask x > 0 that backward needs; one pass."""
    with x.device:
        return _relu_forward_kernel()(x)


def relu_backward(dout, positive):
    """dx = dout where x > 0, else 0."""
    with dout.device:
        return _relu_backward_kernel()(dout, positive)


def dropout_forward(x, p):
    """(y, mask) of inverted dropout: the mask [u >= p] / (1 - p) is drawn and applied in one pass.

    u comes from ``backend.uniform`` on x's device, the draw the generic
    ``dropout_mask`` makes, so a seed gives the same mask on both paths.
    """
    dtype = x.dtype
    u = backend.uniform(x.shape, dtype, backend.device_of(x))
    with x.device:
        return _dropout_kernel()(x, u, dtype.type(p), dtype.type(1.0 / (1.0 - p)))


def cross_entropy_backward(dloss, cache):
    """dlogits = (softmax - onehot(target)) / N * dloss in one pass over the (N, C) log-probabilities."""
    cp = cupy()
    log_probs, target = cache
    rows, classes = log_probs.shape
    with log_probs.device:
        log_probs = cp.ascontiguousarray(log_probs)  # i must be the row-major index
        dloss = cp.asarray(dloss, dtype=log_probs.dtype)  # a 0-d array: no copy to the host
        return _xent_gradient_kernel()(log_probs, target, dloss, classes, rows)
