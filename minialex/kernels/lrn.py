"""Local response normalisation (LRN) across channels, as in PyTorch.

Each activation is damped by the energy of its neighbours in nearby channels
at the same pixel, a form of "lateral inhibition" (AlexNet, section 3.3):

    scale_c = k + alpha/size * sum_{j in window(c)} a_j^2
    b_c     = a_c * scale_c^(-beta)

window(c) = channels c - size//2 ... c + (size-1)//2, the channels past either
edge counting as zeros (for even sizes the window reaches one channel further
back than forward). The forward pass saves x, scale and scale^(-beta); the
backward pass needs all three and so recomputes no power.

Large inputs: in float32, a^2 overflows once |a| > 1.8e19, and the scale then
becomes inf and the power inf/inf = NaN, although the true output is a small
finite number (for a = 1e20 and AlexNet's constants about 1.5e-7). So the
float32 arithmetic is used only while the largest scale stays at most
``wide_arithmetic_limit(dtype)`` (4.3e9 for float32, far above what trained
activations reach); past it, forward and backward are computed in float64 and
rounded back to x's dtype. One `max` over the scale decides; the normal case
pays nothing else (the forward records its decision in the cache, so the
backward does not look again). float64 inputs have no wider type to fall back on: they
keep the plain formula, which overflows only for |a| > 1e154.

Which alpha? Three conventions are in use:
  * Krizhevsky et al. 2012 write scale = k + alpha * sum a_j^2 with alpha NOT
    divided by n, and use k = 2, n = 5, alpha = 1e-4, beta = 0.75. To get the
    paper's layer from this function, pass alpha = alpha_paper * size, i.e.
    ``local_response_norm_forward(x, size=5, alpha=5e-4, beta=0.75, k=2.0)``.
  * Caffe and PyTorch divide alpha by size, as this function does, so the
    common AlexNet setting (size 5, alpha 1e-4, beta 0.75) has a neighbour term
    5x smaller than the paper's. Caffe's bvlc_alexnet also leaves k at Caffe's
    default of 1 (PyTorch's default too); minialex's alexnet() uses the paper's
    k = 2.

Shapes: x (N, C, ...) -> out of the same shape and dtype; the usual case is
(N, C, H, W), and (N, C, L) and more trailing axes work as in PyTorch.

Channel windows are computed as shifted sums: the loop runs over the `size`
channel offsets, adding channel-shifted slices (the channels past an edge add
nothing, which is the zero padding), never over pixels or channels.
"""

import numbers
from typing import NamedTuple

import numpy as np

from minialex.backend import get_array_module
from minialex.kernels import cuda as fast_paths
from minialex.kernels import threads
from minialex.kernels.cuda import lrn as cuda_lrn


class LRNCache(NamedTuple):
    """What local_response_norm_forward saves for local_response_norm_backward."""

    x: object  # the input a
    scale: object  # k + alpha/size * windowed sum of a^2, same shape as x
    scale_pow: object  # scale^(-beta), the factor that multiplies x
    size: int
    alpha: float
    beta: float
    k: float  # needed only to recompute the scale in float64 where x's dtype overflowed
    # True if the forward computed in float64 (huge inputs), False if in x's dtype; None if
    # unknown (the CUDA forward decides channel by channel): the backward then checks the scale.
    wide: object = None


def _channel_window_sum(a, before, after, out=None):
    """sum_{j = c - before}^{c + after} a[:, j], zero outside 0..C-1, for every channel c.

    Start from a itself (offset 0), then add each channel-shifted copy: for a
    shift s back, channel c receives channel c - s (so channels s.. get
    a[:, :C-s]); for a shift s forward, channel c receives c + s. Channels past
    either edge simply add nothing: the zero padding without a padded copy.
    ``out``: where to build the sum (a's shape), else a new array.
    """
    channels = a.shape[1]
    if out is None:
        window_sum = a.copy()
    else:
        window_sum = out
        window_sum[...] = a
    for shift in range(1, min(before, channels - 1) + 1):
        window_sum[:, shift:] += a[:, : channels - shift]
    for shift in range(1, min(after, channels - 1) + 1):
        window_sum[:, : channels - shift] += a[:, shift:]
    return window_sum


