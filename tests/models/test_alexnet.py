"""AlexNet and relatives: sizes, names, initialisation, input checks, PyTorch agreement, gradients, training."""

import re

import numpy as np
import pytest

import minialex as ma
import minialex.functional as F
from minialex import models, nn
from minialex.optim import SGD

# Full-size models cost ~3 s to build (61 M normal draws): build each one once per module.


@pytest.fixture(scope="module")
def paper():
    ma.manual_seed(0)
    return models.alexnet()


@pytest.fixture(scope="module")
def caffe():
    ma.manual_seed(1)
    return models.alexnet(init="caffe")


@pytest.fixture(scope="module")
def single_tower_mnist():
    ma.manual_seed(123)
    return models.alexnet(num_classes=10, in_channels=1, groups=1, lrn=False)


@pytest.fixture(scope="module")
def torchvision_like():
    ma.manual_seed(2)
    return models.alexnet_torchvision()


def count(model):
    return sum(p.size for p in model.parameters())


def conv_and_linear_layers(model):
    """conv1..conv5, fc6..fc8 in order."""
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.classifier if isinstance(m, nn.Linear)]
    names = [f"conv{i}" for i in range(1, 6)] + ["fc6", "fc7", "fc8"]
    assert len(convs) == 5 and len(linears) == 3
    return dict(zip(names, convs + linears))


# --------------------------------------------------------------------------- parameter counts


def test_paper_alexnet_has_60965224_parameters(paper):
    assert count(paper) == 60_965_224


def test_single_tower_alexnet_has_62378344_parameters():
    assert count(models.alexnet(groups=1)) == 62_378_344


def test_ten_class_single_channel_single_tower_without_lrn_has_58299082_parameters(single_tower_mnist):
    assert count(single_tower_mnist) == 58_299_082


def test_torchvision_alexnet_has_61100840_parameters(torchvision_like):
    assert count(torchvision_like) == 61_100_840


