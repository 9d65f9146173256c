"""The benchmark code runs (tiny sizes, one repeat) and reports what it measured; no number is asserted."""

import json

import numpy as np
import pytest

from benchmarks.__main__ import markdown_report
from benchmarks.common import machine_info
from benchmarks.cpu import kernel_benchmarks
from benchmarks.layer_profile import format_profile, minialex_profile


def _torch_or_none():
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(1)
    return torch


def test_every_kernel_benchmark_runs_and_reports_positive_times():
    torch = _torch_or_none()
    rows = kernel_benchmarks(batch=1, repeats=1, torch=torch,
                             names=["conv2", "pool5", "lrn2", "relu1", "dropout6", "fc8", "softmax_xent"])
    assert [row["kernel"] for row in rows] == ["conv2", "pool5", "lrn2", "relu1", "dropout6", "fc8", "softmax_xent"]
    for row in rows:
        assert row["minialex_forward"] > 0 and row["minialex_backward"] > 0
        if torch is not None:
            assert row["torch_forward"] > 0 and row["torch_backward"] > 0
    report = markdown_report(machine_info(1), rows, [], [])
    assert "| conv2 | 1 |" in report


def test_profile_has_a_row_per_layer_and_the_loss():
    rows = minialex_profile(batch=1, repeats=1)
    assert len(rows) == 15 + 1 + 7 + 1  # features, flatten, classifier, loss
    assert all(row["forward"] >= 0 and row["backward"] >= 0 for row in rows)
    assert np.isfinite(sum(row["backward"] for row in rows))
    assert "| total |" in format_profile(rows)


@pytest.mark.parametrize("bad", [["no-such-kernel"]])
def test_unknown_kernel_names_select_nothing(bad):
    assert kernel_benchmarks(batch=1, repeats=1, torch=None, names=bad) == []


def test_engines_benchmark_runs_with_whichever_engines_import():
    from benchmarks import engines

    loaded = engines.load_engines()  # DeZero and Chainer need NumPy < 2: usually none here
    names = ["conv2", "pool5", "lrn2", "fc8"]
    rows = engines.engine_rows(batch=1, repeats=1, engines=loaded, names=names)
    assert [row["kernel"] for row in rows] == names
    for row in rows:
        assert row["minialex_forward"] > 0 and row["minialex_backward"] > 0
        for engine in loaded:
            if row.get(f"{engine}_forward") is not None:
                assert row[f"{engine}_backward"] > 0
                assert engines.ratio(row, engine) > 0
    report = engines.markdown_report(machine_info(None), rows)
    assert "| conv2 | 1 |" in report and "| lrn2 | 1 |" in report


def test_every_results_file_records_its_command_commit_date_repeats_and_machine(tmp_path, monkeypatch):
    from benchmarks import common

    monkeypatch.setattr(common, "RESULTS", tmp_path)
    monkeypatch.setattr(common.sys, "argv", ["/somewhere/benchmarks/__main__.py", "--quick", "--name", "x_y"])
    payload = {"machine": machine_info(1), "kernels": []}
    json_path, md_path = common.write_results("x_y", payload, "# Title\n\nbody",
                                              repeats={"kernels": {"runs": 3, "warm-up": 1}})
    made = json.loads(json_path.read_text())["provenance"]
    assert made["command"] == "python -m benchmarks --quick --name x_y"
    assert len(made["commit"].split()[0]) == 40 or made["commit"].startswith("unknown")
    assert made["repeats"] == {"kernels": {"runs": 3, "warm-up": 1}}
    lines = md_path.read_text().splitlines()
    assert lines[0] == "# Title" and lines[2].startswith("Command: `python -m benchmarks --quick")
    assert made["commit"] in lines[2] and "body" in lines
    assert lines[3] == "Repeats: kernels: 3 runs, 1 warm-up."
    gpu = payload["machine"]["gpu"] or "none"
    assert lines[4] == f"CPU: {payload['machine']['cpu']} (ISA: {payload['machine']['isa']}); GPU: {gpu}."


def test_machine_info_names_the_cpu_its_vector_extensions_and_the_gpu():
    info = machine_info(1)
    assert info["cpu"] and info["isa"]
    assert "gpu" in info  # None where there is no GPU


@pytest.mark.slow
def test_the_distributed_benchmark_runs_in_two_ranks_and_writes_nothing_without_a_name(tmp_path, monkeypatch, capsys):
    pytest.importorskip("mpi4py", reason="the 'dist' extra is not installed")
    from benchmarks import common, distributed

    if distributed.find_mpiexec() is None:
        pytest.skip("no mpiexec (pip install mpich)")
    if not (distributed.DEFAULT_DATA / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"the MNIST files are missing from {distributed.DEFAULT_DATA}")
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    assert distributed.main(["--quick", "--repeats", "1", "--steps", "1", "--warmup", "1"]) == 0
    report = capsys.readouterr().out
    assert "| one all-reduce of the packed buffer |" in report
    assert "| 2 ranks, 1 BLAS thread each |" in report
    assert "60,965,224 float32 numbers" in report
    assert list(tmp_path.iterdir()) == []


def test_alternated_timing_takes_turns_and_rewarms_before_each_timed_run():
    from benchmarks.common import alternated_median_times

    calls = []
    medians = alternated_median_times([lambda: calls.append("a"), lambda: calls.append("b")], repeats=2, warmup=1)
    # warm-up round, then round 1 (a, b) and round 2 reversed (b, a), each timed run after an untimed one
    assert "".join(calls) == "ab" + "aabb" + "bbaa"
    assert len(medians) == 2 and all(m >= 0 for m in medians)
    calls.clear()
    alternated_median_times([lambda: calls.append("a"), lambda: calls.append("b")], repeats=2, warmup=0, rewarm=False)
    assert "".join(calls) == "abba"
