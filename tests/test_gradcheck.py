"""Every op's gradient against central finite differences (``ma.gradcheck``), and the checker itself.

The op table below is the one list of differentiable operations of the core:
each row is checked in float64 against finite differences with a random
output gradient (so that, e.g., the all-ones gradient of ``softmax(x).sum()``
cannot hide a wrong backward), and each row must keep float64 and float32
through its value and its gradients.
"""

import re
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minialex as ma
import minialex.functional as F

# --------------------------------------------------------------------------- inputs

ANY, POSITIVE, NONZERO, DISTINCT = "any", "positive", "nonzero", "distinct"


def make(shape, kind=ANY, seed=0, dtype=np.float64, requires_grad=True):
    """A leaf of ``shape`` whose values suit the op: anywhere in [-2, 2], in [0.5, 2],
    at least 0.5 away from 0, or pairwise at least 0.15 apart (no ties for max)."""
    rng = np.random.default_rng(seed)
    size = int(np.prod(shape, dtype=np.int64))
    if kind == ANY:
        data = rng.uniform(-2.0, 2.0, size)
    elif kind == POSITIVE:
        data = rng.uniform(0.5, 2.0, size)
    elif kind == NONZERO:
        data = rng.uniform(0.5, 2.0, size) * rng.choice([-1.0, 1.0], size)
    elif kind == DISTINCT:
        data = (rng.permutation(size) - size / 2) * 0.25 + rng.uniform(-0.05, 0.05, size)
    else:
        raise AssertionError(kind)
    return ma.tensor(data.reshape(shape).astype(dtype), requires_grad=requires_grad)


# --------------------------------------------------------------------------- the op table
# (id, fn, [(shape, kind), ...]): fn takes one Tensor per (shape, kind).

MASK = np.array([[True, False, True], [False, False, True]])

