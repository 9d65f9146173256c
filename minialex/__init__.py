"""minialex: a from-scratch deep-learning engine on NumPy and CuPy, small enough to read.

    import minialex as ma
    import minialex.functional as F
"""

import numpy as _np

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
