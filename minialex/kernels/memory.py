"""Keeping freed memory in the process for the next step, instead of handing it back to the OS.

A training step allocates and frees the same large arrays every step: the
columns of each convolution, the gradients of each layer, tens of MB each.
glibc's malloc (the C library of most Linux machines) gives every block above
its mmap threshold (which adapts, but never beyond 32 MB) pages of its own and
returns them to the OS when the block is freed. The next step's array of the
same size then starts as fresh pages, and the OS must fault in and zero each
4 KB page at its first write, which costs as much as the kernel's own work.
Measured on a 2-core AMD EPYC: ``np.empty`` + ``fill`` of 37 MB took 8.7 ms,
3.8 ms with freed memory kept; conv5's im2col at batch 16, 17.6 -> 6.5 ms.

``keep_freed_memory()`` raises glibc's two thresholds (M_MMAP_THRESHOLD,
M_TRIM_THRESHOLD) so that blocks below 1 GiB come from the process's heap
and go back to it, where the next allocation of that size finds them. The
price: the process keeps the memory of its peak (its RSS does not fall when
those arrays are freed), as PyTorch's caching allocators do on a GPU.

It is measured across processes, not in alternated pairs inside one: once
a block has gone back to the heap, a later allocation finds it there even
with the thresholds lowered again. The paper AlexNet's training step at
batch 16, three processes each way (``MINIALEX_KEEP_FREED_MEMORY=0`` or 1,
``python -m benchmarks --steps-only --quick``): 61,000 page faults per step
-> 400, median 1118 -> 1062 ms.

minialex calls it when imported, unless the environment sets
``MINIALEX_KEEP_FREED_MEMORY=0``. It is a setting of the whole process, so
PyTorch running in the same process (the benchmarks) gets it too. Where the
C library is not glibc (macOS, musl) it does nothing and says so.
"""

import ctypes
import os

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
KEEP_BELOW = 1 << 30  # blocks under 1 GiB come from, and go back to, the heap
GLIBC_DEFAULT = 128 * 1024  # both thresholds' starting value in glibc

_state = {"kept": False}


def _glibc_mallopt():
    """glibc's mallopt, or None where the C library is another (which may lack it or ignore it)."""
    try:
        libc = ctypes.CDLL(None)  # the C library this process already runs on
        libc.gnu_get_libc_version  # only glibc has it
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt


def keep_freed_memory(keep=True):
    """Keep freed blocks under 1 GiB for reuse (True) or return them to the OS again (False).

    Returns True when the setting took effect, False where it cannot (no
    glibc). ``keep=False`` restores glibc's starting thresholds, except that
    the mmap threshold no longer adapts.
    """
    if not isinstance(keep, bool):
        raise ValueError(f"keep must be True or False, got {keep!r}")
    mallopt = _glibc_mallopt()
    if mallopt is None:
        return False
    threshold = KEEP_BELOW if keep else GLIBC_DEFAULT
    # mallopt returns 1 on success, 0 when it refuses a value.
    if not (mallopt(M_MMAP_THRESHOLD, threshold) and mallopt(M_TRIM_THRESHOLD, threshold)):
        return False
    _state["kept"] = keep
    return True


def keeping_freed_memory():
    """Whether keep_freed_memory(True) is in effect."""
    return _state["kept"]


def keep_freed_memory_unless_disabled():
    """What ``import minialex`` does: keep freed memory unless MINIALEX_KEEP_FREED_MEMORY is 0 (or false/no/off)."""
    setting = os.environ.get("MINIALEX_KEEP_FREED_MEMORY", "1").strip().lower()
    if setting in ("0", "false", "no", "off"):
        return False
    return keep_freed_memory(True)
