"""``python -m benchmarks.switches``: each CPU fast path timed against its clear version (tiny sizes, no number asserted)."""

import json

import numpy as np
import pytest

from benchmarks import common, render, switches
from minialex.kernels import conv, pool
from minialex.optim import sgd as sgd_optimizer


def test_switched_turns_a_fast_path_off_and_on_and_restores_the_function():
    original = pool.max_pool2d_forward
    x = np.random.default_rng(0).standard_normal((1, 2, 7, 7)).astype(np.float32)
    calls = []
    for on in (False, True):
        with switches.switched("one_pass_on_cpu", on):
            assert pool.max_pool2d_forward is not original
            assert pool.max_pool2d_forward.keywords == {"one_pass_on_cpu": on}
            calls.append(pool.max_pool2d_forward(x, 3, 2, 0)[0])
        assert pool.max_pool2d_forward is original
    np.testing.assert_array_equal(*calls)  # both paths, the same maxima
    kept = conv.MAX_FREE_COLUMNS
    with switches.switched("column reuse", False):
        assert conv.MAX_FREE_COLUMNS == 0
    assert conv.MAX_FREE_COLUMNS == kept
    with pytest.raises(RuntimeError), switches.switched("in_chunks_on_cpu", False):
        assert sgd_optimizer.sgd_update.keywords == {"in_chunks_on_cpu": False}
        raise RuntimeError("the function comes back even when the body fails")
    assert not hasattr(sgd_optimizer.sgd_update, "keywords")


def test_every_switch_has_a_kernel_row_with_positive_times():
    rows = switches.kernel_rows(batch=1, pairs=1)
    assert {row["switch"] for row in rows} == set(switches.SWITCHES)
    for row in rows:
        assert row["before"] > 0 and row["after"] > 0 and row["ratio"] > 0 and row["pairs"] == 1


def test_paired_times_alternate_the_order():
    order = []
    before, after = switches.paired_times(order.append, pairs=3, warmup=1)
    assert order == [False, True, False, True, True, False, False, True]
    assert len(before) == len(after) == 3


def test_a_named_run_publishes_what_render_and_plots_make_again(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    monkeypatch.setattr(switches, "step_rows", lambda batch, pairs: [
        {"switch": "all on by default", "batch": batch, "before": 1.0, "after": 0.9, "ratio": 0.9, "pairs": pairs}])
    assert switches.main(["--batch", "1", "--pairs", "1", "--name", "switches-test"]) == 0
    payload = json.loads((tmp_path / "switches-test.json").read_text())
    assert payload["suite"] == "switches" and payload["provenance"]["commit"]
    assert payload["provenance"]["repeats"]["kernels"] == {"pairs": 1, "warm-up pairs": 1}
    assert render.render_markdown(payload) == (tmp_path / "switches-test.md").read_text()
    assert "| all on by default | 1 | 1000.0 | 900.0 | 0.90 |" in (tmp_path / "switches-test.md").read_text()
    pytest.importorskip("matplotlib")
    from benchmarks import plots

    made = plots.figures(payload, "switches-test")
    assert list(made) == ["fastpaths"]
    plots.write_png(made["fastpaths"], tmp_path / "switches-test-fastpaths.png")
    assert (tmp_path / "switches-test-fastpaths.png").read_bytes()[:8] == plots.PNG_SIGNATURE


def test_without_a_name_nothing_is_written(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    assert switches.main(["--batch", "1", "--pairs", "1", "--kernels", "pool5"]) == 0
    assert list(tmp_path.iterdir()) == []
    assert "Nothing written" in capsys.readouterr().out


@pytest.mark.parametrize("argument", [["--batch", "0"], ["--pairs", "0"]])
def test_bad_counts_are_refused(argument, capsys):
    with pytest.raises(SystemExit):
        switches.main(argument)
    assert "must be a positive int" in capsys.readouterr().err


def test_a_results_file_is_not_uncommitted_code(tmp_path, monkeypatch):
    """The provenance marks a run whose code has uncommitted changes, but not one after another run's results."""
    import subprocess

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "benchmarks" / "results" / "cpu-x.json").write_text("{}\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "first")
    monkeypatch.setattr(common, "REPO", tmp_path)
    (tmp_path / "benchmarks" / "results" / "cpu-x.json").write_text('{"new": 1}\n')
    assert "uncommitted" not in common.git_commit()
    (tmp_path / "code.py").write_text("x = 2\n")
    assert common.git_commit().endswith("(with uncommitted changes)")
