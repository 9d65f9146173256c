"""Checkpoints: a save/load round trip restores model, optimiser, scheduler and RNG; crashes keep the old file."""

import json
import os

import numpy as np
import pytest

import minialex as ma
import minialex.functional as F
from minialex import backend, nn
from minialex.checkpoint import load_checkpoint, save_checkpoint
from minialex.optim import SGD, StepLR


def small_model(hidden=8):
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Dropout(0.5),  # draws from the RNG while training
        nn.Linear(3 * 5 * 5, hidden),
        nn.ReLU(),
        nn.Linear(hidden, 4),
    )


def make_run(seed, hidden=8):
    ma.manual_seed(seed)
    model = small_model(hidden)
    optimizer = SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    scheduler = StepLR(optimizer, step_size=2, gamma=0.5)
    return model, optimizer, scheduler


def train_steps(model, optimizer, scheduler, steps):
    """Each step draws its batch from the engine's RNG, so the RNG state matters to the result."""
    model.train()
    for _ in range(steps):
        rng = backend.cpu_rng()
        x = rng.standard_normal((6, 1, 5, 5)).astype(np.float32)
        y = rng.integers(0, 4, 6)
        loss = F.cross_entropy(model(ma.Tensor(x)), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()


def parameters(model):
    return {name: value.copy() for name, value in model.state_dict().items()}


def assert_same_parameters(a, b):
    assert a.keys() == b.keys()
    for name in a:
        assert np.array_equal(a[name], b[name]), name


def test_load_restores_model_optimizer_scheduler_and_rng(tmp_path):
    path = tmp_path / "run.npz"
    model, optimizer, scheduler = make_run(seed=0)
    train_steps(model, optimizer, scheduler, 3)
    save_checkpoint(path, model, optimizer, scheduler, epoch=3, note="hello")
    saved_params = parameters(model)
    saved_momentum = {i: s["momentum_buffer"].copy() for i, s in optimizer.state.items()}
    saved_lr, saved_scheduler = optimizer.param_groups[0]["lr"], scheduler.state_dict()
    next_numbers = backend.cpu_rng().random(5)

    fresh, fresh_optimizer, fresh_scheduler = make_run(seed=99)
    backend.cpu_rng().random(17)  # move the RNG elsewhere
    meta = load_checkpoint(path, fresh, fresh_optimizer, fresh_scheduler)
    assert meta["epoch"] == 3 and meta["note"] == "hello"
    np.testing.assert_array_equal(backend.cpu_rng().random(5), next_numbers)
    assert_same_parameters(parameters(fresh), saved_params)
    assert fresh_optimizer.state.keys() == saved_momentum.keys()
    for i, buffer in saved_momentum.items():
        assert np.array_equal(fresh_optimizer.state[i]["momentum_buffer"], buffer)
    assert fresh_optimizer.param_groups[0]["lr"] == saved_lr == 0.05
    assert fresh_scheduler.state_dict() == saved_scheduler


def test_training_after_load_continues_exactly_as_without_the_interruption(tmp_path):
    path = tmp_path / "run.npz"
    model, optimizer, scheduler = make_run(seed=1)
    train_steps(model, optimizer, scheduler, 3)
    save_checkpoint(path, model, optimizer, scheduler)
    train_steps(model, optimizer, scheduler, 4)
    straight = parameters(model)

    resumed, resumed_optimizer, resumed_scheduler = make_run(seed=2)
    load_checkpoint(path, resumed, resumed_optimizer, resumed_scheduler)
    train_steps(resumed, resumed_optimizer, resumed_scheduler, 4)
    assert_same_parameters(parameters(resumed), straight)
    assert resumed_optimizer.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]


def test_the_checkpoint_is_a_plain_npz_that_loads_without_pickle(tmp_path):
    path = tmp_path / "run.npz"
    model, optimizer, scheduler = make_run(seed=0)
    train_steps(model, optimizer, scheduler, 1)
    save_checkpoint(path, model, optimizer, scheduler, epoch=1, history=[{"loss": 1.5}])
    with np.load(path, allow_pickle=False) as archive:
        names = set(archive.files)
        for name, value in model.state_dict().items():
            assert np.array_equal(archive[f"model/{name}"], value)
        assert any(key.startswith("optimizer/state/") for key in names)
        for key in names:
            assert archive[key].dtype != object
        meta = json.loads(str(archive["meta"]))
    assert meta["epoch"] == 1 and meta["history"] == [{"loss": 1.5}]
    assert "rng" in meta and "scheduler" in meta


def test_a_model_only_checkpoint_loads_into_a_model(tmp_path):
    path = tmp_path / "model.npz"
    model, _, _ = make_run(seed=4)
    save_checkpoint(path, model)
    other, _, _ = make_run(seed=5)
    load_checkpoint(path, other)
    assert_same_parameters(parameters(other), parameters(model))
    other_optimizer = SGD(other.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="optimiser"):
        load_checkpoint(path, other, other_optimizer)


def test_a_crash_mid_write_keeps_the_previous_checkpoint_loadable(tmp_path, monkeypatch):
    path = tmp_path / "run.npz"
    model, optimizer, scheduler = make_run(seed=0)
    train_steps(model, optimizer, scheduler, 2)
    save_checkpoint(path, model, optimizer, scheduler, epoch=1)
    good_bytes = path.read_bytes()
    good_params = parameters(model)
    train_steps(model, optimizer, scheduler, 2)

    def crashing_savez(file, *args, **kwargs):
        file.write(b"PK\x03\x04 half a zip archive")
        raise OSError("simulated crash mid-write")

    monkeypatch.setattr(np, "savez", crashing_savez)
    with pytest.raises(OSError, match="simulated crash"):
        save_checkpoint(path, model, optimizer, scheduler, epoch=2)
    monkeypatch.undo()

    assert path.read_bytes() == good_bytes
    assert os.listdir(tmp_path) == ["run.npz"]  # no temporary file left behind
    restored, restored_optimizer, restored_scheduler = make_run(seed=3)
    meta = load_checkpoint(path, restored, restored_optimizer, restored_scheduler)
    assert meta["epoch"] == 1
    assert_same_parameters(parameters(restored), good_params)


def test_loading_into_a_model_of_other_shapes_raises_and_changes_nothing(tmp_path):
    path = tmp_path / "run.npz"
    model, optimizer, scheduler = make_run(seed=0, hidden=8)
    save_checkpoint(path, model, optimizer, scheduler)
    other, other_optimizer, other_scheduler = make_run(seed=1, hidden=16)
    before = parameters(other)
    with pytest.raises(ValueError, match="shape"):
        load_checkpoint(path, other, other_optimizer, other_scheduler)
    assert_same_parameters(parameters(other), before)


def test_loading_into_a_model_with_other_layers_raises(tmp_path):
    path = tmp_path / "run.npz"
    model, _, _ = make_run(seed=0)
    save_checkpoint(path, model)
    with pytest.raises(ValueError):
        load_checkpoint(path, nn.Sequential(nn.Linear(3, 2)))


def test_a_file_that_is_not_a_checkpoint_is_refused(tmp_path):
    path = tmp_path / "plain.npz"
    np.savez(path, weights=np.zeros(3))
    model, _, _ = make_run(seed=0)
    with pytest.raises(ValueError, match="not a minialex checkpoint"):
        load_checkpoint(path, model)


def test_an_object_array_in_the_file_is_refused_not_unpickled(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, meta=np.array("{}"), **{"model/0.weight": np.array([object()], dtype=object)})
    model, _, _ = make_run(seed=0)
    with pytest.raises(ValueError):
        load_checkpoint(path, model)
