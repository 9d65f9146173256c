"""minialex against the other NumPy engines, DeZero and Chainer, kernel by kernel, in one process.

    python -m benchmarks.engines                          # batch 16, prints the table
    python -m benchmarks.engines --quick                  # fewer repeats
    python -m benchmarks.engines --name engines-<machine> # publishes benchmarks/results/engines-<machine>.json, .md

Every engine runs on the same NumPy and BLAS threads, side by side, at the
paper AlexNet's shapes. minialex is timed at the kernel level (as in the CPU
suite); DeZero and Chainer through their functions and autograd (forward:
build the output; backward: ``y.backward()`` with the upstream gradient set),
whose bookkeeping is negligible at these sizes. DeZero's conv2d has no
``groups``: a grouped layer is its G half-convolutions, timed together.
Chainer's conv1 and minialex's conv1 skip the input gradient (the input is the
data); DeZero always computes it. Ratios are minialex's time / the engine's
time: below 1, minialex is faster.

DeZero 0.0.13 and Chainer 7.8.1 need NumPy < 2 (and DeZero the ``np.int``
alias, set here before importing it). A separate environment works:

    python -m venv .venv-engines && . .venv-engines/bin/activate
    pip install "numpy<2" "setuptools<70" wheel matplotlib
    pip install --no-build-isolation dezero chainer && pip install -e .
    python -m benchmarks.engines

An engine that is not installed is left out.
"""

import argparse
import importlib.util
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks.common import (  # noqa: E402
    format_ratio,
    machine_info,
    median_time,
    milliseconds,
    report_published,
    report_unpublished,
)
from benchmarks.kernels import minialex_kernel  # noqa: E402
from benchmarks.layers import LAYERS  # noqa: E402

ENGINES = ("minialex", "dezero", "chainer")


def load_engines():
    """{"dezero": module, "chainer": module} for the engines that import here."""
    loaded = {}
    if importlib.util.find_spec("dezero") is not None and not hasattr(np, "int"):
        np.int = int  # DeZero 0.0.13 uses np.int, removed in NumPy 1.24; set only where DeZero is installed
    try:
        import dezero  # noqa: PLC0415 - optional, for this benchmark only
        import dezero.functions  # noqa: PLC0415, F401

        loaded["dezero"] = dezero
    except Exception as error:  # ImportError, or an incompatible NumPy
        print(f"DeZero left out: {type(error).__name__}: {error}")
    try:
        import chainer  # noqa: PLC0415 - optional, for this benchmark only

        loaded["chainer"] = chainer
    except Exception as error:
        print(f"Chainer left out: {type(error).__name__}: {error}")
    return loaded


def _weights(rng, kind, spec, x):
    if kind == "conv":
        shape = (spec["out"], x.shape[1] // spec["groups"], spec["k"], spec["k"])
    else:
        shape = (spec["out"], x.shape[1])
    return (rng.standard_normal(shape) * 0.01).astype(np.float32), np.zeros(spec["out"], np.float32)


def dezero_kernel(dezero, kind, spec, x, rng):
    """(forward, backward) closures through DeZero's functions and autograd, or None if it lacks the layer."""
    F = dezero.functions
    X = dezero.Variable(x)
    params = [X]
    if kind == "conv":
        weight, bias = _weights(rng, kind, spec, x)
        G, c_per_group, o_per_group = spec["groups"], x.shape[1] // spec["groups"], spec["out"] // spec["groups"]
        halves = [(dezero.Variable(x[:, g * c_per_group:(g + 1) * c_per_group]),
                   dezero.Parameter(weight[g * o_per_group:(g + 1) * o_per_group]),
                   dezero.Parameter(bias[g * o_per_group:(g + 1) * o_per_group])) for g in range(G)]
        params = [v for half in halves for v in half]

        def run():
            return [F.conv2d(xg, wg, bg, spec["stride"], spec["pad"]) for xg, wg, bg in halves]
    elif kind == "pool":
        def run():
            return [F.pooling(X, 3, 2, 0)]
    elif kind == "relu":
        def run():
            return [F.relu(X)]
    elif kind == "dropout":
        def run():
            with dezero.using_config("train", True):
                return [F.dropout(X, 0.5)]
    elif kind == "linear":
        weight, bias = _weights(rng, kind, spec, x)
        W, b = dezero.Parameter(weight.T.copy()), dezero.Parameter(bias)  # DeZero's W is (in, out)
        params += [W, b]

        def run():
            return [F.linear(X, W, b)]
    elif kind == "xent":
        target = rng.integers(0, x.shape[1], x.shape[0])

        def run():
            return [F.softmax_cross_entropy(X, target)]
    else:
        return None
    return _autograd_closures(run, params, rng, clear=lambda v: v.cleargrad(),
                              set_grad=lambda y, g: setattr(y, "grad", dezero.Variable(g)))


def chainer_kernel(chainer, kind, spec, x, rng):
    """(forward, backward) closures through Chainer's functions and autograd, or None if it lacks the layer."""
    F = chainer.functions
    X = chainer.Variable(x)
    params = [X]
    if kind == "conv":
        weight, bias = _weights(rng, kind, spec, x)
        W, b = chainer.Variable(weight), chainer.Variable(bias)
        data = x if spec.get("first") else X  # conv1: no input gradient, as in minialex's step
        params = [W, b] + ([] if spec.get("first") else [X])

        def run():
            return [F.convolution_2d(data, W, b, spec["stride"], spec["pad"], groups=spec["groups"])]
    elif kind == "pool":
        def run():
            return [F.max_pooling_2d(X, 3, 2, cover_all=False)]
    elif kind == "lrn":
        def run():
            return [F.local_response_normalization(X, n=5, k=2.0, alpha=1e-4, beta=0.75)]
    elif kind == "relu":
        def run():
            return [F.relu(X)]
    elif kind == "dropout":
        def run():
            with chainer.using_config("train", True):
                return [F.dropout(X, 0.5)]
    elif kind == "linear":
        weight, bias = _weights(rng, kind, spec, x)
        W, b = chainer.Variable(weight), chainer.Variable(bias)
        params += [W, b]

        def run():
            return [F.linear(X, W, b)]
    elif kind == "xent":
        target = rng.integers(0, x.shape[1], x.shape[0]).astype(np.int32)

        def run():
            return [F.softmax_cross_entropy(X, target)]
    else:
        return None
    return _autograd_closures(run, params, rng, clear=lambda v: v.cleargrad(),
                              set_grad=lambda y, g: setattr(y, "grad", g))


def _autograd_closures(run, params, rng, clear, set_grad):
    """forward() builds the outputs; backward() clears the leaves' grads and backpropagates dout."""
    state = {"outputs": run()}
    grads = [rng.standard_normal(y.shape).astype(np.float32) for y in state["outputs"]]

    def forward():
        state["outputs"] = run()

    def backward():
        for leaf in params:
            clear(leaf)
        for y, grad in zip(state["outputs"], grads):
            set_grad(y, grad)
            y.backward()

    return forward, backward


def engine_rows(batch, repeats, engines, names=None):
    rows = []
    for name, kind, shape, spec in LAYERS:
        if kind == "sgd" or (names and name not in names):
            continue
        x = np.random.default_rng(0).standard_normal((batch, *shape)).astype(np.float32)
        row = {"kernel": name, "batch": batch}
        builders = {"minialex": lambda: minialex_kernel(kind, spec, x.copy(), np.random.default_rng(1), np.asarray),
                    "dezero": lambda: dezero_kernel(engines["dezero"], kind, spec, x.copy(), np.random.default_rng(1)),
                    "chainer": lambda: chainer_kernel(engines["chainer"], kind, spec, x.copy(),
                                                      np.random.default_rng(1))}
        for engine in ENGINES:
            closures = builders[engine]() if engine == "minialex" or engine in engines else None
            if closures is None:
                continue
            forward, backward = closures
            row[f"{engine}_forward"] = median_time(forward, repeats)
            row[f"{engine}_backward"] = median_time(backward, repeats)
        rows.append(row)
        print(f"  {name}: " + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in row.items() if k.endswith("ward")),
              flush=True)
    return rows


