"""Adam and AdamW: the update written out by hand, agreement with torch.optim.Adam/AdamW, skipped
parameters, in-place steps, state_dict and checkpoint round trips, and argument checks.

Round-off. The tests compare with a float64 reference through a bound that the
reference run computes element by element (``hand_adam``'s ``budget``):

    |p - p_exact| <= eps * sum over steps t of ( |p_{t-1}| + |p_t| + (4t + 8) * U_t ),
    U_t = lr * S_t / denom_t,   S_t = max over steps s <= t of |g_s|.

The first two terms cover rounding the new p and AdamW's decay. U_t bounds
the step |lr * m_hat / denom| and is the scale of its error: m's absolute
error grows by at most about eps * (1 - beta1**t) * S_t a step (a weighted
sum of terms no larger than S_t; step_size = lr / (1 - beta1**t) takes the
bias correction out again); v is a sum of non-negative terms, so its relative
error grows by a few eps a step, and sqrt halves it; the division and the
step size add a few roundings more. Counted generously: (4t + 8) eps.
This holds while an error in p does not grow through the coupled decay
``g = grad + weight_decay * p``: the problems here keep |weight_decay * p|
small beside |grad| (gradients of magnitude 0.5 to 2, weight_decay <= 0.1,
lr <= 0.1), so that feedback is a few per cent of an eps a step.
"""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minialex as ma
import minialex.functional as F
from minialex import backend, nn
from minialex.checkpoint import load_checkpoint, save_checkpoint
from minialex.optim import SGD, Adam, AdamW, StepLR
from tests import float32_round_off as round_off
from tests.optimizer_states import BAD_VALUES, assert_same_snapshot, bytes_allocated_by, snapshot

EPS64 = float(np.finfo(np.float64).eps)
OPTIMISERS = {"Adam": Adam, "AdamW": AdamW}


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


# --------------------------------------------------------------------------- problems and the hand-written update


def make_problem(seed, shapes, steps, dtype):
    """Parameters in [-1, 1]; gradients of magnitude 0.5 to 2 and random sign (never near zero)."""
    rng = np.random.default_rng(seed)
    initial = [rng.uniform(-1, 1, s).astype(dtype) for s in shapes]
    grads = [[(rng.choice([-1.0, 1.0], s) * rng.uniform(0.5, 2.0, s)).astype(dtype) for s in shapes]
             for _ in range(steps)]
    return initial, grads


def hand_adam(initial, grads_per_step, lr, betas, eps, weight_decay, decoupled):
    """The textbook update, one line a formula, in float64 on copies; a None gradient skips a parameter.

    Returns (parameters, round-off budgets): see the module docstring for the budget.
    """
    beta1, beta2 = betas
    params = [np.asarray(p, np.float64).copy() for p in initial]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    steps = [0] * len(params)
    largest_g = [np.zeros_like(p) for p in params]
    budgets = [np.zeros_like(p) for p in params]
    for grads in grads_per_step:
        for i, grad in enumerate(grads):
            if grad is None:
                continue
            steps[i] += 1
            t, p = steps[i], params[i]
            before = np.abs(p)
            if decoupled:
                p *= 1 - lr * weight_decay
                g = np.asarray(grad, np.float64)
            else:
                g = grad + weight_decay * p
            m[i] = beta1 * m[i] + (1 - beta1) * g
            v[i] = beta2 * v[i] + (1 - beta2) * g * g
            m_hat = m[i] / (1 - beta1**t)
            v_hat = v[i] / (1 - beta2**t)
            denom = np.sqrt(v_hat) + eps
            p -= lr * m_hat / denom
            largest_g[i] = np.maximum(largest_g[i], np.abs(g))
            budgets[i] += before + np.abs(p) + (4 * t + 8) * lr * largest_g[i] / denom
    return params, budgets


