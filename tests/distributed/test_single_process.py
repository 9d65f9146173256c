"""minialex.distributed in one process (plain pytest, no mpiexec): a world of one, every collective an identity.

Outside a group a process is rank 0 of 1 and the collectives refuse to run;
``init_process_group("mpi")`` without mpiexec gives a world of 1 in which
they leave every value as it was, and DistributedOptimizer is exactly the
optimiser it wraps. The multi-rank behaviour is tested under mpiexec in
test_mpi.py.
"""

import importlib
import re
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minialex
import minialex as ma
import minialex.distributed as dist
import minialex.functional as F
from minialex import backend, nn
from minialex.checkpoint import load_checkpoint, save_checkpoint
from minialex.optim import SGD, Adam, StepLR


@pytest.fixture
def world():
    """A world of 1 for the test, always left again: no test leaks a process group."""
    pytest.importorskip("mpi4py")
    dist.init_process_group("mpi")
    try:
        yield
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


@pytest.fixture
def without_mpi4py(monkeypatch):
    """As if mpi4py were not installed: importing it raises ImportError."""
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    monkeypatch.setitem(sys.modules, "mpi4py.MPI", None)


# --------------------------------------------------------------------------- without mpi4py, before init


def test_the_module_imports_without_mpi4py_and_init_says_how_to_install_it(without_mpi4py, monkeypatch):
    monkeypatch.delitem(sys.modules, "minialex.distributed")
    monkeypatch.setattr(minialex, "distributed", dist)  # put the package's attribute back afterwards
    fresh = importlib.import_module("minialex.distributed")
    assert fresh is not dist
    assert not fresh.is_initialized() and fresh.get_world_size() == 1 and fresh.get_rank() == 0
    with pytest.raises(ImportError, match=re.escape("minialex[dist]")):
        fresh.init_process_group("mpi")
    assert not fresh.is_initialized()


def test_init_without_mpi4py_raises_importerror_and_joins_nothing(without_mpi4py):
    for backend_name in dist.BACKENDS:
        with pytest.raises(ImportError, match=re.escape("pip install 'minialex[dist]'")):
            dist.init_process_group(backend_name)
        assert not dist.is_initialized()


def test_before_init_a_process_is_rank_0_of_a_world_of_1(without_mpi4py):
    assert dist.is_initialized() is False
    assert dist.get_rank() == 0
    assert dist.get_local_rank() == 0
    assert dist.get_world_size() == 1
    assert dist.get_backend() is None


def small_model(hidden=6):
    return nn.Sequential(nn.Linear(5, hidden), nn.ReLU(), nn.Dropout(0.25), nn.Linear(hidden, 3))


@pytest.mark.parametrize("call", [
    lambda: dist.all_reduce(np.zeros(3, np.float32)),
    lambda: dist.broadcast(np.zeros(3, np.float32)),
    lambda: dist.barrier(),
    lambda: dist.broadcast_object({"a": 1}),
    lambda: dist.broadcast_parameters(small_model()),
    lambda: dist.broadcast_optimizer_state(SGD(small_model().parameters(), lr=0.1)),
    lambda: dist.DistributedOptimizer(SGD(small_model().parameters(), lr=0.1)),
    lambda: dist.destroy_process_group(),
], ids=["all_reduce", "broadcast", "barrier", "broadcast_object", "broadcast_parameters",
        "broadcast_optimizer_state", "DistributedOptimizer", "destroy_process_group"])
def test_before_init_the_collectives_raise_runtimeerror_saying_to_call_init_process_group(without_mpi4py, call):
    with pytest.raises(RuntimeError, match="init_process_group"):
        call()


@pytest.mark.parametrize("name", ["gloo", "MPI", "", None, 1])
def test_an_unknown_backend_raises_valueerror_naming_it(name):
    with pytest.raises(ValueError, match=re.escape(repr(name))):
        dist.init_process_group(name)
    assert not dist.is_initialized()


# --------------------------------------------------------------------------- the group


def test_init_under_plain_pytest_is_rank_0_of_a_world_of_1(world):
    assert dist.is_initialized() is True
    assert dist.get_rank() == 0 and dist.get_local_rank() == 0
    assert dist.get_world_size() == 1
    assert dist.get_backend() == "mpi"
    assert dist.barrier() is None


def test_init_twice_raises_runtimeerror_and_keeps_the_group(world):
    with pytest.raises(RuntimeError, match="already"):
        dist.init_process_group("mpi")
    with pytest.raises(RuntimeError, match="already"):
        dist.init_process_group("nccl")
    assert dist.is_initialized() and dist.get_backend() == "mpi" and dist.get_world_size() == 1


