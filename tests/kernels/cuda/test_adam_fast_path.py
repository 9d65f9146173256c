"""The fused CUDA Adam / AdamW update computes what the generic kernel computes, on CuPy and on NumPy.

Each test runs ``adam_update`` three ways: the NumPy path (the reference), the
generic CuPy path (fast paths switched off) and the fused ElementwiseKernel,
in float32 and float64. The fused kernel may contract multiply-adds (FMA) and
rounds in a slightly different order, so they agree to round-off, not bit for
bit. Skipped, module and all, where CuPy or a CUDA device is missing; nothing
here imports CuPy at the top (it comes from ``backend.cupy_module()``).
"""

import numpy as np
import pytest

import minialex as ma
from minialex import backend
from minialex.kernels import adam
from minialex.kernels import cuda as fast_paths
from minialex.kernels.cuda import adam as cuda_adam
from minialex.optim import Adam, AdamW

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not ma.cuda.is_available(), reason="needs CuPy and a CUDA device"),
]

DTYPES = [np.float32, np.float64]


def tolerance(dtype):
    # A few steps of about a dozen rounded operations on values of order one; the step
    # m / denom is at most 4 in size (gradients of magnitude 0.5 to 2), times lr <= 0.05.
    return dict(rtol=2e-5, atol=2e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-13)


@pytest.fixture
def cp():
    return backend.cupy_module()


@pytest.fixture
def fast_calls(monkeypatch):
    """Counts the calls that reach the fused kernel, to show the dispatch really took it."""
    calls = []
    original = cuda_adam.adam_update

    def spy(*args, **kwargs):
        calls.append(args[0].dtype)
        return original(*args, **kwargs)

    monkeypatch.setattr(cuda_adam, "adam_update", spy)
    return calls


def host(array):
    return backend.to_numpy(array)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weight_decay, decoupled", [(0.0, False), (0.05, False), (0.05, True)])
@pytest.mark.parametrize("betas", [(0.9, 0.999), (0.3, 0.0)])
def test_fused_adam_equals_generic_and_numpy_over_four_steps(cp, fast_calls, dtype, weight_decay, decoupled, betas):
    rng = np.random.default_rng(20)
    shape = (64, 33)
    start = rng.uniform(-1, 1, shape).astype(dtype)
    grads = [(rng.choice([-1.0, 1.0], shape) * rng.uniform(0.5, 2.0, shape)).astype(dtype) for _ in range(4)]
    results = {}
    for path in ("numpy", "generic", "fast"):
        xp = cp if path != "numpy" else np
        param, m, v = xp.asarray(start.copy()), xp.zeros(shape, dtype), xp.zeros(shape, dtype)
        pointers = None if xp is np else (param.data.ptr, m.data.ptr, v.data.ptr)
        scratch = xp.empty(shape, dtype)
        with fast_paths.use_fast_paths(path == "fast"):
            for t, grad in enumerate(grads, start=1):
                adam.adam_update(param, xp.asarray(grad), m, v, None if path == "fast" else scratch,
                                 t, 0.05, betas[0], betas[1], 1e-8, weight_decay, decoupled)
        if pointers is not None:
            assert (param.data.ptr, m.data.ptr, v.data.ptr) == pointers  # in place, in the same memory
        results[path] = [host(a) for a in (param, m, v)]
    for path in ("generic", "fast"):
        for name, got, want in zip(("param", "exp_avg", "exp_avg_sq"), results[path], results["numpy"]):
            assert got.dtype == dtype
            np.testing.assert_allclose(got, want, err_msg=f"{path} {name}", **tolerance(dtype))
    assert fast_calls == [np.dtype(dtype)] * 4


@pytest.mark.parametrize("cls", [Adam, AdamW])
def test_the_optimiser_on_the_gpu_follows_the_cpu_run(cp, fast_calls, cls):
    rng = np.random.default_rng(21)
    shapes = [(8, 5), (5,)]
    start = [rng.uniform(-1, 1, s).astype(np.float32) for s in shapes]
    grads = [[(rng.choice([-1.0, 1.0], s) * rng.uniform(0.5, 2.0, s)).astype(np.float32) for s in shapes]
             for _ in range(3)]
    runs = {}
    for device in ("cpu", "cuda"):
        params = [ma.tensor(p.copy(), requires_grad=True, device=device) for p in start]
        opt = cls(params, lr=0.01, weight_decay=0.1)
        for step in grads:
            for p, g in zip(params, step):
                p.grad = ma.tensor(g.copy(), device=device)
            opt.step()
        runs[device] = [p.numpy() for p in params]
        if device == "cuda":
            assert all(backend.is_cuda_array(s["exp_avg"]) and s["step"] == 3 for s in opt.state.values())
            state = opt.state_dict()["state"]
            assert isinstance(state[0]["exp_avg"], np.ndarray) and state[0]["step"] == 3
    for gpu, cpu in zip(runs["cuda"], runs["cpu"]):
        np.testing.assert_allclose(gpu, cpu, **tolerance(np.float32))
    assert len(fast_calls) == 3 * len(shapes)
