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

from . import amp, backend
from .autograd import (
    DEFAULT_FLOAT,
    Function,
    Tensor,
    as_tensor,
    is_float_dtype,
)
from .kernels import activation, conv, lrn, pool, softmax_xent
from .kernels import dropout as dropout_kernels
from .kernels import linear as linear_kernels

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
    """Both operands as Tensors (scalars take the other's dtype), promoted and broadcast-checked."""
    if not isinstance(a, Tensor) and not isinstance(b, Tensor):
        raise TypeError(f"{name}: at least one operand must be a Tensor")
    a = as_tensor(a, like=b) if not isinstance(a, Tensor) else a
    b = as_tensor(b, like=a) if not isinstance(b, Tensor) else b
    a, b = _promoted(a, b)
    try:
        np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ValueError(
            f"{name}: shapes {a.shape} and {b.shape} cannot be broadcast together "
            "(trailing dimensions must be equal or 1)"
        ) from None
    return a, b


# The dtypes autocast may cast: float64 (asked for on purpose) and integers are left alone, as in PyTorch.
AUTOCAST_ELIGIBLE = (np.dtype(np.float16), np.dtype(np.float32))


def _autocast(op, *tensors):
    """``tensors`` cast to the dtype autocast runs ``op`` in (see minialex/amp.py), as PyTorch's autocast.

    None stays None. The cast is a recorded op: a float32 parameter used in
    float16 gets its gradient back in float32.
    """
    dtype = amp.autocast_dtype_for(op)
    if dtype is None:
        return tensors
    return tuple(
        _cast(t, dtype) if isinstance(t, Tensor) and t.dtype in AUTOCAST_ELIGIBLE and t.dtype != dtype else t
        for t in tensors
    )


def _promoted(a, b):
    """An integer tensor meeting a float one takes its float type (PyTorch's rule; NumPy
    would make int64 + float32 a float64). Other pairs keep NumPy's promotion."""
    if is_float_dtype(a.dtype) and not is_float_dtype(b.dtype):
        b = _cast(b, a.dtype)
    elif is_float_dtype(b.dtype) and not is_float_dtype(a.dtype):
        a = _cast(a, b.dtype)
    elif a.dtype != b.dtype:
        common = np.result_type(a.dtype, b.dtype)
        a = a if a.dtype == common else _cast(a, common)
        b = b if b.dtype == common else _cast(b, common)
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
    saved_inputs = ()

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
    saved_inputs = ()

    def forward(self, a, b):
        return a + b

    def backward(self, grad_output):
        return grad_output, grad_output


class Sub(Function):
    saved_inputs = ()

    def forward(self, a, b):
        return a - b

    def backward(self, grad_output):
        return grad_output, -grad_output


class Mul(Function):
    saved_inputs = (0, 1)

    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, grad_output):
        grad_a = grad_output * self.b if self.needs_input_grad[0] else None
        grad_b = grad_output * self.a if self.needs_input_grad[1] else None
        return grad_a, grad_b


class Div(Function):
    saved_inputs = (0, 1)

    def forward(self, a, b):
        a, b = _float_array(a), _float_array(b)
        self.a, self.b = a, b
        return a / b

    def backward(self, grad_output):
        grad_a = grad_output / self.b if self.needs_input_grad[0] else None
        grad_b = -grad_output * self.a / (self.b * self.b) if self.needs_input_grad[1] else None
        return grad_a, grad_b


class Neg(Function):
    saved_inputs = ()

    def forward(self, x):
        return -x

    def backward(self, grad_output):
        return -grad_output


class Pow(Function):
    """x ** p for a scalar p; d/dx = p * x ** (p - 1)."""

    saved_inputs = (0,)

    def forward(self, x, exponent):
        if not isinstance(exponent, numbers.Integral):
            x = _float_array(x)
        self.x, self.exponent = x, exponent
        return x**exponent

    def backward(self, grad_output):
        p = self.exponent
        if p == 0:  # x ** 0 is constant; p * x ** -1 would make 0 * inf = nan at x == 0
            return backend.get_array_module(grad_output).zeros_like(grad_output)
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
    (x,) = _autocast("pow", x)
    return Pow()(x, exponent=exponent)


