"""Max-pool kernel: naive references, tie rule, gradient checks, laws, PyTorch and CuPy."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minialex.backend import cuda_available
from minialex.kernels import pool, threads
from minialex.kernels.pool import max_pool2d_backward, max_pool2d_forward, pool_output_size

# --------------------------------------------------------------------------- references


def naive_max_pool2d(x, kernel_size, stride, padding):
    """Plain loops over every output pixel; padding positions are skipped, as in PyTorch.

    Returns out and, per output, the (row, col) of the first maximum in row-major window order.
    """
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    n, c, h, w = x.shape
    oh = (h + 2 * ph - kh) // sh + 1
    ow = (w + 2 * pw - kw) // sw + 1
    out = np.empty((n, c, oh, ow), dtype=x.dtype)
    where = np.empty((n, c, oh, ow, 2), dtype=np.int64)
    for b in range(n):
        for ch in range(c):
            for y in range(oh):
                for xx in range(ow):
                    best, best_pos = -np.inf, None
                    for i in range(kh):
                        for j in range(kw):
                            r, q = y * sh - ph + i, xx * sw - pw + j
                            if 0 <= r < h and 0 <= q < w and (best_pos is None or x[b, ch, r, q] > best):
                                best, best_pos = x[b, ch, r, q], (r, q)
                    out[b, ch, y, xx] = best
                    where[b, ch, y, xx] = best_pos
    return out, where


def naive_max_pool2d_backward(dout, where, x_shape):
    dx = np.zeros(x_shape, dtype=dout.dtype)
    n, c, oh, ow = dout.shape
    for b in range(n):
        for ch in range(c):
            for y in range(oh):
                for xx in range(ow):
                    r, q = where[b, ch, y, xx]
                    dx[b, ch, r, q] += dout[b, ch, y, xx]
    return dx


def shuffled_linspace(shape, seed):
    """Distinct values (no ties), spaced far wider than a finite-difference step."""
    values = np.linspace(-1.0, 1.0, int(np.prod(shape)))
    np.random.default_rng(seed).shuffle(values)
    return values.reshape(shape)


GEOMETRIES = [
    # kernel, stride, padding, input (H, W)
    ((2, 2), (2, 2), (0, 0), (8, 8)),
    ((3, 3), (2, 2), (0, 0), (9, 11)),  # AlexNet's overlapping pool
    ((3, 3), (2, 2), (1, 1), (8, 7)),
    ((2, 3), (1, 2), (1, 1), (6, 9)),  # non-square everything
    ((3, 2), (2, 1), (1, 0), (7, 5)),
    ((1, 1), (1, 1), (0, 0), (4, 5)),
    ((4, 4), (3, 3), (2, 2), (10, 10)),
    ((3, 3), (1, 1), (1, 1), (5, 5)),  # stride 1: every pixel in up to nine windows
    ((3, 3), (2, 2), (0, 0), (55, 55)),  # AlexNet pool1: 55x55 -> 27x27
]


# --------------------------------------------------------------------------- agreement with the naive loops


@pytest.mark.parametrize("kernel, stride, padding, hw", GEOMETRIES)
def test_forward_and_backward_equal_naive_loops(kernel, stride, padding, hw):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 2) + hw)
    out, cache = max_pool2d_forward(x, kernel, stride, padding)
    ref_out, where = naive_max_pool2d(x, kernel, stride, padding)
    np.testing.assert_array_equal(out, ref_out)

    dout = rng.standard_normal(out.shape)
    dx = max_pool2d_backward(dout, cache)
    np.testing.assert_allclose(dx, naive_max_pool2d_backward(dout, where, x.shape), rtol=1e-12, atol=1e-12)


def test_alexnet_pool_maps_55_to_27():
    assert pool_output_size(55, 3, 2, 0) == 27
    assert pool_output_size(27, 3, 2, 0) == 13
    assert pool_output_size(13, 3, 2, 0) == 6
    out, _ = max_pool2d_forward(np.zeros((1, 2, 55, 55), np.float32), (3, 3), (2, 2), (0, 0))
    assert out.shape == (1, 2, 27, 27)


def test_output_size_is_floor_mode():
    assert pool_output_size(8, 3, 2, 0) == 3  # 3.5 rounds down
    assert pool_output_size(8, 3, 2, 1) == 4
    assert pool_output_size(7, 2, 2, 1) == 4


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_output_and_gradient_keep_input_dtype(dtype):
    x = np.random.default_rng(1).standard_normal((2, 3, 7, 7)).astype(dtype)
    out, cache = max_pool2d_forward(x, (3, 3), (2, 2), (1, 1))
    assert out.dtype == dtype
    assert max_pool2d_backward(np.ones_like(out), cache).dtype == dtype


def test_cache_keeps_a_small_integer_argmax():
    x = np.random.default_rng(2).standard_normal((2, 3, 9, 9))
    out, cache = max_pool2d_forward(x, (3, 3), (2, 2), (0, 0))
    assert cache.argmax.shape == out.shape
    assert cache.argmax.dtype.kind in "ui" and cache.argmax.dtype.itemsize == 1
    assert cache.argmax.max() < 9


# --------------------------------------------------------------------------- ties


def test_tie_sends_gradient_to_first_maximum_in_row_major_order():
    x = np.zeros((1, 1, 2, 2))
    x[0, 0, 0, 1] = 5.0  # first maximum in row-major order
    x[0, 0, 1, 0] = 5.0  # equal, later: must not take over
    out, cache = max_pool2d_forward(x, (2, 2), (2, 2), (0, 0))
    assert out[0, 0, 0, 0] == 5.0
    dx = max_pool2d_backward(np.full((1, 1, 1, 1), 3.0), cache)
    expected = np.zeros_like(x)
    expected[0, 0, 0, 1] = 3.0
    np.testing.assert_array_equal(dx, expected)


def test_constant_input_routes_every_gradient_to_window_top_left():
    x = np.ones((1, 1, 5, 5))
    out, cache = max_pool2d_forward(x, (3, 3), (2, 2), (0, 0))
    np.testing.assert_array_equal(cache.argmax, 0)
    dx = max_pool2d_backward(np.ones_like(out), cache)
    expected = np.zeros_like(x)
    expected[0, 0, ::2, ::2][:2, :2] = 1.0
    np.testing.assert_array_equal(dx, expected)


def test_overlapping_windows_sum_gradients_at_a_shared_maximum():
    # The centre pixel (2, 2) is the maximum of all four 3x3/2 windows of a 5x5 map.
    x = np.zeros((1, 1, 5, 5))
    x[0, 0, 2, 2] = 1.0
    out, cache = max_pool2d_forward(x, (3, 3), (2, 2), (0, 0))
    dout = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    dx = max_pool2d_backward(dout, cache)
    assert dx[0, 0, 2, 2] == 10.0
    assert dx.sum() == 10.0


# --------------------------------------------------------------------------- padding never wins


def test_all_minus_inf_window_with_padding_sends_gradient_to_its_first_real_pixel():
    """A 1x1 -inf image, pooled 2x2 with padding 1: the window is three padding cells and one
    real -inf. The padding (also -inf) must not win the tie: the real pixel gets the gradient,
    as in PyTorch (grad 1), instead of the gradient vanishing into the cropped border."""
    x = np.full((1, 1, 1, 1), -np.inf, dtype=np.float32)
    out, cache = max_pool2d_forward(x, (2, 2), (2, 2), (1, 1))
    assert out[0, 0, 0, 0] == -np.inf
    assert cache.argmax[0, 0, 0, 0] == 3  # offset (1, 1): the real pixel, not offset 0 (padding)
    for scatter in (True, False):  # the np.add.at speed-up and the clear loop over offsets
        dx = max_pool2d_backward(np.full((1, 1, 1, 1), 1.0, np.float32), cache, scatter_on_cpu=scatter)
        np.testing.assert_array_equal(dx, [[[[1.0]]]])


def test_minus_inf_windows_with_padding_agree_with_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(8)
    x = rng.choice([-np.inf, -1.0, 0.0, 2.0], p=[0.7, 0.1, 0.1, 0.1], size=(2, 3, 7, 6)).astype(np.float32)
    for kernel, stride, padding in [((2, 2), (2, 2), (1, 1)), ((3, 3), (2, 2), (1, 1)), ((3, 2), (1, 2), (1, 1))]:
        out, cache = max_pool2d_forward(x, kernel, stride, padding)
        dout = rng.standard_normal(out.shape).astype(np.float32)
        x_torch = torch.from_numpy(x).requires_grad_(True)
        out_torch = torch.nn.functional.max_pool2d(x_torch, kernel, stride, padding)
        out_torch.backward(torch.from_numpy(dout))
        np.testing.assert_array_equal(out, out_torch.detach().numpy())
        # Pure routing (each pixel adds the dout of the windows it wins, in the same
        # order): equal bit for bit, no round-off to allow for.
        np.testing.assert_array_equal(max_pool2d_backward(dout, cache), x_torch.grad.numpy())


@st.composite
def padded_pool_problems_with_minus_inf(draw):
    """Geometries with padding of at least 1 on some axis, inputs mostly -inf with ties."""
    shape, kernel, stride, padding, seed = draw(pool_problems())
    kh, kw = kernel
    if kh < 2 and kw < 2:
        kernel = (2, kw)
    if kernel[0] >= 2:
        padding = (draw(st.integers(1, kernel[0] // 2)), draw(st.integers(0, kernel[1] // 2)))
    else:  # kernel[1] >= 2 here
        padding = (0, draw(st.integers(1, kernel[1] // 2)))
    h = max(shape[2], kernel[0] - 2 * padding[0])
    w = max(shape[3], kernel[1] - 2 * padding[1])
    return (shape[0], shape[1], h, w), kernel, stride, padding, seed


@settings(max_examples=80, deadline=None)
@given(padded_pool_problems_with_minus_inf(), st.sampled_from([np.float32, np.float64]), st.booleans())
def test_gradient_is_conserved_with_minus_inf_ties_and_padding(problem, dtype, scatter):
    """Conservation: every output routes its gradient to exactly one REAL input, so the
    gradient's sum over a plane equals dout's sum over it, even when windows are all -inf.
    (Sums of the same terms in different orders: compared to float64 round-off, 1e-12
    relative to the sum of |dout|, with dout drawn in float64 and cast.)"""
    shape, kernel, stride, padding, seed = problem
    rng = np.random.default_rng(seed)
    x = rng.choice([-np.inf, -1.0, 0.0, 1.0], p=[0.6, 0.15, 0.15, 0.1], size=shape).astype(dtype)
    out, cache = max_pool2d_forward(x, kernel, stride, padding)
    ref_out, where = naive_max_pool2d(x, kernel, stride, padding)
    np.testing.assert_array_equal(out, ref_out)
    dout = rng.standard_normal(out.shape).astype(dtype)
    dx = max_pool2d_backward(dout, cache, scatter_on_cpu=scatter)
    dout64 = dout.astype(np.float64)
    bound = 1e-12 + 4 * np.finfo(dtype).eps * out.shape[2] * out.shape[3] * np.abs(dout64).sum(axis=(2, 3))
    assert np.all(np.abs(dx.sum(axis=(2, 3), dtype=np.float64) - dout64.sum(axis=(2, 3))) <= bound)
    # ...and it lands where the naive loop (which skips the padding) puts it.
    np.testing.assert_array_equal(dx, naive_max_pool2d_backward(dout, where, x.shape))


# --------------------------------------------------------------------------- numerical gradient


@pytest.mark.parametrize("kernel, stride, padding, hw", GEOMETRIES[:5])
def test_backward_matches_central_differences(kernel, stride, padding, hw):
    x = shuffled_linspace((2, 2) + hw, seed=3)
    out, cache = max_pool2d_forward(x, kernel, stride, padding)
    dout = np.random.default_rng(4).standard_normal(out.shape)
    dx = max_pool2d_backward(dout, cache)

    eps = 1e-6
    numeric = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        x_plus, x_minus = x.copy(), x.copy()
        x_plus[index] += eps
        x_minus[index] -= eps
        loss_plus = np.sum(max_pool2d_forward(x_plus, kernel, stride, padding)[0] * dout)
        loss_minus = np.sum(max_pool2d_forward(x_minus, kernel, stride, padding)[0] * dout)
        numeric[index] = (loss_plus - loss_minus) / (2 * eps)
    np.testing.assert_allclose(dx, numeric, rtol=1e-6, atol=1e-8)


# --------------------------------------------------------------------------- laws


@st.composite
def pool_problems(draw):
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    ph, pw = draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2))
    h = draw(st.integers(max(1, kh - 2 * ph), 9))
    w = draw(st.integers(max(1, kw - 2 * pw), 9))
    n, c = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**32 - 1))
    return (n, c, h, w), (kh, kw), (sh, sw), (ph, pw), seed


@settings(max_examples=50, deadline=None)
@given(pool_problems())
def test_gradients_sum_to_upstream_sum_each_output_routes_to_one_input(problem):
    shape, kernel, stride, padding, seed = problem
    rng = np.random.default_rng(seed)
    # Small integers: plenty of ties, which must still route each gradient exactly once.
    x = rng.integers(-3, 4, size=shape).astype(np.float64)
    out, cache = max_pool2d_forward(x, kernel, stride, padding)
    dout = rng.standard_normal(out.shape)
    dx = max_pool2d_backward(dout, cache)
    np.testing.assert_allclose(dx.sum(axis=(2, 3)), dout.sum(axis=(2, 3)), rtol=1e-12, atol=1e-12)
    # ...and a ones gradient counts, per pixel, the windows it wins: never more than it lies in.
    wins = max_pool2d_backward(np.ones_like(out), cache)
    assert wins.sum() == out.size
    assert wins.min() >= 0


@settings(max_examples=50, deadline=None)
@given(pool_problems())
def test_forward_equals_naive_loops_on_random_geometries_with_ties(problem):
    shape, kernel, stride, padding, seed = problem
    x = np.random.default_rng(seed).integers(-3, 4, size=shape).astype(np.float64)
    out, _ = max_pool2d_forward(x, kernel, stride, padding)
    ref_out, _ = naive_max_pool2d(x, kernel, stride, padding)
    np.testing.assert_array_equal(out, ref_out)


@settings(max_examples=60, deadline=None)
@given(pool_problems(), st.sampled_from([np.float32, np.float64]))
def test_cpu_scatter_backward_equals_the_clear_loop_bit_for_bit(problem, dtype):
    """The NumPy speed-up (one np.add.at) against the clear loop over offsets: same sums, same order."""
    shape, kernel, stride, padding, seed = problem
    rng = np.random.default_rng(seed)
    x = rng.integers(-3, 4, size=shape).astype(dtype)  # ties: one pixel wins several windows
    out, cache = max_pool2d_forward(x, kernel, stride, padding)
    dout = rng.standard_normal(out.shape).astype(dtype)
    fast = pool._max_pool2d_backward_scatter(dout, cache)
    clear = max_pool2d_backward(dout, cache, scatter_on_cpu=False)
    assert fast.dtype == clear.dtype == dtype and fast.shape == clear.shape == shape
    assert fast.flags.c_contiguous and clear.flags.c_contiguous
    np.testing.assert_array_equal(fast, clear)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40), st.integers(0, 300))
def test_offset_to_shift_is_the_flat_distance_to_the_window_maximum(kh, kw, extra_width):
    """For every offset i*kw + j, in the narrow dtype the scatter picks: i*Wp + j, exactly."""
    Wp = kw + extra_width  # a padded row is at least as wide as the window
    offsets = np.arange(kh * kw)
    argmax = offsets.astype(pool._argmax_dtype(np, kh * kw))
    dtype = pool._smallest_unsigned(max((kh - 1) * Wp + kw - 1, Wp))
    shift = pool._offset_to_shift(argmax, kw, Wp, out=np.empty(argmax.shape, dtype=dtype))
    i, j = np.divmod(offsets, kw)
    np.testing.assert_array_equal(shift.astype(np.int64), i * Wp + j)


def test_scatter_backward_with_windows_over_256_pixels_equals_the_clear_loop():
    """A 17x17 window: the argmax is int32 and the shifts need 16 bits."""
    rng = np.random.default_rng(0)
    x = rng.integers(-3, 4, size=(2, 3, 40, 41)).astype(np.float32)
    out, cache = max_pool2d_forward(x, 17, 3, 8)
    assert cache.argmax.dtype == np.int32
    dout = rng.standard_normal(out.shape).astype(np.float32)
    np.testing.assert_array_equal(pool._max_pool2d_backward_scatter(dout, cache),
                                  max_pool2d_backward(dout, cache, scatter_on_cpu=False))


@settings(max_examples=40, deadline=None)
@given(pool_problems(), st.integers(1, 40), st.integers(1, 3))
def test_cpu_scatter_backward_in_any_chunks_on_any_threads_equals_the_clear_loop(problem, chunk, count):
    """The scatter's chunks of planes and its split over threads change neither the sums nor their order."""
    shape, kernel, stride, padding, seed = problem
    rng = np.random.default_rng(seed)
    x = rng.integers(-3, 4, size=(shape[0] * 2, shape[1] * 2) + shape[2:]).astype(np.float32)
    out, cache = max_pool2d_forward(x, kernel, stride, padding)
    dout = rng.standard_normal(out.shape).astype(np.float32)
    clear = max_pool2d_backward(dout, cache, scatter_on_cpu=False)
    kept = pool.SCATTER_CHUNK, pool.SCATTER_OUTPUTS_PER_THREAD, threads.MIN_ELEMENTS_PER_THREAD
    # tiny chunks, and every plane worth a thread
    pool.SCATTER_CHUNK, pool.SCATTER_OUTPUTS_PER_THREAD, threads.MIN_ELEMENTS_PER_THREAD = chunk, 1, 1
    try:
        with threads.num_threads(count):
            fast = pool._max_pool2d_backward_scatter(dout, cache)
    finally:
        pool.SCATTER_CHUNK, pool.SCATTER_OUTPUTS_PER_THREAD, threads.MIN_ELEMENTS_PER_THREAD = kept
    assert fast.dtype == clear.dtype and fast.shape == clear.shape and fast.flags.c_contiguous
    np.testing.assert_array_equal(fast, clear)


