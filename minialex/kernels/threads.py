"""Splitting a kernel's NumPy work over the CPU's cores.

NumPy runs each operation on one core, but it lets go of Python's GIL inside
the loop of a large operation. So two threads that each take half of the
batch really do run at once: on the paper AlexNet's batch-16 arrays, LRN's
forward pass takes about half its one-thread time on two cores, a ReLU or
a strided copy about 0.6. (The GEMMs are already spread over the cores by
the BLAS; this is for everything else: copies, sums, comparisons.)

A kernel that splits its work calls ``split(function, total)``, which calls
``function(start, stop)`` on consecutive ranges covering ``range(total)``
(usually the images of the batch), one range per thread, and returns when
all are done. Each range writes its own slice of preallocated outputs, and
no element's arithmetic depends on how the batch is cut, so the result is
the same bit for bit with any number of threads (the tests check it).

``set_num_threads(1)`` (or ``num_threads(1)`` for a block) turns the
splitting off: every kernel then runs as one call, as it reads. The default
is one thread per core this process may use.
"""

import contextlib
import numbers
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

# Below this many elements of work per thread, handing the work to another
# thread costs more than it saves (tens of microseconds).
MIN_ELEMENTS_PER_THREAD = 1 << 16


def available_cores():
    """The cores this process may run on (its CPU affinity where the OS tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


_state = {"threads": available_cores(), "executor": None}
_lock = threading.Lock()
_inside = threading.local()  # set in the pool's threads: a split inside a split runs inline


def _check_count(value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"the number of threads must be a positive int, got {value!r}")
    return int(value)


def get_num_threads():
    """How many threads a kernel's CPU work is split over (1: not split)."""
    return _state["threads"]


def set_num_threads(threads):
    """Split the kernels' CPU work over ``threads`` threads from now on (1 turns the splitting off)."""
    _state["threads"] = _check_count(threads)


@contextlib.contextmanager
def num_threads(threads):
    """``with num_threads(1): ...`` runs the block with that many threads, then restores the setting."""
    previous = get_num_threads()
    set_num_threads(threads)
    try:
        yield
    finally:
        _state["threads"] = previous


def _executor(workers):
    with _lock:
        executor = _state["executor"]
        if executor is None or executor._max_workers < workers:
            # Grown, never shrunk; an older pool finishes its queue and goes.
            executor = _state["executor"] = ThreadPoolExecutor(
                max_workers=workers, thread_name_prefix="minialex-kernel", initializer=_mark_inside)
        return executor


def _mark_inside():
    _inside.active = True


def _forget_pool_after_fork():
    # A forked child has only the thread that forked: the pool's threads are
    # not there, and work queued for them would never run. It starts a new pool.
    _state["executor"] = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_after_fork)


def pieces(total, elements_per_item):
    """How many ranges ``split`` cuts ``total`` items into: at most one per thread, each worth the hand-off."""
    threads = get_num_threads()
    if threads == 1 or getattr(_inside, "active", False):
        return 1
    worth = (total * elements_per_item) // MIN_ELEMENTS_PER_THREAD
    return max(1, min(threads, total, worth))


def split(function, total, elements_per_item=MIN_ELEMENTS_PER_THREAD, array=None):
    """Call ``function(start, stop)`` on consecutive ranges covering range(total), at once on the cores.

    ``elements_per_item`` (the array elements one item's work touches) decides
    whether a split is worth it. With one range (one thread set, a small job,
    a call from inside a split, or an ``array`` that is not a NumPy array:
    a GPU has its own parallelism, and CuPy's current stream belongs to the
    calling thread) this is just ``function(0, total)`` on the calling thread. The caller's thread takes the first range itself. An
    exception in any range is raised here, after every range has finished.
    """
    count = 1 if array is not None and not isinstance(array, np.ndarray) else pieces(total, elements_per_item)
    if count == 1:
        function(0, total)
        return
    bounds = [total * index // count for index in range(count + 1)]
    futures = [_executor(count - 1).submit(function, bounds[index], bounds[index + 1]) for index in range(1, count)]
    try:
        function(bounds[0], bounds[1])
    finally:
        for future in futures:
            future.exception()  # wait for every range, even when one failed
    for future in futures:
        future.result()