def layer_parameter_count(layer):
    """Weights and biases from the layer's own hyper-parameters, not from its arrays."""
    if isinstance(layer, nn.Conv2d):
        kh, kw = layer.kernel_size
        return layer.out_channels * (layer.in_channels // layer.groups) * kh * kw + layer.out_channels
    return layer.out_features * layer.in_features + layer.out_features


def test_mnist_alexnet_has_the_parameter_count_its_docstring_states_and_its_layers_sum_to_it():
    model = models.alexnet_mnist()
    layers = conv_and_linear_layers(model)
    for name, layer in layers.items():
        assert sum(p.size for p in layer.parameters()) == layer_parameter_count(layer), name
    total = sum(layer_parameter_count(layer) for layer in layers.values())
    assert count(model) == total
    stated = re.search(r"([\d,]+) parameters", models.alexnet_mnist.__doc__)
    assert stated is not None, "alexnet_mnist's docstring should state its parameter count"
    assert int(stated.group(1).replace(",", "")) == total
    # the eight-layer pattern: conv widths chain, fc6 takes the flattened 2x2 maps of conv5
    convs = [layers[f"conv{i}"] for i in range(1, 6)]
    assert convs[0].in_channels == 1
    assert all(a.out_channels == b.in_channels for a, b in zip(convs, convs[1:]))
    assert layers["fc6"].in_features == convs[-1].out_channels * 2 * 2
    assert layers["fc6"].out_features == layers["fc7"].in_features
    assert layers["fc7"].out_features == layers["fc8"].in_features
    assert layers["fc8"].out_features == 10


def test_num_classes_sets_the_last_layer_and_in_channels_the_first():
    model = models.alexnet_mnist(num_classes=7, in_channels=3)
    layers = conv_and_linear_layers(model)
    assert layers["fc8"].weight.shape == (7, layers["fc7"].out_features)
    assert layers["conv1"].weight.shape[1] == 3


# --------------------------------------------------------------------------- shapes at every layer


def spatial_sizes_of(model, size, channels=3):
    """Run model.features one layer at a time; the spatial size after each conv and pool."""
    x = ma.tensor(np.zeros((1, channels, size, size), dtype=np.float32))
    sizes = []
    with ma.no_grad():
        for layer in model.features:
            x = layer(x)
            if isinstance(layer, nn.Conv2d | nn.MaxPool2d):
                assert x.shape[2] == x.shape[3]
                sizes.append(x.shape[2])
    return sizes, x


def test_paper_alexnet_maps_227_to_55_27_27_13_13_13_13_6(paper):
    sizes, out = spatial_sizes_of(paper, 227)
    assert sizes == [55, 27, 27, 13, 13, 13, 13, 6]
    assert out.shape == (1, 256, 6, 6)


def test_paper_alexnet_channels_per_layer(paper):
    layers = conv_and_linear_layers(paper)
    shapes = {name: layer.weight.shape for name, layer in layers.items()}
    assert shapes == {
        "conv1": (96, 3, 11, 11),
        "conv2": (256, 48, 5, 5),  # two towers: each filter sees half the channels
        "conv3": (384, 256, 3, 3),  # conv3 sees both towers
        "conv4": (384, 192, 3, 3),
        "conv5": (256, 192, 3, 3),
        "fc6": (4096, 9216),
        "fc7": (4096, 4096),
        "fc8": (1000, 4096),
    }
    assert [layers[n].groups for n in ("conv1", "conv2", "conv3", "conv4", "conv5")] == [1, 2, 1, 2, 2]


def test_paper_alexnet_layer_order_and_hyper_parameters(paper):
    kinds = [type(m).__name__ for m in paper.features]
    assert kinds == [
        "Conv2d", "ReLU", "LocalResponseNorm", "MaxPool2d",
        "Conv2d", "ReLU", "LocalResponseNorm", "MaxPool2d",
        "Conv2d", "ReLU", "Conv2d", "ReLU", "Conv2d", "ReLU", "MaxPool2d",
    ]
    assert [type(m).__name__ for m in paper.classifier] == [
        "Dropout", "Linear", "ReLU", "Dropout", "Linear", "ReLU", "Linear",
    ]
    for lrn in (m for m in paper.features if isinstance(m, nn.LocalResponseNorm)):
        assert (lrn.size, lrn.alpha, lrn.beta, lrn.k) == (5, 1e-4, 0.75, 2.0)
    for pool in (m for m in paper.features if isinstance(m, nn.MaxPool2d)):
        assert pool.kernel_size == (3, 3) and pool.stride == (2, 2)
    assert all(m.p == 0.5 for m in paper.classifier if isinstance(m, nn.Dropout))
    conv1 = paper.features[0]
    assert conv1.stride == (4, 4) and conv1.padding == (0, 0)


def test_torchvision_alexnet_maps_224_to_55_27_27_13_13_13_13_6(torchvision_like):
    sizes, out = spatial_sizes_of(torchvision_like, 224)
    assert sizes == [55, 27, 27, 13, 13, 13, 13, 6]
    assert out.shape == (1, 256, 6, 6)


def test_mnist_alexnet_maps_28_to_13_6_2_and_classifies():
    model = models.alexnet_mnist()
    sizes, out = spatial_sizes_of(model, 28, channels=1)
    assert sizes == [28, 13, 13, 6, 6, 6, 6, 2]
    assert out.shape == (1, conv_and_linear_layers(model)["conv5"].out_channels, 2, 2)
    model.eval()
    with ma.no_grad():
        assert model(ma.tensor(np.zeros((3, 1, 28, 28), dtype=np.float32))).shape == (3, 10)


# --------------------------------------------------------------------------- parameter names


def expected_names(conv_indices, linear_indices=(1, 4, 6)):
    names = []
    for i in conv_indices:
        names += [f"features.{i}.weight", f"features.{i}.bias"]
    for i in linear_indices:
        names += [f"classifier.{i}.weight", f"classifier.{i}.bias"]
    return names


def test_paper_alexnet_parameter_names_follow_sequential_indices_in_order(paper):
    assert [name for name, _ in paper.named_parameters()] == expected_names([0, 4, 8, 10, 12])
    assert list(paper.state_dict()) == expected_names([0, 4, 8, 10, 12])


def test_alexnet_without_lrn_renumbers_like_a_sequential_without_lrn(single_tower_mnist):
    assert [name for name, _ in single_tower_mnist.named_parameters()] == expected_names([0, 3, 6, 8, 10])


def test_torchvision_alexnet_parameter_names_are_torchvisions(torchvision_like):
    assert [name for name, _ in torchvision_like.named_parameters()] == expected_names([0, 3, 6, 8, 10])


# --------------------------------------------------------------------------- initialisation


def test_paper_init_weights_are_zero_mean_with_std_one_hundredth(paper):
    for name, layer in conv_and_linear_layers(paper).items():
        w = layer.weight.data.astype(np.float64)
        assert abs(w.mean()) < 5 * 0.01 / np.sqrt(w.size) + 1e-6, name
        assert w.std() == pytest.approx(0.01, rel=0.05), name


def test_paper_init_biases_are_one_in_conv2_conv4_conv5_fc6_fc7_and_zero_elsewhere(paper):
    for name, layer in conv_and_linear_layers(paper).items():
        value = 1.0 if name in ("conv2", "conv4", "conv5", "fc6", "fc7") else 0.0
        np.testing.assert_array_equal(layer.bias.data, np.full(layer.bias.shape, value), err_msg=name)


def test_parameters_are_float32_by_default(paper):
    assert all(p.dtype == np.float32 and p.requires_grad for p in paper.parameters())


def test_caffe_init_has_std_half_as_large_in_fc6_fc7_and_biases_of_a_tenth(caffe):
    for name, layer in conv_and_linear_layers(caffe).items():
        w = layer.weight.data.astype(np.float64)
        std = 0.005 if name in ("fc6", "fc7") else 0.01
        assert abs(w.mean()) < 5 * std / np.sqrt(w.size) + 1e-6, name
        assert w.std() == pytest.approx(std, rel=0.05), name
        value = 0.1 if name in ("conv2", "conv4", "conv5", "fc6", "fc7") else 0.0
        np.testing.assert_allclose(layer.bias.data, value, rtol=1e-7, atol=0, err_msg=name)


def test_unknown_init_scheme_raises_value_error():
    with pytest.raises(ValueError, match="init"):
        models.alexnet(init="xavier")


def test_manual_seed_makes_the_initialisation_repeat(single_tower_mnist):
    ma.manual_seed(123)
    again = models.alexnet(num_classes=10, in_channels=1, groups=1, lrn=False)
    for (name, a), (_, b) in zip(single_tower_mnist.named_parameters(), again.named_parameters()):
        np.testing.assert_array_equal(a.data, b.data, err_msg=name)


def test_a_different_seed_gives_a_different_initialisation():
    ma.manual_seed(5)
    a = models.alexnet_mnist()
    ma.manual_seed(6)
    b = models.alexnet_mnist()
    ma.manual_seed(5)
    c = models.alexnet_mnist()
    assert not np.array_equal(a.features[0].weight.data, b.features[0].weight.data)
    np.testing.assert_array_equal(a.features[0].weight.data, c.features[0].weight.data)


# --------------------------------------------------------------------------- argument and input checks


@pytest.mark.parametrize(
    "factory,size,expected",
    [
        (models.alexnet, 224, "227"),
        (models.alexnet, 228, "227"),
        (models.alexnet_torchvision, 227, "224"),
        (models.alexnet_mnist, 32, "28"),
    ],
)
def test_an_input_of_the_wrong_size_raises_value_error_naming_the_expected_size(factory, size, expected, request):
    model = {
        models.alexnet: lambda: request.getfixturevalue("paper"),
        models.alexnet_torchvision: lambda: request.getfixturevalue("torchvision_like"),
        models.alexnet_mnist: models.alexnet_mnist,
    }[factory]()
    channels = 1 if factory is models.alexnet_mnist else 3
    with pytest.raises(ValueError, match=expected):
        model(ma.tensor(np.zeros((1, channels, size, size), dtype=np.float32)))


def test_wrong_channel_count_or_missing_batch_axis_raises_value_error():
    model = models.alexnet_mnist()
    with pytest.raises(ValueError, match="28"):
        model(ma.tensor(np.zeros((1, 3, 28, 28), dtype=np.float32)))
    with pytest.raises(ValueError, match="28"):
        model(ma.tensor(np.zeros((1, 28, 28), dtype=np.float32)))


@pytest.mark.parametrize(
    "kwargs",
    [dict(groups=3), dict(groups=0), dict(num_classes=0), dict(in_channels=0), dict(num_classes=2.5)],
)
def test_bad_alexnet_arguments_raise_value_error(kwargs):
    with pytest.raises(ValueError):
        models.alexnet(**kwargs)


# --------------------------------------------------------------------------- state dict


def test_model_state_dict_round_trip_gives_the_same_outputs():
    ma.manual_seed(10)
    a = models.alexnet_mnist()
    ma.manual_seed(11)
    b = models.alexnet_mnist()
    x = ma.tensor(np.random.default_rng(0).standard_normal((2, 1, 28, 28)).astype(np.float32))
    a.eval(), b.eval()
    with ma.no_grad():
        before = b(x).numpy()
        b.load_state_dict(a.state_dict())
        np.testing.assert_array_equal(b(x).numpy(), a(x).numpy())
    assert not np.array_equal(before, a(x).numpy())


def test_state_dict_values_are_numpy_copies():
    model = models.alexnet_mnist()
    sd = model.state_dict()
    assert all(isinstance(v, np.ndarray) for v in sd.values())
    sd["features.0.weight"][...] = 0
    assert np.abs(model.features[0].weight.data).sum() > 0


def test_loading_keeps_the_parameter_arrays_in_place():
    model = models.alexnet_mnist()
    arrays = [p.data for p in model.parameters()]
    model.load_state_dict(models.alexnet_mnist().state_dict())
    assert all(p.data is a for p, a in zip(model.parameters(), arrays))


@pytest.mark.parametrize("problem", ["missing", "unexpected", "mis-shaped"])
def test_bad_state_dict_keys_or_shapes_raise_state_dict_error_and_change_nothing(problem):
    model = models.alexnet_mnist()
    before = model.state_dict()
    sd = {k: np.zeros_like(v) for k, v in before.items()}
    if problem == "missing":
        del sd["classifier.6.bias"]
        name = "classifier.6.bias"
    elif problem == "unexpected":
        sd["classifier.7.weight"] = np.zeros((3, 3), dtype=np.float32)
        name = "classifier.7.weight"
    else:
        sd["features.4.weight"] = np.zeros((64, 32, 5, 5), dtype=np.float32)
        name = "features.4.weight"
    with pytest.raises(nn.StateDictError, match=name.replace(".", r"\.")):
        model.load_state_dict(sd)
    assert issubclass(nn.StateDictError, ValueError)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)


