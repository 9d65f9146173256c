"""``python -m benchmarks.switches``: every CPU fast path against the clear version beside it.

Each fast path in ``minialex.kernels`` sits behind a switch named for what it
does (``phases_on_cpu``, ``one_pass_on_cpu``, ``scatter_on_cpu``,
``wide_rows_on_cpu``, ``batch_innermost_on_cpu``, ``in_chunks_on_cpu``, the column reuse of
``release_columns``, and ``threads``: the elementwise work split over the
cores, or not, ``minialex.kernels.threads.set_num_threads``). This script times the kernels each one touches, on the paper AlexNet's shapes,
with the switch off (the clear version: "before") and on (the fast path:
"after"), and then the whole training step with each switch off in turn and
with all those on by default off. The two settings run in alternated pairs (off-on,
on-off, ...), so the drift of a shared machine lands on both alike; the
ratio is the median of the pairs' after / before (below 1: the fast path
takes less time).

    python -m benchmarks.switches                          # prints, writes nothing
    python -m benchmarks.switches --name switches-2core-amd-epyc
    python -m benchmarks.switches --quick --no-step        # kernels only, fewer pairs
"""

import argparse
import contextlib
import functools
import statistics
import sys
import time

import numpy as np

from minialex.kernels import conv, lrn, pool, sgd, threads
from minialex.optim import sgd as sgd_optimizer

from .common import format_ratio, machine_info, milliseconds, report_published, report_unpublished
from .cpu import minialex_train_step
from .layers import LAYERS

SWITCHES = {
    "column reuse": "im2col refills the columns a finished Conv2d released (release_columns), "
                    "instead of fresh memory",
    "phases_on_cpu": "im2col with a stride above 1: split the image into its stride phases first, so every "
                     "offset copies contiguous rows",
    "one_pass_on_cpu": "max-pool forward: running maximum and argmax in one pass per window offset",
    "scatter_on_cpu": "max-pool backward: np.add.at in cache-sized chunks of planes instead of a masked "
                      "slice-add per offset",
    "wide_rows_on_cpu": "conv input gradient, stride 1: the dcol GEMM on rows widened to the padded width "
                        "(off by default: measured no faster)",
    "batch_innermost_on_cpu": "conv input gradient: dcol's columns ordered (y, x, n), the batch innermost, so "
                              "col2im adds runs of ow*N values instead of rows of ow",
    "in_chunks_on_cpu": "SGD: the update in chunks of 32,768 elements that stay in cache",
    "threads": "the elementwise work (copies, col2im, LRN, pooling, ReLU, the SGD chunks) split over the cores, "
               "instead of one thread",
}


# Measured no faster than its clear version, so off unless asked for (see SWITCHES).
OFF_BY_DEFAULT = {"wide_rows_on_cpu"}


@contextlib.contextmanager
def switched(name, on):
    """Run the body with fast path ``name`` on or off everywhere the training step reaches it."""
    if name == "threads":
        kept = threads.get_num_threads()
        threads.set_num_threads(threads.available_cores() if on else 1)
        try:
            yield
        finally:
            threads.set_num_threads(kept)
        return
    if name == "column reuse":
        kept = conv.MAX_FREE_COLUMNS
        conv.MAX_FREE_COLUMNS = kept if on else 0  # release_columns then keeps nothing
        conv.clear_released_columns()
        try:
            yield
        finally:
            conv.MAX_FREE_COLUMNS = kept
        return
    module, function = {"phases_on_cpu": (conv, "im2col"),
                        "one_pass_on_cpu": (pool, "max_pool2d_forward"),
                        "scatter_on_cpu": (pool, "max_pool2d_backward"),
                        "wide_rows_on_cpu": (conv, "conv2d_backward"),
                        "batch_innermost_on_cpu": (conv, "conv2d_backward"),
                        "in_chunks_on_cpu": (sgd_optimizer, "sgd_update")}[name]
    original = getattr(module, function)
    setattr(module, function, functools.partial(original, **{name: on}))
    try:
        yield
    finally:
        setattr(module, function, original)


# --------------------------------------------------------------------------- the kernels each switch touches


