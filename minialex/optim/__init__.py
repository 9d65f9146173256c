"""``minialex.optim``: SGD and learning-rate schedulers, as PyTorch."""

from .lr_scheduler import ReduceLROnPlateau, StepLR
from .sgd import SGD, Optimizer

__all__ = ["SGD", "Optimizer", "ReduceLROnPlateau", "StepLR"]
