"""Where arrays live: the one module that knows about CuPy.

Every other module asks this one instead of importing CuPy or comparing device
strings. A kernel finds its array module with ``get_array_module(x)`` and then
writes ``xp.maximum(...)`` once for both NumPy and CuPy, as Chainer does.

Devices are named like PyTorch's: ``"cpu"``, ``"cuda"`` (the current GPU) and
``"cuda:N"``. The engine's random numbers come from one generator per device,
all reseeded by ``manual_seed``.
"""

import functools
import numbers

import numpy as np

try:  # CuPy is optional: the CPU engine never needs it.
    import cupy as _cupy
except Exception:  # ImportError, or a CuPy build that cannot load its CUDA libraries
    _cupy = None


# --------------------------------------------------------------------------- devices


def cuda_available():
    """True only where CuPy imports and sees at least one CUDA device."""
    if _cupy is None:
        return False
    try:
        return _cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # no driver, or a driver too old for this CuPy
        return False


def cuda_device_count():
    return _cupy.cuda.runtime.getDeviceCount() if cuda_available() else 0


def cupy_module():
    """The cupy module, or None where CuPy is not installed (for the CUDA fast paths and benchmarks).

    Other modules ask for CuPy here instead of importing it, so that this file
    stays the one place that knows whether it loaded.
    """
    return _cupy


def nccl_module():
    """CuPy's NCCL bindings (``cupy.cuda.nccl``) for the distributed NCCL backend.

    Raises RuntimeError naming what is missing: CuPy, a GPU, or a CuPy built without NCCL.
    """
    if not cuda_available():
        raise RuntimeError("the NCCL backend needs CuPy and a CUDA GPU (install the 'cuda' extra); "
                           "use backend='mpi' on the CPU")
    try:
        from cupy.cuda import nccl  # noqa: PLC0415 - only the NCCL backend needs it
    except ImportError as error:
        raise RuntimeError(f"this CuPy has no NCCL bindings ({error}); install NCCL for CuPy "
                           "(e.g. pip install nvidia-nccl-cu12) or use backend='mpi'") from error
    if not getattr(nccl, "available", True):
        raise RuntimeError("CuPy found no NCCL library; install NCCL (e.g. pip install nvidia-nccl-cu12) "
                           "or use backend='mpi'")
    return nccl


def synchronize_current_stream():
    """Wait for the GPU work queued on the current CUDA stream (no-op without CuPy).

    Host code that reads a CuPy array's memory itself (MPI without CUDA support
    reads a staged copy; a CUDA-aware MPI reads device memory) must first let
    the kernels that write it finish.
    """
    if _cupy is not None:
        _cupy.cuda.get_current_stream().synchronize()


def is_cuda_array(array):
    return _cupy is not None and isinstance(array, _cupy.ndarray)


def is_array(obj):
    """True for a NumPy or a CuPy array."""
    return isinstance(obj, np.ndarray) or is_cuda_array(obj)


def get_array_module(*arrays):
    """The array module (numpy or cupy) that the arrays live in."""
    for array in arrays:
        if is_cuda_array(array):
            return _cupy
    return np


def device_of(array):
    """The canonical device name of an array: "cpu" or "cuda:N"."""
    if is_cuda_array(array):
        return f"cuda:{array.device.id}"
    return "cpu"


def parse_device(device):
    """Check a device name and return its canonical form ("cpu" or "cuda:N").

    Accepts "cpu", "cuda", "cuda:N" (any case of spaces stripped). Raises
    ValueError for anything else and RuntimeError for a CUDA device that this
    machine does not have.
    """
    if not isinstance(device, str):
        raise TypeError(f"device must be a string such as 'cpu', 'cuda' or 'cuda:0', got {device!r}")
    name = device.strip().lower()
    if name == "cpu":
        return "cpu"
    if name == "cuda" or name.startswith("cuda:"):
        index_text = name[5:] if name.startswith("cuda:") else None
        if index_text is not None and not index_text.isdigit():
            raise ValueError(f"device {device!r}: expected 'cuda:N' with N a non-negative integer")
        if not cuda_available():
            raise RuntimeError(
                f"device {device!r} was requested but CUDA is not available "
                "(CuPy is not installed or sees no GPU; install the 'cuda' extra)"
            )
        index = _cupy.cuda.runtime.getDevice() if index_text is None else int(index_text)
        count = cuda_device_count()
        if index >= count:
            raise ValueError(f"device {device!r}: this machine has {count} CUDA device(s)")
        return f"cuda:{index}"
    raise ValueError(f"unknown device {device!r}: expected 'cpu', 'cuda' or 'cuda:N'")


def _cuda_index(device):
    return int(device.split(":")[1])


def to_device(array, device):
    """The array on ``device`` (a canonical name); the same array if already there."""
    if device == device_of(array):
        return array
    if device == "cpu":
        return _cupy.asnumpy(array)
    with _cupy.cuda.Device(_cuda_index(device)):
        if is_cuda_array(array):
            # GPU to another GPU: cupy.asarray would hand back the array where it
            # is; cupy.copy allocates on the current device and copies across.
            return _cupy.copy(array)
        return _cupy.asarray(array)


def to_numpy(array):
    """A NumPy copy of the array, from any device."""
    if is_cuda_array(array):
        return _cupy.asnumpy(array)
    return np.array(array, copy=True)


def scatter_add(target, index, values):
    """target[index] += values, adding repeated indices (NumPy's add.at)."""
    if is_cuda_array(target):
        if hasattr(_cupy.add, "at"):  # CuPy >= 13; 14 deprecates cupyx.scatter_add
            _cupy.add.at(target, index, values)
        else:
            import cupyx  # noqa: PLC0415 - part of CuPy, only reached with CuPy arrays

            cupyx.scatter_add(target, index, values)
    else:
        np.add.at(target, index, values)