def test_destroy_leaves_the_group_and_init_works_again():
    pytest.importorskip("mpi4py")
    for _ in range(3):
        dist.init_process_group("mpi")
        assert dist.is_initialized() and dist.get_world_size() == 1
        dist.destroy_process_group()
        assert not dist.is_initialized()
        assert (dist.get_rank(), dist.get_world_size(), dist.get_backend()) == (0, 1, None)
        with pytest.raises(RuntimeError, match="init_process_group"):
            dist.all_reduce(np.ones(2))
    with pytest.raises(RuntimeError, match="not in a group"):
        dist.destroy_process_group()


# --------------------------------------------------------------------------- collectives at world size 1


def arrays_of_every_kind():
    rng = np.random.default_rng(0)
    base = rng.standard_normal((6, 8))
    cases = {dtype: (base * 100).astype(dtype) for dtype in ["float32", "float64", "float16", "int64", "int32",
                                                             "int8", "uint8"]}
    cases["strided view"] = base.astype(np.float32)[::2, 1::3]
    cases["0-d"] = np.array(2.5)
    cases["empty"] = np.zeros((0, 3), np.float32)
    return cases


ARRAYS = arrays_of_every_kind()


@pytest.mark.parametrize("op", dist.REDUCE_OPS)
@pytest.mark.parametrize("kind", list(ARRAYS))
def test_all_reduce_at_world_size_1_leaves_the_values_and_returns_the_same_object(world, op, kind):
    array = ARRAYS[kind].copy() if kind != "strided view" else ARRAYS[kind]
    base = array.base
    before = array.copy()
    assert dist.all_reduce(array, op) is array
    assert array.dtype == before.dtype and array.shape == before.shape
    np.testing.assert_array_equal(array, before, strict=True)
    if kind == "strided view":
        assert array.base is base and not array.flags.c_contiguous  # still a view of the same memory


@pytest.mark.parametrize("kind", ["float32", "strided view", "int64"])
def test_broadcast_at_world_size_1_leaves_the_values_and_returns_the_same_object(world, kind):
    array = ARRAYS[kind]
    before = array.copy()
    assert dist.broadcast(array) is array
    assert dist.broadcast(array, src=0) is array
    assert dist.broadcast(array, src=np.int64(0)) is array
    np.testing.assert_array_equal(array, before, strict=True)


def test_collectives_on_a_tensor_return_the_tensor_unchanged(world):
    tensor = ma.Tensor(np.arange(6, dtype=np.float32).reshape(2, 3))
    version = tensor._version
    assert dist.all_reduce(tensor, "max") is tensor
    assert dist.broadcast(tensor) is tensor
    np.testing.assert_array_equal(tensor.data, np.arange(6, dtype=np.float32).reshape(2, 3))
    assert tensor._version == version


@pytest.mark.parametrize("op", ["mean", "SUM", "avg", None, 0])
def test_all_reduce_with_an_unknown_op_raises_valueerror_naming_it(world, op):
    array = np.ones(3)
    with pytest.raises(ValueError, match=re.escape(repr(op))):
        dist.all_reduce(array, op)
    np.testing.assert_array_equal(array, np.ones(3))


@pytest.mark.parametrize("array", [[1.0, 2.0], (1, 2), 3.0, None, np.array([1, "a"], dtype=object),
                                   np.array([True, False]), np.zeros(2, np.complex128), np.zeros(2, np.uint64)],
                         ids=["list", "tuple", "float", "None", "object", "bool", "complex128", "uint64"])
@pytest.mark.parametrize("collective", ["all_reduce", "broadcast"])
def test_anything_but_an_array_of_a_supported_dtype_raises_typeerror(world, collective, array):
    with pytest.raises(TypeError, match=collective):
        getattr(dist, collective)(array)


@pytest.mark.parametrize("src", [1, -1, 2, True, False, 0.0, "0", None])
def test_broadcast_from_a_src_outside_the_world_raises_valueerror(world, src):
    with pytest.raises(ValueError, match=rf"src.*{re.escape(repr(src))}"):
        dist.broadcast(np.ones(2), src=src)
    with pytest.raises(ValueError, match=rf"src.*{re.escape(repr(src))}"):
        dist.broadcast_object([1], src=src)
    with pytest.raises(ValueError, match=rf"src.*{re.escape(repr(src))}"):
        dist.broadcast_parameters(small_model(), src=src)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=40, deadline=None)
