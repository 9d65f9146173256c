"""The in-place Adam kernel ``adam_update`` against the formula, one call at a time."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minialex.kernels import adam
from minialex.kernels.adam import adam_update
from minialex.kernels.cuda import adam as cuda_adam


def formula(param, grad, m, v, t, lr, beta1, beta2, eps, weight_decay, decoupled):
    """Returns new (param, m, v), the textbook way, without touching the inputs."""
    if decoupled:
        param = param * (1 - lr * weight_decay)
        g = grad
    else:
        g = grad + weight_decay * param
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    m_hat = m / (1 - beta1**t)
    v_hat = v / (1 - beta2**t)
    return param - lr * m_hat / (np.sqrt(v_hat) + eps), m, v


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    shape=st.lists(st.integers(1, 5), min_size=0, max_size=3).map(tuple),
    lr=st.floats(0.0, 0.5),
    beta1=st.floats(0.0, 0.99),
    beta2=st.floats(0.0, 0.9999),
    eps=st.sampled_from([0.0, 1e-8, 1e-3]),
    weight_decay=st.one_of(st.just(0.0), st.floats(0.0, 0.1)),
    decoupled=st.booleans(),
)
def test_repeated_calls_equal_the_formula(seed, shape, lr, beta1, beta2, eps, weight_decay, decoupled):
    rng = np.random.default_rng(seed)
    param = rng.uniform(-1, 1, shape)
    m, v = np.zeros(shape), np.zeros(shape)
    scratch = np.empty(shape)
    expected = (param.copy(), m.copy(), v.copy())
    for t in range(1, 5):
        # Gradients of magnitude 0.5 to 2: g never vanishes, so m / sqrt(v) stays of order one.
        grad = rng.choice([-1.0, 1.0], shape) * rng.uniform(0.5, 2.0, shape)
        expected = formula(*expected[:1], grad, *expected[1:], t, lr, beta1, beta2, eps, weight_decay, decoupled)
        adam_update(param, grad, m, v, scratch, t, lr, beta1, beta2, eps, weight_decay, decoupled)
        # Each value is a short chain of well-conditioned float64 operations on numbers of order one.
        np.testing.assert_allclose(m, expected[1], rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(v, expected[2], rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(param, expected[0], rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("weight_decay, decoupled", [(0.0, False), (0.1, False), (0.1, True)])
def test_param_and_moments_are_updated_in_place_and_grad_is_left_alone(weight_decay, decoupled):
    rng = np.random.default_rng(1)
    param = rng.standard_normal(7).astype(np.float32)
    grad = rng.standard_normal(7).astype(np.float32)
    grad_before, param_before = grad.copy(), param.copy()
    m, v = np.zeros_like(param), np.zeros_like(param)
    arrays = (param, m, v)
    adam_update(param, grad, m, v, np.empty_like(param), 1, 0.1, 0.9, 0.999, 1e-8, weight_decay, decoupled)
    assert all(a.dtype == np.float32 for a in arrays)
    assert (param, m, v) == arrays  # the same objects, changed
    assert not np.array_equal(param, param_before) and np.all(m != 0) and np.all(v > 0)
    np.testing.assert_array_equal(grad, grad_before)


def test_first_step_moves_each_weight_by_lr_against_the_sign_of_its_gradient():
    """At t = 1, m_hat = g and v_hat = g * g: the step is lr * g / (|g| + eps), about lr * sign(g)."""
    param = np.array([1.0, 1.0, 1.0])
    grad = np.array([3.0, -1e-3, 1e4])
    adam_update(param, grad, np.zeros(3), np.zeros(3), np.empty(3), 1, 0.01, 0.9, 0.999, 0.0)
    np.testing.assert_allclose(param, [0.99, 1.01, 0.99], rtol=1e-15)


def test_adamw_decay_shrinks_weights_by_one_minus_lr_times_decay_whatever_the_gradient():
    param = np.array([2.0, -4.0])
    m, v = np.zeros(2), np.zeros(2)
    # A zero gradient: the moments stay zero and the Adam step is 0 / (0 + eps) = 0.
    adam_update(param, np.zeros(2), m, v, np.empty(2), 1, 0.5, 0.9, 0.999, 1e-8, 0.1, True)
    np.testing.assert_array_equal(param, [2.0 * 0.95, -4.0 * 0.95])
    np.testing.assert_array_equal(m, [0.0, 0.0])


def test_adam_decay_passes_through_the_moments():
    """Coupled decay is part of g: with a zero gradient, the first step is still lr * sign(p)."""
    param = np.array([2.0, -4.0])
    m, v = np.zeros(2), np.zeros(2)
    adam_update(param, np.zeros(2), m, v, np.empty(2), 1, 0.5, 0.9, 0.999, 0.0, 0.1, False)
    np.testing.assert_allclose(m, [0.1 * 0.2, 0.1 * -0.4], rtol=1e-15)
    np.testing.assert_allclose(param, [1.5, -3.5], rtol=1e-15)


def test_zero_learning_rate_changes_only_the_moments():
    param = np.array([3.0, 4.0])
    m, v = np.zeros(2), np.zeros(2)
    adam_update(param, np.array([1.0, -1.0]), m, v, np.empty(2), 1, 0.0, 0.9, 0.999, 1e-8, 0.1, True)
    np.testing.assert_array_equal(param, [3.0, 4.0])
    np.testing.assert_allclose(m, [0.1, -0.1], rtol=1e-15)
    np.testing.assert_allclose(v, [0.001, 0.001], rtol=1e-13)


def test_works_on_a_scratch_view_of_a_larger_buffer_and_without_a_scratch():
    """The optimiser hands each parameter a reshaped slice of one shared scratch array."""
    rng = np.random.default_rng(2)
    start, grad = rng.standard_normal((3, 2)), rng.standard_normal((3, 2))
    results = []
    for scratch in (np.empty(50)[:6].reshape(3, 2), None):
        param, m, v = start.copy(), np.zeros((3, 2)), np.zeros((3, 2))
        adam_update(param, grad, m, v, scratch, 1, 0.2, 0.9, 0.99, 1e-8, 0.1, False)
        results.append(param)
    expected, _, _ = formula(start, grad, 0.0, 0.0, 1, 0.2, 0.9, 0.99, 1e-8, 0.1, False)
    np.testing.assert_array_equal(results[0], results[1])
    np.testing.assert_allclose(results[0], expected, rtol=1e-14)


@pytest.mark.parametrize("step", [0, -1])
def test_a_step_number_below_one_raises_value_error(step):
    with pytest.raises(ValueError, match=rf"step counts from 1, got {step}"):
        adam_update(np.ones(2), np.ones(2), np.zeros(2), np.zeros(2), None, step, 0.1, 0.9, 0.999, 1e-8)


def test_numpy_arrays_never_reach_the_cuda_fast_path(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("a NumPy array reached the CUDA Adam kernel")

    monkeypatch.setattr(cuda_adam, "adam_update", forbidden)
    for decoupled in (False, True):
        param = np.ones(3, np.float32)
        adam.adam_update(param, param.copy(), np.zeros_like(param), np.zeros_like(param), None,
                         1, 0.1, 0.9, 0.999, 1e-8, 0.1, decoupled)
