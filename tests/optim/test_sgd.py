"""SGD: the update written out by hand, agreement with torch.optim.SGD, in-place steps, groups, state."""

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minialex as ma
from minialex.optim import SGD
from tests import float32_round_off as round_off
from tests.optimizer_states import BAD_VALUES, assert_same_snapshot, bytes_allocated_by, snapshot

# Every (momentum, weight_decay, nesterov) the contract allows: nesterov only with momentum.
COMBINATIONS = [
    (m, wd, nesterov)
    for m, wd, nesterov in itertools.product([0.0, 0.9], [0.0, 5e-4, 0.1], [False, True])
    if not (nesterov and m == 0.0)
]
SHAPES = [(3, 4), (5,), (2, 1, 3, 3)]
STEPS = 6


def hand_sgd(params, grads_per_step, lr, momentum, weight_decay, nesterov):
    """The update of API.md, one line a formula, in float64 on copies."""
    params = [p.astype(np.float64).copy() for p in params]
    buffers = [None] * len(params)
    for grads in grads_per_step:
        for i, (p, grad) in enumerate(zip(params, grads)):
            g = grad + weight_decay * p
            if momentum != 0:
                buffers[i] = g.copy() if buffers[i] is None else momentum * buffers[i] + g
                g = g + momentum * buffers[i] if nesterov else buffers[i]
            p -= lr * g
    return params


def make_problem(dtype, seed=0, steps=STEPS):
    rng = np.random.default_rng(seed)
    initial = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    grads = [[rng.standard_normal(s).astype(dtype) for s in SHAPES] for _ in range(steps)]
    return initial, grads


def run_ours(initial, grads_per_step, **hyper):
    params = [ma.tensor(p.copy(), requires_grad=True) for p in initial]
    opt = SGD(params, **hyper)
    for grads in grads_per_step:
        for p, g in zip(params, grads):
            p.grad = ma.tensor(g.copy())
        opt.step()
    return params, opt


# --------------------------------------------------------------------------- the update by hand


