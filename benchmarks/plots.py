"""Plots of the published results, drawn from their JSON and written beside them as PNG.

    python -m benchmarks.plots                       # every benchmarks/results/*.json that has plots
    python -m benchmarks.plots cpu-2core-amd-epyc    # one results file
    python -m benchmarks.plots --out /tmp/plots      # somewhere else

A plot is named after the results file it comes from, ``<name>-<plot>.png``:

    <name>-ratios.png   per kernel, forward and backward time ratios, minialex / reference (below 1: minialex
                        faster), on a log axis with a line at 1 (CPU and GPU suites, DeZero and Chainer)
    <name>-kernels.png  per kernel, absolute forward and backward times in ms on a log axis: minialex and
                        PyTorch on the CPU; or minialex on the CPU, on the GPU (generic and fast paths)
                        and PyTorch CUDA; or minialex, DeZero and Chainer
    <name>-step.png     training step time against batch size, where the file holds two batch sizes or more
    <name>-fastpaths.png per CPU fast path, the kernel's time with the switch off (the clear version)
                        and on, and the training step's (the switches suite)

Needs matplotlib (the ``plot`` extra); draws with the Agg backend, no display.
"""

import argparse
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from . import common  # noqa: E402
from .render import suite_of  # noqa: E402

DPI = 100
COLORS = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def load(name):
    """The payload of ``benchmarks/results/<name>.json``."""
    return json.loads((common.RESULTS / f"{name}.json").read_text(encoding="utf-8"))


def _source(figure, name):
    figure.text(0.99, 0.005, f"from benchmarks/results/{name}.json", ha="right", va="bottom", fontsize=7,
                color="#555555")


def _time(row, prefix, part):
    return row.get(f"{prefix}_{part}")


# --------------------------------------------------------------------------- what each suite compares


def ratio_panels(payload):
    """[(panel title, ours prefix, reference prefix)]: the time ratios a results file shows, per kernel."""
    suite = suite_of(payload)
    if suite == "cpu":
        return [("minialex / PyTorch, CPU", "minialex", "torch")]
    if suite == "gpu":
        return [("minialex fast paths / PyTorch CUDA", "fast", "torch"),
                ("minialex fast paths / minialex generic CuPy path", "fast", "generic")]
    if suite == "engines":
        return [("minialex / DeZero", "minialex", "dezero"), ("minialex / Chainer", "minialex", "chainer")]
    return []


def time_series(payload):
    """[(legend label, prefix)]: the absolute times per kernel a results file holds."""
    suite = suite_of(payload)
    if suite == "cpu":
        return [("minialex, CPU", "minialex"), ("PyTorch, CPU", "torch")]
    if suite == "gpu":
        return [("minialex, CPU (NumPy)", "cpu"), ("minialex, GPU generic CuPy", "generic"),
                ("minialex, GPU fast paths", "fast"), ("PyTorch, CUDA", "torch")]
    if suite == "engines":
        return [("minialex", "minialex"), ("DeZero", "dezero"), ("Chainer", "chainer")]
    return []


def _batch_text(payload):
    batches = sorted({row["batch"] for row in payload.get("kernels", []) if row.get("batch") is not None})
    return "batch " + ", ".join(map(str, batches)) if batches else ""


# --------------------------------------------------------------------------- the figures


def _log_ticks(ax, low, high):
    ticks = [2.0 ** k for k in range(-12, 13) if low <= 2.0 ** k <= high]
    ax.set_yticks(ticks)
    ax.set_yticklabels([f"{t:g}" if t >= 1 / 64 else f"1/{1 / t:.0f}" for t in ticks])
    ax.minorticks_off()


