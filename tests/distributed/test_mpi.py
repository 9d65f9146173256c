"""Data-parallel training across 2 real MPI ranks (run under ``mpiexec -n 2``, see conftest.py).

Every rank runs every test; a test's collectives happen in the same order on
both ranks, and the assertions come after the last collective, so a failing
rank never leaves the other one waiting.
"""

import numpy as np
import pytest

import minialex as ma
import minialex.distributed as dist
import minialex.functional as F
from minialex import nn, optim
from minialex.data import DataLoader, DistributedSampler
from tests.float32_round_off import assert_within_chain_round_off

pytestmark = [pytest.mark.mpi, pytest.mark.usefixtures("mpi_process_group")]

BATCH = 16
# The longest float32 sum of the net below: a conv weight gradient over 16 images x 6x6 outputs.
LONGEST_SUM = BATCH * 6 * 6
# Roundings chained from the data to the parameters after 3 steps: per step the forward (conv, pool,
# linear, softmax), the backward through them, the momentum and the update. ReLU, max-pool and the
# softmax only select or scale; the net is small and its sums of mixed signs are short, so the
# chain is well conditioned and its error grows about linearly with the layers.
CHAINED_LAYERS = 3 * 8


def small_net(seed):
    ma.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(36, 3))


def batch_of_16():
    rng = np.random.default_rng(42)  # the same images on every rank
    return rng.normal(size=(BATCH, 1, 8, 8)).astype(np.float32), rng.integers(0, 3, BATCH)


def train(model, optimizer, images, labels, steps=3):
    for _ in range(steps):
        loss = F.cross_entropy(model(ma.Tensor(images)), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return [p.data.copy() for p in model.parameters()]


def sgd(model):
    return optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)


def same_on_every_rank(array):
    """True when every rank holds exactly these values (min and max over the ranks agree)."""
    low, high = array.astype(np.float64), array.astype(np.float64)
    dist.all_reduce(low, "min")
    dist.all_reduce(high, "max")
    return bool(np.array_equal(low, high))


def test_two_ranks_of_8_images_end_where_one_process_of_16_ends():
    images, labels = batch_of_16()
    rank = dist.get_rank()
    mine = slice(8 * rank, 8 * rank + 8)

    model = small_net(seed=0)
    two_ranks = train(model, dist.DistributedOptimizer(sgd(model)), images[mine], labels[mine])
    identical = [same_on_every_rank(p) for p in two_ranks]

    # The same three steps in one process on all 16 images: float32, and float64 as the reference.
    model = small_net(seed=0)
    one_process = train(model, sgd(model), images, labels)
    model = small_net(seed=0)
    for p in model.parameters():
        p.data = p.data.astype(np.float64)
    reference = train(model, sgd(model), images.astype(np.float64), labels)
    # What the test must be able to tell apart: each rank stepping on its own 8 images.
    model = small_net(seed=0)
    alone = train(model, sgd(model), images[mine], labels[mine])

    assert all(identical), "the ranks' parameters differ after the steps"
    for ours, single, ref, own in zip(two_ranks, one_process, reference, alone):
        assert_within_chain_round_off(ours, ref, LONGEST_SUM, CHAINED_LAYERS, "2 ranks of 8 vs float64 of 16")
        assert_within_chain_round_off(single, ref, LONGEST_SUM, CHAINED_LAYERS, "1 process of 16 vs float64")
    unsynchronised_error = max(np.abs(own - ref).max() / np.abs(ref).max() for own, ref in zip(alone, reference))
    bound = CHAINED_LAYERS * (LONGEST_SUM + 2) * np.finfo(np.float32).eps
    assert unsynchronised_error > 10 * bound, "the bound cannot tell averaged gradients from unsynchronised ones"