def run_ours(cls, initial, grads_per_step, **hyper):
    params = [ma.tensor(p.copy(), requires_grad=True) for p in initial]
    opt = cls(params, **hyper)
    train(params, opt, grads_per_step)
    return params, opt


def train(params, opt, grads_per_step):
    for grads in grads_per_step:
        for p, g in zip(params, grads):
            p.grad = None if g is None else ma.tensor(g.copy())
        opt.step()


def run_torch(torch, name, initial, grads_per_step, dtype=np.float64, **hyper):
    params = [torch.nn.Parameter(torch.from_numpy(np.asarray(p, dtype).copy())) for p in initial]
    opt = getattr(torch.optim, name)(params, **hyper)
    for grads in grads_per_step:
        for p, g in zip(params, grads):
            p.grad = None if g is None else torch.from_numpy(np.asarray(g, dtype).copy())
        opt.step()
    return [p.detach().numpy() for p in params], opt


def assert_within(actual, reference, budget, eps, what=""):
    error = np.abs(np.asarray(actual, np.float64) - reference)
    bound = eps * budget + round_off.SMALLEST_SUBNORMAL32
    assert np.all(error <= bound), f"{what}largest error / bound: {np.max(error / bound):.3g}"


shapes = st.lists(st.lists(st.integers(1, 4), min_size=0, max_size=3).map(tuple), min_size=1, max_size=3)
hyper_parameters = st.fixed_dictionaries({
    "lr": st.floats(1e-4, 0.1),
    "betas": st.tuples(st.floats(0.0, 0.99), st.floats(0.0, 0.9999)),
    "eps": st.sampled_from([0.0, 1e-8, 1e-6, 1e-3]),
    "weight_decay": st.one_of(st.just(0.0), st.floats(1e-6, 0.1)),
})
problems = dict(seed=st.integers(0, 2**32 - 1), shapes=shapes, steps=st.integers(1, 6),
                name=st.sampled_from(sorted(OPTIMISERS)), hyper=hyper_parameters)


# --------------------------------------------------------------------------- the update by hand


@settings(max_examples=40, deadline=None)
@given(**problems)
def test_several_steps_equal_the_update_written_out_by_hand(seed, shapes, steps, name, hyper):
    initial, grads = make_problem(seed, shapes, steps, np.float64)
    params, opt = run_ours(OPTIMISERS[name], initial, grads, **hyper)
    expected, budgets = hand_adam(initial, grads, decoupled=name == "AdamW", **hyper)
    for p, e, b in zip(params, expected, budgets):
        assert p.dtype == np.float64
        # Both runs are within eps64 * budget of the exact values.
        assert_within(p.data, e, b, 2 * EPS64)
    assert [s["step"] for s in opt.state.values()] == [steps] * len(shapes)


@settings(max_examples=40, deadline=None)
@given(**problems)
def test_float32_parameters_stay_float32_within_round_off_of_the_float64_hand_update(
        seed, shapes, steps, name, hyper):
    initial, grads = make_problem(seed, shapes, steps, np.float32)
    params, opt = run_ours(OPTIMISERS[name], initial, grads, **hyper)
    expected, budgets = hand_adam(initial, grads, decoupled=name == "AdamW", **hyper)
    for index, (p, e, b) in enumerate(zip(params, expected, budgets)):
        assert p.dtype == opt.state[index]["exp_avg"].dtype == opt.state[index]["exp_avg_sq"].dtype == np.float32
        assert_within(p.data, e, b, round_off.EPS32)


def test_adam_and_adamw_differ_only_in_where_the_decay_goes():
    initial, grads = make_problem(0, [(4,)], 3, np.float64)
    hyper = dict(lr=0.01, betas=(0.9, 0.999), eps=1e-8)
    no_decay = [run_ours(cls, initial, grads, weight_decay=0.0)[0][0].numpy() for cls in (Adam, AdamW)]
    np.testing.assert_array_equal(no_decay[0], no_decay[1])
    adam, _ = run_ours(Adam, initial, grads, weight_decay=0.1, **hyper)
    adamw, _ = run_ours(AdamW, initial, grads, weight_decay=0.1, **hyper)
    assert not np.array_equal(adam[0].data, adamw[0].data)


