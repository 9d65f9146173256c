"""Module, Parameter, Sequential: PyTorch's names, state dicts, modes, gradients and devices."""

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minialex as ma
import minialex.functional as F
from minialex import nn
from tests import float32_round_off as round_off

# --------------------------------------------------------------------------- structures built twice


def small_sequential(lib):
    """Sequential(Conv2d, ReLU, Sequential(Linear)) in minialex.nn or torch.nn."""
    return lib.Sequential(lib.Conv2d(3, 4, 3), lib.ReLU(), lib.Sequential(lib.Linear(5, 2)))


def make_nested(lib, Module, Parameter, new_param):
    """A custom Module with its own parameter, nested Sequentials, a bias-free layer and a shared layer."""

    class Net(Module):
        def __init__(self):
            super().__init__()
            self.features = lib.Sequential(
                lib.Conv2d(1, 2, 3, padding=1),
                lib.ReLU(),
                lib.Sequential(lib.Conv2d(2, 2, 1, bias=False), lib.MaxPool2d(2)),
            )
            self.scale = Parameter(new_param((2,)))
            self.classifier = lib.Sequential(lib.Flatten(), lib.Dropout(0.5), lib.Linear(8, 3))
            self.head = self.classifier[2]  # shared: its parameters are listed once, under the first name

    return Net()


TORCHVISION_LIKE_NAMES = [
    ("features.0.weight", (2, 1, 3, 3)),
    ("features.0.bias", (2,)),
    ("features.2.0.weight", (2, 2, 1, 1)),
    ("classifier.2.weight", (3, 8)),
    ("classifier.2.bias", (3,)),
]


def ma_nested():
    return make_nested(nn, nn.Module, nn.Parameter, lambda shape: np.ones(shape, np.float32))


# --------------------------------------------------------------------------- names


def test_named_parameters_of_nested_sequential_are_pytorch_dotted_names():
    names = [(name, p.shape) for name, p in small_sequential(nn).named_parameters()]
    assert names == [
        ("0.weight", (4, 3, 3, 3)),
        ("0.bias", (4,)),
        ("2.0.weight", (2, 5)),
        ("2.0.bias", (2,)),
    ]


def test_named_parameters_of_a_custom_module_put_own_parameters_first_and_list_shared_ones_once():
    names = [(name, p.shape) for name, p in ma_nested().named_parameters()]
    assert names == [("scale", (2,))] + TORCHVISION_LIKE_NAMES


@pytest.mark.parametrize("build", ["sequential", "nested"])
def test_named_parameters_equal_torch_for_the_same_structure(build):
    torch = pytest.importorskip("torch")
    if build == "sequential":
        ours, theirs = small_sequential(nn), small_sequential(torch.nn)
    else:
        ours = ma_nested()
        theirs = make_nested(torch.nn, torch.nn.Module, torch.nn.Parameter, lambda shape: torch.ones(shape))
    ours_list = [(name, p.shape) for name, p in ours.named_parameters()]
    theirs_list = [(name, tuple(p.shape)) for name, p in theirs.named_parameters()]
    assert ours_list == theirs_list
    if build == "sequential":  # (torch's state_dict repeats a shared module's entries; the contract is silent)
        assert list(ours.state_dict()) == list(theirs.state_dict())


def test_parameters_are_the_named_parameters_in_the_same_order():
    net = ma_nested()
    params = list(net.parameters())
    named = [p for _, p in net.named_parameters()]
    assert len(params) == len(named) == 6
    assert all(a is b for a, b in zip(params, named))
    assert params[1] is net.features[0].weight and params[-1] is net.classifier[2].bias
    assert all(isinstance(p, nn.Parameter) and p.requires_grad for p in params)


def test_sequential_indexes_iterates_and_counts_its_modules():
    seq = small_sequential(nn)
    assert len(seq) == 3
    assert isinstance(seq[0], nn.Conv2d) and isinstance(seq[-1], nn.Sequential)
    assert [type(m).__name__ for m in seq] == ["Conv2d", "ReLU", "Sequential"]


def test_sequential_applies_modules_in_order():
    seq = nn.Sequential(nn.Flatten(), nn.Linear(12, 4), nn.ReLU())
    x = ma.tensor(np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32))
    expected = F.relu(F.linear(F.flatten(x), seq[1].weight, seq[1].bias))
    np.testing.assert_array_equal(seq(x).numpy(), expected.numpy())


def test_sequential_rejects_non_modules():
    with pytest.raises(TypeError, match="Sequential"):
        nn.Sequential(nn.ReLU(), lambda x: x)