@settings(max_examples=80, deadline=None)
@given(pool_problems(), st.sampled_from([np.float32, np.float64]),
       st.sampled_from(["ties", "minus_inf", "nan", "plus_inf"]))
def test_cpu_one_pass_forward_equals_the_clear_loops_bit_for_bit(problem, dtype, values):
    """The NumPy speed-up of the forward (running max and argmax together) against the clear
    two loops: the same maxima and the same first-maximum offsets, including ties, -inf
    windows beside padding, NaN and +inf (where the speed-up hands over to the clear loops)."""
    shape, kernel, stride, padding, seed = problem
    rng = np.random.default_rng(seed)
    special = {"ties": 0.0, "minus_inf": -np.inf, "nan": np.nan, "plus_inf": np.inf}[values]
    x = rng.integers(-3, 4, size=shape).astype(dtype)
    x[rng.random(shape) < 0.3] = special
    fast_out, fast_cache = max_pool2d_forward(x, kernel, stride, padding)
    clear_out, clear_cache = max_pool2d_forward(x, kernel, stride, padding, one_pass_on_cpu=False)
    np.testing.assert_array_equal(fast_out, clear_out)
    assert fast_out.dtype == clear_out.dtype == dtype and fast_out.flags.c_contiguous
    assert fast_cache.argmax.dtype == clear_cache.argmax.dtype
    np.testing.assert_array_equal(fast_cache.argmax, clear_cache.argmax)
    assert fast_cache[1:] == clear_cache[1:]


