"""The engine on the GPU: devices, seeding, optimiser state, and a whole AlexNet step equal to the CPU's.

Skipped, module and all, where CuPy or a CUDA device is missing; CuPy comes
from ``backend.cupy_module()``, never from an import at the top.
"""

import contextlib
import importlib.util
import io
import re
from pathlib import Path

import numpy as np
import pytest

import minialex as ma
import minialex.functional as F
from minialex import backend, models, nn, optim
from minialex.data import DataLoader
from minialex.kernels import cuda as fast_paths

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not ma.cuda.is_available(), reason="needs CuPy and a CUDA device"),
]

REPO = Path(__file__).resolve().parents[1]
MNIST_DIR = REPO / ".." / "shared" / "data" / "mnist"


@pytest.fixture
def cp():
    return backend.cupy_module()


# --------------------------------------------------------------------------- devices


def test_tensor_to_cuda_and_back_keeps_values_and_routes_gradients_home(cp):
    x = ma.tensor([[1.0, -2.0], [3.0, 4.0]], requires_grad=True)
    on_gpu = x.to("cuda")
    assert on_gpu.device == "cuda:0" and isinstance(on_gpu.data, cp.ndarray)
    assert x.cuda().device == "cuda:0" and on_gpu.cpu().device == "cpu"
    np.testing.assert_array_equal(on_gpu.numpy(), x.numpy())
    (on_gpu * on_gpu).sum().backward()
    assert x.grad.device == "cpu"  # the gradient came back to the leaf's device
    np.testing.assert_allclose(x.grad.numpy(), 2 * x.numpy())


def test_a_tensor_made_on_the_gpu_computes_there(cp):
    x = ma.tensor(np.arange(6, dtype=np.float32).reshape(2, 3), device="cuda", requires_grad=True)
    y = F.relu(x * 2.0 - 3.0).sum()
    assert y.device == "cuda:0"
    y.backward()
    assert x.grad.device == "cuda:0"
    np.testing.assert_array_equal(x.grad.numpy(), np.where(np.arange(6).reshape(2, 3) * 2 - 3 > 0, 2.0, 0.0))


@pytest.mark.parametrize("operation", [
    lambda g, c: g + c,
    lambda g, c: g @ c.T,
    lambda g, c: F.linear(g, c),
    lambda g, c: F.conv2d(g.reshape(1, 1, 2, 2), c.reshape(1, 1, 2, 2)),
])
def test_mixing_devices_in_one_operation_raises_a_clear_error(operation):
    on_gpu = ma.tensor(np.ones((2, 2), np.float32), device="cuda")
    on_cpu = ma.tensor(np.ones((2, 2), np.float32))
    with pytest.raises(RuntimeError, match=r"one device.*cpu.*cuda:0|one device.*cuda:0.*cpu"):
        operation(on_gpu, on_cpu)


def test_cross_entropy_takes_targets_on_the_gpu_or_on_the_cpu(cp):
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((5, 7)).astype(np.float32)
    target = rng.integers(0, 7, 5)
    expected = F.cross_entropy(ma.tensor(logits), target).item()
    for given in (target, cp.asarray(target), ma.tensor(target, device="cuda")):
        logits_gpu = ma.tensor(logits, device="cuda", requires_grad=True)
        loss = F.cross_entropy(logits_gpu, given)
        assert loss.device == "cuda:0"
        assert loss.item() == pytest.approx(expected, rel=1e-5)
        loss.backward()
        assert logits_gpu.grad.device == "cuda:0"


def test_the_data_loader_moves_batches_to_the_gpu(cp):
    class Digits:
        def __len__(self):
            return 10

        def __getitem__(self, index):
            return np.full((1, 4, 4), index, np.float32), index

    batches = list(DataLoader(Digits(), batch_size=4, device="cuda"))
    assert [len(labels) for _, labels in batches] == [4, 4, 2]
    for images, labels in batches:
        assert isinstance(images, cp.ndarray) and isinstance(labels, cp.ndarray)


# --------------------------------------------------------------------------- random numbers


def test_manual_seed_repeats_the_cupy_random_numbers(cp):
    draws = []
    for _ in range(2):
        ma.manual_seed(42)
        draws.append((backend.uniform((1000,), np.float32, "cuda:0"), backend.normal((1000,), np.float64, "cuda:0")))
    for first, second in zip(*draws):
        assert isinstance(first, cp.ndarray)
        np.testing.assert_array_equal(backend.to_numpy(first), backend.to_numpy(second))
    ma.manual_seed(43)
    assert not np.array_equal(backend.to_numpy(backend.uniform((1000,), np.float32, "cuda:0")),
                              backend.to_numpy(draws[0][0]))


def test_manual_seed_repeats_dropout_masks_on_the_gpu():
    x = ma.tensor(np.ones((64, 100), np.float32), device="cuda")
    ma.manual_seed(5)
    first = F.dropout(x, 0.5).numpy()
    ma.manual_seed(5)
    second = F.dropout(x, 0.5).numpy()
    np.testing.assert_array_equal(first, second)
    assert 0.4 < (first == 0).mean() < 0.6