def test_defaults_are_pytorchs():
    adam, adamw = Adam([param()]), AdamW([param()])
    for opt, decay in ((adam, 0.0), (adamw, 1e-2)):
        assert opt.defaults == {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": decay}


# --------------------------------------------------------------------------- against PyTorch


@settings(max_examples=40, deadline=None)
@given(dtype=st.sampled_from([np.float64, np.float32]), **problems)
def test_agrees_with_torch_optim_adam_and_adamw(torch, dtype, seed, shapes, steps, name, hyper):
    initial, grads = make_problem(seed, shapes, steps, dtype)
    ours, _ = run_ours(OPTIMISERS[name], initial, grads, **hyper)
    # torch in float64 on the same (float32-valued) numbers is the reference.
    reference, _ = run_torch(torch, name, initial, grads, **hyper)
    _, budgets = hand_adam(initial, grads, decoupled=name == "AdamW", **hyper)
    for p, r, b in zip(ours, reference, budgets):
        assert p.dtype == dtype
        if dtype == np.float64:
            assert_within(p.data, r, b, 2 * EPS64, "against torch in float64: ")
        else:
            assert_within(p.data, r, b, round_off.EPS32, "float32 against torch in float64: ")


@pytest.mark.parametrize("name", sorted(OPTIMISERS))
def test_agrees_with_torch_in_float64_to_1e_12_relative(torch, name):
    initial, grads = make_problem(3, [(3, 4), (5,), (2, 1, 3)], 10, np.float64)
    hyper = dict(lr=0.01, betas=(0.8, 0.99), eps=1e-8, weight_decay=0.05)
    ours, _ = run_ours(OPTIMISERS[name], initial, grads, **hyper)
    theirs, _ = run_torch(torch, name, initial, grads, **hyper)
    for p, t in zip(ours, theirs):
        np.testing.assert_allclose(p.data, t, rtol=1e-12, atol=1e-15)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), name=st.sampled_from(sorted(OPTIMISERS)),
       has_grad=st.lists(st.lists(st.booleans(), min_size=3, max_size=3), min_size=1, max_size=6))
def test_parameters_without_a_gradient_keep_their_state_and_step_count_as_in_torch(torch, seed, name, has_grad):
    initial, grads = make_problem(seed, [(2, 3), (4,), ()], len(has_grad), np.float64)
    grads = [[g if present else None for g, present in zip(step, mask)] for step, mask in zip(grads, has_grad)]
    hyper = dict(lr=0.05, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.05)
    ours, opt = run_ours(OPTIMISERS[name], initial, grads, **hyper)
    theirs, topt = run_torch(torch, name, initial, grads, **hyper)
    expected, budgets = hand_adam(initial, grads, decoupled=name == "AdamW", **hyper)
    for i, (p, t, e, b, start) in enumerate(zip(ours, theirs, expected, budgets, initial)):
        received = sum(mask[i] for mask in has_grad)
        if received == 0:
            np.testing.assert_array_equal(p.data, start)  # never updated, not even decayed
            assert i not in opt.state
        else:
            assert opt.state[i]["step"] == received == int(topt.state[topt.param_groups[0]["params"][i]]["step"])
        assert_within(p.data, t, b, 2 * EPS64)
        assert_within(p.data, e, b, 2 * EPS64)


