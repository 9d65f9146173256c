"""Data-parallel training over processes: MPI (mpi4py) on any machine, NCCL (CuPy) across GPUs.

    import minialex.distributed as dist

    dist.init_process_group("mpi")                 # under: mpiexec -n 4 python train.py
    dist.broadcast_parameters(model)               # every rank starts from rank 0's weights
    optimizer = dist.DistributedOptimizer(optim.SGD(model.parameters(), lr=0.01))
    loader = DataLoader(train, 16, shuffle=True, shard=(dist.get_rank(), dist.get_world_size()))

Every process (a *rank*) holds the whole model and computes the gradient of
its own slice of the batch. Averaging those gradients over the ranks gives
exactly the gradient of the whole batch (the mean of means of equal-sized
slices is the mean), so after ``DistributedOptimizer.step()`` every rank
applies the same update and the models stay identical, step after step.

Two backends move the numbers:

- ``"mpi"``: mpi4py over whatever MPI is installed (``pip install mpi4py
  mpich`` gives one). NumPy arrays go straight to MPI; CuPy arrays are staged
  through host memory, unless ``MINIALEX_MPI_CUDA_AWARE=1`` says the MPI can
  read GPU memory itself (Open MPI or MVAPICH built with CUDA).
- ``"nccl"``: NVIDIA's NCCL through ``cupy.cuda.nccl``, one process per GPU,
  rank ``r`` on ``cuda:<local rank>``. MPI still starts the processes and
  carries NCCL's unique id from rank 0 to the others; collectives on CuPy
  arrays run on the current CUDA stream, NumPy arrays still go over MPI.

A process that never calls ``init_process_group`` is alone: rank 0 of a
world of 1. Under ``python train.py`` (no ``mpiexec``) ``init_process_group``
gives the same world of 1, and every collective is then an identity, so one
script runs unchanged on one process or many.
"""

import json
import numbers
import os
import sys
import time

import numpy as np

from . import backend
from .autograd import Tensor, _on_device_of

BACKENDS = ("mpi", "nccl")
REDUCE_OPS = ("sum", "prod", "min", "max")
# The dtypes a collective moves. float16 travels over MPI as float32 (MPI has no standard
# half type), so its sums are also taken in float32 there.
SUPPORTED_DTYPES = ("float16", "float32", "float64", "int8", "uint8", "int32", "int64")
# Set to 1 when the MPI library reads and writes GPU memory itself (CUDA-aware MPI).
CUDA_AWARE_ENV = "MINIALEX_MPI_CUDA_AWARE"


class _ProcessGroup:
    """The processes that train together: an MPI communicator, and an NCCL one for the NCCL backend."""

    def __init__(self, backend_name, mpi, comm):
        self.backend = backend_name
        self.mpi = mpi  # the mpi4py.MPI module
        self.comm = comm  # our own duplicate of COMM_WORLD: a user's MPI traffic never mixes with ours
        self.rank = comm.Get_rank()
        self.world_size = comm.Get_size()
        node = comm.Split_type(mpi.COMM_TYPE_SHARED, key=self.rank)
        self.local_rank, self.local_size = node.Get_rank(), node.Get_size()
        node.Free()
        self.nccl = None  # (cupy.cuda.nccl module, NcclCommunicator) for the NCCL backend
        self.cuda_aware_mpi = os.environ.get(CUDA_AWARE_ENV, "0") == "1"


_group = None


def _load_mpi():
    try:
        from mpi4py import MPI  # noqa: PLC0415 - optional: the 'dist' extra
    except ImportError as error:
        raise ImportError(
            f"minialex.distributed needs mpi4py and an MPI library ({error}); "
            "install them with: pip install 'minialex[dist]' (mpi4py and mpich from PyPI)"
        ) from error
    return MPI


