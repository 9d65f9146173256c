"""Initialisers: PyTorch's default bounds for Conv2d and Linear, seeded by ma.manual_seed."""

import math

import numpy as np
import pytest

import minialex as ma
from minialex import nn
from minialex.nn import init

LAYERS = [
    # id, build, fan_in
    ("Linear 400->300", lambda: nn.Linear(400, 300), 400),
    ("Conv2d 16->32 5x5", lambda: nn.Conv2d(16, 32, 5), 16 * 25),
    ("Conv2d groups 4", lambda: nn.Conv2d(16, 64, 3, groups=4), 4 * 9),
    ("Conv2d 3->96 11x11", lambda: nn.Conv2d(3, 96, 11, stride=4), 3 * 121),
    ("Conv2d non-square", lambda: nn.Conv2d(8, 40, (3, 5)), 8 * 15),
]


@pytest.mark.parametrize("build, fan_in", [c[1:] for c in LAYERS], ids=[c[0] for c in LAYERS])
def test_default_weights_are_uniform_within_one_over_sqrt_fan_in(build, fan_in):
    ma.manual_seed(0)
    layer = build()
    bound = 1 / math.sqrt(fan_in)
    w = layer.weight.numpy().astype(np.float64)
    assert init.fan_in(layer.weight) == fan_in
    assert np.abs(w).max() <= bound * (1 + 1e-6)
    assert np.abs(w).max() > 0.95 * bound  # really spread over the whole interval
    # U(-b, b): mean 0, standard deviation b / sqrt(3) = 1 / sqrt(3 fan_in)
    n = w.size
    std = 1 / math.sqrt(3 * fan_in)
    assert abs(w.mean()) < 5 * std / math.sqrt(n)
    assert abs(w.std() / std - 1) < 5 * math.sqrt(0.8 / n) / 2 + 1e-3  # sample std of a uniform


@pytest.mark.parametrize("build, fan_in", [c[1:] for c in LAYERS], ids=[c[0] for c in LAYERS])
def test_default_biases_are_uniform_within_one_over_sqrt_fan_in(build, fan_in):
    ma.manual_seed(1)
    layer = build()
    bound = 1 / math.sqrt(fan_in)
    b = layer.bias.numpy()
    assert np.abs(b).max() <= bound * (1 + 1e-6)
    assert np.abs(b).max() > 0.5 * bound and (b > 0).any() and (b < 0).any()
    assert len(np.unique(b)) == b.size


def test_weight_std_is_close_to_one_over_sqrt_three_fan_in_for_a_large_layer():
    ma.manual_seed(2)
    layer = nn.Linear(1024, 1024)
    np.testing.assert_allclose(layer.weight.numpy().std(), 1 / math.sqrt(3 * 1024), rtol=0.01)


def test_default_init_spread_matches_torch():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    ma.manual_seed(0)
    for ours, theirs in ((nn.Conv2d(16, 32, 5), torch.nn.Conv2d(16, 32, 5)), (nn.Linear(500, 200), torch.nn.Linear(500, 200))):
        for name, p in ours.named_parameters():
            q = dict(theirs.named_parameters())[name].detach().numpy()
            assert p.shape == q.shape
            assert np.abs(p.numpy()).max() <= np.abs(q).max() * 1.05 + 1e-12  # same bound
            assert np.abs(p.numpy()).max() >= np.abs(q).max() * 0.9
            if p.size > 1000:
                np.testing.assert_allclose(p.numpy().std(), q.std(), rtol=0.05)


def test_same_seed_gives_same_weights_and_another_seed_other_weights():
    def weights(seed):
        ma.manual_seed(seed)
        net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Linear(10, 5))
        return [p.numpy() for p in net.parameters()]

    first, again, other = weights(42), weights(42), weights(43)
    for a, b, c in zip(first, again, other):
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, c)


def test_layers_made_one_after_another_differ():
    ma.manual_seed(3)
    a, b = nn.Linear(10, 10), nn.Linear(10, 10)
    assert not np.array_equal(a.weight.numpy(), b.weight.numpy())


# --------------------------------------------------------------------------- the initialisers themselves


def test_fan_in_of_linear_and_conv_weights():
    assert init.fan_in(ma.tensor(np.zeros((3, 7), np.float32))) == 7
    assert init.fan_in(ma.tensor(np.zeros((8, 2, 3, 5), np.float32))) == 30
    with pytest.raises(ValueError, match=r"\(5,\)"):
        init.fan_in(ma.tensor(np.zeros(5, np.float32)))


def test_kaiming_uniform_bound_is_gain_times_sqrt_three_over_fan_in():
    ma.manual_seed(4)
    w = nn.Parameter(np.zeros((200, 50), np.float32))
    init.kaiming_uniform_(w)  # a = 0: gain sqrt(2), bound sqrt(6 / fan_in)
    bound = math.sqrt(6 / 50)
    assert np.abs(w.numpy()).max() <= bound * (1 + 1e-6)
    assert np.abs(w.numpy()).max() > 0.95 * bound


def test_uniform_normal_constant_and_zeros_fill_in_place_without_recording_a_graph():
    ma.manual_seed(5)
    p = nn.Parameter(np.zeros((100, 100), np.float32))
    data = p.data
    assert init.uniform_(p, -2.0, 3.0) is p
    assert p.data is data and p.grad_fn is None and p.dtype == np.float32
    assert p.numpy().min() >= -2.0 and p.numpy().max() <= 3.0
    np.testing.assert_allclose(p.numpy().mean(), 0.5, atol=0.05)
    init.normal_(p, mean=1.0, std=0.01)
    np.testing.assert_allclose(p.numpy().mean(), 1.0, atol=1e-3)
    np.testing.assert_allclose(p.numpy().std(), 0.01, rtol=0.03)
    assert p.dtype == np.float32
    init.constant_(p, 1.0)
    assert (p.numpy() == 1.0).all()
    init.zeros_(p)
    assert not p.numpy().any()
    assert p.grad_fn is None and p.requires_grad
