"""Laws the backward pass must obey on ANY graph, checked on random graphs (hypothesis).

A random program is a list of operations, each reading earlier values by
index, so graphs reuse values (leaves and intermediates alike) in every
operand order: ``h + h * h``, ``h * h + h``, ``(b + (a + b))``, and deeper
diamonds. Every operation keeps |value| <= 1 when its operands are, so
float64 finite differences stay accurate whatever graph hypothesis builds
(see ``OPERATIONS``).
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minialex as ma
import minialex.functional as F

# Shapes that all broadcast together (to at most (2, 3)), so any two values can meet.
SHAPES = [(), (3,), (1, 3), (2, 1), (2, 3)]


class _Minialex:
    """The calls whose spelling differs between minialex and PyTorch."""

    @staticmethod
    def softmax(x):
        return F.softmax(x, axis=-1)

    @staticmethod
    def mean(x, axis):
        return x.mean(axis=axis, keepdims=True)

    @staticmethod
    def reshape(x, shape):
        return x.reshape(*shape)


class _Torch:
    def __init__(self, torch):
        self.torch = torch

    def softmax(self, x):
        return self.torch.softmax(x, dim=-1)

    @staticmethod
    def mean(x, axis):
        return x.mean(dim=axis, keepdim=True)

    @staticmethod
    def reshape(x, shape):
        return x.reshape(shape)


# name -> (number of operands, function(lib, *operands)). Each maps [-1, 1] into [-1, 1].
OPERATIONS = {
    "add": (2, lambda lib, a, b: (a + b) * 0.5),
    "sub": (2, lambda lib, a, b: (a - b) * 0.5),
    "rsub": (2, lambda lib, a, b: 0.5 - (a + b) * 0.25),  # a scalar on the left of -
    "mul": (2, lambda lib, a, b: a * b),
    "div": (2, lambda lib, a, b: a / (b * b + 1.0)),
    "rdiv": (2, lambda lib, a, b: a * (1.0 / (1.0 + b * b))),  # a scalar on the left of /
    "neg": (1, lambda lib, a: -a),
    "square": (1, lambda lib, a: a**2),
    "cube": (1, lambda lib, a: a**3),
    "exp": (1, lambda lib, a: (a - 1.0).exp()),
    "log": (1, lambda lib, a: (a * a + 1.0).log()),
    # On a 0-d value these have no axis: a fresh copy instead (every step makes a new value).
    "softmax": (1, lambda lib, a: lib.softmax(a) if a.ndim >= 1 else a * 1.0),
    "mean0": (1, lambda lib, a: lib.mean(a, 0) if a.ndim >= 1 else a * 1.0),
    "mean_last": (1, lambda lib, a: lib.mean(a, -1) if a.ndim >= 1 else a * 1.0),
    "reshape_round_trip": (1, lambda lib, a: lib.reshape(lib.reshape(a, (-1,)), tuple(a.shape))),
}


# Updates of an earlier non-leaf value: value[target] = value[target] <op> value[source],
# written in place (`t *= 0.5; t += s * 0.5`, `t *= s`) or as a new value with the same
# arithmetic. Both keep |value| <= 1.
UPDATES = ("update_add", "update_mul")


@st.composite
def programs(draw, max_inputs=3, max_operations=8, updates=False):
    input_shapes = draw(st.lists(st.sampled_from(SHAPES), min_size=1, max_size=max_inputs))
    steps = []
    new_values = 0
    for _ in range(draw(st.integers(1, max_operations))):
        available = len(input_shapes) + new_values  # every earlier value, leaf or not
        if updates and new_values and draw(st.booleans()):
            target = draw(st.integers(len(input_shapes), available - 1))  # never a leaf
            steps.append((draw(st.sampled_from(UPDATES)), (target, draw(st.integers(0, available - 1)))))
            continue
        name = draw(st.sampled_from(sorted(OPERATIONS)))
        operands = tuple(draw(st.integers(0, available - 1)) for _ in range(OPERATIONS[name][0]))
        steps.append((name, operands))
        new_values += 1
    seed = draw(st.integers(0, 2**32 - 1))
    return input_shapes, steps, seed


def run_program(lib, steps, inputs, in_place=False):
    """The program's last value; the output adds every value nobody consumed, so all count.

    Updates change value[target] in place when ``in_place`` (and the result keeps its
    shape), else they rebind value[target] to a new value computed the same way.
    """
    values = list(inputs)
    consumed = set()
    for name, operands in steps:
        consumed.update(operands)
        if name not in UPDATES:
            values.append(OPERATIONS[name][1](lib, *(values[i] for i in operands)))
            continue
        target, source = operands
        fits = tuple(np.broadcast_shapes(values[target].shape, values[source].shape)) == tuple(values[target].shape)
        value = values[target]
        if name == "update_mul":
            factor = values[source]
            if in_place and fits:
                value *= factor
            else:
                value = value * factor
        else:
            if in_place and fits:
                value *= 0.5
            else:
                value = value * 0.5
            addend = (value if source == target else values[source]) * 0.5
            if in_place and fits:
                value += addend
            else:
                value = value + addend
        values[target] = value
    output = values[-1]
    for i, value in enumerate(values[:-1]):
        if i not in consumed:
            output = output + value
    return output


def make_inputs(input_shapes, seed):
    rng = np.random.default_rng(seed)
    return [rng.uniform(-1, 1, size=shape) for shape in input_shapes]


@settings(max_examples=400, deadline=None)
@given(programs(updates=True))
def test_gradients_of_random_graphs_equal_finite_differences(program):
    # float64 central differences with eps 1e-7. Truncation is eps^2 / 6 times the third
    # derivative: in the worst program here (eight nested cubes of a value near 1,
    # f = x^6561) f' ~ 7e3 and the third derivative ~ 3e11, an error ~ 5e-4 against the
    # allowed rtol * |f'| ~ 7e-2. Round-off is ~ 1e-16 * |f| / eps ~ 1e-8, as every
    # value stays within [-1, 1] (|f| < 10).
    input_shapes, steps, seed = program
    inputs = [ma.tensor(a, dtype="float64", requires_grad=True) for a in make_inputs(input_shapes, seed)]
    assert ma.gradcheck(lambda *xs: run_program(_Minialex, steps, xs), inputs, eps=1e-7, atol=1e-6, rtol=1e-5)


@settings(max_examples=150, deadline=None)
@given(programs())
def test_gradients_of_random_graphs_equal_pytorch(program):
    torch = pytest.importorskip("torch")
    input_shapes, steps, seed = program
    arrays = make_inputs(input_shapes, seed)
    ours = [ma.tensor(a, dtype="float64", requires_grad=True) for a in arrays]
    theirs = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in arrays]
    out = run_program(_Minialex, steps, ours)
    out_t = run_program(_Torch(torch), steps, theirs)
    grad_output = np.random.default_rng(seed + 1).uniform(-1, 1, size=out.shape)
    out.backward(grad_output)
    out_t.backward(torch.tensor(grad_output))
    # Both add the same float64 terms, maybe in another order or by another formula
    # (softmax's backward): far below 1e-10 of the largest gradient for chains of at
    # most 8 operations.
    np.testing.assert_allclose(out.numpy(), out_t.detach().numpy(), rtol=1e-12, atol=1e-12)
    for x, x_t in zip(ours, theirs):
        expected = np.zeros(x.shape) if x_t.grad is None else x_t.grad.numpy()
        got = np.zeros(x.shape) if x.grad is None else x.grad.numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12 * max(1.0, np.abs(expected).max()))


@settings(max_examples=300, deadline=None)
@given(programs(updates=True))
def test_in_place_updates_give_the_gradients_of_the_same_program_written_out_of_place(program):
    """An in-place update is recorded as its out-of-place operation on the old value, or it is
    refused with a clear RuntimeError: by backward when a Function saved the old value
    (version counter), at once when the value is a view of another tensor's data or has
    one (the engine does not rewrite the other side's graph, so it refuses rather than guess)."""
    input_shapes, steps, seed = program
    arrays = make_inputs(input_shapes, seed)

    def gradients(in_place):
        inputs = [ma.tensor(a, dtype="float64", requires_grad=True) for a in arrays]
        out = run_program(_Minialex, steps, inputs, in_place=in_place)
        out.backward(np.ones(out.shape))
        return out.numpy(), [np.zeros(x.shape) if x.grad is None else x.grad.numpy() for x in inputs]

    expected_out, expected_grads = gradients(in_place=False)
    try:
        out, grads = gradients(in_place=True)
    except RuntimeError as error:
        assert "modified by an in-place operation" in str(error) or "(reshape, transpose or indexing)" in str(error)
        return
    # The same float64 operations on the same values; only the order in which a reused
    # value's gradients are added may differ: a few ulps of the largest partial sum.
    np.testing.assert_allclose(out, expected_out, rtol=1e-12, atol=1e-12)
    for got, expected in zip(grads, expected_grads):
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12 * max(1.0, np.abs(expected).max()))


