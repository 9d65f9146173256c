"""Pictures of a network: its autograd graph, its filters and its feature maps.

- ``to_dot(tensor)``: the graph of Functions behind a tensor as Graphviz DOT
  text, like DeZero's ``get_dot_graph``. Plain text: it needs nothing installed.
- ``plot_graph(tensor, path)``: that graph drawn as SVG or PNG by Graphviz.
- ``plot_filters(weight, path)``: a convolution's kernels as a grid of small
  images, as the paper's Figure 3 shows conv1's 96 kernels.
- ``plot_feature_maps(model, image, path)``: what each layer makes of one image.

The pictures are drawn with matplotlib (the ``plot`` extra), imported only
inside the functions that draw, so ``import minialex`` never needs it. They use
matplotlib's ``Figure`` directly instead of ``pyplot``: no window opens, no
global backend is switched, and no figure is left behind in pyplot's list.
Every file is written with ``atomic_write``: a crash never leaves half a picture.
"""

import collections
import math
import numbers
import os
import shutil
import subprocess

import numpy as np

from . import backend
from .autograd import Tensor, no_grad
from .io import atomic_write
from .nn.layers import Dropout
from .nn.module import Module, Parameter

# The picture formats every function here can write, chosen by the path's suffix.
IMAGE_FORMATS = ("png", "svg")

# DOT colours: DeZero's scheme (functions light blue, variables orange) with
# parameters and other leaves that want a gradient told apart.
_FUNCTION_STYLE = 'shape=box, style=filled, fillcolor="lightblue"'
_PARAMETER_STYLE = 'shape=ellipse, style=filled, fillcolor="orange"'
_LEAF_WITH_GRAD_STYLE = 'shape=ellipse, style=filled, fillcolor="gold"'
_TENSOR_STYLE = "shape=ellipse"
_ROOT_STYLE = 'shape=ellipse, style=filled, fillcolor="palegreen", peripheries=2'


# --------------------------------------------------------------------------- the autograd graph as DOT text


def to_dot(tensor, show_shapes=True, params=None):
    """The autograd graph behind ``tensor`` as Graphviz DOT text.

    One node per Function (a box with its class name, e.g. ``Conv2d``) and
    one per tensor (an ellipse with its shape and dtype when ``show_shapes``);
    edges run input tensor -> function -> output tensor, so Graphviz draws the
    inputs at the top and ``tensor`` (green, double outline) at the bottom.
    Parameters are orange, other leaves that require grad gold, constants (the
    images, the labels, a scalar like the 2 in ``x * 2``) white; a
    one-element constant shows its value. ``params`` (a dict name -> Parameter,
    e.g. ``dict(model.named_parameters())``, or the Module itself) labels the
    parameters with their names.

    The graph is the one ``backward`` will walk: each Function's recorded
    inputs. A tensor used twice is one node with two edges out. Node names
    follow the walk (``t0``, ``t1``, ... for tensors, ``f0``, ... for
    functions), so the same graph always gives the same text.

    Call it before ``loss.backward()``: backward frees the graph as it walks it
    (unless ``retain_graph=True``), and to_dot then raises a RuntimeError.
    A leaf (a tensor made by the user, or computed under ``no_grad``) has no
    graph: the text holds its single node and a comment saying so.
    """
    if not isinstance(tensor, Tensor):
        raise TypeError(f"to_dot: tensor must be a minialex Tensor, got {type(tensor).__name__}")
    names = _parameter_names(params)
    graph = _DotGraph(show_shapes, names)
    root_function = tensor.grad_fn
    if root_function is None:
        graph.tensor_node(("leaf", id(tensor)), tensor, is_leaf=True, wants_grad=tensor.requires_grad, is_root=True)
        graph.comment("no graph: this tensor is a leaf (made directly, or computed under no_grad), "
                      "so no Function made it")
        return graph.text()

    # Breadth first from the output: the order fixes the node names. The tensor a
    # Function made is keyed by the Function (a Function has one output); a leaf by
    # the tensor object itself, so a leaf used in several places is one node.
    graph.tensor_node(("output", id(root_function)), tensor, is_root=True)
    queue = collections.deque([root_function])
    queued = {id(root_function)}
    while queue:
        function = queue.popleft()
        if function.inputs is None:
            raise RuntimeError(
                "to_dot: the graph behind this tensor was freed by backward() (it frees the saved tensors "
                "as it walks them); call to_dot or plot_graph before loss.backward(), or call "
                "backward(retain_graph=True)"
            )
        function_node = graph.function_node(function)
        graph.edge(function_node, graph.node_name(("output", id(function))))
        # input_grad_fns, not each input's grad_fn today: an in-place operation may
        # have given an input a new grad_fn since, but this edge used the old value.
        for position, (input_tensor, parent) in enumerate(zip(function.inputs, function.input_grad_fns)):
            if parent is None:
                source = graph.tensor_node(("leaf", id(input_tensor)), input_tensor, is_leaf=True,
                                           wants_grad=function.needs_input_grad[position])
            else:
                source = graph.tensor_node(("output", id(parent)), input_tensor)
                if id(parent) not in queued:
                    queued.add(id(parent))
                    queue.append(parent)
            graph.edge(source, function_node)
    return graph.text()