def test_paper_state_dict_does_not_load_into_the_single_tower_net(paper, single_tower_mnist):
    with pytest.raises(nn.StateDictError):
        single_tower_mnist.load_state_dict(paper.state_dict())


# --------------------------------------------------------------------------- against PyTorch


def torch_paper_alexnet(tnn):
    """The paper's net as torch.nn.Sequentials with the same indices as ours."""

    def lrn():
        return tnn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)

    class Net(tnn.Module):
        def __init__(self):
            super().__init__()
            self.features = tnn.Sequential(
                tnn.Conv2d(3, 96, 11, stride=4), tnn.ReLU(), lrn(), tnn.MaxPool2d(3, 2),
                tnn.Conv2d(96, 256, 5, padding=2, groups=2), tnn.ReLU(), lrn(), tnn.MaxPool2d(3, 2),
                tnn.Conv2d(256, 384, 3, padding=1), tnn.ReLU(),
                tnn.Conv2d(384, 384, 3, padding=1, groups=2), tnn.ReLU(),
                tnn.Conv2d(384, 256, 3, padding=1, groups=2), tnn.ReLU(), tnn.MaxPool2d(3, 2),
            )
            self.classifier = tnn.Sequential(
                tnn.Dropout(0.5), tnn.Linear(9216, 4096), tnn.ReLU(),
                tnn.Dropout(0.5), tnn.Linear(4096, 4096), tnn.ReLU(), tnn.Linear(4096, 1000),
            )

        def forward(self, x):
            return self.classifier(self.features(x).flatten(1))

    return Net()


