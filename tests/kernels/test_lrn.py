"""LRN kernel: naive references, gradient checks, laws, PyTorch and CuPy."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from minialex.backend import cuda_available
from minialex.kernels.lrn import local_response_norm_backward, local_response_norm_forward

# --------------------------------------------------------------------------- references


def window(c, size, channels):
    """Channels in c's window: c - size//2 ... c + (size-1)//2, clipped to the real channels."""
    return range(max(0, c - size // 2), min(channels, c + (size - 1) // 2 + 1))


def naive_lrn(x, size, alpha, beta, k):
    """Plain loops over output channels and their window; returns out and scale."""
    scale = np.empty_like(x)
    for c in range(x.shape[1]):
        energy = np.zeros_like(x[:, c])
        for j in window(c, size, x.shape[1]):
            energy += x[:, j] ** 2
        scale[:, c] = k + alpha / size * energy
    return x / scale**beta, scale


def naive_lrn_backward(dout, x, size, alpha, beta, k):
    """Chain rule written forwards: each output channel c pushes gradient to every input in its window."""
    _, scale = naive_lrn(x, size, alpha, beta, k)
    dx = np.zeros_like(x)
    for c in range(x.shape[1]):
        dx[:, c] += dout[:, c] * scale[:, c] ** -beta  # the direct path, d b_c / d a_c
        # d b_c / d scale_c = -beta * a_c * scale_c^(-beta-1); d scale_c / d a_i = 2 alpha/size a_i
        through_scale = dout[:, c] * -beta * x[:, c] * scale[:, c] ** (-beta - 1)
        for i in window(c, size, x.shape[1]):
            dx[:, i] += through_scale * 2 * alpha / size * x[:, i]
    return dx


def float32_error_bounds(x, dout, size, alpha, beta, k, eps=np.finfo(np.float32).eps):
    """How far a float32 LRN may be from the float64 reference, term by term.

    Forward: the scale is a sum of positive terms (the squares, `size` of them
    at most, then alpha/size and +k): relative error at most (size + 2) eps.
    The power multiplies that by beta and adds a few roundings of its own
    (two sqrt and a division, or powf), the product with a one more:

        |out - ref| <= (beta * (size + 2) + 5) * eps * |ref|  +  tiny

    Backward: dx_i = D_i - coef * a_i * sum_c T_c with D_i = dout_i scale_i^(-beta)
    and T_c = dout_c a_c scale_c^(-beta-1). Each T_c carries the scale's error
    times (beta + 1) plus ~7 roundings, the signed window sum (size - 1) more,
    and a difference can cancel, so the bound is on the sum of |terms|:

        |dx - ref| <= ((beta + 1) * (size + 2) + size + 10) * eps * (|D_i| + coef |a_i| sum_c |T_c|)  +  tiny

    `tiny`: values below float32's normal range keep an absolute error of up
    to one subnormal step (2^-149), which the backward multiplies by at most
    coef * |a_i| * size / k. x, dout: float64 copies of the float32 inputs.
    """
    subnormal = float(np.finfo(np.float32).smallest_subnormal)
    out, scale = naive_lrn(x, size, alpha, beta, k)
    forward = (beta * (size + 2) + 5) * eps * np.abs(out) + 2 * subnormal
    coef = 2 * alpha * beta / size
    direct = np.abs(dout) * scale**-beta
    terms = np.abs(dout * x) * scale ** (-beta - 1)
    received = np.zeros_like(x)
    for c in range(x.shape[1]):
        for i in window(c, size, x.shape[1]):
            received[:, i] += terms[:, c]
    magnitude = direct + coef * np.abs(x) * received
    backward = ((beta + 1) * (size + 2) + size + 10) * eps * magnitude
    backward += 4 * subnormal * (1 + coef * np.abs(x) * size / k)
    return forward, backward


# Large alpha and small k make the neighbour term dominate, so a window shifted
# by one channel changes the answer visibly.
STRONG = [  # size, alpha, beta, k
    (1, 0.9, 0.75, 0.5),
    (2, 0.5, 0.75, 1.0),
    (3, 1.0, 0.6, 0.5),
    (4, 0.8, 0.75, 0.7),
    (5, 0.6, 1.0, 0.5),
    (6, 1.0, 0.75, 1.0),
]
ALEXNET = (5, 1e-4, 0.75, 2.0)


# --------------------------------------------------------------------------- agreement with the naive loops


@pytest.mark.parametrize("size, alpha, beta, k", STRONG + [ALEXNET])
def test_forward_and_backward_equal_naive_channel_loops(size, alpha, beta, k):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 7, 3, 4)) * 2
    out, cache = local_response_norm_forward(x, size, alpha, beta, k)
    ref_out, ref_scale = naive_lrn(x, size, alpha, beta, k)
    np.testing.assert_allclose(out, ref_out, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(cache.scale, ref_scale, rtol=1e-12, atol=1e-12)

    dout = rng.standard_normal(x.shape)
    dx = local_response_norm_backward(dout, cache)
    np.testing.assert_allclose(dx, naive_lrn_backward(dout, x, size, alpha, beta, k), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 6, 9])
