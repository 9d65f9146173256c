"""The NCCL backend: its refusals on any machine, and one rank on a GPU (marked gpu).

NCCL refuses two ranks on one GPU, so a single GPU can only run a world of
one; the collectives still go through NCCL then (they are not skipped), so
this exercises the real calls.
"""

import numpy as np
import pytest

import minialex as ma
import minialex.distributed as dist
from minialex import backend, nn, optim

pytest.importorskip("mpi4py", reason="the 'dist' extra (mpi4py, mpich) is not installed")

needs_nccl = pytest.mark.skipif(not backend.cuda_available(), reason="needs CUDA and CuPy")


@pytest.fixture
def no_group_left():
    yield
    if dist.is_initialized():
        dist.destroy_process_group()


@pytest.mark.skipif(backend.cuda_available(), reason="checks the machine without a GPU")
def test_nccl_without_a_gpu_is_refused_naming_what_is_missing_and_joins_no_group(no_group_left):
    with pytest.raises(RuntimeError, match="NCCL backend needs CuPy and a CUDA GPU"):
        dist.init_process_group("nccl")
    assert not dist.is_initialized()


def test_more_processes_on_a_machine_than_gpus_is_refused_before_nccl_starts(monkeypatch, no_group_left):
    class NoNccl:  # reached only if the check let the start go on
        def __getattr__(self, name):
            raise AssertionError(f"NCCL was used ({name}) although there is no GPU for this process")

    monkeypatch.setattr(backend, "nccl_module", NoNccl)
    monkeypatch.setattr(backend, "cuda_device_count", lambda: 0)
    with pytest.raises(RuntimeError, match="1 processes on one machine but it has 0 GPU.*one GPU per process"):
        dist.init_process_group("nccl")
    assert not dist.is_initialized()


@pytest.fixture
def nccl_group():
    dist.init_process_group("nccl")
    yield
    dist.destroy_process_group()


@pytest.mark.gpu
@needs_nccl
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64", "int32", "int64", "uint8"])
@pytest.mark.parametrize("op", ["sum", "prod", "min", "max"])
def test_one_rank_all_reduce_and_broadcast_go_through_nccl_and_keep_the_values(nccl_group, dtype, op):
    cupy = backend.cupy_module()
    assert dist.get_backend() == "nccl" and dist.get_world_size() == 1
    base = cupy.zeros((3, 8), dtype)
    view = base[:, ::2]
    view[...] = cupy.arange(12).reshape(3, 4) % 7 + 1
    expected = cupy.asnumpy(view).copy()
    assert dist.all_reduce(view, op) is view
    dist.broadcast(view, src=0)
    np.testing.assert_array_equal(cupy.asnumpy(view), expected)
    np.testing.assert_array_equal(cupy.asnumpy(base[:, 1::2]), 0)


@pytest.mark.gpu
@needs_nccl
def test_one_rank_packed_average_on_the_gpu_leaves_the_gradients_as_they_were(nccl_group):
    ma.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3)).to("cuda:0")
    optimizer = dist.DistributedOptimizer(optim.SGD(model.parameters(), lr=0.1))
    x = ma.Tensor(backend.cupy_module().ones((2, 5), dtype=np.float32))
    model(x).sum().backward()
    before = [backend.to_numpy(p.grad.data) for p in model.parameters()]
    optimizer._average_packed(dist._group)  # the packed path, through NCCL, even alone
    for p, expected in zip(model.parameters(), before):
        np.testing.assert_array_equal(backend.to_numpy(p.grad.data), expected)