def torch_torchvision_alexnet(tnn):
    """torchvision.models.alexnet's structure (torchvision itself may be absent)."""

    class Net(tnn.Module):
        def __init__(self):
            super().__init__()
            self.features = tnn.Sequential(
                tnn.Conv2d(3, 64, 11, stride=4, padding=2), tnn.ReLU(inplace=True), tnn.MaxPool2d(3, 2),
                tnn.Conv2d(64, 192, 5, padding=2), tnn.ReLU(inplace=True), tnn.MaxPool2d(3, 2),
                tnn.Conv2d(192, 384, 3, padding=1), tnn.ReLU(inplace=True),
                tnn.Conv2d(384, 256, 3, padding=1), tnn.ReLU(inplace=True),
                tnn.Conv2d(256, 256, 3, padding=1), tnn.ReLU(inplace=True), tnn.MaxPool2d(3, 2),
            )
            self.avgpool = tnn.AdaptiveAvgPool2d((6, 6))
            self.classifier = tnn.Sequential(
                tnn.Dropout(0.5), tnn.Linear(9216, 4096), tnn.ReLU(inplace=True),
                tnn.Dropout(0.5), tnn.Linear(4096, 4096), tnn.ReLU(inplace=True), tnn.Linear(4096, 1000),
            )

        def forward(self, x):
            return self.classifier(self.avgpool(self.features(x)).flatten(1))

    return Net()


