"""The autograd engine: Tensor, Function, the backward graph walk and ``no_grad``.

A ``Tensor`` wraps an array (NumPy or CuPy). Every operation on tensors is a
``Function``: its ``forward`` computes on arrays and saves what ``backward``
needs; calling it records the function as the output's ``grad_fn`` together
with its input tensors. The recorded functions form a graph from the loss back
to the leaves (the tensors a user made).

``loss.backward()`` walks that graph once, outputs before inputs (a
topological order found without recursion), handing each function the
gradient of its output and passing the gradients it returns on to its inputs.
Leaves accumulate them in ``.grad``. The graph is freed as it is walked, so a
second ``backward`` through it is an error, as in PyTorch.
"""

import functools
import inspect
import numbers
import threading

import numpy as np

from . import backend

# --------------------------------------------------------------------------- grad mode

# Whether operations record the graph is a per-thread setting, as in PyTorch:
# a `no_grad` block in a data-loading thread must not cut layers out of the
# training thread's graph.
_grad_mode = threading.local()


def is_grad_enabled():
    """True when operations in this thread record the graph (the default)."""
    return getattr(_grad_mode, "enabled", True)


def set_grad_enabled(mode):
    """Switch graph recording on or off for this thread; returns the previous setting."""
    previous = is_grad_enabled()
    _grad_mode.enabled = bool(mode)
    return previous


class _GradMode:
    """A context manager and decorator that sets this thread's grad mode to ``_enabled``.

    Usable as ``with no_grad():``, ``@no_grad()`` and ``@no_grad``, on plain
    functions and on generator functions (each resumption of the generator
    runs in the mode, while the caller's code between resumptions keeps its own).
    """

    _enabled = None

    def __new__(cls, function=None):
        self = super().__new__(cls)
        if function is None:
            return self
        if not callable(function):
            raise TypeError(f"{cls.__name__}() takes no arguments, or a function to decorate; got {function!r}")
        return self(function)  # used bare, as @no_grad

    def __enter__(self):
        self._previous = set_grad_enabled(self._enabled)
        return self

    def __exit__(self, *exc_info):
        set_grad_enabled(self._previous)
        return False

    def __call__(self, function):
        mode = type(self)
        if inspect.isgeneratorfunction(function):
            def generator_wrapper(*args, **kwargs):
                return (yield from _run_generator_in_mode(mode, function(*args, **kwargs)))

            return functools.wraps(function)(generator_wrapper)

        def wrapper(*args, **kwargs):
            with mode():
                return function(*args, **kwargs)

        return functools.wraps(function)(wrapper)


def _run_generator_in_mode(mode, generator):
    """Drive ``generator`` so that its own code always runs inside ``mode()``."""
    with mode():
        request = None
        try:
            response = generator.send(None)
        except StopIteration as stop:
            return stop.value
    while True:
        try:
            request = yield response
        except GeneratorExit:
            with mode():
                generator.close()
            raise
        except BaseException as error:  # noqa: BLE001 - handed on to the generator, as `yield from` does
            with mode():
                try:
                    response = generator.throw(error)
                except StopIteration as stop:
                    return stop.value
        else:
            with mode():
                try:
                    response = generator.send(request)
                except StopIteration as stop:
                    return stop.value


class no_grad(_GradMode):  # noqa: N801 - PyTorch's name
    """Inside it, in this thread, no graph is recorded (evaluation, parameter updates)."""

    _enabled = False


class enable_grad(_GradMode):  # noqa: N801 - PyTorch's name
    """Inside it, in this thread, the graph is recorded again (e.g. within a no_grad block)."""

    _enabled = True


# --------------------------------------------------------------------------- profiler hook

# The recording profile (minialex.profiler.profile) while one is active, else None.
# Function calls and the backward walk read it once each: not profiling costs one check.
_profiler = None


# --------------------------------------------------------------------------- dtypes

