"""``summary(model, input_shape)``: one row a layer, from a real forward pass.

Each leaf module's output shape is recorded by a forward hook while a zero
input runs through the model under ``no_grad`` (in eval mode, so dropout
draws no random numbers; the mode is restored afterwards). Nothing is looked
up in tables: change the model and the summary follows.

Each row also shows the layer's window: for Conv2d and MaxPool2d its
kernel size, stride, padding and groups ("11x11 / 4 / 0 / 1"; a pair that
differs between height and width is written "1x2"; pooling has no groups,
"-"), for LocalResponseNorm the number of channels its window spans
("size 5").

FLOPs count a multiply-add as 2 and every other arithmetic operation
(bias add, comparison, elementwise op) as 1, for the forward pass only, in
evaluation mode:
    Conv2d  2 * out_elements * (C/groups * kh * kw)  (+ out_elements with bias)
    Linear  2 * N * in * out                          (+ N * out with bias)
    ReLU    out_elements
    MaxPool out_elements * (kh * kw - 1) comparisons
    LRN     out_elements * (size + 5): square, window sum, scale, power, product
    Dropout 0 in evaluation (the identity), Flatten 0
The printed table says so in its last line, FLOPS_CONVENTION.
"""

import numpy as np

from .. import backend
from ..autograd import Tensor, no_grad
from ..nn import Conv2d, Dropout, Flatten, Linear, LocalResponseNorm, MaxPool2d, Module, ReLU

#: The footer of the printed table: how its FLOPs were counted (the module docstring has the formulas).
FLOPS_CONVENTION = "FLOPs: a multiply-add counts 2, every other arithmetic operation 1; forward pass only, in evaluation mode"


def _layer_flops(module, output):
    elements = int(np.prod(output.shape))
    if isinstance(module, Conv2d):
        kh, kw = module.kernel_size
        macs = elements * (module.in_channels // module.groups) * kh * kw
        return 2 * macs + (elements if module.bias is not None else 0)
    if isinstance(module, Linear):
        return 2 * elements * module.in_features + (elements if module.bias is not None else 0)
    if isinstance(module, ReLU):
        return elements
    if isinstance(module, MaxPool2d):
        kh, kw = module.kernel_size
        return elements * (kh * kw - 1)
    if isinstance(module, LocalResponseNorm):
        return elements * (module.size + 5)
    if isinstance(module, Dropout | Flatten):
        return 0
    return 0


def _layer_window(module):
    """kernel_size, stride, padding, groups and (for LRN) size of a layer; None where it has none."""
    window = {"kernel_size": None, "stride": None, "padding": None, "groups": None, "size": None}
    if isinstance(module, Conv2d | MaxPool2d):
        window.update(kernel_size=tuple(module.kernel_size), stride=tuple(module.stride),
                      padding=tuple(module.padding))
    if isinstance(module, Conv2d):
        window["groups"] = module.groups
    if isinstance(module, LocalResponseNorm):
        window["size"] = module.size
    return window


def _pair_text(pair, always_both=False):
    """(3, 3) -> "3x3" for a kernel (always_both) and "3" for a stride or padding; (1, 2) -> "1x2"."""
    if pair[0] == pair[1] and not always_both:
        return str(pair[0])
    return f"{pair[0]}x{pair[1]}"


def _window_text(row):
    """The "Kernel / stride / pad / groups" cell: "11x11 / 4 / 0 / 1", "3x3 / 2 / 0 / -", "size 5" or ""."""
    if row["kernel_size"] is not None:
        groups = "-" if row["groups"] is None else str(row["groups"])
        return " / ".join([_pair_text(row["kernel_size"], always_both=True), _pair_text(row["stride"]),
                           _pair_text(row["padding"]), groups])
    if row["size"] is not None:
        return f"size {row['size']}"
    return ""


class Summary:
    """The rows of a summary and their totals; ``str()`` gives the table.

    ``rows``: dicts with name, type, output_shape, params, flops, and the
    layer's window: kernel_size, stride, padding ((h, w) pairs) and groups for
    Conv2d and MaxPool2d (groups None for pooling), size for LocalResponseNorm,
    None where a layer has no such thing.
    ``total_params``, ``trainable_params``, ``total_flops``, ``input_shape``.
    The table's last line is FLOPS_CONVENTION.
    """

    def __init__(self, rows, total_params, trainable_params, input_shape):
        self.rows = rows
        self.total_params = total_params
        self.trainable_params = trainable_params
        self.total_flops = sum(row["flops"] for row in rows)
        self.input_shape = input_shape

    def __str__(self):
        header = ("Layer", "Kernel / stride / pad / groups", "Output shape", "Params", "FLOPs")
        body = [
            (f"{row['name']} ({row['type']})", _window_text(row), str(row["output_shape"]), f"{row['params']:,}",
             f"{row['flops']:,}")
            for row in self.rows
        ]
        widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

        def format_line(line):
            # Text columns flush left, the counts flush right so their digits line up.
            return "  ".join(
                cell.ljust(width) if i < 3 else cell.rjust(width) for i, (cell, width) in enumerate(zip(line, widths))
            )

        rule = "-" * len(format_line(header))
        lines = [f"Input shape: {self.input_shape}", rule, format_line(header), rule]
        lines += [format_line(line) for line in body]
        lines += [
            rule,
            f"Total params: {self.total_params:,}",
            f"Trainable params: {self.trainable_params:,}",
            f"Total forward FLOPs: {self.total_flops:,}",
            FLOPS_CONVENTION,
        ]
        return "\n".join(lines)

    __repr__ = __str__


def summary(model, input_shape):
    """Run ``model`` on zeros of ``input_shape`` ((C, H, W) or (N, C, H, W)) and tabulate its layers."""
    if not isinstance(model, Module):
        raise TypeError(f"summary: model must be a minialex.nn.Module, got {type(model).__name__}")
    input_shape = tuple(input_shape)
    if not all(isinstance(n, int | np.integer) and n > 0 for n in input_shape) or len(input_shape) not in (3, 4):
        raise ValueError(f"summary: input_shape must be (C, H, W) or (N, C, H, W) of positive ints, got {input_shape}")
    if len(input_shape) == 3:
        input_shape = (1, *input_shape)

    parameters = list(model.parameters())
    device = parameters[0].device if parameters else "cpu"
    dtype = parameters[0].dtype if parameters else np.float32
    x = Tensor(backend.to_device(np.zeros(input_shape, dtype=dtype), device))

    rows, handles = [], []
    for name, module in model.named_modules():
        if next(module.children(), None) is not None:
            continue  # containers: their leaves have the rows

        def record(module, inputs, output, name=name):
            rows.append({
                "name": name,
                "type": type(module).__name__,
                "output_shape": tuple(output.shape),
                "params": sum(p.size for p in module._parameters.values()),
                "flops": _layer_flops(module, output),
                **_layer_window(module),
            })

        handles.append(module.register_forward_hook(record))

    was_training = model.training
    try:
        model.eval()
        with no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)

    total = sum(p.size for p in parameters)
    trainable = sum(p.size for p in parameters if p.requires_grad)
    return Summary(rows, total, trainable, input_shape)
