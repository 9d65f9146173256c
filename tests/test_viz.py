"""minialex.viz: the autograd graph as DOT text and drawn by Graphviz; filters and feature maps as pictures."""

import re
import shutil
import subprocess
import sys
import types

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minialex as ma
import minialex.functional as F
from minialex import backend, models, nn, viz

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NODE_LINE = re.compile(r'^  ([tf]\d+) \[label="((?:[^"\\]|\\.)*)", [^\]]*\];$')
EDGE_LINE = re.compile(r"^  ([tf]\d+) -> ([tf]\d+);$")


def parse_dot(text):
    """(labels by node name, edges as (source, target) pairs) of to_dot's text; fails on any other line."""
    lines = text.splitlines()
    assert lines[0] == "digraph autograd {" and lines[-1] == "}"
    labels, edges = {}, []
    for line in lines[1:-1]:
        if node := NODE_LINE.match(line):
            assert node.group(1) not in labels, f"node {node.group(1)} defined twice"
            labels[node.group(1)] = unescape(node.group(2))
        elif edge := EDGE_LINE.match(line):
            edges.append((edge.group(1), edge.group(2)))
        else:
            assert line.startswith("  //") or line.startswith("  node ["), line
    return labels, edges


def unescape(label):
    """The text of a DOT label: undo to_dot's escapes (\\n line breaks, \\" and \\\\)."""
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), label)


def braces_balance(text):
    """Braces outside quoted strings pair up, never closing before they open."""
    outside = re.sub(r'"(?:[^"\\]|\\.)*"', '""', text)
    depth = 0
    for character in outside:
        depth += {"{": 1, "}": -1}.get(character, 0)
        if depth < 0:
            return False
    return depth == 0


def graph_census(tensor):
    """Counted without to_dot: (functions, leaf tensors, input edges) reachable from tensor.grad_fn."""
    functions, leaves, input_edges = {}, {}, 0
    stack = [tensor.grad_fn]
    while stack:
        function = stack.pop()
        if function is None or id(function) in functions:
            continue
        functions[id(function)] = function
        for input_tensor, parent in zip(function.inputs, function.input_grad_fns):
            input_edges += 1
            if parent is None:
                leaves[id(input_tensor)] = input_tensor
            stack.append(parent)
    return len(functions), len(leaves), input_edges


def small_graph():
    """y = sum(s + s * a) with s = a * b: s is used twice, a three times."""
    a = ma.tensor([[1.0, 2.0, 3.0]], requires_grad=True)
    b = ma.tensor([[4.0, 5.0, 6.0]], requires_grad=True)
    s = a * b
    return (s + s * a).sum()


# --------------------------------------------------------------------------- to_dot


def test_dot_of_a_small_graph_has_a_node_per_function_and_tensor_and_an_edge_per_use():
    labels, edges = parse_dot(viz.to_dot(small_graph()))
    functions = sorted(label for name, label in labels.items() if name.startswith("f"))
    assert functions == ["Add", "Mul", "Mul", "Sum"]
    # Tensors: a, b, s = a * b, s * a, their sum, and y. s and a appear once each, however often used.
    assert sum(name.startswith("t") for name in labels) == 6
    # Edges: each function to its output (4) and each input use to its function (2 + 2 + 2 + 1).
    assert len(edges) == 11
    out_degree = {name: sum(source == name for source, _ in edges) for name in labels}
    leaves = [name for name, label in labels.items() if label.startswith("leaf, requires grad")]
    assert sorted(out_degree[name] for name in leaves) == [1, 2]  # b once, a twice
    assert sorted(out_degree.values()).count(2) == 2  # a and s, the shared ones
    assert all(source in labels and target in labels for source, target in edges)


def test_edges_run_from_input_to_function_to_output_and_end_at_the_root():
    text = viz.to_dot(small_graph())
    labels, edges = parse_dot(text)
    for source, target in edges:
        assert source[0] != target[0], "edges alternate between tensors and functions"
    targets = {target for _, target in edges}
    sources = {source for source, _ in edges}
    roots = [name for name in labels if name in targets and name not in sources]
    assert roots == ["t0"] and labels["t0"] == "() float32"
    assert 'peripheries=2' in next(line for line in text.splitlines() if line.startswith("  t0 ["))