@given(value=json_values)
def test_broadcast_object_round_trips_json_values(value):
    pytest.importorskip("mpi4py")
    dist.init_process_group("mpi")
    try:
        got = dist.broadcast_object(value)
        assert got == value and type(got) is type(value)
        if isinstance(value, list | dict) and value:
            assert got is not value  # a copy, as every other rank receives
    finally:
        dist.destroy_process_group()


def test_broadcast_object_sends_json_so_tuples_arrive_as_lists_and_the_rest_is_refused(world):
    assert dist.broadcast_object({"shape": (2, 3), "lr": 0.1}) == {"shape": [2, 3], "lr": 0.1}
    with pytest.raises(TypeError):
        dist.broadcast_object({1, 2})
    with pytest.raises(TypeError):
        dist.broadcast_object(np.ones(2))


# --------------------------------------------------------------------------- DistributedOptimizer at world size 1


def parameters(model):
    return {name: value.copy() for name, value in model.state_dict().items()}


def snapshot(optimizer):
    state = optimizer.state_dict()
    arrays = {f"{i}/{name}": np.copy(array) for i, buffers in state["state"].items() for name, array in buffers.items()}
    return {"param_groups": state["param_groups"], **arrays}


def assert_same(a, b):
    """Exactly equal: the same keys, the same values bit for bit (a world of 1 runs the same operations)."""
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], np.ndarray):
            assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, key
            assert np.array_equal(a[key], b[key]), key
        else:
            assert a[key] == b[key], key


def train(model, optimizer, scheduler, steps, data_seed=0):
    """``steps`` steps on random batches (the same batches for the same data_seed); dropout draws from the engine."""
    model.train()
    rng = np.random.default_rng(data_seed)
    for _ in range(steps):
        x = rng.standard_normal((8, 5)).astype(np.float32)
        y = rng.integers(0, 3, 8)
        optimizer.zero_grad()
        F.cross_entropy(model(ma.Tensor(x)), y).backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()


def make_run(make_optimizer, seed, wrap):
    ma.manual_seed(seed)
    model = small_model()
    inner = make_optimizer(model.parameters())
    optimizer = dist.DistributedOptimizer(inner) if wrap else inner
    return model, inner, optimizer, StepLR(optimizer, step_size=2, gamma=0.5)


def test_broadcast_parameters_and_optimizer_state_change_nothing_at_world_size_1(world):
    ma.manual_seed(0)
    model = small_model()
    optimizer = SGD(model.parameters(), lr=0.1, momentum=0.9)
    train(model, optimizer, None, steps=2)
    params, state = parameters(model), snapshot(optimizer)
    dist.broadcast_parameters(model)
    dist.broadcast_parameters(list(model.parameters()))
    dist.broadcast_optimizer_state(optimizer)
    dist.broadcast_optimizer_state(dist.DistributedOptimizer(optimizer))
    assert_same(parameters(model), params)
    assert_same(snapshot(optimizer), state)


OPTIMIZERS = {
    "sgd-momentum": lambda params: SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-3),
    "sgd-nesterov": lambda params: SGD(params, lr=0.05, momentum=0.8, nesterov=True),
    "adam": lambda params: Adam(params, lr=1e-2, weight_decay=1e-4),
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_distributed_optimizer_at_world_size_1_is_exactly_the_plain_optimizer(world, name):
    plain_model, plain, _, plain_scheduler = make_run(OPTIMIZERS[name], seed=3, wrap=False)
    train(plain_model, plain, plain_scheduler, steps=5)
    plain_rng = backend.rng_state()
    model, inner, wrapped, scheduler = make_run(OPTIMIZERS[name], seed=3, wrap=True)
    train(model, wrapped, scheduler, steps=5)
    assert_same(parameters(model), parameters(plain_model))
    assert_same(snapshot(inner), snapshot(plain))
    assert wrapped.param_groups[0]["lr"] == plain.param_groups[0]["lr"] < OPTIMIZERS[name]([ma.Tensor(
        np.zeros(1, np.float32))]).param_groups[0]["lr"]  # the scheduler lowered the rate through the wrapper
    assert scheduler.get_last_lr() == plain_scheduler.get_last_lr() and scheduler.last_epoch == 5
    assert backend.rng_state() == plain_rng  # the same dropout draws, no more: a world of 1 draws nothing


