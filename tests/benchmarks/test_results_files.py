"""Results files: rendered from their JSON, one ratio direction, and nothing written without a name.

No benchmark is timed here: the suites' measuring functions are replaced by
stubs, and the committed results in benchmarks/results/ are read, never written.
"""

import fnmatch
import json
import re
from pathlib import Path

import pytest

from benchmarks import common, render

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "benchmarks" / "results"
COMMITTED = sorted(path.stem for path in RESULTS.glob("*.json"))
RERENDERED = re.compile(r"^This markdown was rendered again from the JSON on .*\n", flags=re.M)


def _payload(name):
    return json.loads((RESULTS / f"{name}.json").read_text(encoding="utf-8"))


def _table_rows(markdown):
    """{first cell: [cells]} of every table row of ``markdown``."""
    rows = {}
    for line in markdown.splitlines():
        if line.startswith("| ") and not line.startswith("| ---"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            rows.setdefault(cells[0], cells)
    return rows


def _ratio_cells(text):
    return [float(value) for value in re.findall(r"\d+\.\d+", text)]


# --------------------------------------------------------------------------- rendering from the JSON


def test_there_are_committed_results():
    assert {"cpu-2core-amd-epyc", "gpu-nvidia-h100-80gb-hbm3", "engines-2core-amd-epyc"} <= set(COMMITTED)


@pytest.mark.parametrize("name", COMMITTED)
def test_the_committed_markdown_is_what_its_json_renders_to(name):
    committed = (RESULTS / f"{name}.md").read_text(encoding="utf-8")
    assert RERENDERED.sub("", committed) == render.render_markdown(_payload(name))


@pytest.mark.parametrize("name", COMMITTED)
def test_every_results_file_records_command_commit_date_repeats_and_machine(name):
    payload = _payload(name)
    assert "provenance" in payload, f"{name}.json records no provenance"
    made = payload["provenance"]
    if made.get("command"):
        assert made["commit"] and made["date"]
    else:  # a run from before provenance was recorded: says so, and where the file came from
        assert "not recorded" in made["note"].lower() or "committed in" in made["note"]
    markdown = (RESULTS / f"{name}.md").read_text(encoding="utf-8")
    header = markdown.split("\n\n", 2)[1]
    assert header.startswith(("Command: `python ", "Command, commit and date: not recorded."))
    assert "\nRepeats: " in header and "\nCPU: " in header and "; GPU: " in header


def test_the_cpu_markdown_carries_the_json_numbers():
    payload = _payload("cpu-2core-amd-epyc")
    rows = _table_rows(render.render_markdown(payload))
    for row in payload["kernels"]:
        cells = rows[row["kernel"]]
        assert cells[2] == f"{row['minialex_forward'] * 1e3:.1f}" and cells[3] == f"{row['torch_forward'] * 1e3:.1f}"
        assert float(cells[4]) == pytest.approx(row["minialex_forward"] / row["torch_forward"], abs=0.006)
        if row["minialex_backward"] is not None:
            assert cells[5] == f"{row['minialex_backward'] * 1e3:.1f}"
            assert cells[6] == f"{row['torch_backward'] * 1e3:.1f}"
    for step in payload["train_step"]:
        cells = rows[str(step["batch"])]
        assert cells[1:3] == [f"{step['minialex'] * 1e3:.1f}", f"{step['torch'] * 1e3:.1f}"]
        assert float(cells[3]) == pytest.approx(step["minialex"] / step["torch"], abs=0.006)


def test_the_gpu_markdown_carries_the_json_numbers_and_the_same_verdicts():
    payload = _payload("gpu-nvidia-h100-80gb-hbm3")
    markdown = render.render_markdown(payload)
    rows = _table_rows(markdown)
    paths = ("cpu", "generic", "fast", "torch")
    for row in payload["kernels"]:
        cells = rows[row["kernel"]]
        assert cells[2:6] == [f"{row[f'{p}_forward'] * 1e3:.3f}" for p in paths]
        backward = [row.get(f"{p}_backward") for p in paths]
        assert cells[6:10] == ["-" if b is None else f"{b * 1e3:.3f}" for b in backward]
    step = payload["train_step"]
    for path in paths:
        assert rows[path][1] == f"{step[path] * 1e3:.1f}"
    # The targets are rendered in today's direction (time / reference) and reach the verdicts the run recorded.
    verdicts = [cells[-1] for key, cells in rows.items() if "<=" in key]
    assert verdicts == ["yes" if target["met"] else "NO" for target in payload["targets"]]


def test_the_engines_markdown_carries_the_json_numbers():
    payload = _payload("engines-2core-amd-epyc")
    rows = _table_rows(render.render_markdown(payload))
    for row in payload["kernels"]:
        cells = rows[row["kernel"]]
        expected = [row.get(f"{engine}_{part}") for part in ("forward", "backward")
                    for engine in ("minialex", "dezero", "chainer")]
        assert cells[2:8] == [common.milliseconds(value) for value in expected]


def test_the_distributed_markdown_carries_the_json_numbers():
    payload = _payload("distributed-2core-amd-epyc")
    markdown = render.render_markdown(payload)
    for key in ("raw_allreduce_s", "synchronize_s", "per_tensor_s"):
        assert f"| {payload['allreduce'][key] * 1e3:.1f} |" in markdown


def test_rerender_keeps_the_json_and_says_when_it_rendered(tmp_path, monkeypatch):
    name = "cpu-2core-amd-epyc"
    (tmp_path / f"{name}.json").write_bytes((RESULTS / f"{name}.json").read_bytes())
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    path = render.rerender(name)
    text = path.read_text(encoding="utf-8")
    assert (tmp_path / f"{name}.json").read_bytes() == (RESULTS / f"{name}.json").read_bytes()
    assert RERENDERED.search(text) and "Command: `python -m benchmarks --name cpu-2core-amd-epyc`" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{name}.json", f"{name}.md"]  # no temporary left


# --------------------------------------------------------------------------- one ratio direction


def _kernel_row(**times):
    row = {"kernel": "conv2", "batch": 1}
    row.update(times)
    return row


def test_a_kernel_where_minialex_is_faster_has_a_ratio_below_one():
    from benchmarks import engines, gpu
    from benchmarks.__main__ import markdown_report

    info = common.machine_info(1)
    row = _kernel_row(minialex_forward=1e-3, minialex_backward=2e-3, torch_forward=2e-3, torch_backward=8e-3)
    cells = _table_rows(markdown_report(info, [row], [{"batch": 1, "minialex": 1.0, "torch": 4.0}], []))
    assert [float(c) for c in (cells["conv2"][4], cells["conv2"][7], cells["conv2"][8])] == [0.5, 0.25, 0.3]
    assert float(cells["1"][3]) == 0.25

    row = _kernel_row(minialex_forward=1e-3, minialex_backward=1e-3, dezero_forward=4e-3, dezero_backward=4e-3,
                      chainer_forward=2e-3, chainer_backward=2e-3)
    assert engines.ratio(row, "dezero") == 0.25
    cells = _table_rows(engines.markdown_report({**info, "dezero": "x", "chainer": "y"}, [row]))["conv2"]
    assert _ratio_cells(cells[-2]) == [0.25, 0.25, 0.25] and _ratio_cells(cells[-1]) == [0.5, 0.5, 0.5]

    row = _kernel_row(cpu_forward=1.0, cpu_backward=1.0, generic_forward=4e-3, generic_backward=4e-3,
                      fast_forward=1e-3, fast_backward=1e-3, torch_forward=2e-3, torch_backward=2e-3)
    step = {"batch": 1, "cpu": 1.0, "generic": 0.04, "fast": 0.01, "torch": 0.02}
    markdown = gpu.markdown_report({key: "x" for key in ("gpu", "compute_capability", "memory_gib", "cuda_runtime",
                                                         "cuda_driver_api", "nvidia_driver", "cupy", "numpy",
                                                         "torch", "torch_cuda", "cudnn", "python")},
                                   {"repeats": 1, "warmup": 1}, [row], step)
    cells = _table_rows(markdown)
    assert [float(c) for c in cells["conv2"][-2:]] == [0.25, 0.5]  # fast / generic, fast / torch
    assert float(cells["fast"][2]) == 0.5 and float(cells["fast"][3]) == 0.01  # / torch, / minialex CPU
    assert all(met for _, _, met in gpu.targets([row], step))


def test_no_suite_reports_a_speedup():
    """No "speed-up", no "2.0x faster than", no value formatted as "{...}x": every ratio is a plain time ratio."""
    for path in (REPO / "benchmarks").glob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"speed-?up|\dx faster than|\}x[\"| ]", text, flags=re.I), path.name