def ratio_figure(payload, name):
    """Per-kernel forward and backward ratios, minialex / reference, as bars from the line at 1 (log axis)."""
    panels = ratio_panels(payload)
    rows = payload["kernels"]
    kernels = [row["kernel"] for row in rows]
    figure, axes = plt.subplots(len(panels), 1, figsize=(10, 3.6 * len(panels)), squeeze=False)
    x = np.arange(len(kernels))
    values = []
    for ax, (title, ours, theirs) in zip(axes[:, 0], panels):
        for offset, part, color in ((-0.2, "forward", COLORS[0]), (0.2, "backward", COLORS[1])):
            ratios = [common.ratio(_time(row, ours, part), _time(row, theirs, part)) for row in rows]
            present = [(i, r) for i, r in enumerate(ratios) if r]
            values += [r for _, r in present]
            if present:
                where, heights = zip(*present)
                ax.bar(np.array(where) + offset, np.array(heights) - 1, bottom=1, width=0.4, color=color,
                       label=part)
        for i, row in enumerate(rows):
            if _time(row, theirs, "forward") is None:  # e.g. DeZero has no LRN: no bar
                ax.text(i, 1.08, "not measured", rotation=90, ha="center", va="bottom", fontsize=7,
                        color="#555555")
        ax.axhline(1, color="black", lw=0.8)
        ax.set_yscale("log")
        ax.set_title(f"{title} ({_batch_text(payload)}): below 1, minialex is faster", fontsize=10)
        ax.set_ylabel("time ratio")
        ax.set_xticks(x)
        ax.set_xticklabels(kernels, rotation=40, ha="right", fontsize=8)
        ax.set_xlim(-0.6, len(kernels) - 0.4)
        ax.grid(axis="y", color="#dddddd", lw=0.6)
        ax.set_axisbelow(True)
        ax.legend(fontsize=8, loc="upper left")
    reach = max([abs(np.log2(v)) for v in values] + [1.0]) * 1.1
    for ax in axes[:, 0]:
        ax.set_ylim(2.0 ** -reach, 2.0 ** reach)
        _log_ticks(ax, 2.0 ** -reach, 2.0 ** reach)
    figure.tight_layout(rect=(0, 0.02, 1, 1))
    _source(figure, name)
    return figure


def kernels_figure(payload, name):
    """Per-kernel forward and backward times in ms, one bar per path or framework (log axis)."""
    series = [(label, prefix) for label, prefix in time_series(payload)
              if any(_time(row, prefix, "forward") is not None for row in payload["kernels"])]
    rows = payload["kernels"]
    kernels = [row["kernel"] for row in rows]
    x = np.arange(len(kernels))
    width = 0.8 / len(series)
    figure, axes = plt.subplots(2, 1, figsize=(10, 7.2), sharex=True)
    for ax, part in zip(axes, ("forward", "backward")):
        for index, (label, prefix) in enumerate(series):
            times = [(i, _time(row, prefix, part)) for i, row in enumerate(rows)]
            times = [(i, t * 1e3) for i, t in times if t]
            if times:
                where, ms = zip(*times)
                ax.bar(np.array(where) + (index - (len(series) - 1) / 2) * width, ms, width=width,
                       color=COLORS[index % len(COLORS)], label=label)
        ax.set_yscale("log")
        ax.set_ylabel(f"{part} ms")
        ax.set_title(f"{part}, {_batch_text(payload)}", fontsize=10)
        ax.grid(axis="y", color="#dddddd", lw=0.6, which="both")
        ax.set_axisbelow(True)
    axes[1].set_xticks(x)
    axes[1].set_xticklabels(kernels, rotation=40, ha="right", fontsize=8)
    axes[1].set_xlim(-0.6, len(kernels) - 0.4)
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, fontsize=8, ncol=len(series), loc="upper center", frameon=False)
    figure.tight_layout(rect=(0, 0.02, 1, 0.96))
    _source(figure, name)
    return figure