OPS = [
    # + - * /, with broadcasting and Python / NumPy operands on either side
    ("add", lambda a, b: a + b, [((2, 3), ANY), ((2, 3), ANY)]),
    ("add_broadcast_column_row", lambda a, b: a + b, [((3, 1), ANY), ((1, 4), ANY)]),
    ("add_broadcast_missing_dims", lambda a, b: a + b, [((2, 3, 4), ANY), ((4,), ANY)]),
    ("add_python_float", lambda a: a + 2.5, [((2, 3), ANY)]),
    ("radd_python_float", lambda a: 2.5 + a, [((2, 3), ANY)]),
    ("add_numpy_array", lambda a: a + np.arange(3, dtype=a.dtype), [((2, 3), ANY)]),
    ("sub", lambda a, b: a - b, [((2, 3), ANY), ((2, 3), ANY)]),
    ("sub_broadcast", lambda a, b: a - b, [((2, 3), ANY), ((3,), ANY)]),
    ("rsub_broadcast", lambda a, b: a - b, [((2, 1), ANY), ((2, 3), ANY)]),
    ("rsub_python_float", lambda a: 1.5 - a, [((2, 3), ANY)]),
    ("mul", lambda a, b: a * b, [((2, 3), ANY), ((2, 3), ANY)]),
    ("mul_broadcast", lambda a, b: a * b, [((2, 1, 3), ANY), ((4, 1), ANY)]),
    ("mul_scalar_tensor", lambda a, b: a * b, [((2, 3), ANY), ((), ANY)]),
    ("mul_same_tensor", lambda a: a * a, [((2, 3), ANY)]),
    ("rmul_python_float", lambda a: 3.0 * a, [((2, 3), ANY)]),
    ("rmul_numpy_array", lambda a: np.arange(3, dtype=a.dtype) * a, [((2, 3), ANY)]),
    ("div", lambda a, b: a / b, [((2, 3), ANY), ((2, 3), NONZERO)]),
    ("div_broadcast_denominator", lambda a, b: a / b, [((2, 3), ANY), ((3,), NONZERO)]),
    ("div_broadcast_numerator", lambda a, b: a / b, [((3,), ANY), ((2, 3), NONZERO)]),
    ("div_python_float", lambda a: a / 4.0, [((2, 3), ANY)]),
    ("rdiv_python_float", lambda a: 1.0 / a, [((2, 3), NONZERO)]),
    ("neg", lambda a: -a, [((2, 3), ANY)]),
    # ** with a scalar exponent
    ("pow_int_2", lambda a: a**2, [((2, 3), ANY)]),
    ("pow_int_3", lambda a: a**3, [((2, 3), ANY)]),
    ("pow_int_1", lambda a: a**1, [((2, 3), ANY)]),
    ("pow_int_0", lambda a: a**0, [((2, 3), NONZERO)]),
    ("pow_int_negative", lambda a: a**-2, [((2, 3), NONZERO)]),
    ("pow_float_2", lambda a: a**2.0, [((2, 3), ANY)]),
    ("pow_float_half", lambda a: a**0.5, [((2, 3), POSITIVE)]),
    ("pow_float_2_5", lambda a: a**2.5, [((2, 3), POSITIVE)]),
    ("pow_float_negative", lambda a: a**-1.5, [((2, 3), POSITIVE)]),
    # @ in every arrangement NumPy allows
    ("matmul_2d", lambda a, b: a @ b, [((2, 3), ANY), ((3, 4), ANY)]),
    ("matmul_batched", lambda a, b: a @ b, [((2, 2, 3), ANY), ((2, 3, 4), ANY)]),
    ("matmul_batch_broadcast", lambda a, b: a @ b, [((2, 1, 2, 3), ANY), ((3, 3, 4), ANY)]),
    ("matmul_3d_2d", lambda a, b: a @ b, [((2, 2, 3), ANY), ((3, 4), ANY)]),
    ("matmul_2d_3d", lambda a, b: a @ b, [((2, 3), ANY), ((4, 3, 2), ANY)]),
    ("matmul_1d_2d", lambda a, b: a @ b, [((3,), ANY), ((3, 4), ANY)]),
    ("matmul_2d_1d", lambda a, b: a @ b, [((2, 3), ANY), ((3,), ANY)]),
    ("matmul_1d_1d", lambda a, b: a @ b, [((3,), ANY), ((3,), ANY)]),
    ("matmul_1d_3d", lambda a, b: a @ b, [((3,), ANY), ((2, 3, 4), ANY)]),
    ("matmul_3d_1d", lambda a, b: a @ b, [((2, 4, 3), ANY), ((3,), ANY)]),
    ("matmul_numpy_left", lambda b: np.ones((2, 3), dtype=b.dtype) @ b, [((3, 4), ANY)]),
    # basic indexing
    ("index_int", lambda a: a[1], [((3, 4), ANY)]),
    ("index_negative_int", lambda a: a[-1, -2], [((3, 4), ANY)]),
    ("index_slice", lambda a: a[1:3], [((4, 3), ANY)]),
    ("index_step_slices", lambda a: a[::2, 1:], [((4, 3), ANY)]),
    ("index_negative_step", lambda a: a[::-1, ::-2], [((4, 3), ANY)]),
    ("index_none", lambda a: a[None, :, None], [((4, 3), ANY)]),
    ("index_ellipsis", lambda a: a[..., 1], [((2, 3, 4), ANY)]),
    ("index_mixed_basic", lambda a: a[0, None, 1:, ...], [((2, 3, 4), ANY)]),
    # integer-array indexing, repeated indices add up
    ("index_int_array_repeats", lambda a: a[np.array([0, 2, 2, 0, 2])], [((3, 4), ANY)]),
    ("index_list_repeats", lambda a: a[[1, 1, 1]], [((3, 4), ANY)]),
    ("index_two_int_arrays", lambda a: a[np.array([0, 1, 1, 0]), np.array([2, 2, 0, 2])], [((3, 4), ANY)]),
    ("index_slice_and_int_array", lambda a: a[:, [1, 1, 0]], [((3, 4), ANY)]),
    ("index_int_tensor", lambda a: a[ma.tensor([2, 0, 2])], [((3, 4), ANY)]),
    ("index_boolean_mask", lambda a: a[MASK], [((2, 3), ANY)]),
    # shapes
    ("reshape_args", lambda a: a.reshape(3, 2) * np.arange(6, dtype=a.dtype).reshape(3, 2), [((2, 3), ANY)]),
    ("reshape_tuple", lambda a: a.reshape((6, 1)), [((2, 3), ANY)]),
    ("reshape_minus_one", lambda a: a.reshape(2, -1), [((2, 3, 2), ANY)]),
    ("transpose_no_axes", lambda a: a.transpose(), [((2, 3, 4), ANY)]),
    ("transpose_axes", lambda a: a.transpose(2, 0, 1), [((2, 3, 4), ANY)]),
    ("transpose_axes_tuple", lambda a: a.transpose((1, 0, 2)), [((2, 3, 4), ANY)]),
    ("transpose_negative_axes", lambda a: a.transpose(-1, 0, 1), [((2, 3, 4), ANY)]),
    ("T", lambda a: a.T, [((2, 3), ANY)]),
    ("T_then_matmul", lambda a, b: a.T @ b, [((3, 2), ANY), ((3, 4), ANY)]),
    ("flatten_method_default", lambda a: a.flatten(), [((2, 3, 2), ANY)]),
    ("flatten_method_start_dim", lambda a: a.flatten(1), [((2, 3, 2), ANY)]),
    ("F_flatten", lambda a: F.flatten(a), [((2, 3, 2), ANY)]),
    # reductions
    ("sum_all", lambda a: a.sum(), [((2, 3, 4), ANY)]),
    ("sum_axis", lambda a: a.sum(axis=1), [((2, 3, 4), ANY)]),
    ("sum_negative_axis", lambda a: a.sum(axis=-1), [((2, 3, 4), ANY)]),
    ("sum_tuple_axis", lambda a: a.sum(axis=(0, 2)), [((2, 3, 4), ANY)]),
    ("sum_keepdims", lambda a: a.sum(axis=1, keepdims=True), [((2, 3, 4), ANY)]),
    ("sum_all_keepdims", lambda a: a.sum(keepdims=True), [((2, 3), ANY)]),
    ("mean_all", lambda a: a.mean(), [((2, 3, 4), ANY)]),
    ("mean_axis", lambda a: a.mean(axis=0), [((2, 3, 4), ANY)]),
    ("mean_negative_axis", lambda a: a.mean(axis=-2), [((2, 3, 4), ANY)]),
    ("mean_tuple_axis", lambda a: a.mean(axis=(-1, 0)), [((2, 3, 4), ANY)]),
    ("mean_keepdims", lambda a: a.mean(axis=(1, 2), keepdims=True), [((2, 3, 4), ANY)]),
    ("max_all", lambda a: a.max(), [((2, 3, 4), DISTINCT)]),
    ("max_axis", lambda a: a.max(axis=1), [((2, 3, 4), DISTINCT)]),
    ("max_negative_axis", lambda a: a.max(axis=-1), [((2, 3, 4), DISTINCT)]),
    ("max_tuple_axis", lambda a: a.max(axis=(0, 2)), [((2, 3, 4), DISTINCT)]),
    ("max_keepdims", lambda a: a.max(axis=0, keepdims=True), [((2, 3, 4), DISTINCT)]),
    # elementwise
    ("exp", lambda a: a.exp(), [((2, 3), ANY)]),
    ("log", lambda a: a.log(), [((2, 3), POSITIVE)]),
    ("relu", lambda a: F.relu(a), [((3, 4), NONZERO)]),
    ("relu_method", lambda a: a.relu(), [((3, 4), NONZERO)]),
    # softmax family
    ("softmax_last_axis", lambda a: F.softmax(a), [((2, 3, 4), ANY)]),
    ("softmax_axis_0", lambda a: F.softmax(a, axis=0), [((2, 3, 4), ANY)]),
    ("softmax_axis_1", lambda a: F.softmax(a, axis=1), [((2, 3, 4), ANY)]),
    ("softmax_1d", lambda a: F.softmax(a), [((5,), ANY)]),
    ("log_softmax_last_axis", lambda a: F.log_softmax(a), [((2, 3, 4), ANY)]),
    ("log_softmax_axis_0", lambda a: F.log_softmax(a, axis=0), [((2, 3, 4), ANY)]),
    ("log_softmax_axis_1", lambda a: F.log_softmax(a, axis=1), [((2, 3, 4), ANY)]),
    ("log_softmax_negative_axis", lambda a: F.log_softmax(a, axis=-2), [((2, 3, 4), ANY)]),
    # devices
    ("to_cpu", lambda a: a.to("cpu") * 2.0, [((2, 3), ANY)]),
    ("cpu", lambda a: a.cpu(), [((2, 3), ANY)]),
    # a small network: every kind of node at once, a leaf used twice
    (
        "composite",
        lambda x, w, b: F.log_softmax((x @ w.T + b).relu() * 2.0 - x.mean(axis=1, keepdims=True), axis=1)
        + (x**2).sum(axis=1, keepdims=True) / w.max(),
        [((4, 3), ANY), ((5, 3), DISTINCT), ((5,), ANY)],
    ),
]

