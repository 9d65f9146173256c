"""minialex benchmarks: kernels and whole AlexNet training steps, CPU (vs PyTorch) and GPU.

    python -m benchmarks                      # CPU suite, minialex vs PyTorch: prints the tables
    python -m benchmarks --name cpu-<machine> # ... and publishes benchmarks/results/cpu-<machine>.json and .md
    python -m benchmarks --quick              # fewer repeats, batch 16 only
    python -m benchmarks --steps-only --batches 8 16 32 64   # the training step at several batch sizes
    python -m benchmarks --profile            # per-layer forward/backward times of one training step
    python benchmarks/gpu.py                  # the CUDA suite (needs CuPy and a GPU); --name to publish
    python -m benchmarks.engines              # against DeZero and Chainer; --name to publish
    python -m benchmarks.render               # the results' markdown made again from their JSON
    python -m benchmarks.plots                # the results' plots, as PNG beside them

Timings are medians over several runs after warm-up, minialex and PyTorch
side by side in one run with the same thread count; compare ratios, not
absolute times, on a shared CPU. Every ratio is minialex's time / the
reference's time: below 1, minialex is faster. Only a run given ``--name``
writes into benchmarks/results/, so an ad-hoc run never replaces a published
file nor shows up in the docs.
"""

import minialex  # noqa: E402, F401 - before NumPy, so that its OpenBLAS setting takes effect (minialex/__init__.py)