def test_window_sum_of_ones_counts_channels_in_clipped_window(size):
    # With a = 1 everywhere, scale_c - k is alpha/size times the number of real channels in c's window.
    channels = 6
    x = np.ones((1, channels, 1, 1))
    _, cache = local_response_norm_forward(x, size, alpha=float(size), beta=1.0, k=0.0)
    counts = [len(window(c, size, channels)) for c in range(channels)]
    np.testing.assert_allclose(cache.scale[0, :, 0, 0], counts, rtol=0, atol=1e-12)


def test_even_window_reaches_one_channel_further_back_than_forward():
    # size 2: window(c) = {c-1, c}. A single live channel 3 raises the scale of channels 3 and 4 only.
    x = np.zeros((1, 6, 1, 1))
    x[0, 3] = 1.0
    _, cache = local_response_norm_forward(x, 2, alpha=2.0, beta=1.0, k=1.0)
    np.testing.assert_allclose(cache.scale[0, :, 0, 0], [1, 1, 1, 2, 2, 1], atol=1e-15)


@pytest.mark.parametrize("shape", [(2, 5, 7), (2, 5, 3, 2, 2), (1, 3, 1, 1)])
def test_accepts_any_number_of_trailing_axes(shape):
    x = np.random.default_rng(1).standard_normal(shape)
    out, cache = local_response_norm_forward(x, 3, 0.7, 0.75, 0.5)
    ref_out, _ = naive_lrn(x, 3, 0.7, 0.75, 0.5)
    np.testing.assert_allclose(out, ref_out, rtol=1e-12, atol=1e-12)
    dout = np.random.default_rng(2).standard_normal(shape)
    np.testing.assert_allclose(
        local_response_norm_backward(dout, cache),
        naive_lrn_backward(dout, x, 3, 0.7, 0.75, 0.5),
        rtol=1e-12,
        atol=1e-12,
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_output_and_gradient_keep_input_dtype(dtype):
    x = np.random.default_rng(3).standard_normal((2, 8, 4, 4)).astype(dtype)
    out, cache = local_response_norm_forward(x, 5, 1e-4, 0.75, 2.0)
    assert out.dtype == dtype
    assert cache.scale.dtype == dtype
    assert local_response_norm_backward(np.ones_like(out), cache).dtype == dtype


def test_paper_form_is_reached_by_multiplying_alpha_by_size():
    # Krizhevsky 2012: b = a / (k + alpha * sum a^2)^beta, alpha not divided by n.
    x = np.random.default_rng(4).standard_normal((1, 8, 3, 3)) * 10
    paper_alpha, n = 1e-4, 5
    out, _ = local_response_norm_forward(x, n, paper_alpha * n, 0.75, 2.0)
    energy = np.stack([sum(x[:, j] ** 2 for j in window(c, n, 8)) for c in range(8)], axis=1)
    np.testing.assert_allclose(out, x / (2.0 + paper_alpha * energy) ** 0.75, rtol=1e-12)


# --------------------------------------------------------------------------- numerical gradient


@pytest.mark.parametrize("size, alpha, beta, k", STRONG + [ALEXNET])
def test_backward_matches_central_differences(size, alpha, beta, k):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 6, 2, 3))
    dout = rng.standard_normal(x.shape)
    _, cache = local_response_norm_forward(x, size, alpha, beta, k)
    dx = local_response_norm_backward(dout, cache)

    eps = 1e-6
    numeric = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        x_plus, x_minus = x.copy(), x.copy()
        x_plus[index] += eps
        x_minus[index] -= eps
        loss_plus = np.sum(local_response_norm_forward(x_plus, size, alpha, beta, k)[0] * dout)
        loss_minus = np.sum(local_response_norm_forward(x_minus, size, alpha, beta, k)[0] * dout)
        numeric[index] = (loss_plus - loss_minus) / (2 * eps)
    np.testing.assert_allclose(dx, numeric, rtol=1e-6, atol=1e-8)