DEFAULT_FLOAT = np.dtype(np.float32)


def is_float_dtype(dtype):
    return np.issubdtype(dtype, np.floating)


def _as_dtype(dtype):
    try:
        return np.dtype(dtype)
    except TypeError as error:
        raise TypeError(f"dtype must be a NumPy dtype or its name, got {dtype!r}") from error


def _check_data_dtype(array):
    kind = array.dtype.kind
    if kind not in "biuf":
        raise TypeError(
            f"a Tensor holds booleans, integers or floats, got an array of dtype {array.dtype} "
            "(complex, string and object arrays are not supported)"
        )


def _to_array(data, dtype=None, device=None):
    """The array behind ``ma.tensor(data)``: always a fresh copy, Python floats -> float32."""
    if isinstance(data, Tensor):
        data = data.data
    if dtype is not None:
        dtype = _as_dtype(dtype)
    if backend.is_array(data):
        array = data.copy()
    else:
        try:
            array = np.array(data)
        except (ValueError, TypeError) as error:
            raise TypeError(f"cannot make a tensor from {type(data).__name__}: {error}") from error
        # Python floats (and lists of them) would be float64 in NumPy; the engine's default is float32.
        if dtype is None and array.dtype == np.float64 and not isinstance(data, np.generic):
            array = array.astype(DEFAULT_FLOAT)
    _check_data_dtype(array)
    if dtype is not None and array.dtype != dtype:
        array = array.astype(dtype)
    if device is not None:
        array = backend.to_device(array, backend.parse_device(device))
    return array


# --------------------------------------------------------------------------- Tensor


class _VersionCounter:
    """A mutable count shared by a tensor and the tensors that view its data.

    ``viewed`` says whether an operation (reshape, transpose, indexing) made a
    view of the data: an in-place update recorded in the graph would then
    leave that view's graph describing the old values.
    """

    __slots__ = ("value", "viewed")

    def __init__(self):
        self.value = 0
        self.viewed = False