def test_cpu_one_pass_forward_runs_by_default_and_only_one_pass_on_cpu_switches_it_off(monkeypatch):
    x = np.random.default_rng(0).standard_normal((2, 3, 11, 11)).astype(np.float32)
    calls = []
    original = pool._max_pool2d_forward_one_pass
    monkeypatch.setattr(pool, "_max_pool2d_forward_one_pass", lambda *a, **k: calls.append("one pass") or original(*a, **k))
    max_pool2d_forward(x, 3, 2, 1)
    assert calls == ["one pass"]
    max_pool2d_forward(x, 3, 2, 1, one_pass_on_cpu=False)
    assert calls == ["one pass"]


def test_cpu_scatter_backward_runs_by_default_and_only_scatter_on_cpu_switches_it_off(monkeypatch):
    from minialex.kernels import cuda as fast_paths

    x = np.random.default_rng(0).standard_normal((2, 3, 11, 11)).astype(np.float32)
    out, cache = max_pool2d_forward(x, 3, 2, 1)
    dout = np.ones_like(out)
    calls = []
    original = pool._max_pool2d_backward_scatter
    monkeypatch.setattr(pool, "_max_pool2d_backward_scatter", lambda *a: calls.append("scatter") or original(*a))
    max_pool2d_backward(dout, cache)
    assert calls == ["scatter"]
    with fast_paths.use_fast_paths(False):  # the CUDA switch: no say over a CPU speed-up
        max_pool2d_backward(dout, cache)
    assert calls == ["scatter", "scatter"]
    max_pool2d_backward(dout, cache, scatter_on_cpu=False)
    assert calls == ["scatter", "scatter"]


