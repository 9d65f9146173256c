"""AlexNet (Krizhevsky, Sutskever and Hinton, 2012) and two relatives.

Every variant is a ``features`` Sequential (convolutions, ReLU, LRN,
overlapping 3x3 stride-2 max-pools), a flatten, and a ``classifier``
Sequential (dropout, fully connected layers), so parameter names read
``features.0.weight`` ... ``classifier.6.bias`` as in torchvision, in the
order a torch.nn.Sequential of the same layers has.

- ``alexnet``: the paper's network for 227x227 input (the paper says 224,
  but 11x11 stride 4 needs 227 to give its 55x55 maps). ``groups=2`` splits
  conv2, conv4 and conv5 into the paper's two GPU towers; conv3 and the fc
  layers see both. 60,965,224 parameters at 1000 classes.
- ``alexnet_torchvision``: the 64-192-384-256-256 single-tower variant of
  torchvision for 224x224 input, without LRN; loads a torchvision state_dict.
- ``alexnet_mnist``: the same eight-layer pattern sized for 28x28 digits.
"""

import math

import numpy as np

from .. import nn
from ..functional import flatten
from ..nn import init

INITIALISATIONS = ("paper", "caffe", "pytorch", "kaiming")


class AlexNet(nn.Module):
    """features -> flatten -> classifier, with the input shape checked first."""

    def __init__(self, features, classifier, in_channels, input_size):
        super().__init__()
        self.features = features
        self.classifier = classifier
        self.in_channels = in_channels
        self.input_size = input_size

    def forward(self, x):
        expected = (self.in_channels, self.input_size, self.input_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"{type(self).__name__} expects input of shape (N, {expected[0]}, {expected[1]}, {expected[2]}), "
                f"got {x.shape}"
            )
        return self.classifier(flatten(self.features(x), 1))


def _check_common(num_classes, in_channels):
    for name, value in (("num_classes", num_classes), ("in_channels", in_channels)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


def _lrn():
    # The paper's k=2, n=5, beta=0.75. alpha: PyTorch divides by size, the paper does not;
    # 1e-4 here is PyTorch's/Caffe's reading of the paper's 1e-4 (see kernels/lrn.py).
    return nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)


def _classifier(in_features, hidden, num_classes, dropout):
    return nn.Sequential(
        nn.Dropout(dropout),
        nn.Linear(in_features, hidden),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, num_classes),
    )


def _named_layers(model):
    """The conv and linear layers in order, named conv1..conv5, fc6..fc8."""
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.classifier if isinstance(m, nn.Linear)]
    names = [f"conv{i + 1}" for i in range(len(convs))] + [f"fc{i + 6}" for i in range(len(linears))]
    return dict(zip(names, convs + linears))


def initialise(model, scheme):
    """Re-initialise an AlexNet-shaped model's weights in place.

    - "paper": weights N(0, 0.01); biases 1 in conv2, conv4, conv5, fc6, fc7, else 0.
      (The biases of 1 give ReLUs positive inputs early on; reimplementations
      often see the loss stay flat at log(1000) for many epochs with it.)
    - "caffe": Caffe's bvlc_alexnet: weights N(0, 0.01) but fc6/fc7 N(0, 0.005);
      biases 0.1 where the paper has 1, else 0. Known to start learning sooner.
    - "pytorch": PyTorch's layer defaults (kaiming-uniform weights and biases).
    - "kaiming": He et al. 2015: weights N(0, 2 / fan_in), biases 0, which keeps
      the activations' scale through the ReLU layers; the output layer N(0, 0.01)
      so the first predictions are near uniform. Training starts at once.
    """
    if scheme not in INITIALISATIONS:
        raise ValueError(f"init must be one of {INITIALISATIONS}, got {scheme!r}")
    if scheme == "pytorch":
        for layer in _named_layers(model).values():
            init.default_layer_init_(layer.weight, layer.bias)
        return model
    if scheme == "kaiming":
        layers = list(_named_layers(model).values())
        for layer in layers[:-1]:
            init.normal_(layer.weight, 0.0, math.sqrt(2.0 / init.fan_in(layer.weight)))
            init.zeros_(layer.bias)
        # The output layer starts small, so the first predictions are near uniform
        # and the first steps do not overshoot.
        init.normal_(layers[-1].weight, 0.0, 0.01)
        init.zeros_(layers[-1].bias)
        return model
    ones = {"conv2", "conv4", "conv5", "fc6", "fc7"}
    for name, layer in _named_layers(model).items():
        std = 0.005 if scheme == "caffe" and name in ("fc6", "fc7") else 0.01
        init.normal_(layer.weight, 0.0, std)
        bias = (1.0 if scheme == "paper" else 0.1) if name in ones else 0.0
        init.constant_(layer.bias, bias)
    return model


