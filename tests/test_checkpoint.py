"""Checkpoints: a save/load round trip restores model, optimiser, scheduler and RNG; crashes keep the old file."""

import json
import math
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import minialex as ma
import minialex.functional as F
from minialex import backend, nn
from minialex.checkpoint import load_checkpoint, save_checkpoint
from minialex.optim import SGD, ReduceLROnPlateau, StepLR


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


# --------------------------------------------------------------------------- all or nothing


def everything(model, optimizer, scheduler):
    """What a load may change: parameters, optimiser state, scheduler state and the RNG."""
    state = optimizer.state_dict()
    buffers = {(i, k): v.copy() for i, s in state["state"].items() for k, v in s.items()}
    return parameters(model), state["param_groups"], buffers, scheduler.state_dict(), backend.rng_state()


def assert_same_everything(a, b):
    assert_same_parameters(a[0], b[0])
    assert a[1] == b[1]
    assert a[2].keys() == b[2].keys()
    for key in a[2]:
        assert np.array_equal(a[2][key], b[2][key]), key
    assert a[3] == b[3]
    assert json.dumps(a[4], sort_keys=True) == json.dumps(b[4], sort_keys=True)


def two_group_run(seed):
    """The same model as make_run, its weights and biases in two optimiser groups."""
    ma.manual_seed(seed)
    model = small_model()
    named = list(model.named_parameters())
    optimizer = SGD(
        [{"params": [p for n, p in named if n.endswith("weight")]},
         {"params": [p for n, p in named if n.endswith("bias")], "weight_decay": 0.0}],
        lr=0.1, momentum=0.9, weight_decay=1e-3,
    )
    return model, optimizer, StepLR(optimizer, step_size=2, gamma=0.5)


def test_a_checkpoint_with_another_optimiser_group_layout_raises_and_changes_nothing(tmp_path):
    path = tmp_path / "run.npz"
    model, optimizer, scheduler = make_run(seed=0)
    train_steps(model, optimizer, scheduler, 2)
    save_checkpoint(path, model, optimizer, scheduler)
    other, other_optimizer, other_scheduler = two_group_run(seed=7)
    train_steps(other, other_optimizer, other_scheduler, 1)
    before = everything(other, other_optimizer, other_scheduler)
    with pytest.raises(ValueError, match="groups of sizes"):
        load_checkpoint(path, other, other_optimizer, other_scheduler)
    assert_same_everything(everything(other, other_optimizer, other_scheduler), before)


def test_a_checkpoint_with_another_scheduler_raises_and_changes_nothing(tmp_path):
    path = tmp_path / "run.npz"
    model, optimizer, scheduler = make_run(seed=0)
    train_steps(model, optimizer, scheduler, 2)
    save_checkpoint(path, model, optimizer, scheduler)
    other, other_optimizer, _ = make_run(seed=3)
    plateau = ReduceLROnPlateau(other_optimizer)
    before = everything(other, other_optimizer, plateau)
    with pytest.raises(ValueError, match="ReduceLROnPlateau.load_state_dict"):
        load_checkpoint(path, other, other_optimizer, plateau)
    assert_same_everything(everything(other, other_optimizer, plateau), before)


def rewrite(path, change):
    """Apply ``change(arrays, meta)`` to the checkpoint at ``path``, in place."""
    with np.load(path, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    meta = json.loads(str(arrays.pop("meta")))
    try:
        change(arrays, meta)
    except KeyError:
        pass  # an earlier corruption removed what this one damages
    np.savez(path, meta=np.array(json.dumps(meta)), **arrays)


def set_group_option(key, value):
    def change(arrays, meta):
        meta["optimizer_param_groups"][0][key] = value
    return change


def replace_array(prefix, make):
    def change(arrays, meta):
        key = sorted(k for k in arrays if k.startswith(prefix))[-1]  # the last: earlier ones would load first
        arrays[key] = make(arrays[key])
    return change


def set_meta(path_in_meta, value):
    def change(arrays, meta):
        *parents, last = path_in_meta
        target = meta
        for name in parents:
            target = target[name]
        if value is DELETE:
            del target[last]
        else:
            target[last] = value
    return change


DELETE = object()
CORRUPTIONS = [
    set_group_option("lr", math.nan),
    set_group_option("momentum", -1.0),
    set_group_option("nesterov", "yes"),
    replace_array("model/", lambda a: np.full(a.shape, "x")),
    replace_array("model/", lambda a: np.zeros(a.shape + (2,), a.dtype)),
    replace_array("optimizer/state/", lambda a: np.zeros(a.shape[:-1] + (a.shape[-1] + 1,), a.dtype)),
    replace_array("optimizer/state/", lambda a: np.full(a.shape, "1.0")),
    set_meta(["scheduler", "gamma"], math.inf),
    set_meta(["scheduler", "last_epoch"], -1),
    set_meta(["scheduler", "base_lrs"], DELETE),
    set_meta(["scheduler"], DELETE),
    set_meta(["optimizer_param_groups"], DELETE),
    set_meta(["rng"], DELETE),
    set_meta(["rng", "cpu"], {"bit_generator": "PCG64", "state": "garbage"}),
    set_meta(["rng", "cpu"], DELETE),
]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(damage=st.lists(st.sampled_from(range(len(CORRUPTIONS))), min_size=1, max_size=3, unique=True))
def test_a_failed_checkpoint_load_changes_nothing(tmp_path, damage):
    path = tmp_path / "run.npz"
    model, optimizer, scheduler = make_run(seed=0)
    train_steps(model, optimizer, scheduler, 2)
    save_checkpoint(path, model, optimizer, scheduler)
    for number in damage:
        rewrite(path, CORRUPTIONS[number])
    target, target_optimizer, target_scheduler = make_run(seed=5)
    train_steps(target, target_optimizer, target_scheduler, 1)
    before = everything(target, target_optimizer, target_scheduler)
    with pytest.raises((ValueError, TypeError)):
        load_checkpoint(path, target, target_optimizer, target_scheduler)
    assert_same_everything(everything(target, target_optimizer, target_scheduler), before)


# --------------------------------------------------------------------------- reserved metadata


@pytest.mark.parametrize("key", ["rng", "optimizer_param_groups"])  # "scheduler" is an argument already
def test_a_meta_value_under_a_reserved_key_raises_value_error_and_writes_nothing(tmp_path, key):
    path = tmp_path / "run.npz"
    model, optimizer, scheduler = make_run(seed=0)
    with pytest.raises(ValueError, match=rf"'{key}' is reserved"):
        save_checkpoint(path, model, optimizer, scheduler, epoch=1, **{key: "mine"})
    with pytest.raises(ValueError, match=rf"'{key}' is reserved"):
        save_checkpoint(path, model, **{key: "mine"})  # reserved even when that part is not saved
    assert not path.exists()
