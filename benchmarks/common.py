"""Timing, machine description and result files shared by the benchmark scripts.

A results file is published by naming it: ``write_results(name, ...)`` writes
``benchmarks/results/<name>.json`` (the measurements) and ``<name>.md`` (the
table the docs include). Every one records, under its title, the command, the
git commit, the date, the repeats and the machine (CPU model and vector
extensions, GPU). Ratios are always minialex's time / the reference's time:
below 1, minialex is faster.
"""

import datetime
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from minialex.io import atomic_write

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


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


def alternated_median_times(functions, repeats, warmup=1, rewarm=True):
    """Median wall time of each of ``functions``, run in turns: a, b, then b, a, and so on.

    On a shared machine the speed drifts by tens of percent within a minute;
    timing one framework's runs after the other's puts that drift into their
    ratio. Taking turns (the order reversed every round) lets it reach all
    alike. But a run right after the other framework's can be slowed by what
    that one left behind (its threads still spinning, waiting for work: a
    PyTorch ReLU measured 9.1 ms right after minialex's, 3.7 ms after a
    pause), and after an idle pause the first call pays for waking threads
    up. So with ``rewarm`` each timed run comes right after an untimed run of
    the same function: warm, as in a loop of its own. ``warmup`` untimed
    rounds first.
    """
    for _ in range(warmup):
        for function in functions:
            function()
    times = [[] for _ in functions]
    for index in range(repeats):
        order = range(len(functions)) if index % 2 == 0 else reversed(range(len(functions)))
        for which in order:
            if rewarm:
                functions[which]()
            start = time.perf_counter()
            functions[which]()
            times[which].append(time.perf_counter() - start)
    return [statistics.median(runs) for runs in times]


# --------------------------------------------------------------------------- the machine


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


def gpu_name():
    """The name of the first CUDA GPU (through CuPy, else nvidia-smi), or None where there is none."""
    from minialex import backend  # noqa: PLC0415 - the one module that may import CuPy

    try:
        if backend.cuda_available():
            name = backend.cupy_module().cuda.runtime.getDeviceProperties(0)["name"]
            return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:  # a CuPy that imports but cannot talk to the driver
        pass
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    names = smi.stdout.strip().splitlines() if smi.returncode == 0 else []
    return names[0].strip() if names else None


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
        "gpu": gpu_name(),
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


# --------------------------------------------------------------------------- provenance


def git_commit(paths=()):
    """The checkout's commit, marked when tracked files (or those under ``paths``) have uncommitted changes.

    The results in benchmarks/results/ do not count: they are a run's output.
    """
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                                check=True).stdout.strip()
        # The published results are what a run writes, not code it ran: a run right after
        # another (e.g. the CPU suite, then benchmarks.switches) still has a clean commit.
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", *(paths or ["."]),
                                ":(exclude)benchmarks/results"], cwd=REPO,
                               capture_output=True, text=True, check=True).stdout.strip()
        return commit + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


def now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def provenance(repeats=None):
    """What a reader needs to reproduce a results file: the command, the git commit, the date, the repeats."""
    script = sys.argv[0]
    module = Path(script).stem if Path(script).stem != "__main__" else Path(script).parent.name
    command = "python -m " + ("benchmarks" if module == "benchmarks" else f"benchmarks.{module}")
    made = {
        "command": " ".join([command] + [shlex.quote(a) for a in sys.argv[1:]]),
        "commit": git_commit(),
        "date": now(),
    }
    if repeats is not None:
        made["repeats"] = repeats
    return made


def repeats_of(payload):
    """How many timed runs (and warm-up runs) each number of ``payload`` is the median of.

    Read from the provenance where the run recorded it; for the files written
    before it did, worked out from what the payload does record (and said so
    in a "note").
    """
    made = payload.get("provenance") or {}
    if made.get("repeats"):
        return made["repeats"]
    machine = payload.get("machine", {})
    if "settings" in payload:  # the GPU suite records its settings
        s = payload["settings"]
        repeats = {"gpu kernels": {"runs": s["repeats"], "warm-up": s["warmup"]},
                   "gpu training step": {"runs": s["step_repeats"], "warm-up": s["warmup"]}}
        if s.get("cpu"):
            repeats["cpu kernels"] = {"runs": s["cpu_repeats"], "warm-up": 1}
            repeats["cpu training step"] = {"runs": s["cpu_step_repeats"], "warm-up": 1}
        return repeats
    if "allreduce" in payload:  # the data-parallel suite records them with the machine
        return {"all-reduce": {"runs": machine.get("repeats"), "warm-up": 1},
                "training": {"steps": machine.get("steps"), "warm-up": machine.get("warmup"),
                             "rounds": machine.get("rounds")}}
    runs = 3 if payload.get("quick") else 7
    if "memory" in payload:  # the CPU suite
        how = "--quick" if payload.get("quick") else "no --quick"
        return {"kernels": {"runs": runs, "warm-up": 1}, "training step": {"runs": runs, "warm-up": 2},
                "memory": {"steps": 3},
                "note": f"not recorded by the run: the suite's counts with {how}"}
    return {"kernels": "7 runs after 1 warm-up, or 3 with --quick",
            "note": "not recorded by the run, nor whether --quick was given"}