# --------------------------------------------------------------------------- only a named run is published


@pytest.fixture
def stub_cpu_suite(monkeypatch):
    """benchmarks.__main__ with its measuring functions replaced by instant stubs."""
    from benchmarks import __main__ as suite

    calls = {}

    def kernels(batch, repeats, torch=None, names=None):
        calls["kernels"] = (batch, repeats)
        return [_kernel_row(minialex_forward=1e-3, minialex_backward=1e-3, torch_forward=None, torch_backward=None)]

    def steps(batches, repeats, torch=None):
        calls["batches"] = list(batches)
        return [{"batch": b, "minialex": 0.01 * b, "torch": None} for b in batches]

    monkeypatch.setattr(suite, "kernel_benchmarks", kernels)
    monkeypatch.setattr(suite, "train_step_benchmarks", steps)
    monkeypatch.setattr(suite, "_peak_rss", lambda framework, batch, threads: {
        "framework": framework, "batch": batch, "peak_rss_mib": 1.0, "rss_after_build_mib": 1.0})
    return suite, calls


def test_a_run_without_a_name_writes_nothing(tmp_path, monkeypatch, capsys, stub_cpu_suite):
    suite, _ = stub_cpu_suite
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    assert suite.main(["--quick", "--no-torch"]) == 0
    assert list(tmp_path.iterdir()) == []
    out = capsys.readouterr().out
    assert "| conv2 | 1 |" in out and "Nothing written" in out


