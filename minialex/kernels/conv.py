"""2-D convolution as im2col + one matrix multiply.

A convolution slides a (C, kh, kw) window over the zero-padded image and takes
a dot product with each filter at every output position:

    out[n, o, y, x] = bias[o] + sum_{c, i, j} W[o, c, i, j] * x_padded[n, c, y*sh + i, x*sw + j]

im2col copies every window into one column of a matrix ``col`` of shape
(C*kh*kw, N*oh*ow), so the whole convolution becomes a single GEMM:
``W.reshape(O, C*kh*kw) @ col`` -> (O, N*oh*ow). The copy costs memory
(each pixel appears up to kh*kw times) but buys the speed of the BLAS / cuBLAS
matrix multiply. With ``groups`` G the channels split into G independent
convolutions, which is one *batched* GEMM over a leading group axis.

Backward is the same GEMM transposed:

    dW   = dout_cols @ col.T                (per group)
    dcol = W.T @ dout_cols                  (per group)
    dx   = col2im(dcol)                     (the adjoint of im2col: overlaps sum)
    db   = dout summed over n, y, x

Every function here takes and returns plain arrays (NumPy or CuPy: the array
module comes from the inputs) and knows nothing about autograd.

im2col, col2im, conv2d_forward and conv2d_backward are the clear versions.
Beside them sit the CPU speed-ups: reused buffers for the columns and for
dcol (the same numbers in other memory); ``_im2col_from_phases``, which
im2col runs for a strided convolution on NumPy arrays unless called with
``phases_on_cpu=False``; and ``_input_grad_wide``, which conv2d_backward runs
for a stride-1 convolution on NumPy arrays when called with
``wide_rows_on_cpu=True`` (no longer faster once col2im uses every core). CuPy arrays go to the CUDA kernels of
``minialex.kernels.cuda.conv`` (switched by ``use_fast_paths``).
"""

import collections
import numbers
import threading

import numpy as np

from minialex.backend import get_array_module
from minialex.kernels import check_image_batch, check_pair, threads
from minialex.kernels import cuda as fast_paths
from minialex.kernels.cuda import conv as cuda_conv


def conv_output_size(size, kernel, stride, padding):
    """Output length along one axis: floor((size + 2*padding - kernel) / stride) + 1."""
    return (size + 2 * padding - kernel) // stride + 1


def _window_slice(offset, stride, out_size):
    """Rows (or columns) of the padded input that kernel offset ``offset`` touches.

    Output position y reads padded row y*stride + offset, for y = 0 .. out_size-1.
    """
    return slice(offset, offset + stride * (out_size - 1) + 1, stride)


def _check_output_size(x_shape, kh, kw, stride, padding):
    """(oh, ow) of a kh x kw window over x_shape, or a ValueError if the padded input is smaller than the window."""
    _, _, H, W = x_shape
    oh = conv_output_size(H, kh, stride[0], padding[0])
    ow = conv_output_size(W, kw, stride[1], padding[1])
    if oh < 1 or ow < 1:
        raise ValueError(
            f"conv2d output would be empty: input {H}x{W} with kernel {(kh, kw)}, "
            f"stride {stride}, padding {padding} gives {oh}x{ow}"
        )
    return oh, ow


def _check_arguments(x, weight, bias, stride, padding, groups):
    """stride and padding as (h, w) pairs, or a ValueError/TypeError naming what is wrong."""
    stride = check_pair("stride", stride, 1)
    padding = check_pair("padding", padding, 0)
    check_image_batch("conv2d", x)
    if getattr(weight, "ndim", None) != 4:
        raise ValueError(
            f"conv2d expects weight of shape (O, C/groups, kh, kw), got shape {getattr(weight, 'shape', None)}"
        )
    if weight.dtype != x.dtype:
        raise TypeError(f"conv2d expects weight of x's dtype {x.dtype}, got dtype {weight.dtype}")
    if isinstance(groups, bool) or not isinstance(groups, numbers.Integral) or groups < 1:
        raise ValueError(f"groups must be a positive int, got {groups!r}")
    C, (O, C_per_group) = x.shape[1], weight.shape[:2]
    if C % groups or O % groups or C_per_group != C // groups:
        raise ValueError(f"weight {weight.shape} does not fit input {x.shape} with groups={groups}")
    if bias is not None and tuple(bias.shape) != (O,):
        raise ValueError(f"bias must have shape ({O},), got {tuple(bias.shape)}")
    _check_output_size(x.shape, *weight.shape[2:], stride, padding)
    return stride, padding