def test_broadcast_parameters_overwrites_ranks_that_diverged():
    rank = dist.get_rank()
    model = small_net(seed=rank)  # a different start on each rank
    before = [same_on_every_rank(p.data) for p in model.parameters()]
    src_values = [p.data.copy() for p in small_net(seed=1).parameters()]
    versions = [p._version for p in model.parameters()]

    dist.broadcast_parameters(model, src=1)
    after = [same_on_every_rank(p.data) for p in model.parameters()]

    assert not any(before)
    assert all(after)
    for p, expected in zip(model.parameters(), src_values):
        np.testing.assert_array_equal(p.data, expected)
    if rank != 1:  # the receiving rank's parameters changed in place: their versions say so
        assert all(p._version > v for p, v in zip(model.parameters(), versions))


def test_broadcast_optimizer_state_gives_every_rank_the_momentum_of_the_source():
    images, labels = batch_of_16()
    rank = dist.get_rank()
    model = small_net(seed=0)
    optimizer = sgd(model)
    if rank == 0:  # only rank 0 has trained (as only rank 0 reads a checkpoint on resume)
        train(model, optimizer, images, labels, steps=2)
        optimizer.param_groups[0]["lr"] = 0.05
    dist.broadcast_parameters(model)
    dist.broadcast_optimizer_state(dist.DistributedOptimizer(optimizer))
    buffers = [optimizer.state[i]["momentum_buffer"] for i in range(len(list(model.parameters())))]
    identical = [same_on_every_rank(b) for b in buffers]
    lrs = dist.all_reduce(np.array([optimizer.param_groups[0]["lr"]]), "sum")

    assert all(identical)
    assert lrs[0] == pytest.approx(0.1)


def test_a_parameter_without_gradient_on_one_rank_is_averaged_as_a_zero_and_an_unused_one_stays_none():
    rank = dist.get_rank()
    ma.manual_seed(0)
    shared, only_rank_0, unused = nn.Linear(4, 2), nn.Linear(4, 2), nn.Linear(4, 2)
    params = list(shared.parameters()) + list(only_rank_0.parameters()) + list(unused.parameters())
    optimizer = dist.DistributedOptimizer(optim.SGD(params, lr=0.0))
    x = ma.Tensor(np.random.default_rng(rank).normal(size=(3, 4)).astype(np.float32))
    loss = shared(x).sum() + (only_rank_0(x).sum() if rank == 0 else 0.0)
    optimizer.zero_grad()
    loss.backward()
    own = only_rank_0.weight.grad.data.copy() if rank == 0 else np.zeros((2, 4), np.float32)
    own_shared = shared.weight.grad.data.copy()
    total = dist.all_reduce(own.copy())
    total_shared = dist.all_reduce(own_shared.copy())
    optimizer.step()

    np.testing.assert_allclose(only_rank_0.weight.grad.data, total / 2, rtol=1e-6)
    np.testing.assert_allclose(shared.weight.grad.data, total_shared / 2, rtol=1e-6)
    assert unused.weight.grad is None and unused.bias.grad is None


def test_one_step_is_one_collective_for_all_parameters_of_one_dtype(monkeypatch):
    calls = []
    reduce = dist._reduce
    monkeypatch.setattr(dist, "_reduce", lambda group, buffer, op: (calls.append(buffer.size), reduce(group, buffer, op)))
    images, labels = batch_of_16()
    model = small_net(seed=0)
    parameters = list(model.parameters())
    train(model, dist.DistributedOptimizer(sgd(model)), images, labels, steps=2)

    # One message per step, every gradient plus one "had a gradient" flag per parameter.
    assert calls == [sum(p.size for p in parameters) + len(parameters)] * 2


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64", "int32", "int64", "uint8"])
@pytest.mark.parametrize("op", ["sum", "prod", "min", "max"])
def test_all_reduce_combines_every_ranks_values_in_place_even_through_a_strided_view(dtype, op):
    rank = dist.get_rank()
    values = [np.arange(1, 13).reshape(3, 4) * (r + 1) % 7 + 1 for r in range(2)]
    expected = {"sum": values[0] + values[1], "prod": values[0] * values[1],
                "min": np.minimum(*values), "max": np.maximum(*values)}[op]
    base = np.zeros((3, 8), dtype)
    view = base[:, ::2]  # not contiguous: reduced through a copy, written back
    view[...] = values[rank]
    returned = dist.all_reduce(view, op)

    assert returned is view
    np.testing.assert_array_equal(view, expected.astype(dtype))
    np.testing.assert_array_equal(base[:, 1::2], 0)