def test_param_groups_and_a_changed_learning_rate_agree_with_torch(torch):
    initial, grads = make_problem(9, [(3, 4), (5,), (2, 2)], 8, np.float64)

    def groups(ps):
        return [{"params": ps[:1], "lr": 0.05, "betas": (0.5, 0.9)}, {"params": ps[1:], "weight_decay": 0.1}]

    for ours_cls, torch_cls in ((Adam, torch.optim.Adam), (AdamW, torch.optim.AdamW)):
        a = [ma.tensor(p.copy(), requires_grad=True) for p in initial]
        b = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in initial]
        opt, topt = ours_cls(groups(a), lr=0.01), torch_cls(groups(b), lr=0.01)
        assert [g["betas"] for g in opt.param_groups] == [(0.5, 0.9), (0.9, 0.999)]
        for step, step_grads in enumerate(grads):
            if step == 4:  # what a scheduler does
                for group, tgroup in zip(opt.param_groups, topt.param_groups):
                    group["lr"] = tgroup["lr"] = group["lr"] / 10
            for p, t, g in zip(a, b, step_grads):
                p.grad = ma.tensor(g.copy())
                t.grad = torch.from_numpy(g.copy())
            opt.step()
            topt.step()
        for p, t in zip(a, b):
            np.testing.assert_allclose(p.data, t.detach().numpy(), rtol=1e-12, atol=1e-15)


# --------------------------------------------------------------------------- in place, frozen, versions


def param(shape=(3,)):
    return ma.tensor(np.ones(shape), requires_grad=True)


@pytest.mark.parametrize("name", sorted(OPTIMISERS))
def test_step_updates_the_arrays_in_place_and_leaves_the_gradients_alone(name):
    initial, grads = make_problem(1, [(3, 4), (5,)], 3, np.float32)
    params = [ma.tensor(p.copy(), requires_grad=True) for p in initial]
    opt = OPTIMISERS[name](params, lr=0.1, weight_decay=0.1)
    arrays = [p.data for p in params]
    train(params, opt, grads[:1])
    moments = [(s["exp_avg"], s["exp_avg_sq"]) for s in opt.state.values()]
    train(params, opt, grads[1:])
    for p, a, start, g, (m, v), s in zip(params, arrays, initial, grads[-1], moments, opt.state.values()):
        assert p.data is a and not np.array_equal(a, start)
        assert s["exp_avg"] is m and s["exp_avg_sq"] is v
        np.testing.assert_array_equal(p.grad.data, g)


@pytest.mark.parametrize("name", sorted(OPTIMISERS))
def test_a_step_after_the_first_allocates_no_parameter_sized_array(name):
    n = 1_000_000  # 8 MB a parameter-sized float64 array
    p = ma.tensor(np.ones(n), requires_grad=True)
    opt = OPTIMISERS[name]([p], lr=0.1, weight_decay=5e-4)
    p.grad = ma.tensor(np.full(n, 0.5))
    opt.step()  # the moments (and the scratch) are allocated here
    allocated = bytes_allocated_by(lambda: (opt.step(), opt.step()))
    assert allocated < n * 8 // 4, f"a step allocated {allocated} bytes for an {n * 8}-byte parameter"


@pytest.mark.parametrize("name", sorted(OPTIMISERS))
def test_a_frozen_parameter_is_accepted_and_never_updated_as_in_pytorch(name):
    """Fine-tuning freezes layers (requires_grad False) and still passes model.parameters()."""
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    frozen = model[0].weight
    frozen.requires_grad_(False)
    before = frozen.numpy()
    params = list(model.parameters())
    opt = OPTIMISERS[name](params, lr=0.1, weight_decay=0.1)
    x = ma.tensor(np.ones((5, 3), dtype=np.float32))
    for _ in range(3):
        opt.zero_grad()
        model(x).sum().backward()
        opt.step()
    np.testing.assert_array_equal(frozen.data, before)
    assert frozen.grad is None
    frozen_index = next(i for i, p in enumerate(params) if p is frozen)
    assert frozen_index not in opt.state
    assert all(s["step"] == 3 for s in opt.state.values()) and len(opt.state) == len(params) - 1


def test_step_bumps_the_version_of_every_updated_parameter_and_of_no_other():
    a, b = param(), param()
    opt = Adam([a, b])
    a.grad = ma.tensor(np.ones(3))
    before_a, before_b = a._version, b._version
    opt.step()
    opt.step()
    assert a._version == before_a + 2
    assert b._version == before_b


