"""Local response normalisation as CUDA kernels: one thread per (n, pixel), a running sum over channels.

Same maths and cache as ``minialex.kernels.lrn`` (which calls these on CuPy arrays):

    scale_c = k + alpha/size * sum_{j = c - size//2}^{c + (size-1)//2} a_j^2
    b_c     = a_c * scale_c^(-beta)
    dx_i    = dout_i * scale_i^(-beta) - (2*alpha*beta/size) * a_i * received_i
    received_i = sum_{c = i - (size-1)//2}^{i + size//2} dout_c * a_c * scale_c^(-beta) / scale_c

Each thread owns one pixel s of one image n and walks the channels c = 0..C-1
in order, keeping the window's sum as it slides: add the channel that enters
at the front, subtract the one that leaves at the back. That is two updates
per channel whatever the size, instead of re-adding `size` terms (the
generic kernel's shifted slices). The backward is the same walk with the
transposed window (the one channel of difference matters for even sizes).

The running sum is kept in double: it adds AND subtracts, so in float32 the
rounding of a large term that has left the window would linger in the sum of
the small ones that remain. Only the accumulator is double; the terms and the
outputs are computed in T, as the generic kernel does.

Memory layout x (N, C, S) with S the pixels (any trailing axes, flattened):
x[n, c, s] sits at (n*C + c)*S + s, so the threads of a warp (consecutive s)
read consecutive addresses at every channel step. The grid is (S) x (N).
"""

import functools

import numpy as np

from minialex.kernels import lrn as generic_lrn

from . import check_int32, cupy, int32s, launch, raw_kernel

_HELPERS = r"""
__device__ inline float power(float base, float exponent) { return powf(base, exponent); }
__device__ inline double power(double base, double exponent) { return pow(base, exponent); }
"""

_FORWARD_SOURCE = _HELPERS + r"""
extern "C" __global__ void lrn_forward(
    const T* x, T* out, T* scale, T* scale_pow,
    const int N, const int C, const int S, const int before, const int after,
    const double k, const double alpha_over_size, const double beta)
{
    const int s = blockIdx.x * blockDim.x + threadIdx.x;       // the pixel this thread owns
    if (s >= S) return;
    for (int n = blockIdx.y; n < N; n += gridDim.y) {
        const T* a = x + (long long)n * C * S + s;             // a[c * S] = x[n, c, s]
        const long long start = (long long)n * C * S + s;
        // The window of channel 0 is channels -before .. after; fill all but its last
        // channel, which the loop adds as it "enters" at c = 0.
        double window = 0.0;
        for (int j = 0; j < after && j < C; ++j) {
            const T value = a[(long long)j * S];
            window += (double)(value * value);
        }
        for (int c = 0; c < C; ++c) {
            const int entering = c + after;
            if (entering < C) {
                const T value = a[(long long)entering * S];
                window += (double)(value * value);
            }
            const int leaving = c - before - 1;
            if (leaving >= 0) {
                const T value = a[(long long)leaving * S];
                window -= (double)(value * value);
            }
            const T scale_c = (T)(k + alpha_over_size * window);
            const T scale_pow_c = power(scale_c, (T)(-beta));
            const long long at = start + (long long)c * S;
            scale[at] = scale_c;
            scale_pow[at] = scale_pow_c;
            out[at] = a[(long long)c * S] * scale_pow_c;
        }
    }
}
"""

_BACKWARD_SOURCE = r"""
extern "C" __global__ void lrn_backward(
    const T* dout, const T* x, const T* scale, const T* scale_pow, T* dx,
    const int N, const int C, const int S, const int before, const int after,
    const double coefficient)
{
    // before = (size-1)//2, after = size//2: the transposed window. coefficient = 2*alpha*beta/size.
    const int s = blockIdx.x * blockDim.x + threadIdx.x;
    if (s >= S) return;
    for (int n = blockIdx.y; n < N; n += gridDim.y) {
        const long long start = (long long)n * C * S + s;
        // received = sum over the window of dout_c * a_c * scale_c^(-beta) / scale_c.
        double received = 0.0;
        for (int j = 0; j < after && j < C; ++j) {
            const long long at = start + (long long)j * S;
            received += (double)(dout[at] * x[at] * scale_pow[at] / scale[at]);
        }
        for (int c = 0; c < C; ++c) {
            const int entering = c + after;
            if (entering < C) {
                const long long at = start + (long long)entering * S;
                received += (double)(dout[at] * x[at] * scale_pow[at] / scale[at]);
            }
            const int leaving = c - before - 1;
            if (leaving >= 0) {
                // Recomputed rather than stored: the four values are still in cache.
                const long long at = start + (long long)leaving * S;
                received -= (double)(dout[at] * x[at] * scale_pow[at] / scale[at]);
            }
            const long long at = start + (long long)c * S;
            dx[at] = dout[at] * scale_pow[at] - (T)coefficient * x[at] * (T)received;
        }
    }
}
"""


@functools.lru_cache(maxsize=None)
def _forward_kernel(dtype_name):
    return raw_kernel(_FORWARD_SOURCE, "lrn_forward", T=dtype_name)


@functools.lru_cache(maxsize=None)
def _backward_kernel(dtype_name):
    return raw_kernel(_BACKWARD_SOURCE, "lrn_backward", T=dtype_name)


def _planes(shape):
    """(N, C, S) of an (N, C, ...) shape, S the product of the trailing axes."""
    n, c = shape[0], shape[1]
    s = int(np.prod(shape[2:], dtype=np.int64))
    check_int32("N", n)
    check_int32("C", c)
    check_int32("pixels per channel", s)
    return n, c, s


def local_response_norm_forward(x, size, alpha, beta, k):
    """(out, LRNCache) for a CuPy float32/float64 x (N, C, ...); arguments checked by the caller."""
    cp = cupy()
    n, c, s = _planes(x.shape)
    with x.device:
        x = cp.ascontiguousarray(x)  # the kernel reads raw row-major memory
        out = cp.empty_like(x)
        scale = cp.empty_like(x)
        scale_pow = cp.empty_like(x)
        launch(_forward_kernel(x.dtype.name), s, n,
               (x, out, scale, scale_pow) + int32s(n, c, s, size // 2, (size - 1) // 2)
               + (np.float64(k), np.float64(alpha / size), np.float64(beta)))
    return out, generic_lrn.LRNCache(x, scale, scale_pow, size, alpha, beta)


def local_response_norm_backward(dout, cache):
    """dx shaped like x, from dout and the LRNCache of either forward path."""
    cp = cupy()
    x, scale, scale_pow, size, alpha, beta = cache
    n, c, s = _planes(x.shape)
    with dout.device:
        dout = cp.ascontiguousarray(dout.astype(x.dtype, copy=False))
        x, scale, scale_pow = (cp.ascontiguousarray(a) for a in (x, scale, scale_pow))
        dx = cp.empty_like(x)
        launch(_backward_kernel(x.dtype.name), s, n,
               (dout, x, scale, scale_pow, dx) + int32s(n, c, s, (size - 1) // 2, size // 2)
               + (np.float64(2.0 * alpha * beta / size),))
    return dx
