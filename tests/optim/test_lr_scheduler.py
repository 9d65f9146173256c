"""StepLR, CosineAnnealingLR and ReduceLROnPlateau: hand-written rate sequences, agreement with torch, state round trips."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minialex as ma
from minialex.optim import SGD, CosineAnnealingLR, ReduceLROnPlateau, StepLR


def optimiser(lr=0.1, groups=1):
    params = [ma.tensor(np.ones(2), requires_grad=True) for _ in range(groups)]
    if groups == 1:
        return SGD(params, lr=lr, momentum=0.9)
    return SGD([{"params": [p], "lr": lr * (i + 1)} for i, p in enumerate(params)], lr=lr, momentum=0.9)


def torch_optimiser(torch, lr=0.1, groups=1):
    params = [torch.nn.Parameter(torch.ones(2, dtype=torch.float64)) for _ in range(groups)]
    if groups == 1:
        return torch.optim.SGD(params, lr=lr, momentum=0.9)
    return torch.optim.SGD([{"params": [p], "lr": lr * (i + 1)} for i, p in enumerate(params)], lr=lr, momentum=0.9)


def lrs(opt):
    return [group["lr"] for group in opt.param_groups]


# --------------------------------------------------------------------------- StepLR


def test_step_lr_divides_by_ten_every_three_epochs():
    opt = optimiser(lr=1.0)
    sched = StepLR(opt, step_size=3, gamma=0.1)
    seen = [opt.param_groups[0]["lr"]]
    for _ in range(10):
        opt.step()
        sched.step()
        seen.append(opt.param_groups[0]["lr"])
    expected = [1.0] * 3 + [0.1] * 3 + [0.01] * 3 + [0.001] * 2
    np.testing.assert_allclose(seen, expected, rtol=1e-12)
    assert sched.get_last_lr() == [seen[-1]]


@pytest.mark.parametrize("step_size,gamma", [(1, 0.5), (2, 0.1), (4, 0.3)])
def test_step_lr_follows_initial_times_gamma_to_the_epoch_over_step_size(step_size, gamma):
    opt = optimiser(lr=0.2, groups=2)
    sched = StepLR(opt, step_size=step_size, gamma=gamma)
    for epoch in range(1, 11):
        sched.step()
        expected = [0.2 * gamma ** (epoch // step_size), 0.4 * gamma ** (epoch // step_size)]
        np.testing.assert_allclose(lrs(opt), expected, rtol=1e-12)
        np.testing.assert_allclose(sched.get_last_lr(), expected, rtol=1e-12)


@pytest.mark.parametrize("step_size,gamma", [(1, 0.5), (3, 0.1), (4, 0.3)])
def test_step_lr_agrees_with_torch(step_size, gamma):
    torch = pytest.importorskip("torch")
    opt, topt = optimiser(lr=0.1, groups=2), torch_optimiser(torch, lr=0.1, groups=2)
    sched = StepLR(opt, step_size=step_size, gamma=gamma)
    tsched = torch.optim.lr_scheduler.StepLR(topt, step_size=step_size, gamma=gamma)
    np.testing.assert_allclose(lrs(opt), lrs(topt), rtol=1e-12)
    for _ in range(12):
        topt.step()  # torch warns when the scheduler steps before the optimiser
        sched.step()
        tsched.step()
        np.testing.assert_allclose(lrs(opt), lrs(topt), rtol=1e-12)
        np.testing.assert_allclose(sched.get_last_lr(), tsched.get_last_lr(), rtol=1e-12)


def test_step_lr_state_dict_round_trip_continues_the_schedule():
    opt = optimiser(lr=1.0)
    sched = StepLR(opt, step_size=3, gamma=0.5)
    for _ in range(4):
        sched.step()
    opt_state, sched_state = opt.state_dict(), sched.state_dict()
    reference = []
    for _ in range(6):
        sched.step()
        reference.append(lrs(opt))

    opt2 = optimiser(lr=1.0)
    sched2 = StepLR(opt2, step_size=7, gamma=0.9)  # overwritten by the loaded state
    opt2.load_state_dict(opt_state)
    sched2.load_state_dict(sched_state)
    assert sched2.step_size == 3 and sched2.gamma == 0.5 and sched2.last_epoch == 4
    resumed = []
    for _ in range(6):
        sched2.step()
        resumed.append(lrs(opt2))
    assert resumed == reference


@pytest.mark.parametrize("kwargs", [dict(step_size=0), dict(step_size=-2), dict(step_size=1.5), dict(step_size=2, gamma=0.0),
                                    dict(step_size=2, gamma=-0.1)])
def test_step_lr_bad_arguments_raise_value_error(kwargs):
    with pytest.raises(ValueError):
        StepLR(optimiser(), **kwargs)


def test_a_scheduler_without_an_optimiser_raises_type_error():
    with pytest.raises(TypeError):
        StepLR(object(), step_size=1)
    with pytest.raises(TypeError):
        ReduceLROnPlateau(object())


# --------------------------------------------------------------------------- ReduceLROnPlateau


def test_plateau_divides_by_ten_after_patience_bad_epochs():
    opt = optimiser(lr=0.01)
    sched = ReduceLROnPlateau(opt, mode="min", factor=0.1, patience=2)
    losses = [1.0, 0.9, 0.9, 0.9, 0.9, 0.8, 0.8, 0.8, 0.8]
    seen = []
    for loss in losses:
        sched.step(loss)
        seen.append(opt.param_groups[0]["lr"])
    # Bad epochs after 0.9: 1, 2, 3 > patience -> reduce at the 5th step; then 0.8 improves,
    # three more bad epochs -> reduce at the 9th.
    expected = [0.01] * 4 + [0.001] * 4 + [0.0001]
    np.testing.assert_allclose(seen, expected, rtol=1e-12)


def test_plateau_never_goes_below_min_lr():
    opt = optimiser(lr=1.0)
    sched = ReduceLROnPlateau(opt, factor=0.5, patience=0, min_lr=0.2)
    for _ in range(10):
        sched.step(5.0)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.2)


def test_plateau_in_max_mode_treats_rising_accuracy_as_improvement():
    opt = optimiser(lr=1.0)
    sched = ReduceLROnPlateau(opt, mode="max", factor=0.5, patience=1)
    for acc in [0.1, 0.2, 0.3, 0.4, 0.5]:
        sched.step(acc)
    assert opt.param_groups[0]["lr"] == 1.0
    for acc in [0.5, 0.5]:
        sched.step(acc)
    assert opt.param_groups[0]["lr"] == 0.5


def test_plateau_accepts_a_scalar_tensor_metric_and_rejects_nan():
    opt = optimiser(lr=1.0)
    sched = ReduceLROnPlateau(opt, patience=0)
    sched.step(ma.tensor(1.0))
    sched.step(ma.tensor(2.0))
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)
    with pytest.raises(ValueError):
        sched.step(float("nan"))


# A metric that improves, stalls, creeps (changes below a relative/absolute threshold), jumps, goes negative.
METRICS = [
    5.0, 4.0, 4.0, 3.9999, 3.99995, 4.1, 4.0, 3.0, 3.0, 3.0, 2.9995, 2.999, 3.5, 3.5, 3.5, 3.5, 1.0, 0.99, 0.9899,
    0.98995, 0.98995, 0.98995, 0.5, 0.4999, 0.4999, 0.4999, 0.4999, -0.1, -0.2, -0.2, -0.19, -0.2001, -0.2001,
    -0.2001, -0.2001, -0.2001, -0.2001, 7.0, 7.0, 7.0,
]

PLATEAU_CASES = [
    dict(),
    dict(mode="min", factor=0.5, patience=0),
    dict(mode="min", factor=0.5, patience=2, threshold=1e-3),
    dict(mode="min", factor=0.3, patience=1, threshold=0.05, threshold_mode="abs"),
    dict(mode="min", factor=0.5, patience=1, cooldown=2),
    dict(mode="min", factor=0.1, patience=0, min_lr=1e-4),
    dict(mode="min", factor=0.5, patience=1, min_lr=[1e-3, 5e-2]),
    dict(mode="max", factor=0.5, patience=1),
    dict(mode="max", factor=0.2, patience=0, threshold=0.01, threshold_mode="abs", cooldown=1),
    dict(mode="max", factor=0.5, patience=2, threshold=0.0, cooldown=3, min_lr=0.01),
    dict(mode="min", factor=0.9, patience=0, eps=0.02),
]


@pytest.mark.parametrize("kwargs", PLATEAU_CASES, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()) or "defaults")
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_plateau_agrees_with_torch_after_every_step(kwargs, sign):
    torch = pytest.importorskip("torch")
    opt, topt = optimiser(lr=0.1, groups=2), torch_optimiser(torch, lr=0.1, groups=2)
    sched = ReduceLROnPlateau(opt, **kwargs)
    tsched = torch.optim.lr_scheduler.ReduceLROnPlateau(topt, **kwargs)
    for epoch, metric in enumerate(METRICS):
        sched.step(sign * metric)
        tsched.step(sign * metric)
        np.testing.assert_allclose(lrs(opt), lrs(topt), rtol=1e-12, err_msg=f"epoch {epoch}, metric {sign * metric}")
        assert sched.num_bad_epochs == tsched.num_bad_epochs, f"epoch {epoch}"
        assert sched.cooldown_counter == tsched.cooldown_counter, f"epoch {epoch}"
        assert sched.best == tsched.best, f"epoch {epoch}"
    if "patience" in kwargs and "eps" not in kwargs:
        assert lrs(opt) != [0.1, 0.2]  # the script really exercises a reduction


def test_plateau_state_dict_round_trip_continues_identically():
    opt = optimiser(lr=0.1)
    sched = ReduceLROnPlateau(opt, factor=0.5, patience=1, cooldown=1, threshold=1e-3)
    for metric in METRICS[:10]:
        sched.step(metric)
    opt_state, sched_state = opt.state_dict(), sched.state_dict()
    reference = []
    for metric in METRICS[10:]:
        sched.step(metric)
        reference.append(lrs(opt))

    opt2 = optimiser(lr=0.1)
    sched2 = ReduceLROnPlateau(opt2, mode="max", factor=0.9, patience=7)  # all overwritten
    opt2.load_state_dict(opt_state)
    sched2.load_state_dict(sched_state)
    resumed = []
    for metric in METRICS[10:]:
        sched2.step(metric)
        resumed.append(lrs(opt2))
    assert resumed == reference
    assert sched2.mode == "min" and sched2.patience == 1


def test_plateau_initial_best_is_infinite_in_the_direction_of_the_mode():
    assert ReduceLROnPlateau(optimiser(), mode="min").best == math.inf
    assert ReduceLROnPlateau(optimiser(), mode="max").best == -math.inf


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(factor=1.0),
        dict(factor=1.5),
        dict(factor=0.0),
        dict(factor=-0.1),
        dict(mode="maximum"),
        dict(mode="MIN"),
        dict(threshold_mode="relative"),
        dict(patience=-1),
        dict(cooldown=-1),
        dict(min_lr=[0.0, 0.0, 0.0]),  # one group, three floors
    ],
)
def test_plateau_bad_arguments_raise_value_error(kwargs):
    with pytest.raises(ValueError):
        ReduceLROnPlateau(optimiser(), **kwargs)


# --------------------------------------------------------------------------- CosineAnnealingLR


@pytest.mark.parametrize("T_max,eta_min", [(1, 0.0), (4, 0.0), (5, 0.01), (10, 0.001)])
def test_cosine_follows_the_closed_form_over_one_half_period(T_max, eta_min):  # noqa: N803
    opt = optimiser(lr=0.1)
    sched = CosineAnnealingLR(opt, T_max=T_max, eta_min=eta_min)
    for t in range(1, T_max + 1):
        sched.step()
        expected = eta_min + (0.1 - eta_min) * (1 + math.cos(math.pi * t / T_max)) / 2
        assert lrs(opt)[0] == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert lrs(opt)[0] == pytest.approx(eta_min, abs=1e-15)  # the floor at t = T_max


@pytest.mark.parametrize("T_max,eta_min", [(1, 0.0), (3, 0.0), (4, 0.02), (7, 0.001)])
def test_cosine_agrees_with_torch_past_t_max(T_max, eta_min):  # noqa: N803
    torch = pytest.importorskip("torch")
    opt, topt = optimiser(lr=0.1, groups=2), torch_optimiser(torch, lr=0.1, groups=2)
    sched = CosineAnnealingLR(opt, T_max=T_max, eta_min=eta_min)
    tsched = torch.optim.lr_scheduler.CosineAnnealingLR(topt, T_max=T_max, eta_min=eta_min)
    for _ in range(3 * T_max + 2):  # down, back up, and down again
        topt.step()
        sched.step()
        tsched.step()
        np.testing.assert_allclose(lrs(opt), lrs(topt), rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(sched.get_last_lr(), tsched.get_last_lr(), rtol=1e-12, atol=1e-15)


def test_cosine_state_dict_round_trip_continues_the_schedule():
    opt = optimiser(lr=1.0)
    sched = CosineAnnealingLR(opt, T_max=9, eta_min=0.05)
    for _ in range(4):
        sched.step()
    opt_state, sched_state = opt.state_dict(), sched.state_dict()
    reference = []
    for _ in range(6):
        sched.step()
        reference.append(lrs(opt))
    opt2 = optimiser(lr=1.0)
    sched2 = CosineAnnealingLR(opt2, T_max=2)  # overwritten by the loaded state
    opt2.load_state_dict(opt_state)
    sched2.load_state_dict(sched_state)
    assert sched2.T_max == 9 and sched2.eta_min == 0.05 and sched2.last_epoch == 4
    resumed = []
    for _ in range(6):
        sched2.step()
        resumed.append(lrs(opt2))
    assert resumed == reference


@pytest.mark.parametrize("kwargs", [dict(T_max=0), dict(T_max=-1), dict(T_max=2.5), dict(T_max=True),
                                    dict(T_max=3, eta_min=-0.1), dict(T_max=3, eta_min="0")])
def test_cosine_bad_arguments_raise_value_error(kwargs):
    with pytest.raises(ValueError, match="CosineAnnealingLR"):
        CosineAnnealingLR(optimiser(), **kwargs)


# --------------------------------------------------------------------------- non-finite arguments


NON_FINITE = [math.nan, math.inf, -math.inf]


@pytest.mark.parametrize("value", NON_FINITE)
def test_step_lr_rejects_a_non_finite_gamma_naming_it_and_its_value(value):
    with pytest.raises(ValueError, match=rf"StepLR: gamma must be a finite number > 0, got {value!r}"):
        StepLR(optimiser(), step_size=2, gamma=value)


@pytest.mark.parametrize("value", NON_FINITE)
def test_cosine_rejects_a_non_finite_eta_min_naming_it_and_its_value(value):
    with pytest.raises(ValueError, match=rf"CosineAnnealingLR: eta_min must be a finite number >= 0, got {value!r}"):
        CosineAnnealingLR(optimiser(), T_max=3, eta_min=value)


@pytest.mark.parametrize("name", ["threshold", "min_lr", "eps"])
@pytest.mark.parametrize("value", NON_FINITE + [-1e-3])
def test_plateau_rejects_non_finite_or_negative_arguments_naming_them_and_the_value(name, value):
    with pytest.raises(ValueError, match=rf"ReduceLROnPlateau: {name}.* must be a finite number >= 0, got {value!r}"):
        ReduceLROnPlateau(optimiser(), **{name: value})


@pytest.mark.parametrize("value", NON_FINITE)
def test_plateau_rejects_a_non_finite_factor_or_per_group_min_lr(value):
    with pytest.raises(ValueError, match=rf"factor must be a finite number in \(0, 1\), got {value!r}"):
        ReduceLROnPlateau(optimiser(), factor=value)
    with pytest.raises(ValueError, match=rf"min_lr\[1\] must be a finite number >= 0, got {value!r}"):
        ReduceLROnPlateau(optimiser(groups=2), min_lr=[0.0, value])


@settings(max_examples=60, deadline=None)
@given(
    name=st.sampled_from(["threshold", "eps", "min_lr"]),
    value=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-2, 2)),
)
def test_plateau_accepts_a_float_argument_exactly_when_it_is_finite_and_non_negative(name, value):
    if math.isfinite(value) and value >= 0:
        ReduceLROnPlateau(optimiser(), **{name: value})
    else:
        with pytest.raises(ValueError, match=name):
            ReduceLROnPlateau(optimiser(), **{name: value})


# --------------------------------------------------------------------------- a failed load changes nothing


def stepped(make, steps=3):
    opt = optimiser(lr=0.1, groups=2)
    sched = make(opt)
    for metric in METRICS[:steps]:
        sched.step(metric) if isinstance(sched, ReduceLROnPlateau) else sched.step()
    return sched


SCHEDULERS = {
    "StepLR": lambda opt: StepLR(opt, step_size=2, gamma=0.5),
    "CosineAnnealingLR": lambda opt: CosineAnnealingLR(opt, T_max=5, eta_min=0.01),
    "ReduceLROnPlateau": lambda opt: ReduceLROnPlateau(opt, factor=0.5, patience=0, min_lr=[0.0, 1e-3]),
}
BAD = [math.nan, math.inf, -math.inf, -1, -0.5, 0, 1.5, "1", None, True, [0.1], [0.1, "x"], [0.1, math.nan]]


def assert_valid(sched):
    """Whatever a scheduler holds after a load is what its constructor and step() could have made."""
    state = sched.state_dict()
    assert isinstance(state["last_epoch"], int) and state["last_epoch"] >= 0
    for name in ("_last_lr", "base_lrs", "min_lrs"):
        if name in state:
            assert len(state[name]) == 2
            assert all(isinstance(v, float) and math.isfinite(v) and v >= 0 for v in state[name])
    if isinstance(sched, StepLR):
        assert isinstance(sched.step_size, int) and sched.step_size >= 1
        assert math.isfinite(sched.gamma) and sched.gamma > 0
    elif isinstance(sched, CosineAnnealingLR):
        assert isinstance(sched.T_max, int) and sched.T_max >= 1
        assert math.isfinite(sched.eta_min) and sched.eta_min >= 0
    else:
        assert 0 < sched.factor < 1 and math.isfinite(sched.threshold) and sched.threshold >= 0
        assert math.isfinite(sched.eps) and sched.eps >= 0 and not math.isnan(sched.best)
        assert sched.mode in ("min", "max") and sched.threshold_mode in ("rel", "abs")
        for name in ("patience", "cooldown", "num_bad_epochs", "cooldown_counter"):
            assert isinstance(getattr(sched, name), int) and getattr(sched, name) >= 0


@settings(max_examples=150, deadline=None)
@given(
    kind=st.sampled_from(sorted(SCHEDULERS)),
    data=st.data(),
)
def test_a_scheduler_load_either_restores_a_valid_state_or_raises_and_changes_nothing(kind, data):
    source = stepped(SCHEDULERS[kind], steps=5)
    state = source.state_dict()
    keys = sorted(state)
    for key in data.draw(st.lists(st.sampled_from(keys), min_size=1, max_size=3), label="damaged keys"):
        if data.draw(st.booleans(), label=f"drop {key}"):
            state.pop(key, None)
        else:
            state[key] = data.draw(st.sampled_from(BAD), label=key)
    target = stepped(SCHEDULERS[kind], steps=1)
    before = target.state_dict()
    try:
        target.load_state_dict(state)
    except (ValueError, TypeError):
        assert target.state_dict() == before
    else:
        assert_valid(target)


def test_a_step_lr_load_with_a_nan_gamma_raises_naming_it_and_changes_nothing():
    source, target = stepped(SCHEDULERS["StepLR"], steps=4), stepped(SCHEDULERS["StepLR"], steps=1)
    state = source.state_dict()
    state["gamma"] = math.nan
    before = target.state_dict()
    with pytest.raises(ValueError, match=r"StepLR.load_state_dict: gamma must be a finite number > 0, got nan"):
        target.load_state_dict(state)
    assert target.state_dict() == before


def test_a_plateau_load_with_a_missing_key_raises_naming_it_and_changes_nothing():
    source = stepped(SCHEDULERS["ReduceLROnPlateau"], steps=4)
    target = stepped(SCHEDULERS["ReduceLROnPlateau"], steps=1)
    state = source.state_dict()
    del state["cooldown_counter"]
    state["factor"] = 0.25
    before = target.state_dict()
    with pytest.raises(ValueError, match=r"ReduceLROnPlateau.load_state_dict: .*missing.*cooldown_counter"):
        target.load_state_dict(state)
    assert target.state_dict() == before