def test_a_gradient_of_the_wrong_shape_raises_value_error():
    p = param()
    opt = AdamW([p])
    p.grad = ma.tensor(np.ones(4))
    with pytest.raises(ValueError, match=r"AdamW: parameter 0 has shape \(3,\) but its grad \(4,\)"):
        opt.step()


def test_training_loop_with_backward_minimises_a_quadratic():
    target = np.array([1.0, -2.0, 3.0])
    w = ma.tensor(np.zeros(3), requires_grad=True)
    opt = Adam([w], lr=0.1)
    for _ in range(500):
        opt.zero_grad()
        loss = ((w - ma.tensor(target)) ** 2).sum()
        loss.backward()
        opt.step()
    np.testing.assert_allclose(w.data, target, atol=1e-4)


# --------------------------------------------------------------------------- state_dict


@pytest.mark.parametrize("name", sorted(OPTIMISERS))
def test_continuing_from_a_loaded_state_equals_uninterrupted_training_bit_for_bit(name):
    initial, grads = make_problem(4, [(3, 4), (5,), (2,)], 8, np.float32)
    grads[1][2] = None  # parameter 2 misses a step: its count lags the others'
    hyper = dict(lr=0.05, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.05)

    straight, _ = run_ours(OPTIMISERS[name], initial, grads, **hyper)

    first, opt = run_ours(OPTIMISERS[name], initial, grads[:4], **hyper)
    saved_params, saved_state = [p.numpy() for p in first], opt.state_dict()
    assert [int(saved_state["state"][i]["step"]) for i in range(3)] == [4, 4, 3]
    del opt, first

    resumed = [ma.tensor(p, requires_grad=True) for p in saved_params]
    opt2 = OPTIMISERS[name](resumed, lr=999.0, betas=(0.1, 0.2))  # hyper-parameters come back too
    opt2.load_state_dict(saved_state)
    assert opt2.param_groups[0]["lr"] == 0.05 and opt2.param_groups[0]["betas"] == (0.8, 0.99)
    assert [opt2.state[i]["step"] for i in range(3)] == [4, 4, 3]
    train(resumed, opt2, grads[4:])
    for p, s in zip(resumed, straight):
        np.testing.assert_array_equal(p.data, s.data)


def test_state_dict_holds_numpy_copies_and_the_step_as_a_0d_int64_array():
    initial, grads = make_problem(5, [(3,)], 3, np.float64)
    params, opt = run_ours(Adam, initial, grads[:1])
    sd = opt.state_dict()
    state = sd["state"][0]
    assert set(state) == {"step", "exp_avg", "exp_avg_sq"}
    assert state["step"].shape == () and state["step"].dtype == np.int64 and state["step"] == 1
    np.testing.assert_allclose(state["exp_avg"], 0.1 * grads[0][0], rtol=1e-15)
    snapshot = state["exp_avg"].copy()
    train(params, opt, grads[1:])
    np.testing.assert_array_equal(state["exp_avg"], snapshot)  # later steps do not write into it
    assert opt.state[0]["step"] == 3 and state["step"] == 1
    assert sd["param_groups"] == [{"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0,
                                   "params": [0]}]


def test_a_state_in_pytorchs_form_loads_float_step_and_list_betas():
    """torch keeps the step in a float tensor; JSON turns the betas tuple into a list."""
    p = param()
    opt = Adam([p])
    state = {"state": {"0": {"step": np.float32(3.0), "exp_avg": [0.1, 0.2, 0.3], "exp_avg_sq": np.ones(3)}},
             "param_groups": [{"lr": 0.01, "betas": [0.5, 0.75], "eps": 1e-8, "weight_decay": 0.0, "params": [0]}]}
    opt.load_state_dict(state)
    assert opt.state[0]["step"] == 3 and isinstance(opt.state[0]["step"], int)
    assert opt.param_groups[0]["betas"] == (0.5, 0.75)
    assert opt.state[0]["exp_avg"].dtype == np.float64