# --------------------------------------------------------------------------- laws


@st.composite
def lrn_problems(draw):
    n, channels = draw(st.integers(1, 2)), draw(st.integers(1, 7))
    shape = (n, channels, draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    size = draw(st.integers(1, 8))
    beta = draw(st.floats(0.1, 2.0))
    k = draw(st.floats(0.5, 3.0))
    seed = draw(st.integers(0, 2**32 - 1))
    return shape, size, beta, k, seed


@settings(max_examples=50, deadline=None)
@given(lrn_problems())
def test_alpha_zero_is_division_by_k_to_the_beta(problem):
    shape, size, beta, k, seed = problem
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    out, cache = local_response_norm_forward(x, size, 0.0, beta, k)
    np.testing.assert_allclose(out, x / k**beta, rtol=1e-12)
    dout = rng.standard_normal(shape)
    np.testing.assert_allclose(local_response_norm_backward(dout, cache), dout / k**beta, rtol=1e-12)


@settings(max_examples=50, deadline=None)
@given(lrn_problems(), st.floats(0.0, 1.0))
def test_forward_and_backward_equal_naive_loops_on_random_settings(problem, alpha):
    shape, size, beta, k, seed = problem
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    dout = rng.standard_normal(shape)
    out, cache = local_response_norm_forward(x, size, alpha, beta, k)
    np.testing.assert_allclose(out, naive_lrn(x, size, alpha, beta, k)[0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        local_response_norm_backward(dout, cache),
        naive_lrn_backward(dout, x, size, alpha, beta, k),
        rtol=1e-10,
        atol=1e-12,
    )


# --------------------------------------------------------------------------- huge inputs


def test_huge_finite_float32_input_gives_finite_output_not_nan():
    """a = 1e20: a*a = 1e40 overflows float32, and the fast power computed inf/inf = NaN.
    The true output is 1e20 / (1 + 1e-4/5 * 3e40)^0.75 = 1.47e-7 (PyTorch 2.x gives 0.0:
    its float32 scale is inf too, and 1e20 / inf = 0). We compute it in float64 and round."""
    import minialex as ma
    import minialex.functional as F

    x = np.full((1, 3, 2, 2), 1e20, np.float32)
    out = F.local_response_norm(ma.tensor(x), 5)
    ref, _ = naive_lrn(x.astype(np.float64), 5, 1e-4, 0.75, 1.0)
    assert np.all(np.isfinite(out.numpy()))
    np.testing.assert_allclose(out.numpy(), ref, rtol=np.finfo(np.float32).eps, atol=0)

    _, cache = local_response_norm_forward(x, 5, 1e-4, 0.75, 1.0)
    dout = np.ones_like(x)
    dx = local_response_norm_backward(dout, cache)
    ref_dx = naive_lrn_backward(dout.astype(np.float64), x.astype(np.float64), 5, 1e-4, 0.75, 1.0)
    assert np.all(np.isfinite(dx)) and dx.dtype == np.float32
    np.testing.assert_allclose(dx, ref_dx, rtol=4 * np.finfo(np.float32).eps, atol=0)


def test_wide_arithmetic_limit_is_a_fourth_root_of_the_largest_float():
    from minialex.kernels.lrn import wide_arithmetic_limit

    assert wide_arithmetic_limit(np.float32) == pytest.approx(4.3e9, rel=1e-2)
    assert wide_arithmetic_limit(np.float64) == np.inf  # nothing wider to fall back on


FINITE_FLOAT32 = st.one_of(
    st.floats(-10.0, 10.0, width=32),  # everyday activations
    st.floats(width=32, allow_nan=False, allow_infinity=False),  # everything, up to +-3.4e38
)


@st.composite
def huge_lrn_problems(draw):
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 7)), draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    x = draw(hnp.arrays(np.float32, shape, elements=FINITE_FLOAT32))
    size = draw(st.integers(1, 8))
    alpha = draw(st.one_of(st.just(1e-4), st.floats(1e-4, 1.0)))
    beta = draw(st.one_of(st.just(0.75), st.floats(0.5, 2.0)))  # 0.75 takes the sqrt(sqrt) fast power
    k = draw(st.one_of(st.just(2.0), st.floats(0.5, 3.0)))
    return x, size, alpha, beta, k, draw(st.integers(0, 2**32 - 1))


