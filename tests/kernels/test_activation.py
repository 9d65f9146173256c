"""ReLU kernel: naive loops, the gradient at zero, dtypes and laws."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minialex.kernels.activation import relu_backward, relu_forward

# --------------------------------------------------------------------------- references


def naive_relu(x):
    out = np.empty_like(x)
    for i in np.ndindex(x.shape):
        out[i] = x[i] if x[i] > 0 else 0.0
    return out


def naive_relu_backward(dout, x):
    dx = np.empty_like(dout)
    for i in np.ndindex(x.shape):
        dx[i] = dout[i] if x[i] > 0 else 0.0  # 0 at x == 0, as PyTorch
    return dx


# --------------------------------------------------------------------------- agreement with the loops


@pytest.mark.parametrize("shape", [(7,), (3, 4), (2, 3, 4, 5), ()])
def test_forward_and_backward_equal_naive_loops(shape):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape)
    if x.size > 2:
        x.reshape(-1)[:2] = 0.0  # exact zeros are part of the test
    dout = rng.standard_normal(shape)
    out, cache = relu_forward(x)
    dx = relu_backward(dout, cache)
    np.testing.assert_array_equal(out, naive_relu(x))
    np.testing.assert_array_equal(dx, naive_relu_backward(dout, x))


def test_gradient_at_exact_zero_is_zero():
    x = np.array([-1.0, 0.0, -0.0, 1.0])
    out, cache = relu_forward(x)
    dx = relu_backward(np.ones_like(x), cache)
    np.testing.assert_array_equal(out, [0.0, 0.0, 0.0, 1.0])
    np.testing.assert_array_equal(dx, [0.0, 0.0, 0.0, 1.0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_output_and_gradient_keep_input_dtype(dtype):
    x = np.linspace(-2, 2, 12, dtype=dtype).reshape(3, 4)
    out, cache = relu_forward(x)
    dx = relu_backward(np.ones_like(x), cache)
    assert out.dtype == dtype and dx.dtype == dtype
    assert out.shape == x.shape and dx.shape == x.shape


def test_forward_does_not_modify_its_input():
    x = np.array([-1.0, 2.0, -3.0])
    before = x.copy()
    relu_forward(x)
    np.testing.assert_array_equal(x, before)


# --------------------------------------------------------------------------- laws


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 40), st.integers(0, 2**32 - 1))
def test_relu_is_idempotent_nonnegative_and_x_equals_relu_x_minus_relu_minus_x(n, seed):
    x = np.random.default_rng(seed).standard_normal(n)
    out, _ = relu_forward(x)
    out_neg, _ = relu_forward(-x)
    twice, _ = relu_forward(out)
    assert (out >= 0).all()
    np.testing.assert_array_equal(twice, out)
    np.testing.assert_array_equal(out - out_neg, x)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 40), st.integers(0, 2**32 - 1))
def test_backward_is_the_jacobian_transpose_product_x_dot_dx_equals_out_dot_dout(n, seed):
    # ReLU is positively homogeneous: sum(x * dx) == sum(relu(x) * dout) (Euler's theorem).
    rng = np.random.default_rng(seed)
    x, dout = rng.standard_normal(n), rng.standard_normal(n)
    out, cache = relu_forward(x)
    dx = relu_backward(dout, cache)
    np.testing.assert_allclose((x * dx).sum(), (out * dout).sum(), rtol=1e-12, atol=1e-12)
