"""Softmax, log-softmax and cross-entropy kernels against loops; the fused gradient; stability."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minialex.kernels.softmax_xent import (
    cross_entropy_backward,
    cross_entropy_forward,
    log_softmax,
    log_softmax_backward,
    softmax,
    softmax_backward,
)

# --------------------------------------------------------------------------- references


def _lines(shape, axis):
    """Every 1-D line along ``axis``: index tuples with a slice at ``axis``."""
    other = [range(n) if i != axis else [slice(None)] for i, n in enumerate(shape)]
    import itertools

    return itertools.product(*other)


def naive_softmax(x, axis):
    out = np.empty_like(x)
    for index in _lines(x.shape, axis):
        line = [float(v) for v in x[index]]
        m = max(line)
        exps = [math.exp(v - m) for v in line]
        total = sum(exps)
        out[index] = [e / total for e in exps]
    return out


def naive_log_softmax(x, axis):
    out = np.empty_like(x)
    for index in _lines(x.shape, axis):
        line = [float(v) for v in x[index]]
        m = max(line)
        lse = m + math.log(sum(math.exp(v - m) for v in line))
        out[index] = [v - lse for v in line]
    return out


def naive_jacobian_product(dout, s, axis, log):
    """dx_i = sum_j dy_j d y_j / d x_i, with the Jacobian written out element by element."""
    dx = np.empty_like(dout)
    for index in _lines(s.shape, axis):
        sl, dl = s[index], dout[index]
        n = len(sl)
        for i in range(n):
            total = 0.0
            for j in range(n):
                if log:  # y_j = x_j - lse: dy_j/dx_i = [i == j] - s_i
                    total += dl[j] * ((i == j) - sl[i])
                else:  # y_j = s_j: dy_j/dx_i = s_j ([i == j] - s_i)
                    total += dl[j] * sl[j] * ((i == j) - sl[i])
            dx[index][i] = total
    return dx


def naive_cross_entropy(logits, target):
    n, _ = logits.shape
    total = 0.0
    for row in range(n):
        line = [float(v) for v in logits[row]]
        m = max(line)
        lse = m + math.log(sum(math.exp(v - m) for v in line))
        total += lse - line[target[row]]
    return total / n


def naive_cross_entropy_grad(logits, target):
    n, c = logits.shape
    grad = np.empty_like(logits)
    for row in range(n):
        line = [float(v) for v in logits[row]]
        m = max(line)
        lse = m + math.log(sum(math.exp(v - m) for v in line))
        for j in range(c):
            grad[row, j] = (math.exp(line[j] - lse) - (j == target[row])) / n
    return grad


SHAPES_AXES = [((5,), 0), ((3, 4), 1), ((3, 4), 0), ((2, 3, 4), 0), ((2, 3, 4), 1), ((2, 3, 4), 2), ((2, 3, 4), -1)]


# --------------------------------------------------------------------------- softmax and log-softmax


@pytest.mark.parametrize("shape, axis", SHAPES_AXES)
def test_softmax_and_its_backward_equal_naive_loops_on_every_axis(shape, axis):
    rng = np.random.default_rng(0)
    x, dout = rng.standard_normal(shape) * 3, rng.standard_normal(shape)
    s = softmax(x, axis)
    ref = naive_softmax(x, axis % len(shape))
    np.testing.assert_allclose(s, ref, rtol=1e-12, atol=1e-15)
    dx = softmax_backward(dout, s, axis)
    np.testing.assert_allclose(dx, naive_jacobian_product(dout, ref, axis % len(shape), log=False), rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("shape, axis", SHAPES_AXES)
def test_log_softmax_and_its_backward_equal_naive_loops_on_every_axis(shape, axis):
    rng = np.random.default_rng(1)
    x, dout = rng.standard_normal(shape) * 3, rng.standard_normal(shape)
    y = log_softmax(x, axis)
    np.testing.assert_allclose(y, naive_log_softmax(x, axis % len(shape)), rtol=1e-12, atol=1e-13)
    dx = log_softmax_backward(dout, y, axis)
    s = naive_softmax(x, axis % len(shape))
    np.testing.assert_allclose(dx, naive_jacobian_product(dout, s, axis % len(shape), log=True), rtol=1e-10, atol=1e-14)


def test_softmax_does_not_modify_its_input():
    x = np.array([[1.0, 2.0, 3.0]])
    before = x.copy()
    softmax(x, 1)
    log_softmax(x, 1)
    np.testing.assert_array_equal(x, before)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_logits_of_1e4_do_not_overflow(dtype):
    x = np.array([[1e4, 0.0, -1e4], [1e4, 1e4 - 1, 1e4 - 2]], dtype=dtype)
    s, y = softmax(x, 1), log_softmax(x, 1)
    assert np.isfinite(s).all() and np.isfinite(y).all()
    assert s.dtype == dtype and y.dtype == dtype
    np.testing.assert_allclose(s[0], [1.0, 0.0, 0.0], atol=1e-7)
    np.testing.assert_allclose(y[0], [0.0, -1e4, -2e4], rtol=1e-6)
    ref = naive_softmax(np.array([[0.0, -1.0, -2.0]]), 1)[0]  # shift invariance
    np.testing.assert_allclose(s[1], ref, rtol=1e-6)
    loss, _ = cross_entropy_forward(x, np.array([2, 0]))
    assert np.isfinite(loss)
    np.testing.assert_allclose(loss, (2e4 + naive_cross_entropy(np.array([[0.0, -1.0, -2.0]]), [0])) / 2, rtol=1e-6)


# --------------------------------------------------------------------------- cross-entropy


@pytest.mark.parametrize("n, c", [(1, 2), (4, 5), (7, 10), (3, 1)])
def test_cross_entropy_loss_and_fused_gradient_equal_naive_loops(n, c):
    rng = np.random.default_rng(2)
    logits = rng.standard_normal((n, c)) * 2
    target = rng.integers(0, c, size=n)
    loss, cache = cross_entropy_forward(logits, target)
    assert np.ndim(loss) == 0
    np.testing.assert_allclose(loss, naive_cross_entropy(logits, target), rtol=1e-12)
    dlogits = cross_entropy_backward(np.array(1.0), cache)
    np.testing.assert_allclose(dlogits, naive_cross_entropy_grad(logits, target), rtol=1e-10, atol=1e-15)


def test_cross_entropy_gradient_scales_with_upstream_gradient_and_rows_sum_to_zero():
    rng = np.random.default_rng(3)
    logits, target = rng.standard_normal((6, 4)), rng.integers(0, 4, size=6)
    _, cache = cross_entropy_forward(logits, target)
    one = cross_entropy_backward(np.array(1.0), cache)
    _, cache = cross_entropy_forward(logits, target)
    scaled = cross_entropy_backward(np.array(2.5), cache)
    np.testing.assert_allclose(scaled, 2.5 * one, rtol=1e-12)
    np.testing.assert_allclose(one.sum(axis=1), 0.0, atol=1e-15)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_keeps_logits_dtype(dtype):
    logits = np.zeros((3, 4), dtype)
    loss, cache = cross_entropy_forward(logits, np.array([0, 1, 3]))
    assert loss.dtype == dtype
    assert cross_entropy_backward(np.array(1.0, dtype), cache).dtype == dtype
    np.testing.assert_allclose(loss, math.log(4), rtol=1e-6)


# --------------------------------------------------------------------------- laws


@st.composite
def logits_problems(draw):
    ndim = draw(st.integers(1, 3))
    shape = tuple(draw(st.integers(1, 5)) for _ in range(ndim))
    axis = draw(st.integers(-ndim, ndim - 1))
    scale = draw(st.sampled_from([1.0, 30.0, 1e4]))
    return shape, axis, scale, draw(st.integers(0, 2**32 - 1))


@settings(max_examples=50, deadline=None)
@given(logits_problems())
def test_softmax_sums_to_one_and_is_exp_of_log_softmax(problem):
    shape, axis, scale, seed = problem
    x = np.random.default_rng(seed).standard_normal(shape) * scale
    s, y = softmax(x, axis), log_softmax(x, axis)
    assert np.isfinite(s).all() and np.isfinite(y).all()
    assert (s >= 0).all() and (y <= 0).all()
    np.testing.assert_allclose(s.sum(axis=axis), 1.0, rtol=1e-12)
    np.testing.assert_allclose(np.exp(y), s, rtol=1e-9, atol=1e-300)


@settings(max_examples=50, deadline=None)
@given(logits_problems())
def test_softmax_is_invariant_to_adding_a_constant_along_the_axis(problem):
    shape, axis, _, seed = problem
    x = np.random.default_rng(seed).standard_normal(shape)
    np.testing.assert_allclose(softmax(x + 1e4, axis), softmax(x, axis), rtol=1e-9, atol=1e-15)
