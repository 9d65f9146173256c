"""DataLoader: batches of (images, labels) arrays, shuffled by the engine's RNG, on a device.

With ``num_workers=K > 0`` the batches are read by K worker processes while
the main process trains: the main process draws the order (the same seeded
permutation as with 0 workers), hands each worker a batch of indices, keeps
``K * prefetch_factor`` batches in flight and yields them in order. Workers
only read: a dataset with ``load_batch(indices)`` (ImageFolder) returns its
raw batch from the worker, and its ``transform`` runs in the main process,
so random transforms draw from the main process's seeded RNG and the epoch
is the same, batch for batch and pixel for pixel, whatever K is.
"""

import collections
import io
import itertools
import math
import multiprocessing
import numbers
import pickle
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np

from .. import backend
from .sampler import DistributedSampler


def _get_batch(dataset, indices):
    """(images, labels) of ``indices``: one vectorised get_batch call, or item by item."""
    if hasattr(dataset, "get_batch"):
        return dataset.get_batch(indices)
    items = [dataset[int(i)] for i in indices]
    return np.stack([np.asarray(x) for x, _ in items]), np.asarray([y for _, y in items], dtype=np.int64)


def _load_batch(dataset, indices):
    """The part of ``_get_batch`` a worker process runs: ``load_batch`` (no transform) where there is one."""
    if isinstance(dataset, Subset):
        return _load_batch(dataset.dataset, dataset.indices[indices])
    if hasattr(dataset, "load_batch"):
        return dataset.load_batch(indices)
    return _get_batch(dataset, indices)


def _main_process_transform(dataset):
    """The transform the main process applies to what ``_load_batch`` returned (None: nothing left to do)."""
    if isinstance(dataset, Subset):
        return _main_process_transform(dataset.dataset)
    return getattr(dataset, "transform", None) if hasattr(dataset, "load_batch") else None


# The dataset of this worker process, unpickled once when the worker starts.
_worker_dataset = None


class _PicklerWithoutTransform(pickle.Pickler):
    """Pickles the dataset for the workers, leaving out the transform the main process applies."""

    def __init__(self, file, transform):
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.transform = transform

    def persistent_id(self, obj):
        return "main-process transform" if self.transform is not None and obj is self.transform else None


class _UnpicklerWithoutTransform(pickle.Unpickler):
    def persistent_load(self, pid):
        return None  # the transform: the worker does not run it


def _worker_payload(dataset, transform):
    buffer = io.BytesIO()
    _PicklerWithoutTransform(buffer, transform).dump(dataset)
    return buffer.getvalue()


def _worker_start(payload):
    global _worker_dataset
    _worker_dataset = _UnpicklerWithoutTransform(io.BytesIO(payload)).load()


def _worker_batch(indices):
    return _load_batch(_worker_dataset, indices)


def _worker_context():
    """'forkserver' where there is one (workers start from a clean server, not a copy of this process), else 'spawn'."""
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    return multiprocessing.get_context(method)