class MatMul(Function):
    """a @ b with NumPy's rules (1-D operands promoted, batch dims broadcast).

    grad_a = grad @ b^T, grad_b = a^T @ grad (batch dims summed back by the engine).
    """

    saved_inputs = (0, 1)

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
    a, b = _autocast("matmul", *_promoted(a, b))
    return MatMul()(a, b)


class Cast(Function):
    saved_inputs = ()

    def forward(self, x, dtype):
        self.source = x.dtype
        return x.astype(dtype)

    def backward(self, grad_output):
        return grad_output.astype(self.source)


def _cast(x, dtype):
    return Cast()(x, dtype=dtype)


# --------------------------------------------------------------------------- comparisons

_COMPARISONS = {"eq": "equal", "ne": "not_equal", "lt": "less", "le": "less_equal",
                "gt": "greater", "ge": "greater_equal"}


def compare(operation, a, b):
    """Elementwise ``a <op> b`` (op: eq, ne, lt, le, gt, ge) as a boolean Tensor, outside the graph.

    ``a`` is a Tensor; ``b`` a Tensor, an array or a Python number, broadcast
    as NumPy does. Comparisons have no gradient, so nothing is recorded.
    """
    xp = backend.get_array_module(a.data)
    if isinstance(b, Tensor):
        _check_same_devices_for(operation, a, b)
        other = b.data
    elif isinstance(b, numbers.Number):
        other = b
    elif backend.is_array(b) or isinstance(b, list | tuple):
        other = backend.to_device(xp.asarray(b) if not backend.is_array(b) else b, a.device)
    else:
        return NotImplemented  # Python then tries the other side, or falls back to identity for ==/!=
    other_shape = tuple(getattr(other, "shape", ()))
    try:
        np.broadcast_shapes(a.shape, other_shape)
    except ValueError:
        raise ValueError(f"{operation}: shapes {a.shape} and {other_shape} cannot be broadcast together") from None
    return Tensor(getattr(xp, _COMPARISONS[operation])(a.data, other))


def _check_same_devices_for(operation, a, b):
    if a.device != b.device:
        raise RuntimeError(f"{operation}: tensors on {a.device} and {b.device}; move them with .to(device)")


# --------------------------------------------------------------------------- elementwise


class Exp(Function):
    saved_inputs = ()
    saves_output = True

    def forward(self, x):
        self.out = backend.get_array_module(x).exp(x)
        return self.out

    def backward(self, grad_output):
        return grad_output * self.out


class Log(Function):
    saved_inputs = (0,)

    def forward(self, x):
        self.x = x
        return backend.get_array_module(x).log(x)

    def backward(self, grad_output):
        return grad_output / self.x


def exp(x):
    _check_tensor("x", x)
    if not is_float_dtype(x.dtype):
        x = _cast(x, DEFAULT_FLOAT)
    (x,) = _autocast("exp", x)
    return Exp()(x)


def log(x):
    _check_tensor("x", x)
    if not is_float_dtype(x.dtype):
        x = _cast(x, DEFAULT_FLOAT)
    (x,) = _autocast("log", x)
    return Log()(x)


class ReLU(Function):
    saved_inputs = ()  # only the mask x > 0

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
    saved_inputs = ()

    def forward(self, x, axes, keepdims):
        self.axes, self.shape = axes, x.shape
        return x.sum(axis=axes, keepdims=keepdims)

    def backward(self, grad_output):
        return _expand_reduced(grad_output, self.axes, self.shape)


class Mean(Function):
    saved_inputs = ()

    def forward(self, x, axes, keepdims):
        self.axes, self.shape = axes, x.shape
        self.count = int(np.prod([x.shape[a] for a in axes]))
        return x.mean(axis=axes, keepdims=keepdims)

    def backward(self, grad_output):
        return _expand_reduced(grad_output / self.count, self.axes, self.shape)


class Max(Function):
    """The maximum over ``axes``; its gradient is shared equally by tied maxima."""

    saved_inputs = (0,)
    saves_output = True

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
    (x,) = _autocast("sum", x)
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
    saved_inputs = ()
    may_return_view = True

    def forward(self, x, shape):
        self.shape = x.shape
        return x.reshape(shape)

    def backward(self, grad_output):
        return grad_output.reshape(self.shape)


class Transpose(Function):
    saved_inputs = ()
    may_return_view = True

    def forward(self, x, axes):
        self.inverse = tuple(np.argsort(axes))
        return x.transpose(axes)

    def backward(self, grad_output):
        return grad_output.transpose(self.inverse)


