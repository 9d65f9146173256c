"""``python -m benchmarks``: the CPU suite (kernels, training steps, memory), or ``--profile``.

Without ``--name`` the run prints its tables and writes nothing; ``--name NAME``
publishes them as ``benchmarks/results/NAME.json`` and ``.md``.
"""

import argparse
import json
import os
import subprocess
import sys

from .common import format_ratio, machine_info, milliseconds, ratio, report_published, report_unpublished
from .cpu import kernel_benchmarks, train_step_benchmarks
from .layer_profile import format_profile, minialex_profile, torch_profile


def _load_torch(threads):
    try:
        import torch  # noqa: PLC0415 - the optional 'bench' extra
    except ImportError:
        print("PyTorch is not installed: reporting minialex alone (pip install -e '.[bench]' to compare)")
        return None
    torch.set_num_threads(threads)
    return torch


def _peak_rss(framework, batch, threads):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, "-m", "benchmarks.rss", framework, str(batch), str(threads)],
                            capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        return {"error": result.stderr.strip().splitlines()[-1] if result.stderr else "failed"}
    return json.loads(result.stdout.strip().splitlines()[-1])


def markdown_report(info, kernels, steps, memory):
    lines = [
        "# minialex CPU benchmarks",
        "",
        f"Machine: {info['cpu']} ({info['isa']}), {info['cores']} cores, {info['threads']} threads for both; "
        f"BLAS {info['blas']}; NumPy {info['numpy']}; PyTorch {info['torch']}; Python {info['python']}.",
        "Medians after warm-up, minialex and PyTorch side by side in one run. Ratio = minialex / PyTorch "
        "(below 1: minialex faster).",
    ]
    if kernels:
        lines += [
            "",
            "## Kernels (AlexNet paper shapes)",
            "",
            "| kernel | batch | fwd ms | torch fwd ms | fwd ratio | bwd ms | torch bwd ms | bwd ratio | fwd+bwd ratio |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
    for row in kernels:
        both = (row["minialex_forward"] + (row["minialex_backward"] or 0),
                (row["torch_forward"] or 0) + (row["torch_backward"] or 0) if row["torch_forward"] else None)
        lines.append(
            f"| {row['kernel']} | {row['batch']} | {milliseconds(row['minialex_forward'])} | "
            f"{milliseconds(row['torch_forward'])} | {format_ratio(ratio(row['minialex_forward'], row['torch_forward']))} | "
            f"{milliseconds(row['minialex_backward'])} | {milliseconds(row['torch_backward'])} | "
            f"{format_ratio(ratio(row['minialex_backward'], row['torch_backward']))} | "
            f"{format_ratio(ratio(*both))} |"
        )
    if steps:
        lines += ["", "## Whole training step (paper AlexNet: fwd + loss + bwd + SGD momentum 0.9, wd 5e-4)", "",
                  "| batch | minialex ms | torch ms | ratio |", "| ---: | ---: | ---: | ---: |"]
    for row in steps:
        lines.append(f"| {row['batch']} | {milliseconds(row['minialex'])} | {milliseconds(row['torch'])} | "
                     f"{format_ratio(ratio(row['minialex'], row['torch']))} |")
    if memory:
        lines += ["", "## Peak memory of a training step (fresh process each, 3 steps)", "",
                  "| framework | batch | peak RSS MiB | RSS after building the model MiB |", "| --- | ---: | ---: | ---: |"]
        for row in memory:
            if "error" in row:
                lines.append(f"| {row.get('framework', '?')} | | error: {row['error']} | |")
            else:
                lines.append(f"| {row['framework']} | {row['batch']} | {row['peak_rss_mib']:.0f} | "
                             f"{row['rss_after_build_mib']:.0f} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="batch 16 only, fewer repeats")
    parser.add_argument("--profile", action="store_true", help="print a per-layer profile of one training step")
    parser.add_argument("--batch", type=int, default=16, help="batch size of the kernel benchmarks and the profile")
    parser.add_argument("--batches", type=int, nargs="+", default=None,
                        help="batch sizes of the training step (default 16 64; 16 with --quick), e.g. 8 16 32 64")
    parser.add_argument("--steps-only", action="store_true", help="the training step alone: no kernels, no memory")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for PyTorch (NumPy's BLAS uses its default)")
    parser.add_argument("--kernels", nargs="*", help="only these kernels (e.g. conv2 lrn1), and no training step")
    parser.add_argument("--name", default=None,
                        help="publish as benchmarks/results/<name>.json and .md (without it the run only prints)")
    parser.add_argument("--no-torch", action="store_true", help="minialex alone")
    args = parser.parse_args(argv)
    torch = None if args.no_torch else _load_torch(args.threads)
    repeats = 3 if args.quick else 7

    if args.profile:
        rows = minialex_profile(args.batch, repeats)
        torch_rows = torch_profile(torch, args.batch, repeats) if torch else None
        print(f"Per-layer profile, paper AlexNet, batch {args.batch} (ms, medians of {repeats})")
        print(format_profile(rows, torch_rows))
        return 0

    info = machine_info(args.threads)
    print(f"machine: {info}", flush=True)
    kernels = [] if args.steps_only else kernel_benchmarks(args.batch, repeats, torch, args.kernels)
    batches = args.batches or ([16] if args.quick else [16, 64])
    steps = [] if args.kernels else train_step_benchmarks(batches, repeats, torch)
    memory = []
    if not args.kernels and not args.steps_only:
        for framework in (["minialex", "torch"] if torch else ["minialex"]):
            memory.append(_peak_rss(framework, 16, args.threads))
    payload = {"suite": "cpu", "machine": info, "quick": args.quick, "kernels": kernels, "train_step": steps,
               "memory": memory}
    report = markdown_report(info, kernels, steps, memory)
    if not args.name:
        report_unpublished(report, "python -m benchmarks")
        return 0
    counts = {"kernels": {"runs": repeats, "warm-up": 1}, "training step": {"runs": repeats, "warm-up": 2},
              "memory": {"steps": 3}}
    report_published(args.name, payload, report, repeats=counts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
