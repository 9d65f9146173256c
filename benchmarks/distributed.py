"""Data-parallel costs: the all-reduce of AlexNet's gradients, and MNIST training throughput in 1 or 2 ranks.

    python -m benchmarks.distributed --name distributed-2core-amd-epyc

1. All-reduce (``mpiexec -n 2``): the time to average the paper AlexNet's
   60,965,224 float32 gradients (244 MB) over 2 ranks, three ways: the raw
   all-reduce of one 244 MB buffer, ``DistributedOptimizer.synchronize()``
   (pack, all-reduce, divide, unpack: what a training step pays), and one
   all-reduce per tensor (16 messages), the way packing avoids.
2. Throughput on one machine: ``alexnet_mnist`` training steps of a global
   batch of 64 on real MNIST, as 1 process with 2 BLAS threads against
   2 ranks (``mpiexec -n 2``) with 1 thread each, alternated A, B, A, B and
   the median taken, so that both see the same machine.

The driver starts each measurement as a subprocess (``--worker ...``) and
writes ``benchmarks/results/<name>.json`` and ``.md`` only when ``--name`` is
given: an ad-hoc run prints its table and changes nothing.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from .common import machine_info, write_results

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO / ".." / "shared" / "data" / "mnist"
# A launcher's own variables, which must not leak into the processes a new mpiexec starts.
LAUNCHER_PREFIXES = ("PMI_", "PMIX_", "OMPI_", "HYDRA_", "MPIR_", "I_MPI_")


# --------------------------------------------------------------------------- workers (inside mpiexec)


def worker_allreduce(args):
    import minialex as ma  # noqa: PLC0415 - the worker's own imports
    import minialex.distributed as dist  # noqa: PLC0415
    from minialex import models, optim  # noqa: PLC0415

    dist.init_process_group(args.backend)
    device = f"cuda:{dist.get_local_rank()}" if args.device == "cuda" else "cpu"
    ma.manual_seed(0)
    model = models.alexnet().to(device)
    parameters = list(model.parameters())
    for p in parameters:  # a gradient of every parameter's shape, as after backward()
        p.grad = ma.Tensor(p.data * 0 + 1e-3)
    optimizer = dist.DistributedOptimizer(optim.SGD(parameters, lr=0.01))
    group = dist._group
    # synchronize() does nothing alone; its packed path is timed at any world size (one GPU with NCCL).
    synchronize = lambda: optimizer._average_packed(group)  # noqa: E731
    synchronize()  # allocates the packed buffer once, as the first step does
    flat = optimizer._packed.buffers[(parameters[0].device, "float32")]

    def timed(work):
        times = []
        for _ in range(args.repeats + 1):
            dist.barrier()
            start = time.perf_counter()
            work()
            dist.barrier()  # the slower rank decides when the step can go on
            times.append(time.perf_counter() - start)
        return statistics.median(times[1:])

    def per_tensor():
        for p in parameters:
            dist.all_reduce(p.grad.data)

    result = {
        "world_size": dist.get_world_size(),
        "backend": args.backend,
        "device": device,
        "numbers": int(sum(p.size for p in parameters)),
        "tensors": len(parameters),
        "raw_allreduce_s": timed(lambda: dist.all_reduce(flat)),
        "synchronize_s": timed(synchronize),
        "per_tensor_s": timed(per_tensor),
    }
    if dist.get_rank() == 0:
        print(json.dumps(result))
    dist.destroy_process_group()


def worker_train(args):
    import minialex as ma  # noqa: PLC0415
    import minialex.distributed as dist  # noqa: PLC0415
    import minialex.functional as F  # noqa: PLC0415
    from minialex import models, optim  # noqa: PLC0415
    from minialex.data import MNIST, Compose, DataLoader, Normalize, ToFloat  # noqa: PLC0415

    dist.init_process_group("mpi")
    rank, world_size = dist.get_rank(), dist.get_world_size()
    train = MNIST(args.data_dir, train=True, transform=Compose([ToFloat(), Normalize(*Normalize.MNIST)]))
    loader = DataLoader(train, args.batch // world_size, shuffle=True, shard=(rank, world_size), seed=0)
    ma.manual_seed(0)
    model = models.alexnet_mnist()
    optimizer = dist.DistributedOptimizer(optim.SGD(model.parameters(), lr=0.01, momentum=0.9))
    synchronize = optimizer.synchronize
    communication = []

    def timed_synchronize():
        start = time.perf_counter()
        synchronize()
        communication.append(time.perf_counter() - start)

    optimizer.synchronize = timed_synchronize  # the step's share spent averaging gradients
    batches = iter(loader)
    step_times = []
    for _ in range(args.warmup + args.steps):
        images, labels = next(batches)
        dist.barrier()
        start = time.perf_counter()
        loss = F.cross_entropy(model(ma.Tensor(images)), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        step_times.append(time.perf_counter() - start)
    step = statistics.median(step_times[args.warmup:])
    if rank == 0:
        print(json.dumps({"world_size": world_size, "step_s": step, "images_per_s": args.batch / step,
                          "synchronize_s": statistics.median(communication[args.warmup:])}))
    dist.destroy_process_group()


# --------------------------------------------------------------------------- driver


def find_mpiexec():
    beside_python = Path(sys.executable).parent / "mpiexec"
    return str(beside_python) if beside_python.exists() else shutil.which("mpiexec")


def run_worker(ranks, threads, worker_args):
    """Start a worker (under ``mpiexec -n ranks`` when ranks > 1) and return rank 0's JSON line."""
    command = [sys.executable, "-m", "benchmarks.distributed", *worker_args]
    if ranks > 1:
        command = [find_mpiexec(), "-n", str(ranks), *command]
    env = {k: v for k, v in os.environ.items() if not k.startswith(LAUNCHER_PREFIXES)}
    env.update(OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"benchmark worker failed ({' '.join(command)}):\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def mpi_library():
    from mpi4py import MPI  # noqa: PLC0415

    return MPI.Get_library_version().strip().splitlines()[0]


def markdown_report(info, reduce, throughput):
    gigabytes = reduce["numbers"] * 4 / 1e9
    # The ring all-reduce sends and receives 2(N-1)/N of the buffer per rank ("bus bandwidth").
    moved = 2 * (reduce["world_size"] - 1) / reduce["world_size"] * gigabytes
    lines = [
        "# Data-parallel training on the CPU: all-reduce and throughput",
        "",
        f"Machine: {info['cpu']} ({info['isa']}), {info['cores']} cores; Python {info['python']}, NumPy "
        f"{info['numpy']} with {info['blas']}; {info['mpi']}, mpi4py {info['mpi4py']}.",
        "",
        f"## Averaging the paper AlexNet's gradients over {reduce['world_size']} ranks",
        "",
        f"{reduce['numbers']:,} float32 numbers ({gigabytes * 1e3:.0f} MB) in {reduce['tensors']} tensors, "
        f"{reduce['backend']} backend on {reduce['device']}, median of {info['repeats']} (1 thread per rank).",
        "",
        "| what | time (ms) | bus bandwidth (GB/s) |",
        "| --- | ---: | ---: |",
    ]
    for label, key in (("one all-reduce of the packed buffer", "raw_allreduce_s"),
                       ("`DistributedOptimizer.synchronize()` (pack, all-reduce, average, unpack)", "synchronize_s"),
                       ("one all-reduce per tensor", "per_tensor_s")):
        lines.append(f"| {label} | {reduce[key] * 1e3:.1f} | {moved / reduce[key]:.2f} |")
    one, two = throughput["1x2"], throughput["2x1"]
    lines += [
        "",
        "Bus bandwidth = 2(N-1)/N x bytes / time, the bytes each rank sends (and receives) in a ring",
        "all-reduce; on one machine the ranks exchange them through shared memory.",
        "",
        "## MNIST training throughput: 1 process x 2 threads against 2 ranks x 1 thread",
        "",
        f"`alexnet_mnist`, SGD with momentum, global batch {info['batch']} of real MNIST images, median step "
        f"over {info['steps']} steps after {info['warmup']}; the two layouts alternated {info['rounds']} times "
        "each, the median of the runs shown.",
        "",
        "| layout | step (ms) | images/s | gradient averaging (ms a step) |",
        "| --- | ---: | ---: | ---: |",
        f"| 1 process, 2 BLAS threads | {one['step_s'] * 1e3:.1f} | {one['images_per_s']:.0f} | - |",
        f"| 2 ranks, 1 BLAS thread each | {two['step_s'] * 1e3:.1f} | {two['images_per_s']:.0f} | "
        f"{two['synchronize_s'] * 1e3:.1f} |",
        "",
        f"2 ranks / 1 process step time: {two['step_s'] / one['step_s']:.2f} (below 1: the ranks are faster).",
    ]
    return "\n".join(lines)


def median_run(runs):
    """The run with the median step time."""
    return sorted(runs, key=lambda run: run["step_s"])[len(runs) // 2]


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.distributed", description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", default=None, help="write benchmarks/results/<name>.json and .md "
                                                     "(without it the results are only printed)")
    parser.add_argument("--quick", action="store_true", help="fewer repeats and steps")
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA), help="the MNIST files")
    parser.add_argument("--worker", choices=["allreduce", "train"], help=argparse.SUPPRESS)
    parser.add_argument("--backend", default="mpi", choices=["mpi", "nccl"], help="for the all-reduce")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="for the all-reduce")
    parser.add_argument("--repeats", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=64, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=int, default=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.repeats = args.repeats or (3 if args.quick else 10)
    args.steps = args.steps or (5 if args.quick else 30)
    if args.worker == "allreduce":
        return worker_allreduce(args)
    if args.worker == "train":
        return worker_train(args)
    if find_mpiexec() is None:
        raise SystemExit("no mpiexec: pip install -e '.[dist]' (mpi4py and mpich)")

    common = ["--repeats", str(args.repeats), "--steps", str(args.steps), "--batch", str(args.batch),
              "--warmup", str(args.warmup), "--data-dir", args.data_dir]
    reduce = run_worker(2, 1, ["--worker", "allreduce", "--backend", args.backend, "--device", args.device, *common])
    rounds = 1 if args.quick else 3
    runs = {"1x2": [], "2x1": []}
    for _ in range(rounds):  # alternated, so both layouts see the same state of the machine
        runs["1x2"].append(run_worker(1, 2, ["--worker", "train", *common]))
        runs["2x1"].append(run_worker(2, 1, ["--worker", "train", *common]))
    throughput = {layout: median_run(measured) for layout, measured in runs.items()}
    info = {**machine_info(threads=1), "mpi": mpi_library(), "mpi4py": __import__("mpi4py").__version__,
            "repeats": args.repeats, "steps": args.steps, "warmup": args.warmup, "batch": args.batch,
            "rounds": rounds}
    markdown = markdown_report(info, reduce, throughput)
    print(markdown)
    if args.name:
        paths = write_results(args.name, {"machine": info, "allreduce": reduce, "throughput": runs}, markdown)
        print("wrote", *paths)
    return 0


if __name__ == "__main__":
    sys.exit(main())
