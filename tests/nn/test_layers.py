"""The layers of ``minialex.nn``: PyTorch's argument names and defaults, outputs equal to F.*, a net that learns."""

import inspect

import numpy as np
import pytest

import minialex as ma
import minialex.functional as F
from minialex import nn
from tests import float32_round_off as round_off

# --------------------------------------------------------------------------- names and defaults

REQUIRED = inspect.Parameter.empty
# API.md: the layers, their arguments in order, and the defaults (REQUIRED where there is none)
SIGNATURES = {
    "Conv2d": [("in_channels", REQUIRED), ("out_channels", REQUIRED), ("kernel_size", REQUIRED), ("stride", 1),
               ("padding", 0), ("groups", 1), ("bias", True)],
    "MaxPool2d": [("kernel_size", REQUIRED), ("stride", None), ("padding", 0)],
    "LocalResponseNorm": [("size", REQUIRED), ("alpha", 1e-4), ("beta", 0.75), ("k", 1.0)],
    "ReLU": [],
    "Dropout": [("p", 0.5)],
    "Linear": [("in_features", REQUIRED), ("out_features", REQUIRED), ("bias", True)],
    "Flatten": [("start_dim", 1)],
}


def _parameters(cls):
    return [p for name, p in inspect.signature(cls.__init__).parameters.items() if name != "self"
            and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


@pytest.mark.parametrize("layer", sorted(SIGNATURES))
def test_layer_arguments_and_defaults_are_the_api_ones_in_order(layer):
    ours = [(p.name, p.default) for p in _parameters(getattr(nn, layer))]
    assert ours[: len(SIGNATURES[layer])] == SIGNATURES[layer]
    # anything beyond the API's arguments is optional
    assert all(default is not REQUIRED for _, default in ours[len(SIGNATURES[layer]):])


@pytest.mark.parametrize("layer", sorted(SIGNATURES))
def test_layer_argument_names_and_defaults_equal_torch(layer):
    torch = pytest.importorskip("torch")
    theirs = {p.name: p.default for p in _parameters(getattr(torch.nn, layer))}
    for name, default in SIGNATURES[layer]:
        assert name in theirs, f"torch.nn.{layer} has no argument {name}"
        assert theirs[name] == default, f"torch.nn.{layer}({name}=...) defaults to {theirs[name]!r}"


def test_layers_construct_with_pytorch_keywords():
    conv = nn.Conv2d(in_channels=4, out_channels=6, kernel_size=(3, 2), stride=(2, 1), padding=1, groups=2, bias=False)
    assert conv.weight.shape == (6, 2, 3, 2) and conv.bias is None
    assert [name for name, _ in conv.named_parameters()] == ["weight"]
    assert nn.Conv2d(in_channels=3, out_channels=5, kernel_size=3).bias.shape == (5,)
    pool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
    assert pool(ma.tensor(np.zeros((1, 1, 7, 7), np.float32))).shape == (1, 1, 4, 4)
    assert nn.MaxPool2d(kernel_size=2)(ma.tensor(np.zeros((1, 1, 6, 6), np.float32))).shape == (1, 1, 3, 3)
    lrn = nn.LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2.0)
    assert (lrn.size, lrn.alpha, lrn.beta, lrn.k) == (5, 1e-4, 0.75, 2.0)
    assert nn.Dropout(p=0.3).p == 0.3
    linear = nn.Linear(in_features=7, out_features=3, bias=False)
    assert linear.weight.shape == (3, 7) and linear.bias is None
    assert list(dict(linear.named_parameters())) == ["weight"]
    assert nn.Flatten(start_dim=0)(ma.tensor(np.zeros((2, 3), np.float32))).shape == (6,)
    assert nn.ReLU()(ma.tensor([-1.0, 2.0])).numpy().tolist() == [0.0, 2.0]


def test_layers_with_parameters_default_to_float32():
    assert nn.Conv2d(2, 3, 3).weight.dtype == np.float32
    assert nn.Linear(2, 3).bias.dtype == np.float32


@pytest.mark.parametrize(
    "build, pattern",
    [
        (lambda: nn.Conv2d(3, 4, 3, groups=2), r"in_channels \(3\).*groups \(2\)"),
        (lambda: nn.Conv2d(4, 3, 3, groups=2), r"out_channels \(3\).*groups \(2\)"),
        (lambda: nn.Conv2d(0, 4, 3), r"in_channels .*0"),
        (lambda: nn.Linear(3, 0), r"out_features .*0"),
        (lambda: nn.Dropout(1.0), r"p .*1\.0"),
        (lambda: nn.Dropout(-0.5), r"p .*-0\.5"),
        (lambda: nn.LocalResponseNorm(0), r"size .*0"),
    ],
)
def test_bad_layer_arguments_raise_value_errors_naming_them(build, pattern):
    with pytest.raises(ValueError, match=pattern):
        build()


# --------------------------------------------------------------------------- modules equal the functions


