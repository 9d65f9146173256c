"""Module, Parameter and Sequential: the containers every layer and model is built from.

A Module registers the Parameters and sub-Modules assigned to its attributes,
in assignment order, so ``named_parameters()`` gives PyTorch's dotted names
(``features.0.weight``) for the same structure.
"""

from collections import OrderedDict

import numpy as np

from .. import backend
from ..autograd import Tensor, _to_array, is_float_dtype


class Parameter(Tensor):
    """A Tensor that a Module learns: ``requires_grad=True`` and registered on assignment."""

    def __init__(self, data, requires_grad=True):
        array = data.data if isinstance(data, Tensor) else data
        if not backend.is_array(array):
            array = _to_array(array)
        if not is_float_dtype(array.dtype):
            raise TypeError(f"a Parameter must be floating point, got dtype {array.dtype}")
        super().__init__(array, requires_grad=requires_grad)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()


class StateDictError(ValueError, RuntimeError):
    """A state dict does not fit the module: missing, unexpected or mis-shaped keys.

    A ValueError by this project's convention and a RuntimeError as in PyTorch.
    """


class Module:
    """Base class of layers and models: subclasses set attributes in __init__ and define forward."""

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_forward_hooks", {})

    # ----------------------------------------------------------------- registration

    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}.__init__ must call super().__init__() before setting {name!r}")
        # As PyTorch: a registered parameter can only be replaced by a Parameter (or None,
        # which removes it); anything else would silently drop it from parameters(),
        # state_dict() and the optimiser's view. Likewise for a child module.
        if name in self._parameters and not isinstance(value, Parameter) and value is not None:
            raise TypeError(
                f"cannot assign '{_type_name(value)}' as parameter '{name}' (minialex.nn.Parameter or None expected)"
            )
        if name in self._modules and not isinstance(value, Module) and value is not None:
            raise TypeError(
                f"cannot assign '{_type_name(value)}' as child module '{name}' (minialex.nn.Module or None expected)"
            )
        # Replacing a registered name keeps its place in the order (dict assignment
        # does), so names and state_dict order stay PyTorch's. A plain attribute of the
        # same name (e.g. a None set earlier) is removed so that it cannot shadow it.
        if isinstance(value, Parameter):
            self._modules.pop(name, None)
            self.__dict__.pop(name, None)
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._parameters.pop(name, None)
            self.__dict__.pop(name, None)
            self._modules[name] = value
        else:
            self._parameters.pop(name, None)
            self._modules.pop(name, None)
            object.__setattr__(self, name, value)

    def __getattr__(self, name):
        # Only called when normal lookup fails: parameters and sub-modules live in the dicts.
        registries = self.__dict__
        if name in registries.get("_parameters", {}):
            return registries["_parameters"][name]
        if name in registries.get("_modules", {}):
            return registries["_modules"][name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __delattr__(self, name):
        if name in self._parameters:
            del self._parameters[name]
        elif name in self._modules:
            del self._modules[name]
        else:
            object.__delattr__(self, name)

    def register_parameter(self, name, parameter):
        """Register ``parameter`` (or None, for an absent bias) under ``name``."""
        if parameter is None:
            self._parameters.pop(name, None)
            object.__setattr__(self, name, None)
        else:
            setattr(self, name, parameter)

    # ----------------------------------------------------------------- forward

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def __call__(self, *args, **kwargs):
        output = self.forward(*args, **kwargs)
        for hook in list(self._forward_hooks.values()):
            hook(self, args, output)
        return output

    def register_forward_hook(self, hook):
        """Call ``hook(module, inputs, output)`` after every forward; returns a handle with remove()."""
        handle = _HookHandle(self._forward_hooks)
        self._forward_hooks[handle.id] = hook
        return handle

    # ----------------------------------------------------------------- traversal

    def named_children(self):
        return iter(self._modules.items())

    def children(self):
        return iter(self._modules.values())

    def named_modules(self, prefix=""):
        """(dotted name, module) for this module and every descendant, depth first."""
        yield prefix, self
        for name, child in self._modules.items():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self):
        return (module for _, module in self.named_modules())

    def named_parameters(self, prefix=""):
        """(dotted name, Parameter): own parameters first, then each child's, each shared one once."""
        seen = set()
        for module_name, module in self.named_modules(prefix):
            for name, parameter in module._parameters.items():
                if id(parameter) in seen:
                    continue
                seen.add(id(parameter))
                yield (f"{module_name}.{name}" if module_name else name), parameter

    def parameters(self):
        return (parameter for _, parameter in self.named_parameters())

    # ----------------------------------------------------------------- state

    def state_dict(self):
        """An ordered dict: dotted parameter name -> a NumPy copy of its values."""
        return OrderedDict((name, p.numpy()) for name, p in self.named_parameters())

    def load_state_dict(self, state_dict):
        """Copy values from ``state_dict`` into the parameters, in place, on their devices.

        Every key must match a parameter of the same shape, with numbers that
        can be cast to its dtype; otherwise a StateDictError lists the missing,
        unexpected, mis-shaped and unusable keys and nothing is changed: all
        values are checked and converted before the first one is written.
        """
        self._commit_load(self._prepare_load(state_dict))
        return self

    def _prepare_load(self, state_dict):
        """Check and convert ``state_dict`` without changing the module; ``_commit_load`` writes the result.

        Split in two so that ``load_checkpoint`` can check the optimiser and
        scheduler states too before it changes anything.
        """
        owner = f"load_state_dict for {type(self).__name__}"
        if not isinstance(state_dict, dict):  # an OrderedDict is a dict
            raise StateDictError(f"{owner}: expected a dict of name -> array, got {type(state_dict).__name__}")
        parameters = dict(self.named_parameters())
        missing = [name for name in parameters if name not in state_dict]
        unexpected = [name for name in state_dict if name not in parameters]
        mis_shaped, unusable, converted = [], [], {}
        for name, parameter in parameters.items():
            if name not in state_dict:
                continue
            values = _values(state_dict[name])
            if values is None or values.dtype.kind not in "biuf":
                # Strings (even "1.5"), objects, complex numbers: not parameter values.
                what = f"{type(state_dict[name]).__name__}" if values is None else f"dtype {values.dtype}"
                unusable.append(f"{name}: {what}, expected numbers castable to {parameter.dtype}")
            elif tuple(values.shape) != parameter.shape:
                mis_shaped.append(f"{name}: got {tuple(values.shape)}, expected {parameter.shape}")
            else:
                # No copy when the values already have the parameter's device and dtype.
                converted[name] = backend.to_device(values, parameter.device).astype(parameter.dtype, copy=False)
        if missing or unexpected or mis_shaped or unusable:
            problems = []
            if missing:
                problems.append(f"missing keys {missing}")
            if unexpected:
                problems.append(f"unexpected keys {unexpected}")
            if mis_shaped:
                problems.append("mis-shaped keys [" + "; ".join(mis_shaped) + "]")
            if unusable:
                problems.append("unusable values [" + "; ".join(unusable) + "]")
            raise StateDictError(f"{owner}: " + ", ".join(problems))
        return [(parameters[name], values) for name, values in converted.items()]

    @staticmethod
    def _commit_load(prepared):
        """Write what ``_prepare_load`` checked; shapes and dtypes already match, so nothing here fails."""
        for parameter, values in prepared:
            parameter.data[...] = values  # in place: optimisers keep pointing at the same arrays
            parameter._bump_version()  # a graph that saved this parameter must not backpropagate through it

    # ----------------------------------------------------------------- modes and devices

    def train(self, mode=True):
        for module in self.modules():
            object.__setattr__(module, "training", bool(mode))
        return self

    def eval(self):
        return self.train(False)

    def to(self, device):
        """Move every parameter (and its gradient) to ``device``, in place; returns self."""
        device = backend.parse_device(device)
        for parameter in self.parameters():
            parameter.data = backend.to_device(parameter.data, device)
            if parameter.grad is not None:
                parameter.grad = Tensor(backend.to_device(parameter.grad.data, device))
        return self

    def zero_grad(self):
        """Forget every parameter's gradient (set it to None, as PyTorch does by default)."""
        for parameter in self.parameters():
            parameter.grad = None

    # ----------------------------------------------------------------- printing

    def extra_repr(self):
        return ""

    def __repr__(self):
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        if self._modules:
            for name, child in self._modules.items():
                child_text = repr(child).replace("\n", "\n  ")
                lines.append(f"  ({name}): {child_text}")
            return "\n".join(lines) + "\n)"
        return lines[0] + ")"


