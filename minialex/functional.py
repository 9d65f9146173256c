"""Differentiable operations: autograd Functions and the ``F.*`` functions that call them.

Each Function's ``forward`` computes on arrays (NumPy or CuPy alike, through
the array module of its inputs) and keeps what ``backward`` needs;
``backward`` turns the gradient of the output into gradients of the inputs.
Layer maths lives in ``minialex.kernels``; this module validates arguments at
the boundary, records the graph and calls the kernels.

Import it as ``import minialex.functional as F``.
"""

import numbers

import numpy as np

from . import backend
from .autograd import (
    DEFAULT_FLOAT,
    Function,
    Tensor,
    as_tensor,
    is_float_dtype,
)
from .kernels import activation, softmax_xent

# --------------------------------------------------------------------------- helpers


def _float_array(array):
    """Promote an integer or boolean array to the default float (never truncate floats)."""
    if is_float_dtype(array.dtype):
        return array
    return array.astype(DEFAULT_FLOAT)


def _check_tensor(name, value):
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a minialex Tensor, got {type(value).__name__}")
    return value


def _binary_operands(name, a, b):
    """Both operands as Tensors (scalars take the other's dtype), broadcast-checked.

    An integer tensor meeting a float tensor becomes that float type (as in
    PyTorch; NumPy would make int64 + float32 a float64).
    """
    if not isinstance(a, Tensor) and not isinstance(b, Tensor):
        raise TypeError(f"{name}: at least one operand must be a Tensor")
    a = as_tensor(a, like=b) if not isinstance(a, Tensor) else a
    b = as_tensor(b, like=a) if not isinstance(b, Tensor) else b
    if is_float_dtype(a.dtype) and not is_float_dtype(b.dtype):
        b = _cast(b, a.dtype)
    elif is_float_dtype(b.dtype) and not is_float_dtype(a.dtype):
        a = _cast(a, b.dtype)
    try:
        np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ValueError(
            f"{name}: shapes {a.shape} and {b.shape} cannot be broadcast together "
            "(trailing dimensions must be equal or 1)"
        ) from None
    return a, b


