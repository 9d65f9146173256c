"""Finite-difference gradient checking.

For every input x that requires grad and every element i, the central
difference

    numeric_i = (f(x + eps e_i) - f(x - eps e_i)) / (2 eps),   f = sum(fn(*inputs) * grad_output)

is compared with the analytic gradient that ``backward`` computes. With no
``grad_output`` it is all ones, i.e. f = fn(*inputs).sum(). Use float64: with
float32 the round-off of f swamps a step of 1e-6.
"""

import warnings

import numpy as np

from . import backend
from .autograd import Tensor, no_grad


class GradcheckError(AssertionError):
    """The analytic gradient of an input disagrees with finite differences."""


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, grad_output=None):
    """Check ``fn``'s gradients against central finite differences.

    ``inputs`` is a Tensor or a sequence of Tensors (other values are passed
    through untouched). Returns True, or raises GradcheckError naming the input,
    the index, and the analytic and numeric values of the worst mismatch,
    judged by |analytic - numeric| <= atol + rtol * |numeric|.
    """
    if isinstance(inputs, Tensor):
        inputs = (inputs,)
    inputs = tuple(inputs)
    checked = [i for i, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input requires grad; pass Tensors made with requires_grad=True")
    for i in checked:
        if inputs[i].dtype != np.float64:
            warnings.warn(
                f"gradcheck: input {i} is {inputs[i].dtype}; finite differences need float64 to be reliable",
                stacklevel=2,
            )

    # Analytic gradients, leaving the inputs' own .grad as they were.
    saved_grads = [inputs[i].grad for i in checked]
    for i in checked:
        inputs[i].grad = None
    try:
        output = fn(*inputs)
        if not isinstance(output, Tensor):
            raise TypeError(f"gradcheck: fn must return a Tensor, got {type(output).__name__}")
        xp = backend.get_array_module(output.data)
        if grad_output is None:
            weights = xp.ones_like(output.data)
        else:
            weights = grad_output.data if isinstance(grad_output, Tensor) else xp.asarray(grad_output)
            if tuple(weights.shape) != output.shape:
                raise ValueError(
                    f"gradcheck: grad_output has shape {tuple(weights.shape)}, expected the output's {output.shape}"
                )
            weights = weights.astype(output.dtype)
        if output.requires_grad:
            output.backward(weights)
        analytic = {}
        for i in checked:
            grad = inputs[i].grad
            analytic[i] = xp.zeros_like(inputs[i].data) if grad is None else grad.data
    finally:
        for i, grad in zip(checked, saved_grads):
            inputs[i].grad = grad

    def f():
        with no_grad():
            return float((fn(*inputs).data * weights).sum())

    worst = None  # (excess over tolerance, input, index, analytic, numeric)
    for i in checked:
        data = inputs[i].data
        numeric = np.empty(data.size)
        for j in range(data.size):
            index = np.unravel_index(j, data.shape)  # works for any strides, unlike a flat view
            original = data[index].item()
            try:
                data[index] = original + eps
                f_plus = f()
                data[index] = original - eps
                f_minus = f()
            finally:
                # Even when fn raises, the caller gets its input back exactly as it was.
                data[index] = original
            numeric[j] = (f_plus - f_minus) / (2 * eps)
        analytic_flat = backend.to_numpy(analytic[i]).reshape(-1).astype(np.float64)
        excess = np.abs(analytic_flat - numeric) - (atol + rtol * np.abs(numeric))
        if excess.size and excess.max() > 0:
            j = int(excess.argmax())
            if worst is None or excess[j] > worst[0]:
                index = tuple(int(k) for k in np.unravel_index(j, data.shape))
                worst = (excess[j], i, index, float(analytic_flat[j]), float(numeric[j]))
    if worst is not None:
        _, i, index, analytic_value, numeric_value = worst
        raise GradcheckError(
            f"gradcheck failed for input {i} (shape {inputs[i].shape}) at index {index}: "
            f"analytic {analytic_value!r}, numeric {numeric_value!r} "
            f"(difference {abs(analytic_value - numeric_value):.3e}, "
            f"allowed {atol + rtol * abs(numeric_value):.3e} = atol {atol} + rtol {rtol} * |numeric|)"
        )
    return True