def rand32(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _forward_and_grads(fn, x, params):
    xt = ma.tensor(x, requires_grad=True)
    out = fn(xt)
    out.backward(np.ones(out.shape, np.float32))
    return out.numpy(), xt.grad.numpy(), [p.grad.numpy() for p in params]


MODULE_CASES = [
    ("Conv2d", lambda: nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2),
     lambda m: lambda x: F.conv2d(x, m.weight, m.bias, stride=2, padding=1, groups=2), (2, 4, 9, 9)),
    ("Conv2d no bias", lambda: nn.Conv2d(3, 2, (3, 2), bias=False),
     lambda m: lambda x: F.conv2d(x, m.weight), (1, 3, 6, 5)),
    ("Linear", lambda: nn.Linear(5, 3), lambda m: lambda x: F.linear(x, m.weight, m.bias), (2, 4, 5)),
    ("Linear no bias", lambda: nn.Linear(5, 3, bias=False), lambda m: lambda x: F.linear(x, m.weight), (4, 5)),
    ("MaxPool2d", lambda: nn.MaxPool2d(3, 2, 1), lambda m: lambda x: F.max_pool2d(x, 3, 2, 1), (2, 3, 9, 8)),
    ("MaxPool2d default stride", lambda: nn.MaxPool2d(2), lambda m: lambda x: F.max_pool2d(x, 2), (1, 2, 6, 6)),
    ("LocalResponseNorm", lambda: nn.LocalResponseNorm(5, k=2.0),
     lambda m: lambda x: F.local_response_norm(x, 5, 1e-4, 0.75, 2.0), (2, 8, 3, 3)),
    ("ReLU", lambda: nn.ReLU(), lambda m: F.relu, (3, 7)),
    ("Dropout eval", lambda: nn.Dropout(0.5).eval(), lambda m: lambda x: F.dropout(x, 0.5, training=False), (3, 7)),
    ("Flatten", lambda: nn.Flatten(), lambda m: F.flatten, (2, 3, 4, 5)),
    ("Flatten start_dim 2", lambda: nn.Flatten(2), lambda m: lambda x: F.flatten(x, 2), (2, 3, 4, 5)),
]


@pytest.mark.parametrize("build, functional, shape", [c[1:] for c in MODULE_CASES], ids=[c[0] for c in MODULE_CASES])
def test_module_output_and_gradients_equal_the_functional_call(build, functional, shape):
    module = build()
    params = list(module.parameters())
    x = rand32(shape, 0)
    out, dx, dparams = _forward_and_grads(module, x, params)
    for p in params:
        p.grad = None
    ref_out, ref_dx, ref_dparams = _forward_and_grads(functional(module), x, params)
    np.testing.assert_array_equal(out, ref_out)
    np.testing.assert_array_equal(dx, ref_dx)
    for a, b in zip(dparams, ref_dparams):
        np.testing.assert_array_equal(a, b)


def test_dropout_module_in_training_mode_equals_functional_dropout_with_the_same_seed():
    x = ma.tensor(rand32((20, 30), 1))
    ma.manual_seed(8)
    out = nn.Dropout(0.3)(x).numpy()
    ma.manual_seed(8)
    np.testing.assert_array_equal(out, F.dropout(x, 0.3).numpy())


@pytest.mark.parametrize("layer", ["Conv2d", "Linear"])
def test_layers_with_torch_weights_compute_as_torch(layer):
    torch = pytest.importorskip("torch")
    torch.manual_seed(1)
    if layer == "Conv2d":
        theirs, ours, shape = torch.nn.Conv2d(4, 6, 3, 2, 1, groups=2), nn.Conv2d(4, 6, 3, 2, 1, groups=2), (2, 4, 9, 9)
    else:
        theirs, ours, shape = torch.nn.Linear(6, 4), nn.Linear(6, 4), (3, 6)
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    x = rand32(shape, 2)
    xm = ma.tensor(x, requires_grad=True)
    out = ours(xm)
    out.sum().backward()
    # Against the same torch layer in float64, within float32's worst-case round-off of the
    # longest sum (tests/float32_round_off.py): an output adds C/groups*kh*kw products (or
    # in_features), a gradient at most the number of output positions. Both layers are
    # bilinear, so the run on |x|, |weights| gives each result's sum of |terms|.
    arrays = [x] + [v.detach().numpy() for v in theirs.parameters()]
    if layer == "Conv2d":
        def torch_fn(x, weight, bias):
            return torch.nn.functional.conv2d(x, weight, bias, stride=2, padding=1, groups=2)

        longest_sum = max(2 * 3 * 3, out.shape[0] * out.shape[2] * out.shape[3])
    else:
        torch_fn = torch.nn.functional.linear
        longest_sum = max(6, 4, out.shape[0])
    reference, reference_grads, magnitude, magnitude_grads = round_off.float64_reference_and_magnitude(
        torch_fn, arrays, np.ones(out.shape))
    round_off.assert_within_float32_round_off(out.numpy(), reference, magnitude, longest_sum)
    ours_grads = [xm.grad.numpy()] + [p.grad.numpy() for p in ours.parameters()]
    for got, expected, grad_magnitude in zip(ours_grads, reference_grads, magnitude_grads):
        round_off.assert_within_float32_round_off(got, expected, grad_magnitude, longest_sum)


# --------------------------------------------------------------------------- a whole net learns


def test_small_net_loss_decreases_under_manual_sgd_on_a_fixed_batch():
    ma.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 4, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.LocalResponseNorm(size=3, alpha=1e-2, beta=0.75, k=2.0),
        nn.Flatten(),
        nn.Linear(4 * 3 * 3, 3),
    )
    rng = np.random.default_rng(0)
    x = ma.tensor(rng.standard_normal((12, 1, 8, 8)).astype(np.float32))
    target = ma.tensor(rng.integers(0, 3, size=12))
    losses = []
    for _ in range(15):
        net.zero_grad()
        loss = F.cross_entropy(net(x), target)
        loss.backward()
        losses.append(loss.item())
        with ma.no_grad():
            for p in net.parameters():
                p.data -= 0.5 * p.grad.data
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.7 * losses[0], losses
    assert losses[5] < losses[0] and losses[10] < losses[5], losses