def test_reassigning_a_parameter_or_submodule_replaces_it_in_place_keeping_pytorch_order():
    # PyTorch keeps a reassigned parameter's (or child's) place in the registration order,
    # so state-dict keys keep their order when a layer is re-initialised or swapped.
    layer = nn.Linear(3, 2)
    layer.weight = nn.Parameter(np.zeros((2, 3), np.float32))
    assert [name for name, _ in layer.named_parameters()] == ["weight", "bias"]
    np.testing.assert_array_equal(layer.weight.numpy(), np.zeros((2, 3)))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Linear(4, 4)
            self.head = nn.Linear(4, 2)

    net = Net()
    net.body = nn.Linear(4, 4, bias=False)
    assert list(net.state_dict()) == ["body.weight", "head.weight", "head.bias"]


# --------------------------------------------------------------------------- Parameter


def test_parameter_is_a_tensor_that_requires_grad():
    p = nn.Parameter(np.ones((2, 3), np.float32))
    assert isinstance(p, ma.Tensor) and p.requires_grad and p.is_leaf
    assert p.shape == (2, 3) and p.dtype == np.float32
    q = nn.Parameter(ma.tensor([1.0, 2.0]))
    assert q.requires_grad and q.dtype == np.float32


@pytest.mark.parametrize("data", [np.array([1, 2, 3]), np.zeros((2, 2), np.int32), [1, 2], np.array([True, False])])
def test_parameter_rejects_integer_and_boolean_data(data):
    with pytest.raises(TypeError, match="floating"):
        nn.Parameter(data)


# --------------------------------------------------------------------------- state dicts


def test_state_dict_maps_every_name_to_a_numpy_copy():
    net = ma_nested()
    state = net.state_dict()
    assert list(state) == [name for name, _ in net.named_parameters()]
    for name, p in net.named_parameters():
        assert isinstance(state[name], np.ndarray)
        np.testing.assert_array_equal(state[name], p.numpy())
        assert state[name].dtype == p.dtype
    # a copy, both ways
    before = net.features[0].weight.numpy()
    state["features.0.weight"][...] = 123.0
    np.testing.assert_array_equal(net.features[0].weight.numpy(), before)
    net.features[0].weight.data[...] = -1.0
    assert (state["features.0.weight"] == 123.0).all()


def test_load_state_dict_round_trips_and_updates_parameters_in_place():
    ma.manual_seed(0)
    source = small_sequential(nn)
    ma.manual_seed(1)
    target = small_sequential(nn)
    params_before = list(target.parameters())
    arrays_before = [p.data for p in params_before]
    target.load_state_dict(source.state_dict())
    for (name, a), (_, b) in zip(source.state_dict().items(), target.state_dict().items()):
        np.testing.assert_array_equal(a, b, err_msg=name)
    assert all(a is b for a, b in zip(params_before, target.parameters()))
    assert all(p.data is arr for p, arr in zip(target.parameters(), arrays_before))
    x = ma.tensor(np.random.default_rng(2).standard_normal((2, 3, 7, 7)).astype(np.float32))
    np.testing.assert_array_equal(source[0](x).numpy(), target[0](x).numpy())


def test_load_state_dict_accepts_a_torch_model_converted_to_numpy_and_then_computes_as_torch():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)

    def build(lib):
        return lib.Sequential(
            lib.Conv2d(3, 6, 3, padding=1, groups=3), lib.ReLU(), lib.MaxPool2d(3, 2),
            lib.LocalResponseNorm(3, alpha=0.5, k=1.0), lib.Flatten(), lib.Dropout(0.5), lib.Linear(6 * 4 * 4, 5),
        )

    theirs = build(torch.nn).eval()
    ours = build(nn).eval()
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    x = np.random.default_rng(3).standard_normal((2, 3, 9, 9)).astype(np.float32)
    out = ours(ma.tensor(x)).numpy()
    ref = theirs.double()(torch.tensor(x, dtype=torch.float64)).detach().numpy()
    # Against the same net in float64: a chain of well-conditioned steps (the conv's sums of
    # 9, the LRN's window of 3 with its power and product, the linear layer's sum of 96),
    # tests/float32_round_off.py.
    round_off.assert_within_chain_round_off(out, ref, longest_sum=96, layers=5, err_msg="logits")


def _assert_unchanged(net, before):
    for name, value in net.state_dict().items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)


def test_load_state_dict_names_a_missing_key_and_changes_nothing():
    net = small_sequential(nn)
    before = net.state_dict()
    state = {k: v + 1 for k, v in before.items()}
    del state["2.0.bias"]
    with pytest.raises(nn.StateDictError, match=r"missing.*2\.0\.bias"):
        net.load_state_dict(state)
    _assert_unchanged(net, before)