def _total(row, engine):
    if row.get(f"{engine}_forward") is None:
        return None
    return row[f"{engine}_forward"] + row[f"{engine}_backward"]


def ratio(row, engine, part="total"):
    """minialex's time / ``engine``'s time on this kernel (forward, backward or both): below 1, minialex is faster."""
    if part == "total":
        ours, theirs = _total(row, "minialex"), _total(row, engine)
    else:
        ours, theirs = row.get(f"minialex_{part}"), row.get(f"{engine}_{part}")
    return None if ours is None or not theirs else ours / theirs


def markdown_report(info, rows):
    lines = [
        "# minialex against the NumPy engines (CPU)",
        "",
        f"Machine: {info['cpu']} ({info.get('isa', 'ISA not recorded')}), {info['cores']} cores; BLAS {info['blas']}; "
        f"NumPy {info['numpy']}; DeZero {info.get('dezero') or '-'}; Chainer {info.get('chainer') or '-'}; "
        f"Python {info['python']}.",
        "One process, medians after warm-up. Ratio = minialex's time / the engine's time "
        "(below 1: minialex faster).",
        "",
        "| kernel | batch | minialex fwd ms | DeZero fwd ms | Chainer fwd ms | minialex bwd ms | DeZero bwd ms "
        "| Chainer bwd ms | minialex / DeZero (fwd / bwd / both) | minialex / Chainer (fwd / bwd / both) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        cells = [row["kernel"], str(row["batch"])]
        cells += [milliseconds(row.get(f"{engine}_forward")) for engine in ENGINES]
        cells += [milliseconds(row.get(f"{engine}_backward")) for engine in ENGINES]
        for engine in ("dezero", "chainer"):
            cells.append(" / ".join(format_ratio(ratio(row, engine, part))
                                    for part in ("forward", "backward", "total")))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.engines", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--kernels", nargs="*", help="only these kernels, e.g. conv2 pool1")
    parser.add_argument("--name", default=None,
                        help="publish as benchmarks/results/<name>.json and .md (without it the run only prints)")
    args = parser.parse_args(argv)
    engines = load_engines()
    info = machine_info(threads=None)
    info.update({name: getattr(module, "__version__", "?") for name, module in engines.items()})
    print(f"machine: {info}", flush=True)
    repeats = 3 if args.quick else 7
    rows = engine_rows(args.batch, repeats, engines, args.kernels)
    report = markdown_report(info, rows)
    if not args.name:
        report_unpublished(report, "python -m benchmarks.engines")
        return 0
    payload = {"suite": "engines", "machine": info, "quick": args.quick, "kernels": rows}
    report_published(args.name, payload, report, repeats={"kernels": {"runs": repeats, "warm-up": 1}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