def alexnet(num_classes=1000, in_channels=3, groups=2, lrn=True, dropout=0.5, init="paper"):
    """The 2012 paper's AlexNet for (N, in_channels, 227, 227) input.

    conv1 96 11x11/4, [LRN], pool 3/2, conv2 256 5x5 pad 2 (groups), [LRN], pool 3/2,
    conv3 384 3x3 pad 1, conv4 384 3x3 pad 1 (groups), conv5 256 3x3 pad 1 (groups),
    pool 3/2, dropout, fc6 9216-4096, ReLU, dropout, fc7 4096-4096, ReLU, fc8 4096-num_classes.
    Maps: 227 -> 55 -> 27 -> 27 -> 13 -> 13 -> 13 -> 13 -> 6.
    """
    _check_common(num_classes, in_channels)
    if groups not in (1, 2):
        raise ValueError(f"groups must be 1 (single tower) or 2 (the paper's two towers), got {groups!r}")
    features = [nn.Conv2d(in_channels, 96, 11, stride=4), nn.ReLU()]
    features += [_lrn()] if lrn else []
    features += [nn.MaxPool2d(3, 2), nn.Conv2d(96, 256, 5, padding=2, groups=groups), nn.ReLU()]
    features += [_lrn()] if lrn else []
    features += [
        nn.MaxPool2d(3, 2),
        nn.Conv2d(256, 384, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(384, 384, 3, padding=1, groups=groups),
        nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1, groups=groups),
        nn.ReLU(),
        nn.MaxPool2d(3, 2),
    ]
    model = AlexNet(nn.Sequential(*features), _classifier(256 * 6 * 6, 4096, num_classes, dropout),
                    in_channels, 227)
    return initialise(model, init)


def alexnet_torchvision(num_classes=1000, in_channels=3, dropout=0.5):
    """torchvision's AlexNet (64-192-384-256-256, no LRN) for (N, in_channels, 224, 224) input.

    Its layer indices match torchvision's, so ``model.load_state_dict({k: v.numpy() for k, v in
    tv_model.state_dict().items()})`` loads torchvision weights. (torchvision's adaptive average
    pool is the identity at 224x224 and is left out.) 61,100,840 parameters at 1000 classes.
    """
    _check_common(num_classes, in_channels)
    features = nn.Sequential(
        nn.Conv2d(in_channels, 64, 11, stride=4, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(256, 256, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(3, 2),
    )
    return AlexNet(features, _classifier(256 * 6 * 6, 4096, num_classes, dropout), in_channels, 224)


def alexnet_mnist(num_classes=10, in_channels=1, dropout=0.25, init="kaiming"):
    """AlexNet's pattern sized for 28x28 digits, trainable on a laptop CPU in minutes.

    Five convolutions with ReLU (24 5x5, then 48, 64, 64, 48 3x3, all 'same'
    padded), LRN after the first two, overlapping 3x3 stride-2 max-pools after
    conv1, conv2 and conv5 (28 -> 13 -> 6 -> 2), then dropout, fc6 192-256,
    fc7 256-256, fc8 256-num_classes. About a quarter of the paper's channels on
    1/66 of its pixels: ~6 M multiply-adds per image instead of ~730 M, and
    221,146 parameters at 10 classes. He (kaiming) initialisation by default.
    Dropout is 0.25, not 0.5: on fc layers this narrow, 0.5 slowed the first
    epoch markedly (91.5% vs 95.9% test accuracy after 16,000 images).
    """
    _check_common(num_classes, in_channels)
    features = nn.Sequential(
        nn.Conv2d(in_channels, 24, 5, padding=2),
        nn.ReLU(),
        _lrn(),
        nn.MaxPool2d(3, 2),
        nn.Conv2d(24, 48, 3, padding=1),
        nn.ReLU(),
        _lrn(),
        nn.MaxPool2d(3, 2),
        nn.Conv2d(48, 64, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(64, 64, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(64, 48, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(3, 2),
    )
    model = AlexNet(features, _classifier(48 * 2 * 2, 256, num_classes, dropout), in_channels, 28)
    return initialise(model, init)