def random_expression(draw_ops, values):
    """An expression over three leaves built from a list of (operation, left, right) picks."""
    a = ma.tensor(values[0], requires_grad=True)
    b = ma.tensor(values[1], requires_grad=True)
    constant = ma.tensor(values[2])
    pool = [a, b, constant]
    for operation, left, right in draw_ops:
        x, y = pool[left % len(pool)], pool[right % len(pool)]
        pool.append({"add": x + y, "mul": x * y, "sub": x - y, "relu": F.relu(x), "exp": (x * 0.1).exp()}[operation])
    result = pool[-1]
    if not result.requires_grad:
        result = result + a
    return result.sum()


OPERATIONS = st.lists(st.tuples(st.sampled_from(["add", "mul", "sub", "relu", "exp"]), st.integers(0, 50),
                                st.integers(0, 50)), min_size=1, max_size=12)


@settings(max_examples=60, deadline=None)
@given(operations=OPERATIONS)
def test_dot_nodes_and_edges_match_the_graph_and_every_edge_endpoint_is_defined(operations):
    values = np.random.default_rng(0).standard_normal((3, 2, 3)).astype(np.float32)
    y = random_expression(operations, values)
    function_count, leaf_count, input_edges = graph_census(y)
    text = viz.to_dot(y)
    labels, edges = parse_dot(text)
    assert braces_balance(text)
    assert sum(name.startswith("f") for name in labels) == function_count
    assert sum(name.startswith("t") for name in labels) == function_count + leaf_count  # one output each, plus leaves
    assert len(edges) == function_count + input_edges
    assert all(source in labels and target in labels for source, target in edges)
    assert viz.to_dot(random_expression(operations, values)) == text  # the same graph, the same text


def test_the_same_graph_built_twice_gives_the_same_text():
    ma.manual_seed(0)
    model = models.alexnet_mnist()
    images = np.random.default_rng(1).standard_normal((2, 1, 28, 28)).astype(np.float32)
    texts = [viz.to_dot(F.cross_entropy(model(ma.tensor(images)), np.array([3, 7])), params=model)
             for _ in range(2)]
    assert texts[0] == texts[1]


def test_parameters_are_labelled_with_their_names_and_the_layers_named_by_function():
    ma.manual_seed(0)
    model = models.alexnet_mnist()
    images = np.random.default_rng(1).standard_normal((2, 1, 28, 28)).astype(np.float32)
    loss = F.cross_entropy(model(ma.tensor(images)), np.array([3, 7]))
    labels, _ = parse_dot(viz.to_dot(loss, params=dict(model.named_parameters())))
    names = dict(model.named_parameters())
    first_lines = [label.split("\n")[0] for label in labels.values()]
    assert sorted(line for line in first_lines if line in names) == sorted(names)  # each of the 16 once
    functions = {label for name, label in labels.items() if name.startswith("f")}
    assert {"Conv2d", "ReLU", "LocalResponseNorm", "MaxPool2d", "Linear", "CrossEntropy"} <= functions
    # Passing the Module itself labels them the same way; without params they are just "parameter".
    assert viz.to_dot(loss, params=model) == viz.to_dot(loss, params=dict(model.named_parameters()))
    plain, _ = parse_dot(viz.to_dot(loss))
    assert sum(label.startswith("parameter\n") for label in plain.values()) == 16


def test_show_shapes_false_leaves_shapes_out_and_a_constant_scalar_shows_its_value():
    x = ma.tensor([1.0, 2.0], requires_grad=True)
    y = (x * 2.5).sum()
    labels, _ = parse_dot(viz.to_dot(y))
    assert "leaf, requires grad\n(2,) float32" in labels.values()
    assert any(label.endswith("= 2.5") for label in labels.values())
    bare, _ = parse_dot(viz.to_dot(y, show_shapes=False))
    assert not any("float32" in label for label in bare.values())


