"""CPU benchmarks: every AlexNet kernel and the whole training step, minialex vs PyTorch.

Each minialex kernel is timed directly (the function the docs and tests show),
forward and backward separately; PyTorch's counterpart runs the same shapes
through torch.nn.functional with autograd, its backward timed as
``out.backward(grad)``. Medians of several runs after warm-up, same thread
count for both, in one process, the two frameworks taking turns
(``alternated_median_times``) so that a shared machine's drift reaches both.
"""

import numpy as np

import minialex as ma
import minialex.functional as MF
from minialex import models, optim

from .common import alternated_median_times, median_time
from .kernels import minialex_kernel, torch_kernel
from .layers import LAYERS, torch_alexnet


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
            if torch is not None:
                row["minialex_forward"], row["torch_forward"] = alternated_median_times(
                    [ours, torch_kernel(torch, kind, spec, x, rng)[0]], repeats)
            else:
                row["minialex_forward"], row["torch_forward"] = median_time(ours, repeats), None
            row["minialex_backward"] = row["torch_backward"] = None
        else:
            x = rng.standard_normal((batch, *shape)).astype(np.float32)
            forward, backward = minialex_kernel(kind, spec, x, rng, np.asarray)
            if torch is not None:
                torch_forward, torch_backward = torch_kernel(torch, kind, spec, x, rng)
                row["minialex_forward"], row["torch_forward"] = alternated_median_times(
                    [forward, torch_forward], repeats)
                row["minialex_backward"], row["torch_backward"] = alternated_median_times(
                    [backward, torch_backward], repeats)
            else:
                row["minialex_forward"] = median_time(forward, repeats)
                row["minialex_backward"] = median_time(backward, repeats)
                row["torch_forward"] = row["torch_backward"] = None
        rows.append(row)
    return rows


def minialex_train_step(batch, seed=0, device="cpu"):
    """A closure running one paper-AlexNet training step (fwd + loss + bwd + SGD 0.9 / 5e-4) at ``batch``."""
    ma.manual_seed(seed)
    model = models.alexnet().to(device)
    optimizer = optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    rng = np.random.default_rng(seed)
    x = ma.tensor(rng.standard_normal((batch, 3, 227, 227)).astype(np.float32), device=device)
    target = ma.tensor(rng.integers(0, 1000, batch), device=device)

    def step():
        loss = MF.cross_entropy(model(x), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def torch_train_step(torch, batch, seed=0, device="cpu"):
    """The same step in PyTorch, on ``device``."""
    torch.manual_seed(seed)
    model = torch_alexnet(torch).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(rng.standard_normal((batch, 3, 227, 227)).astype(np.float32)).to(device)
    target = torch.from_numpy(rng.integers(0, 1000, batch)).to(device)

    def step():
        loss = torch.nn.functional.cross_entropy(model(x), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def train_step_benchmarks(batches, repeats, torch=None):
    rows = []
    for batch in batches:
        if torch is not None:
            # A step lasts seconds: what the other framework left running costs little of it.
            ours, theirs = alternated_median_times([minialex_train_step(batch), torch_train_step(torch, batch)],
                                                   repeats, warmup=2, rewarm=False)
        else:
            ours, theirs = median_time(minialex_train_step(batch), repeats, warmup=2), None
        rows.append({"batch": batch, "minialex": ours, "torch": theirs})
    return rows
