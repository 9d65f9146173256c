"""``minialex.models``: AlexNet in its three shapes, and a summary table."""

from .alexnet import AlexNet, alexnet, alexnet_mnist, alexnet_torchvision
from .summary import Summary, summary

__all__ = ["AlexNet", "Summary", "alexnet", "alexnet_mnist", "alexnet_torchvision", "summary"]