class _DotGraph:
    """Collects node and edge lines in the order they are met; ``text()`` joins them."""

    def __init__(self, show_shapes, parameter_names):
        self.show_shapes = show_shapes
        self.parameter_names = parameter_names
        self.names = {}  # key -> node name ("t3", "f1"); keys hold ids, never shown
        self.counts = {"t": 0, "f": 0}
        self.node_lines, self.edge_lines, self.comments = [], [], []

    def node_name(self, key):
        return self.names[key]

    def _new_node(self, key, prefix, label, style):
        name = f"{prefix}{self.counts[prefix]}"
        self.counts[prefix] += 1
        self.names[key] = name
        self.node_lines.append(f"  {name} [label={_dot_quote(label)}, {style}];")
        return name

    def tensor_node(self, key, tensor, is_leaf=False, wants_grad=False, is_root=False):
        """The node of a tensor (made on first sight); returns its name."""
        if key in self.names:
            return self.names[key]
        lines = []
        is_parameter = isinstance(tensor, Parameter)
        if is_parameter:
            lines.append(self.parameter_names.get(id(tensor), "parameter"))
        elif is_leaf and wants_grad:
            lines.append("leaf, requires grad")
        if self.show_shapes:
            lines.append(f"{_shape_text(tensor.shape)} {tensor.dtype}")
        if is_leaf and not wants_grad and tensor.size == 1:
            lines.append(f"= {tensor.data.reshape(()).item():g}")
        if is_root:
            style = _ROOT_STYLE
        elif is_parameter:
            style = _PARAMETER_STYLE
        elif is_leaf and wants_grad:
            style = _LEAF_WITH_GRAD_STYLE
        else:
            style = _TENSOR_STYLE
        return self._new_node(key, "t", "\n".join(lines), style)

    def function_node(self, function):
        return self._new_node(("function", id(function)), "f", type(function).__name__, _FUNCTION_STYLE)

    def edge(self, source, target):
        self.edge_lines.append(f"  {source} -> {target};")

    def comment(self, text):
        self.comments.append(f"  // {text}")

    def text(self):
        header = [
            "digraph autograd {",
            "  // made by minialex.viz.to_dot: inputs at the top, the output at the bottom",
            '  node [fontname="Helvetica", fontsize=10];',
        ]
        return "\n".join(header + self.comments + self.node_lines + self.edge_lines + ["}"]) + "\n"


def _parameter_names(params):
    """id(parameter) -> its name, from a dict name -> Parameter or a Module; {} for None."""
    if params is None:
        return {}
    if isinstance(params, Module):
        params = dict(params.named_parameters())
    if not isinstance(params, dict):
        raise TypeError(
            "to_dot: params must be a dict name -> Parameter (e.g. dict(model.named_parameters())) or a Module, "
            f"got {type(params).__name__}"
        )
    names = {}
    for name, parameter in params.items():
        if not isinstance(name, str) or not isinstance(parameter, Tensor):
            raise TypeError(
                f"to_dot: params must map names (str) to tensors, got {type(name).__name__} -> "
                f"{type(parameter).__name__} for entry {name!r}"
            )
        names[id(parameter)] = name
    return names


def _shape_text(shape):
    return "(" + ", ".join(str(size) for size in shape) + ("," if len(shape) == 1 else "") + ")"


