"""Stochastic gradient descent with momentum, weight decay and Nesterov, as PyTorch.

The update itself (and how it differs from the AlexNet paper's form) is in
``minialex/kernels/sgd.py``; this module keeps the parameter groups and the
momentum buffers, and saves and restores them.
"""

import math
import numbers

import numpy as np

from .. import backend
from ..autograd import Tensor, _on_device_of
from ..kernels.sgd import needs_scratch, sgd_update


def check_number(owner, name, value, minimum=0.0, maximum=math.inf, *, open_minimum=False, open_maximum=False):
    """``float(value)``, or a ValueError naming ``owner``, the argument, its value and the allowed range.

    Every hyper-parameter must be a finite real number (not a bool) in
    [minimum, maximum], or (minimum, ...) / (..., maximum) when the open_* flag
    is set. Shared by the optimisers and the learning-rate schedulers.
    """
    expected = "a finite number"
    if minimum > -math.inf and maximum < math.inf:
        expected += f" in {'(' if open_minimum else '['}{minimum:g}, {maximum:g}{')' if open_maximum else ']'}"
    elif minimum > -math.inf:
        expected += f" {'>' if open_minimum else '>='} {minimum:g}"
    elif maximum < math.inf:
        expected += f" {'<' if open_maximum else '<='} {maximum:g}"
    # numbers.Real covers Python and NumPy floats and ints; bool is an int, but never a rate.
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > minimum if open_minimum else value >= minimum) and (
            value < maximum if open_maximum else value <= maximum
        )
    if not ok:
        raise ValueError(f"{owner}: {name} must be {expected}, got {value!r}")
    return float(value)


