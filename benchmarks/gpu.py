"""GPU benchmarks: AlexNet's kernels and whole training step, CPU vs generic CuPy vs CUDA fast paths vs PyTorch.

    python benchmarks/gpu.py              # batch 128, prints the tables
    python benchmarks/gpu.py --quick      # batch 32, fewer repeats (a smoke run)
    python -m benchmarks.gpu --no-cpu     # leave out the (slow) CPU NumPy columns
    python benchmarks/gpu.py --name gpu-<gpu name>   # publishes benchmarks/results/gpu-<gpu name>.json and .md

Four columns for every kernel of the paper's AlexNet (forward and backward)
and for the whole training step (forward + loss + backward + SGD momentum
0.9, weight decay 5e-4, float32):

    cpu       minialex on NumPy
    generic   minialex on CuPy with the fast paths switched off (one CuPy call per step)
    fast      minialex on CuPy with the CUDA fast paths (minialex/kernels/cuda/)
    torch     PyTorch on CUDA (cuDNN), where torch with CUDA is installed

GPU times are CUDA-event times: ``cupyx.profiler.benchmark`` for minialex
(warm-up runs, then ``n_repeat`` runs each bracketed by events), and
torch.cuda.Event pairs the same way for PyTorch; each cell is the median.
CPU times are perf_counter medians. PyTorch runs in strict float32 (TF32 off
for cuDNN and cuBLAS), as CuPy does by default, so both do the same arithmetic.
Every ratio is a time over a reference time (fast / generic, fast / torch,
path / CPU): below 1, the first is faster.
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

import minialex as ma  # noqa: E402
from benchmarks.common import (  # noqa: E402
    cpu_isa,
    cpu_model,
    format_ratio,
    median_time,
    report_published,
    report_unpublished,
)
from benchmarks.cpu import minialex_train_step, torch_train_step  # noqa: E402
from benchmarks.kernels import minialex_kernel, torch_kernel  # noqa: E402
from benchmarks.layers import LAYERS  # noqa: E402
from minialex import backend  # noqa: E402
from minialex.kernels import cuda as fast_paths  # noqa: E402

PATHS = ("cpu", "generic", "fast", "torch")


# --------------------------------------------------------------------------- timers


def gpu_time(function, repeats, warmup):
    """Median CUDA-event seconds of ``function()`` (cupyx.profiler.benchmark: warm-up, then timed runs)."""
    from cupyx.profiler import benchmark  # noqa: PLC0415 - part of CuPy, only reached with CUDA

    result = benchmark(function, n_repeat=repeats, n_warmup=warmup)
    return float(np.median(result.gpu_times[0]))


def torch_gpu_time(torch, function, repeats, warmup):
    """Median CUDA-event seconds of a PyTorch ``function()``."""
    for _ in range(warmup):
        function()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        function()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)  # elapsed_time is in milliseconds
    return statistics.median(times)


# --------------------------------------------------------------------------- one kernel, any device


def kernel_rows(batch, settings, torch, names=None):
    """One row a kernel: forward and backward seconds for each path (None where not run)."""
    cp = backend.cupy_module()
    rows = []
    for name, kind, shape, spec in LAYERS:
        if names and name not in names:
            continue
        rng = np.random.default_rng(0)
        full_shape = shape if kind == "sgd" else (batch, *shape)
        x = rng.standard_normal(full_shape).astype(np.float32)
        row = {"kernel": name, "batch": None if kind == "sgd" else batch}
        if settings["cpu"]:
            forward, backward = minialex_kernel(kind, spec, x.copy(), np.random.default_rng(1), np.asarray)
            row["cpu_forward"] = median_time(forward, settings["cpu_repeats"])
            row["cpu_backward"] = median_time(backward, settings["cpu_repeats"]) if backward else None
        for path in ("generic", "fast"):
            with fast_paths.use_fast_paths(path == "fast"):
                forward, backward = minialex_kernel(kind, spec, x.copy(), np.random.default_rng(1), cp.asarray)
                row[f"{path}_forward"] = gpu_time(forward, settings["repeats"], settings["warmup"])
                row[f"{path}_backward"] = (gpu_time(backward, settings["repeats"], settings["warmup"])
                                           if backward else None)
        if torch is not None:
            forward, backward = torch_kernel(torch, kind, spec, x.copy(), np.random.default_rng(1), "cuda")
            row["torch_forward"] = torch_gpu_time(torch, forward, settings["repeats"], settings["warmup"])
            row["torch_backward"] = (torch_gpu_time(torch, backward, settings["repeats"], settings["warmup"])
                                     if backward else None)
        cp.get_default_memory_pool().free_all_blocks()  # the next layer starts with the memory free
        rows.append(row)
        print(f"  {name}: " + ", ".join(f"{k} {v * 1e3:.3f} ms" for k, v in row.items()
                                        if k.endswith(("forward", "backward")) and v is not None), flush=True)
    return rows


# --------------------------------------------------------------------------- the whole training step


def step_row(batch, settings, torch):
    cp = backend.cupy_module()
    row = {"batch": batch}
    if settings["cpu"]:
        row["cpu"] = median_time(minialex_train_step(batch, device="cpu"), settings["cpu_step_repeats"], warmup=1)
        print(f"  cpu step {row['cpu'] * 1e3:.0f} ms", flush=True)
    step = minialex_train_step(batch, device="cuda")
    for path in ("generic", "fast"):
        with fast_paths.use_fast_paths(path == "fast"):
            row[path] = gpu_time(step, settings["step_repeats"], settings["warmup"])
        print(f"  {path} step {row[path] * 1e3:.1f} ms", flush=True)
    del step
    cp.get_default_memory_pool().free_all_blocks()
    if torch is not None:
        row["torch"] = torch_gpu_time(torch, torch_train_step(torch, batch, device="cuda"), settings["step_repeats"], settings["warmup"])
        print(f"  torch step {row['torch'] * 1e3:.1f} ms", flush=True)
    return row


# --------------------------------------------------------------------------- machine, report


def _version(number):
    """CUDA's version integers (12040) as text (12.4)."""
    return f"{number // 1000}.{number % 1000 // 10}"