def init_process_group(backend="mpi"):
    """Join the processes started by ``mpiexec`` (world size 1 without it).

    ``backend="mpi"`` moves arrays with mpi4py; ``"nccl"`` moves CuPy arrays
    with NCCL, one process per GPU: this process is put on ``cuda:<local
    rank>`` (its rank among the processes on this machine). NCCL refuses two
    ranks on one GPU, so more processes on a machine than GPUs is an error.
    """
    global _group
    if backend not in BACKENDS:
        raise ValueError(f"init_process_group: backend must be one of {', '.join(map(repr, BACKENDS))}, "
                         f"got {backend!r}")
    if _group is not None:
        raise RuntimeError(f"init_process_group: this process already joined a group (backend "
                           f"{_group.backend!r}); call destroy_process_group() first")
    mpi = _load_mpi()
    group = _ProcessGroup(backend, mpi, mpi.COMM_WORLD.Dup())
    if backend == "nccl":
        try:
            group.nccl = _start_nccl(group)
        except Exception:
            group.comm.Free()
            raise
    _group = group


def _start_nccl(group):
    """One NCCL communicator over all ranks, rank r on GPU ``local rank``; its unique id sent over MPI."""
    nccl = backend.nccl_module()
    gpus = backend.cuda_device_count()
    # Every rank must see the same verdict, or the ones that pass would wait for the others forever.
    too_many = group.comm.allreduce(int(group.local_size > gpus), op=group.mpi.MAX)
    if too_many:
        raise RuntimeError(
            f"init_process_group('nccl'): {group.local_size} processes on one machine but it has {gpus} GPU(s); "
            "NCCL needs one GPU per process (it refuses two ranks on one GPU). Start at most one process per "
            "GPU, or use backend='mpi'"
        )
    backend.cupy_module().cuda.Device(group.local_rank).use()
    # NCCL's unique id: 128 bytes, which get_unique_id gives as a tuple of ints.
    unique_id = np.array(nccl.get_unique_id(), np.int64) if group.rank == 0 else np.zeros(128, np.int64)
    group.comm.Bcast(unique_id, root=0)
    communicator = nccl.NcclCommunicator(group.world_size, tuple(int(v) for v in unique_id), group.rank)
    return nccl, communicator


def destroy_process_group():
    """Leave the group (the MPI library itself stays up until the process exits, as MPI requires)."""
    global _group
    if _group is None:
        raise RuntimeError("destroy_process_group: this process is not in a group (call init_process_group first)")
    group, _group = _group, None
    if group.nccl is not None:
        group.nccl[1].destroy()
    group.comm.Free()


def is_initialized():
    """True between ``init_process_group`` and ``destroy_process_group``."""
    return _group is not None


def get_rank():
    """This process's rank, 0 .. world size - 1 (0 outside a group)."""
    return 0 if _group is None else _group.rank


def get_world_size():
    """How many processes train together (1 outside a group)."""
    return 1 if _group is None else _group.world_size


def get_local_rank():
    """This process's rank among the group's processes on this machine (its GPU for NCCL; 0 outside a group)."""
    return 0 if _group is None else _group.local_rank


def get_backend():
    """"mpi" or "nccl"; None outside a group."""
    return None if _group is None else _group.backend


def _require_group(caller):
    if _group is None:
        raise RuntimeError(f"{caller}: this process is not in a process group; call "
                           "minialex.distributed.init_process_group('mpi') (or 'nccl') first")
    return _group


def barrier():
    """Wait until every rank has reached this call (and its queued GPU work is done)."""
    group = _require_group("barrier")
    backend.synchronize_current_stream()
    group.comm.Barrier()


# How long a rank other than 0 waits before it aborts the job (see ``abort``).
ABORT_GRACE_S = 5.0
# How long rank 0 waits, after flushing, before it aborts: the launcher (mpiexec)
# forwards a rank's output asynchronously and may drop what is still in flight
# when the abort kills the job.
ABORT_DRAIN_S = 0.5