class Tensor:
    """An n-dimensional array that can record the operations made on it.

    ``data`` is the NumPy or CuPy array, ``grad`` the accumulated gradient (a
    Tensor, or None), ``grad_fn`` the Function that made it (None for a leaf).
    """

    # Make NumPy hand ``ndarray * Tensor`` to Tensor.__rmul__ instead of looping itself.
    __array_priority__ = 1000

    def __init__(self, data, requires_grad=False, dtype=None):
        array = data if (backend.is_array(data) and dtype is None) else _to_array(data, dtype)
        _check_data_dtype(array)
        self.data = array
        self.grad = None
        self.grad_fn = None
        self.requires_grad = False
        self._version_counter = _VersionCounter()
        self._is_view = False
        if requires_grad:
            self.requires_grad_(True)

    @classmethod
    def _from_function(cls, array, grad_fn):
        tensor = cls.__new__(cls)
        tensor.data = array
        tensor.grad = None
        tensor.grad_fn = grad_fn
        tensor.requires_grad = grad_fn is not None
        tensor._version_counter = _VersionCounter()
        tensor._is_view = False
        return tensor

    @property
    def _version(self):
        """How many times this tensor's data has been changed in place (shared with its views)."""
        return self._version_counter.value

    def _bump_version(self):
        """Record an in-place change of ``data`` (in-place operators, optimiser steps, loading)."""
        self._version_counter.value += 1

    def requires_grad_(self, requires_grad=True):
        if requires_grad and not is_float_dtype(self.data.dtype):
            raise TypeError(
                f"only floating-point tensors can require gradients, got dtype {self.data.dtype}"
            )
        if not requires_grad and self.grad_fn is not None:
            raise RuntimeError("requires_grad can only be switched off on a leaf tensor; use .detach()")
        self.requires_grad = bool(requires_grad)
        return self

    # ----------------------------------------------------------------- attributes

    @property
    def shape(self):
        return tuple(self.data.shape)

    @property
    def ndim(self):
        return self.data.ndim

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def size(self):
        return self.data.size

    @property
    def device(self):
        return backend.device_of(self.data)

    @property
    def is_leaf(self):
        return self.grad_fn is None

    def __len__(self):
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __repr__(self):
        text = np.array2string(backend.to_numpy(self.data), separator=", ", prefix="tensor(")
        extras = []
        if self.dtype != DEFAULT_FLOAT:
            extras.append(f"dtype={self.dtype}")
        if self.device != "cpu":
            extras.append(f"device='{self.device}'")
        if self.grad_fn is not None:
            extras.append(f"grad_fn=<{type(self.grad_fn).__name__}>")
        elif self.requires_grad:
            extras.append("requires_grad=True")
        return "tensor(" + ", ".join([text] + extras) + ")"

    # ----------------------------------------------------------------- Python and NumPy protocols

    # `==` returns a Tensor, so equality can't define the hash: hash by identity, as PyTorch.
    __hash__ = object.__hash__

    def __bool__(self):
        if self.data.size != 1:
            raise RuntimeError(
                f"the truth value of a tensor with {self.data.size} elements (shape {self.shape}) is "
                "ambiguous; use .any() / .all() on its data, or compare one element"
            )
        return bool(self.data.reshape(()).item())

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __array__(self, dtype=None, copy=None):
        """``np.asarray(t)``: the data as a NumPy array (copied from a GPU)."""
        array = backend.to_numpy(self.data)
        if dtype is not None and array.dtype != dtype:
            array = array.astype(dtype)
        return array.copy() if copy else array

    def __eq__(self, other):
        return _F().compare("eq", self, other)

    def __ne__(self, other):
        return _F().compare("ne", self, other)

    def __lt__(self, other):
        return _F().compare("lt", self, other)

    def __le__(self, other):
        return _F().compare("le", self, other)

    def __gt__(self, other):
        return _F().compare("gt", self, other)

    def __ge__(self, other):
        return _F().compare("ge", self, other)

    # ----------------------------------------------------------------- conversion

    def numpy(self):
        """A NumPy copy of the data, from any device."""
        return backend.to_numpy(self.data)

    def item(self):
        if self.data.size != 1:
            raise ValueError(f"item() needs a tensor with one element, got shape {self.shape}")
        return self.data.reshape(()).item()

    def detach(self):
        """A new leaf sharing this tensor's data (and version counter), cut off from the graph."""
        detached = Tensor(self.data)
        detached._version_counter = self._version_counter
        return detached

    def to(self, device):
        """This tensor on ``device``; gradients flow back to the original device."""
        from .functional import to_device  # noqa: PLC0415 - functional imports this module

        return to_device(self, device)

    def cpu(self):
        return self.to("cpu")

    def cuda(self, device=None):
        return self.to("cuda" if device is None else f"cuda:{device}" if isinstance(device, int) else device)

    # ----------------------------------------------------------------- backward

    def backward(self, grad=None, retain_graph=False):
        """Accumulate d(self)/d(leaf) * grad into every leaf's ``.grad``.

        ``grad`` is the gradient of some scalar with respect to this tensor;
        it may be left out only when this tensor has a single element.
        """
        if not self.requires_grad:
            raise RuntimeError(
                "backward() was called on a tensor that does not require grad and has no grad_fn "
                "(make an input with requires_grad=True, outside no_grad)"
            )
        xp = backend.get_array_module(self.data)
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(
                    f"backward() without grad needs a tensor with one element, got shape {self.shape}; "
                    "pass grad= (an array of that shape) or reduce to a scalar first (e.g. .sum())"
                )
            grad = xp.ones_like(self.data)
        else:
            if isinstance(grad, Tensor):
                grad = grad.data
            if not backend.is_array(grad):
                grad = np.asarray(grad, dtype=self.dtype)
            if backend.device_of(grad) != self.device:
                raise RuntimeError(
                    f"backward(grad=...) got a gradient on {backend.device_of(grad)} "
                    f"for a tensor on {self.device}"
                )
            if tuple(grad.shape) != self.shape:
                raise ValueError(
                    f"backward(grad=...) got a gradient of shape {tuple(grad.shape)}, "
                    f"expected the tensor's shape {self.shape}"
                )
            if grad.dtype != self.dtype:
                grad = grad.astype(self.dtype)
        run_backward(self, grad, retain_graph)

    # ----------------------------------------------------------------- operators and methods
    # Each one is a Function in functional.py; imported late because functional imports Tensor.

    def __add__(self, other):
        return _F().add(self, other)

    def __radd__(self, other):
        return _F().add(other, self)

    def __sub__(self, other):
        return _F().sub(self, other)

    def __rsub__(self, other):
        return _F().sub(other, self)

    def __mul__(self, other):
        return _F().mul(self, other)

    def __rmul__(self, other):
        return _F().mul(other, self)

    def __truediv__(self, other):
        return _F().div(self, other)

    def __rtruediv__(self, other):
        return _F().div(other, self)

    # In place: the same Tensor object (and Parameter) keeps its identity and
    # its data array; only the values change, and the version counter says so.

    def __iadd__(self, other):
        return self._in_place("add", other)

    def __isub__(self, other):
        return self._in_place("sub", other)

    def __imul__(self, other):
        return self._in_place("mul", other)

    def __itruediv__(self, other):
        return self._in_place("div", other)

    def add_(self, other):
        return self._in_place("add", other)

    def sub_(self, other):
        return self._in_place("sub", other)

    def mul_(self, other):
        return self._in_place("mul", other)

    def div_(self, other):
        return self._in_place("div", other)

    def zero_(self):
        """Set every element to 0, in place."""
        return self.fill_(0)

    def fill_(self, value):
        """Set every element to ``value``, in place (a leaf that requires grad only under no_grad)."""
        if isinstance(value, bool) or not isinstance(value, numbers.Number):
            raise TypeError(f"fill_: value must be a number, got {type(value).__name__}")
        self._check_in_place_allowed("fill_")
        if self.requires_grad and is_grad_enabled():
            # The old values no longer matter: the tensor becomes a constant.
            self.grad_fn, self.requires_grad = None, False
        self.data[...] = value
        self._bump_version()
        return self

    def _check_in_place_allowed(self, name):
        if self.is_leaf and self.requires_grad and is_grad_enabled():
            raise RuntimeError(
                f"{name}: a leaf tensor that requires grad (e.g. a Parameter) is being changed in place "
                "while gradients are recorded; do it inside `with ma.no_grad():`"
            )

    def _in_place(self, operation, other):
        """``self <operation>= other``: the out-of-place op's result, written into ``self.data``."""
        name = {"add": "+=", "sub": "-=", "mul": "*=", "div": "/="}[operation]
        self._check_in_place_allowed(name)
        operator = getattr(_F(), operation)
        records = is_grad_enabled() and (self.requires_grad or (isinstance(other, Tensor) and other.requires_grad))
        if not records:
            result = operator(self, other)
        else:
            if self._is_view or self._version_counter.viewed:
                # Views and their base share memory: the graph of the other side would
                # still describe the old values. PyTorch rewrites it; minialex refuses.
                relation = "a view of another tensor's" if self._is_view else "viewed by another tensor through its"
                raise RuntimeError(
                    f"{name}: this tensor is {relation} data (reshape, transpose or indexing); changing it "
                    "in place while gradients are recorded is not supported: use the out-of-place "
                    "operator (t = t + u)"
                )
            # The graph so far, with a copy of the old values: a Function that saves its
            # input (mul, div) must keep the values from before this write.
            before = Tensor._from_function(self.data.copy(), self.grad_fn)
            before.requires_grad = self.requires_grad
            result = operator(before, before if other is self else other)
        if result.shape != self.shape:
            raise RuntimeError(
                f"{name}: the result has shape {result.shape}, which does not match the tensor's "
                f"shape {self.shape} (in-place results cannot broadcast to a larger shape)"
            )
        if not np.can_cast(result.dtype, self.dtype, casting="same_kind"):
            raise RuntimeError(f"{name}: the result type {result.dtype} can't be cast to the tensor's dtype {self.dtype}")
        self.data[...] = result.data
        self._bump_version()
        if records:
            self.grad_fn, self.requires_grad = result.grad_fn, True
        return self

    def __matmul__(self, other):
        return _F().matmul(self, other)

    def __rmatmul__(self, other):
        return _F().matmul(other, self)

    def __pow__(self, exponent):
        return _F().pow(self, exponent)

    def __neg__(self):
        return _F().neg(self)

    def __pos__(self):
        return self

    def __getitem__(self, key):
        return _F().getitem(self, key)

    def reshape(self, *shape):
        return _F().reshape(self, *shape)

    def transpose(self, *axes):
        return _F().transpose(self, *axes)

    @property
    def T(self):
        return _F().transpose(self)

    def flatten(self, start_dim=0):
        return _F().flatten(self, start_dim)

    def sum(self, axis=None, keepdims=False):
        return _F().sum(self, axis, keepdims)

    def mean(self, axis=None, keepdims=False):
        return _F().mean(self, axis, keepdims)

    def max(self, axis=None, keepdims=False):
        return _F().max(self, axis, keepdims)

    def exp(self):
        return _F().exp(self)

    def log(self):
        return _F().log(self)

    def relu(self):
        return _F().relu(self)