def test_labels_are_escaped_so_quotes_backslashes_and_newlines_survive():
    weight = nn.Parameter(np.ones((2,), np.float32))
    awkward = 'my "odd"\\name\nsecond line {x} -> y;'
    text = viz.to_dot((weight * 3.0).sum(), params={awkward: weight})
    labels, _ = parse_dot(text)
    assert any(label.startswith(awkward + "\n") for label in labels.values())
    assert braces_balance(text)
    if shutil.which("dot"):
        checked = subprocess.run(["dot", "-Tsvg"], input=text.encode(), capture_output=True, check=False)
        assert checked.returncode == 0, checked.stderr.decode()


def test_a_leaf_gives_one_node_and_says_it_has_no_graph():
    for leaf in (ma.tensor([1.0, 2.0], requires_grad=True), ma.tensor([1.0])):
        text = viz.to_dot(leaf)
        labels, edges = parse_dot(text)
        assert list(labels) == ["t0"] and edges == []
        assert "no graph: this tensor is a leaf" in text
    with ma.no_grad():
        made_without_graph = ma.tensor([1.0], requires_grad=True) * 2
    assert "no graph" in viz.to_dot(made_without_graph)


def test_to_dot_after_backward_says_the_graph_was_freed_and_to_call_it_before():
    y = small_graph()
    y.backward()
    with pytest.raises(RuntimeError, match=r"freed by backward\(\).*before loss\.backward\(\)"):
        viz.to_dot(y)
    kept = small_graph()
    kept.backward(retain_graph=True)
    assert parse_dot(viz.to_dot(kept))[0]


def test_to_dot_refuses_what_is_not_a_tensor_and_bad_params():
    with pytest.raises(TypeError, match="tensor must be a minialex Tensor, got ndarray"):
        viz.to_dot(np.ones(3))
    y = small_graph()
    with pytest.raises(TypeError, match="params must be a dict"):
        viz.to_dot(y, params=[("w", y)])
    with pytest.raises(TypeError, match="map names .* to tensors"):
        viz.to_dot(y, params={"w": np.ones(3)})


def test_an_in_place_update_keeps_the_edge_to_the_value_the_function_used():
    x = ma.tensor([1.0, 2.0], requires_grad=True)
    h = x * 2.0
    y = h * 3.0
    h += 1.0  # h now has a new grad_fn (Add); y's Mul used the value from before it
    labels, edges = parse_dot(viz.to_dot(y.sum()))
    assert sorted(label for name, label in labels.items() if name.startswith("f")) == ["Mul", "Mul", "Sum"]


# --------------------------------------------------------------------------- plot_graph


def hide_graphviz(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name, *args, **kwargs: None)
    monkeypatch.setitem(sys.modules, "graphviz", None)  # makes `import graphviz` raise ImportError


def test_plot_graph_without_dot_or_graphviz_says_what_to_install_and_writes_nothing(monkeypatch, tmp_path):
    hide_graphviz(monkeypatch)
    target = tmp_path / "graph.svg"
    with pytest.raises(RuntimeError) as info:
        viz.plot_graph(small_graph(), target)
    message = str(info.value)
    for needed in ("`dot` program is not on PATH", "`graphviz` Python package is not installed",
                   "apt-get install graphviz", "to_dot"):
        assert needed in message, message
    assert list(tmp_path.iterdir()) == []


def test_plot_graph_falls_back_to_the_graphviz_package(monkeypatch, tmp_path):
    hide_graphviz(monkeypatch)
    piped = []

    class Source:
        def __init__(self, text):
            self.text = text

        def pipe(self, format):  # noqa: A002 - the package's own argument name
            piped.append((self.text, format))
            return b"<svg>drawn</svg>"

    monkeypatch.setitem(sys.modules, "graphviz", types.SimpleNamespace(Source=Source, ExecutableNotFound=OSError))
    y = small_graph()
    text = viz.to_dot(y)
    assert viz.plot_graph(y, tmp_path / "graph.svg") == str(tmp_path / "graph.svg")
    assert (tmp_path / "graph.svg").read_bytes() == b"<svg>drawn</svg>"
    assert piped == [(text, "svg")]


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed (apt-get install graphviz)")
@pytest.mark.parametrize("suffix", ["svg", "png"])
def test_plot_graph_draws_with_dot(tmp_path, suffix):
    ma.manual_seed(0)
    model = models.alexnet_mnist()
    loss = F.cross_entropy(model(ma.tensor(np.zeros((1, 1, 28, 28), np.float32))), np.array([1]))
    path = viz.plot_graph(loss, tmp_path / f"graph.{suffix}", params=model)
    data = open(path, "rb").read()
    if suffix == "png":
        assert data.startswith(PNG_SIGNATURE)
    else:
        assert b"<svg" in data and b"features.0.weight" in data and b"CrossEntropy" in data
    assert not list(tmp_path.glob("*.tmp"))