def trained_optimiser(cls=Adam):
    """Two groups, state for three of the four parameters."""
    params = [ma.tensor(np.ones(s), requires_grad=True) for s in [(2, 3), (4,), (3,), (1,)]]
    opt = cls([{"params": params[:2]}, {"params": params[2:], "lr": 0.01, "betas": (0.5, 0.6)}], lr=0.1)
    for p in params[:3]:
        p.grad = ma.tensor(np.full(p.shape, 0.5))
    opt.step()
    return opt


def corruptions():
    """Functions that damage a state dict in place, one way each."""
    group_option = st.builds(
        lambda group, key, value: lambda sd: sd["param_groups"][group].__setitem__(key, value),
        st.integers(0, 1), st.sampled_from(["lr", "eps", "weight_decay", "betas"]), st.sampled_from(BAD_VALUES),
    )
    bad_betas = st.builds(
        lambda group, betas: lambda sd: sd["param_groups"][group].__setitem__("betas", betas),
        st.integers(0, 1), st.sampled_from([(1.0, 0.9), (0.9, 1.0), (-0.1, 0.9), (0.9,), (0.9, 0.9, 0.9), 0.9,
                                            (math.nan, 0.9), ("a", "b")]),
    )
    bad_entry = st.builds(
        lambda index, name, value: lambda sd: sd["state"].setdefault(index, {}).__setitem__(name, value),
        st.integers(0, 3),
        st.sampled_from(["step", "exp_avg", "exp_avg_sq"]),
        st.sampled_from([np.array(["a", "b", "c", "d"]), np.zeros((5, 5)), np.array([object()] * 4),
                         [[1.0], [2.0, 3.0]], -1, 2.5, math.nan, np.array([1, 2]), True, "3"]),
    )
    missing_entry = st.builds(
        lambda index, name: lambda sd: sd["state"].get(index, {}).pop(name, None),
        st.integers(0, 2), st.sampled_from(["step", "exp_avg", "exp_avg_sq"]),
    )
    stray = st.sampled_from([
        lambda sd: sd["state"].__setitem__(7, {"step": 1, "exp_avg": np.zeros(1), "exp_avg_sq": np.zeros(1)}),
        lambda sd: sd["state"][0].__setitem__("momentum_buffer", np.zeros((2, 3))),
        lambda sd: sd["param_groups"].pop(),
        lambda sd: sd["param_groups"][0].pop("betas"),
        lambda sd: sd.pop("state"),
    ])
    return st.one_of(group_option, bad_betas, bad_entry, missing_entry, stray)


@settings(max_examples=80, deadline=None)
@given(damage=st.lists(corruptions(), min_size=1, max_size=3), name=st.sampled_from(sorted(OPTIMISERS)))
def test_a_load_either_restores_a_valid_state_or_raises_and_changes_nothing(damage, name):
    cls = OPTIMISERS[name]
    state = trained_optimiser(cls).state_dict()
    state["param_groups"][0]["lr"] = 0.5  # a load that succeeded would show this
    for corrupt in damage:
        try:
            corrupt(state)
        except (IndexError, KeyError, AttributeError):
            pass  # an earlier corruption removed what this one damages
    opt = trained_optimiser(cls)
    before = snapshot(opt)
    try:
        opt.load_state_dict(state)
    except (ValueError, TypeError):
        assert_same_snapshot(snapshot(opt), before)
    else:
        for group in opt.param_groups:  # what was loaded is a state the optimiser could have been built with
            for key in ("lr", "eps", "weight_decay"):
                assert isinstance(group[key], float) and math.isfinite(group[key]) and group[key] >= 0
            assert isinstance(group["betas"], tuple) and all(0 <= b < 1 for b in group["betas"])
        for buffers in opt.state.values():
            assert set(buffers) == {"step", "exp_avg", "exp_avg_sq"}
            assert isinstance(buffers["step"], int) and buffers["step"] >= 0
            assert buffers["exp_avg"].dtype == buffers["exp_avg_sq"].dtype == np.float64
        for p in opt.param_groups[0]["params"]:  # and it steps
            p.grad = ma.tensor(np.ones(p.shape))
        opt.step()