class Optimizer:
    """Holds ``param_groups``: a list of dicts with "params" and the hyper-parameters.

    A subclass says which hyper-parameters are valid in ``_check_hyper_parameters``;
    the base applies it to the defaults, to every parameter group and to every
    loaded state, so an optimiser never runs with a NaN rate or a negative decay.

    ``self.state`` maps a parameter's index to its buffers, arrays of the
    parameter's shape; the names in ``count_state`` are instead step counts,
    plain ints (saved as 0-d int64 arrays). ``state_names``, when set, are the
    names every parameter's state must hold, so a load cannot leave half a state.
    """

    #: State entries that are a count (an int >= 0), not an array of the parameter's shape.
    count_state = ()
    #: The exact entries of one parameter's state, or None for any (checked on load).
    state_names = None

    def __init__(self, params, defaults):
        if isinstance(params, Tensor):
            raise TypeError("params must be an iterable of Tensors (e.g. model.parameters()), got a single Tensor")
        params = list(params)
        if not params:
            raise ValueError("the optimiser got an empty parameter list")
        owner = type(self).__name__
        self.defaults = self._check_hyper_parameters(dict(defaults), owner)
        given_groups = isinstance(params[0], dict)
        groups = params if given_groups else [{"params": params}]
        self.param_groups = []
        seen = set()
        index = 0  # a parameter's index over all groups: the key of its state
        for group_number, group in enumerate(groups):
            if not isinstance(group, dict):
                raise TypeError(
                    f"{owner}: param group {group_number} must be a dict with 'params', got {type(group).__name__}"
                )
            if "params" not in group:
                raise ValueError(f"{owner}: param group {group_number} has no 'params' entry")
            group = dict(group)
            group["params"] = [group["params"]] if isinstance(group["params"], Tensor) else list(group["params"])
            for p in group["params"]:
                if not isinstance(p, Tensor):
                    raise TypeError(f"the optimiser can only update Tensors, got {type(p).__name__}")
                if not p.is_leaf:
                    # A step writes into p.data; a computed tensor's data is never read again.
                    raise ValueError(
                        f"{owner}: parameter {index} is not a leaf tensor (it was computed by "
                        f"{type(p.grad_fn).__name__}); an optimiser can only update leaves, such as "
                        "model.parameters() or tensors made with requires_grad=True"
                    )
                if id(p) in seen:
                    raise ValueError("a parameter appears in more than one parameter group")
                seen.add(id(p))
                index += 1
            for key, value in self.defaults.items():
                group.setdefault(key, value)
            # A group's own options get the same checks as the defaults (e.g. nesterov needs momentum).
            where = f"{owner}: param group {group_number}" if given_groups else owner
            self.param_groups.append(self._checked_group(group, where))
        self.state = {}  # parameter index (over all groups) -> dict of arrays
        # One scratch array per (device, dtype), as large as the largest parameter,
        # reused by every parameter's update: no parameter-sized temporaries per step.
        self._scratch = {}

    def _check_hyper_parameters(self, group, where):
        """Return ``group`` with its hyper-parameters checked and normalised; raise ValueError naming ``where``.

        The base class knows no hyper-parameters; each optimiser overrides this.
        """
        return group

    def _checked_group(self, group, where):
        """The optimiser's own checks, plus "initial_lr", which a scheduler stores in every group."""
        group = self._check_hyper_parameters(group, where)
        if "initial_lr" in group:
            group["initial_lr"] = check_number(where, "initial_lr", group["initial_lr"])
        return group

    def _scratch_for(self, p):
        """A scratch array of p's shape, dtype and device: a view of one buffer shared by all parameters."""
        key = (p.device, p.dtype)
        buffer = self._scratch.get(key)
        if buffer is None or buffer.size < p.size:
            largest = max(q.size for _, _, q in self._indexed_params() if (q.device, q.dtype) == key)
            xp = backend.get_array_module(p.data)
            with _on_device_of(p.data):
                buffer = xp.empty(largest, dtype=p.dtype)
            self._scratch[key] = buffer
        return buffer[: p.size].reshape(p.shape)

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
        """{"state": {index: {name: NumPy array}}, "param_groups": [hyper-parameters + param indices]}.

        A count (``count_state``, e.g. Adam's "step") is saved as a 0-d int64 array.
        """
        groups, index = [], 0
        for group in self.param_groups:
            saved = {k: v for k, v in group.items() if k != "params"}
            saved["params"] = list(range(index, index + len(group["params"])))
            index += len(group["params"])
            groups.append(saved)
        state = {
            i: {name: np.array(a, dtype=np.int64) if name in self.count_state else backend.to_numpy(a)
                for name, a in s.items()}
            for i, s in self.state.items()
        }
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Restore hyper-parameters and buffers; buffers go to each parameter's device, shape-checked.

        All or nothing: everything is checked and converted first, so a load
        that raises leaves the optimiser as it was.
        """
        self._commit_load(self._prepare_load(state_dict))

    def _prepare_load(self, state_dict):
        """Check and convert ``state_dict`` without changing the optimiser; ``_commit_load`` applies the result.

        Split in two so that ``load_checkpoint`` can check every part of a
        checkpoint before it changes any of them.
        """
        owner = f"{type(self).__name__}.load_state_dict"
        if not isinstance(state_dict, dict) or not {"state", "param_groups"} <= state_dict.keys():
            raise ValueError(f"{owner}: expected a dict with 'state' and 'param_groups', got {_describe(state_dict)}")
        saved_groups = state_dict["param_groups"]
        if not isinstance(saved_groups, list | tuple) or not all(
            isinstance(g, dict) and isinstance(g.get("params"), list | tuple) for g in saved_groups
        ):
            raise ValueError(f"{owner}: param_groups must be a list of dicts each with a 'params' list")
        if len(saved_groups) != len(self.param_groups) or any(
            len(saved["params"]) != len(group["params"]) for saved, group in zip(saved_groups, self.param_groups)
        ):
            raise ValueError(
                f"{owner}: the saved optimiser has groups of sizes "
                f"{[len(g['params']) for g in saved_groups]}, this one {[len(g['params']) for g in self.param_groups]}"
            )
        new_groups = []
        for group_number, saved in enumerate(saved_groups):
            missing = [key for key in self.defaults if key not in saved]
            if missing:
                raise ValueError(f"{owner}: saved param group {group_number} has no {', '.join(missing)}")
            options = {key: value for key, value in saved.items() if key != "params"}
            new_groups.append(self._checked_group(options, f"{owner}: param group {group_number}"))

        params = {i: p for i, _, p in self._indexed_params()}
        saved_state = state_dict["state"]
        if not isinstance(saved_state, dict):
            raise ValueError(f"{owner}: state must be a dict (parameter index -> buffers), got {_describe(saved_state)}")
        new_state = {}
        for key, entries in saved_state.items():
            i = _parameter_index(owner, key)
            if i not in params:
                raise ValueError(f"{owner}: state for parameter {i}, but there are only {len(params)}")
            if not isinstance(entries, dict):
                raise ValueError(f"{owner}: state of parameter {i} must be a dict of arrays, got {_describe(entries)}")
            if self.state_names is not None and set(entries) != set(self.state_names):
                raise ValueError(
                    f"{owner}: state of parameter {i} must hold exactly {', '.join(self.state_names)}; "
                    f"got {', '.join(map(str, entries)) or 'nothing'}"
                )
            new_state[i] = {
                name: _count(owner, f"{name} of parameter {i}", array)
                if name in self.count_state
                else _buffer_like(owner, f"{name} of parameter {i}", array, params[i])
                for name, array in entries.items()
            }
        return new_groups, new_state

    def _commit_load(self, prepared):
        """Apply what ``_prepare_load`` checked; nothing here can fail."""
        new_groups, new_state = prepared
        for options, group in zip(new_groups, self.param_groups):
            group.update(options)
        self.state = new_state


def _describe(value):
    """A short description of a value for an error message: its type, and its repr for a plain scalar."""
    if value is None or isinstance(value, numbers.Number | str):
        return f"{type(value).__name__} {value!r}"
    return type(value).__name__


def _parameter_index(owner, key):
    """A state key as an int: JSON and np.savez turn the indices into strings."""
    try:
        return int(key)
    except (TypeError, ValueError):
        raise ValueError(f"{owner}: state keys must be parameter indices, got {key!r}") from None


def _count(owner, what, value):
    """A saved step count as an int >= 0: a Python or NumPy integer, a 0-d integer array, or an
    integral float (PyTorch keeps its step in a float tensor); ValueError otherwise."""
    ok = isinstance(value, numbers.Real | np.ndarray) and not isinstance(value, bool | np.bool_)
    if ok:
        array = np.asarray(value)
        ok = array.shape == () and array.dtype.kind in "iuf"
    if ok:
        number = array.item()
        ok = math.isfinite(number) and number >= 0 and number == int(number)
    if not ok:
        raise ValueError(f"{owner}: {what} must be a count (an integer >= 0), got {_describe(value)}")
    return int(number)


def _buffer_like(owner, what, array, parameter):
    """``array`` as a new array of ``parameter``'s shape, dtype and device; ValueError if it cannot be."""
    try:
        values = array if backend.is_array(array) else np.asarray(array)
    except (TypeError, ValueError) as error:  # e.g. a ragged nested list
        raise ValueError(f"{owner}: {what} is not an array: {error}") from None
    if values.dtype.kind not in "biuf":  # strings, objects, complex: nothing a buffer can hold
        raise ValueError(f"{owner}: {what} has dtype {values.dtype}, expected numbers castable to {parameter.dtype}")
    if tuple(values.shape) != parameter.shape:
        raise ValueError(f"{owner}: {what} has shape {tuple(values.shape)}, expected {parameter.shape}")
    # astype copies, so the optimiser never shares memory with the dict it was given.
    return backend.to_device(values.astype(parameter.dtype), parameter.device)


