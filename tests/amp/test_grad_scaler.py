"""amp.GradScaler: PyTorch's scale sequence, skipped steps that change nothing, exact unscaling, clear errors."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minialex as ma
from minialex import amp, optim
from tests.optimizer_states import assert_same_snapshot, snapshot

EVENTS = ("clean", "inf", "nan")
GRAD_VALUE = {"clean": 0.5, "inf": math.inf, "nan": math.nan}


def scaler_settings():
    """Constructor arguments as a user may give them: float32 scales (PyTorch keeps its scale in float32)."""
    return st.fixed_dictionaries({
        "init_scale": st.one_of(st.sampled_from([1.0, 2.0 ** 16, 2.0 ** 120, 3.0e38]),
                                st.floats(1e-6, 1e6).map(lambda v: float(np.float32(v)))),
        "growth_factor": st.one_of(st.just(2.0), st.floats(1.0001, 1e3)),
        "backoff_factor": st.one_of(st.just(0.5), st.floats(1e-3, 0.999)),
        "growth_interval": st.integers(1, 4),
    })


class OursRunner:
    """One parameter, an SGD step, and a gradient that is finite, inf or NaN on demand."""

    def __init__(self, settings_):
        self.p = ma.tensor(np.array([1.0, 2.0], np.float32), requires_grad=True)
        self.optimizer = optim.SGD([self.p], lr=0.1)
        self.scaler = amp.GradScaler(**settings_)

    def step(self, event):
        self.scaler.scale(ma.tensor(1.0))
        self.p.grad = ma.Tensor(np.array([GRAD_VALUE[event], 1.0], np.float32))
        before = self.p.numpy().copy()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.stepped = not np.array_equal(before, self.p.numpy())

    def restart_from_state_dict(self, settings_):
        state = self.scaler.state_dict()
        self.scaler = amp.GradScaler(**settings_)
        self.scaler.load_state_dict(state)


class TorchRunner:
    def __init__(self, torch, settings_):
        self.torch = torch
        self.p = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
        self.optimizer = torch.optim.SGD([self.p], lr=0.1)
        self.scaler = torch.amp.GradScaler("cpu", **settings_)

    def step(self, event):
        self.scaler.scale(self.torch.tensor(1.0))
        self.p.grad = self.torch.tensor([GRAD_VALUE[event], 1.0])
        before = self.p.detach().numpy().copy()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.stepped = not np.array_equal(before, self.p.detach().numpy())

    def restart_from_state_dict(self, settings_):
        state = self.scaler.state_dict()
        self.scaler = self.torch.amp.GradScaler("cpu", **settings_)
        self.scaler.load_state_dict(state)


@settings(max_examples=100, deadline=None)
@given(settings_=scaler_settings(), events=st.lists(st.sampled_from(EVENTS), max_size=30),
       restart_at=st.integers(0, 30))
def test_the_scale_sequence_and_state_equal_pytorchs_including_a_state_dict_round_trip(settings_, events, restart_at):
    torch = pytest.importorskip("torch")
    ours, theirs = OursRunner(settings_), TorchRunner(torch, settings_)
    defaults = {"init_scale": 1.0}  # the restarted scalers must take everything from the state dict
    for number, event in enumerate(events):
        if number == restart_at:
            ours.restart_from_state_dict(defaults)
            theirs.restart_from_state_dict(defaults)
        ours.step(event)
        theirs.step(event)
        assert ours.scaler.get_scale() == theirs.scaler.get_scale(), (number, event)
        assert ours.scaler.state_dict() == theirs.scaler.state_dict()
        # The same unscaled gradient (the two SGD kernels may round p - lr * g differently: not tested here).
        np.testing.assert_array_equal(ours.p.grad.numpy(), theirs.p.grad.numpy())
        assert ours.stepped == theirs.stepped


def test_the_default_settings_grow_after_2000_clean_steps_and_halve_on_an_overflow():
    runner = OursRunner({})
    for _ in range(1999):
        runner.step("clean")
    assert runner.scaler.get_scale() == 65536.0 and runner.scaler.state_dict()["_growth_tracker"] == 1999
    runner.step("clean")
    assert runner.scaler.get_scale() == 131072.0 and runner.scaler.state_dict()["_growth_tracker"] == 0
    runner.step("inf")
    assert runner.scaler.get_scale() == 65536.0


def test_growth_that_would_overflow_float32_keeps_the_scale_and_resets_the_tracker():
    runner = OursRunner({"init_scale": 2.0 ** 127, "growth_interval": 1})
    runner.step("clean")
    assert runner.scaler.get_scale() == 2.0 ** 127
    assert runner.scaler.state_dict()["_growth_tracker"] == 0


# --------------------------------------------------------------------------- skipped steps change nothing


def optimizers():
    return [
        lambda params: optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-3, nesterov=True),
        lambda params: optim.Adam(params, lr=1e-2, weight_decay=1e-3),
        lambda params: optim.AdamW(params, lr=1e-2),
    ]


@pytest.mark.parametrize("make_optimizer", optimizers(), ids=["sgd", "adam", "adamw"])
@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2 ** 16), bad=st.sampled_from([math.inf, -math.inf, math.nan]),
       position=st.integers(0, 5))
def test_a_step_with_an_inf_or_nan_gradient_leaves_parameters_and_optimizer_state_unchanged_bit_for_bit(
        make_optimizer, seed, bad, position):
    rng = np.random.default_rng(seed)
    params = [ma.tensor(rng.standard_normal((2, 3)).astype(np.float32), requires_grad=True) for _ in range(2)]
    optimizer = make_optimizer(params)
    scaler = amp.GradScaler(init_scale=2.0 ** 10)
    for _ in range(2):  # clean steps first, so that there are momentum buffers and moments to keep
        for p in params:
            p.grad = ma.Tensor(rng.standard_normal(p.shape).astype(np.float32) * 2 ** 10)
        scaler.step(optimizer)
        scaler.update()
    before_params, before_state = [p.numpy().copy() for p in params], snapshot(optimizer)
    for p in params:
        p.grad = ma.Tensor(rng.standard_normal(p.shape).astype(np.float32))
    params[1].grad.data.reshape(-1)[position] = bad
    assert scaler.step(optimizer) is None
    scaler.update()
    for p, before in zip(params, before_params):
        np.testing.assert_array_equal(p.numpy(), before)
    assert_same_snapshot(snapshot(optimizer), before_state)
    assert scaler.get_scale() == 2.0 ** 9


# --------------------------------------------------------------------------- unscaling


@pytest.mark.parametrize("make_optimizer", optimizers(), ids=["sgd", "adam", "adamw"])
@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2 ** 16), exponent=st.integers(0, 24), explicit_unscale=st.booleans())
def test_a_scaled_step_equals_the_plain_step_with_unscaled_gradients(make_optimizer, seed, exponent, explicit_unscale):
    """Law: with S a power of two, (g * S) * (1/S) == g exactly, so the two updates agree bit for bit."""
    rng = np.random.default_rng(seed)
    values = [rng.standard_normal((3, 4)).astype(np.float32) for _ in range(2)]
    grads = [rng.standard_normal((3, 4)).astype(np.float32) for _ in range(2)]
    scale = 2.0 ** exponent

    plain = [ma.tensor(v, requires_grad=True) for v in values]
    plain_optimizer = make_optimizer(plain)
    scaled = [ma.tensor(v, requires_grad=True) for v in values]
    scaled_optimizer = make_optimizer(scaled)
    scaler = amp.GradScaler(init_scale=scale)
    for _ in range(2):
        for p, g in zip(plain, grads):
            p.grad = ma.Tensor(g.copy())
        plain_optimizer.step()
        for p, g in zip(scaled, grads):
            p.grad = ma.Tensor(g * np.float32(scale))
        if explicit_unscale:
            scaler.unscale_(scaled_optimizer)
            for p, g in zip(scaled, grads):
                np.testing.assert_array_equal(p.grad.numpy(), g)
        scaler.step(scaled_optimizer)
        scaler.update()
    for a, b in zip(plain, scaled):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert_same_snapshot(snapshot(plain_optimizer), snapshot(scaled_optimizer))


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2 ** 16), scale=st.floats(1e-3, 1e6).map(lambda v: float(np.float32(v))))
def test_unscale_multiplies_by_pytorchs_float32_reciprocal_bit_for_bit(seed, scale):
    torch = pytest.importorskip("torch")
    grad = np.random.default_rng(seed).standard_normal(50).astype(np.float32) * 1e3
    p = ma.tensor(np.zeros(50, np.float32), requires_grad=True)
    p.grad = ma.Tensor(grad.copy())
    scaler = amp.GradScaler(init_scale=scale)
    scaler.unscale_(optim.SGD([p], lr=0.1))

    q = torch.nn.Parameter(torch.zeros(50))
    q.grad = torch.tensor(grad.copy())
    theirs = torch.amp.GradScaler("cpu", init_scale=scale)
    theirs.scale(torch.tensor(1.0))
    theirs.unscale_(torch.optim.SGD([q], lr=0.1))
    np.testing.assert_array_equal(p.grad.numpy(), q.grad.numpy())


def test_scale_multiplies_a_loss_or_a_list_of_losses_and_the_gradient_follows():
    w = ma.tensor(np.array([1.5, -2.0], np.float32), requires_grad=True)
    scaler = amp.GradScaler(init_scale=1024.0)
    loss = (w * w).sum()
    scaled = scaler.scale(loss)
    assert scaled.item() == 1024.0 * loss.item()
    scaled.backward()
    np.testing.assert_array_equal(w.grad.numpy(), 1024.0 * 2 * w.numpy())
    first, second = scaler.scale([ma.tensor(1.0), ma.tensor(2.0)])
    assert (first.item(), second.item()) == (1024.0, 2048.0)
    assert isinstance(scaler.scale((ma.tensor(1.0),)), tuple)
    with pytest.raises(TypeError, match="Tensor"):
        scaler.scale(3.0)


def test_an_inf_in_one_optimizer_skips_only_its_step_and_backs_the_scale_off():
    a = ma.tensor(np.ones(2, np.float32), requires_grad=True)
    b = ma.tensor(np.ones(2, np.float32), requires_grad=True)
    optimizer_a, optimizer_b = optim.SGD([a], lr=1.0), optim.SGD([b], lr=1.0)
    scaler = amp.GradScaler(init_scale=2.0)
    a.grad = ma.Tensor(np.array([np.inf, 2.0], np.float32))
    b.grad = ma.Tensor(np.array([2.0, 2.0], np.float32))
    scaler.step(optimizer_a)
    scaler.step(optimizer_b)
    scaler.update()
    np.testing.assert_array_equal(a.numpy(), [1.0, 1.0])
    np.testing.assert_array_equal(b.numpy(), [0.0, 0.0])
    assert scaler.get_scale() == 1.0


def test_step_forwards_arguments_and_returns_the_optimizers_result():
    class Recording:
        def __init__(self, params):
            self.param_groups = [{"params": params}]
            self.calls = []

        def step(self, *args, **kwargs):
            self.calls.append((args, kwargs))
            return "stepped"

    p = ma.tensor(np.ones(2, np.float32), requires_grad=True)
    p.grad = ma.Tensor(np.ones(2, np.float32))
    optimizer = Recording([p])
    assert amp.GradScaler().step(optimizer, 1, option=2) == "stepped"
    assert optimizer.calls == [((1,), {"option": 2})]
    assert amp.GradScaler(enabled=False).step(optimizer, 3) == "stepped"
    with pytest.raises(RuntimeError, match="[Cc]losure"):
        amp.GradScaler().step(optimizer, closure=lambda: 0.0)


# --------------------------------------------------------------------------- the order of the calls


def one_parameter_problem():
    p = ma.tensor(np.ones(3, np.float32), requires_grad=True)
    p.grad = ma.Tensor(np.full(3, 4.0, np.float32))
    return p, optim.SGD([p], lr=0.1), amp.GradScaler(init_scale=4.0)


def test_unscale_twice_before_update_raises_as_pytorch():
    p, optimizer, scaler = one_parameter_problem()
    scaler.unscale_(optimizer)
    np.testing.assert_array_equal(p.grad.numpy(), np.ones(3))
    with pytest.raises(RuntimeError, match="already been called"):
        scaler.unscale_(optimizer)
    scaler.step(optimizer)  # does not unscale again
    np.testing.assert_array_equal(p.numpy(), np.full(3, 0.9, np.float32))
    with pytest.raises(RuntimeError, match="after step"):
        scaler.unscale_(optimizer)
    with pytest.raises(RuntimeError, match="step\\(\\) has already been called"):
        scaler.step(optimizer)
    scaler.update()
    p.grad = ma.Tensor(np.full(3, 4.0, np.float32))
    scaler.unscale_(optimizer)  # a new step: allowed again


def test_update_without_a_step_and_a_step_without_gradients_raise():
    p, optimizer, scaler = one_parameter_problem()
    with pytest.raises(RuntimeError, match="no inf checks"):
        scaler.update()
    p.grad = None
    with pytest.raises(RuntimeError, match="no inf checks.*backward"):
        scaler.step(optimizer)


def test_update_with_new_scale_sets_it_and_refuses_a_bad_one():
    p, optimizer, scaler = one_parameter_problem()
    scaler.step(optimizer)
    scaler.update(new_scale=8.0)
    assert scaler.get_scale() == 8.0
    scaler.update(new_scale=ma.tensor(16.0))
    assert scaler.get_scale() == 16.0
    for bad in (0.0, -1.0, math.inf, math.nan, 1e39, "2"):
        with pytest.raises(ValueError, match=r"new_scale must be a positive finite number"):
            scaler.update(new_scale=bad)
    assert scaler.get_scale() == 16.0


def test_a_float16_gradient_is_refused_naming_the_fix():
    p = ma.tensor(np.ones(2, np.float16), requires_grad=True)
    p.grad = ma.Tensor(np.ones(2, np.float16))
    with pytest.raises(ValueError, match="float16 gradient.*float32"):
        amp.GradScaler().unscale_(optim.SGD([p], lr=0.1))


def test_a_disabled_scaler_is_a_pass_through():
    p, optimizer, _ = one_parameter_problem()
    scaler = amp.GradScaler(enabled=False)
    loss = ma.tensor(3.0)
    assert scaler.scale(loss) is loss
    assert scaler.get_scale() == 1.0 and scaler.state_dict() == {} and not scaler.is_enabled()
    scaler.unscale_(optimizer)
    np.testing.assert_array_equal(p.grad.numpy(), np.full(3, 4.0))  # not unscaled
    scaler.step(optimizer)
    np.testing.assert_array_equal(p.numpy(), np.full(3, 0.6, np.float32))
    scaler.update()
    scaler.load_state_dict({"anything": 1})  # ignored, as PyTorch's


# --------------------------------------------------------------------------- arguments and state dicts


@pytest.mark.parametrize(("name", "value", "expected"), [
    ("init_scale", 0.0, "positive finite"), ("init_scale", -1.0, "positive finite"),
    ("init_scale", math.inf, "positive finite"), ("init_scale", 1e39, "positive finite"),
    ("init_scale", "1", "positive finite"),
    ("growth_factor", 1.0, "> 1"), ("growth_factor", 0.5, "> 1"), ("growth_factor", math.nan, "> 1"),
    ("backoff_factor", 1.0, r"in \(0, 1\)"), ("backoff_factor", 0.0, r"in \(0, 1\)"),
    ("backoff_factor", 1.5, r"in \(0, 1\)"),
    ("growth_interval", 0, "integer >= 1"), ("growth_interval", 2.5, "integer >= 1"),
    ("growth_interval", True, "integer >= 1"),
])
def test_bad_constructor_arguments_are_refused_naming_argument_value_and_expectation(name, value, expected):
    with pytest.raises(ValueError) as info:
        amp.GradScaler(**{name: value})
    message = str(info.value)
    assert name in message and repr(value) in message
    assert pytest.importorskip("re").search(expected, message), message


def test_enabled_must_be_a_bool():
    with pytest.raises(TypeError, match="enabled must be True or False, got 'yes'"):
        amp.GradScaler(enabled="yes")


GOOD_STATE = {"scale": 1024.0, "growth_factor": 3.0, "backoff_factor": 0.25, "growth_interval": 7,
              "_growth_tracker": 5}


def test_state_dict_round_trip_restores_every_entry():
    scaler = amp.GradScaler()
    scaler.load_state_dict(dict(GOOD_STATE))
    assert scaler.state_dict() == GOOD_STATE
    assert scaler.get_scale() == 1024.0


@pytest.mark.parametrize(("change", "error", "match"), [
    ({"scale": 0.0}, ValueError, "scale must be a positive finite number"),
    ({"scale": math.nan}, ValueError, "scale must be"),
    ({"growth_factor": 0.9}, ValueError, "growth_factor must be"),
    ({"backoff_factor": 1.0}, ValueError, "backoff_factor must be"),
    ({"growth_interval": 0}, ValueError, "growth_interval must be an integer >= 1"),
    ({"_growth_tracker": -1}, ValueError, "_growth_tracker must be an integer >= 0"),
    ({"_growth_tracker": 7}, ValueError, "_growth_tracker must be below growth_interval"),
    ({"extra": 1}, ValueError, "unknown: extra"),
])
def test_a_bad_state_dict_is_refused_and_changes_nothing(change, error, match):
    scaler = amp.GradScaler(init_scale=8.0)
    before = scaler.state_dict()
    with pytest.raises(error, match=match):
        scaler.load_state_dict({**GOOD_STATE, **change})
    assert scaler.state_dict() == before


def test_a_state_dict_missing_entries_or_empty_or_not_a_dict_is_refused():
    scaler = amp.GradScaler()
    with pytest.raises(ValueError, match="missing: backoff_factor"):
        scaler.load_state_dict({k: v for k, v in GOOD_STATE.items() if k != "backoff_factor"})
    with pytest.raises(RuntimeError, match="empty.*disabled"):
        scaler.load_state_dict(amp.GradScaler(enabled=False).state_dict())
    with pytest.raises(TypeError, match="expected a dict"):
        scaler.load_state_dict([1024.0])
    assert scaler.get_scale() == 65536.0


def test_a_state_dict_loads_into_pytorchs_scaler_and_back():
    torch = pytest.importorskip("torch")
    theirs = torch.amp.GradScaler("cpu")
    theirs.load_state_dict(dict(GOOD_STATE))
    theirs.scale(torch.tensor(1.0))
    ours = amp.GradScaler()
    ours.load_state_dict(theirs.state_dict())
    assert ours.state_dict() == theirs.state_dict() == GOOD_STATE


def test_the_scaler_state_is_saved_in_a_checkpoint_and_restored(tmp_path):
    from minialex import nn  # noqa: PLC0415
    from minialex.checkpoint import load_checkpoint, save_checkpoint  # noqa: PLC0415

    model = nn.Linear(2, 2)
    scaler = amp.GradScaler()
    scaler.load_state_dict(dict(GOOD_STATE))
    save_checkpoint(tmp_path / "with.npz", model, scaler=scaler, epoch=1)
    save_checkpoint(tmp_path / "without.npz", model, epoch=1)
    restored = amp.GradScaler()
    load_checkpoint(tmp_path / "with.npz", model, scaler=restored)
    assert restored.state_dict() == GOOD_STATE
    fresh = amp.GradScaler()
    with pytest.raises(ValueError, match="no GradScaler state"):
        load_checkpoint(tmp_path / "without.npz", model, scaler=fresh)
    assert load_checkpoint(tmp_path / "without.npz", model)["epoch"] == 1  # old checkpoints load as before
    assert fresh.get_scale() == 65536.0


def test_a_distributed_optimizer_in_a_world_of_one_is_unscaled_and_skipped_like_its_wrapped_optimizer():
    pytest.importorskip("mpi4py")
    import minialex.distributed as dist  # noqa: PLC0415

    dist.init_process_group("mpi")
    try:
        p, _, scaler = one_parameter_problem()
        optimizer = dist.DistributedOptimizer(optim.SGD([p], lr=0.1))
        scaler.step(optimizer)
        scaler.update()
        np.testing.assert_array_equal(p.numpy(), np.full(3, 0.9, np.float32))  # 1 - 0.1 * (4 / 4)
        p.grad = ma.Tensor(np.array([np.nan, 1.0, 1.0], np.float32))
        assert scaler.step(optimizer) is None
        scaler.update()
        np.testing.assert_array_equal(p.numpy(), np.full(3, 0.9, np.float32))
        assert scaler.get_scale() == 2.0
    finally:
        dist.destroy_process_group()