# --------------------------------------------------------------------------- reused CPU buffers
#
# Two memory speed-ups, NumPy only (CuPy keeps its own memory pool). Memory
# fresh from the operating system arrives as pages the kernel must zero
# first, which costs about as much again as filling them. So the big arrays
# that die young are written into memory that was used before:
#
# * Column matrices. A training step fills one in every conv layer's forward
#   (112 MB for AlexNet's conv2 at batch 16) and drops it after the backward.
#   When the autograd frees a finished Conv2d it hands the columns back
#   (``release_columns``), and the next im2col of that shape refills them
#   (conv2, batch 16: im2col 21 -> 11 ms).
# * dcol, the backward's column-shaped gradient, lives only until col2im has
#   folded it: its GEMM writes into one scratch buffer kept between calls
#   (conv2, batch 16: that GEMM 51 -> 43 ms).
#
# Neither changes a single value: the same numbers land in other memory.

MAX_FREE_COLUMNS = 8  # column shapes kept for reuse; the least recently released goes first
_free_columns = collections.OrderedDict()  # (shape, dtype) -> a released 2-D column array
_free_columns_lock = threading.Lock()


def _take_columns(xp, shape, dtype):
    """A (C*kh*kw, N*oh*ow) array to fill: on the CPU a released one of that shape if any, else new memory."""
    if xp is not np:
        return xp.empty(shape, dtype=dtype)
    with _free_columns_lock:
        columns = _free_columns.pop((shape, np.dtype(dtype)), None)
    return columns if columns is not None else np.empty(shape, dtype=dtype)


def release_columns(cache):
    """Give a conv2d_forward cache's columns back, to be overwritten by a later im2col.

    Only for a cache that nothing will read again: the autograd calls this when
    it frees the graph after backward (never with retain_graph=True). The cache
    loses its "col". CuPy columns are simply dropped.
    """
    if not isinstance(cache, dict):
        raise TypeError(f"release_columns expects the cache dict of conv2d_forward, got {type(cache).__name__}")
    col = cache.pop("col", None)
    if not isinstance(col, np.ndarray) or col.ndim != 2 or not col.flags.c_contiguous:
        return
    with _free_columns_lock:
        _free_columns[(col.shape, col.dtype)] = col
        _free_columns.move_to_end((col.shape, col.dtype))
        while len(_free_columns) > MAX_FREE_COLUMNS:
            _free_columns.popitem(last=False)


def clear_released_columns():
    """Let go of every column buffer kept for reuse (their memory goes back to the system)."""
    with _free_columns_lock:
        _free_columns.clear()


_scratch_space = threading.local()  # per thread: two threads' backward passes never share it


def _scratch(xp, shape, dtype):
    """Where to write a temporary that never escapes: on the CPU a view of one buffer kept between calls.

    The buffer grows to the largest request and stays; whatever it held before
    is overwritten. Only for arrays that are dead before the function returns.
    For CuPy arrays None, i.e. "let the GEMM allocate" (from CuPy's pool).
    """
    if xp is not np:
        return None
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    buffer = getattr(_scratch_space, "buffer", None)
    if buffer is None or buffer.nbytes < nbytes:
        buffer = _scratch_space.buffer = np.empty(nbytes, dtype=np.uint8)
    return buffer[:nbytes].view(dtype).reshape(shape)


# --------------------------------------------------------------------------- im2col and col2im


