"""Timing, machine description and result files shared by the benchmark scripts."""

import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def median_time(function, repeats, warmup=1):
    """Median wall time of ``function()`` over ``repeats`` runs after ``warmup`` untimed runs."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def cpu_model():
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_isa():
    """The vector extensions that decide BLAS speed: AVX2, AVX-512 (F), AMX, from /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo") as file:
            flags = next((line.split(":", 1)[1].split() for line in file if line.startswith("flags")), [])
    except OSError:
        return platform.machine()
    names = {"avx2": "AVX2", "avx512f": "AVX-512", "amx_tile": "AMX"}
    present = [name for flag, name in names.items() if flag in flags]
    return ", ".join(present) or platform.machine()


def provenance():
    """What a reader needs to reproduce a results file: the command, the git commit, the date."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
        commit += " (with uncommitted changes)" if dirty else ""
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown (not a git checkout)"
    script = sys.argv[0]
    module = Path(script).stem if Path(script).stem != "__main__" else Path(script).parent.name
    command = "python -m " + ("benchmarks" if module == "benchmarks" else f"benchmarks.{module}")
    return {
        "command": " ".join([command] + [shlex.quote(a) for a in sys.argv[1:]]),
        "commit": commit,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def blas_name():
    try:
        config = np.show_config(mode="dicts")
        blas = config["Build Dependencies"]["blas"]
        return f"{blas.get('name')} {blas.get('version')}"
    except Exception:  # older NumPy: no dict mode
        return "unknown"


def machine_info(threads):
    info = {
        "cpu": cpu_model(),
        "isa": cpu_isa(),
        "cores": os.cpu_count(),
        "threads": threads,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "blas": blas_name(),
    }
    try:
        import torch  # noqa: PLC0415 - optional

        info["torch"] = torch.__version__
    except ImportError:
        info["torch"] = None
    return info


def write_results(name, payload, markdown):
    """Write ``results/<name>.json`` and ``results/<name>.md``; return the two paths.

    Both record the command, the git commit and the date under the title, so a
    results file always says how it was made.
    """
    RESULTS.mkdir(parents=True, exist_ok=True)
    json_path, md_path = RESULTS / f"{name}.json", RESULTS / f"{name}.md"
    made = provenance()
    payload = {"provenance": made, **payload}
    title, _, rest = markdown.partition("\n")
    markdown = f"{title}\n\nCommand: `{made['command']}`; commit {made['commit']}; {made['date']}.\n{rest}"
    json_path.write_text(json.dumps(payload, indent=2) + "\n")
    md_path.write_text(markdown + "\n")
    return json_path, md_path


def milliseconds(seconds):
    return "-" if seconds is None else f"{seconds * 1e3:.1f}"


def ratio(ours, theirs):
    return None if ours is None or not theirs else ours / theirs
