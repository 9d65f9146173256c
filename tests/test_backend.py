"""minialex.backend: array modules, device names, seeding; and the GPU path where CuPy sees a device."""

import importlib.util

import numpy as np
import pytest

import minialex as ma
import minialex.functional as F
from minialex import backend

requires_cuda = pytest.mark.skipif(not ma.cuda.is_available(), reason="CuPy with a CUDA device is not available")


# --------------------------------------------------------------------------- random numbers


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_manual_seed_makes_uniform_repeat(dtype):
    ma.manual_seed(123)
    first = backend.uniform((3, 4), dtype)
    ma.manual_seed(123)
    second = backend.uniform((3, 4), dtype)
    np.testing.assert_array_equal(first, second)
    assert first.dtype == dtype and first.shape == (3, 4)
    assert np.all((first >= 0) & (first < 1))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_manual_seed_makes_normal_repeat(dtype):
    ma.manual_seed(7)
    first = backend.normal((50,), dtype, mean=2.0, std=0.5)
    ma.manual_seed(7)
    second = backend.normal((50,), dtype, mean=2.0, std=0.5)
    np.testing.assert_array_equal(first, second)
    assert first.dtype == dtype


def test_different_seeds_give_different_numbers():
    ma.manual_seed(1)
    a = backend.uniform((100,), np.float64)
    ma.manual_seed(2)
    b = backend.uniform((100,), np.float64)
    assert not np.array_equal(a, b)


def test_successive_draws_differ():
    ma.manual_seed(5)
    assert not np.array_equal(backend.uniform((100,), np.float64), backend.uniform((100,), np.float64))


def test_normal_has_requested_mean_and_std():
    ma.manual_seed(0)
    sample = backend.normal((20_000,), np.float64, mean=3.0, std=0.01)
    assert abs(sample.mean() - 3.0) < 1e-3
    assert abs(sample.std() - 0.01) < 1e-3


@pytest.mark.parametrize("seed", [-1, 1.5, "3", None, True])
def test_manual_seed_rejects_anything_but_a_non_negative_integer(seed):
    with pytest.raises(ValueError):
        ma.manual_seed(seed)


def test_manual_seed_accepts_zero_and_numpy_integers():
    ma.manual_seed(0)
    ma.manual_seed(np.int64(42))


def test_rng_state_round_trips():
    ma.manual_seed(9)
    backend.uniform((3,), np.float64)
    state = backend.rng_state()
    first = backend.uniform((5,), np.float64)
    backend.set_rng_state(state)
    np.testing.assert_array_equal(backend.uniform((5,), np.float64), first)


def test_rng_state_is_json_and_accepts_a_state_without_gpu_keys():
    import json

    ma.manual_seed(4)
    state = json.loads(json.dumps(backend.rng_state()))  # what a checkpoint stores
    assert state["seed"] == 4 and state["cuda"] == {}
    first = backend.uniform((4,), np.float32)
    del state["cuda"]  # a checkpoint from before GPU keys were saved
    backend.set_rng_state(state)
    np.testing.assert_array_equal(backend.uniform((4,), np.float32), first)


