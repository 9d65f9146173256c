"""Linear kernel: x @ W.T + b against loops, with leading batch dimensions, and its backward."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minialex.kernels.linear import linear_backward, linear_forward

# --------------------------------------------------------------------------- references


def naive_linear(x, weight, bias):
    """y[..., o] = sum_i x[..., i] * W[o, i] + b[o], one output element at a time."""
    out_features, in_features = weight.shape
    out = np.zeros(x.shape[:-1] + (out_features,))
    for lead in np.ndindex(x.shape[:-1]):
        for o in range(out_features):
            total = 0.0 if bias is None else bias[o]
            for i in range(in_features):
                total += x[lead + (i,)] * weight[o, i]
            out[lead + (o,)] = total
    return out


def naive_linear_backward(dout, x, weight):
    """dx[..., i] = sum_o dy[..., o] W[o, i]; dW[o, i] = sum over rows dy[..., o] x[..., i]; db[o] = sum dy[..., o]."""
    out_features, in_features = weight.shape
    dx = np.zeros_like(x)
    dweight = np.zeros_like(weight)
    dbias = np.zeros(out_features)
    for lead in np.ndindex(x.shape[:-1]):
        for o in range(out_features):
            g = dout[lead + (o,)]
            dbias[o] += g
            for i in range(in_features):
                dx[lead + (i,)] += g * weight[o, i]
                dweight[o, i] += g * x[lead + (i,)]
    return dx, dweight, dbias


LEADING = [(), (5,), (2, 3), (2, 1, 3)]


# --------------------------------------------------------------------------- agreement with the loops


@pytest.mark.parametrize("leading", LEADING)
@pytest.mark.parametrize("with_bias", [True, False])
def test_forward_and_backward_equal_naive_loops_with_leading_dims(leading, with_bias):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(leading + (4,))
    weight = rng.standard_normal((3, 4))
    bias = rng.standard_normal(3) if with_bias else None
    out, cache = linear_forward(x, weight, bias)
    assert out.shape == leading + (3,)
    np.testing.assert_allclose(out, naive_linear(x, weight, bias), rtol=1e-12, atol=1e-12)

    dout = rng.standard_normal(out.shape)
    dx, dweight, dbias = linear_backward(dout, cache, True, True, with_bias)
    ref_dx, ref_dweight, ref_dbias = naive_linear_backward(dout, x, weight)
    np.testing.assert_allclose(dx, ref_dx, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dweight, ref_dweight, rtol=1e-12, atol=1e-12)
    if with_bias:
        np.testing.assert_allclose(dbias, ref_dbias, rtol=1e-12, atol=1e-12)
    assert dx.shape == x.shape and dweight.shape == weight.shape


def test_gradients_not_needed_are_none_and_the_others_unchanged():
    rng = np.random.default_rng(1)
    x, weight, bias = rng.standard_normal((6, 4)), rng.standard_normal((3, 4)), rng.standard_normal(3)
    out, cache = linear_forward(x, weight, bias)
    dout = rng.standard_normal(out.shape)
    full = linear_backward(dout, cache, True, True, True)
    only_weight = linear_backward(dout, cache, False, True, False)
    assert only_weight[0] is None and only_weight[2] is None
    np.testing.assert_array_equal(only_weight[1], full[1])
    only_input = linear_backward(dout, cache, True, False, False)
    assert only_input[1] is None and only_input[2] is None
    np.testing.assert_array_equal(only_input[0], full[0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_output_and_gradients_keep_input_dtype(dtype):
    x = np.ones((2, 3, 4), dtype)
    weight, bias = np.ones((5, 4), dtype), np.ones(5, dtype)
    out, cache = linear_forward(x, weight, bias)
    grads = linear_backward(np.ones_like(out), cache)
    assert out.dtype == dtype and all(g.dtype == dtype for g in grads)


def test_forward_leaves_bias_and_inputs_unmodified():
    x, weight, bias = np.ones((2, 4)), np.ones((3, 4)), np.arange(3.0)
    copies = x.copy(), weight.copy(), bias.copy()
    linear_forward(x, weight, bias)
    for before, after in zip(copies, (x, weight, bias)):
        np.testing.assert_array_equal(before, after)


# --------------------------------------------------------------------------- laws


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 4), st.integers(1, 3), st.integers(1, 5), st.integers(1, 5), st.integers(0, 2**32 - 1))
def test_backward_is_the_adjoint_of_forward(a, b, n_in, n_out, seed):
    # <dout, W dx> == <W^T dout, dx> for the linear map x -> x W^T (bias 0), and likewise in W.
    rng = np.random.default_rng(seed)
    x, weight = rng.standard_normal((a, b, n_in)), rng.standard_normal((n_out, n_in))
    out, cache = linear_forward(x, weight, None)
    dout = rng.standard_normal(out.shape)
    dx, dweight, _ = linear_backward(dout, cache, True, True, False)
    np.testing.assert_allclose((out * dout).sum(), (x * dx).sum(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose((out * dout).sum(), (weight * dweight).sum(), rtol=1e-10, atol=1e-10)
