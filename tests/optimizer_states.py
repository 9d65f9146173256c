"""Optimiser states in tests: a deep copy of ``state_dict()``, exact equality of two copies, and
the hyper-parameter values every optimiser must refuse."""

import math
import tracemalloc

import numpy as np

# Not finite, negative, or not a number at all: refused by every optimiser, in a group or a load.
BAD_VALUES = [math.nan, math.inf, -math.inf, -1.0, "0.1", None]


def snapshot(optimizer):
    """(param_groups, {index: {name: a copy of the array}}) of ``optimizer.state_dict()``."""
    state = optimizer.state_dict()
    return state["param_groups"], {i: {k: np.copy(v) for k, v in s.items()} for i, s in state["state"].items()}


def assert_same_snapshot(a, b):
    assert a[0] == b[0]
    assert a[1].keys() == b[1].keys()
    for i in a[1]:
        assert a[1][i].keys() == b[1][i].keys()
        for name in a[1][i]:
            np.testing.assert_array_equal(a[1][i][name], b[1][i][name])


def bytes_allocated_by(function):
    """The peak of new Python-visible allocations (NumPy arrays included) while ``function()`` runs."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        function()
        return tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