@pytest.mark.parametrize("momentum,weight_decay,nesterov", COMBINATIONS)
def test_several_steps_equal_the_update_written_out_by_hand(momentum, weight_decay, nesterov):
    initial, grads = make_problem(np.float64)
    hyper = dict(lr=0.05, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
    params, _ = run_ours(initial, grads, **hyper)
    expected = hand_sgd(initial, grads, **hyper)
    for p, e in zip(params, expected):
        assert p.dtype == np.float64
        np.testing.assert_allclose(p.data, e, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("momentum,weight_decay,nesterov", COMBINATIONS)
def test_float32_parameters_stay_float32_and_follow_the_hand_update(momentum, weight_decay, nesterov):
    initial, grads = make_problem(np.float32, seed=3)
    hyper = dict(lr=0.05, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
    params, _ = run_ours(initial, grads, **hyper)
    expected = hand_sgd(initial, grads, **hyper)
    for p, e in zip(params, expected):
        assert p.dtype == np.float32
        # Against the float64 hand update: each step rounds about six float32 operations
        # whose terms are no larger than the parameters' scale (lr * gradients and buffers
        # stay below it here), for STEPS steps: tests/float32_round_off.py's chain bound.
        round_off.assert_within_chain_round_off(p.data, e, longest_sum=4, layers=STEPS)


def test_momentum_without_weight_decay_first_step_is_plain_sgd_then_accumulates():
    p = ma.tensor(np.array([1.0, 2.0]), requires_grad=True)
    opt = SGD([p], lr=0.1, momentum=0.5)
    p.grad = ma.tensor(np.array([1.0, -1.0]))
    opt.step()  # buf = g = [1, -1]
    np.testing.assert_allclose(p.data, [0.9, 2.1], rtol=0, atol=1e-15)
    p.grad = ma.tensor(np.array([1.0, -1.0]))
    opt.step()  # buf = 0.5 * [1, -1] + [1, -1] = [1.5, -1.5]
    np.testing.assert_allclose(p.data, [0.75, 2.25], rtol=0, atol=1e-15)


def test_weight_decay_alone_shrinks_parameters_towards_zero():
    p = ma.tensor(np.array([2.0, -4.0]), requires_grad=True)
    opt = SGD([p], lr=0.5, weight_decay=0.1)
    p.grad = ma.tensor(np.zeros(2))
    opt.step()  # p -= 0.5 * 0.1 * p
    np.testing.assert_allclose(p.data, [1.9, -3.8], rtol=1e-15)


# --------------------------------------------------------------------------- against PyTorch


def run_torch(torch, initial, grads_per_step, **hyper):
    params = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in initial]
    opt = torch.optim.SGD(params, **hyper)
    for grads in grads_per_step:
        for p, g in zip(params, grads):
            p.grad = torch.from_numpy(g.copy())
        opt.step()
    return [p.detach().numpy() for p in params]


@pytest.mark.parametrize("momentum,weight_decay,nesterov", COMBINATIONS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_agrees_with_torch_optim_sgd(momentum, weight_decay, nesterov, dtype):
    torch = pytest.importorskip("torch")
    initial, grads = make_problem(dtype, seed=5, steps=10)
    hyper = dict(lr=0.03, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
    ours, _ = run_ours(initial, grads, **hyper)
    theirs = run_torch(torch, initial, grads, **hyper)
    if dtype == np.float32:
        # Against torch.optim.SGD on the same values in float64 (its float32 run may fuse
        # multiply-adds differently on another CPU): about six rounded operations a step on
        # terms no larger than the parameters' scale, for 10 steps (tests/float32_round_off.py).
        reference = run_torch(torch, [p.astype(np.float64) for p in initial],
                              [[g.astype(np.float64) for g in step] for step in grads], **hyper)
        for p, t, r in zip(ours, theirs, reference):
            assert p.dtype == t.dtype == np.float32
            round_off.assert_within_chain_round_off(p.data, r, longest_sum=4, layers=10)
        return
    for p, t in zip(ours, theirs):
        assert p.dtype == t.dtype
        np.testing.assert_allclose(p.data, t, rtol=1e-12, atol=1e-13)


def test_agrees_with_torch_when_the_learning_rate_changes_between_steps():
    """PyTorch's form: the buffer is rescaled by the new rate at once (unlike the paper's velocity)."""
    torch = pytest.importorskip("torch")
    initial, grads = make_problem(np.float64, seed=11, steps=6)
    ours = [ma.tensor(p.copy(), requires_grad=True) for p in initial]
    theirs = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in initial]
    opt = SGD(ours, lr=0.1, momentum=0.9, weight_decay=5e-4)
    topt = torch.optim.SGD(theirs, lr=0.1, momentum=0.9, weight_decay=5e-4)
    for step, step_grads in enumerate(grads):
        if step == 3:
            opt.param_groups[0]["lr"] = topt.param_groups[0]["lr"] = 0.01
        for p, t, g in zip(ours, theirs, step_grads):
            p.grad = ma.tensor(g.copy())
            t.grad = torch.from_numpy(g.copy())
        opt.step()
        topt.step()
    for p, t in zip(ours, theirs):
        np.testing.assert_allclose(p.data, t.detach().numpy(), rtol=1e-12, atol=1e-13)


# --------------------------------------------------------------------------- in place, skipping, groups


@pytest.mark.parametrize("momentum,weight_decay,nesterov", COMBINATIONS)
def test_step_updates_the_parameter_arrays_in_place(momentum, weight_decay, nesterov):
    initial, grads = make_problem(np.float32)
    params = [ma.tensor(p.copy(), requires_grad=True) for p in initial]
    arrays = [p.data for p in params]
    opt = SGD(params, lr=0.1, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
    for step_grads in grads[:3]:
        for p, g in zip(params, step_grads):
            p.grad = ma.tensor(g.copy())
        opt.step()
    for p, a, start in zip(params, arrays, initial):
        assert p.data is a
        assert not np.array_equal(a, start)


def test_step_leaves_the_gradients_unchanged():
    initial, grads = make_problem(np.float64)
    params = [ma.tensor(p.copy(), requires_grad=True) for p in initial]
    opt = SGD(params, lr=0.1, momentum=0.9, weight_decay=0.1, nesterov=True)
    for _ in range(2):
        for p, g in zip(params, grads[0]):
            p.grad = ma.tensor(g.copy())
        opt.step()
        for p, g in zip(params, grads[0]):
            np.testing.assert_array_equal(p.grad.data, g)


def test_a_step_after_the_first_allocates_no_parameter_sized_array():
    n = 1_000_000  # 8 MB a parameter-sized float64 array
    p = ma.tensor(np.ones(n), requires_grad=True)
    opt = SGD([p], lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True)
    p.grad = ma.tensor(np.full(n, 0.5))
    opt.step()  # the momentum buffer (and scratch) are allocated here
    allocated = bytes_allocated_by(lambda: (opt.step(), opt.step()))
    assert allocated < n * 8 // 4, f"a step allocated {allocated} bytes for an {n * 8}-byte parameter"


def test_parameters_without_a_gradient_are_skipped():
    a = ma.tensor(np.ones(3), requires_grad=True)
    b = ma.tensor(np.full(2, 5.0), requires_grad=True)
    opt = SGD([a, b], lr=0.1, momentum=0.9, weight_decay=0.1)
    a.grad = ma.tensor(np.ones(3))
    opt.step()
    np.testing.assert_array_equal(b.data, [5.0, 5.0])  # no grad: not even weight decay
    assert b.grad is None
    np.testing.assert_allclose(a.data, 1 - 0.1 * (1 + 0.1), rtol=1e-15)
    # b gets its first gradient later: its momentum starts fresh (buf = g).
    a.grad, b.grad = None, ma.tensor(np.ones(2))
    opt.step()
    np.testing.assert_allclose(b.data, 5.0 - 0.1 * (1 + 0.1 * 5.0), rtol=1e-15)
    np.testing.assert_allclose(a.data, 1 - 0.1 * (1 + 0.1), rtol=1e-15)


def test_a_frozen_parameter_is_accepted_and_never_updated_as_in_pytorch():
    """Fine-tuning freezes layers (requires_grad False) and still passes model.parameters()."""
    model = ma.nn.Sequential(ma.nn.Linear(3, 4), ma.nn.ReLU(), ma.nn.Linear(4, 2))
    frozen = model[0].weight
    frozen.requires_grad_(False)
    before = frozen.numpy()
    opt = SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1)
    x = ma.tensor(np.ones((5, 3), dtype=np.float32))
    for _ in range(2):
        opt.zero_grad()
        model(x).sum().backward()
        opt.step()
    np.testing.assert_array_equal(frozen.data, before)
    assert frozen.grad is None


def test_param_groups_use_their_own_learning_rate_and_defaults_fill_the_rest():
    initial, grads = make_problem(np.float64, seed=2)
    a, b, c = (ma.tensor(p.copy(), requires_grad=True) for p in initial)
    opt = SGD(
        [{"params": [a], "lr": 0.5}, {"params": [b, c], "momentum": 0.0}],
        lr=0.01,
        momentum=0.9,
        weight_decay=5e-4,
    )
    assert [g["lr"] for g in opt.param_groups] == [0.5, 0.01]
    assert [g["momentum"] for g in opt.param_groups] == [0.9, 0.0]
    assert all(g["weight_decay"] == 5e-4 for g in opt.param_groups)
    for step_grads in grads:
        for p, g in zip((a, b, c), step_grads):
            p.grad = ma.tensor(g.copy())
        opt.step()
    first = [g[:1] for g in grads]
    rest = [g[1:] for g in grads]
    (ea,) = hand_sgd(initial[:1], first, 0.5, 0.9, 5e-4, False)
    eb, ec = hand_sgd(initial[1:], rest, 0.01, 0.0, 5e-4, False)
    for p, e in zip((a, b, c), (ea, eb, ec)):
        np.testing.assert_allclose(p.data, e, rtol=1e-12, atol=1e-14)


def test_param_groups_agree_with_torch():
    torch = pytest.importorskip("torch")
    initial, grads = make_problem(np.float64, seed=9)
    ours = [ma.tensor(p.copy(), requires_grad=True) for p in initial]
    theirs = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in initial]

    def groups(ps):
        return [{"params": ps[:1], "lr": 0.2, "nesterov": True}, {"params": ps[1:], "weight_decay": 0.1}]

    opt = SGD(groups(ours), lr=0.05, momentum=0.9)
    topt = torch.optim.SGD(groups(theirs), lr=0.05, momentum=0.9)
    for step_grads in grads:
        for p, t, g in zip(ours, theirs, step_grads):
            p.grad = ma.tensor(g.copy())
            t.grad = torch.from_numpy(g.copy())
        opt.step()
        topt.step()
    for p, t in zip(ours, theirs):
        np.testing.assert_allclose(p.data, t.detach().numpy(), rtol=1e-12, atol=1e-13)


def test_a_model_parameters_generator_is_accepted():
    layer = ma.nn.Linear(3, 2)
    opt = SGD(layer.parameters(), lr=0.1)
    assert len(opt.param_groups[0]["params"]) == 2


# --------------------------------------------------------------------------- zero_grad


def test_zero_grad_sets_every_gradient_to_none():
    a = ma.tensor(np.ones(3), requires_grad=True)
    b = ma.tensor(np.ones(2), requires_grad=True)
    opt = SGD([{"params": [a]}, {"params": [b]}], lr=0.1)
    (a.sum() * 2 + b.sum()).backward()
    assert a.grad is not None and b.grad is not None
    opt.zero_grad()
    assert a.grad is None and b.grad is None
    opt.step()  # nothing to do, nothing changes
    np.testing.assert_array_equal(a.data, np.ones(3))


def test_training_loop_with_backward_minimises_a_quadratic():
    target = np.array([1.0, -2.0, 3.0])
    w = ma.tensor(np.zeros(3), requires_grad=True)
    opt = SGD([w], lr=0.1, momentum=0.9, nesterov=True)
    for _ in range(200):
        opt.zero_grad()
        loss = ((w - ma.tensor(target)) ** 2).sum()
        loss.backward()
        opt.step()
    np.testing.assert_allclose(w.data, target, atol=1e-6)


# --------------------------------------------------------------------------- state_dict


def train(params, opt, grads_per_step):
    for grads in grads_per_step:
        for p, g in zip(params, grads):
            p.grad = ma.tensor(g.copy())
        opt.step()


@pytest.mark.parametrize("momentum,weight_decay,nesterov", [(0.9, 5e-4, False), (0.9, 0.1, True), (0.0, 0.1, False)])
def test_continuing_from_a_loaded_state_equals_uninterrupted_training(momentum, weight_decay, nesterov):
    initial, grads = make_problem(np.float64, seed=4, steps=8)
    hyper = dict(lr=0.05, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)

    straight = [ma.tensor(p.copy(), requires_grad=True) for p in initial]
    train(straight, SGD(straight, **hyper), grads)

    first = [ma.tensor(p.copy(), requires_grad=True) for p in initial]
    opt = SGD(first, **hyper)
    train(first, opt, grads[:4])
    saved_params = [p.numpy() for p in first]
    saved_state = opt.state_dict()
    del opt, first

    resumed = [ma.tensor(p, requires_grad=True) for p in saved_params]
    opt2 = SGD(resumed, lr=999.0)  # hyper-parameters come back from the state dict too
    opt2.load_state_dict(saved_state)
    assert opt2.param_groups[0]["lr"] == 0.05
    assert opt2.param_groups[0]["momentum"] == momentum
    assert opt2.param_groups[0]["nesterov"] == nesterov
    train(resumed, opt2, grads[4:])
    for p, s in zip(resumed, straight):
        np.testing.assert_array_equal(p.data, s.data)


def test_state_dict_holds_numpy_copies_of_the_momentum_buffers():
    initial, grads = make_problem(np.float64)
    params = [ma.tensor(p.copy(), requires_grad=True) for p in initial]
    opt = SGD(params, lr=0.1, momentum=0.9)
    train(params, opt, grads[:1])
    sd = opt.state_dict()
    assert set(sd) >= {"state", "param_groups"}
    buffers = [sd["state"][i]["momentum_buffer"] for i in range(len(params))]
    for buf, g in zip(buffers, grads[0]):
        assert isinstance(buf, np.ndarray)
        np.testing.assert_array_equal(buf, g)  # buf = g after the first step
    snapshot = [b.copy() for b in buffers]
    train(params, opt, grads[1:3])
    for buf, snap in zip(buffers, snapshot):
        np.testing.assert_array_equal(buf, snap)  # later steps do not write into a saved state


def test_loading_a_state_with_a_mis_shaped_buffer_raises_value_error():
    a = ma.tensor(np.ones((2, 3)), requires_grad=True)
    opt = SGD([a], lr=0.1, momentum=0.9)
    a.grad = ma.tensor(np.ones((2, 3)))
    opt.step()
    sd = opt.state_dict()
    sd["state"][0]["momentum_buffer"] = np.zeros((3, 2))
    fresh = SGD([ma.tensor(np.ones((2, 3)), requires_grad=True)], lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match=r"\(3, 2\)"):
        fresh.load_state_dict(sd)


def test_loading_a_state_for_a_different_number_of_parameters_raises_value_error():
    a = ma.tensor(np.ones(3), requires_grad=True)
    opt = SGD([a], lr=0.1, momentum=0.9)
    a.grad = ma.tensor(np.ones(3))
    opt.step()
    other = SGD([ma.tensor(np.ones(3), requires_grad=True), ma.tensor(np.ones(3), requires_grad=True)], lr=0.1)
    with pytest.raises(ValueError):
        other.load_state_dict(opt.state_dict())


# --------------------------------------------------------------------------- bad arguments


def param():
    return ma.tensor(np.ones(3), requires_grad=True)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(lr=-0.1), "lr"),
        (dict(lr=0.1, momentum=-0.9), "momentum"),
        (dict(lr=0.1, weight_decay=-1e-4), "weight_decay"),
        (dict(lr=0.1, nesterov=True), "nesterov"),
        (dict(lr=0.1, momentum=0.0, nesterov=True), "nesterov"),
    ],
)
def test_bad_hyper_parameters_raise_value_error_naming_them(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SGD([param()], **kwargs)


def test_an_empty_parameter_list_raises_value_error():
    with pytest.raises(ValueError, match="empty"):
        SGD([], lr=0.1)


def test_a_single_tensor_instead_of_an_iterable_raises_type_error():
    with pytest.raises(TypeError, match="iterable"):
        SGD(param(), lr=0.1)


def test_a_non_tensor_parameter_raises_type_error():
    with pytest.raises(TypeError):
        SGD([np.ones(3)], lr=0.1)


def test_a_parameter_in_two_groups_raises_value_error():
    p = param()
    with pytest.raises(ValueError):
        SGD([{"params": [p]}, {"params": [p]}], lr=0.1)


def test_a_gradient_of_the_wrong_shape_raises_value_error():
    p = param()
    opt = SGD([p], lr=0.1)
    p.grad = ma.tensor(np.ones(4))
    with pytest.raises(ValueError, match="shape"):
        opt.step()


# --------------------------------------------------------------------------- leaves, finite hyper-parameters, groups


def test_a_non_leaf_tensor_is_rejected_naming_its_index():
    computed = param() * 2  # made by an op: a step would write into an array that nothing reads
    with pytest.raises(ValueError, match=r"parameter 1 is not a leaf"):
        SGD([param(), computed], lr=0.1)


def test_a_non_leaf_tensor_in_a_later_group_is_named_by_its_index_over_all_groups():
    with pytest.raises(ValueError, match=r"parameter 2 is not a leaf"):
        SGD([{"params": [param(), param()]}, {"params": [param() + 1]}], lr=0.1)


@pytest.mark.parametrize("name", ["lr", "momentum", "weight_decay"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_hyper_parameters_raise_value_error_naming_them_and_the_value(name, value):
    kwargs = {"lr": 0.1, name: value}
    with pytest.raises(ValueError, match=rf"SGD: {name} must be a finite number >= 0, got {value!r}"):
        SGD([param()], **kwargs)


@settings(max_examples=60, deadline=None)
@given(
    name=st.sampled_from(["lr", "momentum", "weight_decay"]),
    value=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-3, 3)),
)
def test_a_param_group_option_is_accepted_exactly_when_it_is_a_finite_non_negative_number(name, value):
    groups = [{"params": [param()]}, {"params": [param()], name: value}]
    if math.isfinite(value) and value >= 0:
        opt = SGD(groups, lr=0.1, momentum=0.9)
        assert opt.param_groups[1][name] == value
    else:
        with pytest.raises(ValueError, match=rf"SGD: param group 1: {name} must be a finite number >= 0, got"):
            SGD(groups, lr=0.1, momentum=0.9)


def test_nesterov_in_a_param_group_needs_that_group_to_have_momentum():
    with pytest.raises(ValueError, match=r"param group 0: nesterov=True needs momentum > 0"):
        SGD([{"params": [param()], "nesterov": True}], lr=0.1)
    with pytest.raises(ValueError, match=r"param group 1: nesterov=True needs momentum > 0"):
        SGD([{"params": [param()]}, {"params": [param()], "momentum": 0.0}], lr=0.1, momentum=0.9, nesterov=True)


# --------------------------------------------------------------------------- version counters


def test_step_bumps_the_version_of_every_updated_parameter_and_of_no_other():
    a, b = param(), param()
    opt = SGD([a, b], lr=0.1, momentum=0.9)
    a.grad = ma.tensor(np.ones(3))
    before_a, before_b = a._version, b._version
    opt.step()
    assert a._version == before_a + 1
    assert b._version == before_b  # no gradient, no update
    opt.step()
    assert a._version == before_a + 2


# --------------------------------------------------------------------------- a failed load changes nothing


def trained_optimiser():
    """Two groups, momentum buffers for three of the four parameters."""
    params = [ma.tensor(np.ones(s), requires_grad=True) for s in [(2, 3), (4,), (3,), (1,)]]
    opt = SGD([{"params": params[:2]}, {"params": params[2:], "lr": 0.01, "nesterov": True}], lr=0.1, momentum=0.9)
    for p in params[:3]:
        p.grad = ma.tensor(np.full(p.shape, 0.5))
    opt.step()
    return opt


def corruptions():
    """Functions that damage a state dict in place, one way each."""
    group_option = st.builds(
        lambda group, key, value: lambda sd: sd["param_groups"][group].__setitem__(key, value),
        st.integers(0, 1), st.sampled_from(["lr", "momentum", "weight_decay"]), st.sampled_from(BAD_VALUES),
    )
    nesterov_without_momentum = st.just(lambda sd: sd["param_groups"][0].update(nesterov=True, momentum=0.0))
    bad_buffer = st.builds(
        lambda index, array: lambda sd: sd["state"].__setitem__(index, {"momentum_buffer": array}),
        st.integers(0, 3),
        st.sampled_from([np.array(["a", "b", "c", "d"]), np.zeros((5, 5)), np.array([object()] * 4), [[1.0], [2.0, 3.0]]]),
    )
    stray_index = st.sampled_from([
        lambda sd: sd["state"].__setitem__(7, {"momentum_buffer": np.zeros(1)}),
        lambda sd: sd["state"].__setitem__("first", {"momentum_buffer": np.zeros(1)}),
        lambda sd: sd["state"].__setitem__(0, np.zeros((2, 3))),
        lambda sd: sd["param_groups"].pop(),
        lambda sd: sd["param_groups"][1]["params"].pop(),
        lambda sd: sd.pop("state"),
        lambda sd: sd.pop("param_groups"),
        lambda sd: sd["param_groups"][0].pop("lr"),
    ])
    return st.one_of(group_option, nesterov_without_momentum, bad_buffer, stray_index)


@settings(max_examples=80, deadline=None)
@given(damage=st.lists(corruptions(), min_size=1, max_size=3), keep_first=st.booleans())
def test_a_load_either_restores_a_valid_state_or_raises_and_changes_nothing(damage, keep_first):
    source = trained_optimiser()
    state = source.state_dict()
    state["param_groups"][0]["lr"] = 0.5  # a load that succeeded would show this
    for corrupt in damage[:1] if keep_first else damage:
        try:
            corrupt(state)
        except (IndexError, KeyError):
            pass  # an earlier corruption removed what this one damages
    opt = trained_optimiser()
    opt.param_groups[0]["lr"] = 0.3
    before = snapshot(opt)
    try:
        opt.load_state_dict(state)
    except (ValueError, TypeError):
        assert_same_snapshot(snapshot(opt), before)
    else:
        for group in opt.param_groups:  # what was loaded is a state SGD could have been built with
            for key in ("lr", "momentum", "weight_decay"):
                assert isinstance(group[key], float) and math.isfinite(group[key]) and group[key] >= 0
            assert not (group["nesterov"] and group["momentum"] == 0)
        for i, buffers in opt.state.items():
            assert buffers["momentum_buffer"].dtype == np.float64


@pytest.mark.parametrize("value", [math.nan, math.inf, -0.1])
def test_loading_a_non_finite_or_negative_learning_rate_raises_and_changes_nothing(value):
    opt = trained_optimiser()
    before = snapshot(opt)
    state = opt.state_dict()
    state["param_groups"][1]["lr"] = value
    state["param_groups"][0]["momentum"] = 0.5
    with pytest.raises(ValueError, match=rf"param group 1: lr must be a finite number >= 0, got {value!r}"):
        opt.load_state_dict(state)
    assert_same_snapshot(snapshot(opt), before)


def test_loading_a_string_buffer_raises_naming_the_parameter_and_changes_nothing():
    opt = trained_optimiser()
    before = snapshot(opt)
    state = opt.state_dict()
    state["param_groups"][0]["lr"] = 0.5
    state["state"][1]["momentum_buffer"] = np.array(["a", "b", "c", "d"])
    with pytest.raises(ValueError, match=r"momentum_buffer of parameter 1"):
        opt.load_state_dict(state)
    assert_same_snapshot(snapshot(opt), before)