def im2col(x, kh, kw, stride, padding, phases_on_cpu=True):
    """Unfold every kh x kw window of ``x`` into a column.

    x (N, C, H, W) -> col (C*kh*kw, N*oh*ow) with
        col[c*kh*kw + i*kw + j, n*oh*ow + y*ow + x] = x_padded[n, c, y*sh + i, x*sw + j]
    and zero padding of (ph, pw) on each side.

    Rather than looping over the N*oh*ow windows, loop over the kh*kw kernel
    offsets (i, j): for a fixed offset, the pixels read by all windows form one
    strided slice of the padded image, copied in a single vectorised assignment.

    ``phases_on_cpu``: with a stride above 1 on NumPy arrays, fill the same
    columns with ``_im2col_from_phases`` (bit for bit: only copies); False
    runs the loop below.
    """
    xp = get_array_module(x)
    N, C, H, W = x.shape
    sh, sw = stride = check_pair("stride", stride, 1)
    ph, pw = padding = check_pair("padding", padding, 0)
    oh, ow = _check_output_size(x.shape, kh, kw, stride, padding)
    if fast_paths.active(x):  # CuPy array: one CUDA thread per column element
        return cuda_conv.im2col(x, kh, kw, stride, padding)

    if phases_on_cpu and xp is np and (sh > 1 or sw > 1):  # the CPU speed-up beside the loop below
        return _im2col_from_phases(x, kh, kw, stride, padding, oh, ow)

    x_padded = xp.zeros((N, C, H + 2 * ph, W + 2 * pw), dtype=x.dtype) if ph or pw else x
    # Filled through a 6-D view whose axis order is the row/column order of
    # ``col``, so the final reshape to 2-D is free (no copy).
    col = _take_columns(xp, (C * kh * kw, N * oh * ow), x.dtype).reshape(C, kh, kw, N, oh, ow)

    def images(start, stop):  # on the CPU the batch is split over the cores (kernels.threads)
        if ph or pw:
            x_padded[start:stop, :, ph:ph + H, pw:pw + W] = x[start:stop]
        for i in range(kh):
            rows = _window_slice(i, sh, oh)
            for j in range(kw):
                cols = _window_slice(j, sw, ow)
                # (N, C, oh, ow) -> (C, N, oh, ow): the assignment does the transpose.
                col[:, i, j, start:stop] = x_padded[start:stop, :, rows, cols].transpose(1, 0, 2, 3)

    threads.split(images, N, C * kh * kw * oh * ow, array=x)
    return col.reshape(C * kh * kw, N * oh * ow)


def _im2col_from_phases(x, kh, kw, stride, padding, oh, ow):
    """The CPU speed-up of im2col for a stride above 1: split the image into its stride phases first.

    With stride (sh, sw), kernel offset (i, j) reads every sh-th row and
    sw-th column of the padded image. Writing i = sh*a + r and j = sw*b + q,
    those pixels all lie in ONE phase plane,

        phase[c, r, q, n, a', b'] = x_padded[n, c, sh*a' + r, sw*b' + q],

    at rows a .. a+oh-1 and columns b .. b+ow-1: a dense block. One strided
    copy of the image builds the sh*sw phase planes (channel-major, the
    order of col's rows); after it every offset copies contiguous rows, where
    the clear loop gathered every sh-th float (conv1, stride 4: a 64-byte
    cache line brought 4 useful floats of 16) for each of the kh*kw offsets.
    conv1, batch 16: 21 -> 17 ms. Only copies: the same columns bit for bit.
    NumPy only.
    """
    N, C, H, W = x.shape
    (sh, sw), (ph, pw) = stride, padding
    # Phase planes just big enough for every offset's block: (kh-1)//sh + oh rows.
    rows, cols = (kh - 1) // sh + oh, (kw - 1) // sw + ow
    x_padded = np.zeros((N, C, rows * sh, cols * sw), dtype=x.dtype)
    real_rows, real_cols = min(H, rows * sh - ph), min(W, cols * sw - pw)  # the rest is never read
    phases = np.empty((C, sh, sw, N, rows, cols), dtype=x.dtype)
    col = _take_columns(np, (C * kh * kw, N * oh * ow), x.dtype).reshape(C, kh, kw, N, oh, ow)

    def images(start, stop):  # the batch split over the cores (kernels.threads)
        x_padded[start:stop, :, ph:ph + real_rows, pw:pw + real_cols] = x[start:stop, :, :real_rows, :real_cols]
        phases[:, :, :, start:stop] = (x_padded[start:stop].reshape(stop - start, C, rows, sh, cols, sw)
                                       .transpose(1, 3, 5, 0, 2, 4))
        for i in range(kh):
            a, r = divmod(i, sh)
            for j in range(kw):
                b, q = divmod(j, sw)
                col[:, i, j, start:stop] = phases[:, r, q, start:stop, a:a + oh, b:b + ow]

    threads.split(images, N, C * kh * kw * oh * ow)
    return col.reshape(C * kh * kw, N * oh * ow)