class _HookHandle:
    _next_id = 0

    def __init__(self, hooks):
        self.hooks = hooks
        self.id = _HookHandle._next_id
        _HookHandle._next_id += 1

    def remove(self):
        self.hooks.pop(self.id, None)


def _values(value):
    """The array inside a state-dict value (NumPy/CuPy array, Tensor, number or nested list), or None."""
    if isinstance(value, Tensor):
        return value.data
    if backend.is_array(value):
        return value
    if value is None or isinstance(value, dict | str | bytes):
        return None
    try:
        return np.asarray(value)
    except (TypeError, ValueError):  # e.g. a ragged nested list
        return None


def _type_name(value):
    """The name PyTorch-style messages give a value's type: 'minialex.Tensor', 'numpy.ndarray', 'int'."""
    kind = type(value)
    if kind is Tensor:
        return "minialex.Tensor"
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


class Sequential(Module):
    """Modules applied in order; registered under the names "0", "1", ... as in PyTorch."""

    def __init__(self, *modules):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], dict):
            items = modules[0].items()
        else:
            items = ((str(i), m) for i, m in enumerate(modules))
        for name, module in items:
            if not isinstance(module, Module):
                raise TypeError(f"Sequential takes Modules, got {type(module).__name__} for entry {name}")
            setattr(self, name, module)

    def forward(self, x):
        for module in self._modules.values():
            x = module(x)
        return x

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, index):
        modules = list(self._modules.values())
        if isinstance(index, slice):
            return Sequential(OrderedDict(list(self._modules.items())[index]))
        return modules[index]