OP_IDS = [row[0] for row in OPS]


def op_inputs(specs, dtype=np.float64):
    return [make(shape, kind, seed=10 + i, dtype=dtype) for i, (shape, kind) in enumerate(specs)]


@pytest.mark.parametrize(("name", "fn", "specs"), OPS, ids=OP_IDS)
def test_op_gradient_matches_finite_differences(name, fn, specs):
    inputs = op_inputs(specs)
    if name == "composite":  # keep relu's inputs away from its kink
        out = inputs[0] @ inputs[1].T + inputs[2]
        assert np.abs(out.data).min() > 1e-3
    grad_output = np.random.default_rng(1).normal(size=fn(*inputs).shape)
    assert ma.gradcheck(fn, inputs, grad_output=grad_output) is True


@pytest.mark.parametrize(("name", "fn", "specs"), OPS, ids=OP_IDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def test_op_keeps_dtype_in_value_and_gradients(name, fn, specs, dtype):
    inputs = op_inputs(specs, dtype)
    out = fn(*inputs)
    assert out.dtype == dtype
    out.sum().backward()
    for x in inputs:
        assert x.grad is not None
        assert x.grad.dtype == dtype
        assert x.grad.shape == x.shape


# --------------------------------------------------------------------------- properties

BINARY = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
}


