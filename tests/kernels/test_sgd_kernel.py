"""The in-place SGD kernel ``sgd_update`` against the formula, one call at a time."""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minialex.kernels import sgd as sgd_kernel
from minialex.kernels import threads
from minialex.kernels.sgd import sgd_update

COMBINATIONS = [
    (m, wd, nesterov)
    for m, wd, nesterov in itertools.product([0.0, 0.9], [0.0, 0.1], [False, True])
    if not (nesterov and m == 0.0)
]


def formula(param, grad, buf, lr, momentum, weight_decay, nesterov):
    """Returns (new param, new buffer or None), without touching the inputs."""
    g = grad + weight_decay * param
    if momentum:
        buf = g.copy() if buf is None else momentum * buf + g
        g = g + momentum * buf if nesterov else buf
    return param - lr * g, buf


@pytest.mark.parametrize("momentum,weight_decay,nesterov", COMBINATIONS)
def test_repeated_calls_equal_the_formula(momentum, weight_decay, nesterov):
    rng = np.random.default_rng(0)
    param = rng.standard_normal((4, 5))
    scratch = np.empty_like(param)
    expected_param, expected_buf = param.copy(), None
    buf = None
    for _ in range(5):
        grad = rng.standard_normal(param.shape)
        expected_param, expected_buf = formula(expected_param, grad, expected_buf, 0.07, momentum, weight_decay, nesterov)
        buf = sgd_update(param, grad, buf, scratch, 0.07, momentum, weight_decay, nesterov)
        np.testing.assert_allclose(param, expected_param, rtol=1e-13, atol=1e-15)
        if momentum:
            np.testing.assert_allclose(buf, expected_buf, rtol=1e-13, atol=1e-15)
        else:
            assert buf is None


@pytest.mark.parametrize("momentum,weight_decay,nesterov", COMBINATIONS)
def test_param_and_buffer_are_updated_in_place_and_grad_is_left_alone(momentum, weight_decay, nesterov):
    rng = np.random.default_rng(1)
    param = rng.standard_normal(7).astype(np.float32)
    grad = rng.standard_normal(7).astype(np.float32)
    grad_before = grad.copy()
    scratch = np.empty_like(param)
    param_id = id(param)
    buf = sgd_update(param, grad, None, scratch, 0.1, momentum, weight_decay, nesterov)
    if momentum:
        # The first buffer is its own array, not a view of the scratch that the next call overwrites.
        assert not np.shares_memory(buf, scratch)
        assert not np.shares_memory(buf, grad) and not np.shares_memory(buf, param)
        again = sgd_update(param, grad, buf, scratch, 0.1, momentum, weight_decay, nesterov)
        assert again is buf
    assert id(param) == param_id and param.dtype == np.float32
    np.testing.assert_array_equal(grad, grad_before)


def test_first_momentum_buffer_is_the_decayed_gradient():
    param = np.array([1.0, -2.0])
    grad = np.array([0.5, 0.25])
    buf = sgd_update(param, grad, None, np.empty(2), lr=0.1, momentum=0.9, weight_decay=0.1)
    np.testing.assert_allclose(buf, [0.5 + 0.1, 0.25 - 0.2], rtol=1e-15)
    np.testing.assert_allclose(param, [1.0 - 0.1 * 0.6, -2.0 - 0.1 * 0.05], rtol=1e-15)


def test_nesterov_step_looks_ahead_by_momentum_times_buffer():
    param = np.array([0.0])
    buf = np.array([2.0])
    sgd_update(param, np.array([1.0]), buf, np.empty(1), lr=0.5, momentum=0.5, nesterov=True)
    # buf = 0.5 * 2 + 1 = 2; g = 1 + 0.5 * 2 = 2; p = 0 - 0.5 * 2
    np.testing.assert_allclose(buf, [2.0])
    np.testing.assert_allclose(param, [-1.0])


def test_zero_learning_rate_changes_nothing_but_the_buffer():
    param = np.array([3.0, 4.0])
    buf = sgd_update(param, np.array([1.0, 1.0]), None, np.empty(2), lr=0.0, momentum=0.9)
    np.testing.assert_array_equal(param, [3.0, 4.0])
    np.testing.assert_array_equal(buf, [1.0, 1.0])


def test_works_on_a_scratch_view_of_a_larger_buffer():
    """The optimiser hands each parameter a reshaped slice of one shared scratch array."""
    rng = np.random.default_rng(2)
    param = rng.standard_normal((3, 2))
    grad = rng.standard_normal((3, 2))
    shared = np.empty(50)
    expected, _ = formula(param.copy(), grad, None, 0.2, 0.9, 0.1, True)
    sgd_update(param, grad, None, shared[:6].reshape(3, 2), 0.2, 0.9, 0.1, True)
    np.testing.assert_allclose(param, expected, rtol=1e-14)


@settings(max_examples=60, deadline=None)
@given(size=st.integers(1, 60), chunk=st.integers(1, 16), momentum=st.sampled_from([0.0, 0.9]),
       weight_decay=st.sampled_from([0.0, 5e-4]), nesterov=st.booleans(), first_step=st.booleans(),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**32 - 1), count=st.integers(1, 3))
def test_the_cpu_update_in_chunks_equals_the_whole_array_update_bit_for_bit(
        size, chunk, momentum, weight_decay, nesterov, first_step, dtype, seed, count):
    """Chunk by chunk (the speed-up, its chunks split over ``count`` threads) or all at once (the clear
    version): every element sees the same operations in the same order, so the parameters and buffers
    are identical, chunk edges included."""
    nesterov = nesterov and momentum > 0
    rng = np.random.default_rng(seed)
    param, grad, buf = (rng.standard_normal((size, 3)).astype(dtype) for _ in range(3))
    buf = None if first_step or not momentum else buf
    results = []
    for in_chunks in (True, False):
        p, b = param.copy(), None if buf is None else buf.copy()
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(sgd_kernel, "CHUNK", chunk)
            patch.setattr(threads, "MIN_ELEMENTS_PER_THREAD", 1)  # every chunk is worth a thread
            scratch = None if in_chunks else np.empty_like(p)
            with threads.num_threads(count):
                b = sgd_update(p, grad, b, scratch, 0.07, momentum, weight_decay, nesterov,
                               in_chunks_on_cpu=in_chunks)
        results.append((p, b))
    (p_chunks, b_chunks), (p_whole, b_whole) = results
    np.testing.assert_array_equal(p_chunks, p_whole)
    assert (b_chunks is None) == (b_whole is None)
    if b_whole is not None:
        np.testing.assert_array_equal(b_chunks, b_whole)


def test_the_update_runs_in_chunks_by_default_on_large_contiguous_arrays_and_needs_no_scratch(monkeypatch):
    calls = []
    monkeypatch.setattr(sgd_kernel, "_sgd_update_in_chunks", lambda *args: calls.append(args) or args[2])
    big = np.zeros(sgd_kernel.CHUNK + 1, np.float32)
    assert not sgd_kernel.needs_scratch(big, big, None)
    sgd_update(big, big, None, None, 0.1, 0.9)
    assert len(calls) == 1
    small, strided = np.zeros(3, np.float32), np.zeros((sgd_kernel.CHUNK + 1, 2), np.float32)[:, 0]
    assert sgd_kernel.needs_scratch(small, small, None) and sgd_kernel.needs_scratch(strided, strided, None)
    sgd_update(small, small, None, np.empty(3, np.float32), 0.1, 0.9)
    assert len(calls) == 1