FLOAT32_EPS = float(np.finfo(np.float32).eps)


def forward_sum_length(module):
    """How many terms one output of a torch layer adds up: where its float32 round-off comes from."""
    if hasattr(module, "kernel_size") and hasattr(module, "groups"):  # Conv2d
        return module.in_channels // module.groups * int(np.prod(module.kernel_size))
    if hasattr(module, "in_features"):  # Linear
        return module.in_features
    return getattr(module, "size", 1)  # LocalResponseNorm's window; 1 for ReLU, pooling, dropout


def backward_sum_length(module):
    """How many terms one input-gradient of a torch layer adds up."""
    if hasattr(module, "kernel_size") and hasattr(module, "groups"):  # Conv2d: each input feeds out/groups*kh*kw
        return module.out_channels // module.groups * int(np.prod(module.kernel_size))
    if hasattr(module, "out_features"):  # Linear
        return module.out_features
    if hasattr(module, "kernel_size"):  # MaxPool2d: overlapping windows add up
        return int(np.prod(np.broadcast_to(module.kernel_size, 2)))
    return getattr(module, "size", 1)


def float32_round_off_model(torch, build_net, state, x, target, seed):
    """Logits and (if target is given) parameter gradients of a torch net, in float64, with
    float32 round-off simulated.

    The probabilistic model of round-off (Higham & Mary 2019): a float32 sum of n
    terms is the exact sum times (1 + delta) with |delta| of the order sqrt(n) * eps32.
    So every layer's output is multiplied by (1 + sqrt(n_forward) * eps32 * r), every
    input-gradient by (1 + sqrt(n_backward) * eps32 * r) and every parameter gradient
    (a sum over batch and positions) by (1 + sqrt(n_positions) * eps32 * r), r
    standard normal, all in float64. How far this moves the gradients from the
    float64 reference measures how much float32 round-off the net amplifies: it is
    large where the sums cancel (conv1 with the paper's biases of 1), small elsewhere.
    """
    generator = torch.Generator().manual_seed(seed)

    def jitter(tensor, n):
        noise = torch.randn(tensor.shape, generator=generator, dtype=tensor.dtype)
        return tensor * (1 + np.sqrt(n) * FLOAT32_EPS * noise)

    net = build_net(torch.nn).to(torch.float64)
    net.load_state_dict({k: torch.from_numpy(v).to(torch.float64) for k, v in state.items()})
    net.eval()
    positions = {}
    for name, layer in list(net.features.named_children()) + list(net.classifier.named_children()):
        def forward_hook(module, inputs, output, _name=name):
            positions[_name] = output.numel() // output.shape[1]  # batch * pixels summed per parameter
            return jitter(output, forward_sum_length(module))

        def backward_hook(module, grad_input, grad_output):
            return tuple(None if g is None else jitter(g, backward_sum_length(module)) for g in grad_input)

        layer.register_forward_hook(forward_hook)
        layer.register_full_backward_hook(backward_hook)
    logits = net(torch.from_numpy(x).to(torch.float64).requires_grad_(target is not None))
    if target is None:
        return logits.detach().numpy(), None
    torch.nn.functional.cross_entropy(logits, torch.from_numpy(target)).backward()
    grads = {}
    for name, p in net.named_parameters():
        layer = name.split(".")[1]
        grads[name] = jitter(p.grad, positions[layer]).numpy()
    return logits.detach().numpy(), grads


