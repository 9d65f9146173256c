"""Max pooling: each output is the largest input in its window.

    out[n, c, y, x] = max over (i, j) in the kh x kw window of
                      x_padded[n, c, y*sh + i, x*sw + j]

The layer has no parameters. Its gradient is a routing: d out / d x is 1 at
the window's maximum and 0 elsewhere, so the backward pass sends each output's
gradient back to the one input that won its window. AlexNet pools 3x3 with
stride 2, so neighbouring windows overlap; an input that wins several windows
receives the SUM of their gradients.

The forward pass keeps, for every output, only the index of the winning
offset inside its window (a small integer array, the "argmax"); that is all
the backward pass needs.

Shapes: x (N, C, H, W) -> out (N, C, oh, ow) with oh = (H + 2*ph - kh)//sh + 1
(PyTorch's floor mode, ceil_mode=False), the same for ow.

Both passes loop over the kh*kw window offsets, never over pixels: at a fixed
offset (i, j) the pixels under every window form one strided slice
``x_padded[:, :, i::sh, j::sw]``, so a 3x3 pool is nine vectorised steps.

max_pool2d_forward and max_pool2d_backward are the clear versions. Beside
each sits a CPU speed-up that it runs on NumPy arrays unless switched off:
``_max_pool2d_forward_one_pass`` (the maximum and its offset found in the
same pass, ``one_pass_on_cpu=False`` to skip it) and
``_max_pool2d_backward_scatter`` (``np.add.at`` in cache-sized chunks,
``scatter_on_cpu=False`` to skip it);
the tests check that each agrees with its clear version bit for bit.
CuPy arrays go to the CUDA kernels of ``minialex.kernels.cuda.pool``
(switched by ``use_fast_paths``).
"""

import functools
from typing import NamedTuple, Tuple

import numpy as np

from minialex.backend import get_array_module
from minialex.kernels import check_image_batch, check_pair, threads
from minialex.kernels import cuda as fast_paths
from minialex.kernels.cuda import pool as cuda_pool


def pool_output_size(size, kernel, stride, padding):
    """Output length along one axis: floor((size + 2*padding - kernel) / stride) + 1 (PyTorch's floor mode)."""
    return (size + 2 * padding - kernel) // stride + 1


class MaxPoolCache(NamedTuple):
    """What max_pool2d_forward saves for max_pool2d_backward."""

    argmax: object  # (N, C, oh, ow) index i*kw + j of each window's first maximum
    x_shape: Tuple[int, int, int, int]
    x_dtype: object
    kernel_size: Tuple[int, int]
    stride: Tuple[int, int]
    padding: Tuple[int, int]


def _check_arguments(x, kernel_size, stride, padding):
    """kernel_size, stride and padding as (h, w) pairs, or a ValueError/TypeError naming what is wrong."""
    kernel_size = check_pair("kernel_size", kernel_size, 1)
    stride = check_pair("stride", stride, 1)
    padding = check_pair("padding", padding, 0)
    check_image_batch("max_pool2d", x)
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    if ph > kh // 2 or pw > kw // 2:
        raise ValueError(
            f"padding must be between 0 and half the kernel size, got padding {padding} "
            f"for kernel_size {kernel_size}"
        )
    _, _, H, W = x.shape
    oh = pool_output_size(H, kh, sh, ph)
    ow = pool_output_size(W, kw, sw, pw)
    if oh < 1 or ow < 1:
        raise ValueError(
            f"max_pool2d output would be empty: input {H}x{W} with kernel {kernel_size}, "
            f"stride {stride}, padding {padding} gives {oh}x{ow}"
        )
    return kernel_size, stride, padding


def _argmax_dtype(xp, window_area):
    # The offset index only has to count up to kh*kw - 1: one byte for every
    # realistic kernel, which keeps the cache 4-8x smaller than the output.
    return xp.uint8 if window_area <= 256 else xp.int32


def _window_slice(offset, stride, out_size):
    """Rows (or columns) of the padded input that window offset ``offset`` touches.

    Output position y reads padded row y*stride + offset, for y = 0 .. out_size-1.
    """
    return slice(offset, offset + stride * (out_size - 1) + 1, stride)