def _conv_case(spec, x, rng, part):
    """run(on) for one conv layer's forward (column reuse, or phases) or backward (wide rows, batch innermost)."""
    weight = (rng.standard_normal((spec["out"], x.shape[1] // spec["groups"], spec["k"], spec["k"])) * 0.01
              ).astype(np.float32)
    bias = np.zeros(spec["out"], np.float32)
    stride, padding = (spec["stride"],) * 2, (spec["pad"],) * 2
    state = {}

    def forward():
        state["out"], state["cache"] = conv.conv2d_forward(x, weight, bias, stride, padding, spec["groups"])

    forward()
    dout = rng.standard_normal(state["out"].shape).astype(np.float32)
    if part == "phases":
        def run(on):
            conv.release_columns(state["cache"])
            with switched("phases_on_cpu", on):
                forward()
        return run
    if part == "forward":
        def run(on):
            with switched("column reuse", on):
                # As the autograd does after a backward: the finished layer's columns go back.
                conv.release_columns(state["cache"])
                forward()
        return run
    if part == "innermost":
        return lambda on: conv.conv2d_backward(dout, state["cache"], batch_innermost_on_cpu=on)
    return lambda on: conv.conv2d_backward(dout, state["cache"], wide_rows_on_cpu=on)


def _pool_case(x, rng, part):
    out, cache = pool.max_pool2d_forward(x, (3, 3), (2, 2), (0, 0))
    dout = rng.standard_normal(out.shape).astype(np.float32)
    if part == "forward":
        return lambda on: pool.max_pool2d_forward(x, (3, 3), (2, 2), (0, 0), one_pass_on_cpu=on)
    return lambda on: pool.max_pool2d_backward(dout, cache, scatter_on_cpu=on)


def _sgd_case(rng):
    """fc6's weight, 4096 x 9216 = 37.7 M parameters: 62% of AlexNet's."""
    param = rng.standard_normal((4096, 9216)).astype(np.float32)
    grad = rng.standard_normal(param.shape).astype(np.float32)
    buffer = np.zeros_like(param)
    scratch = np.empty_like(param)

    def run(on):
        sgd.sgd_update(param, grad, buffer, scratch, lr=1e-6, momentum=0.9, weight_decay=5e-4, in_chunks_on_cpu=on)
    return run


def kernel_cases(batch, rng, names=None):
    """Yield (switch, kernel, part, run(on)) on the paper AlexNet's shapes at ``batch``, only for ``names``.

    One case at a time, each built when it is reached: a case's arrays go
    once the caller has timed it (at batch 64, all of them at once would not
    fit in 24 GiB).
    """
    def wanted(kernel):
        return not names or kernel in names

    for name, kind, shape, spec in LAYERS:
        if not wanted(name):
            continue
        x = rng.standard_normal((batch, *shape)).astype(np.float32)
        if kind == "conv" and spec["stride"] > 1:  # conv1, stride 4
            yield "phases_on_cpu", name, "forward", _conv_case(spec, x, rng, "phases")
        if kind == "conv" and name == "conv2":
            yield "column reuse", name, "forward", _conv_case(spec, x, rng, "forward")
        if kind == "conv" and name in ("conv2", "conv5"):  # stride 1: 5x5 on 27x27 and 3x3 on 13x13
            yield "wide_rows_on_cpu", name, "backward", _conv_case(spec, x, rng, "backward")
        if kind == "conv" and name != "conv1":  # conv1 needs no input gradient
            yield "batch_innermost_on_cpu", name, "backward", _conv_case(spec, x, rng, "innermost")
        if kind == "pool":
            yield "one_pass_on_cpu", name, "forward", _pool_case(x, rng, "forward")
            yield "scatter_on_cpu", name, "backward", _pool_case(x, rng, "backward")
    if wanted("sgd_fc6"):
        yield "in_chunks_on_cpu", "sgd_fc6", "update", _sgd_case(rng)
    yield from _threads_cases(batch, rng, wanted)


def _threads_cases(batch, rng, wanted):
    """LRN1, pool1 and conv2 (whose GEMMs the BLAS spreads over the cores anyway) on one thread and on all."""
    specs = {name: (shape, spec) for name, _, shape, spec in LAYERS}
    if wanted("lrn1") or wanted("pool1"):
        x = rng.standard_normal((batch, *specs["lrn1"][0])).astype(np.float32)
    if wanted("lrn1"):
        out, cache = lrn.local_response_norm_forward(x, 5, 1e-4, 0.75, 2.0)
        dout = rng.standard_normal(out.shape).astype(np.float32)
        yield "threads", "lrn1", "forward", _on_threads(lambda: lrn.local_response_norm_forward(x, 5, 1e-4, 0.75, 2.0))
        yield "threads", "lrn1", "backward", _on_threads(lambda: lrn.local_response_norm_backward(dout, cache))
    if wanted("pool1"):
        yield "threads", "pool1", "forward", _on_threads(lambda: pool.max_pool2d_forward(x, 3, 2, 0))
    if wanted("conv2"):
        shape, spec = specs["conv2"]
        conv2 = rng.standard_normal((batch, *shape)).astype(np.float32)
        forward = _conv_case(spec, conv2, rng, "forward")
        yield "threads", "conv2", "forward", _on_threads(lambda: forward(True))
        backward = _conv_case(spec, conv2, rng, "backward")
        yield "threads", "conv2", "backward", _on_threads(lambda: backward(False))  # the default backward


def _on_threads(work):
    def run(on):
        with switched("threads", on):
            work()
    return run


def paired_times(run, pairs, warmup=1):
    """Times of run(False) and run(True) in ``pairs`` alternated pairs: (before list, after list)."""
    for _ in range(warmup):
        run(False)
        run(True)
    before, after = [], []
    for index in range(pairs):
        for on in ((False, True) if index % 2 == 0 else (True, False)):
            start = time.perf_counter()
            run(on)
            (after if on else before).append(time.perf_counter() - start)
    return before, after


def summary(before, after):
    return {"before": statistics.median(before), "after": statistics.median(after),
            "ratio": statistics.median(a / b for a, b in zip(after, before)),
            "pairs": len(before)}


def kernel_rows(batch, pairs, names=None):
    rows = []
    for switch, kernel, part, run in kernel_cases(batch, np.random.default_rng(0), names):
        rows.append({"switch": switch, "kernel": kernel, "part": part, "batch": batch,
                     **summary(*paired_times(run, pairs))})
        print(f"{switch:18s} {kernel:8s} {part:8s} {rows[-1]['before'] * 1e3:8.1f} -> "
              f"{rows[-1]['after'] * 1e3:8.1f} ms, ratio {rows[-1]['ratio']:.2f}", flush=True)
    return rows


def step_rows(batch, pairs):
    """The whole training step with each switch off in turn, and with every switch off, against all on."""
    step = minialex_train_step(batch)
    rows = []
    on_by_default = [name for name in SWITCHES if name not in OFF_BY_DEFAULT]
    for switches in [[name] for name in SWITCHES] + [on_by_default]:
        def run(on, switches=switches):
            with contextlib.ExitStack() as stack:
                for name in switches:
                    stack.enter_context(switched(name, on))
                step()
        label = "all on by default" if len(switches) > 1 else switches[0]
        rows.append({"switch": label, "batch": batch, **summary(*paired_times(run, pairs))})
        print(f"step, {label:18s} off -> on: {rows[-1]['before']:.3f} -> {rows[-1]['after']:.3f} s, "
              f"ratio {rows[-1]['ratio']:.3f}", flush=True)
    return rows


def markdown_report(info, kernels, steps, descriptions=None):
    """The results as Markdown; ``descriptions``: the switches as described when measured (default SWITCHES)."""
    lines = [
        "# minialex CPU fast paths against their clear versions",
        "",
        f"Machine: {info['cpu']} ({info['isa']}), {info['cores']} cores; BLAS {info['blas']}; "
        f"NumPy {info['numpy']}; Python {info['python']}.",
        "Each row times the clear version (switch off, \"before\") and the fast path (switch on, \"after\") "
        "in alternated pairs; ms are medians, the ratio is the median of the pairs' after / before "
        "(below 1: the fast path takes less time).",
        "",
        "| switch | what it does |",
        "| --- | --- |",
    ]
    lines += [f"| `{name}` | {what} |" for name, what in (descriptions or SWITCHES).items()]
    if kernels:
        lines += ["", "## Kernels (AlexNet paper shapes)", "",
                  "| switch | kernel | part | batch | before ms | after ms | after / before |",
                  "| --- | --- | --- | ---: | ---: | ---: | ---: |"]
        lines += [f"| `{row['switch']}` | {row['kernel']} | {row['part']} | {row['batch']} | "
                  f"{milliseconds(row['before'])} | {milliseconds(row['after'])} | {format_ratio(row['ratio'])} |"
                  for row in kernels]
    if steps:
        lines += ["", "## Whole training step (paper AlexNet, fwd + loss + bwd + SGD)", "",
                  "Before: the named switch off, every other one as by default; after: the named switch on. "
                  "\"all on by default\": every switch that is on by default off, then on.", "",
                  "| switch off | batch | before ms | after ms | after / before |",
                  "| --- | ---: | ---: | ---: | ---: |"]
        lines += [f"| {row['switch']} | {row['batch']} | {milliseconds(row['before'])} | "
                  f"{milliseconds(row['after'])} | {format_ratio(row['ratio'])} |" for row in steps]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.switches", description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=16, help="batch size (default 16)")
    parser.add_argument("--pairs", type=int, default=None, help="alternated pairs per row (default 9, 3 with --quick)")
    parser.add_argument("--quick", action="store_true", help="fewer pairs")
    parser.add_argument("--no-step", action="store_true", help="the kernels only, not the whole training step")
    parser.add_argument("--kernels", nargs="*", help="only these kernels (e.g. pool1 sgd_fc6)")
    parser.add_argument("--name", default=None,
                        help="publish as benchmarks/results/<name>.json and .md (without it the run only prints)")
    args = parser.parse_args(argv)
    if args.batch < 1:
        parser.error(f"--batch must be a positive int, got {args.batch}")
    pairs = args.pairs if args.pairs is not None else (3 if args.quick else 9)
    if pairs < 1:
        parser.error(f"--pairs must be a positive int, got {pairs}")
    info = machine_info(1)
    info.pop("threads", None)
    print(f"machine: {info}", flush=True)
    kernels = kernel_rows(args.batch, pairs, args.kernels)
    steps = [] if args.no_step or args.kernels else step_rows(args.batch, max(3, pairs))
    payload = {"suite": "switches", "machine": info, "switches": dict(SWITCHES), "kernels": kernels,
               "train_step": steps}
    report = markdown_report(info, kernels, steps, SWITCHES)
    if not args.name:
        report_unpublished(report, "python -m benchmarks.switches", example="switches-2core-amd-epyc")
        return 0
    counts = {"kernels": {"pairs": pairs, "warm-up pairs": 1}}
    if steps:
        counts["training step"] = {"pairs": max(3, pairs), "warm-up pairs": 1}
    report_published(args.name, payload, report, repeats=counts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
