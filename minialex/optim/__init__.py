"""``minialex.optim``: SGD and learning-rate schedulers, as PyTorch."""

from .lr_scheduler import CosineAnnealingLR, ReduceLROnPlateau, StepLR
from .sgd import SGD, Optimizer

__all__ = ["SGD", "CosineAnnealingLR", "Optimizer", "ReduceLROnPlateau", "StepLR"]
