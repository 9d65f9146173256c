"""Values, shapes, dtypes and argument errors of the core ops, against NumPy and PyTorch."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minialex as ma
import minialex.functional as F
from tests import float32_round_off as round_off


def rand(shape, seed=0, dtype=np.float64, requires_grad=False, low=-2.0, high=2.0):
    data = np.random.default_rng(seed).uniform(low, high, shape).astype(dtype)
    return ma.tensor(data, requires_grad=requires_grad)


def reference_log_softmax(x, axis):
    """x - logsumexp(x) with NumPy's logaddexp reduction (a different route from the engine's)."""
    x = np.asarray(x, dtype=np.float64)
    return x - np.logaddexp.reduce(x, axis=axis, keepdims=True)


# --------------------------------------------------------------------------- values against NumPy


@pytest.mark.parametrize(
    ("fn", "reference"),
    [
        (lambda a, b: a + b, np.add),
        (lambda a, b: a - b, np.subtract),
        (lambda a, b: a * b, np.multiply),
        (lambda a, b: a / b, np.divide),
    ],
    ids=["add", "sub", "mul", "div"],
)
def test_binary_op_values_equal_numpy_with_broadcasting(fn, reference):
    a, b = rand((2, 1, 3), 1), rand((4, 1), 2, low=0.5)
    out = fn(a, b)
    assert out.shape == (2, 4, 3)
    np.testing.assert_allclose(out.data, reference(a.data, b.data), rtol=1e-15)


@pytest.mark.parametrize(
    ("shape_a", "shape_b"),
    [((2, 3), (3, 4)), ((5, 2, 3), (5, 3, 4)), ((3,), (3, 4)), ((2, 3), (3,)), ((3,), (3,)), ((2, 1, 2, 3), (3, 3, 2))],
)
def test_matmul_equals_numpy(shape_a, shape_b):
    a, b = rand(shape_a, 1), rand(shape_b, 2)
    out = a @ b
    expected = a.data @ b.data
    assert out.shape == expected.shape
    np.testing.assert_allclose(out.data, expected, rtol=1e-14)


def test_unary_ops_equal_numpy():
    x = rand((3, 4), 3)
    p = rand((3, 4), 4, low=0.1)
    np.testing.assert_allclose((-x).data, -x.data)
    np.testing.assert_allclose(x.exp().data, np.exp(x.data))
    np.testing.assert_allclose(p.log().data, np.log(p.data))
    np.testing.assert_allclose(F.relu(x).data, np.maximum(x.data, 0))
    np.testing.assert_allclose((x**3).data, x.data**3)
    np.testing.assert_allclose((p**0.5).data, np.sqrt(p.data))


def test_relu_gradient_is_zero_at_zero():
    x = ma.tensor(np.array([-1.0, 0.0, 2.0]), requires_grad=True)
    F.relu(x).sum().backward()
    np.testing.assert_array_equal(x.grad.data, [0.0, 0.0, 1.0])


def test_pow_zero_exponent_has_zero_gradient_even_at_zero():
    x = ma.tensor(np.array([0.0, 1.5]), requires_grad=True)
    (x**0).sum().backward()
    np.testing.assert_array_equal(x.grad.data, [0.0, 0.0])


def test_max_gradient_is_shared_by_tied_maxima():
    x = ma.tensor(np.array([[1.0, 3.0, 3.0], [2.0, 0.0, -1.0]]), requires_grad=True)
    x.max(axis=1).sum().backward()
    np.testing.assert_allclose(x.grad.data, [[0.0, 0.5, 0.5], [1.0, 0.0, 0.0]])


@pytest.mark.parametrize(
    ("key", "shape"),
    [
        (1, (3, 4)),
        (-1, (3, 4)),
        (slice(1, 3), (4, 3)),
        ((slice(None, None, 2), slice(1, None)), (4, 3)),
        ((None, Ellipsis, None), (2, 3)),
        ((Ellipsis, 0), (2, 3, 4)),
        ((0, None, slice(1, None)), (2, 3, 4)),
        (np.array([0, 2, 2]), (3, 4)),
        ((np.array([0, 1]), np.array([3, 3])), (3, 4)),
    ],
)
def test_getitem_equals_numpy(key, shape):
    x = rand(shape, 5)
    out = x[key]
    np.testing.assert_array_equal(out.data, x.data[key])
    assert out.shape == x.data[key].shape


def test_repeated_integer_index_gradient_counts_repeats():
    x = ma.tensor(np.zeros(4), requires_grad=True)
    x[np.array([1, 1, 3, 1])].sum().backward()
    np.testing.assert_array_equal(x.grad.data, [0.0, 3.0, 0.0, 1.0])


def test_shape_ops_equal_numpy():
    x = rand((2, 3, 4), 6)
    np.testing.assert_array_equal(x.reshape(6, 4).data, x.data.reshape(6, 4))
    np.testing.assert_array_equal(x.reshape((4, -1)).data, x.data.reshape(4, -1))
    np.testing.assert_array_equal(x.transpose().data, x.data.transpose())
    np.testing.assert_array_equal(x.transpose(1, 2, 0).data, x.data.transpose(1, 2, 0))
    np.testing.assert_array_equal(x.T.data, x.data.T)
    assert x.flatten().shape == (24,)
    assert x.flatten(1).shape == (2, 12)
    assert F.flatten(x).shape == (2, 12)  # F.flatten's start_dim defaults to 1, as torch.nn.Flatten
    assert F.flatten(x, 2).shape == (2, 3, 4)
    np.testing.assert_array_equal(F.flatten(x).data, x.data.reshape(2, 12))


# --------------------------------------------------------------------------- reductions


@st.composite
def reduction_inputs(draw):
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    array = draw(
        hnp.arrays(
            dtype,
            hnp.array_shapes(min_dims=0, max_dims=4, min_side=1, max_side=4),
            elements=st.floats(-100, 100, width=32 if dtype == np.float32 else 64),
        )
    )
    ndim = array.ndim
    axis_choices = [st.none(), hnp.valid_tuple_axes(ndim)]
    if ndim:
        axis_choices.append(st.integers(-ndim, ndim - 1))
    axis = draw(st.one_of(*axis_choices))
    return array, axis, draw(st.booleans())


@settings(max_examples=50, deadline=None)
@given(case=reduction_inputs(), op=st.sampled_from(["sum", "mean", "max"]))
def test_reduction_equals_numpy_in_value_shape_and_dtype(case, op):
    array, axis, keepdims = case
    out = getattr(ma.tensor(array), op)(axis=axis, keepdims=keepdims)
    expected = getattr(array, op)(axis=axis, keepdims=keepdims)
    assert out.shape == np.shape(expected)
    assert out.dtype == array.dtype
    rtol = 1e-5 if array.dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out.data, expected, rtol=rtol, atol=rtol * 100)


def test_sum_of_int_tensor_stays_integer():
    out = ma.tensor([[1, 2], [3, 4]]).sum(axis=0)
    assert np.issubdtype(out.dtype, np.integer)
    np.testing.assert_array_equal(out.data, [4, 6])


# --------------------------------------------------------------------------- softmax


@st.composite
def logits(draw, max_abs=1e4):
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    array = draw(
        hnp.arrays(
            dtype,
            hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=5),
            elements=st.floats(-max_abs, max_abs, width=32 if dtype == np.float32 else 64),
        )
    )
    axis = draw(st.integers(-array.ndim, array.ndim - 1))
    return array, axis


@settings(max_examples=50, deadline=None)
@given(case=logits())
def test_softmax_sums_to_one_along_its_axis(case):
    array, axis = case
    out = F.softmax(ma.tensor(array), axis=axis)
    assert out.dtype == array.dtype and out.shape == array.shape
    assert np.all(np.isfinite(out.data))
    assert np.all(out.data >= 0)
    tol = 1e-5 if array.dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out.data.sum(axis=axis), 1.0, rtol=tol, atol=tol)


@settings(max_examples=50, deadline=None)
@given(case=logits())
def test_softmax_and_log_softmax_of_large_logits_are_finite_and_equal_reference(case):
    array, axis = case
    expected_log = reference_log_softmax(array, axis)
    log_out = F.log_softmax(ma.tensor(array), axis=axis)
    out = F.softmax(ma.tensor(array), axis=axis)
    assert np.all(np.isfinite(log_out.data)) and np.all(np.isfinite(out.data))
    assert log_out.dtype == array.dtype
    if array.dtype == np.float32:
        np.testing.assert_allclose(log_out.data, expected_log, rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(out.data, np.exp(expected_log), rtol=1e-4, atol=1e-6)
    else:
        np.testing.assert_allclose(log_out.data, expected_log, rtol=1e-12, atol=1e-9)
        np.testing.assert_allclose(out.data, np.exp(expected_log), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_of_logits_of_1e4_does_not_overflow(dtype):
    x = ma.tensor(np.array([[1e4, 0.0, -1e4], [1e4, 1e4, 1e4]], dtype=dtype), requires_grad=True)
    np.testing.assert_allclose(F.softmax(x).data, [[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3]], rtol=1e-6)
    log_out = F.log_softmax(x)
    np.testing.assert_allclose(log_out.data, [[0.0, -1e4, -2e4], [-np.log(3)] * 3], rtol=1e-6)
    (log_out * ma.tensor(np.array([[1.0, 2.0, 3.0], [1.0, 0.0, 0.0]], dtype=dtype))).sum().backward()
    assert np.all(np.isfinite(x.grad.data))
    y = ma.tensor(x.data, requires_grad=True)
    (F.softmax(y) * ma.tensor(np.array([[1.0, 2.0, 3.0], [1.0, 0.0, 0.0]], dtype=dtype))).sum().backward()
    assert np.all(np.isfinite(y.grad.data))


# --------------------------------------------------------------------------- against PyTorch


@pytest.mark.parametrize("axis", [-1, 0, 1])
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_family_equals_torch_in_value_and_gradient(name, axis):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    x_np = (rng.normal(size=(4, 6, 5)) * 3).astype(np.float32)
    g_np = rng.normal(size=(4, 6, 5)).astype(np.float32)
    x = ma.tensor(x_np, requires_grad=True)
    out = getattr(F, name)(x, axis=axis)
    out.backward(g_np)
    xt = torch.tensor(x_np.astype(np.float64), requires_grad=True)
    out_t = getattr(torch, name)(xt, dim=axis)
    out_t.backward(torch.tensor(g_np.astype(np.float64)))
    assert out.dtype == np.float32 and x.grad.dtype == np.float32
    # Against PyTorch in float64: a max, exps, a sum along the axis and a division or log
    # (4 steps); backward uses that output, then a sum of products along the axis and two
    # more operations (6 steps). A chain of well-conditioned steps, tests/float32_round_off.py.
    length = x_np.shape[axis]
    round_off.assert_within_chain_round_off(out.data, out_t.detach().numpy(), length, layers=4, err_msg="output")
    round_off.assert_within_chain_round_off(x.grad.data, xt.grad.numpy(), length, layers=6, err_msg="grad")


def test_composite_expression_equals_torch_in_value_and_gradients():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    arrays = {
        "x": rng.normal(size=(8, 6)).astype(np.float32),
        "w": rng.normal(size=(5, 6)).astype(np.float32) * 0.5,
        "b": rng.normal(size=(5,)).astype(np.float32),
        "s": rng.uniform(0.5, 2.0, size=(8, 1)).astype(np.float32),
    }
    rows, cols = np.array([0, 3, 3, 7, 1]), np.array([2, 2, 2, 0, 4])

    def expression(lib, x, w, b, s):
        if lib is torch:
            log_softmax = lambda t, axis: torch.log_softmax(t, dim=axis)  # noqa: E731
            tmax = lambda t, axis: torch.amax(t, dim=axis)  # noqa: E731
            relu = torch.relu
            idx = (torch.tensor(rows), torch.tensor(cols))
        else:
            log_softmax = F.log_softmax
            tmax = lambda t, axis: t.max(axis=axis)  # noqa: E731
            relu = F.relu
            idx = (rows, cols)
        h = relu(x @ w.T + b)  # (8, 5)
        z = log_softmax(h * 2.0 - 1.0, axis=1)
        picked = z[idx].mean()
        scaled = (h / s) ** 2
        reshaped = scaled.reshape(4, 10).transpose(1, 0)[2:9:3]
        return (
            -picked
            + tmax(reshaped, 1).sum() * 0.1
            + (x.exp() * 0.01 - s.log()).mean()
            + (w[:, None, :] @ x.T.reshape(1, 6, 8)).sum(axis=(0, 1)).max() * 0.05
            - (-b).sum() / 3.0
        )

    ours = {k: ma.tensor(v, requires_grad=True) for k, v in arrays.items()}
    theirs = {k: torch.tensor(v.astype(np.float64), requires_grad=True) for k, v in arrays.items()}

    loss = expression(ma, **ours)
    loss.backward()

    loss_t = expression(torch, **theirs)  # torch also spells dim as axis
    loss_t.backward()

    assert loss.dtype == np.float32
    # Against PyTorch in float64. The longest sum is the mean over x's 48 elements; the
    # longest chain of operations from an input to the loss has about ten steps. The loss
    # is a sum of five terms of similar size, so it is held to the same chain bound.
    round_off.assert_within_chain_round_off(loss.item(), loss_t.item(), longest_sum=48, layers=10, err_msg="loss")
    for k in arrays:
        assert ours[k].grad.dtype == np.float32
        round_off.assert_within_chain_round_off(
            ours[k].grad.data, theirs[k].grad.numpy(), longest_sum=48, layers=10, err_msg=k)


# --------------------------------------------------------------------------- integer inputs


def test_int_tensor_exp_log_mean_softmax_are_promoted_to_float32():
    x = ma.tensor([1, 2, 3])
    for out, expected in [
        (x.exp(), np.exp([1.0, 2.0, 3.0])),
        (x.log(), np.log([1.0, 2.0, 3.0])),
        (ma.tensor([1, 2]).mean(), 1.5),
        (F.softmax(x), np.exp(reference_log_softmax([1.0, 2.0, 3.0], -1))),
        (F.log_softmax(x), reference_log_softmax([1.0, 2.0, 3.0], -1)),
    ]:
        assert out.dtype == np.float32
        np.testing.assert_allclose(out.data, expected, rtol=1e-6)


@pytest.mark.parametrize(
    ("fn", "expected"),
    [
        (lambda x: x / 2, [0.5, 1.0, 1.5]),
        (lambda x: x / ma.tensor([2, 4, 4]), [0.5, 0.5, 0.75]),
        (lambda x: 1 / x, [1.0, 0.5, 1 / 3]),
        (lambda x: x / 2.0, [0.5, 1.0, 1.5]),
    ],
    ids=["int_by_python_int", "int_by_int_tensor", "python_int_by_int", "int_by_python_float"],
)
def test_int_division_is_true_division_in_float32(fn, expected):
    out = fn(ma.tensor([1, 2, 3]))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.data, expected, rtol=1e-6)


def test_int_tensor_times_float_scalar_is_float32_and_not_truncated():
    x = ma.tensor([1, 2, 3])
    for out in (x * 2.5, 2.5 * x):
        assert out.dtype == np.float32
        np.testing.assert_array_equal(out.data, [2.5, 5.0, 7.5])
    assert (x + 0.5).dtype == np.float32
    np.testing.assert_array_equal((x - 0.5).data, [0.5, 1.5, 2.5])


@pytest.mark.parametrize(
    "fn",
    [lambda i, f: i + f, lambda i, f: f - i, lambda i, f: i * f, lambda i, f: f / i, lambda i, f: i @ f],
    ids=["add", "sub", "mul", "div", "matmul"],
)
def test_int_tensor_meeting_float32_tensor_becomes_float32(fn):
    i = ma.tensor([[1, 2], [3, 4]])
    f = ma.tensor(np.array([[0.5, 1.0], [1.5, 2.0]], dtype=np.float32), requires_grad=True)
    out = fn(i, f)
    assert out.dtype == np.float32
    out.sum().backward()
    assert f.grad.dtype == np.float32


# --------------------------------------------------------------------------- argument errors


@pytest.mark.parametrize("op", ["__add__", "__sub__", "__mul__", "__truediv__"])
def test_elementwise_shape_mismatch_names_both_shapes(op):
    a, b = rand((2, 3)), rand((4,))
    with pytest.raises(ValueError) as info:
        getattr(a, op)(b)
    assert "(2, 3)" in str(info.value) and "(4,)" in str(info.value)


@pytest.mark.parametrize(("shape_a", "shape_b"), [((2, 3), (4, 5)), ((3,), (4,)), ((2, 3), (2,)), ((2, 2, 3), (3, 2, 4))])
def test_matmul_shape_mismatch_names_both_shapes(shape_a, shape_b):
    a, b = rand(shape_a), rand(shape_b)
    with pytest.raises(ValueError) as info:
        a @ b
    assert str(shape_a) in str(info.value) and str(shape_b) in str(info.value)


def test_matmul_of_0d_tensor_is_a_value_error():
    with pytest.raises(ValueError):
        rand(()) @ rand((3,))


@pytest.mark.parametrize("device", ["tpu", "cuda:x", "gpu", "cuda:-1", ""])
def test_unknown_device_string_is_a_value_error(device):
    with pytest.raises(ValueError) as info:
        ma.tensor([1.0], device=device)
    assert repr(device) in str(info.value) or device in str(info.value)
    with pytest.raises(ValueError):
        ma.tensor([1.0]).to(device)


@pytest.mark.skipif(ma.cuda.is_available(), reason="CUDA is available here")
@pytest.mark.parametrize("device", ["cuda", "cuda:0", "CUDA:1"])
def test_cuda_device_without_cuda_is_a_runtime_error(device):
    with pytest.raises(RuntimeError, match="CUDA"):
        ma.tensor([1.0], device=device)
    with pytest.raises(RuntimeError, match="CUDA"):
        ma.tensor([1.0]).to(device)


@pytest.mark.skipif(ma.cuda.is_available(), reason="CUDA is available here")
def test_cuda_method_without_cuda_is_a_runtime_error():
    with pytest.raises(RuntimeError):
        ma.tensor([1.0]).cuda()


@pytest.mark.parametrize("shape", [(4,), (4, 2), (-1, 4), (-1, -1), (0, 6)])
def test_reshape_to_wrong_size_names_both_shapes(shape):
    x = rand((2, 3))
    with pytest.raises(ValueError) as info:
        x.reshape(*shape)
    assert "(2, 3)" in str(info.value) and str(shape) in str(info.value)


@pytest.mark.parametrize(
    "call",
    [
        lambda x: x.sum(axis=2),
        lambda x: x.sum(axis=-3),
        lambda x: x.mean(axis=(0, 5)),
        lambda x: x.max(axis=3),
        lambda x: F.softmax(x, axis=2),
        lambda x: F.log_softmax(x, axis=-3),
        lambda x: x.transpose(0, 2),
        lambda x: x.flatten(4),
    ],
    ids=["sum", "sum_negative", "mean_tuple", "max", "softmax", "log_softmax", "transpose", "flatten"],
)
def test_out_of_range_axis_is_a_value_error(call):
    with pytest.raises(ValueError):
        call(rand((2, 3)))


def test_repeated_axis_is_a_value_error():
    with pytest.raises(ValueError):
        rand((2, 3)).sum(axis=(0, -2))


@pytest.mark.parametrize("exponent", [ma.tensor(2.0), ma.tensor([2.0]), "2", None])
def test_pow_with_non_scalar_exponent_is_a_type_error(exponent):
    with pytest.raises(TypeError):
        rand((2, 3)) ** exponent


def test_out_of_range_index_is_an_index_error():
    with pytest.raises(IndexError):
        rand((2, 3))[5]


def test_manual_seed_negative_is_a_value_error():
    with pytest.raises(ValueError, match="-1"):
        ma.manual_seed(-1)