# --------------------------------------------------------------------------- random numbers
#
# The CPU draws from one NumPy Generator. On a GPU, every call (a dropout
# mask, an initialiser) takes one 64-bit key from a small NumPy generator kept
# for that GPU, and a CUDA kernel turns (key, element index) into a number
# with SplitMix64's mixing function: element i gets the (i+1)-th output of a
# SplitMix64 stream that starts at the key. Nothing random lives on the GPU,
# so the whole state of every device is a few NumPy bit-generator states:
# it goes into checkpoints, and a resumed run on a GPU draws exactly the
# numbers an uninterrupted one would. (CuPy's curand-backed RandomState has no
# state that can be saved and restored.)

_seed = None
_cpu_rng = np.random.default_rng()
_cuda_keys = {}  # device index -> numpy Generator of per-call keys, made on first use

_SPLITMIX64 = r"""
__device__ inline unsigned long long splitmix64(unsigned long long key, unsigned long long counter) {
    unsigned long long z = key + (counter + 1ull) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
// [0, 1) with the full precision of the type: 24 random bits for float, 53 for double.
__device__ inline float unit(float, unsigned long long bits) { return (float)(bits >> 40) * 5.9604644775390625e-8f; }
__device__ inline double unit(double, unsigned long long bits) { return (double)(bits >> 11) * 1.1102230246251565e-16; }
"""


def manual_seed(seed):
    """Seed every random source of the engine on every device."""
    global _seed, _cpu_rng
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    _seed = int(seed)
    _cpu_rng = np.random.default_rng(_seed)
    _cuda_keys.clear()  # each GPU's key generator is remade from the new seed when next used


def cpu_rng():
    """The engine's NumPy Generator (dropout masks, initialisers, shuffling)."""
    return _cpu_rng


def _cuda_key(device):
    """A fresh 64-bit key for one GPU draw, from that GPU's own key generator."""
    index = _cuda_index(device)
    if index not in _cuda_keys:
        # Each GPU gets its own stream of keys, derived from the seed (a fresh random one without a seed).
        _cuda_keys[index] = np.random.default_rng(None if _seed is None else [_seed, index + 1])
    return np.uint64(_cuda_keys[index].integers(0, 2**64, dtype=np.uint64))


@functools.lru_cache(maxsize=None)
def _uniform_kernel():
    return _cupy.ElementwiseKernel(
        "uint64 key", "T out", "out = unit((T)0, splitmix64(key, i))",
        "minialex_uniform", preamble=_SPLITMIX64)


@functools.lru_cache(maxsize=None)
def _normal_kernel():
    # Box-Muller on two uniforms per element (counters 2i and 2i+1); 1 - u1 is in (0, 1], so the log is finite.
    return _cupy.ElementwiseKernel(
        "uint64 key, T mean, T std", "T out",
        """
        const T u1 = unit((T)0, splitmix64(key, 2 * (unsigned long long)i));
        const T u2 = unit((T)0, splitmix64(key, 2 * (unsigned long long)i + 1));
        out = mean + std * sqrt((T)-2 * log((T)1 - u1)) * cos((T)6.283185307179586 * u2);
        """,
        "minialex_normal", preamble=_SPLITMIX64)


def _cuda_draw(kernel, shape, dtype, device, *arguments):
    """Run a generator kernel into a new array on ``device`` (float32 or float64, then cast to dtype)."""
    draw_dtype = np.float32 if np.dtype(dtype) == np.float32 else np.float64
    device = parse_device(device)  # "cuda" -> "cuda:N", the current GPU
    with _cupy.cuda.Device(_cuda_index(device)):
        out = _cupy.empty(shape, dtype=draw_dtype)
        kernel(_cuda_key(device), *(draw_dtype(a) for a in arguments), out)
        return out.astype(dtype, copy=False)


def uniform(shape, dtype, device="cpu"):
    """Uniform [0, 1) samples of ``dtype`` on ``device`` from the engine's RNG."""
    if device == "cpu":
        # Generator.random draws float32 or float64 directly: no float64 detour for float32.
        draw_dtype = np.float32 if np.dtype(dtype) == np.float32 else np.float64
        return _cpu_rng.random(shape, dtype=draw_dtype).astype(dtype, copy=False)
    return _cuda_draw(_uniform_kernel(), shape, dtype, device)


def normal(shape, dtype, device="cpu", mean=0.0, std=1.0):
    """Normal N(mean, std^2) samples of ``dtype`` on ``device`` from the engine's RNG."""
    if device == "cpu":
        return (mean + std * _cpu_rng.standard_normal(shape)).astype(dtype, copy=False)
    return _cuda_draw(_normal_kernel(), shape, dtype, device, mean, std)


def rng_state():
    """Every device's generator state as a JSON-able dict (for checkpoints)."""
    return {"seed": _seed, "cpu": _cpu_rng.bit_generator.state,
            "cuda": {str(index): keys.bit_generator.state for index, keys in sorted(_cuda_keys.items())}}


def set_rng_state(state):
    """Restore a state returned by ``rng_state``."""
    global _seed, _cpu_rng
    _seed = state["seed"]
    generator = np.random.default_rng()
    generator.bit_generator.state = state["cpu"]
    _cpu_rng = generator
    _cuda_keys.clear()  # GPUs the state does not name start again from the seed
    for index, bit_state in state.get("cuda", {}).items():  # older checkpoints have no "cuda"
        keys = np.random.default_rng()
        keys.bit_generator.state = bit_state
        _cuda_keys[int(index)] = keys
