"""The autograd engine: Tensor, ma.tensor, backward semantics, no_grad, graph lifetime."""

import gc
import weakref

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minialex as ma


def leaf(values, dtype=np.float64):
    return ma.tensor(np.asarray(values, dtype=dtype), requires_grad=True)


def rand(shape, seed=0, dtype=np.float64, requires_grad=True):
    data = np.random.default_rng(seed).uniform(-2.0, 2.0, shape).astype(dtype)
    return ma.tensor(data, requires_grad=requires_grad)


# --------------------------------------------------------------------------- ma.tensor


def test_tensor_of_python_floats_is_float32():
    assert ma.tensor([1.0, 2.5]).dtype == np.float32
    assert ma.tensor([[1.0, 2], [3, 4]]).dtype == np.float32
    assert ma.tensor(3.5).dtype == np.float32


def test_tensor_of_python_ints_is_int64():
    assert ma.tensor([1, 2, 3]).dtype == np.int64
    assert ma.tensor(7).dtype == np.int64


def test_tensor_of_numpy_array_keeps_its_dtype():
    assert ma.tensor(np.zeros(3, dtype=np.float64)).dtype == np.float64
    assert ma.tensor(np.zeros(3, dtype=np.float32)).dtype == np.float32
    assert ma.tensor(np.zeros(3, dtype=np.int32)).dtype == np.int32


@pytest.mark.parametrize("dtype", [np.float64, "float64", ma.float64])
def test_tensor_respects_dtype_argument(dtype):
    t = ma.tensor([1.5, 2.5], dtype=dtype)
    assert t.dtype == np.float64
    np.testing.assert_array_equal(t.data, [1.5, 2.5])


def test_tensor_dtype_argument_converts_numpy_arrays_and_ints():
    assert ma.tensor(np.ones(2), dtype=np.float32).dtype == np.float32
    assert ma.tensor([1, 2], dtype=ma.float32).dtype == np.float32
    assert ma.tensor([1.0, 2.0], dtype=ma.int64).dtype == np.int64


def test_tensor_copies_numpy_data():
    source = np.array([1.0, 2.0, 3.0])
    t = ma.tensor(source)
    source[0] = 100.0
    np.testing.assert_array_equal(t.data, [1.0, 2.0, 3.0])
    assert not np.shares_memory(t.data, source)


def test_tensor_of_a_tensor_copies_its_data():
    original = ma.tensor(np.array([1.0, 2.0]))
    copy = ma.tensor(original)
    copy.data[0] = 5.0
    assert original.data[0] == 1.0


def test_tensor_shape_follows_nested_lists():
    assert ma.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]).shape == (2, 3)
    assert ma.tensor(1.0).shape == ()


@pytest.mark.parametrize("data", [[1, 2, 3], np.arange(3), [True, False]])
def test_requires_grad_on_non_float_tensor_is_a_type_error(data):
    with pytest.raises(TypeError):
        ma.tensor(data, requires_grad=True)


def test_requires_grad_on_float_tensor_makes_a_leaf():
    t = ma.tensor([1.0, 2.0], requires_grad=True)
    assert t.requires_grad is True
    assert t.is_leaf
    assert t.grad is None


def test_tensor_on_cpu_device():
    t = ma.tensor([1.0, 2.0], device="cpu")
    assert t.device == "cpu"
    assert isinstance(t.data, np.ndarray)


# --------------------------------------------------------------------------- Tensor attributes and methods


def test_tensor_attributes():
    t = ma.tensor(np.arange(6.0, dtype=np.float32).reshape(2, 3))
    assert isinstance(t.data, np.ndarray)
    assert t.grad is None
    assert t.requires_grad is False
    assert t.shape == (2, 3) and type(t.shape) is tuple
    assert t.ndim == 2
    assert t.dtype == np.float32
    assert t.device == "cpu"
    assert t.is_leaf


def test_op_result_is_not_a_leaf_when_it_needs_grad():
    x = rand((2, 3))
    y = x * 2.0
    assert y.requires_grad
    assert not y.is_leaf
    assert y.grad_fn is not None