def _reads_real_pixels(offset, kh, kw, sh, sw, ph, pw, H, W, oh, ow, xp):
    """(oh, ow) booleans: True where window offset i*kw + j reads a real pixel, not the padding.

    At offset (i, j) the window of output (y, x) reads padded row y*sh + i and
    column x*sw + j; the real image occupies rows ph .. ph+H-1 and columns
    pw .. pw+W-1. Broadcasts against (N, C, oh, ow).
    """
    i, j = divmod(offset, kw)
    rows = xp.arange(oh) * sh + i
    cols = xp.arange(ow) * sw + j
    real_row = (rows >= ph) & (rows < ph + H)
    real_col = (cols >= pw) & (cols < pw + W)
    return real_row[:, None] & real_col[None, :]


def max_pool2d_forward(x, kernel_size, stride, padding, one_pass_on_cpu=True):
    """Max pooling over kh x kw windows of an NCHW batch.

    out[n, c, y, x] = max_{i, j} x_padded[n, c, y*sh + i, x*sw + j], the
    padding being -inf so that it never wins a window.

    Args:
        x: (N, C, H, W) floating array (NumPy or CuPy).
        kernel_size, stride, padding: (h, w) pairs of ints (an int means both);
            padding must be at most half the kernel, as PyTorch requires, so
            every window holds at least one real pixel. The padding never
            wins: a window whose real pixels are all -inf credits the first
            of them, as PyTorch does. (NaN is not handled.)
        one_pass_on_cpu: on NumPy arrays, compute the same out and argmax with
            ``_max_pool2d_forward_one_pass`` (about 1.5x faster); False runs
            the two loops below. CuPy arrays take the CUDA kernel whatever
            this says.

    Returns:
        out: (N, C, oh, ow), x's dtype.
        cache: MaxPoolCache holding the argmax, the offset index i*kw + j of
            each window's FIRST maximum in row-major window order (PyTorch's
            tie rule), plus x's shape and dtype and the pooling geometry.
    """
    (kh, kw), (sh, sw), (ph, pw) = _check_arguments(x, kernel_size, stride, padding)
    if fast_paths.active(x):  # CuPy array: one CUDA thread per output
        return cuda_pool.max_pool2d_forward(x, (kh, kw), (sh, sw), (ph, pw))

    xp = get_array_module(x)
    N, C, H, W = x.shape
    oh = pool_output_size(H, kh, sh, ph)
    ow = pool_output_size(W, kw, sw, pw)
    if ph or pw:
        x_padded = xp.full((N, C, H + 2 * ph, W + 2 * pw), -xp.inf, dtype=x.dtype)
        x_padded[:, :, ph : ph + H, pw : pw + W] = x
    else:
        x_padded = x

    def window(offset):
        """The strided view of x_padded that window offset i*kw + j reads, one entry per output."""
        i, j = divmod(offset, kw)
        return x_padded[:, :, _window_slice(i, sh, oh), _window_slice(j, sw, ow)]

    argmax_dtype = _argmax_dtype(xp, kh * kw)
    if one_pass_on_cpu and xp is np:  # the CPU speed-up beside the two loops below
        found = _max_pool2d_forward_one_pass(x_padded, (kh, kw), (sh, sw), (oh, ow), argmax_dtype,
                                             padded=bool(ph or pw))
        if found is not None:
            out, argmax = found
            return out, MaxPoolCache(argmax, (N, C, H, W), x.dtype, (kh, kw), (sh, sw), (ph, pw))

    # First the maximum: one in-place xp.maximum per offset (cheap, no masks).
    out = window(0).copy()
    for offset in range(1, kh * kw):
        xp.maximum(out, window(offset), out=out)
    # Then which offset holds it: the FIRST offset, in row-major window order,
    # whose value equals the maximum (PyTorch's tie rule). `found` marks the
    # windows whose winner is known, so a later equal value is ignored. Plain
    # boolean arithmetic is ~2.5x faster than a masked copy per offset.
    # Only real pixels may be found: where the maximum is -inf, a padding -inf
    # equals it too, and its gradient would vanish into the cropped border.
    # (Elsewhere the padding can never equal the maximum: one check spares the
    # masks in the usual case.)
    padding_may_tie = bool(ph or pw) and bool((out == -xp.inf).any())
    argmax = xp.zeros((N, C, oh, ow), dtype=argmax_dtype)
    found = xp.zeros((N, C, oh, ow), dtype=bool)
    for offset in range(kh * kw):
        first_hit = window(offset) == out
        if padding_may_tie:
            first_hit &= _reads_real_pixels(offset, kh, kw, sh, sw, ph, pw, H, W, oh, ow, xp)
        first_hit &= ~found
        found |= first_hit
        argmax += first_hit * argmax_dtype(offset)  # a scalar of argmax's type keeps it uint8

    cache = MaxPoolCache(argmax, (N, C, H, W), x.dtype, (kh, kw), (sh, sw), (ph, pw))
    return out, cache