# --------------------------------------------------------------------------- validation


def test_rejects_bad_arguments_with_clear_errors():
    x = np.zeros((1, 1, 4, 4))
    with pytest.raises(ValueError, match="padding"):
        max_pool2d_forward(x, (2, 2), (2, 2), (2, 2))  # more than half the kernel
    with pytest.raises(ValueError, match="shape"):
        max_pool2d_forward(np.zeros((4, 4)), (2, 2), (2, 2), (0, 0))
    with pytest.raises(ValueError, match="empty"):
        max_pool2d_forward(x, (5, 5), (1, 1), (0, 0))
    with pytest.raises(ValueError, match="stride"):
        max_pool2d_forward(x, (2, 2), (0, 1), (0, 0))
    with pytest.raises(TypeError, match="floating"):
        max_pool2d_forward(np.zeros((1, 1, 4, 4), np.int64), (2, 2), (2, 2), (0, 0))
    with pytest.raises(TypeError, match="kernel_size"):
        max_pool2d_forward(x, (2.0, 2), (2, 2), (0, 0))
    _, cache = max_pool2d_forward(x, (2, 2), (2, 2), (0, 0))
    with pytest.raises(ValueError, match="dout"):
        max_pool2d_backward(np.zeros((1, 1, 3, 3)), cache)


