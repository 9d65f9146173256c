"""``minialex.optim``: SGD, Adam, AdamW and learning-rate schedulers, as PyTorch."""

from .adam import Adam, AdamW
from .lr_scheduler import CosineAnnealingLR, ReduceLROnPlateau, StepLR
from .sgd import SGD, Optimizer

__all__ = ["SGD", "Adam", "AdamW", "CosineAnnealingLR", "Optimizer", "ReduceLROnPlateau", "StepLR"]
