"""The in-place SGD kernel ``sgd_update`` against the formula, one call at a time."""

import itertools

import numpy as np
import pytest

from minialex.kernels.sgd import sgd_update

COMBINATIONS = [
    (m, wd, nesterov)
    for m, wd, nesterov in itertools.product([0.0, 0.9], [0.0, 0.1], [False, True])
    if not (nesterov and m == 0.0)
]


def formula(param, grad, buf, lr, momentum, weight_decay, nesterov):
    """Returns (new param, new buffer or None), without touching the inputs."""
    g = grad + weight_decay * param
    if momentum:
        buf = g.copy() if buf is None else momentum * buf + g
        g = g + momentum * buf if nesterov else buf
    return param - lr * g, buf


@pytest.mark.parametrize("momentum,weight_decay,nesterov", COMBINATIONS)
def test_repeated_calls_equal_the_formula(momentum, weight_decay, nesterov):
    rng = np.random.default_rng(0)
    param = rng.standard_normal((4, 5))
    scratch = np.empty_like(param)
    expected_param, expected_buf = param.copy(), None
    buf = None
    for _ in range(5):
        grad = rng.standard_normal(param.shape)
        expected_param, expected_buf = formula(expected_param, grad, expected_buf, 0.07, momentum, weight_decay, nesterov)
        buf = sgd_update(param, grad, buf, scratch, 0.07, momentum, weight_decay, nesterov)
        np.testing.assert_allclose(param, expected_param, rtol=1e-13, atol=1e-15)
        if momentum:
            np.testing.assert_allclose(buf, expected_buf, rtol=1e-13, atol=1e-15)
        else:
            assert buf is None


@pytest.mark.parametrize("momentum,weight_decay,nesterov", COMBINATIONS)
def test_param_and_buffer_are_updated_in_place_and_grad_is_left_alone(momentum, weight_decay, nesterov):
    rng = np.random.default_rng(1)
    param = rng.standard_normal(7).astype(np.float32)
    grad = rng.standard_normal(7).astype(np.float32)
    grad_before = grad.copy()
    scratch = np.empty_like(param)
    param_id = id(param)
    buf = sgd_update(param, grad, None, scratch, 0.1, momentum, weight_decay, nesterov)
    if momentum:
        # The first buffer is its own array, not a view of the scratch that the next call overwrites.
        assert not np.shares_memory(buf, scratch)
        assert not np.shares_memory(buf, grad) and not np.shares_memory(buf, param)
        again = sgd_update(param, grad, buf, scratch, 0.1, momentum, weight_decay, nesterov)
        assert again is buf
    assert id(param) == param_id and param.dtype == np.float32
    np.testing.assert_array_equal(grad, grad_before)


def test_first_momentum_buffer_is_the_decayed_gradient():
    param = np.array([1.0, -2.0])
    grad = np.array([0.5, 0.25])
    buf = sgd_update(param, grad, None, np.empty(2), lr=0.1, momentum=0.9, weight_decay=0.1)
    np.testing.assert_allclose(buf, [0.5 + 0.1, 0.25 - 0.2], rtol=1e-15)
    np.testing.assert_allclose(param, [1.0 - 0.1 * 0.6, -2.0 - 0.1 * 0.05], rtol=1e-15)


def test_nesterov_step_looks_ahead_by_momentum_times_buffer():
    param = np.array([0.0])
    buf = np.array([2.0])
    sgd_update(param, np.array([1.0]), buf, np.empty(1), lr=0.5, momentum=0.5, nesterov=True)
    # buf = 0.5 * 2 + 1 = 2; g = 1 + 0.5 * 2 = 2; p = 0 - 0.5 * 2
    np.testing.assert_allclose(buf, [2.0])
    np.testing.assert_allclose(param, [-1.0])


def test_zero_learning_rate_changes_nothing_but_the_buffer():
    param = np.array([3.0, 4.0])
    buf = sgd_update(param, np.array([1.0, 1.0]), None, np.empty(2), lr=0.0, momentum=0.9)
    np.testing.assert_array_equal(param, [3.0, 4.0])
    np.testing.assert_array_equal(buf, [1.0, 1.0])


def test_works_on_a_scratch_view_of_a_larger_buffer():
    """The optimiser hands each parameter a reshaped slice of one shared scratch array."""
    rng = np.random.default_rng(2)
    param = rng.standard_normal((3, 2))
    grad = rng.standard_normal((3, 2))
    shared = np.empty(50)
    expected, _ = formula(param.copy(), grad, None, 0.2, 0.9, 0.1, True)
    sgd_update(param, grad, None, shared[:6].reshape(3, 2), 0.2, 0.9, 0.1, True)
    np.testing.assert_allclose(param, expected, rtol=1e-14)
