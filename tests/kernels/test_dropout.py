"""Dropout kernel: the mask's values, forward/backward as products with the mask, statistics, seeding."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minialex as ma
from minialex.kernels.dropout import dropout_backward, dropout_forward, dropout_mask

# --------------------------------------------------------------------------- references


def naive_dropout(x, mask):
    out = np.empty_like(x)
    for i in np.ndindex(x.shape):
        out[i] = x[i] * mask[i]
    return out


# --------------------------------------------------------------------------- agreement with the loops


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_forward_and_backward_multiply_by_the_saved_mask(p):
    ma.manual_seed(0)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 4, 5))
    dout = rng.standard_normal(x.shape)
    out, mask = dropout_forward(x, p)
    np.testing.assert_array_equal(out, naive_dropout(x, mask))
    np.testing.assert_array_equal(dropout_backward(dout, mask), naive_dropout(dout, mask))


@pytest.mark.parametrize("p", [0.2, 0.5, 0.75])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mask_holds_only_zero_and_one_over_keep_probability(p, dtype):
    ma.manual_seed(2)
    mask = dropout_mask((50, 40), p, np.dtype(dtype))
    assert mask.dtype == dtype and mask.shape == (50, 40)
    scale = np.dtype(dtype).type(1.0 / (1.0 - p))
    assert set(np.unique(mask).tolist()) <= {0.0, float(scale)}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_output_and_gradient_keep_input_dtype(dtype):
    x = np.ones((4, 5), dtype=dtype)
    out, mask = dropout_forward(x, 0.5)
    assert out.dtype == dtype and dropout_backward(np.ones_like(x), mask).dtype == dtype


# --------------------------------------------------------------------------- statistics and seeding


@settings(max_examples=30, deadline=None)
@given(st.floats(0.05, 0.9), st.integers(0, 2**31 - 1))
def test_kept_fraction_is_one_minus_p_within_five_standard_errors(p, seed):
    ma.manual_seed(seed)
    n = 100_000
    mask = dropout_mask((n,), p, np.dtype(np.float64))
    kept = (mask != 0).mean()
    assert abs(kept - (1 - p)) < 5 * np.sqrt(p * (1 - p) / n)
    # ...which is the same as the mask having mean 1: the expected value is kept.
    assert abs(mask.mean() - 1.0) < 5 * np.sqrt(p / (1 - p) / n)


def test_manual_seed_repeats_the_mask_and_the_stream_moves_on():
    ma.manual_seed(123)
    first = dropout_mask((64, 64), 0.5, np.dtype(np.float32))
    second = dropout_mask((64, 64), 0.5, np.dtype(np.float32))
    ma.manual_seed(123)
    again = dropout_mask((64, 64), 0.5, np.dtype(np.float32))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, second)