def _max_pool2d_forward_one_pass(x_padded, kernel_size, stride, out_size, argmax_dtype, padded):
    """The CPU speed-up of max_pool2d_forward: the running maximum and its offset, updated together.

    The clear version reads every offset's strided pixels twice, once for the
    maximum and once to find which offset holds it. Here each offset's
    pixels are copied once into a contiguous buffer (strided rows of
    AlexNet's 13-55 pixels cost NumPy more per row than per pixel) and then
    used twice from there:

        greater = pixels > out        (STRICTLY: an equal later value never takes over,
        out     = max(out, pixels)     so argmax stays the FIRST maximum, the tie rule)
        argmax  = max(argmax, offset * greater)

    The last line is "argmax = offset where greater" without a masked copy:
    offsets only grow, so the new offset beats every earlier one. The images
    of the batch are split over the CPU's threads (minialex.kernels.threads).

    Returns (out, argmax), equal bit for bit to the clear version's, or None
    where they could differ and the clear version must run: a NaN (it never
    compares greater), or a -inf maximum in a padded input (padding at offset
    0 would keep it; the clear version credits the first real pixel).
    NumPy only.
    """
    (kh, kw), (sh, sw), (oh, ow) = kernel_size, stride, out_size
    N, C = x_padded.shape[:2]
    out = np.empty((N, C, oh, ow), dtype=x_padded.dtype)
    argmax = np.empty((N, C, oh, ow), dtype=argmax_dtype)

    def images(start, stop):
        def window(offset):
            i, j = divmod(offset, kw)
            return x_padded[start:stop, :, _window_slice(i, sh, oh), _window_slice(j, sw, ow)]

        running_max, running_argmax = out[start:stop], argmax[start:stop]
        np.copyto(running_max, window(0))
        running_argmax[...] = 0
        pixels = np.empty_like(running_max)
        greater = np.empty(running_max.shape, dtype=bool)
        taken = np.empty(running_max.shape, dtype=argmax_dtype)
        for offset in range(1, kh * kw):
            np.copyto(pixels, window(offset))
            np.greater(pixels, running_max, out=greater)
            np.maximum(running_max, pixels, out=running_max)
            np.multiply(greater, argmax_dtype(offset), out=taken)
            np.maximum(running_argmax, taken, out=running_argmax)

    threads.split(images, N, C * oh * ow * kh * kw)
    if np.isnan(out).any() or (padded and (out == -np.inf).any()):
        return None
    return out, argmax