@settings(max_examples=150, deadline=None)
@given(huge_lrn_problems(), st.booleans())
def test_float32_lrn_of_any_finite_input_is_finite_and_within_round_off_of_float64(problem, cache_from_cuda):
    """For every finite float32 input, huge ones included, forward and backward are finite
    and within the float32 round-off bound of ``float32_error_bounds`` of a float64 reference."""
    x, size, alpha, beta, k, seed = problem
    dout = np.random.default_rng(seed).standard_normal(x.shape).astype(np.float32)
    out, cache = local_response_norm_forward(x, size, alpha, beta, k)
    if cache_from_cuda:  # the CUDA forward leaves wide=None: the backward must find out itself
        cache = cache._replace(wide=None)
    dx = local_response_norm_backward(dout, cache)
    assert out.dtype == dx.dtype == np.float32
    assert np.all(np.isfinite(out)) and np.all(np.isfinite(dx))

    x64, dout64 = x.astype(np.float64), dout.astype(np.float64)
    ref_out, _ = naive_lrn(x64, size, alpha, beta, k)
    ref_dx = naive_lrn_backward(dout64, x64, size, alpha, beta, k)
    forward_bound, backward_bound = float32_error_bounds(x64, dout64, size, alpha, beta, k)
    assert np.all(np.abs(out - ref_out) <= forward_bound)
    assert np.all(np.abs(dx - ref_dx) <= backward_bound)


# --------------------------------------------------------------------------- validation


def test_rejects_bad_arguments_with_clear_errors():
    x = np.zeros((1, 4, 2, 2))
    with pytest.raises(ValueError, match="shape"):
        local_response_norm_forward(np.zeros((4, 2)), 3, 1e-4, 0.75, 1.0)
    with pytest.raises(ValueError, match="size"):
        local_response_norm_forward(x, 0, 1e-4, 0.75, 1.0)
    with pytest.raises(ValueError, match="size"):
        local_response_norm_forward(x, 2.5, 1e-4, 0.75, 1.0)
    with pytest.raises(TypeError, match="floating"):
        local_response_norm_forward(np.zeros((1, 4, 2, 2), np.int32), 3, 1e-4, 0.75, 1.0)
    with pytest.raises(TypeError, match="beta"):
        local_response_norm_forward(x, 3, 1e-4, "0.75", 1.0)
    _, cache = local_response_norm_forward(x, 3, 1e-4, 0.75, 1.0)
    with pytest.raises(ValueError, match="dout"):
        local_response_norm_backward(np.zeros((1, 3, 2, 2)), cache)


# --------------------------------------------------------------------------- PyTorch

