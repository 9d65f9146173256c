"""The paper AlexNet's layers at batch N, as (name, kind, shapes) rows, and the same net in PyTorch.

Shapes follow the 227x227 two-tower net of ``minialex.models.alexnet()``.
"""

# name, kind, input shape without the batch, parameters
LAYERS = [
    ("conv1", "conv", (3, 227, 227), dict(out=96, k=11, stride=4, pad=0, groups=1, first=True)),
    ("conv2", "conv", (96, 27, 27), dict(out=256, k=5, stride=1, pad=2, groups=2)),
    ("conv3", "conv", (256, 13, 13), dict(out=384, k=3, stride=1, pad=1, groups=1)),
    ("conv4", "conv", (384, 13, 13), dict(out=384, k=3, stride=1, pad=1, groups=2)),
    ("conv5", "conv", (384, 13, 13), dict(out=256, k=3, stride=1, pad=1, groups=2)),
    ("pool1", "pool", (96, 55, 55), {}),
    ("pool2", "pool", (256, 27, 27), {}),
    ("pool5", "pool", (256, 13, 13), {}),
    ("lrn1", "lrn", (96, 55, 55), {}),
    ("lrn2", "lrn", (256, 27, 27), {}),
    ("relu1", "relu", (96, 55, 55), {}),
    ("dropout6", "dropout", (9216,), {}),
    ("fc6", "linear", (9216,), dict(out=4096)),
    ("fc7", "linear", (4096,), dict(out=4096)),
    ("fc8", "linear", (4096,), dict(out=1000)),
    ("softmax_xent", "xent", (1000,), {}),
    ("sgd_fc6", "sgd", (4096, 9216), {}),
]


def torch_alexnet(torch, num_classes=1000):
    """The paper's two-tower AlexNet as a torch.nn.Sequential (same layers as minialex.models.alexnet())."""
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(3, 96, 11, stride=4), nn.ReLU(), nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0), nn.MaxPool2d(3, 2),
        nn.Conv2d(96, 256, 5, padding=2, groups=2), nn.ReLU(), nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0),
        nn.MaxPool2d(3, 2),
        nn.Conv2d(256, 384, 3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 384, 3, padding=1, groups=2), nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1, groups=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Flatten(),
        nn.Dropout(0.5), nn.Linear(9216, 4096), nn.ReLU(),
        nn.Dropout(0.5), nn.Linear(4096, 4096), nn.ReLU(),
        nn.Linear(4096, num_classes),
    )
