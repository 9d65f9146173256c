"""Tests of minialex.kernels.conv against naive loop references, torch and CuPy."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minialex.backend import cuda_available
from minialex.kernels import conv, threads
from minialex.kernels.conv import (
    col2im,
    conv2d_backward,
    conv2d_forward,
    conv_output_size,
    im2col,
)

# --------------------------------------------------------------------------- naive references
# Plain Python loops, written straight from the definitions: slow but obviously right.


def pad(x, padding):
    ph, pw = padding
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))


def naive_im2col(x, kh, kw, stride, padding):
    N, C, H, W = x.shape
    oh = (H + 2 * padding[0] - kh) // stride[0] + 1
    ow = (W + 2 * padding[1] - kw) // stride[1] + 1
    xp_ = pad(x, padding)
    col = np.zeros((C * kh * kw, N * oh * ow), dtype=x.dtype)
    for n in range(N):
        for y in range(oh):
            for x_ in range(ow):
                for c in range(C):
                    for i in range(kh):
                        for j in range(kw):
                            col[c * kh * kw + i * kw + j, n * oh * ow + y * ow + x_] = xp_[
                                n, c, y * stride[0] + i, x_ * stride[1] + j
                            ]
    return col


def naive_conv2d(x, w, b, stride, padding, groups):
    N, C, H, W = x.shape
    O, Cg, kh, kw = w.shape
    Og = O // groups
    oh = (H + 2 * padding[0] - kh) // stride[0] + 1
    ow = (W + 2 * padding[1] - kw) // stride[1] + 1
    xp_ = pad(x, padding)
    out = np.zeros((N, O, oh, ow), dtype=x.dtype)
    for n in range(N):
        for o in range(O):
            g = o // Og
            for y in range(oh):
                for x_ in range(ow):
                    window = xp_[n, g * Cg:(g + 1) * Cg,
                                 y * stride[0]:y * stride[0] + kh,
                                 x_ * stride[1]:x_ * stride[1] + kw]
                    out[n, o, y, x_] = np.sum(window * w[o]) + (0.0 if b is None else b[o])
    return out


def naive_conv2d_grads(x, w, dout, stride, padding, groups):
    """(dx, dw, db) by the chain rule, one output pixel at a time."""
    N, C, H, W = x.shape
    O, Cg, kh, kw = w.shape
    Og = O // groups
    _, _, oh, ow = dout.shape
    ph, pw = padding
    xp_ = pad(x, padding)
    dx_padded = np.zeros_like(xp_)
    dw = np.zeros_like(w)
    for n in range(N):
        for o in range(O):
            g = o // Og
            for y in range(oh):
                for x_ in range(ow):
                    rows = slice(y * stride[0], y * stride[0] + kh)
                    cols = slice(x_ * stride[1], x_ * stride[1] + kw)
                    chans = slice(g * Cg, (g + 1) * Cg)
                    dw[o] += dout[n, o, y, x_] * xp_[n, chans, rows, cols]
                    dx_padded[n, chans, rows, cols] += dout[n, o, y, x_] * w[o]
    dx = dx_padded[:, :, ph:ph + H, pw:pw + W]
    db = dout.sum(axis=(0, 2, 3))
    return dx, dw, db


def assert_close(actual, expected, rtol=1e-10):
    scale = max(np.abs(expected).max(), 1.0)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale)


# (N, C, H, W, O, kh, kw, stride, padding, groups): small, but covering every knob.
GEOMETRIES = [
    (2, 3, 5, 5, 4, 3, 3, (1, 1), (0, 0), 1),   # plain
    (2, 3, 7, 6, 2, 3, 3, (2, 2), (1, 1), 1),   # stride, padding, non-square image
    (1, 4, 6, 8, 6, 2, 3, (1, 2), (2, 0), 2),   # non-square kernel, asymmetric stride/padding, groups
    (2, 6, 5, 7, 6, 3, 1, (2, 1), (0, 1), 3),   # 3 groups, 3x1 kernel
    (1, 4, 9, 9, 4, 5, 5, (3, 3), (2, 2), 4),   # depthwise, stride not dividing the span
    (3, 2, 4, 4, 3, 1, 1, (1, 1), (0, 0), 1),   # 1x1 conv
    (1, 2, 4, 5, 2, 4, 5, (1, 1), (0, 0), 1),   # kernel as large as the image: one output
]


def random_problem(geometry, rng, dtype=np.float64):
    N, C, H, W, O, kh, kw, stride, padding, groups = geometry
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((O, C // groups, kh, kw)).astype(dtype)
    b = rng.standard_normal(O).astype(dtype)
    return x, w, b, stride, padding, groups


# --------------------------------------------------------------------------- im2col / col2im


def test_conv_output_size_is_the_floor_formula():
    assert conv_output_size(227, 11, 4, 0) == 55
    assert conv_output_size(27, 5, 1, 2) == 27
    assert conv_output_size(13, 3, 1, 1) == 13
    assert conv_output_size(8, 3, 2, 0) == 3   # floor, trailing row unused
    assert conv_output_size(4, 4, 1, 0) == 1


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_im2col_matches_naive_window_copy(geometry):
    rng = np.random.default_rng(0)
    N, C, H, W, O, kh, kw, stride, padding, groups = geometry
    x = rng.standard_normal((N, C, H, W))
    np.testing.assert_array_equal(im2col(x, kh, kw, stride, padding),
                                  naive_im2col(x, kh, kw, stride, padding))


@settings(max_examples=50, deadline=None)
@given(
    N=st.integers(1, 3), C=st.integers(1, 3), H=st.integers(1, 7), W=st.integers(1, 7),
    kh=st.integers(1, 4), kw=st.integers(1, 4), sh=st.integers(1, 3), sw=st.integers(1, 3),
    ph=st.integers(0, 2), pw=st.integers(0, 2), seed=st.integers(0, 2**32 - 1),
)
def test_col2im_is_adjoint_of_im2col(N, C, H, W, kh, kw, sh, sw, ph, pw, seed):
    # The window must fit inside the padded image.
    kh = min(kh, H + 2 * ph)
    kw = min(kw, W + 2 * pw)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, H, W))
    col_shape = im2col(x, kh, kw, (sh, sw), (ph, pw)).shape
    c = rng.standard_normal(col_shape)
    lhs = np.sum(im2col(x, kh, kw, (sh, sw), (ph, pw)) * c)
    rhs = np.sum(x * col2im(c, x.shape, kh, kw, (sh, sw), (ph, pw)))
    assert lhs == pytest.approx(rhs, rel=1e-10, abs=1e-10)


@settings(max_examples=80, deadline=None)
@given(
    N=st.integers(1, 3), C=st.integers(1, 3), H=st.integers(1, 12), W=st.integers(1, 12),
    kh=st.integers(1, 6), kw=st.integers(1, 6), sh=st.integers(1, 5), sw=st.integers(1, 5),
    ph=st.integers(0, 3), pw=st.integers(0, 3), seed=st.integers(0, 2**32 - 1),
    dtype=st.sampled_from([np.float32, np.float64]),
)
def test_cpu_phase_im2col_equals_the_clear_loop_bit_for_bit(N, C, H, W, kh, kw, sh, sw, ph, pw, seed, dtype):
    """The NumPy speed-up for strided windows (copies out of the stride phase planes) against the
    clear strided loop, and both against the naive window copy: only copies, so equal bit for bit."""
    kh, kw = min(kh, H + 2 * ph), min(kw, W + 2 * pw)
    x = np.random.default_rng(seed).standard_normal((N, C, H, W)).astype(dtype)
    fast = im2col(x, kh, kw, (sh, sw), (ph, pw))
    clear = im2col(x, kh, kw, (sh, sw), (ph, pw), phases_on_cpu=False)
    assert fast.dtype == clear.dtype == dtype and fast.shape == clear.shape and fast.flags.c_contiguous
    np.testing.assert_array_equal(fast, clear)
    np.testing.assert_array_equal(fast, naive_im2col(x, kh, kw, (sh, sw), (ph, pw)))


def test_phase_im2col_runs_for_strides_above_1_and_only_phases_on_cpu_switches_it_off(monkeypatch):
    x = np.random.default_rng(0).standard_normal((2, 3, 11, 11)).astype(np.float32)
    calls = []
    original = conv._im2col_from_phases
    monkeypatch.setattr(conv, "_im2col_from_phases", lambda *a: calls.append(a[3]) or original(*a))
    im2col(x, 3, 3, (2, 1), (1, 1))
    im2col(x, 3, 3, (1, 1), (1, 1))  # stride 1: every offset already reads contiguous rows
    im2col(x, 3, 3, (2, 2), (0, 0), phases_on_cpu=False)
    assert calls == [(2, 1)]


def test_col2im_sums_overlapping_windows():
    # All-ones columns: each pixel receives the number of windows covering it.
    x_shape = (1, 1, 4, 4)
    col = np.ones((9, 4))  # 3x3 kernel, stride 1, no padding -> 2x2 outputs
    counts = col2im(col, x_shape, 3, 3, (1, 1), (0, 0))[0, 0]
    expected = np.array([[1, 2, 2, 1], [2, 4, 4, 2], [2, 4, 4, 2], [1, 2, 2, 1]])
    np.testing.assert_array_equal(counts, expected)


# --------------------------------------------------------------------------- conv forward / backward


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_conv2d_forward_matches_naive_loops(geometry):
    x, w, b, stride, padding, groups = random_problem(geometry, np.random.default_rng(1))
    out, _ = conv2d_forward(x, w, b, stride, padding, groups)
    assert_close(out, naive_conv2d(x, w, b, stride, padding, groups))
    out_nobias, _ = conv2d_forward(x, w, None, stride, padding, groups)
    assert_close(out_nobias, naive_conv2d(x, w, None, stride, padding, groups))


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_conv2d_backward_matches_naive_chain_rule(geometry):
    rng = np.random.default_rng(2)
    x, w, b, stride, padding, groups = random_problem(geometry, rng)
    out, cache = conv2d_forward(x, w, b, stride, padding, groups)
    dout = rng.standard_normal(out.shape)
    dx, dw, db = conv2d_backward(dout, cache)
    dx_ref, dw_ref, db_ref = naive_conv2d_grads(x, w, dout, stride, padding, groups)
    assert dx.shape == x.shape and dw.shape == w.shape and db.shape == b.shape
    assert_close(dx, dx_ref)
    assert_close(dw, dw_ref)
    assert_close(db, db_ref)


def test_conv2d_forward_alexnet_conv1_geometry():
    # 11x11 stride 4 on 227x227 -> 55x55, as in the paper's first layer.
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 3, 227, 227))
    w = rng.standard_normal((2, 3, 11, 11))
    b = rng.standard_normal(2)
    out, _ = conv2d_forward(x, w, b, (4, 4), (0, 0), 1)
    assert out.shape == (1, 2, 55, 55)
    assert_close(out, naive_conv2d(x, w, b, (4, 4), (0, 0), 1))


def test_conv2d_backward_without_input_grad_gives_same_weight_grad():
    rng = np.random.default_rng(4)
    x, w, b, stride, padding, groups = random_problem(GEOMETRIES[2], rng)
    out, cache = conv2d_forward(x, w, b, stride, padding, groups)
    dout = rng.standard_normal(out.shape)
    dx, dw, db = conv2d_backward(dout, cache)
    dx_skip, dw_skip, db_skip = conv2d_backward(dout, cache, need_input_grad=False)
    assert dx is not None and dx_skip is None
    np.testing.assert_array_equal(dw_skip, dw)
    np.testing.assert_array_equal(db_skip, db)


def test_conv2d_backward_bias_grad_is_none_when_not_needed_or_absent():
    rng = np.random.default_rng(5)
    x, w, b, stride, padding, groups = random_problem(GEOMETRIES[0], rng)
    out, cache = conv2d_forward(x, w, b, stride, padding, groups)
    dout = rng.standard_normal(out.shape)
    assert conv2d_backward(dout, cache, need_bias_grad=False)[2] is None
    out, cache = conv2d_forward(x, w, None, stride, padding, groups)
    assert conv2d_backward(dout, cache)[2] is None


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv2d_keeps_input_dtype(dtype):
    rng = np.random.default_rng(6)
    x, w, b, stride, padding, groups = random_problem(GEOMETRIES[2], rng, dtype=dtype)
    out, cache = conv2d_forward(x, w, b, stride, padding, groups)
    dx, dw, db = conv2d_backward(np.ones_like(out), cache)
    assert im2col(x, 2, 3, stride, padding).dtype == dtype
    for array in (out, dx, dw, db):
        assert array.dtype == dtype


# --------------------------------------------------------------------------- against PyTorch

TORCH_GEOMETRIES = GEOMETRIES + [
    # AlexNet conv2 at small channel counts: 5x5 pad 2, 2 groups, on 27x27.
    (2, 8, 27, 27, 12, 5, 5, (1, 1), (2, 2), 2),
    # AlexNet conv1 at small channel counts: 11x11 stride 4 on 227x227.
    (1, 3, 227, 227, 4, 11, 11, (4, 4), (0, 0), 1),
]


@pytest.mark.parametrize("geometry", TORCH_GEOMETRIES)
def test_conv2d_float32_forward_and_grads_within_round_off_of_torch_float64(geometry):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    x, w, b, stride, padding, groups = random_problem(geometry, rng, dtype=np.float32)
    out, cache = conv2d_forward(x, w, b, stride, padding, groups)
    dout = rng.standard_normal(out.shape).astype(np.float32)
    dx, dw, db = conv2d_backward(dout, cache)

    # The reference is PyTorch in float64; the allowance float32's worst-case round-off,
    # (n + 2) * eps32 * (sum of |terms|), n the longest sum: C/groups*kh*kw per output,
    # O/groups*kh*kw per input-gradient, N*oh*ow per weight- or bias-gradient. The sums of
    # |terms| are the same op in float64 on |x|, |w|, |b| with upstream |dout| (it is bilinear).
    def float64_run(x, w, b, dout):
        xt, wt, bt = (torch.tensor(a.astype(np.float64), requires_grad=True) for a in (x, w, b))
        out_t = torch.nn.functional.conv2d(xt, wt, bt, stride=stride, padding=padding, groups=groups)
        out_t.backward(torch.tensor(dout.astype(np.float64)))
        return [t.detach().numpy() for t in (out_t, xt.grad, wt.grad, bt.grad)]

    references = float64_run(x, w, b, dout)
    magnitudes = float64_run(np.abs(x), np.abs(w), np.abs(b), np.abs(dout))
    n, _, oh, ow = out.shape
    longest_sum = max(w.shape[1] * w.shape[2] * w.shape[3], w.shape[0] // groups * w.shape[2] * w.shape[3], n * oh * ow)
    eps = np.finfo(np.float32).eps
    for ours, reference, magnitude in zip((out, dx, dw, db), references, magnitudes):
        bound = (longest_sum + 2) * eps * magnitude + np.finfo(np.float32).smallest_subnormal
        assert np.all(np.abs(ours - reference) <= bound)


# --------------------------------------------------------------------------- on the GPU


@pytest.mark.gpu
@pytest.mark.skipif(not cuda_available(), reason="CuPy with a CUDA device is not available")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("geometry", GEOMETRIES[1:5] + TORCH_GEOMETRIES[-2:])
def test_conv2d_on_cupy_matches_numpy(geometry, dtype):
    import cupy  # noqa: PLC0415 - only reached where cuda_available()

    rng = np.random.default_rng(8)
    x, w, b, stride, padding, groups = random_problem(geometry, rng, dtype=dtype)
    out, cache = conv2d_forward(x, w, b, stride, padding, groups)
    dout = rng.standard_normal(out.shape).astype(dtype)
    grads = conv2d_backward(dout, cache)

    out_gpu, cache_gpu = conv2d_forward(cupy.asarray(x), cupy.asarray(w), cupy.asarray(b),
                                        stride, padding, groups)
    grads_gpu = conv2d_backward(cupy.asarray(dout), cache_gpu)

    rtol = 1e-4 if dtype == np.float32 else 1e-10
    for ours_gpu, ref in zip((out_gpu,) + grads_gpu, (out,) + grads):
        assert isinstance(ours_gpu, cupy.ndarray) and ours_gpu.dtype == dtype
        np.testing.assert_allclose(cupy.asnumpy(ours_gpu), ref, rtol=rtol,
                                   atol=rtol * max(np.abs(ref).max(), 1.0))
    kh, kw = w.shape[2:]
    np.testing.assert_array_equal(cupy.asnumpy(im2col(cupy.asarray(x), kh, kw, stride, padding)),
                                  im2col(x, kh, kw, stride, padding))


# --------------------------------------------------------------------------- released column buffers


@pytest.fixture
def empty_column_pool():
    conv.clear_released_columns()
    yield
    conv.clear_released_columns()


def test_released_columns_are_refilled_by_the_next_im2col_of_that_shape(empty_column_pool):
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((4, 3, 3, 3))
    _, cache = conv.conv2d_forward(rng.standard_normal((2, 3, 6, 6)), weight, None, (1, 1), (1, 1), 1)
    old = cache["col"]
    old[...] = np.nan  # whatever the buffer held must not leak into the next columns
    conv.release_columns(cache)
    assert "col" not in cache
    x = rng.standard_normal((2, 3, 6, 6))
    _, cache = conv.conv2d_forward(x, weight, None, (1, 1), (1, 1), 1)
    assert np.shares_memory(cache["col"], old)
    np.testing.assert_array_equal(cache["col"], naive_im2col(x, 3, 3, (1, 1), (1, 1)))
    other = conv.im2col(x, 3, 3, (1, 1), (1, 1))  # nothing left to reuse: new memory
    assert not np.shares_memory(other, old)


def test_release_twice_is_harmless_and_the_pool_keeps_few_shapes(empty_column_pool):
    rng = np.random.default_rng(1)
    for size in range(4, 4 + conv.MAX_FREE_COLUMNS + 3):
        _, cache = conv.conv2d_forward(rng.standard_normal((1, 2, size, size)), rng.standard_normal((3, 2, 3, 3)),
                                       None, (1, 1), (0, 0), 1)
        conv.release_columns(cache)
        conv.release_columns(cache)
    assert len(conv._free_columns) == conv.MAX_FREE_COLUMNS
    with pytest.raises(TypeError, match="cache dict of conv2d_forward"):
        conv.release_columns((np.zeros((2, 2)),))


def test_autograd_releases_columns_after_backward_but_not_with_retain_graph(empty_column_pool):
    import minialex as ma
    import minialex.functional as F

    rng = np.random.default_rng(2)
    x = ma.tensor(rng.standard_normal((2, 3, 7, 7)), requires_grad=True)
    w = ma.tensor(rng.standard_normal((5, 3, 3, 3)), requires_grad=True)

    loss = (F.conv2d(x, w, padding=1) ** 2).sum()
    loss.backward(retain_graph=True)
    assert not conv._free_columns  # the graph is kept, and so are its columns
    first = x.grad.numpy().copy()
    loss.backward()  # second pass through the same columns, then the graph is freed
    np.testing.assert_allclose(x.grad.numpy(), 2 * first, rtol=1e-12)
    assert len(conv._free_columns) == 1

    # A new step refills the released buffer and gets the same gradients as before.
    x.grad = w.grad = None
    (F.conv2d(x, w, padding=1) ** 2).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), first, rtol=1e-12)


# --------------------------------------------------------------------------- the CPU speed-up for stride 1


@st.composite
def stride_one_problems(draw):
    groups = draw(st.sampled_from([1, 2, 3]))
    c_per_group, o_per_group = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    h = draw(st.integers(max(1, kh - 2 * ph), 8))
    w = draw(st.integers(max(1, kw - 2 * pw), 8))
    n = draw(st.integers(1, 3))
    return (n, groups * c_per_group, h, w), (groups * o_per_group, c_per_group, kh, kw), (ph, pw), groups


@settings(max_examples=60, deadline=None)
@given(stride_one_problems(), st.sampled_from([np.float32, np.float64]), st.integers(0, 2**32 - 1))
def test_wide_input_gradient_equals_dcol_then_col2im(problem, dtype, seed):
    """For stride 1 the CPU backward widens the rows (one long run per offset): same dx as the clear path."""
    x_shape, w_shape, padding, groups = problem
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(dtype)
    weight = rng.standard_normal(w_shape).astype(dtype)
    out, cache = conv2d_forward(x, weight, None, (1, 1), padding, groups)
    dout = rng.standard_normal(out.shape).astype(dtype)
    dx_fast, dweight_fast, _ = conv2d_backward(dout, cache, wide_rows_on_cpu=True)
    dx_clear, dweight_clear, _ = conv2d_backward(dout, cache, wide_rows_on_cpu=False, batch_innermost_on_cpu=False)
    assert dx_fast.shape == x_shape and dx_fast.dtype == dtype and dx_fast.flags.c_contiguous
    # Each path's dx is a sum of O/groups*kh*kw products, within (n + 2) * eps * (sum of |terms|)
    # of the exact value whatever the summation order; so the two differ by at most twice that.
    # The sums of |terms| are the same backward in float64 on |x|, |weight|, |dout| (it is bilinear).
    _, cache_of_magnitudes = conv2d_forward(np.abs(x).astype(np.float64), np.abs(weight).astype(np.float64),
                                            None, (1, 1), padding, groups)
    magnitude, _, _ = conv2d_backward(np.abs(dout).astype(np.float64), cache_of_magnitudes)
    longest_sum = w_shape[0] // groups * w_shape[2] * w_shape[3]
    info = np.finfo(dtype)
    bound = 2 * (longest_sum + 2) * float(info.eps) * magnitude + float(info.smallest_subnormal)
    assert np.all(np.abs(dx_fast.astype(np.float64) - dx_clear) <= bound)
    np.testing.assert_array_equal(dweight_fast, dweight_clear)


def test_wide_input_gradient_runs_only_when_asked_and_only_for_stride_1(monkeypatch):
    from minialex.kernels import cuda as fast_paths

    rng = np.random.default_rng(9)
    calls = []
    original = conv._input_grad_wide
    monkeypatch.setattr(conv, "_input_grad_wide", lambda *a: calls.append("wide") or original(*a))
    weight = rng.standard_normal((4, 3, 3, 3))
    _, cache = conv2d_forward(rng.standard_normal((2, 3, 7, 7)), weight, None, 1, 1, 1)
    dout = rng.standard_normal((2, 4, 7, 7))
    conv2d_backward(dout, cache)  # off by default: no longer faster than the clear path
    assert calls == []
    conv2d_backward(dout, cache, wide_rows_on_cpu=True)
    assert calls == ["wide"]
    with fast_paths.use_fast_paths(False):  # the CUDA switch: no say over a CPU speed-up
        conv2d_backward(dout, cache, wide_rows_on_cpu=True)
    assert calls == ["wide", "wide"]
    conv2d_backward(dout, cache, need_input_grad=False, wide_rows_on_cpu=True)
    _, strided_cache = conv2d_forward(rng.standard_normal((2, 3, 7, 7)), weight, None, 2, 1, 1)
    conv2d_backward(rng.standard_normal((2, 4, 4, 4)), strided_cache, wide_rows_on_cpu=True)  # stride 2: clear
    assert calls == ["wide", "wide"]


@st.composite
def strided_problems(draw):
    x_shape, w_shape, padding, groups = draw(stride_one_problems())
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    return x_shape, w_shape, (sh, sw), padding, groups


def _input_gradient_bound(x, weight, dout, stride, padding, groups):
    """How far two summation orders of dx may differ: twice (n + 2) * eps * (sum of |terms|) per entry.

    Each path's dx is a sum of n = O/groups*kh*kw products, within (n + 2) * eps * (sum of |terms|)
    of the exact value whatever the order; the sums of |terms| are the same backward in float64
    on |x|, |weight|, |dout| (it is bilinear).
    """
    _, cache = conv2d_forward(np.abs(x).astype(np.float64), np.abs(weight).astype(np.float64),
                              None, stride, padding, groups)
    magnitude, _, _ = conv2d_backward(np.abs(dout).astype(np.float64), cache, batch_innermost_on_cpu=False)
    longest_sum = weight.shape[0] // groups * weight.shape[2] * weight.shape[3]
    info = np.finfo(x.dtype)
    return 2 * (longest_sum + 2) * float(info.eps) * magnitude + float(info.smallest_subnormal)


@settings(max_examples=60, deadline=None)
@given(strided_problems(), st.sampled_from([np.float32, np.float64]), st.integers(0, 2**32 - 1),
       st.integers(1, 3), st.integers(1, 4096))
def test_batch_innermost_input_gradient_equals_dcol_then_col2im(problem, dtype, seed, count, block_bytes):
    """The CPU backward with dcol's columns ordered (y, x, n): the same dx as the clear path, any stride,
    any number of threads, any block of channels; dweight and dbias do not take that path and stay
    bit for bit the same."""
    x_shape, w_shape, stride, padding, groups = problem
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(dtype)
    weight = rng.standard_normal(w_shape).astype(dtype)
    bias = rng.standard_normal(w_shape[0]).astype(dtype)
    out, cache = conv2d_forward(x, weight, bias, stride, padding, groups)
    dout = rng.standard_normal(out.shape).astype(dtype)
    kept = threads.MIN_ELEMENTS_PER_THREAD, conv.ACCUMULATOR_BLOCK_BYTES
    # Even these tiny channels split over the threads, in blocks from one channel to all.
    threads.MIN_ELEMENTS_PER_THREAD, conv.ACCUMULATOR_BLOCK_BYTES = 1, block_bytes
    try:
        with threads.num_threads(count):
            dx_fast, dweight_fast, dbias_fast = conv2d_backward(dout, cache, batch_innermost_on_cpu=True)
    finally:
        threads.MIN_ELEMENTS_PER_THREAD, conv.ACCUMULATOR_BLOCK_BYTES = kept
    dx_clear, dweight_clear, dbias_clear = conv2d_backward(dout, cache, batch_innermost_on_cpu=False)
    assert dx_fast.shape == x_shape and dx_fast.dtype == dtype and dx_fast.flags.c_contiguous
    bound = _input_gradient_bound(x, weight, dout, stride, padding, groups)
    assert np.all(np.abs(dx_fast.astype(np.float64) - dx_clear) <= bound)
    np.testing.assert_array_equal(dweight_fast, dweight_clear)
    np.testing.assert_array_equal(dbias_fast, dbias_clear)


def test_batch_innermost_input_gradient_runs_by_default_on_numpy_unless_wide_rows_are_asked_for(monkeypatch):
    rng = np.random.default_rng(9)
    calls = []
    for name in ("_input_grad_batch_innermost", "_input_grad_wide"):
        original = getattr(conv, name)
        monkeypatch.setattr(conv, name, lambda *a, name=name, original=original: calls.append(name) or original(*a))
    weight = rng.standard_normal((4, 3, 3, 3))
    _, cache = conv2d_forward(rng.standard_normal((2, 3, 7, 7)), weight, None, 1, 1, 1)
    dout = rng.standard_normal((2, 4, 7, 7))
    conv2d_backward(dout, cache)
    assert calls == ["_input_grad_batch_innermost"]
    conv2d_backward(dout, cache, batch_innermost_on_cpu=False)
    conv2d_backward(dout, cache, need_input_grad=False)
    assert calls == ["_input_grad_batch_innermost"]
    conv2d_backward(dout, cache, wide_rows_on_cpu=True)
    assert calls == ["_input_grad_batch_innermost", "_input_grad_wide"]


# --------------------------------------------------------------------------- argument checks


def test_conv2d_forward_rejects_bad_arguments_with_clear_errors():
    rng = np.random.default_rng(10)
    x, w, b = rng.standard_normal((1, 4, 5, 5)), rng.standard_normal((6, 2, 3, 3)), rng.standard_normal(6)
    with pytest.raises(ValueError, match="shape"):
        conv2d_forward(x[0], w, b, 1, 0, 2)
    with pytest.raises(TypeError, match="floating"):
        conv2d_forward(x.astype(np.int64), w, b, 1, 0, 2)
    with pytest.raises(TypeError, match="dtype"):
        conv2d_forward(x, w.astype(np.float32), b, 1, 0, 2)
    with pytest.raises(ValueError, match="groups=1"):
        conv2d_forward(x, w, b, 1, 0, 1)  # 2 input channels a filter, but 4 channels in one group
    with pytest.raises(ValueError, match="groups"):
        conv2d_forward(x, w, b, 1, 0, 0)
    with pytest.raises(ValueError, match="bias"):
        conv2d_forward(x, w, b[:5], 1, 0, 2)
    with pytest.raises(ValueError, match="stride"):
        conv2d_forward(x, w, b, (0, 1), 0, 2)
    with pytest.raises(TypeError, match="padding"):
        conv2d_forward(x, w, b, 1, 1.0, 2)
    with pytest.raises(ValueError, match="empty"):
        conv2d_forward(x, rng.standard_normal((6, 2, 6, 6)), b, 1, 0, 2)
    out, cache = conv2d_forward(x, w, b, 1, 0, 2)
    with pytest.raises(ValueError, match="dout"):
        conv2d_backward(out[:, :, :2], cache)
    with pytest.raises(ValueError, match="col shape"):
        col2im(np.zeros((3, 3)), x.shape, 3, 3, 1, 0)


def test_an_int_stride_or_padding_means_both_axes():
    rng = np.random.default_rng(11)
    x, w = rng.standard_normal((2, 3, 7, 6)), rng.standard_normal((4, 3, 3, 3))
    out_int, cache_int = conv2d_forward(x, w, None, 2, 1, 1)
    out_pair, cache_pair = conv2d_forward(x, w, None, (2, 2), (1, 1), 1)
    np.testing.assert_array_equal(out_int, out_pair)
    assert cache_int["stride"] == (2, 2) and cache_int["padding"] == (1, 1)
    np.testing.assert_array_equal(im2col(x, 3, 3, 2, 1), im2col(x, 3, 3, (2, 2), (1, 1)))
