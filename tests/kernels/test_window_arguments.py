"""conv.py and pool.py check kernel_size, stride and padding one way: ``minialex.kernels.check_pair``."""

import numpy as np
import pytest

from minialex.kernels import check_pair, conv, pool


def test_check_pair_turns_an_int_or_a_pair_into_a_tuple_of_ints():
    assert check_pair("stride", 2, 1) == (2, 2)
    assert check_pair("stride", (1, 3), 1) == (1, 3)
    assert check_pair("padding", [0, 2], 0) == (0, 2)
    assert check_pair("padding", np.int64(1), 0) == (1, 1)
    assert all(type(v) is int for v in check_pair("padding", (np.int32(1), np.int64(2)), 0))


@pytest.mark.parametrize("value", [1.0, (1, 2.0), (1, 2, 3), "2", None, True, (True, 1)])
def test_check_pair_refuses_what_is_not_an_int_or_a_pair_of_ints_with_a_type_error(value):
    with pytest.raises(TypeError, match="kernel_size must be an int or a pair of ints"):
        check_pair("kernel_size", value, 1)


@pytest.mark.parametrize("name, value, minimum", [("stride", 0, 1), ("stride", (1, 0), 1), ("padding", -1, 0)])
def test_check_pair_refuses_a_value_below_the_minimum_with_a_value_error_naming_it(name, value, minimum):
    with pytest.raises(ValueError, match=f"{name} must be at least {minimum}"):
        check_pair(name, value, minimum)


@pytest.mark.parametrize("stride, padding, error, message", [
    (0, 0, ValueError, "stride must be at least 1"),
    ((2, -1), 0, ValueError, "stride must be at least 1"),
    (1, -1, ValueError, "padding must be at least 0"),
    (1.5, 0, TypeError, "stride must be an int or a pair of ints"),
    (1, (0, 0, 0), TypeError, "padding must be an int or a pair of ints"),
])
def test_conv_and_pool_refuse_the_same_window_arguments_with_the_same_errors(stride, padding, error, message):
    x = np.zeros((1, 2, 6, 6))
    weight = np.zeros((2, 2, 3, 3))
    with pytest.raises(error, match=message):
        conv.conv2d_forward(x, weight, None, stride, padding, 1)
    with pytest.raises(error, match=message):
        conv.im2col(x, 3, 3, stride, padding)
    with pytest.raises(error, match=message):
        pool.max_pool2d_forward(x, 3, stride, padding)


def test_conv_and_pool_say_the_same_about_an_empty_output():
    x = np.zeros((1, 2, 4, 4))
    with pytest.raises(ValueError, match="output would be empty: input 4x4 with kernel"):
        conv.conv2d_forward(x, np.zeros((2, 2, 5, 5)), None, 1, 0, 1)
    with pytest.raises(ValueError, match="output would be empty: input 4x4 with kernel"):
        pool.max_pool2d_forward(x, 5, 1, 0)
