"""The kernels' CPU work split over threads: the ranges, the switch, and the same results bit for bit."""

import os
import select
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minialex.kernels import activation, conv, lrn, pool, threads


@pytest.fixture
def split_everything(monkeypatch):
    """Split even the tiny arrays of a test: every item is worth a thread."""
    monkeypatch.setattr(threads, "MIN_ELEMENTS_PER_THREAD", 1)


# --------------------------------------------------------------------------- split itself


@pytest.mark.parametrize("total, count", [(1, 3), (2, 3), (7, 3), (16, 2), (5, 1)])
def test_split_covers_every_item_once_in_consecutive_ranges(total, count, split_everything):
    ranges, callers = [], set()

    def record(start, stop):
        ranges.append((start, stop))
        callers.add(threading.current_thread().name)

    with threads.num_threads(count):
        threads.split(record, total)
    ranges.sort()
    assert ranges[0][0] == 0 and ranges[-1][1] == total
    assert all(stop > start for start, stop in ranges)
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    assert len(ranges) == min(count, total)
    assert threading.current_thread().name in callers  # the caller takes a range itself


def test_one_thread_a_small_job_a_gpu_array_or_a_nested_split_run_inline(split_everything):
    calls = []
    with threads.num_threads(1):
        threads.split(lambda a, b: calls.append((a, b)), 8)
    threads.split(lambda a, b: calls.append((a, b)), 8, array=[1, 2])  # not a NumPy array: e.g. CuPy
    assert calls == [(0, 8), (0, 8)]

    inner = []

    def outer(start, stop):
        threads.split(lambda a, b: inner.append((a, b)), 4)

    with threads.num_threads(2):
        threads.split(outer, 2)
        # Each outer range splits its own 4 items, wherever it runs: 8 items covered in all.
        assert sorted(b - a for a, b in inner) in ([2, 2, 4], [2, 2, 2, 2], [4, 4])
        assert sum(b - a for a, b in inner) == 8
        # On a pool thread a split runs inline: no thread waits for a range queued behind itself.
        on_pool = []
        threads._executor(1).submit(threads.split, lambda a, b: on_pool.append((a, b)), 4).result()
        assert on_pool == [(0, 4)]


def test_small_work_is_not_split():
    calls = []
    with threads.num_threads(4):
        threads.split(lambda a, b: calls.append((a, b)), 4, elements_per_item=10)
    assert calls == [(0, 4)]


def test_an_exception_in_a_range_is_raised_after_every_range_finished(split_everything):
    finished = []

    def work(start, stop):
        if start > 0:
            raise ValueError(f"range {start}")
        threading.Event().wait(0.05)
        finished.append(start)

    with threads.num_threads(2), pytest.raises(ValueError, match="range"):
        threads.split(work, 2)
    assert finished == [0]


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "2"])
def test_the_thread_count_must_be_a_positive_int(bad):
    before = threads.get_num_threads()
    with pytest.raises(ValueError, match="positive int"):
        threads.set_num_threads(bad)
    assert threads.get_num_threads() == before


def test_num_threads_restores_the_setting_even_after_an_error():
    before = threads.get_num_threads()
    with pytest.raises(RuntimeError), threads.num_threads(1):
        assert threads.get_num_threads() == 1
        raise RuntimeError
    assert threads.get_num_threads() == before


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_a_forked_child_splits_on_a_pool_of_its_own():
    """A child forked after the pool started has none of its threads: it must not queue work for them."""
    with threads.num_threads(2):
        threads.split(lambda a, b: None, 2, elements_per_item=threads.MIN_ELEMENTS_PER_THREAD)  # the pool starts
        read, write = os.pipe()
        child = os.fork()
        if child == 0:  # the child: split again, report, leave without running pytest's teardown
            try:
                done = []
                threads.split(lambda a, b: done.append((a, b)), 2, elements_per_item=threads.MIN_ELEMENTS_PER_THREAD)
                os.write(write, repr(sorted(done)).encode())
            finally:
                os._exit(0)
        os.close(write)
        ready, _, _ = select.select([read], [], [], 60)
        if not ready:  # the child hangs on work queued for threads it does not have
            os.kill(child, signal.SIGKILL)
        reported = os.read(read, 100).decode() if ready else "no answer"
        os.close(read)
        os.waitpid(child, 0)
    assert reported == "[(0, 1), (1, 2)]"