def _F():
    from . import functional  # noqa: PLC0415 - functional imports this module

    return functional


def tensor(data, dtype=None, requires_grad=False, device=None):
    """A new leaf Tensor holding a copy of ``data`` (scalar, list, NumPy or CuPy array).

    Python floats become float32; NumPy arrays keep their dtype. ``device`` is
    "cpu", "cuda" or "cuda:N"; None keeps the data's own device.
    """
    return Tensor(_to_array(data, dtype, device), requires_grad=requires_grad)


def as_tensor(value, like):
    """``value`` as a Tensor; Python scalars take ``like``'s dtype and device, as in PyTorch."""
    if isinstance(value, Tensor):
        return value
    if isinstance(value, numbers.Number) and not isinstance(value, bool | np.bool_):
        dtype = like.dtype
        if not is_float_dtype(dtype) and isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
            dtype = DEFAULT_FLOAT  # int tensor * 2.5 is a float32 tensor, never a truncation
        xp = backend.get_array_module(like.data)
        with _on_device_of(like.data):
            return Tensor(xp.asarray(value, dtype=dtype))
    if backend.is_array(value):
        return Tensor(value)
    return tensor(value)


class _on_device_of:
    """Make new CuPy arrays on the same GPU as ``array`` (a no-op on the CPU)."""

    def __init__(self, array):
        self._device = array.device if backend.is_cuda_array(array) else None

    def __enter__(self):
        if self._device is not None:
            self._device.__enter__()

    def __exit__(self, *exc_info):
        if self._device is not None:
            self._device.__exit__(*exc_info)
        return False