def max_pool2d_backward(dout, cache, scatter_on_cpu=True):
    """Gradient of max pooling: route each output's gradient to its window's maximum.

    dx[n, c, p, q] = sum over the outputs (y, x) whose window's argmax is the
    pixel (p, q) of dout[n, c, y, x]. Windows that overlap (stride < kernel)
    can pick the same pixel; their gradients add up.

    The clear version: one masked, strided slice-add per window offset.
    Offsets run from the last to the first, so each pixel adds its terms in
    row-major order of the outputs, the order of the two speed-ups (the NumPy
    scatter below and the CUDA kernel): all three give the same float sums,
    bit for bit.

    Args:
        dout: (N, C, oh, ow), the gradient of the loss with respect to out.
        cache: the MaxPoolCache returned by max_pool2d_forward.
        scatter_on_cpu: on NumPy arrays, compute the same sums with
            ``_max_pool2d_backward_scatter`` (4-8x faster); False runs the
            loop below. CuPy arrays take the CUDA kernel whatever this says.

    Returns:
        dx: (N, C, H, W) in x's dtype.
    """
    argmax, (N, C, H, W), x_dtype, (kh, kw), (sh, sw), (ph, pw) = cache
    if tuple(dout.shape) != tuple(argmax.shape):
        raise ValueError(
            f"dout has shape {tuple(dout.shape)}, expected the output shape {tuple(argmax.shape)}"
        )
    if fast_paths.active(dout) and dout.dtype == x_dtype:  # CuPy: one CUDA thread per input pixel
        return cuda_pool.max_pool2d_backward(dout, cache)
    xp = get_array_module(dout, argmax)
    if scatter_on_cpu and xp is np:  # the CPU speed-up beside this loop: same sums, same order
        return _max_pool2d_backward_scatter(dout, cache)

    oh, ow = argmax.shape[2:]
    # Scatter into a padded buffer so that every window offset is one plain
    # strided slice; the padding rows never receive anything and are cropped.
    dx_padded = xp.zeros((N, C, H + 2 * ph, W + 2 * pw), dtype=x_dtype)
    for i in reversed(range(kh)):
        for j in reversed(range(kw)):
            # dout where this offset won the window, else 0: a product with the
            # boolean mask is one multiply, about twice as fast as xp.where here.
            routed = dout.astype(x_dtype, copy=False) * (argmax == i * kw + j)
            # Within one offset the target pixels are distinct, so += is safe;
            # overlapping windows add up across offsets.
            dx_padded[:, :, _window_slice(i, sh, oh), _window_slice(j, sw, ow)] += routed
    if ph or pw:
        return xp.ascontiguousarray(dx_padded[:, :, ph : ph + H, pw : pw + W])
    return dx_padded