def _normalize_axis(axis, ndim, name="axis"):
    """``axis`` (None, int or tuple) as a sorted tuple of non-negative axes."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, numbers.Integral) else tuple(axis)
    normalized = []
    for a in axes:
        if not isinstance(a, numbers.Integral) or not -ndim <= a < (ndim or 1):
            raise ValueError(f"{name} {axis!r} is out of range for a tensor with {ndim} dimension(s)")
        normalized.append(int(a) % (ndim or 1))
    if len(set(normalized)) != len(normalized):
        raise ValueError(f"{name} {axis!r} repeats an axis")
    return tuple(sorted(normalized))


# --------------------------------------------------------------------------- device


class ToDevice(Function):
    def forward(self, x, device):
        self.source = backend.device_of(x)
        return backend.to_device(x, device)

    def backward(self, grad_output):
        return backend.to_device(grad_output, self.source)


def to_device(x, device):
    """``x`` on ``device`` ("cpu", "cuda", "cuda:N"); ``x`` itself if already there."""
    device = backend.parse_device(device)
    if device == x.device:
        return x
    return ToDevice()(x, device=device)


# --------------------------------------------------------------------------- arithmetic


class Add(Function):
    def forward(self, a, b):
        return a + b

    def backward(self, grad_output):
        return grad_output, grad_output


class Sub(Function):
    def forward(self, a, b):
        return a - b

    def backward(self, grad_output):
        return grad_output, -grad_output


class Mul(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, grad_output):
        grad_a = grad_output * self.b if self.needs_input_grad[0] else None
        grad_b = grad_output * self.a if self.needs_input_grad[1] else None
        return grad_a, grad_b


class Div(Function):
    def forward(self, a, b):
        a, b = _float_array(a), _float_array(b)
        self.a, self.b = a, b
        return a / b

    def backward(self, grad_output):
        grad_a = grad_output / self.b if self.needs_input_grad[0] else None
        grad_b = -grad_output * self.a / (self.b * self.b) if self.needs_input_grad[1] else None
        return grad_a, grad_b


class Neg(Function):
    def forward(self, x):
        return -x

    def backward(self, grad_output):
        return -grad_output


class Pow(Function):
    """x ** p for a scalar p; d/dx = p * x ** (p - 1)."""

    def forward(self, x, exponent):
        if not isinstance(exponent, numbers.Integral):
            x = _float_array(x)
        self.x, self.exponent = x, exponent
        return x**exponent

    def backward(self, grad_output):
        p = self.exponent
        return grad_output * (p * self.x ** (p - 1))


def add(a, b):
    a, b = _binary_operands("add", a, b)
    return Add()(a, b)


def sub(a, b):
    a, b = _binary_operands("sub", a, b)
    return Sub()(a, b)


def mul(a, b):
    a, b = _binary_operands("mul", a, b)
    return Mul()(a, b)


def div(a, b):
    a, b = _binary_operands("div", a, b)
    return Div()(a, b)


def neg(x):
    return Neg()(_check_tensor("x", x))


def pow(x, exponent):  # noqa: A001 - the operator's name
    """``x ** exponent`` with a scalar (Python int or float) exponent."""
    _check_tensor("x", x)
    if isinstance(exponent, Tensor | bool) or not isinstance(exponent, numbers.Real):
        raise TypeError(
            f"pow: the exponent must be a Python int or float, got {type(exponent).__name__}"
        )
    return Pow()(x, exponent=exponent)


class MatMul(Function):
    """a @ b with NumPy's rules (1-D operands promoted, batch dims broadcast).

    grad_a = grad @ b^T, grad_b = a^T @ grad (batch dims summed back by the engine).
    """

    def forward(self, a, b):
        self.a, self.b = a, b
        return a @ b

    def backward(self, grad_output):
        a, b, grad = self.a, self.b, grad_output
        # Work with matrices: a 1-D a is a row (1, k), a 1-D b a column (k, 1).
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        if a.ndim == 1 and b.ndim == 1:
            grad = grad.reshape(1, 1)
        elif a.ndim == 1:
            grad = grad[..., None, :]
        elif b.ndim == 1:
            grad = grad[..., :, None]
        grad_a = grad_b = None
        if self.needs_input_grad[0]:
            grad_a = grad @ b2.swapaxes(-1, -2)
            if a.ndim == 1:
                grad_a = grad_a[..., 0, :]
        if self.needs_input_grad[1]:
            grad_b = a2.swapaxes(-1, -2) @ grad
            if b.ndim == 1:
                grad_b = grad_b[..., :, 0]
        return grad_a, grad_b


def matmul(a, b):
    if not isinstance(a, Tensor):
        a = as_tensor(a, like=b)
    if not isinstance(b, Tensor):
        b = as_tensor(b, like=a)
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul: operands must have at least 1 dimension, got shapes {a.shape} and {b.shape}")
    inner_b = b.shape[0] if b.ndim == 1 else b.shape[-2]
    if a.shape[-1] != inner_b:
        raise ValueError(
            f"matmul: shapes {a.shape} and {b.shape} do not align: "
            f"a's last dimension ({a.shape[-1]}) must equal b's "
            f"{'first' if b.ndim == 1 else 'second-to-last'} dimension ({inner_b})"
        )
    try:
        np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except ValueError:
        raise ValueError(f"matmul: batch dimensions of {a.shape} and {b.shape} cannot be broadcast") from None
    if a.dtype != b.dtype:
        common = np.result_type(a.dtype, b.dtype)
        a, b = a if a.dtype == common else _cast(a, common), b if b.dtype == common else _cast(b, common)
    return MatMul()(a, b)


class Cast(Function):
    def forward(self, x, dtype):
        self.source = x.dtype
        return x.astype(dtype)

    def backward(self, grad_output):
        return grad_output.astype(self.source)


def _cast(x, dtype):
    return Cast()(x, dtype=dtype)


# --------------------------------------------------------------------------- elementwise


class Exp(Function):
    def forward(self, x):
        self.out = backend.get_array_module(x).exp(x)
        return self.out

    def backward(self, grad_output):
        return grad_output * self.out


class Log(Function):
    def forward(self, x):
        self.x = x
        return backend.get_array_module(x).log(x)

    def backward(self, grad_output):
        return grad_output / self.x


def exp(x):
    _check_tensor("x", x)
    if not is_float_dtype(x.dtype):
        x = _cast(x, DEFAULT_FLOAT)
    return Exp()(x)


def log(x):
    _check_tensor("x", x)
    if not is_float_dtype(x.dtype):
        x = _cast(x, DEFAULT_FLOAT)
    return Log()(x)


class ReLU(Function):
    def forward(self, x):
        out, self.cache = activation.relu_forward(x)
        return out

    def backward(self, grad_output):
        return activation.relu_backward(grad_output, self.cache)


def relu(x):
    """max(x, 0); the gradient is 0 at x == 0."""
    _check_tensor("x", x)
    return ReLU()(x)


# --------------------------------------------------------------------------- reductions


def _expand_reduced(grad, axes, shape):
    """Broadcast a reduced gradient back over the axes that were reduced."""
    xp = backend.get_array_module(grad)
    keep_shape = tuple(1 if i in axes else n for i, n in enumerate(shape))
    return xp.broadcast_to(grad.reshape(keep_shape), shape)


class Sum(Function):
    def forward(self, x, axes, keepdims):
        self.axes, self.shape = axes, x.shape
        return x.sum(axis=axes, keepdims=keepdims)

    def backward(self, grad_output):
        return _expand_reduced(grad_output, self.axes, self.shape)


class Mean(Function):
    def forward(self, x, axes, keepdims):
        self.axes, self.shape = axes, x.shape
        self.count = int(np.prod([x.shape[a] for a in axes]))
        return x.mean(axis=axes, keepdims=keepdims)

    def backward(self, grad_output):
        return _expand_reduced(grad_output / self.count, self.axes, self.shape)


class Max(Function):
    """The maximum over ``axes``; its gradient is shared equally by tied maxima."""

    def forward(self, x, axes, keepdims):
        self.axes, self.x = axes, x
        self.out = x.max(axis=axes, keepdims=True)
        return self.out if keepdims else self.out.reshape([n for i, n in enumerate(x.shape) if i not in axes])

    def backward(self, grad_output):
        is_max = self.x == self.out
        share = is_max / is_max.sum(axis=self.axes, keepdims=True)
        return _expand_reduced(grad_output, self.axes, self.x.shape) * share


def sum(x, axis=None, keepdims=False):  # noqa: A001 - Tensor.sum's name
    _check_tensor("x", x)
    return Sum()(x, axes=_normalize_axis(axis, x.ndim), keepdims=keepdims)


def mean(x, axis=None, keepdims=False):
    _check_tensor("x", x)
    axes = _normalize_axis(axis, x.ndim)
    if not is_float_dtype(x.dtype):
        x = _cast(x, DEFAULT_FLOAT)
    return Mean()(x, axes=axes, keepdims=keepdims)


def max(x, axis=None, keepdims=False):  # noqa: A001 - Tensor.max's name
    _check_tensor("x", x)
    if x.size == 0:
        raise ValueError(f"max of an empty tensor (shape {x.shape}) is undefined")
    return Max()(x, axes=_normalize_axis(axis, x.ndim), keepdims=keepdims)


# --------------------------------------------------------------------------- shapes


class Reshape(Function):
    def forward(self, x, shape):
        self.shape = x.shape
        return x.reshape(shape)

    def backward(self, grad_output):
        return grad_output.reshape(self.shape)


class Transpose(Function):
    def forward(self, x, axes):
        self.inverse = tuple(np.argsort(axes))
        return x.transpose(axes)

    def backward(self, grad_output):
        return grad_output.transpose(self.inverse)


class GetItem(Function):
    """x[key]; the gradient lands on the selected elements (repeats add up)."""

    def forward(self, x, key):
        self.key, self.shape, self.dtype = key, x.shape, x.dtype
        return x[key]

    def backward(self, grad_output):
        xp = backend.get_array_module(grad_output)
        grad = xp.zeros(self.shape, dtype=grad_output.dtype)
        if _is_basic_index(self.key):
            grad[self.key] = grad_output  # a basic index selects each element at most once
        else:
            backend.scatter_add(grad, self.key, grad_output)
        return grad


def _shape_argument(shape):
    if len(shape) == 1 and isinstance(shape[0], tuple | list):
        shape = tuple(shape[0])
    for n in shape:
        if isinstance(n, bool) or not isinstance(n, numbers.Integral):
            raise TypeError(f"shape entries must be integers, got {shape!r}")
    return tuple(int(n) for n in shape)


def reshape(x, *shape):
    """``x`` with a new shape of the same number of elements (one entry may be -1)."""
    _check_tensor("x", x)
    shape = _shape_argument(shape)
    known = int(np.prod([n for n in shape if n != -1]))
    if shape.count(-1) > 1 or any(n < -1 for n in shape):
        valid = False
    elif -1 in shape:
        valid = known != 0 and x.size % known == 0
    else:
        valid = known == x.size
    if not valid:
        raise ValueError(f"cannot reshape a tensor of shape {x.shape} ({x.size} elements) into shape {shape}")
    return Reshape()(x, shape=shape)


def transpose(x, *axes):
    """Permute the axes (reverse them when none are given), like ``ndarray.transpose``."""
    _check_tensor("x", x)
    axes = _shape_argument(axes) if axes else tuple(reversed(range(x.ndim)))
    if sorted(a % x.ndim if x.ndim else a for a in axes) != list(range(x.ndim)) or len(axes) != x.ndim:
        raise ValueError(f"transpose: axes {axes} are not a permutation of the {x.ndim} axes of shape {x.shape}")
    return Transpose()(x, axes=tuple(a % x.ndim for a in axes))


def flatten(x, start_dim=1):
    """Merge the dimensions from ``start_dim`` on into one (as torch.flatten(x, start_dim))."""
    _check_tensor("x", x)
    if x.ndim == 0:
        return reshape(x, 1)
    if not isinstance(start_dim, numbers.Integral) or not -x.ndim <= start_dim < x.ndim:
        raise ValueError(f"flatten: start_dim {start_dim!r} is out of range for shape {x.shape}")
    start_dim %= x.ndim
    return reshape(x, *x.shape[:start_dim], int(np.prod(x.shape[start_dim:])))


def _is_basic_index(key):
    parts = key if isinstance(key, tuple) else (key,)
    return all(
        p is None or p is Ellipsis or isinstance(p, slice) or (isinstance(p, numbers.Integral) and not isinstance(p, bool))
        for p in parts
    )


def getitem(x, key):
    """``x[key]``: basic indexing (ints, slices, None, ...) and integer/boolean arrays."""
    _check_tensor("x", x)
    parts = key if isinstance(key, tuple) else (key,)
    converted = []
    for part in parts:
        if isinstance(part, Tensor):
            part = part.data
        elif isinstance(part, list):
            part = np.asarray(part)
        if backend.is_array(part) and backend.device_of(part) != x.device:
            part = backend.to_device(part, x.device)
        converted.append(part)
    key = tuple(converted) if isinstance(key, tuple) else converted[0]
    try:
        x.data[key]  # let NumPy judge the index once, and say clearly what was wrong
    except (IndexError, TypeError, ValueError) as error:
        raise IndexError(f"index {key!r} is invalid for a tensor of shape {x.shape}: {error}") from None
    return GetItem()(x, key=key)


# --------------------------------------------------------------------------- softmax


class Softmax(Function):
    def forward(self, x, axis):
        self.axis = axis
        self.out = softmax_xent.softmax(x, axis)
        return self.out

    def backward(self, grad_output):
        return softmax_xent.softmax_backward(grad_output, self.out, self.axis)


class LogSoftmax(Function):
    def forward(self, x, axis):
        self.axis = axis
        self.out = softmax_xent.log_softmax(x, axis)
        return self.out

    def backward(self, grad_output):
        return softmax_xent.log_softmax_backward(grad_output, self.out, self.axis)


def _softmax_input(name, x, axis):
    _check_tensor("x", x)
    if x.ndim == 0:
        raise ValueError(f"{name}: x must have at least one dimension, got a 0-d tensor")
    (axis,) = _normalize_axis(axis, x.ndim)
    if not is_float_dtype(x.dtype):
        x = _cast(x, DEFAULT_FLOAT)
    return x, axis


def softmax(x, axis=-1):
    """exp(x - max) / sum(exp(x - max)) along ``axis``: no overflow for large logits."""
    x, axis = _softmax_input("softmax", x, axis)
    return Softmax()(x, axis=axis)


def log_softmax(x, axis=-1):
    """x - logsumexp(x) along ``axis``, computed stably."""
    x, axis = _softmax_input("log_softmax", x, axis)
    return LogSoftmax()(x, axis=axis)
