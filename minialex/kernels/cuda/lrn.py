"""Local response normalisation as CUDA kernels: a running sum over channels, one thread per (n, channel block, pixel).

Same maths and cache as ``minialex.kernels.lrn`` (which calls these on CuPy arrays):

    scale_c = k + alpha/size * sum_{j = c - size//2}^{c + (size-1)//2} a_j^2
    b_c     = a_c * scale_c^(-beta)
    dx_i    = dout_i * scale_i^(-beta) - (2*alpha*beta/size) * a_i * received_i
    received_i = sum_{c = i - (size-1)//2}^{i + size//2} dout_c * a_c * scale_c^(-beta) / scale_c

Each thread owns one pixel s of one image n and a block of CHANNEL_BLOCK
consecutive channels c0 .. c1-1. It fills the window of c0, then walks its
channels in order, keeping the window's sum as it slides: add the channel
that enters at the front, subtract the one that leaves at the back. That is
two updates per channel whatever the size, instead of re-adding `size` terms
(the generic kernel's shifted slices). The backward is the same walk with the
transposed window (the one channel of difference matters for even sizes).

Why blocks of channels and not one thread for all C channels: one thread per
(n, pixel) is only N*H*W threads (93k for lrn2 at batch 128), each walking
256 channels one dependent step after another, which leaves most of an H100
idle (measured: lrn2 at batch 32 barely 1.6x faster than the generic CuPy
path). Blocks of 8 channels give C/8 times more threads for a refill of
`size - 1` extra reads per block, which come from cache. Measured on an H100
at batch 128 (forward + backward, x faster than the generic path): blocks of
4, 8, 16, 32, 64 channels gave 5.9, 6.1, 5.7, 5.5, 5.2x at lrn1 and 5.4,
5.6, 4.9, 5.1, 4.7x at lrn2.

The running sum is kept in double: it adds AND subtracts, so in float32 the
rounding of a large term that has left the window would linger in the sum of
the small ones that remain. The squares are taken in double too (a float
square overflows past |a| = 1.8e19). Otherwise the terms and the outputs are
computed in T, as the generic kernel does.

Large inputs, as in the generic kernel: where a channel's scale passes
``wide_limit`` (``generic_lrn.wide_arithmetic_limit(T)``, 4.3e9 for float,
inf for double, so never for double), that channel's power and output are computed in double and
rounded to T; the stored scale is then inf where T cannot hold it. The
backward recognises such a channel by its stored scale, recomputes its scale
in double from x (the forward window, `size` reads, only for those channels)
and computes its terms in double. The generic kernel decides once for the
whole array instead of per channel; both compute the same float64 values
wherever T would overflow.

Memory layout x (N, C, S) with S the pixels (any trailing axes, flattened):
x[n, c, s] sits at (n*C + c)*S + s, so the threads of a warp (consecutive s)
read consecutive addresses at every channel step. The grid is
(S) x (N * channel blocks). The pointers are __restrict__ (no output aliases
an input) and the walk is unrolled, so the compiler may issue the loads of
the next channels before the stores of this one: a thread then waits on
several memory reads at once instead of one after another.
"""

import functools

import numpy as np

from minialex.kernels import lrn as generic_lrn

from . import check_int32, cupy, int32s, launch, raw_kernel

#: Channels per thread (see the module docstring for why not all of them).
CHANNEL_BLOCK = 8

_HELPERS = r"""
__device__ inline float power(float base, float exponent) { return powf(base, exponent); }
__device__ inline double power(double base, double exponent) { return pow(base, exponent); }
"""