def test_load_state_dict_names_an_unexpected_key_and_changes_nothing():
    net = small_sequential(nn)
    before = net.state_dict()
    state = {k: v + 1 for k, v in before.items()}
    state["3.weight"] = np.zeros((2, 2), np.float32)
    with pytest.raises(nn.StateDictError, match=r"unexpected.*3\.weight"):
        net.load_state_dict(state)
    _assert_unchanged(net, before)


def test_load_state_dict_names_a_mis_shaped_key_with_both_shapes_and_changes_nothing():
    net = small_sequential(nn)
    before = net.state_dict()
    state = {k: v + 1 for k, v in before.items()}
    state["0.weight"] = np.zeros((4, 3, 2, 2), np.float32)
    with pytest.raises(nn.StateDictError, match=r"0\.weight.*\(4, 3, 2, 2\).*\(4, 3, 3, 3\)"):
        net.load_state_dict(state)
    _assert_unchanged(net, before)


def test_state_dict_error_is_a_value_error():
    assert issubclass(nn.StateDictError, ValueError)
    with pytest.raises(ValueError):
        nn.Linear(2, 2).load_state_dict({})


# --------------------------------------------------------------------------- modes, gradients, devices


def test_train_and_eval_set_training_recursively_and_return_self():
    net = ma_nested()
    assert all(m.training for m in net.modules())
    assert net.eval() is net
    assert not any(m.training for m in net.modules())
    assert not net.classifier[1].training and not net.features[2][1].training
    assert net.train() is net
    assert all(m.training for m in net.modules())
    net.train(False)
    assert not any(m.training for m in net.modules())


def test_dropout_inside_a_model_obeys_train_and_eval():
    net = nn.Sequential(nn.Linear(50, 50), nn.Dropout(0.5))
    x = ma.tensor(np.random.default_rng(4).standard_normal((20, 50)).astype(np.float32))
    net.eval()
    reference = F.linear(x, net[0].weight, net[0].bias).numpy()
    np.testing.assert_array_equal(net(x).numpy(), reference)
    np.testing.assert_array_equal(net(x).numpy(), reference)  # deterministic
    net.train()
    ma.manual_seed(5)
    out = net(x).numpy()
    dropped = out == 0
    assert 0.3 < dropped.mean() < 0.7
    np.testing.assert_allclose(out[~dropped], 2 * reference[~dropped], rtol=1e-6)


def test_zero_grad_clears_every_gradient():
    net = small_sequential(nn)
    x = ma.tensor(np.random.default_rng(6).standard_normal((1, 3, 5, 7)).astype(np.float32))
    net(x).sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    net.zero_grad()
    for p in net.parameters():
        assert p.grad is None or not p.grad.numpy().any()


def test_gradients_accumulate_across_backward_calls_until_zero_grad():
    layer = nn.Linear(3, 2)
    x = ma.tensor(np.ones((4, 3), np.float32))
    layer(x).sum().backward()
    once = layer.weight.grad.numpy()
    layer(x).sum().backward()
    np.testing.assert_allclose(layer.weight.grad.numpy(), 2 * once)
    layer.zero_grad()
    layer(x).sum().backward()
    np.testing.assert_allclose(layer.weight.grad.numpy(), once)


def test_to_cpu_returns_self_and_keeps_values_and_gradients():
    net = small_sequential(nn)
    x = ma.tensor(np.random.default_rng(7).standard_normal((1, 3, 5, 7)).astype(np.float32))
    out = net(x).numpy()
    net(x).sum().backward()
    grads = [p.grad.numpy() for p in net.parameters()]
    assert net.to("cpu") is net
    assert all(p.device == "cpu" for p in net.parameters())
    np.testing.assert_array_equal(net(x).numpy(), out)
    for p, g in zip(net.parameters(), grads):
        np.testing.assert_array_equal(p.grad.numpy(), g)


def test_to_an_unknown_device_is_a_clear_error():
    with pytest.raises(ValueError, match="tpu"):
        nn.Linear(2, 2).to("tpu")


def test_module_without_forward_says_so():
    class Empty(nn.Module):
        pass

    with pytest.raises(NotImplementedError, match="Empty"):
        Empty()(ma.tensor([1.0]))


# --------------------------------------------------------------------------- assignment over a registered name


