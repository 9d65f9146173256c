"""A results file's markdown, made from its JSON: the tables of a run can be rendered again at any time.

    python -m benchmarks.render                         # every benchmarks/results/*.json
    python -m benchmarks.render cpu-2core-amd-epyc      # one of them

Each suite's ``markdown_report`` draws the tables from the measured numbers in
the JSON, and the header (command, commit, date, repeats, CPU, GPU) comes from
the JSON's provenance, so the markdown of an old run can follow today's
layout (e.g. every ratio as minialex / reference) with the numbers of the run.
A markdown file rendered again says so, with the date and the commit of the
code that rendered it.
"""

import argparse
import json
import sys

from . import common


def suite_of(payload):
    """"cpu", "gpu", "engines", "switches" or "distributed": which script measured ``payload``.

    Recorded as "suite" by the suites that know it; for older files (and the
    data-parallel suite) told from what the payload holds.
    """
    if payload.get("suite"):
        return payload["suite"]
    if "allreduce" in payload:
        return "distributed"
    if "settings" in payload:
        return "gpu"
    if "memory" in payload:
        return "cpu"
    kernels = payload.get("kernels") or [{}]
    if any(key.startswith(("dezero", "chainer")) for row in kernels for key in row) or "dezero" in payload.get(
            "machine", {}):
        return "engines"
    raise ValueError(f"cannot tell which benchmark wrote a payload with keys {sorted(payload)}")


def report(payload):
    """The suite's markdown tables for ``payload``, without the provenance header."""
    suite = suite_of(payload)
    info = payload["machine"]
    if suite == "cpu":
        from .__main__ import markdown_report  # noqa: PLC0415 - each suite only when needed

        return markdown_report(info, payload["kernels"], payload["train_step"], payload["memory"])
    if suite == "gpu":
        from . import gpu  # noqa: PLC0415

        return gpu.markdown_report(info, payload["settings"], payload["kernels"], payload["train_step"])
    if suite == "engines":
        from . import engines  # noqa: PLC0415

        return engines.markdown_report(info, payload["kernels"])
    if suite == "switches":
        from . import switches  # noqa: PLC0415

        return switches.markdown_report(info, payload["kernels"], payload["train_step"], payload.get("switches"))
    from . import distributed  # noqa: PLC0415

    throughput = {layout: distributed.median_run(runs) for layout, runs in payload["throughput"].items()}
    return distributed.markdown_report(info, payload["allreduce"], throughput)


def render_markdown(payload, rerendered=None):
    """The whole markdown file for ``payload``: title, provenance header, tables.

    ``rerendered`` ({"date", "commit"}) adds the line saying it was rendered
    again from the JSON.
    """
    return common.with_header(report(payload), payload, rerendered) + "\n"


def rerender(name):
    """Write ``results/<name>.md`` again from ``results/<name>.json``; return its path."""
    json_path, md_path = common.RESULTS / f"{name}.json", common.RESULTS / f"{name}.md"
    payload = json.loads(json_path.read_text(encoding="utf-8"))
    # The rendering code is benchmarks/*.py: changes elsewhere in the checkout do not touch the markdown.
    markdown = render_markdown(payload, {"date": common.now(), "commit": common.git_commit(["benchmarks/*.py"])})
    with common.atomic_write(md_path, "w") as file:
        file.write(markdown)
    return md_path


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.render", description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="results names (default: every benchmarks/results/*.json)")
    args = parser.parse_args(argv)
    names = args.names or sorted(path.stem for path in common.RESULTS.glob("*.json"))
    for name in names:
        print("rendered", rerender(name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