def _dot_quote(text):
    """``text`` as a DOT quoted string: backslashes and quotes escaped, line breaks as Graphviz's ``\\n``."""
    text = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\\n") + '"'


# --------------------------------------------------------------------------- the graph drawn by Graphviz

_NO_GRAPHVIZ = (
    "plot_graph needs Graphviz to draw the graph, and there is none here: the `dot` program is not on PATH "
    "and the `graphviz` Python package is not installed (it runs `dot` too). Install Graphviz: "
    "`apt-get install graphviz` (Debian, Ubuntu), `brew install graphviz` (macOS) or "
    "`conda install graphviz`. Without it, minialex.viz.to_dot(tensor) still gives the graph as DOT text: "
    "save it as a .dot file and draw it anywhere Graphviz runs (e.g. an online Graphviz viewer)."
)


def plot_graph(tensor, path, show_shapes=True, params=None):
    """Draw the autograd graph behind ``tensor`` (see ``to_dot``) into ``path``; returns the path.

    The format follows the suffix: ``.svg`` or ``.png``. Graphviz's ``dot``
    program draws it when it is on PATH, else the ``graphviz`` Python package
    (which runs Graphviz too, from wherever it was set up to find it); with
    neither, a RuntimeError says how to get Graphviz, and that ``to_dot``
    text works without it. Call it before
    ``loss.backward()``, which frees the graph.
    """
    image_format = _image_format(path, "plot_graph")
    text = to_dot(tensor, show_shapes=show_shapes, params=params)
    picture = _render_dot(text, image_format)
    with atomic_write(path) as file:
        file.write(picture)
    return os.fspath(path)


def _render_dot(text, image_format):
    """The bytes of ``text`` drawn in ``image_format`` by Graphviz."""
    dot = shutil.which("dot")
    if dot is not None:
        result = subprocess.run([dot, f"-T{image_format}"], input=text.encode("utf-8"), capture_output=True,
                                check=False)
        if result.returncode != 0:
            raise RuntimeError(f"plot_graph: {dot} -T{image_format} failed with exit code {result.returncode}: "
                               f"{result.stderr.decode('utf-8', 'replace').strip()}")
        return result.stdout
    try:
        import graphviz  # noqa: PLC0415 - optional, and only this function needs it
    except ImportError:
        raise RuntimeError(_NO_GRAPHVIZ) from None
    try:
        return graphviz.Source(text).pipe(format=image_format)
    except getattr(graphviz, "ExecutableNotFound", OSError) as error:
        raise RuntimeError(_NO_GRAPHVIZ) from error


# --------------------------------------------------------------------------- filters