def test_op_result_on_constants_is_a_leaf_without_grad():
    c = rand((2, 3), requires_grad=False)
    y = c * 2.0
    assert y.is_leaf and not y.requires_grad and y.grad_fn is None


def test_numpy_returns_a_copy():
    t = ma.tensor(np.array([1.0, 2.0]))
    array = t.numpy()
    assert isinstance(array, np.ndarray)
    np.testing.assert_array_equal(array, [1.0, 2.0])
    array[0] = 100.0
    assert t.data[0] == 1.0


def test_item_returns_a_python_number():
    value = ma.tensor(np.array([[2.5]])).item()
    assert value == 2.5 and isinstance(value, float)
    assert ma.tensor(3).item() == 3


def test_item_of_several_elements_is_an_error():
    with pytest.raises(ValueError, match=r"\(2,\)"):
        ma.tensor([1.0, 2.0]).item()


def test_to_cpu_and_cpu_keep_values_and_device():
    t = ma.tensor([1.0, 2.0])
    for moved in (t.to("cpu"), t.cpu(), t.to("CPU")):
        assert moved.device == "cpu"
        np.testing.assert_array_equal(moved.data, t.data)


def test_detach_shares_data_and_drops_the_graph():
    x = rand((2, 3))
    y = x * 2.0
    d = y.detach()
    assert np.shares_memory(d.data, y.data)
    assert d.requires_grad is False
    assert d.grad_fn is None
    assert d.is_leaf
    assert d.grad is None
    leaf_detached = x.detach()
    assert np.shares_memory(leaf_detached.data, x.data) and not leaf_detached.requires_grad


def test_repr_shows_the_values():
    text = repr(ma.tensor([1.5, -2.0]))
    assert "tensor" in text and "1.5" in text and "-2" in text
    assert "requires_grad=True" in repr(ma.tensor([1.0], requires_grad=True))
    assert "float64" in repr(ma.tensor(np.ones(2)))
    assert repr(rand((2, 3)) * 2.0)  # a non-leaf prints too


# --------------------------------------------------------------------------- backward semantics


def test_gradients_accumulate_across_backward_calls():
    x = leaf([1.0, 2.0, 3.0])
    (x * 2.0).sum().backward()
    (x * 3.0).sum().backward()
    np.testing.assert_array_equal(x.grad.data, [5.0, 5.0, 5.0])


def test_second_backward_through_the_same_graph_is_a_clear_error():
    x = leaf([1.0, 2.0])
    loss = (x * x).sum()
    loss.backward()
    with pytest.raises(RuntimeError, match="retain_graph"):
        loss.backward()


def test_retain_graph_allows_a_second_backward():
    x = leaf([1.0, 2.0])
    loss = (x.exp() * x).sum()
    loss.backward(retain_graph=True)
    first = x.grad.data.copy()
    loss.backward()
    np.testing.assert_allclose(x.grad.data, 2 * first)
    np.testing.assert_allclose(first, np.exp([1.0, 2.0]) * (1 + np.array([1.0, 2.0])))


def test_backward_of_non_scalar_without_grad_names_the_shape():
    x = rand((2, 3))
    with pytest.raises(RuntimeError, match=r"\(2, 3\)"):
        (x * 2.0).backward()


def test_backward_of_one_element_non_scalar_needs_no_grad():
    x = leaf([[2.0]])
    (x * 3.0).backward()
    np.testing.assert_array_equal(x.grad.data, [[3.0]])


def test_backward_with_wrong_shaped_grad_is_a_value_error():
    x = rand((2, 3))
    y = x * 2.0
    with pytest.raises(ValueError, match=r"\(3, 2\)") as info:
        y.backward(np.ones((3, 2)))
    assert "(2, 3)" in str(info.value)


def test_backward_with_explicit_grad_is_a_vector_jacobian_product():
    x = leaf([1.0, 2.0, 3.0])
    g = np.array([1.0, -1.0, 0.5])
    (x * x).backward(g)
    np.testing.assert_allclose(x.grad.data, 2 * x.data * g)
    z = leaf([1.0, 2.0])
    (z * 3.0).backward(ma.tensor(np.array([1.0, 2.0])))  # a Tensor grad works too
    np.testing.assert_allclose(z.grad.data, [3.0, 6.0])


