"""``python -m benchmarks.plots``: PNGs drawn from the committed results, named after the file they come from."""

import re
from pathlib import Path

import pytest

pytest.importorskip("matplotlib", reason="the 'plot' extra is not installed")

from benchmarks import common, plots  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "benchmarks" / "results"
COMMITTED = sorted(path.stem for path in RESULTS.glob("*.json"))


def test_the_plot_command_writes_pngs_from_the_committed_results(tmp_path):
    assert plots.main(["--out", str(tmp_path)]) == 0
    written = sorted(path.name for path in tmp_path.iterdir())
    for name in ("cpu-2core-amd-epyc", "gpu-nvidia-h100-80gb-hbm3", "engines-2core-amd-epyc"):
        assert f"{name}-ratios.png" in written and f"{name}-kernels.png" in written
    assert "cpu-2core-amd-epyc-step.png" in written  # the CPU file holds the step at two batch sizes
    assert all(png.rsplit("-", 1)[0] in COMMITTED for png in written)  # named after the results file
    for png in written:
        assert (tmp_path / png).read_bytes()[:8] == plots.PNG_SIGNATURE, png


def test_by_default_the_plots_go_beside_the_results(tmp_path, monkeypatch):
    name = "cpu-2core-amd-epyc"
    (tmp_path / f"{name}.json").write_bytes((RESULTS / f"{name}.json").read_bytes())
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    assert plots.main([name]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{name}-kernels.png", f"{name}-ratios.png",
                                                         f"{name}-step.png", f"{name}.json"]  # no temporary left


def test_the_committed_plots_are_valid_pngs_of_committed_results():
    pngs = sorted(RESULTS.glob("*.png"))
    assert pngs
    for png in pngs:
        assert png.read_bytes()[:8] == plots.PNG_SIGNATURE, png.name
        assert png.stem.rsplit("-", 1)[0] in COMMITTED, png.name


def test_a_ratio_plot_puts_a_faster_minialex_below_the_line_at_one():
    row = {"kernel": "conv2", "batch": 1, "minialex_forward": 1.0, "minialex_backward": 1.0,
           "torch_forward": 4.0, "torch_backward": 2.0}
    figure = plots.ratio_figure({"suite": "cpu", "kernels": [row]}, "cpu-test")
    ax = figure.axes[0]
    tops = sorted(patch.get_y() + patch.get_height() for patch in ax.patches)
    assert tops == [0.25, 0.5] and ax.get_yscale() == "log"  # bars from 1 down to the ratios
    assert any(list(line.get_ydata()) == [1, 1] for line in ax.get_lines())  # the line at 1
    plots.plt.close(figure)


def test_the_docs_show_the_plots_of_the_committed_results():
    """docs/figures/ holds the same pictures as benchmarks/results/ for every plot gpu.md and cpu_speed.md show."""
    page = "".join((REPO / "docs" / name).read_text(encoding="utf-8") for name in ("gpu.md", "cpu_speed.md"))
    shown = re.findall(r"\]\(figures/([\w.-]+\.png)\)", page)
    plotted = [name for name in shown if name.rsplit("-", 1)[0] in COMMITTED]
    assert {"cpu-2core-amd-epyc-ratios.png", "cpu-2core-amd-epyc-step.png",
            "gpu-nvidia-h100-80gb-hbm3-kernels.png", "switches-2core-amd-epyc-fastpaths.png"} <= set(plotted)
    for name in plotted:
        assert (REPO / "docs" / "figures" / name).read_bytes() == (RESULTS / name).read_bytes(), (
            f"docs/figures/{name} differs from benchmarks/results/{name}: run python -m benchmarks.plots "
            "and python docs/make_figures.py benchmarks")