def plot_filters(weight, path, columns=None, channel=None, scale="filter", title=None, dpi=100):
    """Draw a convolution's kernels as a grid of small images; returns the path.

    ``weight`` (out_channels, in_channels, kh, kw): a Tensor or Parameter, or a
    NumPy or CuPy array. Each kernel is one tile:

    - 3 input channels: an RGB tile, as the paper's Figure 3 shows conv1;
    - 1 input channel: a grey tile;
    - any other number: the mean over the input channels, in grey (the title
      says so), or input channel ``channel`` alone when it is given.

    ``scale="filter"`` stretches each kernel's values to [0, 1] on its own
    (what the paper's figure shows: every kernel's pattern, whatever its
    size); ``scale="layer"`` uses one range for the whole layer, so weak
    kernels look faint. Columns: ``columns``, or by default about 8/3 as many
    columns as rows, preferring a count that fills the last row. 96 kernels
    give 6 rows of 16, the layout of the paper's Figure 3 (there 48 kernels
    of each GPU, 3 rows each); 24 give 3 rows of 8. The title (``title`` on a
    first line, when given) says how many kernels of which size and how they
    are coloured. The format follows the suffix of ``path``: ``.png`` or ``.svg``.
    """
    image_format = _image_format(path, "plot_filters")
    array = _as_numpy_array(weight, "weight", "plot_filters")
    if array.ndim != 4:
        raise ValueError(f"plot_filters: weight must be 4-D (out_channels, in_channels, kh, kw), "
                         f"got shape {tuple(array.shape)}")
    if array.dtype.kind not in "biuf" or array.size == 0:
        raise ValueError(f"plot_filters: weight must hold numbers and not be empty, got dtype {array.dtype}, "
                         f"shape {tuple(array.shape)}")
    if not np.isfinite(array).all():
        raise ValueError("plot_filters: weight holds infinite or NaN values; there is nothing to draw")
    if scale not in ("filter", "layer"):
        raise ValueError(f"plot_filters: scale must be 'filter' or 'layer', got {scale!r}")
    count, in_channels, kh, kw = array.shape
    array = array.astype(np.float64)
    if channel is not None:
        if isinstance(channel, bool) or not isinstance(channel, numbers.Integral) or not 0 <= channel < in_channels:
            raise ValueError(f"plot_filters: channel must be an input channel index 0..{in_channels - 1}, "
                             f"got {channel!r}")
        tiles, colouring = array[:, channel], f"input channel {channel} of {in_channels}, grey"
    elif in_channels == 3:
        tiles, colouring = array.transpose(0, 2, 3, 1), "RGB"  # (count, kh, kw, 3) for imshow
    elif in_channels == 1:
        tiles, colouring = array[:, 0], "grey"
    else:
        tiles, colouring = array.mean(axis=1), f"mean over the {in_channels} input channels, grey"
    tiles = _scale_to_unit(tiles, per_tile=(scale == "filter"))
    columns = _filter_columns(count) if columns is None else _check_columns(columns)
    mosaic = _mosaic(tiles, min(columns, count))
    scaled = "each scaled to [0, 1]" if scale == "filter" else "one scale for the layer"
    description = f"{count} filters of {kh}x{kw}x{in_channels} ({colouring}; {scaled})"

    figure_class = _matplotlib_figure("plot_filters")
    height, width = mosaic.shape[:2]
    inches_wide = min(10.0, max(4.0, 0.05 * width))
    title_lines = 2 if title else 1
    title_inches = 0.25 * title_lines + 0.1
    image_inches = inches_wide * height / width
    figure = figure_class(figsize=(inches_wide, image_inches + title_inches))
    axes = figure.add_axes((0.0, 0.0, 1.0, image_inches / (image_inches + title_inches)))
    axes.imshow(mosaic, cmap=None if mosaic.ndim == 3 else "gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    axes.set_axis_off()
    figure.suptitle(f"{title}\n{description}" if title else description, fontsize=9, y=0.99, va="top")
    return _save(figure, path, image_format, dpi)


def _filter_columns(count):
    """A column count for ``count`` tiles: about sqrt(8/3 * count), moved up to a divisor when one is near."""
    columns = math.ceil(math.sqrt(count * 8 / 3))
    for candidate in range(columns, int(columns * 1.5) + 1):
        if count % candidate == 0:  # a full last row looks tidier than a ragged one
            return candidate
    return columns


def _check_columns(columns):
    if isinstance(columns, bool) or not isinstance(columns, numbers.Integral) or columns < 1:
        raise ValueError(f"plot_filters: columns must be a positive int, got {columns!r}")
    return int(columns)


def _scale_to_unit(tiles, per_tile, flat_value=0.5):
    """Map values to [0, 1]: each tile by its own min and max, or all by the layer's.

    A flat tile (max == min) becomes ``flat_value`` instead of 0 / 0.
    """
    axes = tuple(range(1, tiles.ndim)) if per_tile else None
    low = tiles.min(axis=axes, keepdims=True)
    high = tiles.max(axis=axes, keepdims=True)
    spread = high - low
    flat = spread == 0
    return np.where(flat, flat_value, (tiles - low) / np.where(flat, 1.0, spread))


def _mosaic(tiles, columns, gap=1):
    """One image of the tiles in rows of ``columns``, ``gap`` white pixels between and around them."""
    count, height, width = tiles.shape[:3]
    rows = math.ceil(count / columns)
    canvas = np.ones((rows * (height + gap) + gap, columns * (width + gap) + gap) + tiles.shape[3:])
    for index, tile in enumerate(tiles):
        top = gap + (index // columns) * (height + gap)
        left = gap + (index % columns) * (width + gap)
        canvas[top:top + height, left:left + width] = tile
    return canvas


# --------------------------------------------------------------------------- feature maps


def plot_feature_maps(model, image, path, layers=None, max_channels=8, title=None, dpi=100):
    """Run one image through ``model`` and draw every layer's output; returns the path.

    ``image`` is (C, H, W) or (1, C, H, W), a Tensor or a NumPy or CuPy array,
    prepared as the model's training images were (e.g. normalised); it is
    moved to the model's device. The model runs once under ``no_grad`` in
    eval mode (each module's own mode is put back afterwards), and a forward
    hook on each layer records its output.

    ``layers``: the dotted names of the modules to show (``"features.0"``, as
    ``model.named_modules()`` gives them); by default every leaf module except
    Dropout, which hands its input on unchanged in eval mode. The figure has
    one row for the input and one per recorded layer, titled with the layer's
    name, type and output shape; a 3-channel input is shown as one RGB
    picture. A row shows the first ``max_channels``
    channels of a (C, H, W) output as images, each coloured by its own range
    (viridis: dark low, yellow high); a 1-D output (a Linear layer's) is a bar
    chart up to 64 values, else a one-row heat map. ``.png`` or ``.svg`` by suffix.
    """
    image_format = _image_format(path, "plot_feature_maps")
    if not isinstance(model, Module):
        raise TypeError(f"plot_feature_maps: model must be a minialex.nn.Module, got {type(model).__name__}")
    array = _as_numpy_or_device_array(image, "image")
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[0] != 1:
        raise ValueError(f"plot_feature_maps: image must be one image, (C, H, W) or (1, C, H, W), "
                         f"got shape {tuple(image.shape)}")
    if isinstance(max_channels, bool) or not isinstance(max_channels, numbers.Integral) or max_channels < 1:
        raise ValueError(f"plot_feature_maps: max_channels must be a positive int, got {max_channels!r}")
    chosen = _chosen_layers(model, layers)

    parameter = next(model.parameters(), None)
    if parameter is not None:
        array = backend.to_device(array, parameter.device)
        if array.dtype != parameter.dtype:
            array = array.astype(parameter.dtype)  # e.g. a uint8 image into a float32 model
    elif array.dtype.kind != "f":
        array = array.astype(np.float32)
    recorded = [("input", "", backend.to_numpy(array)[0])]

    def recorder(name):
        def record(module, inputs, output):
            if isinstance(output, Tensor):  # a module returning something else is left out
                values = output.numpy()
                recorded.append((name, type(module).__name__, values[0] if values.ndim >= 2 else values))
        return record

    handles = [module.register_forward_hook(recorder(name)) for name, module in chosen]
    modes = [(module, module.training) for module in model.modules()]
    try:
        model.eval()
        with no_grad():
            model(Tensor(array))
    finally:
        for handle in handles:
            handle.remove()
        for module, training in modes:
            module.training = training
    figure = _feature_map_figure(recorded, int(max_channels), title)
    return _save(figure, path, image_format, dpi)


def _chosen_layers(model, layers):
    """(name, module) of the layers to record: the named ones, or every leaf except Dropout."""
    modules = dict(model.named_modules())
    del modules[""]  # the model itself: its output is the last layer's
    if layers is None:
        return [(name, module) for name, module in modules.items()
                if not module._modules and not isinstance(module, Dropout)]
    if isinstance(layers, str) or not isinstance(layers, list | tuple):
        raise TypeError(f"plot_feature_maps: layers must be a list of module names, got {type(layers).__name__}")
    if not layers:
        raise ValueError("plot_feature_maps: layers is empty; leave it out to show every layer")
    unknown = [name for name in layers if name not in modules]
    if unknown:
        raise ValueError(f"plot_feature_maps: layers {unknown} are not modules of this model; "
                         f"its modules are {list(modules)}")
    return [(name, modules[name]) for name in layers]


def _feature_map_figure(recorded, max_channels, title):
    """One row a layer. A row of maps is a single image (the maps side by side, white between them):
    one matplotlib Axes a row instead of one a map keeps a 20-layer figure quick to draw."""
    figure_class = _matplotlib_figure("plot_feature_maps")
    from matplotlib import colormaps  # noqa: PLC0415 - optional, imported with Figure above

    viridis = colormaps["viridis"]
    rows = len(recorded)
    row_inches, title_inches = 1.3, 0.7 if title else 0.5
    total = row_inches * rows + title_inches
    figure = figure_class(figsize=(1.1 * max_channels + 0.4, total))
    grid = figure.add_gridspec(rows, 1, left=0.03, right=0.97, bottom=0.15 / total, top=1 - title_inches / total,
                               hspace=0.6)
    for row, (name, kind, values) in enumerate(recorded):
        label = f"{name} ({kind}) {_shape_text(values.shape)}" if kind else f"{name} {_shape_text(values.shape)}"
        axes = figure.add_subplot(grid[row])
        axes.set_title(label, loc="left", fontsize=8)
        if values.ndim == 2:
            values = values[None]  # one map
        if name == "input" and not kind and values.shape[0] == 3:
            # A colour image: one RGB picture (scaled to [0, 1] as a whole), not three channel maps.
            axes.set_title(f"{label}, as RGB", loc="left", fontsize=8)
            axes.imshow(_scale_to_unit(values.transpose(1, 2, 0).astype(np.float64), per_tile=False),
                        interpolation="nearest")
            axes.set_anchor("W")
            axes.set_axis_off()
            continue
        if values.ndim == 3:
            shown = min(max_channels, values.shape[0])
            if shown < values.shape[0]:
                axes.set_title(f"{label}: channels 0-{shown - 1} of {values.shape[0]}", loc="left", fontsize=8)
            # Each map stretched to [0, 1] on its own; a flat map (a dead ReLU) stays dark.
            maps = _scale_to_unit(values[:shown].astype(np.float64), per_tile=True, flat_value=0.0)
            # Small maps (2x2 after the last pool) drawn at least 24 pixels high, so that every
            # row's maps are of similar size and the 1-pixel gaps stay thin beside them.
            zoom = max(1, math.ceil(24 / maps.shape[1]))
            maps = maps.repeat(zoom, axis=1).repeat(zoom, axis=2)
            coloured = viridis(maps)[..., :3]  # (shown, H, W, 3)
            axes.imshow(_mosaic(coloured, shown), interpolation="nearest")
            axes.set_anchor("W")  # every row starts at the left edge, under its title
            axes.set_axis_off()
            continue
        values = values.reshape(-1)  # a vector: one value per unit
        if values.size <= 64:
            axes.bar(np.arange(values.size), values, color="tab:blue")
            axes.set_xlim(-0.6, values.size - 0.4)
        else:
            axes.imshow(values[None], cmap=viridis, aspect="auto", interpolation="nearest")
            axes.set_yticks([])
        axes.tick_params(labelsize=6)
    heading = "feature maps of one image"
    figure.suptitle(f"{title}\n{heading}" if title else heading, fontsize=10, y=1 - 0.05 / total, va="top")
    return figure


# --------------------------------------------------------------------------- shared helpers


def _image_format(path, caller):
    """``png`` or ``svg`` from the suffix of ``path``; anything else is a ValueError."""
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"{caller}: path must be a str or os.PathLike, got {type(path).__name__}")
    suffix = os.path.splitext(os.fspath(path))[1].lower().lstrip(".")
    if suffix not in IMAGE_FORMATS:
        raise ValueError(f"{caller}: path must end in " + " or ".join(f".{kind}" for kind in IMAGE_FORMATS)
                         + f", got {os.fspath(path)!r}")
    return suffix


def _as_numpy_or_device_array(value, name, caller="plot_feature_maps"):
    """The array behind a Tensor, or a NumPy or CuPy array as it is."""
    if isinstance(value, Tensor):
        return value.data
    if backend.is_array(value):
        return value
    raise TypeError(f"{caller}: {name} must be a Tensor or a NumPy or CuPy array, got {type(value).__name__}")


def _as_numpy_array(value, name, caller):
    return backend.to_numpy(_as_numpy_or_device_array(value, name, caller))


def _matplotlib_figure(caller):
    """matplotlib's Figure class, imported now; an ImportError naming the ``plot`` extra when it is missing."""
    try:
        from matplotlib.figure import Figure  # noqa: PLC0415 - optional: the 'plot' extra
    except ImportError as error:
        raise ImportError(f"minialex.viz.{caller} draws with matplotlib, which is not installed ({error}); "
                          "install it with: pip install 'minialex[plot]' (or pip install matplotlib)") from error
    return Figure


def _save(figure, path, image_format, dpi):
    with atomic_write(path) as file:
        figure.savefig(file, format=image_format, dpi=dpi)
    return os.fspath(path)
