"""examples/train_mnist.py on a few hundred real MNIST images: loss falls, metrics, checkpoints, exact resume."""

import contextlib
import importlib.util
import io
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
MNIST_DIR = REPO / ".." / "shared" / "data" / "mnist"
QUICK = ["--limit-train", "512", "--limit-test", "200", "--batch-size", "64", "--no-progress", "--seed", "0"]
TINY = ["--limit-train", "64", "--limit-test", "50", "--batch-size", "32", "--no-progress", "--seed", "0"]
FINAL_LINE = re.compile(r"^test accuracy: \d{1,3}\.\d\d%$")


def load_example():
    spec = importlib.util.spec_from_file_location("minialex_example_train_mnist", REPO / "examples" / "train_mnist.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def example_module():
    return load_example()


@pytest.fixture(scope="module")
def example(example_module):
    """The example module, for tests that train on the shared MNIST files."""
    if not (MNIST_DIR / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"the shared MNIST files are missing from {MNIST_DIR} (expected ../shared/data beside the repository)")
    return example_module


def run(example, *argv):
    """main(argv) -> (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = example.main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def model_arrays(checkpoint):
    with np.load(checkpoint, allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files if key != "meta"}, json.loads(str(archive["meta"]))


@pytest.fixture(scope="module")
def straight_run(example, tmp_path_factory):
    """Run A: two epochs without a break, on 512 training and 200 test images."""
    out_dir = tmp_path_factory.mktemp("run-a")
    code, stdout, stderr = run(example, "--data-dir", MNIST_DIR, *QUICK, "--epochs", 2, "--out-dir", out_dir)
    return {"code": code, "stdout": stdout, "stderr": stderr, "out_dir": out_dir}


def test_a_short_run_returns_0_and_ends_with_the_test_accuracy_line(straight_run):
    assert straight_run["code"] == 0, straight_run["stderr"]
    lines = straight_run["stdout"].strip().splitlines()
    assert FINAL_LINE.match(lines[-1]), lines[-1]
    assert sum(line.startswith("epoch ") for line in lines) == 2


def test_a_short_run_writes_metrics_for_every_epoch(straight_run):
    history = json.loads((straight_run["out_dir"] / "metrics.json").read_text())
    assert [row["epoch"] for row in history] == [1, 2]
    for row in history:
        assert set(row) == {"epoch", "lr", "train_loss", "test_loss", "test_accuracy", "seconds"}
        assert all(math.isfinite(row[key]) for key in row)
        assert 0 <= row["test_accuracy"] <= 1 and row["seconds"] >= 0 and row["lr"] > 0
    final = straight_run["stdout"].strip().splitlines()[-1]
    assert final == f"test accuracy: {100 * history[-1]['test_accuracy']:.2f}%"
    assert (straight_run["out_dir"] / "metrics.csv").read_text().splitlines()[0].startswith("epoch,lr,train_loss")


def test_the_training_loss_decreases(straight_run):
    history = json.loads((straight_run["out_dir"] / "metrics.json").read_text())
    first, second = history[0]["train_loss"], history[1]["train_loss"]
    assert second < first


def test_every_epoch_leaves_a_loadable_checkpoint(straight_run, example):
    checkpoint = straight_run["out_dir"] / "checkpoint.npz"
    arrays, meta = model_arrays(checkpoint)
    assert meta["epoch"] == 2 and len(meta["history"]) == 2
    assert any(key.startswith("model/") for key in arrays)
    assert not list(straight_run["out_dir"].glob("*.tmp"))


# Resume runs are tiny (128 images, 4 steps an epoch) with the random-shift augmentation on, so that
# shuffling, dropout and augmentation all draw from the RNG that the checkpoint must restore.
RESUME = ["--limit-train", "128", "--limit-test", "50", "--batch-size", "32", "--no-progress", "--seed", "3",
          "--shift", "2", "--step-size", "1", "--gamma", "0.5"]


@pytest.fixture(scope="module")
def tiny_straight_run(example, tmp_path_factory):
    """Run A: two epochs without a break."""
    out_dir = tmp_path_factory.mktemp("run-a-tiny")
    code, _, stderr = run(example, "--data-dir", MNIST_DIR, *RESUME, "--epochs", 2, "--out-dir", out_dir)
    assert code == 0, stderr
    return out_dir


def test_resume_reaches_exactly_the_parameters_of_an_uninterrupted_run(tiny_straight_run, example, tmp_path):
    out_dir = tmp_path / "run-b"
    code, _, stderr = run(example, "--data-dir", MNIST_DIR, *RESUME, "--epochs", 1, "--out-dir", out_dir)
    assert code == 0, stderr
    _, meta = model_arrays(out_dir / "checkpoint.npz")
    assert meta["epoch"] == 1
    code, stdout, stderr = run(example, "--data-dir", MNIST_DIR, *RESUME, "--epochs", 2, "--out-dir", out_dir, "--resume")
    assert code == 0, stderr
    assert "resumed" in stdout and FINAL_LINE.match(stdout.strip().splitlines()[-1])

    resumed, resumed_meta = model_arrays(out_dir / "checkpoint.npz")
    straight, straight_meta = model_arrays(tiny_straight_run / "checkpoint.npz")
    assert resumed_meta["epoch"] == straight_meta["epoch"] == 2
    model_keys = sorted(key for key in straight if key.startswith("model/"))
    assert model_keys and model_keys == sorted(key for key in resumed if key.startswith("model/"))
    for key in straight:  # the model's parameters and the optimiser's buffers
        assert np.array_equal(resumed[key], straight[key]), key
    assert resumed_meta["rng"] == straight_meta["rng"]
    assert resumed_meta["history"] == [
        {**row, "seconds": resumed_meta["history"][i]["seconds"]} for i, row in enumerate(straight_meta["history"])
    ]
    history = json.loads((out_dir / "metrics.json").read_text())
    assert [row["epoch"] for row in history] == [1, 2]


def test_resume_of_a_finished_run_trains_no_more(tiny_straight_run, example, tmp_path):
    out_dir = tmp_path / "finished"
    shutil.copytree(tiny_straight_run, out_dir)
    before = (out_dir / "checkpoint.npz").read_bytes()
    code, stdout, _ = run(example, "--data-dir", MNIST_DIR, *RESUME, "--epochs", 2, "--out-dir", out_dir, "--resume")
    assert code == 0
    assert not any(line.startswith("epoch ") for line in stdout.splitlines())
    assert (out_dir / "checkpoint.npz").read_bytes() == before


def test_resume_without_a_checkpoint_stops_with_a_message(example, tmp_path):
    with pytest.raises(SystemExit, match="no checkpoint"):
        run(example, "--data-dir", MNIST_DIR, *TINY, "--out-dir", tmp_path / "none", "--resume")


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_a_non_finite_loss_in_the_first_epoch_stops_naming_epoch_and_step(example, tmp_path):
    out_dir = tmp_path / "diverge"
    code, stdout, stderr = run(example, "--data-dir", MNIST_DIR, *TINY, "--epochs", 2, "--lr", "1e30", "--out-dir", out_dir)
    assert code != 0
    assert re.search(r"epoch 1, step \d+", stderr), stderr
    assert "test accuracy:" not in stdout
    assert not (out_dir / "checkpoint.npz").exists()


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_a_non_finite_loss_later_keeps_the_last_good_checkpoint_loadable(example, tmp_path):
    # The rate is fine in epoch 1, then StepLR multiplies it by 1e30: epoch 2 diverges.
    out_dir = tmp_path / "diverge-later"
    code, stdout, stderr = run(example, "--data-dir", MNIST_DIR, *TINY, "--epochs", 3, "--out-dir", out_dir,
                               "--scheduler", "step", "--step-size", 1, "--gamma", "1e30")
    assert code != 0
    assert re.search(r"epoch 2, step \d+", stderr), stderr
    assert "checkpoint" in stderr
    arrays, meta = model_arrays(out_dir / "checkpoint.npz")
    assert meta["epoch"] == 1
    assert all(np.all(np.isfinite(value)) for value in arrays.values())
    assert not list(out_dir.glob("*.tmp"))

    # It can be loaded into the model, and training can resume from it.
    example_model = example.build_model(example.parse_args(["--out-dir", str(out_dir)]))
    from minialex.checkpoint import load_checkpoint  # noqa: PLC0415

    assert load_checkpoint(out_dir / "checkpoint.npz", example_model)["epoch"] == 1


@pytest.mark.parametrize("argv", [["--epochs", "0"], ["--batch-size", "0"], ["--lr", "0"], ["--limit-train", "0"],
                                  ["--dataset", "cifar"], ["--model", "vgg"]])
def test_bad_command_lines_are_refused(example_module, argv, capsys):
    with pytest.raises(SystemExit) as info:
        example_module.parse_args(argv)
    assert info.value.code == 2
    assert "error" in capsys.readouterr().err


@pytest.fixture
def seen_rates(monkeypatch):
    """The learning rate of every optimiser step taken while the test runs."""
    from minialex import optim

    seen = []
    original_step = optim.SGD.step

    def recording_step(self):
        seen.append(self.param_groups[0]["lr"])
        return original_step(self)

    monkeypatch.setattr(optim.SGD, "step", recording_step)
    return seen


def test_warmup_raises_the_rate_linearly_then_hands_back_the_scheduled_rate(example, tmp_path, seen_rates):
    """Steps 1..N of the run use lr * step / N; later steps and the schedulers see the scheduled rate."""
    # 64 images in batches of 32: 2 steps an epoch, so a 3-step warm-up crosses into epoch 2.
    code, _, _ = run(example, "--data-dir", MNIST_DIR, *TINY, "--epochs", 2, "--warmup-steps", 3,
                     "--lr", 0.03, "--out-dir", tmp_path)
    assert code == 0
    assert seen_rates == pytest.approx([0.01, 0.02, 0.03, 0.03])
    history = json.loads((tmp_path / "metrics.json").read_text())
    assert [row["lr"] for row in history] == [0.03, 0.03]


def test_cosine_lowers_the_rate_every_batch_under_the_warmup(example, tmp_path, seen_rates):
    """--scheduler cosine: the rate of step s is lr * (1 + cos(pi * (s-1) / T)) / 2, T the run's steps, times warm-up."""
    # 2 steps an epoch, 2 epochs: T = 4; the 3-step warm-up scales the first three.
    code, _, stderr = run(example, "--data-dir", MNIST_DIR, *TINY, "--epochs", 2, "--warmup-steps", 3,
                          "--lr", 0.04, "--scheduler", "cosine", "--out-dir", tmp_path)
    assert code == 0, stderr
    cosine = [0.04 * (1 + math.cos(math.pi * t / 4)) / 2 for t in range(4)]
    assert seen_rates == pytest.approx([cosine[0] / 3, cosine[1] * 2 / 3, cosine[2], cosine[3]], rel=1e-12)
    history = json.loads((tmp_path / "metrics.json").read_text())
    assert [row["lr"] for row in history] == pytest.approx([0.04, 0.02], rel=1e-12)  # each epoch's first rate


def test_resume_with_the_cosine_schedule_matches_an_uninterrupted_run(example, tmp_path, monkeypatch):
    # The cosine spans the whole run (--epochs), so the interrupted run must be asked for 2 epochs
    # too: it is stopped right after epoch 1's checkpoint, as a power cut would stop it.
    args = [*RESUME, "--scheduler", "cosine", "--epochs", 2]
    code, _, stderr = run(example, "--data-dir", MNIST_DIR, *args, "--out-dir", tmp_path / "a")
    assert code == 0, stderr

    original_write_metrics = example.write_metrics

    def write_then_stop(*arguments):
        original_write_metrics(*arguments)
        raise KeyboardInterrupt

    monkeypatch.setattr(example, "write_metrics", write_then_stop)
    with pytest.raises(KeyboardInterrupt):
        run(example, "--data-dir", MNIST_DIR, *args, "--out-dir", tmp_path / "b")
    monkeypatch.undo()
    code, stdout, stderr = run(example, "--data-dir", MNIST_DIR, *args, "--out-dir", tmp_path / "b", "--resume")
    assert code == 0, stderr
    assert "resumed" in stdout and "warning" not in stderr

    straight, straight_meta = model_arrays(tmp_path / "a" / "checkpoint.npz")
    resumed, resumed_meta = model_arrays(tmp_path / "b" / "checkpoint.npz")
    assert sorted(straight) == sorted(resumed)
    for key in straight:
        assert np.array_equal(resumed[key], straight[key]), key
    assert resumed_meta["scheduler"] == straight_meta["scheduler"]


def test_resuming_a_cosine_run_with_other_epochs_warns_that_the_schedule_is_kept(example, tmp_path):
    args = [*RESUME, "--scheduler", "cosine"]
    code, _, stderr = run(example, "--data-dir", MNIST_DIR, *args, "--epochs", 1, "--out-dir", tmp_path)
    assert code == 0, stderr
    code, _, stderr = run(example, "--data-dir", MNIST_DIR, *args, "--epochs", 2, "--out-dir", tmp_path, "--resume")
    assert code == 0, stderr
    assert "warning: the checkpoint's cosine schedule spans 4 steps (1 epoch)" in stderr