@pytest.mark.parametrize(
    "value,type_name",
    [
        (ma.tensor(np.zeros((2, 3), np.float32)), "minialex.Tensor"),
        (np.zeros((2, 3), np.float32), "numpy.ndarray"),
        (3, "int"),
        (nn.ReLU(), "minialex.nn.layers.ReLU"),
    ],
)
def test_assigning_a_non_parameter_over_a_parameter_raises_type_error_as_pytorch(value, type_name):
    layer = nn.Linear(3, 2)
    weight = layer.weight
    with pytest.raises(
        TypeError, match=rf"cannot assign '{re.escape(type_name)}' as parameter 'weight' "
                         r"\(minialex.nn.Parameter or None expected\)"
    ):
        layer.weight = value
    assert layer.weight is weight
    assert [name for name, _ in layer.named_parameters()] == ["weight", "bias"]


def test_assigning_a_non_module_over_a_child_module_raises_type_error_as_pytorch():
    net = nn.Sequential(nn.Linear(2, 2))
    with pytest.raises(TypeError, match=r"cannot assign 'int' as child module '0' \(minialex.nn.Module or None expected\)"):
        setattr(net, "0", 5)
    assert isinstance(net[0], nn.Linear)


def test_assigning_none_over_a_parameter_unregisters_it_and_a_parameter_brings_it_back():
    layer = nn.Linear(3, 2)
    layer.bias = None
    assert layer.bias is None
    assert [name for name, _ in layer.named_parameters()] == ["weight"]
    new_bias = nn.Parameter(np.ones(2, np.float32))
    layer.bias = new_bias
    assert layer.bias is new_bias  # not shadowed by the None set before
    assert [name for name, _ in layer.named_parameters()] == ["weight", "bias"]
    np.testing.assert_array_equal(layer(ma.tensor(np.zeros((1, 3), np.float32))).numpy(), [[1.0, 1.0]])


# --------------------------------------------------------------------------- load_state_dict: versions, all or nothing


def test_load_state_dict_bumps_the_version_of_every_parameter():
    net = small_sequential(nn)
    before = {name: p._version for name, p in net.named_parameters()}
    net.load_state_dict({k: v + 1 for k, v in net.state_dict().items()})
    for name, p in net.named_parameters():
        assert p._version == before[name] + 1, name


def test_load_state_dict_with_an_uncastable_value_raises_naming_it_and_changes_nothing():
    net = small_sequential(nn)
    before = net.state_dict()
    versions = [p._version for p in net.parameters()]
    state = {k: v + 1 for k, v in before.items()}
    state["2.0.bias"] = np.array(["a", "b"])  # the last key: every other one would be written first
    with pytest.raises(nn.StateDictError, match=r"2\.0\.bias.*<U1"):
        net.load_state_dict(state)
    _assert_unchanged(net, before)
    assert [p._version for p in net.parameters()] == versions


def test_load_state_dict_accepts_nan_values_and_integer_arrays():
    layer = nn.Linear(2, 1)
    layer.load_state_dict({"weight": np.array([[np.nan, 1.0]]), "bias": np.array([3])})
    assert np.isnan(layer.weight.data[0, 0]) and layer.weight.data[0, 1] == 1.0
    assert layer.bias.data[0] == 3.0 and layer.bias.dtype == np.float32


BAD_STATE_VALUES = {
    "a string array": lambda shape: np.full(shape, "x"),
    "numeric strings": lambda shape: np.full(shape, "1.5"),
    "an object array": lambda shape: np.full(shape, None, dtype=object),
    "a complex array": lambda shape: np.full(shape, 1 + 2j),
    "a ragged list": lambda shape: [[1.0], [2.0, 3.0]],
    "None": lambda shape: None,
    "a dict": lambda shape: {"values": np.zeros(shape)},
}


@settings(max_examples=60, deadline=None)
@given(
    bad_key=st.sampled_from(["0.weight", "0.bias", "2.0.weight", "2.0.bias"]),
    bad=st.sampled_from(sorted(BAD_STATE_VALUES)),
    seed=st.integers(0, 2**16),
)
def test_a_failed_load_state_dict_changes_nothing(bad_key, bad, seed):
    net = small_sequential(nn)
    before = net.state_dict()
    versions = [p._version for p in net.parameters()]
    rng = np.random.default_rng(seed)
    state = {k: rng.standard_normal(v.shape).astype(v.dtype) for k, v in before.items()}
    state[bad_key] = BAD_STATE_VALUES[bad](before[bad_key].shape)
    with pytest.raises(nn.StateDictError, match=re.escape(bad_key)):
        net.load_state_dict(state)
    _assert_unchanged(net, before)
    assert [p._version for p in net.parameters()] == versions
