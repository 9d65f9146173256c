"""minialex: a from-scratch deep-learning engine on NumPy and CuPy, small enough to read.

    import minialex as ma
    import minialex.functional as F
"""

import os as _os
import sys as _sys

if "numpy" not in _sys.modules:
    # OpenBLAS (NumPy's BLAS on most machines) keeps its idle threads spinning
    # for about 0.1 s after every GEMM, holding the other cores just when the
    # kernels split their elementwise work over them (minialex.kernels.threads):
    # a split copy then runs no faster than on one core. A short spin, read by
    # OpenBLAS once when NumPy loads it, gives the cores back (the paper
    # AlexNet's CPU step: about 0.9 of the time). An explicit setting wins;
    # once NumPy is loaded this can no longer take effect: set it yourself.
    _os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

import numpy as _np  # noqa: E402 - after the OpenBLAS setting

from .kernels import memory as _memory  # noqa: E402

# Large arrays freed by one training step are reused by the next instead of
# going back to the OS and being faulted in again (minialex.kernels.memory);
# MINIALEX_KEEP_FREED_MEMORY=0 turns this off.
_memory.keep_freed_memory_unless_disabled()

from . import amp, cuda, functional, nn, profiler, viz  # viz imports matplotlib only when it draws
from .autograd import Tensor, enable_grad, is_grad_enabled, no_grad, set_grad_enabled, tensor
from .backend import manual_seed
from .gradcheck import GradcheckError, gradcheck

float32 = _np.float32
float64 = _np.float64
int64 = _np.int64

__version__ = "0.1.0"

__all__ = [
    "GradcheckError",
    "Tensor",
    "amp",
    "cuda",
    "enable_grad",
    "float32",
    "float64",
    "functional",
    "gradcheck",
    "int64",
    "nn",
    "profiler",
    "is_grad_enabled",
    "manual_seed",
    "no_grad",
    "set_grad_enabled",
    "tensor",
    "viz",
]
