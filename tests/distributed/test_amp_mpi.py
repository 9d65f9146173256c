"""GradScaler with a DistributedOptimizer over 2 real MPI ranks (run under ``mpiexec -n 2``, see conftest.py).

Collectives happen in the same order on both ranks; the assertions come after the last one.
"""

import numpy as np
import pytest

import minialex as ma
import minialex.distributed as dist
from minialex import amp, optim

pytestmark = [pytest.mark.mpi, pytest.mark.usefixtures("mpi_process_group")]


def test_an_inf_gradient_on_one_rank_makes_every_rank_skip_the_step_and_back_off():
    rank = dist.get_rank()
    p = ma.tensor(np.ones(3, np.float32), requires_grad=True)
    optimizer = dist.DistributedOptimizer(optim.SGD([p], lr=0.5))
    scaler = amp.GradScaler(init_scale=4.0)
    history = []
    for step in range(3):
        grad = np.full(3, 4.0 * (rank + 1), np.float32)
        if step == 1 and rank == 1:
            grad[2] = np.inf  # only this rank overflowed
        p.grad = ma.Tensor(grad)
        scaler.step(optimizer)
        scaler.update()
        history.append((p.numpy().copy(), scaler.get_scale()))
    everyone = dist.broadcast_object([[values.tolist(), scale] for values, scale in history], src=0)

    # step 0: the mean unscaled gradient (1 + 2) / 2 = 1.5, p = 1 - 0.5 * 1.5; step 1 skipped by both; step 2 at scale 2.
    np.testing.assert_array_equal(history[0][0], np.full(3, 0.25, np.float32))
    np.testing.assert_array_equal(history[1][0], history[0][0])
    assert [scale for _, scale in history] == [4.0, 2.0, 2.0]
    np.testing.assert_array_equal(history[2][0], np.full(3, 0.25 - 0.5 * 3.0, np.float32))
    assert everyone == [[values.tolist(), scale] for values, scale in history]  # the ranks agree