def test_plot_graph_refuses_an_unknown_suffix_naming_the_path(tmp_path):
    with pytest.raises(ValueError, match=r"path must end in \.png or \.svg, got '.*graph\.jpg'"):
        viz.plot_graph(small_graph(), tmp_path / "graph.jpg")
    with pytest.raises(TypeError, match="path must be a str or os.PathLike, got int"):
        viz.plot_graph(small_graph(), 3)


# --------------------------------------------------------------------------- plot_filters


def png_size(path):
    """(height, width) of the PNG at path, read back by matplotlib, after checking its signature."""
    from matplotlib.image import imread

    with open(path, "rb") as file:
        assert file.read(8) == PNG_SIGNATURE
    image = imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    return image.shape[:2]


@pytest.fixture(scope="module")
def alexnet():
    pytest.importorskip("matplotlib")
    ma.manual_seed(0)
    return models.alexnet()


@pytest.fixture(scope="module")
def alexnet_mnist():
    pytest.importorskip("matplotlib")
    ma.manual_seed(0)
    return models.alexnet_mnist()


def test_plot_filters_draws_alexnets_96_conv1_kernels_in_colour(alexnet, tmp_path):
    weight = alexnet.features[0].weight
    assert weight.shape == (96, 3, 11, 11)
    path = viz.plot_filters(weight, tmp_path / "conv1.png")
    height, width = png_size(path)
    assert width > 2 * height  # 6 rows of 16: a wide picture, as the paper's Figure 3
    assert not list(tmp_path.glob("*.tmp"))


def test_plot_filters_draws_the_mnist_nets_grey_kernels_from_arrays_and_tensors(alexnet_mnist, tmp_path):
    weight = alexnet_mnist.features[0].weight
    assert weight.shape == (24, 1, 5, 5)
    png_size(viz.plot_filters(weight, tmp_path / "tensor.png"))
    png_size(viz.plot_filters(weight.numpy(), tmp_path / "array.png"))
    svg = viz.plot_filters(weight, tmp_path / "filters.svg", title="conv1")
    assert b"<svg" in open(svg, "rb").read()


def test_plot_filters_shows_other_channel_counts_as_a_mean_or_one_channel(alexnet_mnist, tmp_path):
    weight = alexnet_mnist.features[4].weight  # (48, 24, 3, 3)
    png_size(viz.plot_filters(weight, tmp_path / "mean.png"))
    png_size(viz.plot_filters(weight, tmp_path / "channel.png", channel=5, scale="layer", columns=6))


