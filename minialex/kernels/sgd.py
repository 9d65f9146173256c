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

import numpy as np

from ..backend import get_array_module
from . import cuda as fast_paths
from . import threads
from .cuda import sgd as cuda_sgd

# Elements per chunk of the CPU speed-up: four float32 chunks (param, grad, buffer, scratch) of
# 128 KB stay in a core's L2 cache. 16 K and 64 K timed the same on fc6 here; 4 K was slower.
CHUNK = 1 << 15


def sgd_update(param, grad, momentum_buffer, scratch, lr, momentum=0.0, weight_decay=0.0, nesterov=False,
               in_chunks_on_cpu=True):
    """Update ``param`` in place; return the (new or updated) momentum buffer, or None.

    param, grad, scratch: arrays of one shape; momentum_buffer: that shape or None.
    scratch None: a temporary is made (the GPU fast path needs none at all).

    ``in_chunks_on_cpu``: on NumPy arrays, run the same update chunk by chunk
    (``_sgd_update_in_chunks``): the same numbers, with the arrays read from
    memory about once instead of once per operation. False runs the whole-array
    operations below.
    """
    buffer_ok = momentum_buffer is None or fast_paths.active(param, momentum_buffer)
    if fast_paths.active(param, grad) and buffer_ok:  # CuPy: one fused ElementwiseKernel, no scratch
        return cuda_sgd.sgd_update(param, grad, momentum_buffer, lr, momentum, weight_decay, nesterov)
    xp = get_array_module(param)
    if in_chunks_on_cpu and xp is np and param.size > CHUNK and _all_contiguous(param, grad, momentum_buffer):
        return _sgd_update_in_chunks(param, grad, momentum_buffer, lr, momentum, weight_decay, nesterov)
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


def needs_scratch(param, grad, momentum_buffer):
    """Whether sgd_update wants a parameter-sized scratch array: not on a GPU, not in chunks."""
    if fast_paths.active(param, grad):
        return False
    return not (param.size > CHUNK and _all_contiguous(param, grad, momentum_buffer))


def _all_contiguous(*arrays):
    return all(a is None or a.flags.c_contiguous for a in arrays)


def _sgd_update_in_chunks(param, grad, momentum_buffer, lr, momentum, weight_decay, nesterov):
    """The CPU speed-up of sgd_update: the same update, CHUNK elements at a time.

    The whole-array form makes six NumPy passes, each streaming parameter-sized
    arrays through memory (for fc6, 151 MB each). The update is element by
    element, so running it on one slice at a time gives the same numbers bit
    for bit, while each slice stays in the cache between the passes: on fc6
    here it took 0.57 of the whole-array time. It also needs a scratch of one
    chunk instead of one of the parameter's size. The chunks are split over
    the cores (each thread with its own scratch chunk).
    """
    flat_param, flat_grad = param.reshape(-1), grad.reshape(-1)
    first_step = momentum and momentum_buffer is None
    if first_step:
        momentum_buffer = np.empty_like(param)
    flat_buffer = None if momentum_buffer is None else momentum_buffer.reshape(-1)

    def update(first_chunk, last_chunk):  # the chunks split over the cores (kernels.threads)
        scratch = np.empty(CHUNK, dtype=param.dtype)
        for start in range(first_chunk * CHUNK, min(last_chunk * CHUNK, flat_param.size), CHUNK):
            part = slice(start, start + CHUNK)
            size = len(flat_param[part])
            buffer_part = None if flat_buffer is None or first_step else flat_buffer[part]
            updated = sgd_update(flat_param[part], flat_grad[part], buffer_part, scratch[:size], lr, momentum,
                                 weight_decay, nesterov, in_chunks_on_cpu=False)
            if first_step:  # the clear version made this chunk's buffer: keep it in the whole one
                flat_buffer[part] = updated

    threads.split(update, -(-flat_param.size // CHUNK), 4 * CHUNK)
    return momentum_buffer
