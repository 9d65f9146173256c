"""Parameter initialisers, in place, drawing from the engine's RNG on the parameter's device.

PyTorch's default for Conv2d and Linear is ``kaiming_uniform_(w, a=sqrt(5))``,
which works out to U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for the weight, and the
same bound for the bias. ``fan_in`` is in_features, or
in_channels // groups * kh * kw for a convolution.
"""

import math

from .. import backend
from ..autograd import no_grad


def fan_in(weight):
    """in_features of a (out, in) weight, in_channels // groups * kh * kw of a conv weight."""
    if weight.ndim < 2:
        raise ValueError(f"fan_in needs a weight with at least 2 dimensions, got shape {weight.shape}")
    receptive_field = 1
    for n in weight.shape[2:]:
        receptive_field *= n
    return weight.shape[1] * receptive_field


@no_grad()
def uniform_(tensor, low=0.0, high=1.0):
    """Fill ``tensor`` with U(low, high)."""
    u = backend.uniform(tensor.shape, tensor.dtype, tensor.device)
    tensor.data[...] = low + (high - low) * u
    return tensor


@no_grad()
def normal_(tensor, mean=0.0, std=1.0):
    """Fill ``tensor`` with N(mean, std^2)."""
    tensor.data[...] = backend.normal(tensor.shape, tensor.dtype, tensor.device, mean, std)
    return tensor


@no_grad()
def constant_(tensor, value):
    tensor.data[...] = value
    return tensor


def zeros_(tensor):
    return constant_(tensor, 0.0)


def kaiming_uniform_(tensor, a=0.0):
    """He-uniform: U(-b, b), b = gain * sqrt(3 / fan_in), gain = sqrt(2 / (1 + a^2))."""
    gain = math.sqrt(2.0 / (1.0 + a * a))
    bound = gain * math.sqrt(3.0 / fan_in(tensor))
    return uniform_(tensor, -bound, bound)


def default_layer_init_(weight, bias):
    """PyTorch's Conv2d / Linear reset_parameters: kaiming_uniform_(a=sqrt(5)) and a matching bias."""
    kaiming_uniform_(weight, a=math.sqrt(5))
    if bias is not None:
        bound = 1.0 / math.sqrt(fan_in(weight))
        uniform_(bias, -bound, bound)