def test_the_default_layout_has_the_papers_16_columns_for_96_kernels():
    assert viz._filter_columns(96) == 16  # 6 rows of 16
    assert viz._filter_columns(24) == 8  # 3 rows of 8
    assert viz._filter_columns(64) == 16
    for count in range(1, 400):
        columns = viz._filter_columns(count)
        rows = -(-count // columns)
        assert 1 <= columns and rows <= columns  # never taller than wide


@settings(max_examples=50, deadline=None)
@given(scales=st.lists(st.floats(1e-3, 1e3), min_size=1, max_size=6), seed=st.integers(0, 1000))
def test_each_filter_is_stretched_to_exactly_zero_to_one_whatever_its_scale(scales, seed):
    rng = np.random.default_rng(seed)
    tiles = np.stack([scale * rng.standard_normal((3, 3)) for scale in scales])
    scaled = viz._scale_to_unit(tiles, per_tile=True)
    assert np.allclose(scaled.min(axis=(1, 2)), 0) and np.allclose(scaled.max(axis=(1, 2)), 1)
    layer = viz._scale_to_unit(tiles, per_tile=False)
    assert np.isclose(layer.min(), 0) and np.isclose(layer.max(), 1)
    assert np.all(viz._scale_to_unit(np.zeros((2, 3, 3)), per_tile=True) == 0.5)  # flat: mid-grey, no 0/0


def test_the_mosaic_puts_each_tile_in_its_place_with_gaps_between():
    tiles = np.arange(5, dtype=float)[:, None, None] * np.ones((5, 2, 3)) / 10
    mosaic = viz._mosaic(tiles, 3)
    assert mosaic.shape == (2 * 3 + 1, 3 * 4 + 1)
    assert mosaic[1, 1] == 0.0 and mosaic[1, 5] == 0.1 and mosaic[4, 5] == 0.4
    assert mosaic[4, 9] == 1.0  # the empty sixth place stays white


@pytest.mark.parametrize("weight, error, message", [
    (np.ones((4, 3, 3)), ValueError,
     r"weight must be 4-D \(out_channels, in_channels, kh, kw\), got shape \(4, 3, 3\)"),
    ([[[[1.0]]]], TypeError, "weight must be a Tensor or a NumPy or CuPy array, got list"),
    (np.full((2, 1, 3, 3), np.nan), ValueError, "infinite or NaN"),
])
def test_plot_filters_refuses_bad_weights_naming_the_argument(weight, error, message, tmp_path):
    with pytest.raises(error, match=message):
        viz.plot_filters(weight, tmp_path / "f.png")


def test_plot_filters_refuses_bad_options_and_suffixes(tmp_path):
    weight = np.ones((4, 2, 3, 3), np.float32)
    with pytest.raises(ValueError, match=r"channel must be an input channel index 0\.\.1, got 2"):
        viz.plot_filters(weight, tmp_path / "f.png", channel=2)
    with pytest.raises(ValueError, match="scale must be 'filter' or 'layer', got 'global'"):
        viz.plot_filters(weight, tmp_path / "f.png", scale="global")
    with pytest.raises(ValueError, match="columns must be a positive int, got 0"):
        viz.plot_filters(weight, tmp_path / "f.png", columns=0)
    with pytest.raises(ValueError, match=r"path must end in \.png or \.svg, got '.*f\.pdf'"):
        viz.plot_filters(weight, tmp_path / "f.pdf")


def test_missing_matplotlib_is_an_importerror_naming_the_plot_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r"pip install 'minialex\[plot\]'"):
        viz.plot_filters(np.ones((2, 1, 3, 3)), tmp_path / "f.png")
    assert not (tmp_path / "f.png").exists()


def test_importing_minialex_and_viz_does_not_import_matplotlib():
    assert ma.viz is viz  # minialex.viz.to_dot works after a plain `import minialex`
    code = "import sys, minialex; minialex.viz.to_dot; print('matplotlib' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


# --------------------------------------------------------------------------- plot_feature_maps


def leaf_names_without_dropout(model):
    return [name for name, module in model.named_modules()
            if name and not module._modules and not isinstance(module, nn.Dropout)]


def test_plot_feature_maps_draws_a_row_per_layer_of_the_mnist_net(alexnet_mnist, tmp_path, monkeypatch):
    rows = []
    original = viz._feature_map_figure

    def recording_figure(recorded, max_channels, title):
        rows.extend((name, values.shape) for name, _, values in recorded)
        return original(recorded, max_channels, title)

    monkeypatch.setattr(viz, "_feature_map_figure", recording_figure)
    image = np.random.default_rng(0).standard_normal((1, 28, 28)).astype(np.float32)
    path = viz.plot_feature_maps(alexnet_mnist, image, tmp_path / "maps.png")
    height, width = png_size(path)
    assert height > width  # one row a layer: a tall picture
    assert [name for name, _ in rows] == ["input"] + leaf_names_without_dropout(alexnet_mnist)
    shapes = dict(rows)
    assert shapes["input"] == (1, 28, 28) and shapes["features.0"] == (24, 28, 28)
    assert shapes["features.14"] == (48, 2, 2) and shapes["classifier.6"] == (10,)