# --------------------------------------------------------------------------- modules and optimisers


def small_net():
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.LocalResponseNorm(2), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Dropout(0.5), nn.Linear(4 * 4 * 4, 3))


def test_module_to_cuda_then_sgd_steps_keep_every_array_on_the_gpu(cp):
    ma.manual_seed(0)
    model = small_net().to("cuda")
    optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True)
    x = ma.tensor(np.random.default_rng(0).standard_normal((5, 1, 8, 8)).astype(np.float32), device="cuda")
    target = cp.asarray(np.array([0, 1, 2, 0, 1]))
    for _ in range(3):
        loss = F.cross_entropy(model(x), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for index, parameter in enumerate(model.parameters()):
        assert parameter.device == "cuda:0" and parameter.grad.device == "cuda:0"
        buffer = optimizer.state[index]["momentum_buffer"]
        assert isinstance(buffer, cp.ndarray) and buffer.device.id == parameter.data.device.id
    # Saved state is NumPy; loading puts the buffers back beside their parameters.
    saved = optimizer.state_dict()
    assert all(isinstance(a, np.ndarray) for s in saved["state"].values() for a in s.values())
    fresh = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True)
    fresh.load_state_dict(saved)
    for index, parameter in enumerate(model.parameters()):
        restored = fresh.state[index]["momentum_buffer"]
        assert isinstance(restored, cp.ndarray)
        np.testing.assert_array_equal(backend.to_numpy(restored), saved["state"][index]["momentum_buffer"])
    # And back to the CPU: the model works there again.
    model.to("cpu")
    assert all(p.device == "cpu" for p in model.parameters())
    model(ma.tensor(x.numpy()))


def test_load_state_dict_writes_cpu_values_into_gpu_parameters(cp):
    source = small_net()
    target = small_net().to("cuda")
    target.load_state_dict(source.state_dict())
    for (name, p), (_, q) in zip(source.named_parameters(), target.named_parameters()):
        assert q.device == "cuda:0", name
        np.testing.assert_array_equal(q.numpy(), p.numpy())


# --------------------------------------------------------------------------- a whole AlexNet step, GPU vs CPU


class SharedUniform:
    """Stands in for backend.uniform: the k-th draw of a run is the same on every device.

    Dropout (on both the generic and the fast path) gets its uniforms from
    backend.uniform, so replaying the draws gives the CPU and the GPU step
    identical masks.
    """

    def __init__(self):
        self.count = 0

    def __call__(self, shape, dtype, device="cpu"):
        self.count += 1
        draw = np.random.default_rng(1000 + self.count).random(shape).astype(dtype)
        return backend.to_device(draw, device)


def alexnet_step(device, dtype, batch=2):
    """One paper-AlexNet training step (SGD momentum 0.9, wd 5e-4) on ``device``.

    Returns NumPy results: the loss, every parameter's gradient and its update (new - old).
    """
    ma.manual_seed(0)
    model = models.alexnet()  # built (and initialised) on the CPU, so both devices start equal
    for parameter in model.parameters():
        parameter.data = parameter.data.astype(dtype)
    before = {name: p.numpy() for name, p in model.named_parameters()}
    model.to(device)
    optimizer = optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    rng = np.random.default_rng(0)
    x = ma.tensor(rng.standard_normal((batch, 3, 227, 227)).astype(dtype), device=device)
    target = ma.tensor(rng.integers(0, 1000, batch), device=device)
    loss = F.cross_entropy(model(x), target)
    optimizer.zero_grad()
    loss.backward()
    grads = {name: p.grad.numpy() for name, p in model.named_parameters()}
    optimizer.step()
    updates = {name: p.numpy() - before[name] for name, p in model.named_parameters()}
    assert all(p.device == backend.parse_device(device) and p.dtype == dtype for p in model.parameters())
    return loss.item(), grads, updates


@pytest.fixture(scope="module")
def cpu_steps():
    """The CPU step of each dtype, computed once for the module."""
    steps = {}

    def get(dtype):
        if dtype not in steps:
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(backend, "uniform", SharedUniform())
                steps[dtype] = alexnet_step("cpu", dtype)
        return steps[dtype]

    return get


def relative_l2(actual, expected):
    return np.linalg.norm((actual - expected).ravel()) / max(np.linalg.norm(expected.ravel()), 1e-30)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("fast", [True, False], ids=["fast-paths", "generic-cupy"])
def test_paper_alexnet_training_step_on_gpu_equals_the_cpu_step(cpu_steps, monkeypatch, fast, dtype):
    monkeypatch.setattr(backend, "uniform", SharedUniform())
    with fast_paths.use_fast_paths(fast):
        loss, grads, updates = alexnet_step("cuda", dtype)
    cpu_loss, cpu_grads, cpu_updates = cpu_steps(dtype)
    assert loss == pytest.approx(cpu_loss, rel=1e-4 if dtype == np.float32 else 1e-10)
    for name in cpu_grads:
        for ours, theirs in ((grads[name], cpu_grads[name]), (updates[name], cpu_updates[name])):
            if dtype == np.float32:
                # Round-off differs (cuBLAS vs the CPU BLAS sum in other orders), and where two
                # entries of a max-pool window are within round-off of each other the devices may
                # pick different winners, sending that gradient to a neighbouring pixel. Such
                # near-ties move a few entries a little, so float32 compares whole tensors (L2).
                assert relative_l2(ours, theirs) < 1e-2, name
            else:
                # In float64 round-off is 1e-16 and near-ties vanish: entry by entry.
                scale = max(np.abs(theirs).max(), 1e-30)
                np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-9 * scale, err_msg=name)