@settings(max_examples=40, deadline=None)
@given(
    shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, min_side=1, max_side=3),
    op=st.sampled_from(sorted(BINARY)),
    seed=st.integers(0, 2**31),
)
def test_broadcast_gradient_matches_finite_differences(shapes, op, seed):
    shape_a, shape_b = shapes.input_shapes
    a = make(shape_a, ANY, seed)
    b = make(shape_b, NONZERO if op == "div" else ANY, seed + 1)
    grad_output = np.random.default_rng(seed).normal(size=shapes.result_shape)
    assert ma.gradcheck(BINARY[op], (a, b), grad_output=grad_output)


@st.composite
def reduction_cases(draw):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=3))
    ndim = len(shape)
    axis = draw(st.one_of(st.none(), st.integers(-ndim, ndim - 1), hnp.valid_tuple_axes(ndim, min_size=1)))
    keepdims = draw(st.booleans())
    op = draw(st.sampled_from(["sum", "mean", "max"]))
    return shape, axis, keepdims, op


@settings(max_examples=40, deadline=None)
@given(case=reduction_cases(), seed=st.integers(0, 2**31))
def test_reduction_gradient_matches_finite_differences(case, seed):
    shape, axis, keepdims, op = case
    x = make(shape, DISTINCT if op == "max" else ANY, seed)

    def fn(t):
        return getattr(t, op)(axis=axis, keepdims=keepdims)

    grad_output = np.random.default_rng(seed).normal(size=fn(x).shape)
    assert ma.gradcheck(fn, x, grad_output=grad_output)