def test_plot_feature_maps_restores_modes_removes_hooks_and_records_no_graph(alexnet_mnist, tmp_path):
    alexnet_mnist.train()
    alexnet_mnist.features[0].eval()  # a mixed state must come back as it was
    before = {name: module.training for name, module in alexnet_mnist.named_modules()}
    image = ma.tensor(np.zeros((1, 1, 28, 28), np.float32))
    viz.plot_feature_maps(alexnet_mnist, image, tmp_path / "maps.svg", layers=["features.0", "classifier.6"],
                          max_channels=4, title="untrained")
    assert {name: module.training for name, module in alexnet_mnist.named_modules()} == before
    assert all(not module._forward_hooks for module in alexnet_mnist.modules())
    assert all(parameter.grad is None for parameter in alexnet_mnist.parameters())
    assert ma.is_grad_enabled()
    assert b"<svg" in (tmp_path / "maps.svg").read_bytes()
    alexnet_mnist.train()


def test_plot_feature_maps_on_alexnet_shows_its_96_conv1_maps(alexnet, tmp_path):
    image = np.random.default_rng(0).standard_normal((3, 227, 227)).astype(np.float32)
    png_size(viz.plot_feature_maps(alexnet, image, tmp_path / "maps.png",
                                   layers=["features.0", "features.3", "classifier.6"]))


def test_plot_feature_maps_refuses_bad_input_naming_it(alexnet_mnist, tmp_path):
    target = tmp_path / "maps.png"
    one_image = r"image must be one image, \(C, H, W\) or \(1, C, H, W\), got shape \(2, 1, 28, 28\)"
    with pytest.raises(ValueError, match=one_image):
        viz.plot_feature_maps(alexnet_mnist, np.zeros((2, 1, 28, 28), np.float32), target)
    with pytest.raises(ValueError, match=r"got shape \(28, 28\)"):
        viz.plot_feature_maps(alexnet_mnist, np.zeros((28, 28), np.float32), target)
    with pytest.raises(TypeError, match="image must be a Tensor or a NumPy or CuPy array, got list"):
        viz.plot_feature_maps(alexnet_mnist, [[0.0]], target)
    with pytest.raises(TypeError, match="model must be a minialex.nn.Module, got function"):
        viz.plot_feature_maps(lambda x: x, np.zeros((1, 28, 28), np.float32), target)
    with pytest.raises(ValueError, match=r"layers \['features.99'\] are not modules of this model"):
        viz.plot_feature_maps(alexnet_mnist, np.zeros((1, 28, 28), np.float32), target, layers=["features.99"])
    with pytest.raises(ValueError, match="max_channels must be a positive int, got 0"):
        viz.plot_feature_maps(alexnet_mnist, np.zeros((1, 28, 28), np.float32), target, max_channels=0)
    with pytest.raises(ValueError, match=r"path must end in \.png or \.svg"):
        viz.plot_feature_maps(alexnet_mnist, np.zeros((1, 28, 28), np.float32), tmp_path / "maps")
    assert not target.exists()


# --------------------------------------------------------------------------- on the GPU


@pytest.mark.gpu
@pytest.mark.skipif(not ma.cuda.is_available(), reason="needs CuPy and a CUDA device")
def test_filters_and_feature_maps_of_a_model_on_the_gpu(tmp_path):
    pytest.importorskip("matplotlib")
    ma.manual_seed(0)
    model = models.alexnet_mnist().to("cuda")
    cupy_weight = model.features[0].weight.data
    assert backend.is_cuda_array(cupy_weight)
    png_size(viz.plot_filters(cupy_weight, tmp_path / "filters.png"))
    png_size(viz.plot_feature_maps(model, np.zeros((1, 28, 28), np.float32), tmp_path / "maps.png"))
    loss = F.cross_entropy(model(ma.tensor(np.zeros((1, 1, 28, 28), np.float32), device="cuda")), np.array([1]))
    assert "features.0.weight" in viz.to_dot(loss, params=model)