def _smallest_unsigned(largest):
    """The narrowest unsigned integer dtype that holds 0 .. largest (np.intp beyond 32 bits)."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if largest <= np.iinfo(dtype).max:
            return dtype
    return np.intp  # (uint64 + intp would give float64)


def _offset_to_shift(argmax, kw, Wp, out):
    """The flat distance i*Wp + j from a window's corner to its maximum, from its offset i*kw + j.

    i*Wp + j = (i*kw + j) + i*(Wp - kw), with i = offset // kw: three passes
    of byte (or short) arithmetic into ``out``, an unsigned dtype that holds
    (kh-1)*Wp + kw-1. Twice as fast as looking the kh*kw shifts up with
    ``take``, which first widens every offset to a 64-bit index (pool2,
    chunks of 65k outputs: 62 against 122 microseconds).
    """
    # casting="unsafe" lets an int32 argmax (windows over 256 pixels) write
    # into ``out``; every value is a non-negative shift that fits it.
    np.floor_divide(argmax, kw, out=out, casting="unsafe")
    np.multiply(out, Wp - kw, out=out)
    np.add(out, argmax, out=out, casting="unsafe")
    return out


@functools.lru_cache(maxsize=16)
def _window_corners(planes, out_size, stride, padded_size):
    """(planes, oh, ow) flat indices of every window's top-left pixel in a chunk of padded planes.

    corner[p, y, x] = p*Hp*Wp + y*sh*Wp + x*sw. The same for every call with
    the same geometry, so it is built once and kept (read-only): on pool5's
    small planes building it took a tenth of the scatter's time.
    """
    (oh, ow), (sh, sw), (Hp, Wp) = out_size, stride, padded_size
    in_plane = (np.arange(oh, dtype=np.intp) * (sh * Wp))[:, None] + np.arange(ow, dtype=np.intp) * sw
    corners = in_plane + (np.arange(planes, dtype=np.intp) * (Hp * Wp))[:, None, None]
    corners.setflags(write=False)
    return corners


# Outputs per np.add.at call in the scatter: their int64 target indices
# (512 KB) stay in the core's cache between being computed and being used.
SCATTER_CHUNK = 1 << 16

# np.add.at, most of the scatter's time, runs no faster on two threads than
# on one; only the zeroing and the index arithmetic around it do. A second
# thread pays for its hand-off (a few tenths of a millisecond on a small
# virtual machine) only with this many outputs of its own. Paired on the
# 2-core EPYC at batch 16, one thread against two: pool5 (147k outputs)
# 0.72 ms against 0.77-0.87, pool2 (692k) 3.5-4.1 against 3.0-3.2, pool1
# (1.1M) 6.4 against 4.8-5.1.
SCATTER_OUTPUTS_PER_THREAD = 1 << 18


def _max_pool2d_backward_scatter(dout, cache):
    """The CPU speed-up of max_pool2d_backward: every output adds its gradient to the one pixel its argmax names.

    The flat index of that pixel in its padded (Hp, Wp) plane is

        window corner (y*sh*Wp + x*sw)  +  offset shift (i*Wp + j)

    and ``np.add.at`` adds the gradients in one C loop, in row-major order of
    the outputs; repeated pixels (overlapping windows) accumulate, where the
    clear loop makes kh*kw masked passes over the outputs.

    The planes (n, c) go in chunks of about SCATTER_CHUNK outputs, each chunk
    zeroing its part of dx, computing its targets and adding: the targets are
    used while they are still in cache, instead of one array of N*C*oh*ow
    int64 written to memory and read back. The offset shifts come from
    ``_offset_to_shift``'s byte arithmetic, the corners from
    ``_window_corners``. ``np.add.at`` does not run faster on two threads at
    once, but on several threads (``threads.split``) one thread's zeroing and
    index arithmetic run while another adds. A pixel belongs to one plane, so the
    sums and their order do not depend on the chunks. Measured on pool1 at
    batch 16 (2-core EPYC): one add.at over the whole batch 12.5-14 ms, in
    chunks 6.7-8.8 ms, in chunks on two threads 6.3-7.3 ms. NumPy only.
    """
    argmax, (N, C, H, W), x_dtype, (kh, kw), (sh, sw), (ph, pw) = cache
    oh, ow = argmax.shape[2:]
    Hp, Wp = H + 2 * ph, W + 2 * pw
    planes = N * C
    planes_per_chunk = max(1, SCATTER_CHUNK // max(1, oh * ow))
    # Holds every shift i*Wp + j, every offset i*kw + j (never larger) and Wp - kw.
    shift_dtype = _smallest_unsigned(max((kh - 1) * Wp + kw - 1, Wp))
    chunk_base = _window_corners(min(planes_per_chunk, planes), (oh, ow), (sh, sw), (Hp, Wp))
    argmax_planes = argmax.reshape(planes, oh, ow)
    dout_planes = dout.astype(x_dtype, copy=False).reshape(planes, oh * ow)
    dx_padded = np.empty((planes, Hp * Wp), dtype=x_dtype)

    def scatter_planes(start, stop):
        chunk_shape = (min(planes_per_chunk, stop - start), oh, ow)
        shift, target = np.empty(chunk_shape, dtype=shift_dtype), np.empty(chunk_shape, dtype=np.intp)
        for first in range(start, stop, planes_per_chunk):
            last = min(stop, first + planes_per_chunk)
            dx_chunk = dx_padded[first:last]
            dx_chunk.fill(0)
            chunk_shift, chunk_target = shift[: last - first], target[: last - first]
            _offset_to_shift(argmax_planes[first:last], kw, Wp, out=chunk_shift)
            np.add(chunk_base[: last - first], chunk_shift, out=chunk_target)
            np.add.at(dx_chunk.reshape(-1), chunk_target.reshape(-1), dout_planes[first:last].reshape(-1))

    if planes * oh * ow >= 2 * SCATTER_OUTPUTS_PER_THREAD:
        threads.split(scatter_planes, planes, Hp * Wp)
    else:
        scatter_planes(0, planes)
    dx_padded = dx_padded.reshape(N, C, Hp, Wp)
    if ph or pw:
        return np.ascontiguousarray(dx_padded[:, :, ph : ph + H, pw : pw + W])
    return dx_padded