class GetItem(Function):
    """x[key]; the gradient lands on the selected elements (repeats add up)."""

    saved_inputs = ()
    may_return_view = True

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
    saved_inputs = ()
    saves_output = True

    def forward(self, x, axis):
        self.axis = axis
        self.out = softmax_xent.softmax(x, axis)
        return self.out

    def backward(self, grad_output):
        return softmax_xent.softmax_backward(grad_output, self.out, self.axis)


class LogSoftmax(Function):
    saved_inputs = ()
    saves_output = True

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
    (x,) = _autocast("softmax", x)
    return Softmax()(x, axis=axis)


def log_softmax(x, axis=-1):
    """x - logsumexp(x) along ``axis``, computed stably."""
    x, axis = _softmax_input("log_softmax", x, axis)
    (x,) = _autocast("log_softmax", x)
    return LogSoftmax()(x, axis=axis)


# --------------------------------------------------------------------------- layers: argument checks


def _pair(name, value, minimum):
    """An int or an (h, w) pair of ints >= ``minimum``, as a tuple."""
    pair = (value, value) if isinstance(value, numbers.Integral) else value
    if (
        not isinstance(pair, tuple | list)
        or len(pair) != 2
        or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in pair)
    ):
        raise TypeError(f"{name} must be an int or a pair of ints (h, w), got {value!r}")
    if any(v < minimum for v in pair):
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return int(pair[0]), int(pair[1])


def _check_float(name, t):
    if not is_float_dtype(t.dtype):
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")


def _check_same_dtype(function, **tensors):
    dtypes = {t.dtype for t in tensors.values() if t is not None}
    if len(dtypes) > 1:
        shown = ", ".join(f"{name} {t.dtype}" for name, t in tensors.items() if t is not None)
        raise TypeError(f"{function}: all tensors must have one dtype, got {shown}")


def _check_ndim(function, name, t, allowed):
    if t.ndim not in allowed:
        expected = " or ".join(f"{n}-D" for n in allowed)
        raise ValueError(f"{function}: {name} must be {expected}, got shape {t.shape}")


def _batched(x, ndim):
    """Give an unbatched input (one dimension short) a batch axis, as PyTorch accepts it."""
    return (reshape(x, 1, *x.shape), True) if x.ndim == ndim - 1 else (x, False)


# --------------------------------------------------------------------------- convolution


class Conv2d(Function):
    saved_inputs = (1,)  # the weight; x is copied into the columns

    def forward(self, x, weight, bias=None, stride=(1, 1), padding=(0, 0), groups=1):
        out, self.cache = conv.conv2d_forward(x, weight, bias, stride, padding, groups)
        return out

    def backward(self, grad_output):
        needs = self.needs_input_grad
        dx, dweight, dbias = conv.conv2d_backward(
            grad_output, self.cache, need_input_grad=needs[0], need_bias_grad=len(needs) > 2 and needs[2]
        )
        return (dx, dweight) if len(needs) == 2 else (dx, dweight, dbias)

    def _release(self):
        cache = self.__dict__.get("cache")
        if cache is not None:
            conv.release_columns(cache)  # the graph is freed: the next im2col may refill them
        super()._release()