@pytest.mark.parametrize("value, shown", [(-1, "int -1"), (2.5, "float 2.5"), (np.array([1, 2]), "ndarray")])
def test_loading_a_bad_step_count_raises_naming_the_parameter_and_changes_nothing(value, shown):
    opt = trained_optimiser()
    before = snapshot(opt)
    state = opt.state_dict()
    state["state"][1]["step"] = value
    with pytest.raises(ValueError, match=rf"step of parameter 1 must be a count \(an integer >= 0\), got {shown}"):
        opt.load_state_dict(state)
    assert_same_snapshot(snapshot(opt), before)


def test_loading_a_state_without_a_moment_raises_naming_what_is_missing():
    opt = trained_optimiser()
    state = opt.state_dict()
    del state["state"][2]["exp_avg_sq"]
    with pytest.raises(ValueError, match=r"state of parameter 2 must hold exactly step, exp_avg, exp_avg_sq; "
                                         r"got step, exp_avg"):
        opt.load_state_dict(state)


def test_an_sgd_state_does_not_load_into_adam():
    p = param()
    sgd = SGD([p], lr=0.1, momentum=0.9)
    p.grad = ma.tensor(np.ones(3))
    sgd.step()
    with pytest.raises(ValueError, match=r"no betas, eps"):
        Adam([param()]).load_state_dict(sgd.state_dict())


# --------------------------------------------------------------------------- checkpoints


def make_run(seed, name):
    ma.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 3))
    model[0].bias.requires_grad_(False)  # a frozen parameter: no state saved for it
    optimizer = OPTIMISERS[name](model.parameters(), lr=0.01, betas=(0.8, 0.95), weight_decay=0.05)
    scheduler = StepLR(optimizer, step_size=2, gamma=0.5)
    return model, optimizer, scheduler