# --------------------------------------------------------------------------- the checker itself


class SquareWithDoubledGradient(ma.autograd.Function):
    """x * x whose backward is deliberately wrong: 4x instead of 2x."""

    def forward(self, x):
        self.x = x
        return x * x

    def backward(self, grad_output):
        return 2 * (2 * self.x * grad_output)


class ProductWithWrongSecondGradient(ma.autograd.Function):
    """a * b with the right gradient for a and a wrong one (2a instead of a) for b."""

    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, grad_output):
        return grad_output * self.b, 2 * grad_output * self.a


class TripleIgnoringGradOutput(ma.autograd.Function):
    """3x whose backward forgets to multiply by grad_output (right only for all-ones)."""

    def forward(self, x):
        return 3 * x

    def backward(self, grad_output):
        return np.full_like(grad_output, 3.0)


NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


def numbers_in(text):
    return [float(token) for token in re.findall(NUMBER, text)]


def test_gradcheck_returns_true_for_a_right_gradient():
    x = make((2, 3))
    assert ma.gradcheck(lambda t: t * t, [x]) is True
    assert ma.gradcheck(lambda t: t.exp(), x) is True  # a single Tensor is accepted too


def test_gradcheck_fails_on_a_doubled_backward():
    x = ma.tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    with pytest.raises(ma.GradcheckError):
        ma.gradcheck(lambda t: SquareWithDoubledGradient()(t), [x])


def test_gradcheck_error_names_input_index_and_both_values():
    a = ma.tensor(np.arange(1.0, 7.0).reshape(2, 3), requires_grad=True)
    b = ma.tensor(np.ones((2, 3)), requires_grad=True)
    # b's analytic gradient is 2a, the numeric one a: the worst mismatch is at a == 6, index (1, 2).
    with pytest.raises(ma.GradcheckError) as info:
        ma.gradcheck(lambda s, t: ProductWithWrongSecondGradient()(s, t), [a, b])
    message = str(info.value)
    assert re.search(r"input\D{0,4}1\b", message), message  # the second input, not the first
    assert re.search(r"[(\[]1,\s*2[)\]]", message), message  # the index
    values = numbers_in(message)
    assert any(abs(v - 12.0) < 1e-6 for v in values), message  # analytic
    assert any(abs(v - 6.0) < 1e-4 for v in values), message  # numeric


def test_gradcheck_error_names_first_input_of_a_single_input_function():
    x = ma.tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    with pytest.raises(ma.GradcheckError) as info:
        ma.gradcheck(lambda t: SquareWithDoubledGradient()(t), [x])
    message = str(info.value)
    assert re.search(r"input\D{0,4}0\b", message), message
    assert re.search(r"[(\[]2,?[)\]]", message), message  # worst at x == 3: analytic 12, numeric 6
    values = numbers_in(message)
    assert any(abs(v - 12.0) < 1e-6 for v in values), message
    assert any(abs(v - 6.0) < 1e-4 for v in values), message


def test_gradcheck_with_grad_output_weights_the_output():
    x = make((2, 3))
    ones = np.ones((2, 3))
    assert ma.gradcheck(lambda t: TripleIgnoringGradOutput()(t), [x], grad_output=ones)
    weights = np.random.default_rng(0).normal(size=(2, 3))
    with pytest.raises(ma.GradcheckError):
        ma.gradcheck(lambda t: TripleIgnoringGradOutput()(t), [x], grad_output=weights)
    # a right backward passes with the same weights, given as a Tensor too
    assert ma.gradcheck(lambda t: t * t * 3.0, [x], grad_output=weights)
    assert ma.gradcheck(lambda t: t * t * 3.0, [x], grad_output=ma.tensor(weights))