def splitmix64_reference(key, counters):
    """The GPU generator's formula on the host: the (counter+1)-th output of SplitMix64 started at key."""
    with np.errstate(over="ignore"):
        z = np.uint64(key) + (counters.astype(np.uint64) + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def first_cuda_key(seed, index=0):
    """The key of the first GPU draw after manual_seed(seed), as backend derives it."""
    return np.random.default_rng([seed, index + 1]).integers(0, 2**64, dtype=np.uint64)


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cuda_uniform_is_splitmix64_of_the_element_index(dtype):
    ma.manual_seed(11)
    drawn = backend.to_numpy(backend.uniform((7, 9), dtype, "cuda"))
    bits = splitmix64_reference(first_cuda_key(11), np.arange(63))
    expected = ((bits >> np.uint64(40)).astype(np.float64) * 2.0**-24 if dtype == np.float32
                else (bits >> np.uint64(11)).astype(np.float64) * 2.0**-53).reshape(7, 9).astype(dtype)
    assert drawn.dtype == dtype
    np.testing.assert_array_equal(drawn, expected)


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cuda_normal_is_box_muller_of_two_splitmix64_uniforms(dtype):
    ma.manual_seed(12)
    drawn = backend.to_numpy(backend.normal((50,), dtype, "cuda", mean=1.5, std=0.5))
    bits = splitmix64_reference(first_cuda_key(12), np.arange(100))
    if dtype == np.float32:
        u = ((bits >> np.uint64(40)).astype(np.float64) * 2.0**-24).astype(np.float32)
    else:
        u = (bits >> np.uint64(11)).astype(np.float64) * 2.0**-53
    u1, u2 = u[0::2].astype(np.float64), u[1::2].astype(np.float64)
    expected = 1.5 + 0.5 * np.sqrt(-2 * np.log(1 - u1)) * np.cos(2 * np.pi * u2)
    np.testing.assert_allclose(drawn, expected, rtol=1e-4 if dtype == np.float32 else 1e-12, atol=1e-5)


@pytest.mark.gpu
@requires_cuda
def test_cuda_samples_have_the_right_moments_and_fresh_keys():
    ma.manual_seed(13)
    u = backend.to_numpy(backend.uniform((1_000_000,), np.float32, "cuda"))
    n = backend.to_numpy(backend.normal((1_000_000,), np.float64, "cuda"))
    assert u.min() >= 0 and u.max() < 1
    assert abs(u.mean() - 0.5) < 3e-3 and abs(u.var() - 1 / 12) < 3e-3
    assert abs(n.mean()) < 5e-3 and abs(n.std() - 1) < 5e-3
    again = backend.to_numpy(backend.uniform((1_000_000,), np.float32, "cuda"))
    assert not np.array_equal(u, again)  # each call takes a new key


@pytest.mark.gpu
@requires_cuda
def test_cuda_rng_state_round_trips_through_json():
    import json

    ma.manual_seed(14)
    backend.uniform((3,), np.float32, "cuda")
    state = json.loads(json.dumps(backend.rng_state()))
    assert list(state["cuda"]) == ["0"]
    first = backend.to_numpy(backend.uniform((1000,), np.float32, "cuda"))
    ma.manual_seed(99)  # anything in between
    backend.uniform((5,), np.float32, "cuda")
    backend.set_rng_state(state)
    np.testing.assert_array_equal(backend.to_numpy(backend.uniform((1000,), np.float32, "cuda")), first)


# --------------------------------------------------------------------------- devices and array modules


def test_cuda_is_available_returns_a_bool():
    assert isinstance(ma.cuda.is_available(), bool)
    assert isinstance(ma.cuda.device_count(), int)


@pytest.mark.skipif(importlib.util.find_spec("cupy") is not None, reason="CuPy is installed here")
def test_cuda_is_unavailable_without_cupy():
    assert ma.cuda.is_available() is False
    assert ma.cuda.device_count() == 0


def test_get_array_module_of_numpy_arrays_is_numpy():
    assert backend.get_array_module(np.zeros(3)) is np
    assert backend.get_array_module(np.zeros(3), np.ones(2)) is np
    assert backend.get_array_module() is np


@pytest.mark.parametrize("name", ["cpu", "CPU", " cpu "])
def test_parse_device_cpu(name):
    assert backend.parse_device(name) == "cpu"


@pytest.mark.parametrize("name", ["tpu", "cuda:x", "cuda:", "cuda:-1", "cpu:0", ""])
def test_parse_device_rejects_unknown_names(name):
    with pytest.raises(ValueError):
        backend.parse_device(name)


@pytest.mark.parametrize("name", [0, None, np.zeros(1)])
def test_parse_device_rejects_non_strings(name):
    with pytest.raises(TypeError):
        backend.parse_device(name)


@pytest.mark.skipif(ma.cuda.is_available(), reason="CUDA is available here")
def test_parse_device_cuda_without_cuda_is_a_runtime_error():
    with pytest.raises(RuntimeError, match="CUDA"):
        backend.parse_device("cuda")


def test_device_of_numpy_array_is_cpu():
    assert backend.device_of(np.zeros(2)) == "cpu"
    assert backend.is_array(np.zeros(2)) and not backend.is_array([0.0])


def test_to_numpy_returns_a_copy():
    source = np.arange(3.0)
    copy = backend.to_numpy(source)
    copy[0] = 10.0
    assert source[0] == 0.0


def test_to_device_cpu_of_cpu_array_is_the_same_array():
    source = np.arange(3.0)
    assert backend.to_device(source, "cpu") is source


def test_scatter_add_adds_repeated_indices():
    target = np.zeros(4)
    backend.scatter_add(target, np.array([0, 2, 2, 2]), np.array([1.0, 1.0, 2.0, 3.0]))
    np.testing.assert_array_equal(target, [1.0, 0.0, 6.0, 0.0])


# --------------------------------------------------------------------------- GPU


def _cupy():
    import cupy  # noqa: PLC0415 - only where CUDA is available

    return cupy


@pytest.mark.gpu
@requires_cuda
def test_tensor_to_cuda_and_back_keeps_values():
    array = np.arange(6.0, dtype=np.float32).reshape(2, 3)
    on_gpu = ma.tensor(array, device="cuda")
    assert on_gpu.device == "cuda:0"
    assert isinstance(on_gpu.data, _cupy().ndarray)
    assert on_gpu.dtype == np.float32
    np.testing.assert_array_equal(on_gpu.numpy(), array)
    for back in (on_gpu.cpu(), on_gpu.to("cpu")):
        assert back.device == "cpu" and isinstance(back.data, np.ndarray)
        np.testing.assert_array_equal(back.data, array)
    moved = ma.tensor(array).to("cuda:0")
    assert moved.device == "cuda:0"
    assert ma.tensor(array).cuda().device == "cuda:0"


@pytest.mark.gpu
@requires_cuda
def test_tensor_of_cupy_array_keeps_device_and_copies():
    cupy = _cupy()
    source = cupy.arange(3, dtype=cupy.float32)
    t = ma.tensor(source)
    assert t.device == "cuda:0"
    source[0] = 100
    assert float(t.data[0]) == 0.0


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_op_and_backward_on_cuda_equal_cpu(dtype):
    rng = np.random.default_rng(0)
    arrays = [rng.normal(size=s).astype(dtype) for s in [(4, 6), (5, 6), (5,)]]

    def loss_and_grads(device):
        x, w, b = (ma.tensor(a, requires_grad=True, device=device) for a in arrays)
        h = F.relu(x @ w.T + b)
        loss = F.log_softmax(h * 2.0, axis=1)[np.array([0, 1, 1, 3]), np.array([4, 0, 0, 2])].mean()
        loss = loss + (h**2).max(axis=0).sum() * 0.1 + x.exp().mean() - F.softmax(h, axis=0)[0].sum()
        loss.backward()
        assert loss.device == x.grad.device == backend.parse_device(device)
        assert loss.dtype == dtype and x.grad.dtype == dtype
        return loss.numpy(), [t.grad.numpy() for t in (x, w, b)]

    loss_cpu, grads_cpu = loss_and_grads("cpu")
    loss_gpu, grads_gpu = loss_and_grads("cuda")
    rtol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(loss_gpu, loss_cpu, rtol=rtol)
    for gpu, cpu in zip(grads_gpu, grads_cpu):
        np.testing.assert_allclose(gpu, cpu, rtol=rtol, atol=rtol * 1e-2)


@pytest.mark.gpu
@requires_cuda
def test_gradient_flows_back_across_to_device():
    x = ma.tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    y = (x.to("cuda") * 3.0).sum()
    y.backward()
    assert x.grad.device == "cpu"
    np.testing.assert_array_equal(x.grad.data, [3.0, 3.0, 3.0])
    assert ma.gradcheck(lambda t: (t.to("cuda") ** 2).to("cpu"), [x])


@pytest.mark.gpu
@requires_cuda
def test_mixing_devices_in_one_op_names_both_devices():
    on_cpu = ma.tensor(np.ones(3, dtype=np.float32))
    on_gpu = ma.tensor(np.ones(3, dtype=np.float32), device="cuda")
    for op in (lambda a, b: a + b, lambda a, b: a * b, lambda a, b: a @ b):
        with pytest.raises(RuntimeError) as info:
            op(on_cpu, on_gpu)
        assert "cpu" in str(info.value) and "cuda:0" in str(info.value)


@pytest.mark.gpu
@requires_cuda
def test_manual_seed_makes_cuda_random_numbers_repeat():
    cupy = _cupy()
    ma.manual_seed(11)
    first_u = backend.uniform((3, 4), np.float32, device="cuda:0")
    first_n = backend.normal((3, 4), np.float32, device="cuda:0")
    ma.manual_seed(11)
    second_u = backend.uniform((3, 4), np.float32, device="cuda:0")
    second_n = backend.normal((3, 4), np.float32, device="cuda:0")
    assert isinstance(first_u, cupy.ndarray) and first_u.dtype == np.float32
    np.testing.assert_array_equal(cupy.asnumpy(first_u), cupy.asnumpy(second_u))
    np.testing.assert_array_equal(cupy.asnumpy(first_n), cupy.asnumpy(second_n))
    ma.manual_seed(12)
    assert not np.array_equal(cupy.asnumpy(backend.uniform((3, 4), np.float32, device="cuda:0")), cupy.asnumpy(first_u))


@pytest.mark.gpu
@requires_cuda
def test_get_array_module_of_cupy_array_is_cupy():
    cupy = _cupy()
    assert backend.get_array_module(cupy.zeros(2)) is cupy
    assert backend.get_array_module(np.zeros(2), cupy.zeros(2)) is cupy
    assert backend.parse_device("cuda") == "cuda:0"
