"""The layer functions of ``minialex.functional``: gradient checks, laws, PyTorch, bad input, GPU.

Every ``F.*`` layer function is checked three ways: float64 finite differences
through ``ma.gradcheck``, laws that must hold for any input (hypothesis), and
agreement with PyTorch's function of the same name in float32, values and
every input gradient.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minialex as ma
import minialex.functional as F
from tests import float32_round_off as round_off

# --------------------------------------------------------------------------- helpers


def t64(array, requires_grad=True):
    return ma.tensor(np.asarray(array, dtype=np.float64), requires_grad=requires_grad)


def randn(shape, seed=0, scale=1.0):
    return np.random.default_rng(seed).standard_normal(shape) * scale


def shuffled_linspace(shape, seed):
    """Distinct values (no ties), spaced far wider than a finite-difference step."""
    values = np.linspace(-1.0, 1.0, int(np.prod(shape)))
    np.random.default_rng(seed).shuffle(values)
    return values.reshape(shape)


def away_from_zero(shape, seed):
    """Random signs, magnitudes in [0.1, 1]: no kink of ReLU within a step of eps."""
    rng = np.random.default_rng(seed)
    return rng.choice([-1.0, 1.0], size=shape) * rng.uniform(0.1, 1.0, size=shape)


def assert_close(actual, expected, rtol=1e-4, atol_scale=1e-5):
    """Equal to float32 round-off: atol scaled to the magnitude of the expected values."""
    expected = np.asarray(expected)
    atol = atol_scale * max(float(np.abs(expected).max(initial=0.0)), 1e-3)
    np.testing.assert_allclose(np.asarray(actual), expected, rtol=rtol, atol=atol)


# --------------------------------------------------------------------------- gradcheck: convolution

CONV_CASES = [
    # x shape, weight shape, stride, padding, groups, bias
    ((2, 2, 5, 5), (3, 2, 3, 3), 1, 0, 1, True),
    ((1, 4, 6, 5), (4, 2, 3, 2), (2, 1), (1, 0), 2, True),  # groups, non-square kernel/stride/padding
    ((1, 3, 5, 6), (2, 3, 2, 3), 2, 1, 1, False),
    ((1, 4, 5, 5), (4, 1, 3, 3), 1, 1, 4, False),  # depthwise
    ((4, 4, 4), (2, 2, 3, 3), 1, (1, 2), 2, True),  # unbatched (C, H, W) input
    ((3, 4, 4), (2, 3, 3, 3), 2, 1, 1, False),  # unbatched, strided
]


@pytest.mark.parametrize("x_shape, w_shape, stride, padding, groups, bias", CONV_CASES)
def test_conv2d_gradients_match_finite_differences(x_shape, w_shape, stride, padding, groups, bias):
    x = t64(randn(x_shape, 0))
    w = t64(randn(w_shape, 1))
    inputs = [x, w]
    if bias:
        inputs.append(t64(randn(w_shape[0], 2)))
    out = F.conv2d(*inputs, stride=stride, padding=padding, groups=groups)
    assert out.ndim == len(x_shape)  # an unbatched input gives an unbatched output
    grad_output = randn(out.shape, 3)
    assert ma.gradcheck(
        lambda *a: F.conv2d(*a, stride=stride, padding=padding, groups=groups), inputs, grad_output=grad_output
    )


# --------------------------------------------------------------------------- gradcheck: pooling

POOL_CASES = [
    # x shape, kernel, stride, padding
    ((1, 2, 6, 6), 2, None, 0),
    ((1, 2, 7, 7), 3, 2, 0),  # AlexNet's overlapping pool
    ((1, 1, 6, 7), 3, 2, 1),  # with padding
    ((2, 1, 5, 6), (2, 3), (1, 2), (1, 1)),  # non-square
    ((2, 5, 5), 3, 1, 1),  # unbatched, stride 1: each pixel in up to nine windows
]


@pytest.mark.parametrize("x_shape, kernel, stride, padding", POOL_CASES)
def test_max_pool2d_gradient_matches_finite_differences_without_ties(x_shape, kernel, stride, padding):
    x = t64(shuffled_linspace(x_shape, 4))
    out = F.max_pool2d(x, kernel, stride, padding)
    grad_output = randn(out.shape, 5)
    assert ma.gradcheck(lambda a: F.max_pool2d(a, kernel, stride, padding), [x], grad_output=grad_output)


# --------------------------------------------------------------------------- gradcheck: LRN

LRN_STRONG = [  # size, alpha, beta, k: large alpha and small k make the neighbour terms count
    (2, 0.5, 0.75, 1.0),
    (3, 1.0, 0.75, 0.5),
    (4, 0.8, 0.6, 0.7),
    (5, 0.6, 1.0, 0.5),
]


@pytest.mark.parametrize("size, alpha, beta, k", LRN_STRONG)
def test_local_response_norm_gradient_matches_finite_differences(size, alpha, beta, k):
    x = t64(randn((2, 6, 2, 2), 6))
    grad_output = randn(x.shape, 7)
    assert ma.gradcheck(
        lambda a: F.local_response_norm(a, size, alpha=alpha, beta=beta, k=k), [x], grad_output=grad_output
    )


# --------------------------------------------------------------------------- gradcheck: linear, loss, activations


@pytest.mark.parametrize("x_shape", [(3, 4), (2, 3, 4), (4,)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_gradients_match_finite_differences(x_shape, bias):
    inputs = [t64(randn(x_shape, 8)), t64(randn((5, 4), 9))]
    if bias:
        inputs.append(t64(randn(5, 10)))
    grad_output = randn(x_shape[:-1] + (5,), 11)
    assert ma.gradcheck(F.linear, inputs, grad_output=grad_output)


def test_cross_entropy_gradient_wrt_logits_matches_finite_differences():
    logits = t64(randn((4, 5), 12, scale=2.0))
    target = ma.tensor(np.array([0, 4, 2, 2]))
    assert ma.gradcheck(lambda z: F.cross_entropy(z, target), [logits])


def test_relu_gradient_matches_finite_differences_away_from_zero():
    x = t64(away_from_zero((3, 4, 2), 13))
    assert ma.gradcheck(F.relu, [x], grad_output=randn(x.shape, 14))


@pytest.mark.parametrize("p", [0.3, 0.7])
def test_dropout_gradient_matches_finite_differences_with_a_fixed_mask(p):
    x = t64(randn((4, 6), 15))

    def fn(a):
        ma.manual_seed(99)  # the same mask on every call
        return F.dropout(a, p)

    out = fn(x)
    assert (out.numpy() == 0).any()  # the mask really drops something
    assert ma.gradcheck(fn, [x], grad_output=randn(x.shape, 16))


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_softmax_gradients_match_finite_differences(name, axis):
    fn = getattr(F, name)
    x = t64(randn((3, 4, 2), 17, scale=2.0))
    # a random upstream gradient: with ones, softmax's gradient would be trivially 0
    assert ma.gradcheck(lambda a: fn(a, axis=axis), [x], grad_output=randn(x.shape, 18))


@pytest.mark.parametrize("start_dim", [0, 1, 2, -1])
def test_flatten_gradient_matches_finite_differences(start_dim):
    x = t64(randn((2, 3, 2), 19))
    out = F.flatten(x, start_dim)
    assert ma.gradcheck(lambda a: F.flatten(a, start_dim), [x], grad_output=randn(out.shape, 20))


# --------------------------------------------------------------------------- laws


@st.composite
def pool_problems(draw):
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    ph, pw = draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2))
    h = draw(st.integers(max(1, kh - 2 * ph), 8))
    w = draw(st.integers(max(1, kw - 2 * pw), 8))
    n, c = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    return (n, c, h, w), (kh, kw), (sh, sw), (ph, pw), draw(st.integers(0, 2**32 - 1))


@settings(max_examples=40, deadline=None)
@given(pool_problems())
def test_max_pool_gradients_sum_to_the_upstream_gradient_sum(problem):
    shape, kernel, stride, padding, seed = problem
    rng = np.random.default_rng(seed)
    x = t64(rng.standard_normal(shape))
    out = F.max_pool2d(x, kernel, stride, padding)
    upstream = rng.standard_normal(out.shape)
    out.backward(upstream)
    # each output routes its gradient to exactly one input (its window's maximum)
    np.testing.assert_allclose(x.grad.numpy().sum(axis=(2, 3)), upstream.sum(axis=(2, 3)), rtol=1e-12, atol=1e-12)


@st.composite
def softmax_problems(draw):
    ndim = draw(st.integers(1, 3))
    shape = tuple(draw(st.integers(1, 5)) for _ in range(ndim))
    return shape, draw(st.integers(-ndim, ndim - 1)), draw(st.integers(0, 2**32 - 1))


@settings(max_examples=40, deadline=None)
@given(softmax_problems(), st.sampled_from([np.float32, np.float64]))
def test_softmax_rows_sum_to_one(problem, dtype):
    shape, axis, seed = problem
    x = ma.tensor(randn(shape, seed, scale=5.0).astype(dtype))
    s = F.softmax(x, axis=axis).numpy()
    assert s.dtype == dtype
    np.testing.assert_allclose(s.sum(axis=axis), 1.0, rtol=1e-5 if dtype == np.float32 else 1e-12)


@settings(max_examples=40, deadline=None)
@given(softmax_problems())
def test_softmax_and_log_softmax_of_logits_near_1e4_are_finite_and_correct(problem):
    shape, axis, seed = problem
    small = randn(shape, seed)
    x32 = (small + 1e4).astype(np.float32)
    exact = x32.astype(np.float64) - 1e4  # the float32 logits, shifted exactly
    ref_log = exact - exact.max(axis=axis, keepdims=True)
    ref_log -= np.log(np.exp(ref_log).sum(axis=axis, keepdims=True))
    s = F.softmax(ma.tensor(x32), axis=axis).numpy()
    y = F.log_softmax(ma.tensor(x32), axis=axis).numpy()
    assert np.isfinite(s).all() and np.isfinite(y).all()
    np.testing.assert_allclose(s, np.exp(ref_log), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(y, ref_log, rtol=1e-5, atol=1e-4)  # |y| ~ 1: float32 rounding of x - max


def test_softmax_of_opposite_logits_1e4_saturates_without_nan():
    x = ma.tensor(np.array([[1e4, -1e4], [-1e4, 1e4]], np.float32), requires_grad=True)
    s = F.softmax(x)
    np.testing.assert_array_equal(s.numpy(), [[1.0, 0.0], [0.0, 1.0]])
    y = F.log_softmax(x)
    np.testing.assert_allclose(y.numpy(), [[0.0, -2e4], [-2e4, 0.0]], rtol=1e-6)
    y.backward(np.ones((2, 2), np.float32))
    assert np.isfinite(x.grad.numpy()).all()


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.integers(2, 6), st.integers(0, 2**32 - 1))
def test_cross_entropy_of_logits_1e4_is_finite_with_finite_gradient(n, c, seed):
    rng = np.random.default_rng(seed)
    logits64 = rng.choice([-1e4, 0.0, 1e4], size=(n, c)) + rng.standard_normal((n, c))
    target = rng.integers(0, c, size=n)
    logits = ma.tensor(logits64.astype(np.float32), requires_grad=True)
    loss = F.cross_entropy(logits, ma.tensor(target))
    exact = logits.numpy().astype(np.float64)
    m = exact.max(axis=1)
    lse = m + np.log(np.exp(exact - m[:, None]).sum(axis=1))
    ref = (lse - exact[np.arange(n), target]).mean()
    assert np.isfinite(loss.item())
    np.testing.assert_allclose(loss.item(), ref, rtol=1e-5, atol=1e-4)
    loss.backward()
    grad = logits.grad.numpy()
    assert np.isfinite(grad).all()
    np.testing.assert_allclose(grad.sum(axis=1), 0.0, atol=1e-6)


@settings(max_examples=30, deadline=None)
@given(st.floats(0.05, 0.9), st.integers(0, 2**31 - 1))
def test_dropout_keeps_the_expected_value(p, seed):
    ma.manual_seed(seed)
    n = 200_000
    out = F.dropout(ma.tensor(np.ones(n, np.float64)), p).numpy()
    standard_error = np.sqrt(p / (1 - p) / n)  # each element is 1/(1-p) w.p. 1-p, else 0
    assert abs(out.mean() - 1.0) < 5 * standard_error


@settings(max_examples=30, deadline=None)
@given(st.floats(0.01, 0.95), st.integers(0, 2**31 - 1), st.sampled_from([np.float32, np.float64]))
def test_dropout_scales_kept_elements_by_one_over_keep_probability_and_zeroes_the_rest(p, seed, dtype):
    ma.manual_seed(seed)
    data = away_from_zero((40, 30), seed % 1000).astype(dtype)  # no zeros: kept <=> output != 0
    x = ma.tensor(data, requires_grad=True)
    out = F.dropout(x, p)
    values = out.numpy()
    assert values.dtype == dtype
    kept = values != 0
    rtol = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(values[kept] / data[kept], 1.0 / (1.0 - p), rtol=rtol)
    # the gradient goes through the same mask
    out.backward(np.ones_like(data))
    grad = x.grad.numpy()
    np.testing.assert_array_equal(grad != 0, kept)
    np.testing.assert_allclose(grad[kept], 1.0 / (1.0 - p), rtol=rtol)


@settings(max_examples=30, deadline=None)
@given(st.floats(0.0, 0.99), st.integers(0, 2**32 - 1))
def test_dropout_is_the_identity_in_eval_mode_and_for_p_zero(p, seed):
    data = randn((5, 7), seed)
    for args in ((p, False), (0.0, True), (0, True)):
        x = t64(data)
        out = F.dropout(x, *args)
        np.testing.assert_array_equal(out.numpy(), data)
        out.backward(np.full(data.shape, 2.0))
        np.testing.assert_array_equal(x.grad.numpy(), np.full(data.shape, 2.0))
    x = t64(data)
    np.testing.assert_array_equal(F.dropout(x, p=0.5, training=False).numpy(), data)  # by keyword


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31 - 1), st.floats(0.1, 0.9))
def test_manual_seed_makes_dropout_masks_repeat(seed, p):
    x = ma.tensor(np.ones((30, 30), np.float32))
    ma.manual_seed(seed)
    first = F.dropout(x, p).numpy()
    second = F.dropout(x, p).numpy()
    ma.manual_seed(seed)
    np.testing.assert_array_equal(F.dropout(x, p).numpy(), first)
    np.testing.assert_array_equal(F.dropout(x, p).numpy(), second)


def test_dropout_masks_differ_between_calls_and_seeds():
    x = ma.tensor(np.ones((40, 40), np.float32))
    ma.manual_seed(1)
    a, b = F.dropout(x).numpy(), F.dropout(x).numpy()
    ma.manual_seed(2)
    c = F.dropout(x).numpy()
    assert not np.array_equal(a, b) and not np.array_equal(a, c)


def test_relu_gradient_is_zero_at_exactly_zero():
    x = ma.tensor(np.array([-1.0, 0.0, 2.0]), requires_grad=True)
    F.relu(x).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0.0, 0.0, 1.0])


# --------------------------------------------------------------------------- PyTorch


def run_both(ma_fn, torch_fn, arrays, seed=0, grad_arrays=None):
    """Run ma_fn and torch_fn on float32 copies of ``arrays``; backprop one random upstream gradient.

    Returns (ma output, torch output, [(ma grad, torch grad) for each array that needs one]).
    """
    import torch

    grad_arrays = [True] * len(arrays) if grad_arrays is None else grad_arrays
    ma_inputs = [ma.tensor(a, requires_grad=g) for a, g in zip(arrays, grad_arrays)]
    torch_inputs = [torch.tensor(a, requires_grad=g) for a, g in zip(arrays, grad_arrays)]
    out = ma_fn(*ma_inputs)
    out_torch = torch_fn(*torch_inputs)
    assert out.shape == tuple(out_torch.shape)
    assert out.dtype == np.float32
    upstream = np.random.default_rng(seed).standard_normal(out.shape).astype(np.float32)
    out.backward(upstream if out.ndim else None)
    out_torch.backward(torch.tensor(upstream) if out.ndim else None)
    grads = [(m.grad.numpy(), t.grad.numpy()) for m, t, g in zip(ma_inputs, torch_inputs, grad_arrays) if g]
    return out.numpy(), out_torch.detach().numpy(), grads


def f32(array):
    return np.asarray(array, dtype=np.float32)


def float64_reference_and_magnitude(torch_fn, arrays, seed=0):
    """The float64 reference and sums of |terms| (see tests/float32_round_off.py) for
    run_both's upstream gradient (same seed)."""
    import torch

    shape = tuple(torch_fn(*[torch.tensor(np.asarray(a, np.float64)) for a in arrays]).shape)
    upstream = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    return round_off.float64_reference_and_magnitude(torch_fn, arrays, upstream)


