"""The SGD update as one fused CuPy ElementwiseKernel per parameter, in place.

PyTorch's rule (dampening 0), the same as ``minialex.kernels.sgd``:

    g   = grad + weight_decay * p
    buf = momentum * buf + g            (buf = g on the first step)
    g   = g + momentum * buf  if nesterov  else  buf
    p  -= lr * g

The generic update makes four to six passes over each parameter (and needs
a scratch array); here one thread per element reads p, grad and buf once
and writes p and buf once. ``param`` and ``buf`` are passed as the kernel's
OUTPUT arguments, so CuPy writes into them instead of allocating: the update
is in place. On the first step ``buf`` is a fresh, uninitialised array that
the kernel fills with g (``first_step`` keeps its old contents unread).
"""

import functools

import numpy as np

from . import cupy


@functools.lru_cache(maxsize=None)
def _plain_kernel():
    return cupy().ElementwiseKernel(
        "T grad, T lr, T weight_decay",
        "T param",
        "param -= lr * (grad + weight_decay * param);",
        "minialex_sgd",
    )


@functools.lru_cache(maxsize=None)
def _momentum_kernel():
    return cupy().ElementwiseKernel(
        "T grad, T lr, T weight_decay, T momentum, bool nesterov, bool first_step",
        "T param, T buf",
        """
        const T g = grad + weight_decay * param;
        buf = first_step ? g : momentum * buf + g;
        param -= lr * (nesterov ? g + momentum * buf : buf);
        """,
        "minialex_sgd_momentum",
    )


def sgd_update(param, grad, momentum_buffer, lr, momentum=0.0, weight_decay=0.0, nesterov=False):
    """Update the CuPy ``param`` in place; return the momentum buffer (new, updated, or as given)."""
    cp = cupy()
    scalar = param.dtype.type
    with param.device:
        if not momentum:
            _plain_kernel()(grad, scalar(lr), scalar(weight_decay), param)
            return momentum_buffer
        first_step = momentum_buffer is None
        if first_step:
            momentum_buffer = cp.empty_like(param)  # on param's device, like the generic buffer
        _momentum_kernel()(grad, scalar(lr), scalar(weight_decay), scalar(momentum),
                           np.bool_(nesterov), np.bool_(first_step), param, momentum_buffer)
    return momentum_buffer