_FORWARD_SOURCE = _HELPERS + r"""
extern "C" __global__ void lrn_forward(
    const T* __restrict__ x, T* __restrict__ out, T* __restrict__ scale, T* __restrict__ scale_pow,
    const int N, const int C, const int S, const int before, const int after,
    const int channel_block, const double k, const double alpha_over_size, const double beta,
    const double wide_limit)
{
    const int s = blockIdx.x * blockDim.x + threadIdx.x;       // the pixel this thread owns
    if (s >= S) return;
    const int blocks = (C + channel_block - 1) / channel_block;
    for (int plane = blockIdx.y; plane < N * blocks; plane += gridDim.y) {
        const int n = plane / blocks;
        const int c0 = (plane % blocks) * channel_block;
        const int c1 = min(c0 + channel_block, C);
        const long long start = (long long)n * C * S + s;
        const T* a = x + start;                                // a[c * S] = x[n, c, s]
        // The window of channel c0 is channels c0-before .. c0+after; fill all but its
        // last channel, which the loop adds as it "enters" at c = c0.
        double window = 0.0;
        for (int j = max(c0 - before, 0); j < c0 + after && j < C; ++j) {
            const double value = (double)a[(long long)j * S];
            window += value * value;
        }
        #pragma unroll 4
        for (int c = c0; c < c1; ++c) {
            const int entering = c + after;
            if (entering < C) {
                const double value = (double)a[(long long)entering * S];
                window += value * value;
            }
            const int leaving = c - before - 1;
            if (c > c0 && leaving >= 0) {                      // at c0 it was never added
                const double value = (double)a[(long long)leaving * S];
                window -= value * value;
            }
            const double wide_scale = k + alpha_over_size * window;
            const long long at = start + (long long)c * S;
            const T a_c = a[(long long)c * S];
            if (!(wide_scale > wide_limit)) {                  // the usual case: T arithmetic
                const T scale_c = (T)wide_scale;
                const T scale_pow_c = power(scale_c, (T)(-beta));
                scale[at] = scale_c;
                scale_pow[at] = scale_pow_c;
                out[at] = a_c * scale_pow_c;
            } else {                                           // huge a: double, rounded to T
                const double wide_pow = pow(wide_scale, -beta);
                scale[at] = (T)wide_scale;                     // inf where T cannot hold it
                scale_pow[at] = (T)wide_pow;
                out[at] = (T)((double)a_c * wide_pow);
            }
        }
    }
}
"""