def conv2d(x, weight, bias=None, stride=1, padding=0, groups=1):
    """2-D convolution (cross-correlation) as PyTorch: im2col + one GEMM over groups.

    x (N, C, H, W) or (C, H, W), weight (O, C // groups, kh, kw), bias (O,) -> (N, O, oh, ow).
    """
    _check_tensor("x", x)
    _check_tensor("weight", weight)
    _check_ndim("conv2d", "x", x, (3, 4))
    _check_ndim("conv2d", "weight", weight, (4,))
    _check_float("x", x)
    x, weight, bias = _autocast("conv2d", x, weight, bias)
    _check_same_dtype("conv2d", x=x, weight=weight, bias=bias)
    stride = _pair("stride", stride, 1)
    padding = _pair("padding", padding, 0)
    if isinstance(groups, bool) or not isinstance(groups, numbers.Integral) or groups < 1:
        raise ValueError(f"groups must be a positive int, got {groups!r}")
    x_batched, added_batch = _batched(x, 4)
    _, channels, height, width = x_batched.shape
    out_channels, channels_per_group, kh, kw = weight.shape
    if channels % groups:
        raise ValueError(f"conv2d: input channels ({channels}) must be divisible by groups ({groups})")
    if out_channels % groups:
        raise ValueError(f"conv2d: out channels of weight {weight.shape} ({out_channels}) must be divisible by groups ({groups})")
    if channels_per_group != channels // groups:
        raise ValueError(
            f"conv2d: weight {weight.shape} expects {channels_per_group * groups} input channels "
            f"with groups={groups}, but x {x.shape} has {channels}"
        )
    if bias is not None:
        _check_tensor("bias", bias)
        if bias.shape != (out_channels,):
            raise ValueError(f"conv2d: bias must have shape ({out_channels},), got {bias.shape}")
    padded = (height + 2 * padding[0], width + 2 * padding[1])
    if kh > padded[0] or kw > padded[1]:
        raise ValueError(
            f"conv2d: kernel {kh}x{kw} is larger than the padded input {padded[0]}x{padded[1]} "
            f"(x {x.shape}, padding {padding})"
        )
    inputs = (x_batched, weight) if bias is None else (x_batched, weight, bias)
    out = Conv2d()(*inputs, stride=stride, padding=padding, groups=int(groups))
    return reshape(out, *out.shape[1:]) if added_batch else out


# --------------------------------------------------------------------------- pooling and normalisation


class MaxPool2d(Function):
    saved_inputs = ()  # only the argmax

    def forward(self, x, kernel_size, stride, padding):
        out, self.cache = pool.max_pool2d_forward(x, kernel_size, stride, padding)
        return out

    def backward(self, grad_output):
        return pool.max_pool2d_backward(grad_output, self.cache)


def max_pool2d(x, kernel_size, stride=None, padding=0):
    """Max-pooling as PyTorch (ceil_mode=False); windows may overlap (AlexNet: 3, stride 2).

    x (N, C, H, W) or (C, H, W) -> (N, C, oh, ow), oh = (H + 2*pad - k) // stride + 1.
    """
    _check_tensor("x", x)
    _check_ndim("max_pool2d", "x", x, (3, 4))
    kernel_size = _pair("kernel_size", kernel_size, 1)
    stride = kernel_size if stride is None or stride == () or stride == [] else _pair("stride", stride, 1)
    padding = _pair("padding", padding, 0)
    if padding[0] > kernel_size[0] // 2 or padding[1] > kernel_size[1] // 2:
        raise ValueError(
            f"max_pool2d: padding {padding} must be at most half the kernel size {kernel_size}"
        )
    height, width = x.shape[-2:]
    if kernel_size[0] > height + 2 * padding[0] or kernel_size[1] > width + 2 * padding[1]:
        raise ValueError(
            f"max_pool2d: window {kernel_size} is larger than the padded input "
            f"{(height + 2 * padding[0], width + 2 * padding[1])} (x {x.shape}, padding {padding})"
        )
    x_batched, added_batch = _batched(x, 4)
    out = MaxPool2d()(x_batched, kernel_size=kernel_size, stride=stride, padding=padding)
    return reshape(out, *out.shape[1:]) if added_batch else out


class LocalResponseNorm(Function):
    saved_inputs = (0,)

    def forward(self, x, size, alpha, beta, k):
        out, self.cache = lrn.local_response_norm_forward(x, size, alpha, beta, k)
        return out

    def backward(self, grad_output):
        return lrn.local_response_norm_backward(grad_output, self.cache)


def local_response_norm(x, size, alpha=1e-4, beta=0.75, k=1.0):
    """Cross-channel LRN as PyTorch: b_c = a_c / (k + alpha/size * sum_window a_j^2) ** beta.

    The window spans size // 2 channels before c and (size - 1) // 2 after, zero-padded.
    x (N, C, ...) with at least 3 dimensions.
    """
    _check_tensor("x", x)
    if x.ndim < 3:
        raise ValueError(f"local_response_norm: x must have at least 3 dimensions (N, C, ...), got shape {x.shape}")
    _check_float("x", x)
    (x,) = _autocast("local_response_norm", x)
    if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
        raise ValueError(f"local_response_norm: size must be a positive int, got {size!r}")
    for name, value in (("alpha", alpha), ("beta", beta), ("k", k)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"local_response_norm: {name} must be a number, got {value!r}")
    if k <= 0 and alpha >= 0:
        raise ValueError(f"local_response_norm: k must be > 0 (the scale must stay positive), got {k!r}")
    return LocalResponseNorm()(x, size=int(size), alpha=float(alpha), beta=float(beta), k=float(k))