def col2im(col, x_shape, kh, kw, stride, padding):
    """The adjoint of im2col: add every column entry back onto its pixel.

    col (C*kh*kw, N*oh*ow) -> x (N, C, H, W), with x_shape = (N, C, H, W).
    A pixel covered by several windows receives the SUM of their entries, which
    is exactly what the gradient of im2col needs (<im2col(x), c> == <x, col2im(c)>).

    Same loop over kernel offsets as im2col, with ``+=`` into a zero padded
    buffer instead of a copy out of it; the padding is cropped at the end.
    Within one offset the strided slice touches each pixel at most once, so
    ``+=`` on a slice is safe (no np.add.at needed).
    """
    xp = get_array_module(col)
    N, C, H, W = x_shape
    sh, sw = stride = check_pair("stride", stride, 1)
    ph, pw = padding = check_pair("padding", padding, 0)
    oh, ow = _check_output_size(x_shape, kh, kw, stride, padding)
    if col.shape != (C * kh * kw, N * oh * ow):
        raise ValueError(
            f"col shape {col.shape} does not match x_shape {x_shape} with kernel {kh}x{kw}, "
            f"stride {stride}, padding {padding}: expected {(C * kh * kw, N * oh * ow)}"
        )
    if fast_paths.active(col):  # CuPy array: one CUDA thread per pixel, gathering its windows
        return cuda_conv.col2im(col, x_shape, kh, kw, stride, padding)

    col = col.reshape(C, kh, kw, N, oh, ow)
    # Accumulated channel-major, (C, N, Hp, Wp), the order of col's columns:
    # then each += walks source and target in step, which is faster than
    # adding a transposed view into an NCHW buffer (conv2, batch 16: 34 -> 25 ms).
    # One transposing copy at the end gives NCHW (and drops the padding).
    x_padded = xp.zeros((C, N, H + 2 * ph, W + 2 * pw), dtype=col.dtype)
    x = xp.empty((N, C, H, W), dtype=col.dtype)

    def images(start, stop):  # on the CPU the batch is split over the cores (kernels.threads)
        for i in range(kh):
            rows = _window_slice(i, sh, oh)
            for j in range(kw):
                cols = _window_slice(j, sw, ow)
                x_padded[:, start:stop, rows, cols] += col[:, i, j, start:stop]
        x[start:stop] = x_padded[:, start:stop, ph:ph + H, pw:pw + W].transpose(1, 0, 2, 3)

    threads.split(images, N, C * kh * kw * oh * ow, array=col)
    return x


def _to_images(channels_first):
    """(O, N, oh, ow) -> a new C-contiguous (N, O, oh, ow): the GEMM's output as an NCHW batch."""
    O, N = channels_first.shape[:2]
    xp = get_array_module(channels_first)
    images = xp.empty((N, O) + channels_first.shape[2:], dtype=channels_first.dtype)

    def copy(start, stop):  # on the CPU the batch is split over the cores (kernels.threads)
        images[start:stop] = channels_first[:, start:stop].transpose(1, 0, 2, 3)

    threads.split(copy, N, images[:1].size, array=images)
    return images


def _to_channels(images):
    """(N, O, oh, ow) -> a new C-contiguous (O, N, oh, ow): dout in the column order of col."""
    N, O = images.shape[:2]
    xp = get_array_module(images)
    channels_first = xp.empty((O, N) + images.shape[2:], dtype=images.dtype)

    def copy(start, stop):
        channels_first[:, start:stop] = images[start:stop].transpose(1, 0, 2, 3)

    threads.split(copy, N, images[:1].size, array=images)
    return channels_first


# --------------------------------------------------------------------------- the layer