def _power(scale, exponent, out=None):
    """scale ** exponent; for AlexNet's beta = 0.75 as sqrt(sqrt(s)) / s.

    Two square roots and a division, all in place on one new array, are about
    6x faster than a general power on the CPU and agree with it to float
    round-off (scale >= k > 0). ``out``: where to write it, else a new array.
    """
    xp = get_array_module(scale)
    if exponent != -0.75:
        return xp.power(scale, exponent, out=out)
    result = xp.sqrt(scale, out=out)  # s^(1/2)
    xp.sqrt(result, out=result)  # s^(1/4)
    result /= scale  # s^(1/4 - 1) = s^(-3/4)
    return result


def wide_arithmetic_limit(dtype):
    """The largest scale for which LRN is computed in ``dtype`` itself; past it, in float64.

    The limit is max(dtype) ** (1/4) (4.3e9 for float32): a scale that large
    means a^2 up to about size/alpha * 4.3e9, far from overflow, and keeps
    scale^(-beta) and the backward's a * scale^(-beta-1) normal numbers for
    beta up to 2. Any overflow of a^2 makes the scale inf, above the limit.
    float64 (and anything wider) has no wider type to use: the limit is inf.
    """
    dtype = np.dtype(dtype)
    if dtype.itemsize >= 8:
        return float("inf")
    return float(np.finfo(dtype).max) ** 0.25


def _needs_wide_arithmetic(scale):
    """True when the largest scale (or a NaN) is past wide_arithmetic_limit of its dtype."""
    return not float(scale.max()) <= wide_arithmetic_limit(scale.dtype)


def _scale_and_power(x, size, alpha, beta, k, scale=None, scale_pow=None):
    """scale = k + alpha/size * windowed sum of x^2, and scale^(-beta), both in x's dtype.

    ``scale``, ``scale_pow``: arrays shaped like x to write them into, else new ones.
    """
    scale = _channel_window_sum(x * x, before=size // 2, after=(size - 1) // 2, out=scale)
    scale *= alpha / size  # in place on the fresh window sum: no extra x-sized arrays
    scale += k
    return scale, _power(scale, -beta, out=scale_pow)


def _check_arguments(x, size, alpha, beta, k):
    if getattr(x, "ndim", 0) < 3:
        raise ValueError(
            f"local_response_norm expects x of shape (N, C, ...) with at least 3 axes, "
            f"got shape {getattr(x, 'shape', None)}"
        )
    if x.dtype.kind != "f":
        raise TypeError(f"local_response_norm expects a floating-point x, got dtype {x.dtype}")
    if not isinstance(size, numbers.Integral) or isinstance(size, bool) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}")
    for name, value in (("alpha", alpha), ("beta", beta), ("k", k)):
        if not isinstance(value, numbers.Real) or isinstance(value, bool):
            raise TypeError(f"{name} must be a real number, got {value!r}")


def local_response_norm_forward(x, size, alpha, beta, k):
    """Cross-channel LRN, PyTorch's semantics.

        scale_c = k + alpha/size * sum_{j = c - size//2}^{c + (size-1)//2} a_j^2
        b_c     = a_c * scale_c^(-beta)

    Args:
        x: (N, C, ...) floating array (NumPy or CuPy), channels on axis 1.
        size: number of channels in the window (odd or even).
        alpha, beta, k: the constants above (alpha is divided by size).

    Returns:
        out: same shape and dtype as x.
        cache: LRNCache with x, scale and scale^(-beta) (each shaped like x,
            in x's dtype) and the constants size, alpha, beta, k.

    When the largest scale passes ``wide_arithmetic_limit`` (a float32 a^2
    overflowed, or nearly), out is computed in float64 and rounded to x's
    dtype; the cached scale then holds inf where float32 cannot hold it, and
    the backward, seeing that, recomputes in float64 too.
    """
    _check_arguments(x, size, alpha, beta, k)
    size, alpha, beta, k = int(size), float(alpha), float(beta), float(k)
    if fast_paths.active(x):  # CuPy array: one CUDA thread per (n, pixel), running channel sum
        return cuda_lrn.local_response_norm_forward(x, size, alpha, beta, k)
    # Each image's window sums its own channels: the batch splits over the
    # CPU's threads (minialex.kernels.threads), each range into its slices.
    xp = get_array_module(x)
    scale, scale_pow, out = xp.empty_like(x), xp.empty_like(x), xp.empty_like(x)

    def images(start, stop):
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is caught just below
            _scale_and_power(x[start:stop], size, alpha, beta, k, scale[start:stop], scale_pow[start:stop])
            xp.multiply(x[start:stop], scale_pow[start:stop], out=out[start:stop])

    threads.split(images, x.shape[0], x[:1].size * 8, array=x)
    wide = _needs_wide_arithmetic(scale)
    if wide:  # rare: huge inputs. The same formula in float64, rounded back to x's dtype.
        wide_scale, wide_pow = _scale_and_power(x.astype(np.float64), size, alpha, beta, k)
        out = (x * wide_pow).astype(x.dtype)
        with np.errstate(over="ignore"):  # a scale past float32's range is cached as inf
            scale, scale_pow = wide_scale.astype(x.dtype), wide_pow.astype(x.dtype)
    return out, LRNCache(x, scale, scale_pow, size, alpha, beta, k, wide)