def abort(exit_code=1):
    """Stop every rank: one rank that failed alone would leave the others waiting in a collective.

    Rank 0 flushes its output and waits ``ABORT_DRAIN_S`` seconds, so the
    launcher has passed its last words on before the job is killed. The other
    ranks wait ``ABORT_GRACE_S`` seconds: when every rank fails together (a
    bad option, a missing file), rank 0, the one that speaks to the user,
    aborts first; when a rank failed alone, it still ends the job after that.
    A failure that every rank is known to reach together needs no abort at
    all: end the ranks normally instead.
    """
    if _group is not None and _group.world_size > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        time.sleep(ABORT_DRAIN_S if _group.rank == 0 else ABORT_GRACE_S)
        _group.mpi.COMM_WORLD.Abort(exit_code)
    raise SystemExit(exit_code)


# --------------------------------------------------------------------------- collectives


def _check_array(caller, array):
    """(the array to communicate, the Tensor it belongs to or None); TypeError/ValueError for anything else."""
    tensor = None
    if isinstance(array, Tensor):
        tensor, array = array, array.data
    if not backend.is_array(array):
        raise TypeError(f"{caller}: array must be a NumPy or CuPy array (or a Tensor), got {type(array).__name__}")
    if array.dtype.name not in SUPPORTED_DTYPES:
        raise TypeError(f"{caller}: array has dtype {array.dtype}, expected one of {', '.join(SUPPORTED_DTYPES)}")
    return array, tensor


def _check_src(caller, src, world_size):
    if isinstance(src, bool) or not isinstance(src, numbers.Integral) or not 0 <= src < world_size:
        raise ValueError(f"{caller}: src must be a rank in 0..{world_size - 1}, got {src!r}")
    return int(src)


def all_reduce(array, op="sum"):
    """Replace ``array`` on every rank by the element-wise ``op`` over all ranks' arrays, in place.

    ``op`` is "sum", "prod", "min" or "max". ``array`` is a NumPy or CuPy
    array (or a Tensor, whose data is changed and version bumped) of the same
    shape and dtype on every rank. Returns ``array``.
    """
    group = _require_group("all_reduce")
    target, tensor = _check_array("all_reduce", array)
    if op not in REDUCE_OPS:
        raise ValueError(f"all_reduce: op must be one of {', '.join(map(repr, REDUCE_OPS))}, got {op!r}")
    if _communicates(group, target):
        _in_place(group, target, lambda buffer: _reduce(group, buffer, op))
        if tensor is not None and group.world_size > 1:
            tensor._bump_version()
    return array


def broadcast(array, src=0):
    """Overwrite ``array`` on every rank with rank ``src``'s values, in place; returns ``array``."""
    group = _require_group("broadcast")
    target, tensor = _check_array("broadcast", array)
    src = _check_src("broadcast", src, group.world_size)
    if _communicates(group, target):
        _in_place(group, target, lambda buffer: _broadcast(group, buffer, src))
        if tensor is not None and group.rank != src:  # the source's values did not change
            tensor._bump_version()
    return array


def broadcast_object(value, src=0):
    """Rank ``src``'s JSON-able ``value`` (dicts, lists, numbers, strings), returned on every rank.

    Sent as JSON text, not pickled: a rank only ever receives data.
    """
    group = _require_group("broadcast_object")
    src = _check_src("broadcast_object", src, group.world_size)
    if group.world_size == 1:
        return json.loads(json.dumps(value))
    payload = np.frombuffer(json.dumps(value).encode(), np.uint8) if group.rank == src else None
    length = np.array([0 if payload is None else payload.size], np.int64)
    group.comm.Bcast(length, root=src)
    if payload is None:
        payload = np.empty(int(length[0]), np.uint8)
    group.comm.Bcast(payload, root=src)
    return json.loads(payload.tobytes().decode())


def _communicates(group, array):
    """Whether a collective on ``array`` has to run: alone, the result is the input. NCCL runs even
    alone (a cheap call on the GPU), so that one GPU exercises the real path."""
    return group.world_size > 1 or (group.nccl is not None and backend.is_cuda_array(array))