def train_steps(model, optimizer, scheduler, steps):
    """Each step draws its batch (and the dropout mask) from the engine's RNG."""
    model.train()
    for _ in range(steps):
        rng = backend.cpu_rng()
        x = rng.standard_normal((5, 6)).astype(np.float32)
        y = rng.integers(0, 3, 5)
        loss = F.cross_entropy(model(ma.Tensor(x)), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()


@pytest.mark.parametrize("name", sorted(OPTIMISERS))
def test_a_run_resumed_from_a_checkpoint_continues_bit_identically(tmp_path, name):
    path = tmp_path / "run.npz"
    model, optimizer, scheduler = make_run(seed=1, name=name)
    train_steps(model, optimizer, scheduler, 3)
    save_checkpoint(path, model, optimizer, scheduler, epoch=3)
    train_steps(model, optimizer, scheduler, 4)

    resumed, resumed_optimizer, resumed_scheduler = make_run(seed=2, name=name)
    resumed_optimizer.param_groups[0]["betas"] = (0.1, 0.2)  # comes back from the checkpoint
    assert load_checkpoint(path, resumed, resumed_optimizer, resumed_scheduler)["epoch"] == 3
    assert resumed_optimizer.param_groups[0]["betas"] == (0.8, 0.95)
    assert {i: s["step"] for i, s in resumed_optimizer.state.items()} == {0: 3, 2: 3, 3: 3}
    train_steps(resumed, resumed_optimizer, resumed_scheduler, 4)

    for (key, a), (_, b) in zip(sorted(model.state_dict().items()), sorted(resumed.state_dict().items())):
        assert np.array_equal(a, b), key
    for i, s in optimizer.state.items():
        assert resumed_optimizer.state[i]["step"] == s["step"] == 7
        for buffer in ("exp_avg", "exp_avg_sq"):
            assert np.array_equal(resumed_optimizer.state[i][buffer], s[buffer])


# --------------------------------------------------------------------------- bad arguments


@pytest.mark.parametrize("name", sorted(OPTIMISERS))
@pytest.mark.parametrize("argument, value, expected", [
    ("lr", math.nan, "lr must be a finite number >= 0, got nan"),
    ("lr", math.inf, "lr must be a finite number >= 0, got inf"),
    ("lr", -1e-3, "lr must be a finite number >= 0, got -0.001"),
    ("eps", -1e-8, "eps must be a finite number >= 0, got -1e-08"),
    ("eps", math.nan, "eps must be a finite number >= 0, got nan"),
    ("weight_decay", -0.1, "weight_decay must be a finite number >= 0, got -0.1"),
    ("weight_decay", math.inf, "weight_decay must be a finite number >= 0, got inf"),
    ("betas", (1.0, 0.999), r"betas\[0\] must be a finite number in \[0, 1\), got 1.0"),
    ("betas", (-0.1, 0.999), r"betas\[0\] must be a finite number in \[0, 1\), got -0.1"),
    ("betas", (0.9, 1.0), r"betas\[1\] must be a finite number in \[0, 1\), got 1.0"),
    ("betas", (0.9, math.nan), r"betas\[1\] must be a finite number in \[0, 1\), got nan"),
    ("betas", (0.9, "0.99"), r"betas\[1\] must be a finite number in \[0, 1\), got '0.99'"),
    ("betas", 0.9, r"betas must be a pair \(beta1, beta2\), got 0.9"),
    ("betas", (0.9,), r"betas must be a pair \(beta1, beta2\), got \(0.9,\)"),
    ("betas", (0.9, 0.99, 0.999), r"betas must be a pair \(beta1, beta2\), got \(0.9, 0.99, 0.999\)"),
    ("betas", None, r"betas must be a pair \(beta1, beta2\), got NoneType"),
])
def test_bad_hyper_parameters_raise_value_error_naming_the_argument_and_value(name, argument, value, expected):
    with pytest.raises(ValueError, match=rf"^{name}: {expected}$"):
        OPTIMISERS[name]([param()], **{argument: value})


def test_a_bad_option_in_a_param_group_is_named_with_its_group():
    with pytest.raises(ValueError, match=r"^Adam: param group 1: betas\[0\] must be a finite number in \[0, 1\)"):
        Adam([{"params": [param()]}, {"params": [param()], "betas": (1.5, 0.9)}])


@settings(max_examples=60, deadline=None)
@given(beta=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-2, 2)), which=st.integers(0, 1))
def test_a_beta_is_accepted_exactly_when_it_is_a_finite_number_in_0_1(beta, which):
    betas = [0.9, 0.999]
    betas[which] = beta
    if math.isfinite(beta) and 0 <= beta < 1:
        assert AdamW([param()], betas=betas).param_groups[0]["betas"][which] == beta
    else:
        with pytest.raises(ValueError, match=rf"AdamW: betas\[{which}\] must be a finite number in \[0, 1\)"):
            AdamW([param()], betas=betas)


@pytest.mark.parametrize("name", sorted(OPTIMISERS))
def test_a_non_leaf_tensor_is_rejected_naming_its_index(name):
    computed = param() * 2  # made by an op: a step would write into an array that nothing reads
    with pytest.raises(ValueError, match=rf"^{name}: parameter 1 is not a leaf tensor \(it was computed by"):
        OPTIMISERS[name]([param(), computed])


def test_an_empty_parameter_list_or_a_single_tensor_is_refused():
    with pytest.raises(ValueError, match="empty"):
        Adam([])
    with pytest.raises(TypeError, match="iterable"):
        AdamW(param())
