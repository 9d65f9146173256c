"""DistributedSampler: each rank's disjoint share of one seeded shuffle, as PyTorch's.

For data-parallel training every rank must see different images, all of
them together must cover the epoch once, and every rank must take the same
number of steps (a rank that stops early would leave the others waiting in
the gradient all-reduce). So every rank draws the SAME permutation from
``(seed, epoch)`` (not from the engine's RNG, which differs per rank to give
each its own dropout masks), pads it to a multiple of the world size by
repeating its first indices, and keeps every ``num_replicas``-th index from
position ``rank``.
"""

import math
import numbers

import numpy as np


def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"DistributedSampler: {name} must be an int >= {minimum}, got {value!r}")
    return int(value)


class DistributedSampler:
    """The indices of ``dataset`` for rank ``rank`` of ``num_replicas``, reshuffled by ``set_epoch``.

    ``num_replicas`` and ``rank`` default to the process group's world size and
    rank. With ``shuffle`` the order is a permutation drawn from ``(seed,
    epoch)``, the same on every rank. ``drop_last=False`` pads the order with
    its first indices up to a multiple of ``num_replicas`` (a few images seen
    twice per epoch); ``drop_last=True`` drops the tail instead. Every rank
    gets ``len(self)`` indices, and the ranks' shares are disjoint (except the
    padding) and together cover the dataset.
    """

    def __init__(self, dataset, num_replicas=None, rank=None, shuffle=True, seed=0, drop_last=False):
        if num_replicas is None or rank is None:
            from .. import distributed  # noqa: PLC0415 - only for the defaults

            num_replicas = distributed.get_world_size() if num_replicas is None else num_replicas
            rank = distributed.get_rank() if rank is None else rank
        self.num_replicas = _check_int("num_replicas", num_replicas, 1)
        self.rank = _check_int("rank", rank, 0)
        if self.rank >= self.num_replicas:
            raise ValueError(f"DistributedSampler: rank must be in 0..{self.num_replicas - 1}, got {rank!r}")
        self.seed = _check_int("seed", seed, 0)
        self.dataset = dataset
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.epoch = 0

    @property
    def num_samples(self):
        """How many indices each rank gets per epoch."""
        n = len(self.dataset)
        return n // self.num_replicas if self.drop_last else math.ceil(n / self.num_replicas)

    def __len__(self):
        return self.num_samples

    def set_epoch(self, epoch):
        """Use the shuffle of ``epoch``: call it at the start of every epoch, on every rank alike."""
        self.epoch = _check_int("epoch", epoch, 0)

    def indices(self):
        """This rank's indices for the current epoch, as an int64 array."""
        n = len(self.dataset)
        order = np.random.default_rng([self.seed, self.epoch]).permutation(n) if self.shuffle else np.arange(n)
        total = self.num_samples * self.num_replicas
        if total > n:  # pad by repeating the start of the order (np.resize repeats it cyclically)
            order = np.resize(order, total)
        order = order[:total]
        return order[self.rank::self.num_replicas]

    def __iter__(self):
        return iter(self.indices().tolist())