def gpu_info(torch):
    cp = backend.cupy_module()
    device = cp.cuda.Device()
    properties = cp.cuda.runtime.getDeviceProperties(device.id)
    name = properties["name"]
    info = {
        "gpu": name.decode() if isinstance(name, bytes) else str(name),
        "cpu": cpu_model(),  # the host, which runs the CPU columns
        "isa": cpu_isa(),
        "cores": os.cpu_count(),
        "compute_capability": f"{properties.get('major', '?')}.{properties.get('minor', '?')}",
        "memory_gib": round(properties.get("totalGlobalMem", 0) / 2**30, 1),
        "cuda_runtime": _version(cp.cuda.runtime.runtimeGetVersion()),
        "cuda_driver_api": _version(cp.cuda.runtime.driverGetVersion()),
        "nvidia_driver": None,
        "cupy": cp.__version__,
        "numpy": np.__version__,
        "python": sys.version.split()[0],
        "torch": None,
        "torch_cuda": None,
        "cudnn": None,
    }
    try:  # the kernel-module driver version, where nvidia-smi is on the PATH
        smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30, check=False)
        info["nvidia_driver"] = smi.stdout.strip().splitlines()[device.id] if smi.returncode == 0 else None
    except (OSError, IndexError, subprocess.SubprocessError):
        pass
    if torch is not None:
        info.update(torch=torch.__version__, torch_cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
                    torch_tf32=False, cudnn_benchmark=bool(torch.backends.cudnn.benchmark))
    return info


def _ms(seconds):
    return "-" if seconds is None else f"{seconds * 1e3:.3f}"


def _ratio(a, b):
    return None if a is None or not b else a / b


def _total(row, path):
    forward = row.get(f"{path}_forward")
    if forward is None:
        return None
    return forward + (row.get(f"{path}_backward") or 0.0)


def targets(kernels, step):
    """The GPU targets, each as (target, measured ratio, met); every ratio is minialex's time / the reference's."""
    checks = []
    if step.get("torch"):
        value = step["fast"] / step["torch"]
        checks.append(("training step: minialex GPU / PyTorch CUDA <= 2.0", format_ratio(value), value <= 2.0))
    if step.get("cpu"):
        value = step["fast"] / step["cpu"]
        checks.append(("training step: minialex GPU / minialex CPU <= 0.02 (50 times faster)",
                       f"{format_ratio(value)} (1/{1 / value:.0f})", value <= 1 / 50))
    for row in kernels:
        if row["kernel"].startswith(("lrn", "pool")):
            value = _ratio(_total(row, "fast"), _total(row, "generic"))
            checks.append((f"{row['kernel']}: fast path / generic CuPy (fwd+bwd) <= 0.2 (5 times faster)",
                           format_ratio(value), value is not None and value <= 1 / 5))
    return checks