@settings(max_examples=100, deadline=None)
@given(programs(), st.floats(-3, 3), st.floats(-3, 3))
def test_backward_is_linear_in_the_upstream_gradient(program, alpha, beta):
    input_shapes, steps, seed = program
    arrays = make_inputs(input_shapes, seed)
    rng = np.random.default_rng(seed + 2)

    def gradients(grad_output):
        inputs = [ma.tensor(a, dtype="float64", requires_grad=True) for a in arrays]
        out = run_program(_Minialex, steps, inputs)
        out.backward(grad_output(out.shape))
        return [np.zeros(x.shape) if x.grad is None else x.grad.numpy() for x in inputs]

    shape_probe = run_program(_Minialex, steps, [ma.tensor(a, dtype="float64") for a in arrays]).shape
    g1, g2 = rng.normal(size=shape_probe), rng.normal(size=shape_probe)
    combined = gradients(lambda shape: alpha * g1 + beta * g2)
    for got, a, b in zip(combined, gradients(lambda shape: g1), gradients(lambda shape: g2)):
        # Exact linear maps in float64: error ~ ulps of |alpha a| + |beta b|.
        np.testing.assert_allclose(got, alpha * a + beta * b, rtol=1e-9, atol=1e-9 * (np.abs(a).max(initial=1) + np.abs(b).max(initial=1)))