def step_figure(payload, name):
    """Training step time against batch size (log-log), with the line of time proportional to the batch."""
    rows = sorted(payload["train_step"], key=lambda row: row["batch"])
    batches = np.array([row["batch"] for row in rows])
    figure, ax = plt.subplots(figsize=(6.4, 4.4))
    shown = []
    for index, (label, key, below) in enumerate((("minialex", "minialex", True), ("PyTorch", "torch", False))):
        ms = [row.get(key) for row in rows]
        if any(m is None for m in ms):
            continue
        ms = np.array(ms) * 1e3
        shown += list(ms)
        ax.plot(batches, ms, "o-", color=COLORS[index], label=f"{label}, CPU")
        for i, (b, m) in enumerate(zip(batches, ms)):
            last = i == len(batches) - 1
            ax.annotate(f"{m:.0f} ms ({m / b:.1f} ms an image)", (b, m), textcoords="offset points",
                        xytext=(-8 if last else 8, -12 if below else 6), ha="right" if last else "left",
                        fontsize=7, color=COLORS[index])
    first = rows[0]["minialex"] * 1e3
    ax.plot(batches, first * batches / batches[0], ":", color="#777777",
            label=f"minialex's batch-{batches[0]} time x batch / {batches[0]}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(batches)
    ax.set_xticklabels([str(b) for b in batches])
    low, high = min(shown + [first]), max(shown + [first * batches[-1] / batches[0]])
    ticks = [m * 10 ** e for e in range(0, 7) for m in (1, 2, 5) if low / 1.5 <= m * 10 ** e <= high * 1.5]
    ax.set_yticks(ticks)
    ax.set_yticklabels([f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.set_xlim(batches[0] / 1.4, batches[-1] * 1.4)
    ax.set_ylim(low / 1.5, high * 1.5)
    ax.set_xlabel("batch size")
    ax.set_ylabel("training step, ms")
    ax.set_title(f"Paper AlexNet training step (fwd + loss + bwd + SGD), {len(batches)} batch sizes", fontsize=10)
    ax.grid(color="#dddddd", lw=0.6)
    ax.legend(fontsize=8, loc="upper left")
    figure.tight_layout(rect=(0, 0.03, 1, 1))
    _source(figure, name)
    return figure


def before_after_figure(payload, name):
    """Per fast path and kernel, its time as a fraction of the clear version's (bars at 1 and at the ratio)."""
    kernels = payload["kernels"]
    steps = payload.get("train_step") or []
    rows = [(f"{row['kernel']} {row['part']}\n{row['switch']}", row, 1e3, "ms") for row in kernels]
    rows += [(f"training step, batch {row['batch']}\nswitch off: {row['switch']}", row, 1.0, "s") for row in steps]
    figure, ax = plt.subplots(figsize=(8, 0.55 * len(rows) + 1.4))
    y = np.arange(len(rows))[::-1]
    ratios = np.array([row["ratio"] for _, row, _, _ in rows])
    ax.barh(y + 0.2, np.ones(len(rows)), height=0.4, color="#999999", label="before: the clear version (switch off)")
    ax.barh(y - 0.2, ratios, height=0.4, color=COLORS[0], label="after: the fast path (switch on)")
    for where, (_, row, scale, unit) in zip(y, rows):
        ax.text(max(1.0, row["ratio"]) + 0.02, where,
                f"{row['before'] * scale:.3g} -> {row['after'] * scale:.3g} {unit}  ({row['ratio']:.2f})",
                va="center", fontsize=7)
    if steps:
        ax.axhline(len(steps) - 0.5, color="#555555", lw=0.6)
    ax.axvline(1, color="black", lw=0.8)
    ax.set_yticks(y)
    ax.set_yticklabels([label for label, _, _, _ in rows], fontsize=7)
    ax.set_xlim(0, max(1.0, ratios.max()) * 1.45)
    ax.set_xlabel("time / the clear version's time (medians of alternated pairs)")
    ax.set_title(f"CPU fast paths against their clear versions, {_batch_text(payload)}", fontsize=10, pad=22)
    ax.grid(axis="x", color="#dddddd", lw=0.6)
    ax.set_axisbelow(True)
    ax.legend(fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False)
    figure.tight_layout(rect=(0, 0.02, 1, 1))
    _source(figure, name)
    return figure


def figures(payload, name):
    """{plot name: figure} for every plot the results file can give (none for the data-parallel suite)."""
    made = {}
    if suite_of(payload) == "switches":
        return {"fastpaths": before_after_figure(payload, name)} if payload.get("kernels") else {}
    if ratio_panels(payload) and payload.get("kernels"):
        made["ratios"] = ratio_figure(payload, name)
        made["kernels"] = kernels_figure(payload, name)
    steps = payload.get("train_step")
    if isinstance(steps, list) and len({row["batch"] for row in steps}) >= 2:
        made["step"] = step_figure(payload, name)
    return made


def write_png(figure, path):
    """Save ``figure`` as a PNG at ``path``, whole or not at all, and close it."""
    with common.atomic_write(path) as file:
        figure.savefig(file, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(figure)
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.plots", description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="results names (default: every benchmarks/results/*.json)")
    parser.add_argument("--out", default=None, help="folder for the PNGs (default: beside the results)")
    args = parser.parse_args(argv)
    names = args.names or sorted(path.stem for path in common.RESULTS.glob("*.json"))
    out = common.Path(args.out) if args.out else common.RESULTS
    for name in names:
        for plot, figure in figures(load(name), name).items():
            print("wrote", write_png(figure, out / f"{name}-{plot}.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
