"""``minialex.nn``: modules with parameters, as PyTorch users know them."""

from . import init
from .layers import (
    Conv2d,
    Dropout,
    Flatten,
    Linear,
    LocalResponseNorm,
    MaxPool2d,
    ReLU,
)
from .module import Module, Parameter, Sequential, StateDictError

__all__ = [
    "Conv2d",
    "Dropout",
    "Flatten",
    "Linear",
    "LocalResponseNorm",
    "MaxPool2d",
    "Module",
    "Parameter",
    "ReLU",
    "Sequential",
    "StateDictError",
    "init",
]