# --------------------------------------------------------------------------- Function


class Function:
    """One differentiable operation: ``forward`` on arrays, ``backward`` on gradients.

    Subclasses implement ``forward(*arrays) -> array`` (saving what backward
    needs on ``self``) and ``backward(grad_output) -> grad or tuple of grads``,
    one per input, None where an input needs none. A returned gradient may have
    the broadcast shape of the output: the engine sums it back to the input's
    shape. ``backward`` must not modify ``grad_output`` in place.
    ``self.needs_input_grad`` tells backward which inputs want a gradient.

    Saved values are checked before backward: a subclass lists in
    ``saved_inputs`` the positions of the inputs whose arrays its forward keeps
    (every input unless it says otherwise) and sets ``saves_output`` if it
    keeps its output. If one of them was changed in place between the forward
    and the backward (an optimiser step, ``+=``), backward raises instead of
    returning a gradient computed from the wrong values. A Function whose
    output may be a view of its input (reshape, transpose, indexing) sets
    ``may_return_view``, so that the two share one version counter.

    Call it as ``MyFunction()(tensor_a, tensor_b, **options)``.
    """

    saved_inputs = "all"
    saves_output = False
    may_return_view = False

    def __call__(self, *inputs, **options):
        tensors = [x if isinstance(x, Tensor) else Tensor(x) for x in inputs]
        _check_same_device(type(self).__name__, tensors)
        record = is_grad_enabled() and any(t.requires_grad for t in tensors)
        self.needs_input_grad = tuple(record and t.requires_grad for t in tensors)
        arrays = [t.data for t in tensors]
        profiler = _profiler  # read once: a profile in another thread may end meanwhile
        if profiler is None:
            output_array = self.forward(*arrays, **options)
        else:
            output_array = profiler.record_forward(self, arrays, options)
        if isinstance(output_array, np.generic):
            # NumPy gives a scalar, not a 0-d array, for a 0-d result: keep one array type (in-place ops write into it).
            output_array = np.asarray(output_array)
        output = Tensor._from_function(output_array, self if record else None)
        if self.may_return_view:
            _share_version_if_view(output, tensors)
        if record:
            self.inputs = tensors
            # The edges of the graph, fixed now: an in-place operation may later give an
            # input tensor a new grad_fn, but this Function used the value from before it.
            self.input_grad_fns = tuple(t.grad_fn for t in tensors)
            self._saved_versions = self._versions_to_check(tensors, output)
        return output

    def _versions_to_check(self, tensors, output):
        """(which, counter, version at forward) for every tensor whose array forward kept."""
        positions = range(len(tensors)) if self.saved_inputs == "all" else self.saved_inputs
        saved = [(i, tensors[i]._version_counter, tensors[i]._version_counter.value) for i in positions]
        if self.saves_output:
            saved.append(("output", output._version_counter, output._version_counter.value))
        return saved

    def _check_saved_versions(self):
        for which, counter, version in self._saved_versions:
            if counter.value != version:
                what = "its output" if which == "output" else f"input {which} {_describe(self.inputs[which])}"
                raise RuntimeError(
                    "one of the tensors needed for gradient computation has been modified by an "
                    f"in-place operation: {what} of {type(self).__name__} is at version {counter.value}; "
                    f"expected version {version} instead. Something changed it between the forward "
                    "and the backward (an in-place operator, or optimizer.step() before backward())"
                )

    def forward(self, *arrays):
        raise NotImplementedError

    def backward(self, grad_output):
        raise NotImplementedError

    def _release(self):
        """Drop the inputs and everything forward saved: the graph is freed."""
        self.__dict__.clear()
        self.inputs = None