def markdown_report(info, settings, kernels, step):
    lines = [
        f"# minialex GPU benchmarks: {info['gpu']}",
        "",
        f"GPU {info['gpu']} (compute {info['compute_capability']}, {info['memory_gib']} GiB); CUDA runtime "
        f"{info['cuda_runtime']}, driver API {info['cuda_driver_api']}, NVIDIA driver {info['nvidia_driver']}; "
        f"CuPy {info['cupy']}; NumPy {info['numpy']}; PyTorch {info['torch']} (CUDA {info['torch_cuda']}, "
        f"cuDNN {info['cudnn']}, TF32 off); Python {info['python']}.",
        f"GPU times: median CUDA-event time of {settings['repeats']} runs after {settings['warmup']} warm-up runs "
        "(cupyx.profiler.benchmark for minialex, torch.cuda.Event for PyTorch). CPU: perf_counter medians. "
        "float32 throughout; paper AlexNet shapes.",
        "",
        "## Kernels",
        "",
        "| kernel | batch | cpu fwd ms | generic fwd ms | fast fwd ms | torch fwd ms | cpu bwd ms | generic bwd ms "
        "| fast bwd ms | torch bwd ms | fast / generic | fast / torch |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in kernels:
        cells = [row["kernel"], "-" if row["batch"] is None else str(row["batch"])]
        cells += [_ms(row.get(f"{path}_forward")) for path in PATHS]
        cells += [_ms(row.get(f"{path}_backward")) for path in PATHS]
        cells += [format_ratio(_ratio(_total(row, "fast"), _total(row, "generic"))),
                  format_ratio(_ratio(_total(row, "fast"), _total(row, "torch")))]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "(fast / generic: the fast path's time over the generic CuPy path's, forward + backward; fast / torch: "
        "minialex's time over PyTorch's. Below 1, the fast path is faster. The sgd row updates one (4096, 9216) "
        "parameter: fc6's weight.)",
    ]
    if step.get("fast") is not None:
        lines += _step_table(step)
    lines += ["", "## Targets", "", "| target | measured | met |", "| --- | ---: | :---: |"]
    for name, value, met in targets(kernels, step):
        lines.append(f"| {name} | {value} | {'yes' if met else 'NO'} |")
    return "\n".join(lines)


def _step_table(step):
    lines = [
        "",
        f"## Whole training step (paper AlexNet, batch {step['batch']}: forward + loss + backward + SGD momentum 0.9, "
        "weight decay 5e-4)",
        "",
        "| path | ms | / torch | / minialex CPU |",
        "| --- | ---: | ---: | ---: |",
    ]
    for path in PATHS:
        if step.get(path) is not None:
            lines.append(f"| {path} | {step[path] * 1e3:.1f} | {format_ratio(_ratio(step[path], step.get('torch')))} | "
                         f"{format_ratio(_ratio(step[path], step.get('cpu')))} |")
    return lines


def _load_torch(wanted):
    if not wanted:
        return None
    try:
        import torch  # noqa: PLC0415 - the optional 'bench' extra
    except ImportError:
        print("PyTorch is not installed: no PyTorch column")
        return None
    if not torch.cuda.is_available():
        print("this PyTorch has no CUDA: no PyTorch column")
        return None
    # Strict float32, as CuPy computes by default: the same arithmetic on both sides.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    return torch


def _slug(text):
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python benchmarks/gpu.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="batch 32 and fewer repeats")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default 128, 32 with --quick)")
    parser.add_argument("--kernels", nargs="*", help="only these kernels, e.g. lrn1 pool1 (and no training step)")
    parser.add_argument("--no-cpu", action="store_true", help="leave out the CPU NumPy columns")
    parser.add_argument("--no-torch", action="store_true", help="leave out PyTorch")
    parser.add_argument("--name", default=None, help="publish as benchmarks/results/<name>.json and .md, e.g. "
                                                     "gpu-<gpu name> (without it the run only prints)")
    args = parser.parse_args(argv)

    if not ma.cuda.is_available():
        print("benchmarks/gpu.py needs CuPy and a CUDA GPU, and this machine has "
              f"{'no CuPy' if backend.cupy_module() is None else 'CuPy but no usable CUDA device'}. "
              "Install the 'cuda' extra (pip install -e '.[cuda]') on a machine with an NVIDIA GPU, "
              "or run the CPU suite: python -m benchmarks", file=sys.stderr)
        return 2

    batch = args.batch or (32 if args.quick else 128)
    settings = {
        "cpu": not args.no_cpu,
        "repeats": 10 if args.quick else 50,
        "warmup": 3 if args.quick else 5,
        "step_repeats": 5 if args.quick else 20,
        "cpu_repeats": 1 if args.quick else 3,
        "cpu_step_repeats": 1 if args.quick else 2,
    }
    torch = _load_torch(not args.no_torch)
    info = gpu_info(torch)
    print(f"machine: {json.dumps(info)}", flush=True)
    print(f"kernels at batch {batch}:", flush=True)
    kernels = kernel_rows(batch, settings, torch, args.kernels)
    step = {"batch": batch}
    if not args.kernels:
        print(f"training step at batch {batch}:", flush=True)
        step = step_row(batch, settings, torch)
    payload = {"suite": "gpu", "machine": info, "quick": args.quick, "settings": settings, "kernels": kernels,
               "train_step": step,
               "targets": [{"target": n, "measured": v, "met": bool(m)} for n, v, m in targets(kernels, step)]}
    report = markdown_report(info, settings, kernels, step)
    if not args.name:
        report_unpublished(report, "python benchmarks/gpu.py", example=f"gpu-{_slug(info['gpu'])}")
        return 0
    repeats = {"gpu kernels": {"runs": settings["repeats"], "warm-up": settings["warmup"]},
               "gpu training step": {"runs": settings["step_repeats"], "warm-up": settings["warmup"]}}
    if settings["cpu"]:
        repeats["cpu kernels"] = {"runs": settings["cpu_repeats"], "warm-up": 1}
        repeats["cpu training step"] = {"runs": settings["cpu_step_repeats"], "warm-up": 1}
    report_published(args.name, payload, report, repeats=repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
