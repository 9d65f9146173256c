"""im2col and col2im as CUDA kernels: the data movement around the convolution GEMM.

Same layout as ``minialex.kernels.conv`` (which calls these on CuPy arrays):

    x (N, C, H, W) -> col (C*kh*kw, N*oh*ow)
    col[c*kh*kw + i*kw + j, n*oh*ow + y*ow + x] = x_padded[n, c, y*sh + i, x*sw + j]

im2col: one thread per (column, channel), which writes that column's kh*kw
entries of the channel, one row of ``col`` after another. The grid is
(columns) x (channels): neighbouring threads own neighbouring columns, so at
every kernel offset a warp writes neighbouring addresses (coalesced). Reads
outside the image give the zero padding. A first version used one thread per
column element; decoding (n, y, x) and (c, i, j) with six integer divisions
per element made it slower than the generic loop over offsets (conv2 forward
at batch 128 on an H100: 3.4 ms against 2.8 ms), so the decoding is done once
per thread and the offsets are a loop.

col2im: one thread per image pixel (n, c, h, w), which GATHERS the entries of
every window that covers it. Pixel row hp = h + ph (in padded coordinates) is
read by output row y at kernel offset i = hp - y*sh whenever 0 <= i < kh,
that is for

    y from max(0, ceil((hp - kh + 1) / sh))  to  min(oh - 1, floor(hp / sh))

and the same for columns. Each pixel is written by exactly one thread, so
there are no atomics and the result is deterministic. The thread adds its
terms in the order the generic col2im does (kernel offset (i, j) ascending,
i.e. y and x descending), so both paths give the same float sums.
"""

import functools

from minialex.kernels import conv as generic_conv

from . import check_int32, cupy, int32s, launch, raw_kernel

_IM2COL_SOURCE = r"""
extern "C" __global__ void im2col(
    const T* x, T* col,
    const int C, const int H, const int W, const int kh, const int kw,
    const int sh, const int sw, const int ph, const int pw,
    const int oh, const int ow, const int columns)
{
    // This thread's column: (n, y, x) of one output position, decoded once.
    const int column = blockIdx.x * blockDim.x + threadIdx.x;
    if (column >= columns) return;
    const int n = column / (oh * ow);
    const int position = column - n * (oh * ow);
    const int y = position / ow;
    const int x_out = position - y * ow;
    const int h_top = y * sh - ph;       // the window's top-left pixel (may be padding)
    const int w_left = x_out * sw - pw;
    // Channels stride by gridDim.y: one channel per block row of the grid.
    for (int c = blockIdx.y; c < C; c += gridDim.y) {
        const T* plane = x + ((long long)n * C + c) * H * W;
        T* out = col + (long long)c * kh * kw * columns + column;   // row (c, 0, 0) of col
        for (int i = 0; i < kh; ++i) {
            const int h = h_top + i;
            const bool row_inside = h >= 0 && h < H;
            for (int j = 0; j < kw; ++j) {
                const int w = w_left + j;
                *out = (row_inside && w >= 0 && w < W) ? plane[h * W + w] : (T)0;   // zero padding outside
                out += columns;                                                     // next row (c, i, j+1)
            }
        }
    }
}
"""

_COL2IM_SOURCE = r"""
extern "C" __global__ void col2im(
    const T* col, T* x,
    const int C, const int H, const int W, const int kh, const int kw,
    const int sh, const int sw, const int ph, const int pw,
    const int oh, const int ow, const int columns, const int planes)
{
    // This thread's pixel (h, w) inside an (n, c) plane, in padded coordinates (hp, wp).
    const int pixel = blockIdx.x * blockDim.x + threadIdx.x;
    if (pixel >= H * W) return;
    const int hp = pixel / W + ph;
    const int wp = pixel % W + pw;
    // The output rows y whose window covers row hp: y*sh <= hp <= y*sh + kh - 1.
    const int y_first = hp < kh ? 0 : (hp - kh) / sh + 1;
    const int y_last = min(hp / sh, oh - 1);
    const int x_first = wp < kw ? 0 : (wp - kw) / sw + 1;
    const int x_last = min(wp / sw, ow - 1);
    for (int plane = blockIdx.y; plane < planes; plane += gridDim.y) {
        const int n = plane / C;
        const int c = plane % C;
        T total = 0;
        // y, x descending = kernel offset (i, j) ascending: the generic col2im's order.
        for (int y = y_last; y >= y_first; --y) {
            const int i = hp - y * sh;
            for (int x_out = x_last; x_out >= x_first; --x_out) {
                const int j = wp - x_out * sw;
                const long long row = ((long long)c * kh + i) * kw + j;
                total += col[row * columns + ((long long)n * oh + y) * ow + x_out];
            }
        }
        x[(long long)plane * H * W + pixel] = total;
    }
}
"""


@functools.lru_cache(maxsize=None)
def _im2col_kernel(dtype_name):
    return raw_kernel(_IM2COL_SOURCE, "im2col", T=dtype_name)


@functools.lru_cache(maxsize=None)
def _col2im_kernel(dtype_name):
    return raw_kernel(_COL2IM_SOURCE, "col2im", T=dtype_name)


def _geometry(x_shape, kh, kw, stride, padding):
    n, c, h, w = x_shape
    oh = generic_conv.conv_output_size(h, kh, stride[0], padding[0])
    ow = generic_conv.conv_output_size(w, kw, stride[1], padding[1])
    check_int32("N*oh*ow", n * oh * ow)
    check_int32("C*kh*kw", c * kh * kw)
    check_int32("N*C", n * c)
    check_int32("H*W", h * w)
    return oh, ow


def im2col(x, kh, kw, stride, padding):
    """x (N, C, H, W) -> col (C*kh*kw, N*oh*ow), the generic im2col's layout; CuPy float32/float64.

    stride and padding are (h, w) pairs, as in ``minialex.kernels.conv.im2col``.
    """
    cp = cupy()
    n, c, h, w = x.shape
    sh, sw = stride
    ph, pw = padding
    oh, ow = _geometry(x.shape, kh, kw, stride, padding)
    rows, columns = c * kh * kw, n * oh * ow
    with x.device:
        x = cp.ascontiguousarray(x)  # the kernel reads raw row-major memory
        col = cp.empty((rows, columns), dtype=x.dtype)
        launch(_im2col_kernel(x.dtype.name), columns, c,
               (x, col) + int32s(c, h, w, kh, kw, sh, sw, ph, pw, oh, ow, columns))
    return col


def col2im(col, x_shape, kh, kw, stride, padding):
    """col (C*kh*kw, N*oh*ow) -> x (N, C, H, W): each pixel sums the window entries that cover it."""
    cp = cupy()
    n, c, h, w = x_shape
    sh, sw = stride
    ph, pw = padding
    oh, ow = _geometry(x_shape, kh, kw, stride, padding)
    with col.device:
        col = cp.ascontiguousarray(col)
        x = cp.empty((n, c, h, w), dtype=col.dtype)
        launch(_col2im_kernel(col.dtype.name), h * w, n * c,
               (col, x) + int32s(c, h, w, kh, kw, sh, sw, ph, pw, oh, ow, n * oh * ow, n * c))
    return x