def _describe(tensor):
    kind = "Parameter" if type(tensor).__name__ == "Parameter" else "Tensor"
    return f"({kind} of shape {tensor.shape}, {tensor.dtype})"


def _share_version_if_view(output, tensors):
    """Give ``output`` the version counter of the input whose memory it views, if any."""
    if getattr(output.data, "base", None) is None:
        return
    xp = backend.get_array_module(output.data)
    for tensor in tensors:
        if xp.may_share_memory(output.data, tensor.data):
            output._version_counter = tensor._version_counter
            output._version_counter.viewed = True
            output._is_view = True
            return


def _check_same_device(name, tensors):
    devices = {t.device for t in tensors}
    if len(devices) > 1:
        shown = ", ".join(f"{t.device} {t.shape}" for t in tensors)
        raise RuntimeError(
            f"{name}: all tensors must be on one device, got tensors on {sorted(devices)} ({shown}); "
            "move them with .to(device)"
        )


# --------------------------------------------------------------------------- the graph walk


def sum_to(grad, shape):
    """Sum a broadcast gradient back to ``shape`` (the inverse of broadcasting)."""
    if tuple(grad.shape) == tuple(shape):
        return grad
    extra = grad.ndim - len(shape)
    axes = tuple(range(extra)) + tuple(
        extra + i for i, size in enumerate(shape) if size == 1 and grad.shape[extra + i] != 1
    )
    grad = grad.sum(axis=axes, keepdims=True)
    return grad.reshape(shape)