def test_a_named_run_publishes_json_and_markdown_with_provenance(tmp_path, monkeypatch, stub_cpu_suite):
    suite, _ = stub_cpu_suite
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    assert suite.main(["--quick", "--no-torch", "--name", "cpu-test"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cpu-test.json", "cpu-test.md"]
    payload = json.loads((tmp_path / "cpu-test.json").read_text())
    assert payload["provenance"]["repeats"]["kernels"] == {"runs": 3, "warm-up": 1}
    assert {"cpu", "isa", "gpu"} <= set(payload["machine"])
    assert (tmp_path / "cpu-test.md").read_text() == render.render_markdown(payload)


def test_the_step_benchmark_takes_the_batch_sizes(tmp_path, monkeypatch, stub_cpu_suite):
    suite, calls = stub_cpu_suite
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    assert suite.main(["--no-torch", "--steps-only", "--batches", "8", "16", "32", "64"]) == 0
    assert calls["batches"] == [8, 16, 32, 64] and "kernels" not in calls
    assert list(tmp_path.iterdir()) == []


def test_the_engines_suite_writes_nothing_without_a_name(tmp_path, monkeypatch, capsys):
    from benchmarks import engines

    monkeypatch.setattr(common, "RESULTS", tmp_path)
    monkeypatch.setattr(engines, "engine_rows", lambda batch, repeats, loaded, names=None: [
        _kernel_row(minialex_forward=1e-3, minialex_backward=1e-3)])
    assert engines.main(["--quick"]) == 0
    assert list(tmp_path.iterdir()) == []
    assert "Nothing written" in capsys.readouterr().out
    assert engines.main(["--quick", "--name", "engines-test"]) == 0
    payload = json.loads((tmp_path / "engines-test.json").read_text())
    assert payload["provenance"]["repeats"] == {"kernels": {"runs": 3, "warm-up": 1}}
    assert (tmp_path / "engines-test.md").read_text() == render.render_markdown(payload)


def test_the_gpu_suite_writes_nothing_without_a_name(tmp_path, monkeypatch, capsys):
    from benchmarks import gpu

    info = {key: "x" for key in ("gpu", "compute_capability", "memory_gib", "cuda_runtime", "cuda_driver_api",
                                 "nvidia_driver", "cupy", "numpy", "torch", "torch_cuda", "cudnn", "python",
                                 "cpu", "isa")}
    row = _kernel_row(cpu_forward=1.0, cpu_backward=1.0, generic_forward=4e-3, generic_backward=4e-3,
                      fast_forward=1e-3, fast_backward=1e-3)
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    monkeypatch.setattr(gpu.ma.cuda, "is_available", lambda: True)  # a stand-in GPU: nothing runs on it
    monkeypatch.setattr(gpu, "_load_torch", lambda wanted: None)
    monkeypatch.setattr(gpu, "gpu_info", lambda torch: info)
    monkeypatch.setattr(gpu, "kernel_rows", lambda batch, settings, torch, names=None: [row])
    monkeypatch.setattr(gpu, "step_row", lambda batch, settings, torch: {"batch": batch, "cpu": 1.0, "generic": 0.04,
                                                                         "fast": 0.01})
    assert gpu.main(["--quick"]) == 0
    assert list(tmp_path.iterdir()) == []
    assert "Nothing written" in capsys.readouterr().out
    assert gpu.main(["--quick", "--name", "gpu-test"]) == 0
    payload = json.loads((tmp_path / "gpu-test.json").read_text())
    assert payload["provenance"]["repeats"]["gpu kernels"] == {"runs": 10, "warm-up": 3}
    assert (tmp_path / "gpu-test.md").read_text() == render.render_markdown(payload)


def test_a_results_name_is_a_plain_file_name(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    for bad in ("../cpu", "a/b", "", ".hidden"):
        with pytest.raises(ValueError, match="plain file name"):
            common.write_results(bad, {}, "# t")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_write_leaves_the_published_file_whole(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    common.write_results("cpu-x", {"kernels": []}, "# first\n\nbody")
    before = (tmp_path / "cpu-x.json").read_bytes()
    with pytest.raises(TypeError):
        common.write_results("cpu-x", {"kernels": [object()]}, "# second\n\nbody")  # not JSON
    assert (tmp_path / "cpu-x.json").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cpu-x.json", "cpu-x.md"]


def test_the_docs_include_only_published_names():
    page = (REPO / "docs" / "gpu.md").read_text(encoding="utf-8")
    patterns = re.findall(r'\{\{ results\("([^"]+)"', page)
    assert patterns
    for pattern in patterns:
        for scratch in ("cpu.md", "gpu.md", "engines.md", "results.md"):
            assert not fnmatch.fnmatch(scratch, pattern), (pattern, scratch)
    shown = {name for name in COMMITTED for pattern in patterns if fnmatch.fnmatch(name + ".md", pattern)}
    assert {"cpu-2core-amd-epyc", "gpu-nvidia-h100-80gb-hbm3", "engines-2core-amd-epyc"} <= shown
