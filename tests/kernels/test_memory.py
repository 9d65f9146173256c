"""Keeping freed memory for the next step: the switch, the import-time default, and the page faults it saves."""

import os
import subprocess
import sys

import pytest

from minialex.kernels import memory

on_glibc = pytest.mark.skipif(memory._glibc_mallopt() is None, reason="the C library is not glibc")


@pytest.fixture
def restore_setting():
    kept = memory.keeping_freed_memory()
    yield
    memory.keep_freed_memory(kept)


# Run in a fresh process: once a large block has gone back to a process's heap,
# later allocations find it there even with the thresholds lowered again.
SECOND_LARGE_ARRAY = """
import resource
import numpy as np
import minialex
first = np.empty(64 << 18, np.float32)  # 64 MiB, touched, freed
first.fill(1.0)
del first
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
second = np.empty(64 << 18, np.float32)
second.fill(1.0)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults_of_a_second_large_array(keep):
    """Page faults while filling a 64 MiB array right after an array of that size was freed."""
    environment = dict(os.environ, MINIALEX_KEEP_FREED_MEMORY="1" if keep else "0")
    result = subprocess.run([sys.executable, "-c", SECOND_LARGE_ARRAY], capture_output=True, text=True,
                            env=environment, check=True)
    return int(result.stdout)


@on_glibc
def test_a_freed_large_array_is_reused_instead_of_faulted_in_again():
    # Returned to the OS, the second array's pages fault in again: at least one
    # per 2 MiB even with transparent huge pages (one per 4 KiB without).
    returned = _faults_of_a_second_large_array(False)
    kept = _faults_of_a_second_large_array(True)
    assert returned >= 16
    assert kept <= returned // 4


@on_glibc
def test_the_switch_reports_its_state(restore_setting):
    assert memory.keep_freed_memory(False) is True
    assert not memory.keeping_freed_memory()
    assert memory.keep_freed_memory(True) is True
    assert memory.keeping_freed_memory()


@pytest.mark.parametrize("bad", [1, 0, "yes", None])
def test_the_switch_takes_only_a_bool(bad, restore_setting):
    with pytest.raises(ValueError, match=f"keep must be True or False, got {bad!r}"):
        memory.keep_freed_memory(bad)


def _kept_after_import(**env):
    environment = {key: value for key, value in os.environ.items() if key != "MINIALEX_KEEP_FREED_MEMORY"}
    environment.update(env)
    code = "import minialex; from minialex.kernels import memory; print(memory.keeping_freed_memory())"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment,
                          check=True).stdout.strip()


@on_glibc
def test_importing_minialex_keeps_freed_memory_unless_the_environment_says_no():
    assert _kept_after_import() == "True"
    for no in ("0", "false", "OFF"):
        assert _kept_after_import(MINIALEX_KEEP_FREED_MEMORY=no) == "False"
