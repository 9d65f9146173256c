"""Where arrays live: the one module that knows about CuPy.

Every other module asks this one instead of importing CuPy or comparing device
strings. A kernel finds its array module with ``get_array_module(x)`` and then
writes ``xp.maximum(...)`` once for both NumPy and CuPy, as Chainer does.

Devices are named like PyTorch's: ``"cpu"``, ``"cuda"`` (the current GPU) and
``"cuda:N"``. The engine's random numbers come from one generator per device,
all reseeded by ``manual_seed``.
"""

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

_seed = None
_cpu_rng = np.random.default_rng()
_cuda_rngs = {}  # device index -> cupy.random.RandomState, made on first use


def manual_seed(seed):
    """Seed every random source of the engine on every device."""
    global _seed, _cpu_rng
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    _seed = int(seed)
    _cpu_rng = np.random.default_rng(_seed)
    _cuda_rngs.clear()  # each GPU's generator is remade from the new seed when next used


def cpu_rng():
    """The engine's NumPy Generator (dropout masks, initialisers, shuffling)."""
    return _cpu_rng


def _cuda_rng(device):
    index = _cuda_index(device)
    if index not in _cuda_rngs:
        with _cupy.cuda.Device(index):
            # Each GPU gets its own stream of numbers, derived from the seed.
            seed = None if _seed is None else _seed + 1_000_003 * (index + 1)
            _cuda_rngs[index] = _cupy.random.RandomState(seed)
    return _cuda_rngs[index]


def uniform(shape, dtype, device="cpu"):
    """Uniform [0, 1) samples of ``dtype`` on ``device`` from the engine's RNG."""
    if device == "cpu":
        # Generator.random draws float32 or float64 directly: no float64 detour for float32.
        draw_dtype = np.float32 if np.dtype(dtype) == np.float32 else np.float64
        return _cpu_rng.random(shape, dtype=draw_dtype).astype(dtype, copy=False)
    with _cupy.cuda.Device(_cuda_index(device)):
        return _cuda_rng(device).random_sample(shape, dtype=np.float64).astype(dtype, copy=False)


def normal(shape, dtype, device="cpu", mean=0.0, std=1.0):
    """Normal N(mean, std^2) samples of ``dtype`` on ``device`` from the engine's RNG."""
    if device == "cpu":
        return (mean + std * _cpu_rng.standard_normal(shape)).astype(dtype, copy=False)
    with _cupy.cuda.Device(_cuda_index(device)):
        return (mean + std * _cuda_rng(device).standard_normal(shape)).astype(dtype, copy=False)


def rng_state():
    """The CPU generator's state as a JSON-able dict (for checkpoints)."""
    return {"seed": _seed, "cpu": _cpu_rng.bit_generator.state}


def set_rng_state(state):
    """Restore a state returned by ``rng_state``."""
    global _seed, _cpu_rng
    _seed = state["seed"]
    generator = np.random.default_rng()
    generator.bit_generator.state = state["cpu"]
    _cpu_rng = generator
    _cuda_rngs.clear()