def _topological_order(root):
    """Functions reachable from ``root``, each before the functions of its inputs.

    Depth-first with an explicit stack (no recursion, so a 10,000-op chain is
    fine); a function joins the post-order only after everything below it has,
    and the reverse of the post-order is a topological order. A function is
    marked visited when it is expanded, not when it is pushed: pushed early
    by one consumer, it may be reached again deeper below another consumer,
    and it must then come after that one too (``h + h * h``).
    """
    post_order = []
    expanded = set()
    stack = [(root, False)]
    while stack:
        function, children_done = stack.pop()
        if children_done:
            post_order.append(function)
            continue
        if function in expanded:
            continue
        if function.inputs is None:
            raise RuntimeError(
                "Trying to backward through the graph a second time: its saved values were "
                "freed by the first backward (call backward(retain_graph=True) the first time "
                "if you need to go through it twice)"
            )
        expanded.add(function)
        stack.append((function, True))
        for parent in function.input_grad_fns:
            if parent is not None and parent not in expanded:
                stack.append((parent, False))
    post_order.reverse()
    return post_order


def run_backward(output, grad, retain_graph=False):
    """Push ``grad`` (the gradient w.r.t. ``output``) back to every leaf."""
    # Arrays already handed to a leaf's .grad in this pass (plus the caller's
    # seed): a leaf must own its gradient, so a shared array is copied first.
    stored = {id(grad)}
    if output.grad_fn is None:
        _accumulate(output, grad, stored)
        return
    pending = {output.grad_fn: grad}  # function -> gradient of its output, summed so far
    for function in _topological_order(output.grad_fn):
        grad_output = pending.pop(function, None)
        if grad_output is None:  # no gradient reached it (e.g. only through inputs that need none)
            if not retain_graph:
                function._release()
            continue
        function._check_saved_versions()
        profiler = _profiler  # read once: a profile in another thread may end meanwhile
        if profiler is None:
            input_grads = function.backward(grad_output)
        else:
            input_grads = profiler.record_backward(function, grad_output)
        if not isinstance(input_grads, tuple):
            input_grads = (input_grads,)
        edges = zip(function.inputs, function.input_grad_fns, function.needs_input_grad, input_grads)
        for tensor, parent, needs_grad, input_grad in edges:
            if input_grad is None or not needs_grad:
                continue
            input_grad = sum_to(input_grad, tensor.shape)
            if input_grad.dtype != tensor.dtype:
                input_grad = input_grad.astype(tensor.dtype)
            if parent is None:
                _accumulate(tensor, input_grad, stored)
            elif parent in pending:
                pending[parent] = pending[parent] + input_grad
            else:
                pending[parent] = input_grad
        if not retain_graph:
            function._release()


def _accumulate(leaf, grad, stored):
    if leaf.grad is None:
        # A view (broadcast, reshape) or an array already given to another leaf
        # would alias: copy so each leaf's .grad is its own array.
        if grad.base is not None or id(grad) in stored:
            grad = grad.copy()
        stored.add(id(grad))
        leaf.grad = Tensor(grad)
    else:
        leaf.grad = Tensor(leaf.grad.data + grad)
