"""Max pooling as CUDA kernels: one thread per output forward, one per input pixel backward.

Same semantics and cache as ``minialex.kernels.pool`` (which calls these on CuPy arrays):

    out[n, c, y, x] = max_{i, j} x_padded[n, c, y*sh + i, x*sw + j]     (padding = -inf)
    argmax[n, c, y, x] = i*kw + j of the FIRST maximum in row-major window order

Forward: a thread per output walks the real pixels of its kh x kw window in
row-major order, skipping the padding, and keeps a new value only when it is
strictly greater (>), so the first maximum wins ties, as in PyTorch and the
generic kernel. The first real pixel always starts the scan, so a window of
all -inf credits that pixel, never the padding (whose gradient would vanish),
exactly as the generic kernel's "first real offset equal to the maximum".

Backward: a thread per input pixel (n, c, h, w) visits the outputs whose
windows cover it (the same index range as col2im, see conv.py) and adds
dout[n, c, y, x] where argmax[n, c, y, x] names this pixel's offset in that
window:

    dx[n, c, h, w] = sum over covering (y, x) with argmax == (h + ph - y*sh)*kw + (w + pw - x*sw)
                     of dout[n, c, y, x]

Every pixel is written once by one thread: no atomics, deterministic, and
the terms are added in the generic kernels' order (outputs in row-major
order, which is window offset descending).

The grid is (pixels of one plane) x (planes), a plane being one (n, c) image.
"""

import functools

from minialex.kernels import pool as generic_pool

from . import NEGATIVE_INFINITY, check_int32, cupy, int32s, launch, raw_kernel

_FORWARD_SOURCE = NEGATIVE_INFINITY + r"""
extern "C" __global__ void max_pool2d_forward(
    const T* x, T* out, A* argmax,
    const int H, const int W, const int kh, const int kw,
    const int sh, const int sw, const int ph, const int pw,
    const int oh, const int ow, const int planes)
{
    const int index = blockIdx.x * blockDim.x + threadIdx.x;   // output (y, x) inside a plane
    if (index >= oh * ow) return;
    const int top = (index / ow) * sh - ph;                     // window corner in image coordinates
    const int left = (index % ow) * sw - pw;
    for (int plane = blockIdx.y; plane < planes; plane += gridDim.y) {
        const T* image = x + (long long)plane * H * W;
        T best = negative_infinity(T());
        int best_offset = 0;
        bool found = false;                                     // a real pixel seen yet?
        for (int i = 0; i < kh; ++i) {
            const int h = top + i;
            for (int j = 0; j < kw; ++j) {
                const int w = left + j;
                if (h < 0 || h >= H || w < 0 || w >= W) continue;   // padding never wins
                const T value = image[h * W + w];
                // The first real pixel always starts the scan; later ones must be strictly
                // greater, so the first maximum in row-major order wins ties.
                if (!found || value > best) {
                    best = value;
                    best_offset = i * kw + j;
                    found = true;
                }
            }
        }
        const long long at = (long long)plane * oh * ow + index;
        out[at] = best;
        argmax[at] = (A)best_offset;
    }
}
"""

_BACKWARD_SOURCE = r"""
extern "C" __global__ void max_pool2d_backward(
    const T* dout, const A* argmax, T* dx,
    const int H, const int W, const int kh, const int kw,
    const int sh, const int sw, const int ph, const int pw,
    const int oh, const int ow, const int planes)
{
    const int pixel = blockIdx.x * blockDim.x + threadIdx.x;   // input (h, w) inside a plane
    if (pixel >= H * W) return;
    const int hp = pixel / W + ph;                              // in padded coordinates
    const int wp = pixel % W + pw;
    // Outputs whose window covers (hp, wp): y*sh <= hp <= y*sh + kh - 1, likewise x.
    const int y_first = hp < kh ? 0 : (hp - kh) / sh + 1;
    const int y_last = min(hp / sh, oh - 1);
    const int x_first = wp < kw ? 0 : (wp - kw) / sw + 1;
    const int x_last = min(wp / sw, ow - 1);
    for (int plane = blockIdx.y; plane < planes; plane += gridDim.y) {
        const long long plane_start = (long long)plane * oh * ow;
        T total = 0;
        // y, x ascending (row-major over the outputs) = window offset descending: the generic
        // backward's order of addition, so both paths give the same float sums.
        for (int y = y_first; y <= y_last; ++y) {
            for (int x = x_first; x <= x_last; ++x) {
                const int offset = (hp - y * sh) * kw + (wp - x * sw);
                const long long at = plane_start + y * ow + x;
                if ((int)argmax[at] == offset) total += dout[at];
            }
        }
        dx[(long long)plane * H * W + pixel] = total;
    }
}
"""


@functools.lru_cache(maxsize=None)
def _forward_kernel(dtype_name, argmax_name):
    return raw_kernel(_FORWARD_SOURCE, "max_pool2d_forward", T=dtype_name, A=argmax_name)


@functools.lru_cache(maxsize=None)
def _backward_kernel(dtype_name, argmax_name):
    return raw_kernel(_BACKWARD_SOURCE, "max_pool2d_backward", T=dtype_name, A=argmax_name)


def max_pool2d_forward(x, kernel_size, stride, padding):
    """(out, MaxPoolCache) of max pooling, for a CuPy float32/float64 x (N, C, H, W).

    kernel_size, stride, padding are (h, w) pairs already checked by
    ``minialex.kernels.pool.max_pool2d_forward``, which calls this.
    """
    cp = cupy()
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    n, c, h, w = x.shape
    oh = generic_pool.pool_output_size(h, kh, sh, ph)
    ow = generic_pool.pool_output_size(w, kw, sw, pw)
    check_int32("N*C", n * c)
    check_int32("H*W", h * w)
    with x.device:
        x = cp.ascontiguousarray(x)  # the kernel reads raw row-major memory
        out = cp.empty((n, c, oh, ow), dtype=x.dtype)
        # The same argmax dtype as the generic kernel (uint8 for windows up to 256).
        argmax = cp.empty((n, c, oh, ow), dtype=generic_pool._argmax_dtype(cp, kh * kw))
        launch(_forward_kernel(x.dtype.name, argmax.dtype.name), oh * ow, n * c,
               (x, out, argmax) + int32s(h, w, kh, kw, sh, sw, ph, pw, oh, ow, n * c))
    cache = generic_pool.MaxPoolCache(argmax, (n, c, h, w), x.dtype, (kh, kw), (sh, sw), (ph, pw))
    return out, cache


def max_pool2d_backward(dout, cache):
    """dx (N, C, H, W) from dout (N, C, oh, ow) and the MaxPoolCache of either forward path."""
    cp = cupy()
    argmax, (n, c, h, w), x_dtype, (kh, kw), (sh, sw), (ph, pw) = cache
    oh, ow = argmax.shape[2:]
    with dout.device:
        dout = cp.ascontiguousarray(dout.astype(x_dtype, copy=False))
        argmax = cp.ascontiguousarray(argmax)
        dx = cp.empty((n, c, h, w), dtype=x_dtype)
        launch(_backward_kernel(dout.dtype.name, argmax.dtype.name), h * w, n * c,
               (dout, argmax, dx) + int32s(h, w, kh, kw, sh, sw, ph, pw, oh, ow, n * c))
    return dx