TORCH_CASES = [
    # shape, size, alpha, beta, k
    ((2, 96, 55, 55), 5, 1e-4, 0.75, 2.0),  # AlexNet LRN1
    ((2, 256, 27, 27), 5, 1e-4, 0.75, 2.0),  # AlexNet LRN2
    ((2, 8, 5, 5), 2, 0.9, 0.75, 0.5),
    ((2, 8, 5, 5), 3, 0.8, 0.6, 1.0),
    ((2, 8, 5, 5), 4, 1.0, 0.75, 0.5),
    ((2, 8, 5, 5), 6, 0.7, 1.0, 0.8),
    ((2, 8, 5), 4, 0.9, 0.75, 0.5),  # 3-D input
    ((2, 8, 3, 2, 2), 3, 0.9, 0.75, 0.5),  # 5-D input
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, size, alpha, beta, k", TORCH_CASES)
def test_forward_and_backward_agree_with_torch(shape, size, alpha, beta, k, dtype):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(6)
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    dout = rng.standard_normal(shape).astype(dtype)
    out, cache = local_response_norm_forward(x, size, alpha, beta, k)
    dx = local_response_norm_backward(dout, cache)

    # PyTorch in float64 is the reference for both dtypes: ours must be within the float32
    # (or float64) round-off bound of float32_error_bounds, whatever PyTorch's float32 does.
    x_torch = torch.from_numpy(x.astype(np.float64)).requires_grad_(True)
    out_torch = torch.nn.functional.local_response_norm(x_torch, size, alpha, beta, k)
    out_torch.backward(torch.from_numpy(dout.astype(np.float64)))
    forward_bound, backward_bound = float32_error_bounds(
        x.astype(np.float64), dout.astype(np.float64), size, alpha, beta, k, eps=np.finfo(dtype).eps
    )
    forward_bound += 10 * np.finfo(np.float64).eps * np.abs(out_torch.detach().numpy())  # PyTorch's own round-off
    backward_bound += 10 * np.finfo(np.float64).eps * np.abs(x_torch.grad.numpy())
    assert np.all(np.abs(out - out_torch.detach().numpy()) <= forward_bound)
    assert np.all(np.abs(dx - x_torch.grad.numpy()) <= backward_bound)


# --------------------------------------------------------------------------- GPU


@pytest.mark.gpu
@pytest.mark.skipif(not cuda_available(), reason="needs CuPy and a CUDA device")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("size, alpha, beta, k", [STRONG[1], STRONG[4], ALEXNET])
def test_cupy_arrays_give_the_numpy_results(size, alpha, beta, k, dtype):
    import cupy

    rng = np.random.default_rng(7)
    x = (rng.standard_normal((2, 16, 9, 9)) * 3).astype(dtype)
    dout = rng.standard_normal(x.shape).astype(dtype)
    out, cache = local_response_norm_forward(x, size, alpha, beta, k)
    dx = local_response_norm_backward(dout, cache)

    out_gpu, cache_gpu = local_response_norm_forward(cupy.asarray(x), size, alpha, beta, k)
    dx_gpu = local_response_norm_backward(cupy.asarray(dout), cache_gpu)
    assert isinstance(out_gpu, cupy.ndarray) and isinstance(dx_gpu, cupy.ndarray)
    assert out_gpu.dtype == dtype and dx_gpu.dtype == dtype
    # Both paths are within float32_error_bounds of the float64 truth, so within twice it of each other.
    forward_bound, backward_bound = float32_error_bounds(
        x.astype(np.float64), dout.astype(np.float64), size, alpha, beta, k, eps=np.finfo(dtype).eps
    )
    assert np.all(np.abs(cupy.asnumpy(out_gpu) - out) <= 2 * forward_bound)
    assert np.all(np.abs(cupy.asnumpy(dx_gpu) - dx) <= 2 * backward_bound)


@pytest.mark.gpu
@pytest.mark.skipif(not cuda_available(), reason="needs CuPy and a CUDA device")
@pytest.mark.parametrize("size, alpha, beta, k", [STRONG[1], STRONG[4], ALEXNET])
def test_cupy_float32_lrn_of_huge_inputs_is_finite_and_within_round_off_of_float64(size, alpha, beta, k):
    """The CUDA kernels fall back to double channel by channel (the generic code, for the whole
    array): both stay finite and within float32_error_bounds of the float64 reference."""
    import cupy

    rng = np.random.default_rng(8)
    x = (rng.standard_normal((2, 16, 5, 5)) * 10.0 ** rng.uniform(-3, 38, size=(2, 16, 5, 5))).astype(np.float32)
    x[0, 3] = 1e20  # a whole channel whose square overflows float32
    dout = rng.standard_normal(x.shape).astype(np.float32)
    out_gpu, cache_gpu = local_response_norm_forward(cupy.asarray(x), size, alpha, beta, k)
    dx_gpu = local_response_norm_backward(cupy.asarray(dout), cache_gpu)
    out, dx = cupy.asnumpy(out_gpu), cupy.asnumpy(dx_gpu)
    assert np.all(np.isfinite(out)) and np.all(np.isfinite(dx))
    x64, dout64 = x.astype(np.float64), dout.astype(np.float64)
    forward_bound, backward_bound = float32_error_bounds(x64, dout64, size, alpha, beta, k)
    assert np.all(np.abs(out - naive_lrn(x64, size, alpha, beta, k)[0]) <= forward_bound)
    assert np.all(np.abs(dx - naive_lrn_backward(dout64, x64, size, alpha, beta, k)) <= backward_bound)