def _in_place(group, array, communicate):
    """Run ``communicate(buffer)`` on a contiguous buffer that MPI or NCCL can use, then write it back.

    The buffer is the array itself where possible; a copy for a strided view,
    for float16 over MPI (sent as float32) and for a CuPy array over an MPI
    that cannot read GPU memory (staged through host memory).
    """
    on_gpu = backend.is_cuda_array(array)
    if on_gpu and group.nccl is not None:
        _check_nccl_device(group, array)
        buffer = array if array.flags.c_contiguous else array.copy()
        communicate(buffer)
    else:
        if on_gpu:
            backend.synchronize_current_stream()  # MPI reads the memory after the kernels that write it
        if on_gpu and not group.cuda_aware_mpi:
            buffer = backend.to_numpy(array)
        else:
            buffer = array if array.flags.c_contiguous else array.copy()
        if buffer.dtype == np.float16:
            buffer = buffer.astype(np.float32)
        communicate(buffer)
    if buffer is not array:
        if on_gpu and not backend.is_cuda_array(buffer):
            buffer = backend.to_device(buffer, backend.device_of(array))
        array[...] = buffer


def _mpi_op(group, op):
    return {"sum": group.mpi.SUM, "prod": group.mpi.PROD, "min": group.mpi.MIN, "max": group.mpi.MAX}[op]


def _reduce(group, buffer, op):
    if backend.is_cuda_array(buffer) and group.nccl is not None:
        nccl, communicator = group.nccl
        ops = {"sum": nccl.NCCL_SUM, "prod": nccl.NCCL_PROD, "min": nccl.NCCL_MIN, "max": nccl.NCCL_MAX}
        communicator.allReduce(buffer.data.ptr, buffer.data.ptr, buffer.size, _nccl_dtype(nccl, buffer.dtype),
                               ops[op], backend.cupy_module().cuda.get_current_stream().ptr)
    else:
        group.comm.Allreduce(group.mpi.IN_PLACE, buffer, op=_mpi_op(group, op))


def _broadcast(group, buffer, src):
    if backend.is_cuda_array(buffer) and group.nccl is not None:
        nccl, communicator = group.nccl
        communicator.bcast(buffer.data.ptr, buffer.size, _nccl_dtype(nccl, buffer.dtype), src,
                           backend.cupy_module().cuda.get_current_stream().ptr)
    else:
        group.comm.Bcast(buffer, root=src)


def _nccl_dtype(nccl, dtype):
    return {"float16": nccl.NCCL_FLOAT16, "float32": nccl.NCCL_FLOAT32, "float64": nccl.NCCL_FLOAT64,
            "int8": nccl.NCCL_INT8, "uint8": nccl.NCCL_UINT8, "int32": nccl.NCCL_INT32,
            "int64": nccl.NCCL_INT64}[dtype.name]


def _check_nccl_device(group, array):
    device = backend.device_of(array)
    if device != f"cuda:{group.local_rank}":
        raise ValueError(f"NCCL: rank {group.rank} communicates on cuda:{group.local_rank}, got an array on {device}")


# --------------------------------------------------------------------------- packed buffers


class _PackedBuffers:
    """Many tensors' arrays laid end to end in ONE contiguous buffer per (device, dtype).

    One collective on a buffer of 61 M numbers costs about what its bytes
    cost; one per tensor would add a latency per tensor (16 for AlexNet).
    ``slots[key]`` lists (tensor, start, stop) of the tensors in that buffer.
    Each buffer has ``len(slots)`` extra numbers at its end, one per tensor:
    ``DistributedOptimizer`` sends there whether the rank had a gradient.
    """

    def __init__(self, tensors):
        self.slots, self.buffers = {}, {}
        sizes = {}
        for tensor in tensors:
            key = (backend.device_of(tensor.data), tensor.data.dtype.name)
            start = sizes.get(key, 0)
            self.slots.setdefault(key, []).append((tensor, start, start + tensor.data.size))
            sizes[key] = start + tensor.data.size
        for key, slots in self.slots.items():
            xp = backend.get_array_module(slots[0][0].data)
            with _on_device_of(slots[0][0].data):
                self.buffers[key] = xp.empty(sizes[key] + len(slots), dtype=key[1])
        self.signature = _signature(tensors)

    def items(self):
        """(buffer, [(tensor, start, stop), ...]) for each device and dtype."""
        return ((self.buffers[key], slots) for key, slots in self.slots.items())


