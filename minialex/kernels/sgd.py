"""The SGD parameter update, in place (PyTorch's form, dampening 0).

    g   = grad + weight_decay * p
    buf = momentum * buf + g            (buf = g on the first step)
    g   = g + momentum * buf  if nesterov  else  buf
    p  -= lr * g

Every step writes into ``p``, ``buf`` and a caller-owned ``scratch`` array of
p's shape, so a training step makes no fresh parameter-sized arrays (for
AlexNet's fc6 that is 151 MB a step saved). The only allocation is the
momentum buffer on the first step.

The paper (Krizhevsky et al. 2012, section 5) writes the same rule as

    v = 0.9 v - 0.0005 lr w - lr grad;   w = w + v

i.e. the learning rate sits inside the velocity. With a constant rate the two
forms produce the same weights (v = -lr * buf). They diverge when the rate
changes: the paper's velocity still carries steps taken at the old rate,
while PyTorch's buffer is rescaled by the new rate at once.
"""

from ..backend import get_array_module
from . import cuda as fast_paths
from .cuda import sgd as cuda_sgd


def sgd_update(param, grad, momentum_buffer, scratch, lr, momentum=0.0, weight_decay=0.0, nesterov=False):
    """Update ``param`` in place; return the (new or updated) momentum buffer, or None.

    param, grad, scratch: arrays of one shape; momentum_buffer: that shape or None.
    scratch None: a temporary is made (the GPU fast path needs none at all).
    """
    buffer_ok = momentum_buffer is None or fast_paths.active(param, momentum_buffer)
    if fast_paths.active(param, grad) and buffer_ok:  # CuPy: one fused ElementwiseKernel, no scratch
        return cuda_sgd.sgd_update(param, grad, momentum_buffer, lr, momentum, weight_decay, nesterov)
    xp = get_array_module(param)
    step = xp.empty_like(param) if scratch is None else scratch
    if weight_decay:
        xp.multiply(param, weight_decay, out=step)
        step += grad
    else:
        step[...] = grad
    if momentum:
        if momentum_buffer is None:
            momentum_buffer = step.copy()
        else:
            momentum_buffer *= momentum
            momentum_buffer += step
        if nesterov:
            # p -= lr * (g + momentum * buf), in two in-place passes: no temporary array.
            step *= lr
            param -= step
            xp.multiply(momentum_buffer, lr * momentum, out=step)
            param -= step
            return momentum_buffer
        xp.multiply(momentum_buffer, lr, out=step)
    else:
        step *= lr
    param -= step
    return momentum_buffer
