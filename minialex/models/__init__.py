"""``minialex.models``: AlexNet in its three shapes, and a summary table."""

from .alexnet import INITIALISATIONS, AlexNet, alexnet, alexnet_mnist, alexnet_torchvision
from .summary import Summary, summary

__all__ = ["INITIALISATIONS", "AlexNet", "Summary", "alexnet", "alexnet_mnist", "alexnet_torchvision", "summary"]
