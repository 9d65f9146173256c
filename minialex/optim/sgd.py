"""Stochastic gradient descent with momentum, weight decay and Nesterov, as PyTorch.

The update itself (and how it differs from the AlexNet paper's form) is in
``minialex/kernels/sgd.py``; this module keeps the parameter groups and the
momentum buffers, and saves and restores them.
"""

import numbers

import numpy as np

from .. import backend
from ..autograd import Tensor, _on_device_of
from ..kernels.sgd import sgd_update


class Optimizer:
    """Holds ``param_groups``: a list of dicts with "params" and the hyper-parameters."""

    def __init__(self, params, defaults):
        if isinstance(params, Tensor):
            raise TypeError("params must be an iterable of Tensors (e.g. model.parameters()), got a single Tensor")
        params = list(params)
        if not params:
            raise ValueError("the optimiser got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        self.defaults = defaults
        self.param_groups = []
        seen = set()
        for group in groups:
            group = dict(group)
            group["params"] = list(group["params"])
            for p in group["params"]:
                if not isinstance(p, Tensor):
                    raise TypeError(f"the optimiser can only update Tensors, got {type(p).__name__}")
                if id(p) in seen:
                    raise ValueError("a parameter appears in more than one parameter group")
                seen.add(id(p))
            for key, value in defaults.items():
                group.setdefault(key, value)
            self.param_groups.append(group)
        self.state = {}  # parameter index (over all groups) -> dict of arrays

    def _indexed_params(self):
        index = 0
        for group in self.param_groups:
            for p in group["params"]:
                yield index, group, p
                index += 1

    def zero_grad(self):
        """Forget every parameter's gradient (set to None, as PyTorch's default)."""
        for _, _, p in self._indexed_params():
            p.grad = None

    def state_dict(self):
        """{"state": {index: {name: NumPy array}}, "param_groups": [hyper-parameters + param indices]}."""
        groups, index = [], 0
        for group in self.param_groups:
            saved = {k: v for k, v in group.items() if k != "params"}
            saved["params"] = list(range(index, index + len(group["params"])))
            index += len(group["params"])
            groups.append(saved)
        state = {i: {name: backend.to_numpy(a) for name, a in s.items()} for i, s in self.state.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Restore hyper-parameters and buffers; buffers go to each parameter's device, shape-checked."""
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups) or any(
            len(saved["params"]) != len(group["params"]) for saved, group in zip(groups, self.param_groups)
        ):
            raise ValueError(
                "load_state_dict: the saved optimiser has groups of sizes "
                f"{[len(g['params']) for g in groups]}, this one {[len(g['params']) for g in self.param_groups]}"
            )
        params = {i: p for i, _, p in self._indexed_params()}
        new_state = {}
        for key, entries in state_dict["state"].items():
            i = int(key)
            if i not in params:
                raise ValueError(f"load_state_dict: state for parameter {i}, but there are only {len(params)}")
            new_state[i] = {}
            for name, array in entries.items():
                if tuple(np.shape(array)) != params[i].shape:
                    raise ValueError(
                        f"load_state_dict: {name} of parameter {i} has shape {tuple(np.shape(array))}, "
                        f"expected {params[i].shape}"
                    )
                new_state[i][name] = backend.to_device(
                    np.asarray(array, dtype=params[i].dtype) if not backend.is_array(array) else array.astype(params[i].dtype),
                    params[i].device,
                )
        for saved, group in zip(groups, self.param_groups):
            for key, value in saved.items():
                if key != "params":
                    group[key] = value
        self.state = new_state


def _non_negative(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value < 0:
        raise ValueError(f"SGD: {name} must be a non-negative number, got {value!r}")
    return float(value)


class SGD(Optimizer):
    """SGD(params, lr, momentum=0.0, weight_decay=0.0, nesterov=False), PyTorch's update (dampening 0).

        g = grad + weight_decay * p;  buf = momentum * buf + g  (buf = g at first);
        g = g + momentum * buf if nesterov else buf;  p -= lr * g
    """

    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0, nesterov=False):
        lr = _non_negative("lr", lr)
        momentum = _non_negative("momentum", momentum)
        weight_decay = _non_negative("weight_decay", weight_decay)
        if nesterov and momentum == 0:
            raise ValueError("SGD: nesterov=True needs momentum > 0")
        super().__init__(
            params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay, "nesterov": bool(nesterov)}
        )
        # One scratch array per (device, dtype), as large as the largest parameter,
        # reused by every parameter's update: no parameter-sized temporaries per step.
        self._scratch = {}

    def _scratch_for(self, p):
        key = (p.device, p.dtype)
        buffer = self._scratch.get(key)
        if buffer is None or buffer.size < p.size:
            largest = max(q.size for _, _, q in self._indexed_params() if (q.device, q.dtype) == key)
            xp = backend.get_array_module(p.data)
            with _on_device_of(p.data):
                buffer = xp.empty(largest, dtype=p.dtype)
            self._scratch[key] = buffer
        return buffer[: p.size].reshape(p.shape)

    def step(self):
        """Update every parameter that has a gradient, in place."""
        for index, group, p in self._indexed_params():
            if p.grad is None:
                continue
            if p.grad.shape != p.shape:
                raise ValueError(f"SGD: parameter {index} has shape {p.shape} but its grad {p.grad.shape}")
            state = self.state.setdefault(index, {})
            buffer = sgd_update(
                p.data,
                p.grad.data,
                state.get("momentum_buffer"),
                # The CUDA update is one fused kernel that needs no scratch array.
                None if backend.is_cuda_array(p.data) else self._scratch_for(p),
                group["lr"],
                group["momentum"],
                group["weight_decay"],
                group["nesterov"],
            )
            if buffer is not None:
                state["momentum_buffer"] = buffer
            elif not state:
                del self.state[index]