# --------------------------------------------------------------------------- PyTorch


TORCH_CASES = [
    # (N, C, H, W), kernel, stride, padding
    ((2, 96, 55, 55), (3, 3), (2, 2), (0, 0)),  # AlexNet pool1
    ((2, 256, 27, 27), (3, 3), (2, 2), (0, 0)),  # AlexNet pool2
    ((2, 3, 13, 12), (3, 3), (2, 2), (1, 1)),
    ((2, 3, 9, 10), (2, 3), (1, 2), (1, 1)),
    ((2, 3, 8, 8), (2, 2), (2, 2), (0, 0)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, kernel, stride, padding", TORCH_CASES)
def test_forward_and_backward_agree_with_torch(shape, kernel, stride, padding, dtype):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    x = rng.standard_normal(shape).astype(dtype)
    out, cache = max_pool2d_forward(x, kernel, stride, padding)
    dout = rng.standard_normal(out.shape).astype(dtype)
    dx = max_pool2d_backward(dout, cache)

    def torch_float64(grad_output):
        """PyTorch's output and input-gradient in float64 (the same argmax: x is exact in float64)."""
        x_torch = torch.from_numpy(x.astype(np.float64)).requires_grad_(True)
        out_torch = torch.nn.functional.max_pool2d(x_torch, kernel, stride, padding)
        out_torch.backward(torch.from_numpy(grad_output.astype(np.float64)))
        return out_torch.detach().numpy(), x_torch.grad.numpy()

    out_torch, dx_torch = torch_float64(dout)
    np.testing.assert_array_equal(out, out_torch)
    # An input's gradient adds the gradients of the up to ceil(k/s)^2 windows it wins, in any
    # order: within (n + 2) * eps * (sum of |terms|) of PyTorch's float64 sum, the |terms|
    # routed the same way from |dout|.
    _, magnitude = torch_float64(np.abs(dout))
    kernel_hw, stride_hw = np.broadcast_to(kernel, 2), np.broadcast_to(stride or kernel, 2)
    windows = int(np.prod([-(-k // s) for k, s in zip(kernel_hw, stride_hw)]))
    info = np.finfo(dtype)
    assert np.all(np.abs(dx - dx_torch) <= (windows + 2) * float(info.eps) * magnitude + float(info.smallest_subnormal))


@pytest.mark.parametrize("padding", [(0, 0), (1, 1)])
def test_tie_rule_agrees_with_torch_on_inputs_full_of_ties(padding):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(6)
    x = rng.integers(0, 3, size=(2, 4, 11, 11)).astype(np.float64)
    out, cache = max_pool2d_forward(x, (3, 3), (2, 2), padding)
    dout = rng.standard_normal(out.shape)
    dx = max_pool2d_backward(dout, cache)
    x_torch = torch.from_numpy(x).requires_grad_(True)
    torch.nn.functional.max_pool2d(x_torch, 3, 2, padding).backward(torch.from_numpy(dout))
    np.testing.assert_allclose(dx, x_torch.grad.numpy(), rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- GPU


@pytest.mark.gpu
@pytest.mark.skipif(not cuda_available(), reason="needs CuPy and a CUDA device")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kernel, stride, padding, hw", [GEOMETRIES[1], GEOMETRIES[2], GEOMETRIES[3]])
@pytest.mark.parametrize("minus_inf", [False, True])
def test_cupy_arrays_give_the_numpy_results(kernel, stride, padding, hw, dtype, minus_inf):
    import cupy

    rng = np.random.default_rng(7)
    x = rng.integers(-3, 4, size=(2, 3) + hw).astype(dtype)  # ties included
    if minus_inf:  # whole -inf windows: padding must lose the tie on the GPU too
        x[x < 2] = -np.inf
    out, cache = max_pool2d_forward(x, kernel, stride, padding)
    dout = rng.standard_normal(out.shape).astype(dtype)
    dx = max_pool2d_backward(dout, cache)

    out_gpu, cache_gpu = max_pool2d_forward(cupy.asarray(x), kernel, stride, padding)
    dx_gpu = max_pool2d_backward(cupy.asarray(dout), cache_gpu)
    assert isinstance(out_gpu, cupy.ndarray) and isinstance(dx_gpu, cupy.ndarray)
    assert out_gpu.dtype == dtype and dx_gpu.dtype == dtype
    np.testing.assert_array_equal(cupy.asnumpy(out_gpu), out)
    np.testing.assert_array_equal(cupy.asnumpy(cache_gpu.argmax), cache.argmax)
    np.testing.assert_allclose(cupy.asnumpy(dx_gpu), dx, rtol=1e-6, atol=1e-6)