# --------------------------------------------------------------------------- dropout and linear


class Dropout(Function):
    saved_inputs = ()  # only the mask

    def forward(self, x, p):
        out, self.mask = dropout_kernels.dropout_forward(x, p)
        return out

    def backward(self, grad_output):
        return dropout_kernels.dropout_backward(grad_output, self.mask)


def dropout(x, p=0.5, training=True):
    """Inverted dropout: zero each element with probability p, scale the rest by 1/(1-p).

    The identity when ``training`` is False or p == 0.
    """
    _check_tensor("x", x)
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0 <= p < 1:
        raise ValueError(f"dropout: p must be a probability in [0, 1), got {p!r}")
    if not training or p == 0:
        return x
    _check_float("x", x)
    return Dropout()(x, p=float(p))


class Linear(Function):
    saved_inputs = (0, 1)

    def forward(self, x, weight, bias=None):
        out, self.cache = linear_kernels.linear_forward(x, weight, bias)
        return out

    def backward(self, grad_output):
        needs = self.needs_input_grad
        has_bias = len(needs) == 3
        dx, dweight, dbias = linear_kernels.linear_backward(
            grad_output, self.cache, needs[0], needs[1], has_bias and needs[2]
        )
        return (dx, dweight, dbias) if has_bias else (dx, dweight)


def linear(x, weight, bias=None):
    """x @ weight.T + bias as PyTorch: x (*, in), weight (out, in), bias (out,) -> (*, out)."""
    _check_tensor("x", x)
    _check_tensor("weight", weight)
    _check_ndim("linear", "weight", weight, (2,))
    _check_float("x", x)
    x, weight, bias = _autocast("linear", x, weight, bias)
    _check_same_dtype("linear", x=x, weight=weight, bias=bias)
    if x.ndim == 0 or x.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"linear: x's last dimension must equal weight's in_features {weight.shape[1]} "
            f"(weight {weight.shape}), got x of shape {x.shape}"
        )
    if bias is not None:
        _check_tensor("bias", bias)
        if bias.shape != (weight.shape[0],):
            raise ValueError(f"linear: bias must have shape ({weight.shape[0]},), got {bias.shape}")
        return Linear()(x, weight, bias)
    return Linear()(x, weight)


# --------------------------------------------------------------------------- loss


class CrossEntropy(Function):
    saved_inputs = ()  # log-probabilities, and a copy of the targets

    def forward(self, logits, target):
        loss, self.cache = softmax_xent.cross_entropy_forward(logits, target)
        return loss

    def backward(self, grad_output):
        return softmax_xent.cross_entropy_backward(grad_output, self.cache), None


def cross_entropy(logits, target):
    """Mean softmax cross-entropy of logits (N, C) against integer classes target (N,), as PyTorch."""
    _check_tensor("logits", logits)
    _check_ndim("cross_entropy", "logits", logits, (2,))
    _check_float("logits", logits)
    (logits,) = _autocast("cross_entropy", logits)
    target_array = target.data if isinstance(target, Tensor) else target
    if not backend.is_array(target_array):
        target_array = np.asarray(target_array)
    if target_array.dtype.kind not in "iu":
        raise TypeError(
            f"cross_entropy: target must hold integer class indices, got dtype {target_array.dtype}"
        )
    n, classes = logits.shape
    if tuple(target_array.shape) != (n,):
        raise ValueError(f"cross_entropy: target must have shape ({n},) for logits {logits.shape}, got {tuple(target_array.shape)}")
    if n == 0:
        raise ValueError("cross_entropy: logits has no rows (N == 0); the mean is undefined")
    # A copy of our own: the caller may reuse its label array before backward.
    target_array = backend.to_device(target_array, logits.device).copy()
    low, high = int(target_array.min()), int(target_array.max())
    if low < 0 or high >= classes:
        bad = low if low < 0 else high
        raise ValueError(f"cross_entropy: target class {bad} is out of range for {classes} classes (expected 0..{classes - 1})")
    return CrossEntropy()(logits, Tensor(target_array))