def test_backward_on_tensor_without_grad_is_an_error():
    with pytest.raises(RuntimeError):
        ma.tensor([1.0]).backward()


def test_backward_of_a_leaf_sets_its_own_grad():
    x = leaf([4.0])
    x.backward()
    np.testing.assert_array_equal(x.grad.data, [1.0])


def test_leaf_shared_by_two_branches_gets_the_sum():
    x = leaf([0.5, -1.0, 2.0])
    (x * 3.0 + x.exp()).sum().backward()
    np.testing.assert_allclose(x.grad.data, 3.0 + np.exp(x.data))


def test_x_times_x_has_gradient_two_x():
    x = leaf([0.5, -1.0, 2.0])
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad.data, 2 * x.data)


def test_diamond_graph_sums_both_paths():
    x = leaf([0.5, -1.0, 2.0])
    h = x * 2.0
    (h * h + h).sum().backward()
    np.testing.assert_allclose(x.grad.data, (2 * h.data + 1) * 2)


def test_non_leaf_and_constant_tensors_get_no_grad():
    x = leaf([1.0, 2.0])
    c = ma.tensor(np.array([3.0, 4.0]))
    h = x * c
    h.sum().backward()
    assert h.grad is None
    assert c.grad is None
    np.testing.assert_array_equal(x.grad.data, [3.0, 4.0])


def test_each_leaf_grad_is_its_own_array():
    a, b = rand((2, 3), 1), rand((2, 3), 2)
    (a + b).sum().backward()
    assert not np.shares_memory(a.grad.data, b.grad.data)
    a.grad.data[...] = 99.0
    np.testing.assert_array_equal(b.grad.data, np.ones((2, 3)))


def test_leaf_grads_are_writable_arrays():
    a, b = rand((2, 3), 1), rand((3,), 2)
    (a + b).reshape(6).sum().backward()
    for x in (a, b):
        assert x.grad.data.flags.writeable
        x.grad.data *= 0.5  # an optimizer may scale in place


def test_leaf_grad_does_not_alias_the_callers_grad():
    a, b = rand((2, 3), 1), rand((2, 3), 2)
    seed = np.ones((2, 3))
    (a + b).backward(seed)
    seed[...] = 5.0
    np.testing.assert_array_equal(a.grad.data, np.ones((2, 3)))
    np.testing.assert_array_equal(b.grad.data, np.ones((2, 3)))
    x = rand((2, 3), 3)
    g = np.full((2, 3), 2.0)
    x.backward(g)
    g[...] = 0.0
    np.testing.assert_array_equal(x.grad.data, np.full((2, 3), 2.0))


def test_backward_through_a_10000_op_chain_does_not_recurse():
    x = leaf([1.0])
    y = x
    for i in range(10_000):
        y = y * 1.0001 if i % 2 == 0 else y + 0.0
    y.backward()
    np.testing.assert_allclose(x.grad.data, [1.0001**5000], rtol=1e-10)


def test_graph_is_freed_after_backward():
    x = rand((3, 4))
    h = x * 2.0
    hidden = h.exp()
    h_ref, fn_ref, hidden_ref = weakref.ref(h), weakref.ref(h.grad_fn), weakref.ref(hidden)
    loss = hidden.sum()
    del h, hidden
    gc.collect()
    assert h_ref() is not None and hidden_ref() is not None  # the graph lives until backward
    loss.backward()
    gc.collect()
    assert h_ref() is None
    assert hidden_ref() is None
    assert fn_ref() is None
    assert x.grad is not None  # the leaf keeps its gradient


# --------------------------------------------------------------------------- broadcasting laws