# --------------------------------------------------------------------------- the example


def load_example():
    spec = importlib.util.spec_from_file_location("minialex_example_train_mnist_gpu", REPO / "examples" / "train_mnist.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.parametrize("model", ["alexnet-mnist", "alexnet"])
def test_train_mnist_example_runs_on_cuda(tmp_path, model):
    if not (MNIST_DIR / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"the shared MNIST files are missing from {MNIST_DIR}")
    example = load_example()
    out, err = io.StringIO(), io.StringIO()
    argv = ["--data-dir", MNIST_DIR, "--model", model, "--device", "cuda", "--epochs", "1", "--limit-train", "256",
            "--limit-test", "100", "--batch-size", "64", "--no-progress", "--out-dir", tmp_path]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = example.main([str(a) for a in argv])
    assert code == 0, err.getvalue()
    assert re.match(r"^test accuracy: \d{1,3}\.\d\d%$", out.getvalue().strip().splitlines()[-1])
    assert "device cuda" in out.getvalue()


@pytest.mark.slow
def test_resume_on_cuda_reaches_exactly_the_parameters_of_an_uninterrupted_run(tmp_path):
    """The GPU's dropout keys are in the checkpoint, so a resumed GPU run repeats the straight one bit for bit."""
    if not (MNIST_DIR / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"the shared MNIST files are missing from {MNIST_DIR}")
    import json  # noqa: PLC0415

    example = load_example()
    common = ["--data-dir", MNIST_DIR, "--device", "cuda", "--limit-train", "128", "--limit-test", "50",
              "--batch-size", "32", "--no-progress", "--seed", "3", "--shift", "2", "--step-size", "1"]

    def run(*argv):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = example.main([str(a) for a in [*common, *argv]])
        assert code == 0, err.getvalue()

    run("--epochs", 2, "--out-dir", tmp_path / "straight")
    run("--epochs", 1, "--out-dir", tmp_path / "resumed")
    run("--epochs", 2, "--out-dir", tmp_path / "resumed", "--resume")
    arrays = {}
    for name in ("straight", "resumed"):
        with np.load(tmp_path / name / "checkpoint.npz", allow_pickle=False) as archive:
            arrays[name] = {key: archive[key] for key in archive.files if key != "meta"}
            arrays[name + "_meta"] = json.loads(str(archive["meta"]))
    assert sorted(arrays["straight"]) == sorted(arrays["resumed"])
    for key, value in arrays["straight"].items():
        np.testing.assert_array_equal(arrays["resumed"][key], value, err_msg=key)
    assert arrays["resumed_meta"]["rng"] == arrays["straight_meta"]["rng"]
    assert list(arrays["straight_meta"]["rng"]["cuda"]) == ["0"]


# --------------------------------------------------------------------------- in place, versions, protocols


def test_in_place_updates_views_and_versions_on_the_gpu(cp):
    layer = nn.Linear(3, 2).to("cuda")
    with ma.no_grad():
        layer.weight += 0.5
    assert isinstance(layer.weight, nn.Parameter) and isinstance(layer.weight.data, cp.ndarray)
    loss = layer(ma.tensor(np.ones((2, 3), np.float32), device="cuda")).sum()
    with ma.no_grad():
        layer.weight *= 2.0
    with pytest.raises(RuntimeError, match="modified by an in-place operation"):
        loss.backward()
    base = ma.tensor(np.zeros((2, 3), np.float32), device="cuda")
    view = base.reshape(6)
    view += 1.0  # a view shares memory and version counter with its base, on the GPU too
    assert base._version == 1 and base.numpy().tolist() == [[1.0] * 3] * 2


def test_in_place_recorded_on_the_gpu_gives_the_cpu_gradient(cp):
    grads = []
    for device in ("cpu", "cuda"):
        x = ma.tensor([1.0, 2.0, -0.5], dtype="float64", requires_grad=True, device=device)
        h = x * 2.0
        y = h + 1.0
        h *= x
        (y + h).sum().backward()
        grads.append(x.grad.numpy())
    np.testing.assert_array_equal(grads[0], grads[1])


def test_comparisons_bool_and_asarray_on_the_gpu(cp):
    t = ma.tensor([1.0, 2.0, 3.0], device="cuda")
    mask = t > 1.5
    assert isinstance(mask.data, cp.ndarray) and mask.numpy().tolist() == [False, True, True]
    assert (t == np.array([1.0, 0.0, 3.0], np.float32)).numpy().tolist() == [True, False, True]
    assert bool(ma.tensor([2.0], device="cuda")) is True
    np.testing.assert_array_equal(np.asarray(t), [1.0, 2.0, 3.0])