def _signature(tensors):
    """What a packed layout depends on: which tensors, in which order, of which shape, dtype and device."""
    return tuple((id(t), t.data.shape, t.data.dtype.name, backend.device_of(t.data)) for t in tensors)


def _parameters_of(caller, module_or_tensors):
    if hasattr(module_or_tensors, "parameters") and callable(module_or_tensors.parameters):
        tensors = list(module_or_tensors.parameters())
    elif isinstance(module_or_tensors, Tensor):
        tensors = [module_or_tensors]
    else:
        try:
            tensors = list(module_or_tensors)
        except TypeError:
            raise TypeError(f"{caller}: expected a Module or an iterable of Tensors, "
                            f"got {type(module_or_tensors).__name__}") from None
    for tensor in tensors:
        if not isinstance(tensor, Tensor):
            raise TypeError(f"{caller}: expected a Module or an iterable of Tensors, "
                            f"got an element of type {type(tensor).__name__}")
        _check_array(caller, tensor.data)
    return tensors


def broadcast_parameters(module, src=0):
    """Overwrite every parameter of ``module`` (or an iterable of Tensors) with rank ``src``'s values.

    Call it once after building the model: ranks that initialised differently
    (another seed, a checkpoint only rank 0 read) then start from the same
    weights. One broadcast per device and dtype, through a packed buffer.
    """
    group = _require_group("broadcast_parameters")
    src = _check_src("broadcast_parameters", src, group.world_size)
    tensors = _parameters_of("broadcast_parameters", module)
    if group.world_size == 1 or not tensors:
        return
    packed = _PackedBuffers(tensors)
    for buffer, slots in packed.items():
        if group.rank == src:
            for tensor, start, stop in slots:
                buffer[start:stop] = tensor.data.reshape(-1)
        broadcast(buffer[: slots[-1][2]], src)
        if group.rank != src:
            for tensor, start, stop in slots:
                tensor.data[...] = buffer[start:stop].reshape(tensor.data.shape)
                tensor._bump_version()


def broadcast_optimizer_state(optimizer, src=0):
    """Give every rank rank ``src``'s optimiser state (momentum buffers, Adam's moments, rates).

    For a resumed run where only rank ``src`` loaded the checkpoint: the
    hyper-parameters travel as JSON, each state array by one broadcast (this
    happens once per run, not per step). Works on a ``DistributedOptimizer``
    or the optimiser it wraps.
    """
    group = _require_group("broadcast_optimizer_state")
    src = _check_src("broadcast_optimizer_state", src, group.world_size)
    if isinstance(optimizer, DistributedOptimizer):
        optimizer = optimizer.optimizer
    if group.world_size == 1:
        return
    state = optimizer.state_dict() if group.rank == src else None
    layout = None
    if state is not None:
        entries = [[int(index), name, list(np.shape(array)), np.asarray(array).dtype.name]
                   for index, buffers in state["state"].items() for name, array in buffers.items()]
        layout = {"param_groups": state["param_groups"], "entries": entries}
    layout = broadcast_object(layout, src)
    received = {}
    for index, name, shape, dtype in layout["entries"]:
        array = np.ascontiguousarray(state["state"][index][name]) if state is not None else np.empty(shape, dtype)
        broadcast(array, src)
        received.setdefault(index, {})[name] = array
    if group.rank != src:
        optimizer.load_state_dict({"state": received, "param_groups": layout["param_groups"]})