@settings(max_examples=50, deadline=None)
@given(
    shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=4, min_side=0, max_side=3),
    op=st.sampled_from(["add", "sub", "mul", "div"]),
)
def test_broadcast_gradient_has_operand_shape(shapes, op):
    shape_a, shape_b = shapes.input_shapes
    a = rand(shape_a, 1)
    b = ma.tensor(np.full(shape_b, 1.5), requires_grad=True)
    out = {"add": a + b, "sub": a - b, "mul": a * b, "div": a / b}[op]
    assert out.shape == shapes.result_shape
    out.sum().backward()
    assert a.grad.shape == shape_a
    assert b.grad.shape == shape_b


@settings(max_examples=40, deadline=None)
@given(shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=1, max_side=4))
def test_sum_of_sum_gradients_are_ones(shape):
    a, b = rand(shape, 1), rand(shape, 2)
    (a + b).sum().backward()
    np.testing.assert_array_equal(a.grad.data, np.ones(shape))
    np.testing.assert_array_equal(b.grad.data, np.ones(shape))


@settings(max_examples=40, deadline=None)
@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, min_side=1, max_side=3))
def test_broadcast_sum_gradient_counts_the_copies(shapes):
    shape_a, shape_b = shapes.input_shapes
    a, b = rand(shape_a, 1), rand(shape_b, 2)
    (a + b).sum().backward()
    total = int(np.prod(shapes.result_shape))
    np.testing.assert_array_equal(a.grad.data, np.full(shape_a, total / int(np.prod(shape_a))))
    np.testing.assert_array_equal(b.grad.data, np.full(shape_b, total / int(np.prod(shape_b))))


# --------------------------------------------------------------------------- no_grad


def test_no_grad_records_nothing():
    x = rand((2, 3))
    with ma.no_grad():
        y = (x * 2.0).exp().sum()
        assert not ma.is_grad_enabled()
    assert y.grad_fn is None
    assert y.requires_grad is False
    assert ma.is_grad_enabled()
    z = x * 2.0
    assert z.requires_grad and z.grad_fn is not None


def test_no_grad_as_decorator():
    x = rand((2, 3))

    @ma.no_grad()
    def double(t):
        """Double it."""
        return t * 2.0

    y = double(x)
    assert y.grad_fn is None and y.requires_grad is False
    assert ma.is_grad_enabled()
    assert double.__name__ == "double"


def test_no_grad_restores_the_flag_after_an_exception_and_when_nested():
    with pytest.raises(KeyError):
        with ma.no_grad():
            raise KeyError("boom")
    assert ma.is_grad_enabled()
    with ma.no_grad():
        with ma.no_grad():
            pass
        assert not ma.is_grad_enabled()
    assert ma.is_grad_enabled()


# --------------------------------------------------------------------------- dtypes


@pytest.mark.parametrize(
    "fn",
    [
        lambda x: x + 1.5,
        lambda x: 1.5 + x,
        lambda x: x - 1.5,
        lambda x: 1.5 - x,
        lambda x: x * 2.5,
        lambda x: 2.5 * x,
        lambda x: x / 3.0,
        lambda x: 3.0 / x,
        lambda x: x**2.0,
        lambda x: x**0.5,
        lambda x: x**2,
        lambda x: x * np.float64(2.5),
        lambda x: x + 1,
    ],
    ids=["add", "radd", "sub", "rsub", "mul", "rmul", "div", "rdiv", "pow_float", "pow_half", "pow_int",
         "mul_numpy_float64_scalar", "add_python_int"],
)
def test_python_scalar_keeps_float32_tensor_float32(fn):
    x = ma.tensor(np.array([0.5, 1.5, 2.0], dtype=np.float32), requires_grad=True)
    y = fn(x)
    assert y.dtype == np.float32
    y.sum().backward()
    assert x.grad.dtype == np.float32


def test_float64_grad_stays_float64_through_mixed_graph():
    x = rand((3, 4), dtype=np.float64)
    w = rand((4, 2), 1, dtype=np.float64)
    loss = ((x @ w).relu() * 0.5 + 1.0).log().mean()
    assert loss.dtype == np.float64
    loss.backward()
    assert x.grad.dtype == np.float64 and w.grad.dtype == np.float64
