"""CuPy-only fast paths (ElementwiseKernel / RawKernel) that the kernels above call on GPU arrays.

The generic kernels in ``minialex/kernels/`` already run on CuPy arrays
through the array module, one vectorised CuPy call per step; each step is a
kernel launch and a trip through GPU memory. The files here compute the same
things in one hand-written CUDA kernel per layer and per direction:

    conv.py         im2col (a thread per column and channel), col2im (a thread per pixel)
    pool.py         max-pool forward (a thread per output), backward (a thread per input pixel)
    lrn.py          LRN forward and backward (a thread per (n, 8 channels, pixel), running sum over channels)
    elementwise.py  ReLU, dropout mask-and-scale, the softmax cross-entropy gradient
    sgd.py          the fused SGD update (momentum, weight decay, Nesterov)
    adam.py         the fused Adam / AdamW update (both moments, bias correction, weight decay)

Dispatch: each generic kernel starts with a small check,

    if fast_paths.active(x):
        return cuda_pool.max_pool2d_forward(x, ...)

so a fast path runs only for CuPy arrays of float32 or float64, and only while
``enabled`` is True. The generic code stays the reference; tests and
benchmarks switch the fast paths off with

    with minialex.kernels.cuda.use_fast_paths(False):
        ...   # every kernel takes its generic path

Importing this package (or any file in it) never needs CuPy: a kernel is
compiled on its first call, once per dtype, and kept (``functools.lru_cache``);
CuPy itself caches the binary per device and on disk.
"""

import contextlib
import functools

import numpy as np

from minialex import backend

#: Switch for every fast path; ``use_fast_paths`` sets it for a block of code.
enabled = True

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
C_TYPES = {"float32": "float", "float64": "double", "uint8": "unsigned char", "int32": "int"}

# Threads per block. 256 keeps every SM busy for the element counts of AlexNet's
# layers; `launch` shrinks it (to a multiple of the 32-thread warp) for small rows.
BLOCK = 256
# CUDA caps gridDim.y at 65535; kernels that loop over planes stride by gridDim.y.
MAX_GRID_Y = 65535


def active(*arrays):
    """True when the fast paths are on and the arrays are CuPy arrays of one float32/float64 dtype."""
    if not enabled:
        return False
    dtype = arrays[0].dtype
    for array in arrays:
        if not backend.is_cuda_array(array) or array.dtype != dtype:
            return False
    return dtype in FLOAT_DTYPES


@contextlib.contextmanager
def use_fast_paths(flag=True):
    """Turn the fast paths on (True) or off (False) inside a ``with`` block."""
    global enabled
    previous = enabled
    enabled = bool(flag)
    try:
        yield
    finally:
        enabled = previous


def cupy():
    """The cupy module (the fast paths are only ever called with CuPy arrays)."""
    module = backend.cupy_module()
    if module is None:
        raise RuntimeError("the CUDA fast paths need CuPy (pip install 'minialex[cuda]')")
    return module


def c_type(dtype):
    """The CUDA C type of a NumPy dtype: float32 -> "float", float64 -> "double", ..."""
    name = np.dtype(dtype).name
    if name not in C_TYPES:
        raise TypeError(f"no CUDA fast path for dtype {name}")
    return C_TYPES[name]


@functools.lru_cache(maxsize=None)
def raw_kernel(source, name, **type_names):
    """A cupy.RawKernel of ``source`` with ``typedef <C type> <alias>;`` lines in front.

    ``raw_kernel(SOURCE, "max_pool2d_forward", T="float32", A="uint8")`` writes
    the kernel once with the aliases T and A and compiles one copy per dtype
    combination. Memoised: each combination is built once per process.
    """
    typedefs = "".join(f"typedef {c_type(dtype)} {alias};\n" for alias, dtype in sorted(type_names.items()))
    return cupy().RawKernel(typedefs + source, name)


def check_int32(name, value):
    """Kernels index within a plane with 32-bit ints; say so instead of overflowing."""
    if value >= 2**31:
        raise ValueError(f"{name} = {value} is too large for the CUDA fast path (needs < 2**31)")


def int32s(*values):
    """Python ints as NumPy int32 scalars: CuPy passes a plain int as a 64-bit ``long long``."""
    return tuple(np.int32(value) for value in values)


def launch(kernel, per_plane, planes, args):
    """Run ``kernel`` on a grid of (per_plane threads) x (planes), e.g. pixels x (n, c) images.

    blockIdx.x/threadIdx.x pick the element inside a plane, blockIdx.y the
    plane; kernels loop ``plane += gridDim.y`` when there are more than 65535
    planes. Nothing is launched for empty arrays.
    """
    if per_plane == 0 or planes == 0:
        return
    check_int32("elements per plane", per_plane)
    threads = min(BLOCK, 32 * -(-per_plane // 32))
    grid = (-(-per_plane // threads), min(planes, MAX_GRID_Y))
    kernel(grid, (threads,), args)


# Shared by the RawKernel sources: the -infinity of T (max-pool's padding) from
# its bit pattern, so no header is needed under NVRTC.
NEGATIVE_INFINITY = r"""
__device__ inline float negative_infinity(float) { return __int_as_float((int)0xff800000u); }
__device__ inline double negative_infinity(double) { return __longlong_as_double((long long)0xfff0000000000000ull); }
"""
