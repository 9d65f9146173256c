"""Grad mode per thread, no_grad as context manager and decorator, and the Python/NumPy protocols."""

import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minialex as ma
from minialex import nn

# --------------------------------------------------------------------------- grad mode


def test_no_grad_in_one_thread_does_not_cut_another_threads_graph():
    layer = nn.Linear(3, 2)
    other_thread_inside = threading.Event()
    main_thread_done = threading.Event()

    def evaluate_elsewhere():
        with ma.no_grad():
            other_thread_inside.set()
            main_thread_done.wait(timeout=10)

    worker = threading.Thread(target=evaluate_elsewhere)
    worker.start()
    assert other_thread_inside.wait(timeout=10)
    try:
        assert ma.is_grad_enabled()
        loss = layer(ma.tensor(np.ones((2, 3), np.float32))).sum()
    finally:
        main_thread_done.set()
        worker.join()
    loss.backward()
    assert layer.weight.grad is not None and layer.bias.grad is not None


def test_a_new_thread_starts_with_grad_enabled():
    seen = []
    with ma.no_grad():
        thread = threading.Thread(target=lambda: seen.append(ma.is_grad_enabled()))
        thread.start()
        thread.join()
    assert seen == [True]


def test_no_grad_decorator_with_and_without_parentheses():
    @ma.no_grad
    def bare(x):
        return x * 2.0, ma.is_grad_enabled()

    @ma.no_grad()
    def called(x):
        return x * 2.0, ma.is_grad_enabled()

    x = ma.tensor([1.0], requires_grad=True)
    for function in (bare, called):
        y, enabled = function(x)
        assert enabled is False and not y.requires_grad
    assert ma.is_grad_enabled()
    assert bare.__name__ == "bare"


def test_no_grad_on_a_generator_function_covers_its_body_but_not_the_caller():
    @ma.no_grad()
    def batches(x):
        for _ in range(3):
            received = yield x * 2.0, ma.is_grad_enabled()
            assert received is None or received == "ping"
        return "finished"

    x = ma.tensor([1.0], requires_grad=True)
    generator = batches(x)
    results = []
    for y, enabled in generator:
        results.append((y.requires_grad, enabled, ma.is_grad_enabled()))
    assert results == [(False, False, True)] * 3

    generator = batches(x)
    next(generator)
    generator.send("ping")
    with pytest.raises(StopIteration) as stop:
        generator.send(None)
        generator.send(None)
    assert stop.value.value == "finished"
    assert ma.is_grad_enabled()


def test_enable_grad_inside_no_grad_records_again():
    x = ma.tensor([1.0], requires_grad=True)
    with ma.no_grad():
        with ma.enable_grad():
            assert (x * 2.0).requires_grad
        assert not (x * 2.0).requires_grad


def test_no_grad_restores_the_mode_after_an_exception():
    with pytest.raises(ValueError), ma.no_grad():
        raise ValueError("inside")
    assert ma.is_grad_enabled()


def test_no_grad_rejects_a_non_callable_argument():
    with pytest.raises(TypeError, match="no_grad"):
        ma.no_grad(3)


# --------------------------------------------------------------------------- protocols

COMPARISONS = {
    "==": (lambda a, b: a == b, np.equal),
    "!=": (lambda a, b: a != b, np.not_equal),
    "<": (lambda a, b: a < b, np.less),
    "<=": (lambda a, b: a <= b, np.less_equal),
    ">": (lambda a, b: a > b, np.greater),
    ">=": (lambda a, b: a >= b, np.greater_equal),
}


@settings(max_examples=80, deadline=None)
@given(
    st.sampled_from(sorted(COMPARISONS)),
    st.sampled_from(["tensor", "scalar", "array"]),
    st.integers(0, 2**32 - 1),
)
def test_comparisons_are_elementwise_boolean_tensors_equal_to_numpy(operator, other_kind, seed):
    rng = np.random.default_rng(seed)
    a_np = rng.integers(-2, 3, size=(2, 3)).astype(np.float32)
    b_np = rng.integers(-2, 3, size=(3,)).astype(np.float32)
    other = {"tensor": ma.tensor(b_np), "scalar": 1.0, "array": b_np}[other_kind]
    compare, reference = COMPARISONS[operator]
    result = compare(ma.tensor(a_np, requires_grad=True), other)
    assert isinstance(result, ma.Tensor) and result.dtype == np.bool_ and not result.requires_grad
    expected = reference(a_np, b_np if other_kind != "scalar" else 1.0)
    np.testing.assert_array_equal(result.numpy(), expected)


def test_equality_with_a_float_compares_values_not_identity():
    t = ma.tensor([1.0, 2.0])
    assert (t == 1.0).numpy().tolist() == [True, False]
    assert bool(ma.tensor(1.0) == 1.0)


def test_comparison_of_mismatched_shapes_names_both():
    with pytest.raises(ValueError, match=r"\(2,\) and \(3,\)"):
        ma.tensor([1.0, 2.0]) < ma.tensor([1.0, 2.0, 3.0])


def test_bool_of_one_element_tensor_is_its_value_and_ambiguous_otherwise():
    assert bool(ma.tensor([0.0])) is False
    assert bool(ma.tensor(2.0)) is True
    assert bool(ma.tensor([[3]])) is True
    with pytest.raises(RuntimeError, match="ambiguous"):
        bool(ma.tensor([1.0, 2.0]))


def test_float_and_int_of_one_element_tensor():
    assert float(ma.tensor([2.5])) == 2.5
    assert int(ma.tensor(3)) == 3


def test_numpy_asarray_gives_the_data_not_an_object_array():
    data = np.arange(6, dtype=np.float32).reshape(2, 3)
    array = np.asarray(ma.tensor(data))
    assert array.dtype == np.float32 and array.shape == (2, 3)
    np.testing.assert_array_equal(array, data)
    assert np.asarray(ma.tensor(data), dtype=np.float64).dtype == np.float64


def test_tensors_hash_by_identity_so_sets_and_dicts_work():
    a, b = ma.tensor([1.0]), ma.tensor([1.0])
    assert len({a, b}) == 2 and {a: 1}[a] == 1


def test_numpy_array_on_the_left_of_an_operator_still_gives_a_tensor():
    t = ma.tensor([1.0, 2.0], requires_grad=True)
    out = np.array([3.0, 4.0], np.float32) * t
    assert isinstance(out, ma.Tensor) and out.requires_grad
    assert isinstance(np.ones(2, np.float32) == t, ma.Tensor)