def test_distributed_optimizer_forwards_param_groups_state_dict_and_zero_grad(world):
    ma.manual_seed(1)
    model = small_model()
    inner = SGD(model.parameters(), lr=0.1, momentum=0.9)
    wrapped = dist.DistributedOptimizer(inner)
    assert wrapped.optimizer is inner
    assert wrapped.param_groups is inner.param_groups
    assert wrapped.state is inner.state
    assert "SGD" in repr(wrapped) and repr(wrapped).startswith("DistributedOptimizer(")
    train(model, wrapped, None, steps=2)
    assert_same(snapshot(wrapped), snapshot(inner))
    assert all(p.grad is not None for p in model.parameters())
    wrapped.zero_grad()
    assert all(p.grad is None for p in model.parameters())
    # load_state_dict reaches the wrapped optimiser.
    saved = inner.state_dict()
    other = SGD(model.parameters(), lr=0.5, momentum=0.5)
    dist.DistributedOptimizer(other).load_state_dict(saved)
    assert_same(snapshot(other), snapshot(inner))
    # A scheduler changes the wrapped optimiser's rates.
    scheduler = StepLR(wrapped, step_size=1, gamma=0.1)
    scheduler.step()
    assert inner.param_groups[0]["lr"] == pytest.approx(0.01)
    with pytest.raises(AttributeError):
        wrapped.no_such_attribute  # noqa: B018


def test_synchronize_at_world_size_1_changes_no_gradient(world):
    ma.manual_seed(2)
    model = small_model()
    wrapped = dist.DistributedOptimizer(SGD(model.parameters(), lr=0.1))
    x = ma.Tensor(np.random.default_rng(0).standard_normal((4, 5)).astype(np.float32))
    F.cross_entropy(model(x), np.array([0, 1, 2, 0])).backward()
    params = list(model.parameters())
    params[0].grad = None  # a parameter without a gradient stays without one
    grads = [p.grad for p in params]
    copies = [None if g is None else g.data.copy() for g in grads]
    wrapped.synchronize()
    for p, g, copy in zip(params, grads, copies):
        assert p.grad is g
        if g is not None:
            assert np.array_equal(g.data, copy)


@pytest.mark.parametrize("name", ["sgd-momentum", "adam"])
def test_a_checkpoint_of_a_distributed_optimizer_round_trips(world, tmp_path, name):
    path = tmp_path / "run.npz"
    model, inner, wrapped, scheduler = make_run(OPTIMIZERS[name], seed=4, wrap=True)
    train(model, wrapped, scheduler, steps=3)
    save_checkpoint(path, model, wrapped, scheduler, epoch=3)
    saved_params, saved_state, saved_lr = parameters(model), snapshot(inner), scheduler.get_last_lr()

    fresh_model, fresh_inner, fresh_wrapped, fresh_scheduler = make_run(OPTIMIZERS[name], seed=99, wrap=True)
    assert load_checkpoint(path, fresh_model, fresh_wrapped, fresh_scheduler)["epoch"] == 3
    assert_same(parameters(fresh_model), saved_params)
    assert_same(snapshot(fresh_inner), saved_state)
    assert fresh_scheduler.get_last_lr() == saved_lr and fresh_scheduler.last_epoch == 3

    # Both go on identically from the checkpoint's RNG state; a plain optimiser loads the same checkpoint.
    saved_rng = backend.rng_state()
    train(fresh_model, fresh_wrapped, fresh_scheduler, steps=2, data_seed=1)
    backend.set_rng_state(saved_rng)
    train(model, wrapped, scheduler, steps=2, data_seed=1)
    assert_same(parameters(fresh_model), parameters(model))
    plain_model, plain, _, plain_scheduler = make_run(OPTIMIZERS[name], seed=7, wrap=False)
    load_checkpoint(path, plain_model, plain, plain_scheduler)
    assert_same(snapshot(plain), saved_state)


def test_wrapping_twice_or_wrapping_a_non_optimizer_raises_typeerror(world):
    model = small_model()
    wrapped = dist.DistributedOptimizer(SGD(model.parameters(), lr=0.1))
    with pytest.raises(TypeError, match="already a DistributedOptimizer"):
        dist.DistributedOptimizer(wrapped)
    for thing in [model, list(model.parameters()), object(), None, "SGD"]:
        with pytest.raises(TypeError, match=type(thing).__name__):
            dist.DistributedOptimizer(thing)


# --------------------------------------------------------------------------- packed buffers


def tensors_of(specs, seed=0):
    rng = np.random.default_rng(seed)
    return [ma.Tensor((rng.standard_normal(shape) * 10).astype(dtype)) for shape, dtype in specs]