def _check_count(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        kind = "a non-negative" if minimum == 0 else "a positive"
        raise ValueError(f"DataLoader: {name} must be {kind} int, got {value!r}")
    return int(value)


class DataLoader:
    """Iterate over ``dataset`` in batches of ``batch_size``.

    Each epoch (each ``iter()``) visits every index once: in order, or in a
    permutation drawn from the engine's CPU RNG when ``shuffle`` (so
    ``ma.manual_seed`` repeats it). ``drop_last`` drops a final short batch.
    Yields ``(images, labels)`` arrays on ``device``. The dataset needs
    ``__len__`` and either ``get_batch(indices)`` or ``__getitem__``.

    ``num_workers=K > 0`` reads batches in K worker processes ('forkserver',
    or 'spawn' where there is none), ``K * prefetch_factor`` batches ahead,
    and yields them in order; 0 reads them in this process. The workers
    only read: for a dataset with ``load_batch`` (ImageFolder, or a Subset
    of one) its ``transform`` runs here, in the main process, so random
    transforms stay reproducible and the epoch is identical for every K.
    A dataset without ``load_batch`` runs all of ``get_batch`` in a worker
    (a random draw there would come from the worker's unseeded RNG). The
    dataset travels to the workers pickled (this process's own object, not
    data read from disk), less the transform that stays here, so it must be
    picklable (a class defined at module level), and a script that starts
    workers needs the ``if __name__ == "__main__":`` guard. Each ``iter()`` starts its
    workers; they are shut down when the epoch ends, when the loop stops
    early (``break``) or raises. An error in a worker (a corrupt image) is
    raised here with the worker's message and, as its cause, its traceback.

    For data-parallel training, ``shard=(rank, world_size)`` gives this rank
    its share of the epoch through a ``DistributedSampler``: every rank
    shuffles with the same ``seed`` (not the engine's RNG) and gets the same
    number of batches; call ``set_epoch(epoch)`` before each epoch for a new
    shuffle, on every rank. Any other ``sampler`` (an iterable of indices with
    ``len``) sets the order itself; it excludes ``shuffle`` and ``shard``.
    """

    def __init__(self, dataset, batch_size=1, shuffle=False, drop_last=False, device="cpu",
                 num_workers=0, prefetch_factor=2, sampler=None, shard=None, seed=0):
        self.batch_size = _check_count("batch_size", batch_size, 1)
        self.num_workers = _check_count("num_workers", num_workers, 0)
        self.prefetch_factor = _check_count("prefetch_factor", prefetch_factor, 1)
        self.dataset = dataset
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.device = backend.parse_device(device)
        if sampler is not None and (shuffle or shard is not None):
            raise ValueError("DataLoader: sampler sets the order itself; it cannot be combined with "
                             f"shuffle={shuffle!r} or shard={shard!r}")
        if shard is not None:
            if not isinstance(shard, tuple | list) or len(shard) != 2:
                raise ValueError(f"DataLoader: shard must be a pair (rank, world_size), got {shard!r}")
            rank, world_size = shard
            sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=self.shuffle, seed=seed)
        elif sampler is not None and not (hasattr(sampler, "__iter__") and hasattr(sampler, "__len__")):
            raise TypeError(f"DataLoader: sampler must be an iterable of indices with a length, "
                            f"got {type(sampler).__name__}")
        self.sampler = sampler

    def set_epoch(self, epoch):
        """Pass ``epoch`` to the sampler (``shard=`` or a DistributedSampler): a new shuffle per epoch."""
        if not hasattr(self.sampler, "set_epoch"):
            raise TypeError("DataLoader.set_epoch: only a loader with shard=(rank, world_size) or a sampler with "
                            "set_epoch has epochs; without one, shuffle=True draws a new order every epoch anyway")
        self.sampler.set_epoch(epoch)

    def __len__(self):
        n = len(self.dataset) if self.sampler is None else len(self.sampler)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def _order(self):
        """The indices of one epoch, in the order they are batched."""
        if isinstance(self.sampler, DistributedSampler):
            return self.sampler.indices()
        if self.sampler is not None:
            order = np.asarray(list(self.sampler))
            n = len(self.dataset)
            # An int64 cast would read 1.5 as 1 and "3" as 3: only integers are indices.
            is_integer = order.size == 0 or np.issubdtype(order.dtype, np.integer)
            if not is_integer or order.ndim != 1 or (order.size and (order.min() < 0 or order.max() >= n)):
                raise ValueError(f"DataLoader: the sampler must give integer indices in 0..{n - 1}, "
                                 f"got {order[:5].tolist()}{' ...' if order.size > 5 else ''}")
            return order.astype(np.int64)
        n = len(self.dataset)
        return backend.cpu_rng().permutation(n) if self.shuffle else np.arange(n)

    def __iter__(self):
        order = self._order()
        batches = (order[batch * self.batch_size:(batch + 1) * self.batch_size] for batch in range(len(self)))
        if self.num_workers > 0 and len(self) > 0:
            yield from self._iter_with_workers(batches)
            return
        for indices in batches:
            images, labels = _get_batch(self.dataset, indices)
            yield backend.to_device(images, self.device), backend.to_device(labels, self.device)

    def _iter_with_workers(self, batches):
        """Batches read by worker processes, in order; the transform (if any is left) applied here."""
        transform = _main_process_transform(self.dataset)
        try:
            payload = _worker_payload(self.dataset, transform)
        except Exception as error:
            raise TypeError(f"DataLoader(num_workers={self.num_workers}): the dataset must be picklable to reach "
                            f"the worker processes, and pickling it failed ({type(error).__name__}: {error}); "
                            "define its class and functions at module level, or use num_workers=0") from error
        executor = ProcessPoolExecutor(max_workers=self.num_workers, mp_context=_worker_context(),
                                       initializer=_worker_start, initargs=(payload,))
        in_flight = collections.deque()
        try:
            for indices in itertools.islice(batches, self.num_workers * self.prefetch_factor):
                in_flight.append(executor.submit(_worker_batch, indices))
            while in_flight:
                try:
                    images, labels = in_flight.popleft().result()
                except BrokenProcessPool as error:
                    raise RuntimeError(f"DataLoader: a worker process died while reading a batch ({error}); "
                                       "run with num_workers=0 to see the error in this process") from error
                for indices in itertools.islice(batches, 1):
                    in_flight.append(executor.submit(_worker_batch, indices))
                if transform is not None:
                    images = transform(images)
                yield backend.to_device(images, self.device), backend.to_device(labels, self.device)
        finally:
            executor.shutdown(wait=True, cancel_futures=True)


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