def test_broadcast_and_broadcast_object_send_the_sources_values():
    rank = dist.get_rank()
    array = np.full((2, 3), rank, np.float32)
    tensor = ma.Tensor(np.full(4, rank + 10.0, np.float32))
    version = tensor._version
    dist.broadcast(array, src=1)
    dist.broadcast(tensor, src=0)
    received = dist.broadcast_object({"rank": rank, "values": [1.5, "text"]}, src=1)

    np.testing.assert_array_equal(array, 1)
    np.testing.assert_array_equal(tensor.data, 10.0)
    assert received == {"rank": 1, "values": [1.5, "text"]}
    assert tensor._version == version + (rank != 0)


def test_the_ranks_shares_of_a_sharded_loader_are_disjoint_and_cover_the_data():
    class Numbers:
        def __len__(self):
            return 37

        def get_batch(self, indices):
            return np.asarray(indices, np.float32)[:, None], np.asarray(indices, np.int64)

    rank, world_size = dist.get_rank(), dist.get_world_size()
    ma.manual_seed(rank)  # the engine RNG differs per rank; the shuffle must not
    loader = DataLoader(Numbers(), 4, shuffle=True, shard=(rank, world_size), seed=3)
    loader.set_epoch(2)
    seen = np.zeros(37, np.int64)
    batches = 0
    for _, labels in loader:
        np.add.at(seen, labels, 1)
        batches += 1
    dist.all_reduce(seen)
    batch_counts = dist.all_reduce(np.array([batches, batches]), "min")[0], dist.all_reduce(np.array([batches]), "max")[0]

    assert batch_counts[0] == batch_counts[1] == len(loader) == 5
    assert np.all(seen >= 1)  # everything is seen
    assert seen.sum() == len(DistributedSampler(Numbers(), 2, 0)) * 2 == 38  # one image padded in, seen twice


def test_train_mnist_evaluates_each_ranks_share_and_reports_the_whole_sets_figures():
    import importlib.util  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    from minialex.data import Subset  # noqa: PLC0415

    path = Path(__file__).resolve().parents[2] / "examples" / "train_mnist.py"
    spec = importlib.util.spec_from_file_location("train_mnist_under_mpi", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)

    class Images:  # 37 images: the ranks' shares differ in size (19 and 18)
        def __init__(self):
            rng = np.random.default_rng(5)
            self.images = rng.normal(size=(37, 1, 8, 8)).astype(np.float32)
            self.labels = rng.integers(0, 3, 37)

        def __len__(self):
            return 37

        def get_batch(self, indices):
            return self.images[indices], self.labels[indices]

    rank, world_size = dist.get_rank(), dist.get_world_size()
    model = small_net(seed=0)
    share = Subset(Images(), np.arange(rank, 37, world_size))
    shared_loss, shared_accuracy = example.evaluate(model, DataLoader(share, 10), distributed=True)
    whole_loss, whole_accuracy = example.evaluate(model, DataLoader(Images(), 10))
    agreed = same_on_every_rank(np.array([shared_loss, shared_accuracy]))

    assert agreed
    assert shared_accuracy == whole_accuracy
    # The same 37 positive losses, grouped into other batches: each batch mean is a float32 sum of at
    # most 10 terms, within (10 + 2) eps32 of the exact one relative to it, and so is their total.
    assert shared_loss == pytest.approx(whole_loss, rel=12 * float(np.finfo(np.float32).eps))
