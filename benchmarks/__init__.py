"""minialex benchmarks: kernels and whole AlexNet training steps, CPU (vs PyTorch) and GPU.

    python -m benchmarks            # CPU suite, minialex vs PyTorch, results in benchmarks/results/
    python -m benchmarks --quick    # fewer repeats, batch 16 only
    python -m benchmarks --profile  # per-layer forward/backward times of one training step
    python benchmarks/gpu.py        # the CUDA suite (needs CuPy and a GPU)

Timings are medians over several runs after warm-up, minialex and PyTorch
side by side in one run with the same thread count; compare ratios, not
absolute times, on a shared CPU.
"""