class DistributedOptimizer:
    """``optimizer``, with every gradient averaged over the ranks before each ``step()``.

    The gradients are packed into ONE contiguous buffer per device and dtype
    (one all-reduce per step, not one per parameter), summed over the ranks,
    divided by the world size, and unpacked into each ``p.grad``; then the
    wrapped optimiser steps. Every other attribute (``param_groups``,
    ``state_dict``, ``zero_grad``, ...) is the wrapped optimiser's, so
    schedulers and checkpoints take a DistributedOptimizer as they are.

    A parameter without a gradient on some rank (a branch that rank's batch
    did not use) counts as a zero gradient there, which is what its loss's
    derivative is: the average is the sum over the ranks that had one, divided
    by the world size. A parameter that no rank has a gradient for (frozen, or
    unused by every rank) keeps ``grad = None`` and the optimiser skips it on
    every rank alike. Whether a rank had a gradient travels in the same
    buffer (one extra number per parameter), so this costs no extra message.
    """

    def __init__(self, optimizer):
        if isinstance(optimizer, DistributedOptimizer):
            raise TypeError("DistributedOptimizer: the optimiser is already a DistributedOptimizer")
        if not hasattr(optimizer, "param_groups") or not callable(getattr(optimizer, "step", None)):
            raise TypeError("DistributedOptimizer: expected an optimiser with param_groups and step(), "
                            f"got {type(optimizer).__name__}")
        _require_group("DistributedOptimizer")
        self.optimizer = optimizer
        self._packed = None

    def __getattr__(self, name):
        # Only for names this object does not have itself: the wrapped optimiser's.
        if name == "optimizer":
            raise AttributeError(name)
        return getattr(self.optimizer, name)

    def __repr__(self):
        return f"DistributedOptimizer({self.optimizer!r})"

    def _parameters(self):
        return [p for group in self.optimizer.param_groups for p in group["params"]]

    def synchronize(self):
        """Average every gradient over the ranks, in place (``step`` calls it). Alone, there is nothing to do."""
        group = _require_group("DistributedOptimizer.step")
        if group.world_size > 1:
            self._average_packed(group)

    def _average_packed(self, group):
        """Pack, all-reduce, average and unpack the gradients (at any world size: the benchmark times it alone)."""
        parameters = self._parameters()
        if self._packed is None or self._packed.signature != _signature(parameters):
            self._packed = _PackedBuffers(parameters)
        for buffer, slots in self._packed.items():
            flags = buffer[slots[-1][2]:]
            for position, (p, start, stop) in enumerate(slots):
                if p.grad is None:
                    buffer[start:stop] = 0
                    flags[position] = 0
                else:
                    if p.grad.shape != p.shape:
                        raise ValueError(f"DistributedOptimizer: a parameter of shape {p.shape} has a gradient "
                                         f"of shape {p.grad.shape}")
                    buffer[start:stop] = p.grad.data.reshape(-1)
                    flags[position] = 1
            all_reduce(buffer, "sum")
            had_gradient = backend.to_numpy(flags) > 0
            xp = backend.get_array_module(buffer)
            for position, (p, start, stop) in enumerate(slots):
                if not had_gradient[position]:
                    continue
                total = buffer[start:stop].reshape(p.shape)
                # sum -> mean while unpacking: one pass over the numbers instead of a divide and a copy
                if p.grad is None:
                    p.grad = Tensor(total / group.world_size)
                elif p.grad.data.dtype == total.dtype and p.grad.data.flags.c_contiguous:
                    xp.divide(total, group.world_size, out=p.grad.data)
                    p.grad._bump_version()
                else:
                    p.grad.data[...] = total / group.world_size
                    p.grad._bump_version()

    def step(self):
        """Average the gradients over the ranks, then take the wrapped optimiser's step."""
        self.synchronize()
        return self.optimizer.step()