# --------------------------------------------------------------------------- adjoint pairs
# A linear map L's backward is its adjoint: <L x, y> == <x, L^T y> for all x, y.

LINEAR_MAPS = {
    "reshape": ((2, 3, 4), lambda x: x.reshape(4, 6)),
    "transpose": ((2, 3, 4), lambda x: x.transpose(2, 0, 1)),
    "T": ((3, 5), lambda x: x.T),
    "basic_index": ((4, 5), lambda x: x[1:, ::2]),
    "index_with_repeats": ((5, 3), lambda x: x[np.array([0, 2, 2, 4, 0])]),
    "boolean_index": ((6,), lambda x: x[np.array([True, False, True, True, False, True])]),
    "sum_axis": ((2, 3, 4), lambda x: x.sum(axis=1)),
    "mean_axes": ((2, 3, 4), lambda x: x.mean(axis=(0, 2), keepdims=True)),
    "broadcast_add": ((1, 3), lambda x: x + np.zeros((4, 3))),
    "flatten": ((2, 3, 4), lambda x: x.flatten(1)),
    "matmul_left": ((3, 4), lambda x: np.arange(6.0).reshape(2, 3) @ x),
    "conv2d_input": ((1, 2, 5, 5), lambda x: F.conv2d(x, ma.tensor(np.linspace(-1, 1, 36).reshape(2, 2, 3, 3)), padding=1, stride=2)),
}


@pytest.mark.parametrize("name", sorted(LINEAR_MAPS))
@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_backward_of_a_linear_map_is_its_adjoint(name, seed):
    shape, linear_map = LINEAR_MAPS[name]
    rng = np.random.default_rng(seed)
    x = ma.tensor(rng.normal(size=shape), dtype="float64", requires_grad=True)
    out = linear_map(x)
    y = rng.normal(size=out.shape)
    out.backward(y)
    forward_side = float((out.numpy() * y).sum())
    backward_side = float((x.numpy() * x.grad.numpy()).sum())
    # Two float64 sums of at most a few hundred products of N(0, 1) numbers.
    assert forward_side == pytest.approx(backward_side, rel=1e-10, abs=1e-10)


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(SHAPES), st.sampled_from(SHAPES), st.integers(0, 2**32 - 1))
def test_gradient_of_a_broadcast_operand_is_summed_over_the_broadcast_axes(shape_a, shape_b, seed):
    rng = np.random.default_rng(seed)
    a_np, b_np = rng.normal(size=shape_a), rng.normal(size=shape_b)
    a = ma.tensor(a_np, dtype="float64", requires_grad=True)
    b = ma.tensor(b_np, dtype="float64", requires_grad=True)
    out = a * b
    grad_output = rng.normal(size=out.shape)
    out.backward(grad_output)
    full = np.broadcast_shapes(shape_a, shape_b)
    # d(a*b)/da stretched to the output's shape, then summed over the leading axes
    # a did not have and over the axes where a had size 1 and the output more.
    stretched = grad_output * np.broadcast_to(b_np, full)
    leading = len(full) - len(shape_a)
    expected_a = stretched.sum(axis=tuple(range(leading)))
    stretched_axes = tuple(i for i, n in enumerate(shape_a) if n == 1 and full[leading + i] != 1)
    expected_a = expected_a.sum(axis=stretched_axes, keepdims=True)
    np.testing.assert_allclose(a.grad.numpy(), expected_a.reshape(shape_a), rtol=1e-12, atol=1e-12)
    assert b.grad.shape == shape_b


# --------------------------------------------------------------------------- the reported cases


@pytest.mark.parametrize(
    "expression, expected",
    [
        (lambda h: h + h * h, [21.0, 39.0]),  # d/dx of h + h^2 with h = 3x: 3 (1 + 2h)
        (lambda h: h * h + h, [21.0, 39.0]),
        (lambda h: h * h + (h + h * h), [39.0, 75.0]),  # 3 (1 + 4h)
    ],
    ids=["h + h*h", "h*h + h", "h*h + (h + h*h)"],
)
def test_a_reused_non_leaf_gets_the_gradient_of_every_use_whatever_the_operand_order(expression, expected):
    x = ma.tensor([1.0, 2.0], dtype="float64", requires_grad=True)
    h = x * 3.0
    expression(h).sum().backward()
    assert x.grad.numpy().tolist() == expected


def test_residual_style_sum_of_a_value_and_a_function_of_it():
    a = ma.tensor(1.0, dtype="float64", requires_grad=True)
    b = a + 1
    (b + (a + b)).backward()
    assert a.grad.item() == 3.0

    x = ma.tensor([1.0, 2.0], dtype="float64", requires_grad=True)
    h = x * 3.0
    (h + h * h).sum().backward()
    assert x.grad.numpy().tolist() == [21.0, 39.0]