def format_repeats(repeats):
    """{"kernels": {"runs": 7, "warm-up": 1}, ...} as "kernels: 7 runs, 1 warm-up; ..."."""
    parts = []
    for what, counts in repeats.items():
        if what == "note":
            continue
        if isinstance(counts, dict):
            counts = ", ".join(f"{value} {key}" for key, value in counts.items() if value is not None)
        parts.append(f"{what}: {counts}")
    text = "; ".join(parts)
    return f"{text} ({repeats['note']})" if repeats.get("note") else text


def header(payload, rerendered=None):
    """The lines under a results file's title: command, commit, date; repeats; CPU, ISA and GPU.

    ``rerendered`` (a dict with "date" and "commit") adds a line saying when
    and by which code the markdown was made again from the JSON.
    """
    made = payload.get("provenance") or {}
    if made.get("command"):
        lines = [f"Command: `{made['command']}`; commit {made['commit']}; {made['date']}."]
    else:
        lines = [f"Command, commit and date: not recorded. {made.get('note', '')}".rstrip()]
    machine = payload.get("machine", {})

    def field(key):
        value = machine.get(key, "not recorded")
        return "none" if value is None else value

    lines.append(f"Repeats: {format_repeats(repeats_of(payload))}.")
    lines.append(f"CPU: {field('cpu')} (ISA: {field('isa')}); GPU: {field('gpu')}.")
    if rerendered:
        lines.append(f"This markdown was rendered again from the JSON on {rerendered['date']} at commit "
                     f"{rerendered['commit']}; the numbers are those of the run above.")
    return "\n".join(lines)


def with_header(markdown, payload, rerendered=None):
    """``markdown`` with the provenance ``header`` inserted below its title line."""
    title, _, rest = markdown.partition("\n")
    return f"{title}\n\n{header(payload, rerendered)}\n{rest}"


def write_results(name, payload, markdown, repeats=None):
    """Publish ``results/<name>.json`` and ``results/<name>.md``; return the two paths.

    Both record the command, the git commit, the date and the repeats (the
    markdown also the CPU and GPU) under the title, so a results file always
    says how it was made. Each file is written whole or not at all
    (``minialex.io.atomic_write``).
    """
    if not NAME.fullmatch(name):
        raise ValueError(f"a results name is a plain file name (letters, digits, '.', '_', '-'), got {name!r}")
    json_path, md_path = RESULTS / f"{name}.json", RESULTS / f"{name}.md"
    payload = {"provenance": provenance(), **payload}
    payload["provenance"]["repeats"] = repeats if repeats is not None else repeats_of(payload)
    with atomic_write(json_path, "w") as file:
        file.write(json.dumps(payload, indent=2) + "\n")
    with atomic_write(md_path, "w") as file:
        file.write(with_header(markdown, payload) + "\n")
    return json_path, md_path


def report_published(name, payload, report, repeats=None):
    """Publish a named run (``write_results``), then print its report and where it was written."""
    json_path, md_path = write_results(name, payload, report, repeats=repeats)
    print(report)
    print(f"\nwritten: {json_path} and {md_path}")
    return json_path, md_path


def report_unpublished(report, prog, example=None):
    """Print an ad-hoc run's report and say that nothing was written, and how to publish a run."""
    print(report)
    print(f"\nNothing written: only a named run is published (`{prog} ... --name NAME` writes "
          f"benchmarks/results/NAME.json and .md{f', e.g. --name {example}' if example else ''}).")


# --------------------------------------------------------------------------- formatting


def milliseconds(seconds):
    return "-" if seconds is None else f"{seconds * 1e3:.1f}"


def ratio(ours, theirs):
    """minialex's time / the reference's time (below 1: minialex is faster); None where either is missing."""
    return None if ours is None or not theirs else ours / theirs


def format_ratio(value):
    """A ratio with two decimals, or two significant digits below 0.1 (0.0055, not 0.01)."""
    if value is None:
        return "-"
    return f"{value:.2f}" if value >= 0.095 else f"{value:.2g}"
