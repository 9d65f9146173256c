"""Per-layer profile of one paper-AlexNet training step: forward and backward time of every layer.

Each layer runs on a detached copy of its input (so its graph holds just that
layer) and its backward is run alone with the gradient the next layer passed
back: the times add up to a training step without the optimiser.
"""

import numpy as np

import minialex as ma
import minialex.functional as MF
from minialex import models

from .common import median_time
from .layers import torch_alexnet


def _layer_list(model):
    return [(f"features.{i}", m) for i, m in enumerate(model.features)] + [("flatten", None)] + [
        (f"classifier.{i}", m) for i, m in enumerate(model.classifier)
    ]


def _profile(layers, x, target, loss_fn, detach, backward, repeats):
    rows, inputs, outputs = [], [], []
    for index, (name, layer) in enumerate(layers):
        inp = detach(x, requires_grad=index > 0)  # the data needs no gradient, like conv1's input in training
        seconds = median_time(lambda inp=inp, layer=layer: layer(inp), repeats)
        out = layer(inp)
        rows.append({"layer": name, "type": type(layer).__name__, "forward": seconds})
        inputs.append(inp)
        outputs.append(out)
        x = out
    logits = detach(x, requires_grad=True)
    loss_seconds = median_time(lambda: loss_fn(logits, target), repeats)
    loss = loss_fn(logits, target)
    rows.append({"layer": "loss", "type": "cross_entropy", "forward": loss_seconds})
    rows[-1]["backward"] = median_time(lambda: backward(loss, None, [logits]), repeats)
    grad = backward(loss, None, [logits])
    for row, inp, out in reversed(list(zip(rows[:-1], inputs, outputs))):
        row["backward"] = median_time(lambda out=out, grad=grad, inp=inp: backward(out, grad, [inp]), repeats)
        grad = backward(out, grad, [inp])
    return rows


def minialex_profile(batch, repeats):
    ma.manual_seed(0)
    model = models.alexnet()
    layers = [(name, (lambda t: MF.flatten(t, 1)) if m is None else m) for name, m in _layer_list(model)]
    rng = np.random.default_rng(0)
    x = ma.tensor(rng.standard_normal((batch, 3, 227, 227)).astype(np.float32))
    target = rng.integers(0, 1000, batch)

    def detach(t, requires_grad):
        return ma.Tensor(t.data, requires_grad=requires_grad)

    def backward(out, grad, inputs):
        for t in inputs:
            t.grad = None
        for p in model.parameters():
            p.grad = None
        out.backward(grad, retain_graph=True)
        return inputs[0].grad.data if inputs[0].requires_grad else None

    return _profile(layers, x, target, MF.cross_entropy, detach, backward, repeats)


def torch_profile(torch, batch, repeats):
    torch.manual_seed(0)
    model = torch_alexnet(torch)
    layers = [(str(i), m) for i, m in enumerate(model)]
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.standard_normal((batch, 3, 227, 227)).astype(np.float32))
    target = torch.from_numpy(rng.integers(0, 1000, batch))

    def detach(t, requires_grad):
        return t.detach().requires_grad_(requires_grad)

    def backward(out, grad, inputs):
        for t in inputs:
            t.grad = None
        model.zero_grad(set_to_none=True)
        out.backward(grad, retain_graph=True)
        return inputs[0].grad

    return _profile(layers, x, target, torch.nn.functional.cross_entropy, detach, backward, repeats)


def format_profile(rows, torch_rows=None):
    header = "| layer | type | forward ms | backward ms |" + (" torch fwd ms | torch bwd ms |" if torch_rows else "")
    lines = [header, "|" + " --- |" * (6 if torch_rows else 4)]
    for i, row in enumerate(rows):
        line = f"| {row['layer']} | {row['type']} | {row['forward'] * 1e3:.1f} | {row.get('backward', 0) * 1e3:.1f} |"
        if torch_rows:
            other = torch_rows[i]
            line += f" {other['forward'] * 1e3:.1f} | {other.get('backward', 0) * 1e3:.1f} |"
        lines.append(line)
    total_f = sum(r["forward"] for r in rows)
    total_b = sum(r.get("backward", 0) for r in rows)
    footer = f"| total | | {total_f * 1e3:.1f} | {total_b * 1e3:.1f} |"
    if torch_rows:
        footer += (f" {sum(r['forward'] for r in torch_rows) * 1e3:.1f} |"
                   f" {sum(r.get('backward', 0) for r in torch_rows) * 1e3:.1f} |")
    lines.append(footer)
    return "\n".join(lines)
