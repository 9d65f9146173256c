"""CPU benchmarks: every AlexNet kernel and the whole training step, minialex vs PyTorch.

Each minialex kernel is timed directly (the function the docs and tests show),
forward and backward separately; PyTorch's counterpart runs the same shapes
through torch.nn.functional with autograd, its backward timed as
``out.backward(grad)``. Medians of several runs after warm-up, same thread
count for both, in one process.
"""

import numpy as np

import minialex as ma
import minialex.functional as MF
from minialex import models, optim

from .common import median_time
from .kernels import minialex_kernel
from .layers import LAYERS, torch_alexnet


def _torch_kernel(torch, kind, x_np, spec, rng):
    TF = torch.nn.functional
    state = {}
    x = torch.from_numpy(x_np.copy())
    params = []
    if kind == "conv":
        c = x.shape[1]
        w = torch.from_numpy((rng.standard_normal((spec["out"], c // spec["groups"], spec["k"], spec["k"])) * 0.01)
                             .astype(np.float32)).requires_grad_()
        b = torch.zeros(spec["out"], requires_grad=True)
        params = [w, b]
        if not spec.get("first"):
            x.requires_grad_()

        def run():
            return TF.conv2d(x, w, b, spec["stride"], spec["pad"], 1, spec["groups"])
    elif kind == "linear":
        w = torch.from_numpy((rng.standard_normal((spec["out"], x.shape[1])) * 0.01).astype(np.float32)).requires_grad_()
        b = torch.zeros(spec["out"], requires_grad=True)
        params = [w, b]
        x.requires_grad_()

        def run():
            return TF.linear(x, w, b)
    elif kind == "xent":
        x.requires_grad_()
        target = torch.from_numpy(rng.integers(0, x.shape[1], x.shape[0]))

        def run():
            return TF.cross_entropy(x, target)
    else:
        x.requires_grad_()
        functions = {
            "pool": lambda: TF.max_pool2d(x, 3, 2),
            "lrn": lambda: TF.local_response_norm(x, 5, 1e-4, 0.75, 2.0),
            "relu": lambda: TF.relu(x),
            "dropout": lambda: TF.dropout(x, 0.5, True),
        }
        run = functions[kind]
    leaves = [t for t in [x, *params] if t.requires_grad]

    def forward():
        state["out"] = run()

    def backward():
        for leaf in leaves:
            leaf.grad = None
        state["out"].backward(state["dout"], retain_graph=True)

    forward()
    state["dout"] = torch.from_numpy(rng.standard_normal(tuple(state["out"].shape)).astype(np.float32))
    return forward, backward


def _torch_sgd_step(torch, shape, rng):
    param = rng.standard_normal(shape).astype(np.float32)
    p = torch.nn.Parameter(torch.from_numpy(param))
    p.grad = torch.from_numpy(rng.standard_normal(shape).astype(np.float32))
    return torch.optim.SGD([p], lr=0.01, momentum=0.9, weight_decay=5e-4).step


def kernel_benchmarks(batch, repeats, torch=None, names=None):
    """One row a kernel: forward and backward median seconds for minialex and PyTorch."""
    rng = np.random.default_rng(0)
    rows = []
    for name, kind, shape, spec in LAYERS:
        if names and name not in names:
            continue
        row = {"kernel": name, "batch": batch}
        if kind == "sgd":  # one update of a (4096, 9216) parameter: no batch, no backward
            x = rng.standard_normal(shape).astype(np.float32)
            ours, _ = minialex_kernel(kind, spec, x, rng, np.asarray)
            row["minialex_forward"], row["minialex_backward"] = median_time(ours, repeats), None
            row["torch_forward"] = median_time(_torch_sgd_step(torch, shape, rng), repeats) if torch else None
            row["torch_backward"] = None
        else:
            x = rng.standard_normal((batch, *shape)).astype(np.float32)
            forward, backward = minialex_kernel(kind, spec, x, rng, np.asarray)
            row["minialex_forward"] = median_time(forward, repeats)
            row["minialex_backward"] = median_time(backward, repeats)
            if torch is not None:
                forward, backward = _torch_kernel(torch, kind, x, spec, rng)
                row["torch_forward"] = median_time(forward, repeats)
                row["torch_backward"] = median_time(backward, repeats)
            else:
                row["torch_forward"] = row["torch_backward"] = None
        rows.append(row)
    return rows


def minialex_train_step(batch, seed=0):
    """A closure running one paper-AlexNet training step (fwd + loss + bwd + SGD) at ``batch``."""
    ma.manual_seed(seed)
    model = models.alexnet()
    optimizer = optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    rng = np.random.default_rng(seed)
    x = ma.tensor(rng.standard_normal((batch, 3, 227, 227)).astype(np.float32))
    target = rng.integers(0, 1000, batch)

    def step():
        loss = MF.cross_entropy(model(x), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def torch_train_step(torch, batch, seed=0):
    torch.manual_seed(seed)
    model = torch_alexnet(torch)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(rng.standard_normal((batch, 3, 227, 227)).astype(np.float32))
    target = torch.from_numpy(rng.integers(0, 1000, batch))

    def step():
        loss = torch.nn.functional.cross_entropy(model(x), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def train_step_benchmarks(batches, repeats, torch=None):
    rows = []
    for batch in batches:
        row = {"batch": batch, "minialex": median_time(minialex_train_step(batch), repeats, warmup=2)}
        row["torch"] = median_time(torch_train_step(torch, batch), repeats, warmup=2) if torch else None
        rows.append(row)
    return rows