def local_response_norm_backward(dout, cache):
    """Gradient of LRN with respect to its input.

    b_c depends on a_i directly (i = c) and through scale_c for every i in
    window(c), with d scale_c / d a_i = 2 * alpha/size * a_i. Hence

        dx_i = dout_i * scale_i^(-beta)
               - (2*alpha*beta/size) * a_i * sum_{c : i in window(c)} dout_c * a_c * scale_c^(-beta-1)

    The sum runs over the TRANSPOSED window: i is in window(c) for c from
    i - (size-1)//2 to i + size//2, the mirror image of the forward window
    (they differ only for even sizes).

    Args:
        dout: gradient of the loss with respect to out, shaped like x.
        cache: the LRNCache returned by local_response_norm_forward.

    Returns:
        dx: shaped like x, in x's dtype.

    If the forward had to use float64 (a scale past ``wide_arithmetic_limit``),
    so does this: the scale and power are recomputed in float64 from x and k,
    and dx is rounded back to x's dtype.
    """
    x, scale, scale_pow, size, alpha, beta, k, wide = cache
    if tuple(dout.shape) != tuple(x.shape):
        raise ValueError(f"dout has shape {tuple(dout.shape)}, expected the input shape {tuple(x.shape)}")
    dout = dout.astype(x.dtype, copy=False)
    if fast_paths.active(dout, x):  # CuPy arrays: one CUDA thread per (n, pixel)
        return cuda_lrn.local_response_norm_backward(dout, cache)
    if wide is None:  # a cache from the CUDA forward: look at the scale
        wide = _needs_wide_arithmetic(scale)
    a = x
    if wide:  # the forward used float64: so do we, from x and k
        a = x.astype(np.float64)
        scale, scale_pow = _scale_and_power(a, size, alpha, beta, k)
        dout = dout.astype(np.float64)
    dx = get_array_module(a).empty(a.shape, dtype=a.dtype)

    def images(start, stop):  # the batch split over the CPU's threads, as in the forward
        _input_grad(dout[start:stop], a[start:stop], scale[start:stop], scale_pow[start:stop],
                    size, alpha, beta, out=dx[start:stop])

    threads.split(images, a.shape[0], a[:1].size * 8, array=a)
    return dx.astype(x.dtype, copy=False)  # a no-op unless computed in float64


def _input_grad(dout, a, scale, scale_pow, size, alpha, beta, out):
    """The backward's formula on a slice of the batch, written into ``out``."""
    dx = get_array_module(out).multiply(dout, scale_pow, out=out)  # the direct term, and the first factor of the next one
    # dout_c * a_c * scale_c^(-beta-1) as (dout_c * scale_c^(-beta)) * a_c / scale_c: no second power.
    through_scale = dx * a
    through_scale /= scale
    received = _channel_window_sum(through_scale, before=(size - 1) // 2, after=size // 2)
    received *= a
    received *= 2.0 * alpha * beta / size
    dx -= received
    return dx