_BACKWARD_SOURCE = r"""
// Channel c's scale in double, from x: the forward's window sum, for a channel whose
// stored scale is past wide_limit (inf, or too large for T arithmetic). `a` points at
// x[n, 0, s]; the forward window is c - after .. c + before (before/after are transposed).
__device__ double wide_scale_of(const T* a, const int c, const int C, const long long S,
                                const int before, const int after, const double k,
                                const double alpha_over_size)
{
    double window = 0.0;
    for (int j = max(c - after, 0); j <= c + before && j < C; ++j) {
        const double value = (double)a[j * S];
        window += value * value;
    }
    return k + alpha_over_size * window;
}

// dout_c * a_c * scale_c^(-beta) / scale_c, the term channel c adds to `received`.
__device__ double received_term(const T* dout, const T* x, const T* scale, const T* scale_pow,
                                const long long start, const int c, const int C, const long long S,
                                const int before, const int after, const double k,
                                const double alpha_over_size, const double beta, const double wide_limit)
{
    const long long at = start + c * S;
    if (!((double)scale[at] > wide_limit)) return (double)(dout[at] * x[at] * scale_pow[at] / scale[at]);
    const double wide_scale = wide_scale_of(x + start, c, C, S, before, after, k, alpha_over_size);
    return (double)dout[at] * (double)x[at] * pow(wide_scale, -beta - 1.0);
}

extern "C" __global__ void lrn_backward(
    const T* __restrict__ dout, const T* __restrict__ x, const T* __restrict__ scale,
    const T* __restrict__ scale_pow, T* __restrict__ dx,
    const int N, const int C, const int S, const int before, const int after,
    const int channel_block, const double coefficient,
    const double k, const double alpha_over_size, const double beta, const double wide_limit)
{
    // before = (size-1)//2, after = size//2: the transposed window. coefficient = 2*alpha*beta/size.
    // k, alpha_over_size, beta, wide_limit: only for channels whose scale passed wide_limit.
    const int s = blockIdx.x * blockDim.x + threadIdx.x;
    if (s >= S) return;
    const int blocks = (C + channel_block - 1) / channel_block;
    for (int plane = blockIdx.y; plane < N * blocks; plane += gridDim.y) {
        const int n = plane / blocks;
        const int c0 = (plane % blocks) * channel_block;
        const int c1 = min(c0 + channel_block, C);
        const long long start = (long long)n * C * S + s;
        // received = sum over the window of dout_c * a_c * scale_c^(-beta) / scale_c.
        double received = 0.0;
        auto term = [&](const int channel) {
            return received_term(dout, x, scale, scale_pow, start, channel, C, (long long)S,
                                 before, after, k, alpha_over_size, beta, wide_limit);
        };
        for (int j = max(c0 - before, 0); j < c0 + after && j < C; ++j) {
            received += term(j);
        }
        #pragma unroll 4
        for (int c = c0; c < c1; ++c) {
            const int entering = c + after;
            if (entering < C) {
                received += term(entering);
            }
            const int leaving = c - before - 1;
            if (c > c0 && leaving >= 0) {
                // Recomputed rather than stored: the four values are still in cache.
                received -= term(leaving);
            }
            const long long at = start + (long long)c * S;
            if (!((double)scale[at] > wide_limit)) {           // the usual case: T arithmetic
                dx[at] = dout[at] * scale_pow[at] - (T)coefficient * x[at] * (T)received;
            } else {                                           // huge a: double, rounded to T
                const double wide_scale = wide_scale_of(x + start, c, C, (long long)S, before, after,
                                                        k, alpha_over_size);
                dx[at] = (T)((double)dout[at] * pow(wide_scale, -beta)
                             - coefficient * (double)x[at] * received);
            }
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
    check_int32("N * channel blocks", n * _channel_blocks(c))
    return n, c, s


def _channel_blocks(c):
    """How many CHANNEL_BLOCKs cover c channels; N * blocks must fit the kernels' int plane index."""
    return -(-c // CHANNEL_BLOCK)


def local_response_norm_forward(x, size, alpha, beta, k):
    """(out, LRNCache) for a CuPy float32/float64 x (N, C, ...); arguments checked by the caller."""
    cp = cupy()
    n, c, s = _planes(x.shape)
    with x.device:
        x = cp.ascontiguousarray(x)  # the kernel reads raw row-major memory
        out = cp.empty_like(x)
        scale = cp.empty_like(x)
        scale_pow = cp.empty_like(x)
        launch(_forward_kernel(x.dtype.name), s, n * _channel_blocks(c),
               (x, out, scale, scale_pow) + int32s(n, c, s, size // 2, (size - 1) // 2, CHANNEL_BLOCK)
               + (np.float64(k), np.float64(alpha / size), np.float64(beta),
                  np.float64(generic_lrn.wide_arithmetic_limit(x.dtype))))
    # wide=None: this kernel decided channel by channel; a generic backward checks the scale.
    return out, generic_lrn.LRNCache(x, scale, scale_pow, size, alpha, beta, k, None)


def local_response_norm_backward(dout, cache):
    """dx shaped like x, from dout and the LRNCache of either forward path."""
    cp = cupy()
    x, scale, scale_pow, size, alpha, beta, k, _ = cache  # decides per channel, not by `wide`
    n, c, s = _planes(x.shape)
    with dout.device:
        dout = cp.ascontiguousarray(dout.astype(x.dtype, copy=False))
        x, scale, scale_pow = (cp.ascontiguousarray(a) for a in (x, scale, scale_pow))
        dx = cp.empty_like(x)
        launch(_backward_kernel(x.dtype.name), s, n * _channel_blocks(c),
               (dout, x, scale, scale_pow, dx) + int32s(n, c, s, (size - 1) // 2, size // 2, CHANNEL_BLOCK)
               + (np.float64(2.0 * alpha * beta / size), np.float64(k), np.float64(alpha / size),
                  np.float64(beta), np.float64(generic_lrn.wide_arithmetic_limit(x.dtype))))
    return dx