def test_gradcheck_rejects_grad_output_of_the_wrong_shape():
    x = make((2, 3))
    with pytest.raises(ValueError, match=r"\(3, 2\)"):
        ma.gradcheck(lambda t: t * 2.0, [x], grad_output=np.ones((3, 2)))


def test_gradcheck_leaves_inputs_grad_untouched():
    x = make((2, 3), seed=1)
    y = make((2, 3), seed=2)
    before = ma.tensor(np.full((2, 3), 7.0))
    x.grad = before
    data_x, data_y = x.data.copy(), y.data.copy()
    assert ma.gradcheck(lambda s, t: s * t, [x, y])
    assert x.grad is before
    np.testing.assert_array_equal(x.grad.data, np.full((2, 3), 7.0))
    assert y.grad is None
    # the perturbed elements are restored exactly
    np.testing.assert_array_equal(x.data, data_x)
    np.testing.assert_array_equal(y.data, data_y)


def test_gradcheck_leaves_inputs_grad_untouched_when_it_fails():
    x = ma.tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    with pytest.raises(ma.GradcheckError):
        ma.gradcheck(lambda t: SquareWithDoubledGradient()(t), [x])
    assert x.grad is None


def test_gradcheck_only_checks_inputs_that_require_grad():
    x = make((2, 3))
    constant = make((2, 3), requires_grad=False)
    assert ma.gradcheck(lambda s, c: s * c, [x, constant])
    assert constant.grad is None


def test_gradcheck_without_any_input_requiring_grad_is_an_error():
    constant = make((2, 3), requires_grad=False)
    with pytest.raises(ValueError):
        ma.gradcheck(lambda c: c * 2.0, [constant])


def test_gradcheck_warns_for_float32():
    x = ma.tensor(np.array([1.0, 2.0, 3.0], dtype=np.float32), requires_grad=True)
    with pytest.warns(UserWarning, match="float64"):
        assert ma.gradcheck(lambda t: t * 3.0, [x], eps=1e-2, atol=1e-2, rtol=1e-2)


def test_gradcheck_does_not_warn_for_float64():
    x = make((3,))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ma.gradcheck(lambda t: t * 3.0, [x])


class Interrupted(Exception):
    """What the fn below raises part-way through the finite differences."""


@settings(max_examples=40, deadline=None)
@given(
    values=hnp.arrays(np.float64, st.tuples(st.integers(1, 3), st.integers(1, 3)),
                      elements=st.floats(-4, 4, allow_nan=False)),
    failing_call=st.integers(2, 19),
)
def test_gradcheck_restores_every_input_when_fn_raises_part_way(values, failing_call):
    """Call 1 is the analytic pass; from call 2 on, an input element is perturbed by +-eps."""
    x = ma.tensor(values.copy(), requires_grad=True)
    y = ma.tensor(values[::-1].copy() + 1.0, requires_grad=True)
    calls = 0

    def fn(a, b):
        nonlocal calls
        calls += 1
        if calls == failing_call:
            raise Interrupted(f"call {calls}")
        return a * b

    try:
        ma.gradcheck(fn, [x, y])
    except Interrupted:
        pass  # only raised when fn is called at least failing_call times
    np.testing.assert_array_equal(x.data, values)
    np.testing.assert_array_equal(y.data, values[::-1] + 1.0)


def test_gradcheck_leaves_the_input_at_one_when_fn_raises_on_the_plus_eps_call():
    x = ma.tensor(np.array([1.0]), requires_grad=True)
    calls = []

    def fn(t):
        calls.append(float(t.data[0]))
        if len(calls) == 2:  # the first finite-difference call, at 1 + eps
            raise Interrupted("fails at 1 + eps")
        return t * t

    with pytest.raises(Interrupted):
        ma.gradcheck(fn, [x])
    assert calls == [1.0, 1.0 + 1e-6]
    assert x.data[0] == 1.0