TORCH_CONV_CASES = [
    # x shape, weight shape, stride, padding, groups, bias
    ((2, 3, 9, 9), (4, 3, 3, 3), 1, 0, 1, True),
    ((2, 4, 10, 9), (6, 2, 3, 3), 1, 1, 2, True),  # groups=2, like AlexNet's conv2/4/5
    ((1, 4, 11, 8), (4, 1, 3, 2), (2, 1), (1, 0), 4, False),  # depthwise, non-square
    ((2, 3, 13, 12), (2, 3, 5, 4), 3, 2, 1, True),
    ((3, 8, 8), (4, 3, 3, 3), 2, 1, 1, True),  # unbatched
    ((1, 3, 227, 227), (4, 3, 11, 11), 4, 0, 1, True),  # AlexNet conv1 geometry, 4 filters
]


@pytest.mark.parametrize("x_shape, w_shape, stride, padding, groups, bias", TORCH_CONV_CASES)
def test_conv2d_matches_torch_values_and_gradients(x_shape, w_shape, stride, padding, groups, bias):
    torch = pytest.importorskip("torch")
    arrays = [f32(randn(x_shape, 0)), f32(randn(w_shape, 1, scale=0.1))]
    if bias:
        arrays.append(f32(randn(w_shape[0], 2)))
    torch_conv = lambda *a: torch.nn.functional.conv2d(*a, stride=stride, padding=padding, groups=groups)  # noqa: E731
    out, _, grads = run_both(lambda *a: F.conv2d(*a, stride=stride, padding=padding, groups=groups), torch_conv, arrays)
    # Against PyTorch in float64, within float32's worst-case round-off of the longest sum:
    # an output adds C/groups*kh*kw products, an input-gradient up to O/groups*kh*kw, a
    # weight- or bias-gradient N*oh*ow (one per output position).
    reference, reference_grads, magnitude, magnitude_grads = float64_reference_and_magnitude(torch_conv, arrays)
    out_channels, in_per_group, kh, kw = w_shape
    positions = int(np.prod(out.shape)) // out_channels
    longest_sum = max(in_per_group * kh * kw, out_channels // groups * kh * kw, positions)
    round_off.assert_within_float32_round_off(out, reference, magnitude, longest_sum)
    for (grad, _), ref_grad, grad_magnitude in zip(grads, reference_grads, magnitude_grads):
        round_off.assert_within_float32_round_off(grad, ref_grad, grad_magnitude, longest_sum)


TORCH_POOL_CASES = [
    ((2, 3, 8, 8), 2, None, 0),
    ((2, 3, 13, 13), 3, 2, 0),  # AlexNet 3/2
    ((2, 3, 55, 55), 3, 2, 0),  # AlexNet pool1 size
    ((2, 3, 9, 10), 3, 2, 1),  # padding
    ((1, 2, 9, 10), (2, 3), (1, 2), (1, 1)),
    ((3, 7, 7), 3, 2, 1),  # unbatched
]


@pytest.mark.parametrize("x_shape, kernel, stride, padding", TORCH_POOL_CASES)
def test_max_pool2d_matches_torch_values_and_gradients(x_shape, kernel, stride, padding):
    torch = pytest.importorskip("torch")
    x = f32(randn(x_shape, 3))
    pool = lambda a: torch.nn.functional.max_pool2d(a, kernel, stride, padding)  # noqa: E731
    out, ref, grads = run_both(lambda a: F.max_pool2d(a, kernel, stride, padding), pool, [x])
    np.testing.assert_array_equal(out, ref)
    # Overlapping windows add up to ceil(k/s)^2 gradients per input, in any order: one
    # float32 sum of that length against PyTorch's float64 gradient, whose sum of |terms|
    # routes |upstream| the same way (x itself, so the same argmax).
    def float64_grad(grad_output):
        x64 = torch.tensor(x.astype(np.float64), requires_grad=True)
        pool(x64).backward(torch.tensor(grad_output.astype(np.float64)))
        return x64.grad.numpy()

    upstream = np.random.default_rng(0).standard_normal(out.shape).astype(np.float32)  # run_both's
    kernel_hw, stride_hw = np.broadcast_to(kernel, 2), np.broadcast_to(stride or kernel, 2)
    windows_per_input = int(np.prod([-(-k // s) for k, s in zip(kernel_hw, stride_hw)]))
    round_off.assert_within_float32_round_off(
        grads[0][0], float64_grad(upstream), float64_grad(np.abs(upstream)), windows_per_input)


TORCH_LRN_CASES = [
    # x shape, size, alpha, beta, k
    ((2, 16, 5, 5), 5, 1e-4, 0.75, 2.0),  # AlexNet
    ((2, 8, 4, 4), 2, 0.5, 0.75, 1.0),  # even sizes
    ((2, 8, 4, 4), 4, 1.0, 0.75, 0.5),
    ((2, 7, 6), 3, 0.8, 0.6, 0.7),  # 3-D (N, C, L)
    ((1, 6, 3, 3), 6, 1.0, 1.0, 1.0),
]


@pytest.mark.parametrize("x_shape, size, alpha, beta, k", TORCH_LRN_CASES)
def test_local_response_norm_matches_torch_values_and_gradients(x_shape, size, alpha, beta, k):
    torch = pytest.importorskip("torch")
    x = f32(randn(x_shape, 4, scale=3.0))
    torch_lrn = lambda a: torch.nn.functional.local_response_norm(a, size, alpha=alpha, beta=beta, k=k)  # noqa: E731
    out, _, grads = run_both(lambda a: F.local_response_norm(a, size, alpha=alpha, beta=beta, k=k), torch_lrn, [x])
    # Against PyTorch in float64: a window sum of `size` squares, a power and a product
    # forward; backward one more window sum and three products. Checked against the
    # largest value of each array (a chain of well-conditioned steps); the LRN kernel
    # tests hold each element to its own, tighter bound.
    reference, reference_grads, _, _ = float64_reference_and_magnitude(torch_lrn, [x])
    round_off.assert_within_chain_round_off(out, reference, longest_sum=size, layers=3, err_msg="output")
    round_off.assert_within_chain_round_off(grads[0][0], reference_grads[0], longest_sum=size, layers=6, err_msg="grad")


def test_relu_matches_torch_including_gradient_at_zero():
    torch = pytest.importorskip("torch")
    x = f32(randn((4, 5, 3), 5))
    x.reshape(-1)[::7] = 0.0
    out, ref, grads = run_both(F.relu, torch.relu, [x])
    np.testing.assert_array_equal(out, ref)
    np.testing.assert_array_equal(grads[0][0], grads[0][1])


@pytest.mark.parametrize("x_shape", [(6, 7), (2, 3, 7), (7,)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_torch_values_and_gradients(x_shape, bias):
    torch = pytest.importorskip("torch")
    arrays = [f32(randn(x_shape, 6)), f32(randn((5, 7), 7))]
    if bias:
        arrays.append(f32(randn(5, 8)))
    out, _, grads = run_both(F.linear, torch.nn.functional.linear, arrays)
    # Against PyTorch in float64, within float32's worst-case round-off of the longest sum
    # (7 inputs per output, 5 outputs per input-gradient, the batch rows per weight-gradient).
    reference, reference_grads, magnitude, magnitude_grads = float64_reference_and_magnitude(
        torch.nn.functional.linear, arrays
    )
    longest_sum = max(7, 5, int(np.prod(x_shape[:-1])))
    round_off.assert_within_float32_round_off(out, reference, magnitude, longest_sum)
    for (grad, _), ref_grad, grad_magnitude in zip(grads, reference_grads, magnitude_grads):
        round_off.assert_within_float32_round_off(grad, ref_grad, grad_magnitude, longest_sum)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_softmax_and_log_softmax_match_torch(name, axis):
    torch = pytest.importorskip("torch")
    x = f32(randn((3, 4, 5), 9, scale=4.0))
    torch_fn = lambda a: getattr(torch.nn.functional, name)(a, dim=axis)  # noqa: E731
    out, _, grads = run_both(lambda a: getattr(F, name)(a, axis=axis), torch_fn, [x])
    # Against PyTorch in float64: a max, exps, a sum of at most 5 terms and a division
    # or log forward (4 steps); backward uses the forward's output, then a sum of
    # products and two more operations (6 steps).
    reference, reference_grads, _, _ = float64_reference_and_magnitude(torch_fn, [x])
    length = (3, 4, 5)[axis]
    round_off.assert_within_chain_round_off(out, reference, longest_sum=length, layers=4, err_msg="output")
    round_off.assert_within_chain_round_off(grads[0][0], reference_grads[0], longest_sum=length, layers=6, err_msg="grad")


@pytest.mark.parametrize("n, c, scale", [(8, 10, 1.0), (5, 3, 20.0), (1, 4, 1.0), (16, 1000, 3.0)])
def test_cross_entropy_matches_torch_loss_and_gradient(n, c, scale):
    torch = pytest.importorskip("torch")
    logits = f32(randn((n, c), 10, scale=scale))
    target = np.random.default_rng(11).integers(0, c, size=n)
    x = ma.tensor(logits, requires_grad=True)
    loss = F.cross_entropy(x, ma.tensor(target))
    loss.backward()
    x_torch = torch.tensor(logits.astype(np.float64), requires_grad=True)
    ref = torch.nn.functional.cross_entropy(x_torch, torch.tensor(target))
    ref.backward()
    assert loss.shape == () and loss.dtype == np.float32
    # Against PyTorch in float64: per row a max, c exps summed, a log; then a mean of n rows.
    # The loss is checked against the largest |log-probability| (what its terms are made
    # of), the gradient against its largest entry.
    log_probs = torch.log_softmax(x_torch.detach(), dim=1).numpy()
    bound = 4 * (max(n, c) + 2) * round_off.EPS32 * np.abs(log_probs).max()
    assert abs(loss.item() - ref.item()) <= bound
    round_off.assert_within_chain_round_off(x.grad.numpy(), x_torch.grad.numpy(), longest_sum=max(n, c), layers=4, err_msg="grad")


def test_cross_entropy_accepts_targets_as_arrays_and_lists_like_a_tensor():
    logits = ma.tensor(f32(randn((3, 4), 12)))
    target = [1, 0, 3]
    expected = F.cross_entropy(logits, ma.tensor(np.array(target))).item()
    assert F.cross_entropy(logits, np.array(target)).item() == expected
    assert F.cross_entropy(logits, np.array(target, np.int32)).item() == expected
    assert F.cross_entropy(logits, target).item() == expected


@pytest.mark.parametrize("shape, start_dim", [((2, 3, 4, 5), 1), ((2, 3, 4, 5), 0), ((2, 3, 4, 5), 2), ((2, 3, 4), -1), ((2, 3, 4), -2)])
def test_flatten_matches_torch(shape, start_dim):
    torch = pytest.importorskip("torch")
    out, ref, grads = run_both(
        lambda a: F.flatten(a, start_dim), lambda a: torch.flatten(a, start_dim), [f32(randn(shape, 13))]
    )
    np.testing.assert_array_equal(out, ref)
    np.testing.assert_array_equal(grads[0][0], grads[0][1])


def test_flatten_default_start_dim_is_one_as_torch_nn_functional():
    x = ma.tensor(np.zeros((2, 3, 4, 5), np.float32))
    assert F.flatten(x).shape == (2, 60)


def test_dropout_matches_torch_on_the_identity_paths():
    torch = pytest.importorskip("torch")
    x = f32(randn((6, 7), 14))
    for p, training in ((0.5, False), (0.0, True), (0.9, False)):
        out, ref, grads = run_both(
            lambda a: F.dropout(a, p=p, training=training),
            lambda a: torch.nn.functional.dropout(a, p=p, training=training),
            [x],
        )
        np.testing.assert_array_equal(out, ref)
        np.testing.assert_array_equal(grads[0][0], grads[0][1])


@pytest.mark.parametrize("p", [0.2, 0.5, 0.8])
def test_dropout_statistics_match_torch(p):
    torch = pytest.importorskip("torch")
    n = 100_000
    x = np.random.default_rng(15).uniform(1.0, 2.0, n).astype(np.float32)
    ma.manual_seed(0)
    torch.manual_seed(0)
    out = F.dropout(ma.tensor(x), p).numpy()
    ref = torch.nn.functional.dropout(torch.tensor(x), p).numpy()
    bound = 5 * np.sqrt(p * (1 - p) / n)
    kept, kept_ref = out != 0, ref != 0
    assert abs(kept.mean() - (1 - p)) < bound and abs(kept_ref.mean() - (1 - p)) < bound
    # kept values are scaled by the same factor as PyTorch's
    np.testing.assert_allclose(out[kept] / x[kept], 1 / (1 - p), rtol=1e-6)
    np.testing.assert_allclose(ref[kept_ref] / x[kept_ref], 1 / (1 - p), rtol=1e-6)
    # both keep the expected value: E[x * mask] = mean(x), variance mean(x^2) p / (1 - p) per element
    standard_error = np.sqrt((x.astype(np.float64) ** 2).mean() * p / (1 - p) / n)
    assert abs(out.mean() - x.mean()) < 5 * standard_error
    assert abs(ref.mean() - x.mean()) < 5 * standard_error


# --------------------------------------------------------------------------- bad input


def tf32(*shape):
    return ma.tensor(np.zeros(shape, np.float32))


def tf64(*shape):
    return ma.tensor(np.zeros(shape, np.float64))


BAD_INPUTS = [
    # id, call, exception, pattern the message must match
    ("conv2d x 2-D", lambda: F.conv2d(tf32(5, 5), tf32(2, 1, 3, 3)), ValueError, r"x must be .*got shape \(5, 5\)"),
    ("conv2d x 5-D", lambda: F.conv2d(tf32(1, 1, 1, 5, 5), tf32(2, 1, 3, 3)), ValueError, r"x .*\(1, 1, 1, 5, 5\)"),
    ("conv2d weight 3-D", lambda: F.conv2d(tf32(1, 3, 5, 5), tf32(2, 3, 3)), ValueError, r"weight must be 4-D.*\(2, 3, 3\)"),
    ("conv2d channels vs groups", lambda: F.conv2d(tf32(1, 3, 5, 5), tf32(2, 1, 3, 3), groups=2), ValueError, r"channels \(3\).*groups \(2\)"),
    ("conv2d out channels vs groups", lambda: F.conv2d(tf32(1, 4, 5, 5), tf32(3, 2, 3, 3), groups=2), ValueError, r"\(3\).*groups \(2\)"),
    ("conv2d weight vs input channels", lambda: F.conv2d(tf32(1, 4, 5, 5), tf32(2, 3, 3, 3)), ValueError, r"weight \(2, 3, 3, 3\).*3 input channels.*has 4"),
    ("conv2d bias shape", lambda: F.conv2d(tf32(1, 3, 5, 5), tf32(2, 3, 3, 3), tf32(3)), ValueError, r"bias must have shape \(2,\), got \(3,\)"),
    ("conv2d bias 2-D", lambda: F.conv2d(tf32(1, 3, 5, 5), tf32(2, 3, 3, 3), tf32(2, 1)), ValueError, r"bias .*\(2, 1\)"),
    ("conv2d kernel larger than padded input", lambda: F.conv2d(tf32(1, 1, 4, 4), tf32(1, 1, 5, 5)), ValueError, r"kernel 5x5 .*larger than the padded input 4x4"),
    ("conv2d kernel larger than padded input, padded", lambda: F.conv2d(tf32(1, 1, 2, 4), tf32(1, 1, 5, 3), padding=1), ValueError, r"kernel 5x3 .*padded input 4x6"),
    ("conv2d float stride", lambda: F.conv2d(tf32(1, 1, 5, 5), tf32(1, 1, 3, 3), stride=1.5), TypeError, r"stride .*1\.5"),
    ("conv2d stride 0", lambda: F.conv2d(tf32(1, 1, 5, 5), tf32(1, 1, 3, 3), stride=0), ValueError, r"stride .*0"),
    ("conv2d negative padding", lambda: F.conv2d(tf32(1, 1, 5, 5), tf32(1, 1, 3, 3), padding=-1), ValueError, r"padding .*-1"),
    ("conv2d groups 0", lambda: F.conv2d(tf32(1, 1, 5, 5), tf32(1, 1, 3, 3), groups=0), ValueError, r"groups .*0"),
    ("conv2d x f32 weight f64", lambda: F.conv2d(tf32(1, 1, 5, 5), tf64(1, 1, 3, 3)), TypeError, r"x float32.*weight float64"),
    ("conv2d bias f64", lambda: F.conv2d(tf32(1, 1, 5, 5), tf32(1, 1, 3, 3), tf64(1)), TypeError, r"bias float64"),
    ("conv2d integer x", lambda: F.conv2d(ma.tensor(np.zeros((1, 1, 5, 5), np.int64)), tf32(1, 1, 3, 3)), TypeError, r"x must be a floating-point.*int64"),
    ("conv2d x not a tensor", lambda: F.conv2d(np.zeros((1, 1, 5, 5), np.float32), tf32(1, 1, 3, 3)), TypeError, r"x must be a minialex Tensor, got ndarray"),
    ("max_pool2d x 2-D", lambda: F.max_pool2d(tf32(4, 4), 2), ValueError, r"x must be .*got shape \(4, 4\)"),
    ("max_pool2d x 5-D", lambda: F.max_pool2d(tf32(1, 1, 1, 4, 4), 2), ValueError, r"x .*\(1, 1, 1, 4, 4\)"),
    ("max_pool2d window larger than input", lambda: F.max_pool2d(tf32(1, 1, 2, 2), 3), ValueError, r"window \(3, 3\) is larger than the padded input \(2, 2\)"),
    ("max_pool2d window larger than padded input", lambda: F.max_pool2d(tf32(1, 1, 1, 6), (4, 2), padding=(1, 0)), ValueError, r"window \(4, 2\) .*padded input \(3, 6\)"),
    ("max_pool2d padding over half the kernel", lambda: F.max_pool2d(tf32(1, 1, 8, 8), 2, padding=2), ValueError, r"padding \(2, 2\) .*half the kernel size \(2, 2\)"),
    ("max_pool2d padding over half, one side", lambda: F.max_pool2d(tf32(1, 1, 8, 8), 3, padding=(1, 2)), ValueError, r"padding \(1, 2\)"),
    ("max_pool2d float stride", lambda: F.max_pool2d(tf32(1, 1, 8, 8), 2, stride=1.5), TypeError, r"stride .*1\.5"),
    ("max_pool2d short stride", lambda: F.max_pool2d(tf32(1, 1, 8, 8), 2, stride=(2,)), TypeError, r"stride .*\(2,\)"),
    ("max_pool2d float kernel", lambda: F.max_pool2d(tf32(1, 1, 8, 8), 2.0), TypeError, r"kernel_size .*2\.0"),
    ("max_pool2d kernel 0", lambda: F.max_pool2d(tf32(1, 1, 8, 8), 0), ValueError, r"kernel_size .*0"),
    ("linear weight 1-D", lambda: F.linear(tf32(3, 4), tf32(4)), ValueError, r"weight must be 2-D.*\(4,\)"),
    ("linear weight 3-D", lambda: F.linear(tf32(3, 4), tf32(2, 5, 4)), ValueError, r"weight .*\(2, 5, 4\)"),
    ("linear x 0-D", lambda: F.linear(tf32(), tf32(2, 4)), ValueError, r"x of shape \(\)"),
    ("linear in_features mismatch", lambda: F.linear(tf32(3, 5), tf32(2, 4)), ValueError, r"in_features 4.*x of shape \(3, 5\)"),
    ("linear bias shape", lambda: F.linear(tf32(3, 4), tf32(2, 4), tf32(4)), ValueError, r"bias must have shape \(2,\), got \(4,\)"),
    ("linear x f32 weight f64", lambda: F.linear(tf32(3, 4), tf64(2, 4)), TypeError, r"x float32.*weight float64"),
    ("linear bias f64", lambda: F.linear(tf32(3, 4), tf32(2, 4), tf64(2)), TypeError, r"bias float64"),
    ("cross_entropy logits 1-D", lambda: F.cross_entropy(tf32(5), [1]), ValueError, r"logits must be 2-D.*\(5,\)"),
    ("cross_entropy logits 3-D", lambda: F.cross_entropy(tf32(2, 5, 1), [1, 1]), ValueError, r"logits .*\(2, 5, 1\)"),
    ("cross_entropy target too large", lambda: F.cross_entropy(tf32(3, 5), np.array([0, 5, 1])), ValueError, r"target class 5 .*5 classes"),
    ("cross_entropy target negative", lambda: F.cross_entropy(tf32(3, 5), np.array([0, -1, 1])), ValueError, r"target class -1 .*5 classes"),
    ("cross_entropy float target", lambda: F.cross_entropy(tf32(3, 5), np.array([0.0, 1.0, 2.0], np.float32)), TypeError, r"target .*float32"),
    ("cross_entropy float target tensor", lambda: F.cross_entropy(tf32(3, 5), ma.tensor([0.0, 1.0, 2.0])), TypeError, r"target .*float"),
    ("cross_entropy target short", lambda: F.cross_entropy(tf32(4, 5), np.array([0, 1, 2])), ValueError, r"target must have shape \(4,\).*got \(3,\)"),
    ("cross_entropy target 2-D", lambda: F.cross_entropy(tf32(4, 5), np.zeros((4, 1), np.int64)), ValueError, r"target .*\(4,\).*got \(4, 1\)"),
    ("cross_entropy integer logits", lambda: F.cross_entropy(ma.tensor(np.zeros((2, 3), np.int64)), [0, 1]), TypeError, r"logits .*int64"),
    ("dropout p=1", lambda: F.dropout(tf32(3), p=1), ValueError, r"p must be .*\[0, 1\).*got 1"),
    ("dropout p=1.0", lambda: F.dropout(tf32(3), p=1.0), ValueError, r"p .*got 1\.0"),
    ("dropout p=-0.1", lambda: F.dropout(tf32(3), p=-0.1), ValueError, r"p .*got -0\.1"),
    ("dropout p=1.5", lambda: F.dropout(tf32(3), p=1.5), ValueError, r"p .*got 1\.5"),
    ("dropout p=1.5 in eval", lambda: F.dropout(tf32(3), p=1.5, training=False), ValueError, r"p .*got 1\.5"),
    ("local_response_norm x 2-D", lambda: F.local_response_norm(tf32(3, 4), 2), ValueError, r"x must have at least 3 dimensions.*\(3, 4\)"),
    ("local_response_norm size 0", lambda: F.local_response_norm(tf32(1, 3, 2, 2), 0), ValueError, r"size .*got 0"),
    ("flatten start_dim out of range", lambda: F.flatten(tf32(2, 3), 2), ValueError, r"start_dim 2 .*\(2, 3\)"),
    ("softmax axis out of range", lambda: F.softmax(tf32(2, 3), axis=2), ValueError, r"axis 2"),
]


@pytest.mark.parametrize("call, error, pattern", [case[1:] for case in BAD_INPUTS], ids=[case[0] for case in BAD_INPUTS])
def test_bad_input_raises_a_clear_error_naming_the_argument_and_value(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()


def test_valid_edge_cases_next_to_the_bad_ones_are_accepted():
    # the kernel exactly as large as the padded input, padding exactly half the pool window
    assert F.conv2d(tf32(1, 1, 3, 3), tf32(1, 1, 5, 5), padding=1).shape == (1, 1, 1, 1)
    assert F.max_pool2d(tf32(1, 1, 4, 4), 2, padding=1).shape == (1, 1, 3, 3)
    assert F.max_pool2d(tf32(1, 1, 3, 3), 3).shape == (1, 1, 1, 1)
    assert F.cross_entropy(tf32(2, 3), np.array([0, 2], np.uint8)).shape == ()
    assert F.dropout(tf32(3), p=0.999).shape == (3,)


# --------------------------------------------------------------------------- GPU


@pytest.mark.gpu
@pytest.mark.skipif(not ma.cuda.is_available(), reason="needs CuPy and a CUDA device")
def test_layer_functions_and_a_module_on_cuda_match_cpu():
    rng = np.random.default_rng(21)
    x = rng.standard_normal((2, 4, 13, 13)).astype(np.float32)
    w = (rng.standard_normal((6, 2, 3, 3)) * 0.2).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    fc_w = (rng.standard_normal((5, 6 * 3 * 3)) * 0.1).astype(np.float32)
    fc_b = rng.standard_normal(5).astype(np.float32)
    target = np.array([1, 4])

    def pipeline(device):
        leaves = [ma.tensor(a, requires_grad=True, device=device) for a in (x, w, b, fc_w, fc_b)]
        xt, wt, bt, fwt, fbt = leaves
        h = F.conv2d(xt, wt, bt, stride=1, padding=1, groups=2)
        h = F.relu(h)
        h = F.local_response_norm(h, 5, alpha=1e-2, beta=0.75, k=2.0)
        h = F.max_pool2d(h, 3, 2)
        h = F.max_pool2d(h, 3, 2, padding=1)
        h = F.dropout(h, 0.5, training=False)
        h = F.flatten(h)
        logits = F.linear(h, fwt, fbt)
        s = F.softmax(logits).sum() + F.log_softmax(logits, axis=0).mean()
        loss = F.cross_entropy(logits, ma.tensor(target, device=device)) + 1e-3 * s
        assert loss.device == ma.tensor(0.0, device=device).device
        loss.backward()
        return loss.item(), [leaf.grad.numpy() for leaf in leaves]

    loss_cpu, grads_cpu = pipeline("cpu")
    loss_gpu, grads_gpu = pipeline("cuda")
    np.testing.assert_allclose(loss_gpu, loss_cpu, rtol=1e-5)
    for g_gpu, g_cpu in zip(grads_gpu, grads_cpu):
        assert_close(g_gpu, g_cpu, rtol=1e-4)

    # dropout in training mode: mask statistics on the GPU
    ma.manual_seed(3)
    dropped = F.dropout(ma.tensor(np.ones(100_000, np.float32), device="cuda"), 0.5)
    assert dropped.device.startswith("cuda")
    values = dropped.numpy()
    assert set(np.unique(values).tolist()) <= {0.0, 2.0}
    assert abs((values != 0).mean() - 0.5) < 0.01

    # a module forward/backward on the GPU equals the CPU one with the same parameters
    ma.manual_seed(4)
    net = ma.nn.Sequential(
        ma.nn.Conv2d(4, 6, 3, padding=1, groups=2), ma.nn.ReLU(), ma.nn.MaxPool2d(3, 2),
        ma.nn.LocalResponseNorm(5, k=2.0), ma.nn.Flatten(), ma.nn.Dropout(0.5), ma.nn.Linear(6 * 6 * 6, 5),
    ).eval()
    net_gpu = ma.nn.Sequential(
        ma.nn.Conv2d(4, 6, 3, padding=1, groups=2), ma.nn.ReLU(), ma.nn.MaxPool2d(3, 2),
        ma.nn.LocalResponseNorm(5, k=2.0), ma.nn.Flatten(), ma.nn.Dropout(0.5), ma.nn.Linear(6 * 6 * 6, 5),
    ).eval()
    net_gpu.load_state_dict(net.state_dict())
    assert net_gpu.to("cuda") is net_gpu
    assert all(p.device.startswith("cuda") for p in net_gpu.parameters())
    loss = F.cross_entropy(net(ma.tensor(x)), target)
    loss.backward()
    loss_gpu = F.cross_entropy(net_gpu(ma.tensor(x, device="cuda")), ma.tensor(target, device="cuda"))
    loss_gpu.backward()
    np.testing.assert_allclose(loss_gpu.item(), loss.item(), rtol=1e-5)
    for (name, p), (name_gpu, p_gpu) in zip(net.named_parameters(), net_gpu.named_parameters()):
        assert name == name_gpu and p_gpu.grad.device.startswith("cuda")
        assert_close(p_gpu.grad.numpy(), p.grad.numpy(), rtol=1e-4)
    for key, value in net_gpu.state_dict().items():
        assert isinstance(value, np.ndarray), key