def conv2d_forward(x, weight, bias, stride, padding, groups):
    """Grouped 2-D convolution (cross-correlation, as PyTorch).

    x (N, C, H, W), weight (O, C//G, kh, kw), bias (O,) or None -> out (N, O, oh, ow)

        out[n, o] = bias[o] + sum over the C/G input channels of o's group g = o // (O/G)
                    of W[o, c] correlated with x_padded[n, g*C/G + c]

    Computed as im2col and ONE batched GEMM over the G groups:
        col    (C*kh*kw, N*oh*ow)      viewed as (G, C/G*kh*kw, N*oh*ow)
        weight (O, C/G, kh, kw)        viewed as (G, O/G, C/G*kh*kw)
        out = weight @ col             -> (G, O/G, N*oh*ow) -> (N, O, oh, ow)

    stride and padding are (h, w) pairs of ints (an int means both).

    Returns (out, cache). The cache holds exactly what conv2d_backward needs:
    ``col`` (for dW), ``weight`` (for dx), ``x_shape`` (to fold dcol back with
    col2im), ``kernel_size``, ``stride``, ``padding``, ``groups`` and ``has_bias``.
    ``x`` itself is not kept: ``col`` already holds every value dW needs.
    """
    stride, padding = _check_arguments(x, weight, bias, stride, padding, groups)
    xp = get_array_module(x, weight)
    N, C, H, W = x.shape
    O, C_per_group, kh, kw = weight.shape
    G = int(groups)
    oh = conv_output_size(H, kh, stride[0], padding[0])
    ow = conv_output_size(W, kw, stride[1], padding[1])

    col = im2col(x, kh, kw, stride, padding)
    # Both reshapes are views: the rows of col and of weight are ordered
    # (channel, i, j) with channels of one group adjacent.
    col_groups = col.reshape(G, C_per_group * kh * kw, N * oh * ow)
    weight_groups = weight.reshape(G, O // G, C_per_group * kh * kw)
    out_cols = xp.matmul(weight_groups, col_groups)  # (G, O/G, N*oh*ow)

    out_cols = out_cols.reshape(O, N * oh * ow)
    if bias is not None:
        # Added in place on the GEMM output, before the one unavoidable
        # transpose-copy to NCHW, so no extra temporary.
        out_cols += bias.reshape(O, 1)
    out = _to_images(out_cols.reshape(O, N, oh, ow))

    cache = {
        "col": col,
        "weight": weight,
        "x_shape": x.shape,
        "kernel_size": (kh, kw),
        "stride": stride,
        "padding": padding,
        "groups": G,
        "has_bias": bias is not None,
    }
    return out, cache


def conv2d_backward(dout, cache, need_input_grad=True, need_bias_grad=True, wide_rows_on_cpu=False,
                    batch_innermost_on_cpu=True):
    """Gradients of conv2d_forward.

    dout (N, O, oh, ow) -> dx (N, C, H, W) or None, dweight (O, C/G, kh, kw), dbias (O,) or None

    With dout_cols = dout as (G, O/G, N*oh*ow) and col, weight grouped as in forward:
        dweight = dout_cols @ col.T          (G, O/G, C/G*kh*kw)
        dcol    = weight.T @ dout_cols       (G, C/G*kh*kw, N*oh*ow)
        dx      = col2im(dcol)
        dbias   = dout summed over n, y, x
    ``need_input_grad=False`` (e.g. the first layer, whose input is the data)
    skips the dcol GEMM and the col2im; dbias is None when not needed or when
    the forward had no bias.

    ``wide_rows_on_cpu``: for a stride-1 convolution on NumPy arrays, compute
    dx with ``_input_grad_wide``, the CPU speed-up beside the two clear lines
    below (the same dx up to float round-off: the BLAS may sum a wider GEMM's
    products in another order); False (the default) always runs dcol and
    col2im. It was the faster path while col2im ran on one core; with
    col2im's images split over the cores, the paired measurements of
    benchmarks.switches put it at 1.00-1.08 of the clear path's time, so
    it is off unless asked for.

    ``batch_innermost_on_cpu`` (the default): on NumPy arrays, compute dx with
    ``_input_grad_batch_innermost``, dcol's columns ordered with the batch
    innermost so that col2im adds long runs (the same dx up to round-off);
    False runs the two clear lines. ``wide_rows_on_cpu`` wins when both are on.
    """
    xp = get_array_module(dout)
    col = cache["col"]
    weight = cache["weight"]
    kh, kw = cache["kernel_size"]
    G = cache["groups"]
    N, O, oh, ow = dout.shape
    if O != weight.shape[0] or col.shape[1] != N * oh * ow:
        raise ValueError(
            f"dout has shape {tuple(dout.shape)}, which does not match the forward's weight "
            f"{tuple(weight.shape)} and columns {tuple(col.shape)}"
        )

    # NCHW -> (O, N*oh*ow): the same column order as col. One copy.
    dout_cols = _to_channels(dout).reshape(G, O // G, N * oh * ow)
    col_groups = col.reshape(G, -1, N * oh * ow)
    weight_groups = weight.reshape(G, O // G, -1)

    dweight = xp.matmul(dout_cols, col_groups.transpose(0, 2, 1)).reshape(weight.shape)

    dbias = None
    if need_bias_grad and cache["has_bias"]:
        # Summing the contiguous last axis of dout_cols is cheaper than dout.sum((0, 2, 3)).
        dbias = dout_cols.sum(axis=2).reshape(O)

    dx = None
    if need_input_grad and wide_rows_on_cpu and xp is np and cache["stride"] == (1, 1):
        dx = _input_grad_wide(weight_groups, dout, cache["x_shape"], kh, kw, cache["padding"])
    elif need_input_grad and batch_innermost_on_cpu and xp is np:
        dx = _input_grad_batch_innermost(weight_groups, dout, cache["x_shape"], kh, kw,
                                         cache["stride"], cache["padding"])
    elif need_input_grad:
        # dcol (G, C/G*kh*kw, N*oh*ow) lives only until col2im has folded it.
        dcol_shape = (G, weight_groups.shape[2], N * oh * ow)
        dcol = xp.matmul(weight_groups.transpose(0, 2, 1), dout_cols,
                         out=_scratch(xp, dcol_shape, dout_cols.dtype))
        dx = col2im(dcol.reshape(-1, N * oh * ow), cache["x_shape"], kh, kw,
                    cache["stride"], cache["padding"])
    return dx, dweight, dbias


def _input_grad_wide(weight_groups, dout, x_shape, kh, kw, padding):
    """dx of a stride-1 convolution on the CPU: the dcol GEMM on "wide" rows, then col2im in long runs.

    The CPU speed-up beside ``dcol = W.T @ dout_cols; col2im(dcol)`` in
    conv2d_backward, with the same result up to round-off (the tests compare
    the two). With stride 1, output (y, x) at kernel offset (i, j) reads
    padded pixel (y + i, x + j), which in a padded plane flattened to Hp*Wp
    values sits at (i*Wp + j) + (y*Wp + x). So if every output row is widened
    from ow to Wp columns, the entries one offset adds back form ONE
    contiguous run of oh*Wp values per (c, n) plane, at i*Wp + j, instead of
    oh short rows of ow values; NumPy's per-row overhead dominated col2im at
    AlexNet's 13x13 maps. The widening columns carry dout = 0, so their dcol
    entries are 0 and adding them anywhere changes nothing; one spare row
    takes the last offsets' overrun. The price is Wp/ow more GEMM columns
    (15/13 at 13x13): conv5's input gradient, batch 16, 32 -> 25 ms. NumPy only.
    """
    N, O, oh, ow = dout.shape
    _, C, H, W = x_shape
    ph, pw = padding
    Hp, Wp = H + 2 * ph, W + 2 * pw
    G = weight_groups.shape[0]
    dout_wide = np.zeros((O, N, oh, Wp), dtype=dout.dtype)

    def fill(start, stop):  # the batch split over the cores (kernels.threads), here and below
        dout_wide[:, start:stop, :, :ow] = dout[start:stop].transpose(1, 0, 2, 3)

    threads.split(fill, N, O * oh * Wp)
    dcol_shape = (G, weight_groups.shape[2], N * oh * Wp)
    dcol = np.matmul(weight_groups.transpose(0, 2, 1), dout_wide.reshape(G, O // G, N * oh * Wp),
                     out=_scratch(np, dcol_shape, dout.dtype))
    dcol = dcol.reshape(C, kh, kw, N, oh * Wp)
    # Channel-major like dcol, one spare row for the overrun of the last offsets.
    dx_flat = np.zeros((C, N, (Hp + 1) * Wp), dtype=dout.dtype)
    dx_padded = dx_flat[:, :, :Hp * Wp].reshape(C, N, Hp, Wp)
    dx = np.empty((N, C, H, W), dtype=dout.dtype)

    def images(first, last):
        for i in range(kh):
            for j in range(kw):
                start = i * Wp + j
                dx_flat[:, first:last, start:start + oh * Wp] += dcol[:, i, j, first:last]
        dx[first:last] = dx_padded[:, first:last, ph:ph + H, pw:pw + W].transpose(1, 0, 2, 3)

    threads.split(images, N, C * kh * kw * oh * Wp)
    return dx


# Bytes of the batch-innermost accumulator one thread fills at a time (a few
# channels): measured at batch 16 and 64, 0.5-1 MB beat both smaller blocks
# (more NumPy calls) and all of a thread's channels at once (out of cache).
ACCUMULATOR_BLOCK_BYTES = 1 << 20


def _input_grad_batch_innermost(weight_groups, dout, x_shape, kh, kw, stride, padding):
    """dx on the CPU with dcol's columns ordered (y, x, n): the batch innermost, so col2im adds long runs.

    The CPU speed-up beside ``dcol = W.T @ dout_cols; col2im(dcol)`` in
    conv2d_backward, with the same result up to round-off (the tests compare
    the two: the BLAS may block a GEMM whose columns come in another order
    differently). In the clear order (n, y, x), each kernel offset adds
    rows of ow values (13 at conv5), and NumPy's cost per row outweighs the
    additions. Here

        dout_cols[o, y, x, n] = dout[n, o, y, x]
        dcol = weight.T @ dout_cols            (G, C/G*kh*kw, oh*ow*N)
        dx_padded[c, y*sh + i, x*sw + j, n] += dcol[c, i, j, y, x, n]

    with the accumulator laid out (C, Hp, Wp, N), as cuda-convnet (the paper
    AlexNet's own code) laid out its images. With stride 1, an offset's row
    (x, n) is ow*N consecutive values in dcol and in the accumulator (208 for
    conv5 at batch 16), so each offset is a few thousand long additions
    instead of tens of thousands of short ones. The GEMM is the same size as
    the clear one; the price is one more transposing copy of dout. The
    channels are split over the cores. conv5, batch 16: col2im 15.6 -> 8.6 ms.
    NumPy only.
    """
    N, O, oh, ow = dout.shape
    _, C, H, W = x_shape
    (sh, sw), (ph, pw) = stride, padding
    Hp, Wp = H + 2 * ph, W + 2 * pw
    G = weight_groups.shape[0]
    dout_cols = np.empty((O, oh, ow, N), dtype=dout.dtype)

    def transpose(start, stop):  # the output channels split over the cores (kernels.threads)
        dout_cols[start:stop] = dout[:, start:stop].transpose(1, 2, 3, 0)

    threads.split(transpose, O, oh * ow * N)
    dcol_shape = (G, weight_groups.shape[2], oh * ow * N)
    dcol = np.matmul(weight_groups.transpose(0, 2, 1), dout_cols.reshape(G, O // G, oh * ow * N),
                     out=_scratch(np, dcol_shape, dout.dtype))
    dcol = dcol.reshape(C, kh, kw, oh, ow, N)
    dx = np.empty((N, C, H, W), dtype=dout.dtype)

    # A few channels at a time, so that the kh*kw additions into their
    # accumulator find it in the cache (at batch 64 one channel's is 246 KB
    # for conv2; all of a thread's channels at once, 12 MB, were re-read from
    # memory for every offset).
    block = max(1, ACCUMULATOR_BLOCK_BYTES // (Hp * Wp * N * dout.itemsize))

    def channels(first, last):  # the input channels split over the cores
        # One block's accumulator per thread, reused block after block: only
        # the block in hand is ever needed, not a padded copy of all of dx.
        block_accumulator = np.empty((min(block, last - first), Hp, Wp, N), dtype=dout.dtype)
        for start in range(first, last, block):
            stop = min(last, start + block)
            accumulator = block_accumulator[: stop - start]
            accumulator.fill(0)
            for i in range(kh):
                rows = _window_slice(i, sh, oh)
                for j in range(kw):
                    accumulator[:, rows, _window_slice(j, sw, ow)] += dcol[start:stop, i, j]
            dx[:, start:stop] = accumulator[:, ph:ph + H, pw:pw + W].transpose(3, 0, 1, 2)

    threads.split(channels, C, kh * kw * oh * ow * N)
    return dx