class SGD(Optimizer):
    """SGD(params, lr, momentum=0.0, weight_decay=0.0, nesterov=False), PyTorch's update (dampening 0).

        g = grad + weight_decay * p;  buf = momentum * buf + g  (buf = g at first);
        g = g + momentum * buf if nesterov else buf;  p -= lr * g
    """

    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0, nesterov=False):
        super().__init__(
            params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay, "nesterov": nesterov}
        )

    def _check_hyper_parameters(self, group, where):
        group["lr"] = check_number(where, "lr", group["lr"])
        group["momentum"] = check_number(where, "momentum", group["momentum"])
        group["weight_decay"] = check_number(where, "weight_decay", group["weight_decay"])
        if not isinstance(group["nesterov"], bool | np.bool_):
            raise ValueError(f"{where}: nesterov must be True or False, got {group['nesterov']!r}")
        group["nesterov"] = bool(group["nesterov"])
        if group["nesterov"] and group["momentum"] == 0:
            raise ValueError(f"{where}: nesterov=True needs momentum > 0, got momentum={group['momentum']!r}")
        return group

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
                # The CUDA update is one fused kernel and the CPU one works in chunks: no scratch array.
                self._scratch_for(p) if needs_scratch(p.data, p.grad.data, state.get("momentum_buffer")) else None,
                group["lr"],
                group["momentum"],
                group["weight_decay"],
                group["nesterov"],
            )
            p._bump_version()  # p.data changed in place: a graph that saved p must not reuse it
            if buffer is not None:
                state["momentum_buffer"] = buffer
            elif not state:
                del self.state[index]

