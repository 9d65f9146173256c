"""Softmax, log-softmax and the softmax cross-entropy loss.

Stability: softmax(x) = exp(x - m) / sum(exp(x - m)) with m = max(x) along the
axis, which changes nothing mathematically but keeps every exponent <= 0, so
logits of 1e4 cannot overflow. log_softmax(x) = x - m - log(sum(exp(x - m)))
(the log-sum-exp trick).

Gradients (s = softmax(x), dy the upstream gradient, sums along the axis):
    softmax:      dx = s * (dy - sum(dy * s))
    log_softmax:  dx = dy - s * sum(dy)
    cross-entropy with mean over N rows and integer targets t:
        loss = -mean_n log_softmax(x)[n, t_n]
        dx   = (s - onehot(t)) / N * dloss        (the fused gradient)

Shapes: x (N, C) logits, t (N,) integer class indices in [0, C).
"""

from ..backend import get_array_module
from . import cuda as fast_paths
from .cuda import elementwise as cuda_elementwise


def softmax(x, axis=-1):
    """exp(x - max) / sum(exp(x - max)) along ``axis``; same shape as x."""
    xp = get_array_module(x)
    shifted = x - x.max(axis=axis, keepdims=True)
    exp = xp.exp(shifted, out=shifted)  # reuse the buffer: shifted is not needed again
    exp /= exp.sum(axis=axis, keepdims=True)
    return exp


def softmax_backward(dout, out, axis=-1):
    """dx = s * (dy - sum(dy * s)); ``out`` is the forward's softmax s."""
    return out * (dout - (dout * out).sum(axis=axis, keepdims=True))


def log_softmax(x, axis=-1):
    """x - max - log(sum(exp(x - max))) along ``axis``; same shape as x."""
    xp = get_array_module(x)
    shifted = x - x.max(axis=axis, keepdims=True)
    shifted -= xp.log(xp.exp(shifted).sum(axis=axis, keepdims=True))
    return shifted


def log_softmax_backward(dout, out, axis=-1):
    """dx = dy - softmax * sum(dy); ``out`` is the forward's log-softmax."""
    xp = get_array_module(dout)
    return dout - xp.exp(out) * dout.sum(axis=axis, keepdims=True)


def cross_entropy_forward(logits, target):
    """Mean over rows of -log softmax(logits)[n, target_n].

    logits (N, C) float, target (N,) integers in [0, C) -> (loss 0-d array, cache).
    The cache keeps the log-probabilities and the targets: the fused backward
    needs softmax = exp(log_probs) and the one-hot positions, nothing else.
    """
    xp = get_array_module(logits)
    log_probs = log_softmax(logits, axis=1)
    rows = xp.arange(logits.shape[0])
    loss = -log_probs[rows, target].mean()
    return loss.astype(logits.dtype), (log_probs, target)


def cross_entropy_backward(dloss, cache):
    """dlogits = (softmax - onehot(target)) / N * dloss, fused in one pass."""
    if fast_paths.active(cache[0]):  # CuPy log-probabilities: one fused ElementwiseKernel
        return cuda_elementwise.cross_entropy_backward(dloss, cache)
    xp = get_array_module(dloss)
    log_probs, target = cache
    n = log_probs.shape[0]
    dlogits = xp.exp(log_probs)
    dlogits[xp.arange(n), target] -= 1
    dlogits *= dloss / n
    return dlogits