def check_layout(tensors, packed):
    """Every tensor at its own offset, end to end per (device, dtype), one flag slot each at the buffer's end."""
    expected_keys = {("cpu", t.data.dtype.name) for t in tensors}
    assert set(packed.slots) == set(packed.buffers) == expected_keys
    seen = []
    for key, slots in packed.slots.items():
        members = [t for t in tensors if t.data.dtype.name == key[1]]
        assert [t for t, _, _ in slots] == members  # in the order given
        buffer = packed.buffers[key]
        assert buffer.ndim == 1 and buffer.flags.c_contiguous and buffer.dtype.name == key[1]
        sizes = [t.data.size for t in members]
        assert buffer.size == sum(sizes) + len(members)  # the values, then one flag slot per tensor
        position = 0
        for (tensor, start, stop), size in zip(slots, sizes):
            assert (start, stop) == (position, position + size)
            position = stop
        seen += [id(t) for t, _, _ in slots]
    assert sorted(seen) == sorted(id(t) for t in tensors)  # each tensor exactly once
    assert [(buffer, slots) for buffer, slots in packed.items()] == [
        (packed.buffers[key], packed.slots[key]) for key in packed.slots]


def pack_and_unpack(packed):
    """Write each tensor's values and a flag, then read them back out as new arrays, as synchronize does."""
    out = {}
    for buffer, slots in packed.items():
        flags = buffer[slots[-1][2]:]
        assert flags.size == len(slots)
        for position, (tensor, start, stop) in enumerate(slots):
            buffer[start:stop] = tensor.data.reshape(-1)
            flags[position] = position + 1
        for position, (tensor, start, stop) in enumerate(slots):
            assert flags[position] == position + 1  # no tensor's values overwrote a flag
            out[id(tensor)] = buffer[start:stop].reshape(tensor.data.shape).copy()
    return out


def test_packed_buffers_of_mixed_float32_and_float64_tensors():
    specs = [((3, 4), "float32"), ((5,), "float64"), ((2, 2, 2), "float32"), ((), "float64"), ((0, 3), "float32"),
             ((7,), "float64")]
    tensors = tensors_of(specs)
    packed = dist._PackedBuffers(tensors)
    check_layout(tensors, packed)
    assert packed.buffers[("cpu", "float32")].size == 12 + 8 + 0 + 3
    assert packed.buffers[("cpu", "float64")].size == 5 + 1 + 7 + 3
    assert [(start, stop) for _, start, stop in packed.slots[("cpu", "float32")]] == [(0, 12), (12, 20), (20, 20)]
    assert [(start, stop) for _, start, stop in packed.slots[("cpu", "float64")]] == [(0, 5), (5, 6), (6, 13)]
    unpacked = pack_and_unpack(packed)
    for tensor in tensors:
        got = unpacked[id(tensor)]
        assert got.dtype == tensor.data.dtype and got.shape == tensor.data.shape
        assert np.array_equal(got, tensor.data)


@settings(max_examples=30, deadline=None)
@given(specs=st.lists(st.tuples(st.lists(st.integers(0, 4), max_size=3).map(tuple),
                                st.sampled_from(["float32", "float64", "float16", "int64"])), max_size=8),
       seed=st.integers(0, 2**16))
def test_packing_round_trips_every_tensor_exactly(specs, seed):
    tensors = tensors_of(specs, seed)
    packed = dist._PackedBuffers(tensors)
    check_layout(tensors, packed)
    unpacked = pack_and_unpack(packed)
    for tensor in tensors:
        assert np.array_equal(unpacked[id(tensor)], tensor.data)


def test_the_signature_changes_with_the_tensors_their_order_shape_or_dtype():
    a, b = tensors_of([((3,), "float32"), ((2, 2), "float64")])
    packed = dist._PackedBuffers([a, b])
    assert packed.signature == dist._signature([a, b])
    assert packed.signature != dist._signature([b, a])
    assert packed.signature != dist._signature([a])
    assert packed.signature != dist._signature([a, ma.Tensor(np.zeros((2, 2), np.float64))])
    b.data = b.data.reshape(4)
    assert packed.signature != dist._signature([a, b])
    b.data = b.data.astype(np.float32).reshape(2, 2)
    assert packed.signature != dist._signature([a, b])


def test_packed_buffers_of_no_tensors_are_empty():
    packed = dist._PackedBuffers([])
    assert packed.slots == {} and packed.buffers == {} and list(packed.items()) == []