# --------------------------------------------------------------------------- the kernels: same bits with any split


def _both(function, *args, **kwargs):
    """function's result on one thread, and split into up to three ranges even for tiny arrays."""
    with threads.num_threads(1):
        one = function(*args, **kwargs)
    kept = threads.MIN_ELEMENTS_PER_THREAD
    threads.MIN_ELEMENTS_PER_THREAD = 1
    try:
        with threads.num_threads(3):
            many = function(*args, **kwargs)
    finally:
        threads.MIN_ELEMENTS_PER_THREAD = kept
    return one, many


def _assert_same(one, many):
    if isinstance(one, (tuple, list)):
        for a, b in zip(one, many):
            _assert_same(a, b)
    elif isinstance(one, np.ndarray):
        assert one.dtype == many.dtype and one.shape == many.shape and many.flags.c_contiguous == one.flags.c_contiguous
        np.testing.assert_array_equal(one, many)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 5), c=st.integers(1, 6), hw=st.integers(3, 9), seed=st.integers(0, 2**32 - 1),
       dtype=st.sampled_from([np.float32, np.float64]))
def test_elementwise_kernels_give_the_same_bits_on_any_number_of_threads(n, c, hw, seed, dtype):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, hw, hw)).astype(dtype)
    dout = rng.standard_normal(x.shape).astype(dtype)
    one, many = _both(lrn.local_response_norm_forward, x, 3, 1e-2, 0.75, 2.0)
    _assert_same(one[0], many[0])
    _assert_same(one[1][:3], many[1][:3])
    _assert_same(*_both(lrn.local_response_norm_backward, dout, one[1]))
    one, many = _both(activation.relu_forward, x)
    _assert_same(one, many)
    _assert_same(*_both(activation.relu_backward, dout, one[1]))
    one, many = _both(pool.max_pool2d_forward, x, 3, 2, 1)
    _assert_same(one[0], many[0])
    _assert_same(one[1].argmax, many[1].argmax)
    _assert_same(*_both(pool.max_pool2d_backward, rng.standard_normal(one[0].shape).astype(dtype), one[1]))


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 5), groups=st.sampled_from([1, 2]), hw=st.integers(5, 11), k=st.sampled_from([1, 3, 5]),
       stride=st.sampled_from([1, 2, 3]), padding=st.integers(0, 2), seed=st.integers(0, 2**32 - 1))
def test_convolution_gives_the_same_bits_on_any_number_of_threads(n, groups, hw, k, stride, padding, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 2 * groups, hw, hw))
    weight = rng.standard_normal((2 * groups, 2, k, k))
    bias = rng.standard_normal(2 * groups)
    _assert_same(*_both(conv.im2col, x, k, k, stride, padding))
    _assert_same(*_both(conv.im2col, x, k, k, stride, padding, phases_on_cpu=False))
    one, many = _both(conv.conv2d_forward, x, weight, bias, stride, padding, groups)
    _assert_same(one[0], many[0])
    dout = rng.standard_normal(one[0].shape)
    _assert_same(*_both(conv.col2im, one[1]["col"], x.shape, k, k, (stride, stride), (padding, padding)))
    for wide in (True, False):
        _assert_same(*_both(conv.conv2d_backward, dout, one[1], wide_rows_on_cpu=wide))


# --------------------------------------------------------------------------- OpenBLAS's idle threads


def _timeout_seen(code, **env):
    environment = {key: value for key, value in os.environ.items() if key != "OPENBLAS_THREAD_TIMEOUT"}
    environment.update(env)
    result = subprocess.run([sys.executable, "-c", code + "; import os; print(os.environ.get('OPENBLAS_THREAD_TIMEOUT'))"],
                            capture_output=True, text=True, env=environment, check=True)
    return result.stdout.strip()


def test_importing_minialex_before_numpy_shortens_openblas_spinning_unless_the_user_set_it():
    assert _timeout_seen("import minialex") == "4"
    assert _timeout_seen("import minialex", OPENBLAS_THREAD_TIMEOUT="10") == "10"
    assert _timeout_seen("import numpy, minialex") == "None"  # too late to matter: left alone