def round_off_model_error(reference, runs):
    """The largest change of `reference` over the round-off model's runs (arrays, or dicts of them)."""
    return max(np.abs(run - reference).max() for run in runs)


@pytest.fixture(scope="module")
def paper_vs_torch(paper):
    """One forward/backward of the paper net, ours and PyTorch's (float32 and a float64 reference)."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 227, 227)).astype(np.float32)
    target = np.array([3, 999])
    state = paper.state_dict()

    runs = {}
    for dtype in (torch.float32, torch.float64):
        net = torch_paper_alexnet(torch.nn).to(dtype)
        net.load_state_dict({k: torch.from_numpy(v).to(dtype) for k, v in state.items()})  # strict: names match
        net.eval()
        logits = net(torch.from_numpy(x).to(dtype))
        torch.nn.functional.cross_entropy(logits, torch.from_numpy(target)).backward()
        runs[dtype] = (
            logits.detach().numpy(),
            {name: p.grad.numpy() for name, p in net.named_parameters()},
            [name for name, _ in net.named_parameters()],
        )

    try:
        paper.eval()
        paper.zero_grad()
        logits = paper(ma.tensor(x))
        F.cross_entropy(logits, target).backward()
        ours = (logits.numpy(), {name: p.grad.numpy() for name, p in paper.named_parameters()})
    finally:
        paper.zero_grad()
        paper.train()
    round_off_model = [
        float32_round_off_model(torch, torch_paper_alexnet, state, x, target, seed) for seed in range(3)
    ]
    return {"ours": ours, "torch32": runs[torch.float32], "torch64": runs[torch.float64],
            "round_off_model": round_off_model}


def test_parameter_names_and_shapes_match_a_torch_sequential_of_the_same_layers(paper, paper_vs_torch):
    _, grads, names = paper_vs_torch["torch32"]
    assert [name for name, _ in paper.named_parameters()] == names
    for name, p in paper.named_parameters():
        assert p.shape == grads[name].shape, name


def test_paper_alexnet_eval_logits_equal_pytorch(paper_vs_torch):
    """Our float32 logits within 5x the float32 round-off model's change of PyTorch's float64 logits."""
    ours, _ = paper_vs_torch["ours"]
    reference = paper_vs_torch["torch64"][0]
    assert ours.shape == paper_vs_torch["torch32"][0].shape == reference.shape == (2, 1000)
    model_error = round_off_model_error(reference, [logits for logits, _ in paper_vs_torch["round_off_model"]])
    assert np.abs(ours - reference).max() <= 5 * model_error


def test_paper_alexnet_parameter_gradients_equal_pytorch_to_float32_accuracy(paper_vs_torch):
    """Our float32 gradients against PyTorch's float64 gradients of the same net (the reference).

    The allowed error follows from float32 round-off, not from any library's float32
    result on one CPU: ``float32_round_off_model`` runs the net in float64
    with every sum's result perturbed by its probabilistic round-off, sqrt(n) * eps32
    times a standard normal, and `model_error` is the largest resulting change of each
    gradient over three such runs. Our error must stay within 5 times it (measured:
    ours 0.01-0.8x, PyTorch's float32 0.04-0.9x; room for other BLAS blockings and
    thread counts): large for conv1's heavily cancelling sums (the paper's biases of
    1; there the float64 gradcheck below is what proves the gradient right), tight
    for the well-conditioned fully connected layers.
    """
    _, ours = paper_vs_torch["ours"]
    _, truth, _ = paper_vs_torch["torch64"]
    for name, ref in truth.items():
        model_error = round_off_model_error(ref, [grads[name] for _, grads in paper_vs_torch["round_off_model"]])
        our_error = np.abs(ours[name] - ref).max()
        assert ours[name].dtype == np.float32
        assert our_error <= 5 * model_error, (
            f"{name}: our float32 error {our_error:.3e} > 5 x the round-off model's {model_error:.3e} "
            f"(gradient scale {np.abs(ref).max():.3e})"
        )


def test_a_torchvision_style_state_dict_loads_and_gives_the_same_logits(torchvision_like):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = torch_torchvision_alexnet(torch.nn).eval()
    torchvision_like.load_state_dict({k: v.numpy() for k, v in net.state_dict().items()})
    x = np.random.default_rng(1).standard_normal((1, 3, 224, 224)).astype(np.float32)
    try:
        torchvision_like.eval()
        with ma.no_grad():
            ours = torchvision_like(ma.tensor(x)).numpy()
    finally:
        torchvision_like.train()
    # Reference: the same net in float64; allowance: 5x the float32 round-off model's change of it.
    state = {k: v.numpy() for k, v in net.state_dict().items()}
    with torch.no_grad():
        reference = net.to(torch.float64)(torch.from_numpy(x).to(torch.float64)).numpy()
        runs = [float32_round_off_model(torch, torch_torchvision_alexnet, state, x, None, seed)[0] for seed in range(3)]
    assert np.abs(ours - reference).max() <= 5 * round_off_model_error(reference, runs)


# --------------------------------------------------------------------------- gradcheck of a tiny AlexNet


def test_gradcheck_of_a_tiny_alexnet_shaped_net_in_float64():
    """Two grouped convs, LRN with a large alpha, overlapping 3x3/2 pools, dropout, linear, cross-entropy."""
    f64 = np.float64
    ma.manual_seed(0)
    conv1 = nn.Conv2d(2, 4, 3, padding=1, groups=2, dtype=f64)
    conv2 = nn.Conv2d(4, 4, 3, padding=1, groups=2, dtype=f64)
    fc = nn.Linear(16, 3, dtype=f64)
    net = nn.Sequential(
        conv1, nn.ReLU(), nn.LocalResponseNorm(3, alpha=2.0, beta=0.75, k=1.0), nn.MaxPool2d(3, 2),
        conv2, nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Flatten(), nn.Dropout(0.5), fc,
    )
    assert all(p.dtype == f64 for p in net.parameters())
    rng = np.random.default_rng(3)
    x = ma.tensor(rng.standard_normal((2, 2, 11, 11)), requires_grad=True)
    target = np.array([0, 2])

    def loss(x, w1, b2, w_fc):  # w1, b2, w_fc are the layers' own parameters, used through the net
        ma.manual_seed(42)  # the same dropout mask on every evaluation
        return F.cross_entropy(net(x), target)

    # The fixed mask really drops something: the loss differs from the evaluation-mode one.
    net.eval()
    with ma.no_grad():
        eval_loss = F.cross_entropy(net(x), target).item()
    net.train()
    with ma.no_grad():
        assert loss(x, None, None, None).item() != pytest.approx(eval_loss)
        assert loss(x, None, None, None).item() == loss(x, None, None, None).item()

    assert ma.gradcheck(loss, [x, conv1.weight, conv2.bias, fc.weight], eps=1e-6, atol=1e-7, rtol=1e-4)


# --------------------------------------------------------------------------- a training step


def test_mnist_alexnet_with_sgd_momentum_decreases_the_loss_on_a_fixed_batch():
    ma.manual_seed(0)
    model = models.alexnet_mnist()
    rng = np.random.default_rng(0)
    x = ma.tensor(rng.standard_normal((8, 1, 28, 28)).astype(np.float32))
    y = rng.integers(0, 10, size=8)
    opt = SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    model.train()
    losses = []
    for _ in range(20):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < 0.7 * losses[0], losses
    model.eval()
    with ma.no_grad():
        assert F.cross_entropy(model(x), y).item() < 0.7 * losses[0]
