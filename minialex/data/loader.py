"""DataLoader: batches of (images, labels) arrays, shuffled by the engine's RNG, on a device."""

import math
import numbers

import numpy as np

from .. import backend


def _get_batch(dataset, indices):
    """(images, labels) of ``indices``: one vectorised get_batch call, or item by item."""
    if hasattr(dataset, "get_batch"):
        return dataset.get_batch(indices)
    items = [dataset[int(i)] for i in indices]
    return np.stack([np.asarray(x) for x, _ in items]), np.asarray([y for _, y in items], dtype=np.int64)


class DataLoader:
    """Iterate over ``dataset`` in batches of ``batch_size``.

    Each epoch (each ``iter()``) visits every index once: in order, or in a
    permutation drawn from the engine's CPU RNG when ``shuffle`` (so
    ``ma.manual_seed`` repeats it). ``drop_last`` drops a final short batch.
    Yields ``(images, labels)`` arrays on ``device``. The dataset needs
    ``__len__`` and either ``get_batch(indices)`` or ``__getitem__``.
    """

    def __init__(self, dataset, batch_size=1, shuffle=False, drop_last=False, device="cpu"):
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
            raise ValueError(f"DataLoader: batch_size must be a positive int, got {batch_size!r}")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.device = backend.parse_device(device)

    def __len__(self):
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self):
        n = len(self.dataset)
        order = backend.cpu_rng().permutation(n) if self.shuffle else np.arange(n)
        for batch in range(len(self)):
            indices = order[batch * self.batch_size:(batch + 1) * self.batch_size]
            images, labels = _get_batch(self.dataset, indices)
            yield backend.to_device(images, self.device), backend.to_device(labels, self.device)


class Subset:
    """The examples of ``dataset`` at ``indices`` (e.g. the first N for a quick run)."""

    def __init__(self, dataset, indices):
        self.dataset = dataset
        self.indices = np.asarray(indices, dtype=np.int64)
        if self.indices.ndim != 1 or (len(self.indices) and (self.indices.min() < 0 or self.indices.max() >= len(dataset))):
            raise ValueError(f"Subset: indices must be a 1-D list of positions in 0..{len(dataset) - 1}")

    def __len__(self):
        return len(self.indices)

    def get_batch(self, indices):
        return _get_batch(self.dataset, self.indices[indices])
