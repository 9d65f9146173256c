"""examples/train_mnist.py on a few hundred real MNIST images: loss falls, metrics, checkpoints, exact resume."""

import argparse
import contextlib
import importlib.util
import io
import os
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
        assert set(row) == {"epoch", "lr", "last_lr", "train_loss", "test_loss", "test_accuracy", "seconds"}
        assert all(math.isfinite(row[key]) for key in row)
        assert 0 <= row["test_accuracy"] <= 1 and row["seconds"] >= 0 and row["lr"] > 0
    final = straight_run["stdout"].strip().splitlines()[-1]
    assert final == f"test accuracy: {100 * history[-1]['test_accuracy']:.2f}%"
    assert (straight_run["out_dir"] / "metrics.csv").read_text().splitlines()[0].startswith("epoch,lr,last_lr,train_loss")


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
# The warm-up is one step: a longer one is shortened to a quarter of the planned run, and the
# runs below plan 1 or 2 epochs, which would then warm up differently.
RESUME = ["--limit-train", "128", "--limit-test", "50", "--batch-size", "32", "--no-progress", "--seed", "3",
          "--shift", "2", "--step-size", "1", "--gamma", "0.5", "--warmup-steps", "1"]


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
    example_model = example.build_model(example.parse_args(["--out-dir", str(out_dir)]), 10, 1)
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
    # 96 images in batches of 32: 3 steps an epoch, 12 in the run, so a 3-step warm-up (a quarter
    # of the run) fills epoch 1. StepLR (every 3 epochs) divides the rate by 10 for epoch 4.
    code, _, _ = run(example, "--data-dir", MNIST_DIR, *TINY, "--limit-train", 96, "--epochs", 4,
                     "--warmup-steps", 3, "--lr", 0.03, "--out-dir", tmp_path)
    assert code == 0
    assert seen_rates == pytest.approx([0.01, 0.02, 0.03] + [0.03] * 6 + [0.003] * 3)
    history = json.loads((tmp_path / "metrics.json").read_text())
    # Each epoch records the rates its first and last steps really used.
    assert [row["lr"] for row in history] == pytest.approx([0.01, 0.03, 0.03, 0.003])
    assert [row["last_lr"] for row in history] == pytest.approx([0.03, 0.03, 0.03, 0.003])


def test_cosine_lowers_the_rate_every_batch_under_the_warmup(example, tmp_path, seen_rates):
    """--scheduler cosine: the rate of step s is lr * (1 + cos(pi * (s-1) / T)) / 2, T the run's steps, times warm-up."""
    # 96 images, 3 steps an epoch, 4 epochs: T = 12; the 3-step warm-up scales the first three.
    code, _, stderr = run(example, "--data-dir", MNIST_DIR, *TINY, "--limit-train", 96, "--epochs", 4,
                          "--warmup-steps", 3, "--lr", 0.04, "--scheduler", "cosine", "--out-dir", tmp_path)
    assert code == 0, stderr
    cosine = [0.04 * (1 + math.cos(math.pi * t / 12)) / 2 for t in range(12)]
    expected = [rate * min(1, (t + 1) / 3) for t, rate in enumerate(cosine)]
    assert seen_rates == pytest.approx(expected, rel=1e-12)
    history = json.loads((tmp_path / "metrics.json").read_text())
    assert [row["lr"] for row in history] == pytest.approx(expected[0::3], rel=1e-12)  # each epoch's first rate
    assert [row["last_lr"] for row in history] == pytest.approx(expected[2::3], rel=1e-12)


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


# --------------------------------------------------------------------------- a model that blows up is never saved


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_a_blow_up_on_an_epochs_last_step_is_not_saved_over_the_last_good_checkpoint(example, tmp_path, monkeypatch):
    """The loss before each step is finite, but the last step of epoch 2 leaves infinite weights."""
    from minialex import optim

    original_step, calls = optim.SGD.step, []

    def step_that_blows_up_on_step_4(self):
        original_step(self)
        calls.append(1)
        if len(calls) == 4:  # 2 steps an epoch: the last step of epoch 2
            parameter = self.param_groups[0]["params"][0]
            parameter.data[...] = np.inf

    monkeypatch.setattr(optim.SGD, "step", step_that_blows_up_on_step_4)
    out_dir = tmp_path / "blow-up"
    code, stdout, stderr = run(example, "--data-dir", MNIST_DIR, *TINY, "--epochs", 3, "--out-dir", out_dir)
    assert code == 2
    assert "end of epoch 2" in stderr and "not saved" in stderr, stderr
    assert f"the last good checkpoint is {out_dir / 'checkpoint.npz'} (epoch 1)" in stderr
    assert "test accuracy:" not in stdout
    arrays, meta = model_arrays(out_dir / "checkpoint.npz")
    assert meta["epoch"] == 1
    assert all(np.all(np.isfinite(value)) for value in arrays.values())
    assert [row["epoch"] for row in json.loads((out_dir / "metrics.json").read_text())] == [1]


def test_non_finite_problem_names_the_parameter_even_when_the_test_loss_is_finite(example_module):
    model = example_module.build_model(example_module.parse_args([]), 10, 1)
    assert example_module.non_finite_problem(0.5, model) is None
    assert "test loss" in example_module.non_finite_problem(float("nan"), model)
    name, parameter = list(model.named_parameters())[-1]
    parameter.data[0] = np.nan
    assert example_module.non_finite_problem(0.5, model) == f"parameter {name} holds infinite or NaN values"


# --------------------------------------------------------------------------- --resume and the run's settings

# A value different from any default, for each setting --resume takes from the checkpoint.
OTHER_VALUES = {"dataset": "fashion-mnist", "model": "alexnet", "init": "paper", "batch_size": 7, "lr": 0.123,
                "momentum": 0.5, "weight_decay": 0.0, "nesterov": True, "scheduler": "plateau", "step_size": 9,
                "gamma": 0.7, "warmup_steps": 11, "shift": 3, "seed": 42, "limit_train": 100, "limit_test": 10,
                "optimizer": "adamw", "augment": True, "val_split": 5}


def command_line(name, value):
    option = "--" + name.replace("_", "-")
    return [option] if value is True else [option, str(value)]


@settings(max_examples=40, deadline=None)
@given(name=st.sampled_from(sorted(OTHER_VALUES)), stored_is_default=st.booleans())
def test_resume_refuses_any_setting_given_with_another_value_naming_option_and_both_values(
        example_module, name, stored_is_default):
    """Law: for every stored setting, giving it on the command line with a value unlike the checkpoint's is an error."""
    defaults = vars(example_module.parse_args([]))
    stored, given = (defaults[name], OTHER_VALUES[name]) if stored_is_default else (OTHER_VALUES[name], defaults[name])
    if given is False or given is None:  # "--nesterov false" or "--limit-test None" cannot be written
        return
    record = {"args": {**{k: defaults[k] for k in example_module.RUN_SETTINGS}, name: stored}}
    args = example_module.parse_args(["--resume", *command_line(name, given)])
    option = "--" + name.replace("_", "-")
    with pytest.raises(SystemExit) as info:
        example_module.check_resume_options(args, record)
    message = str(info.value)
    assert f"{option} {given} differs from the checkpoint's {stored}" in message, message


@settings(max_examples=40, deadline=None)
@given(name=st.sampled_from(sorted(OTHER_VALUES)))
def test_resume_takes_every_setting_left_out_from_the_checkpoint(example_module, name):
    defaults = vars(example_module.parse_args([]))
    record = {"args": {**{k: defaults[k] for k in example_module.RUN_SETTINGS}, name: OTHER_VALUES[name]}}
    args = example_module.parse_args(["--resume"])
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        example_module.check_resume_options(args, record)
    assert getattr(args, name) == OTHER_VALUES[name]
    assert f"{command_line(name, OTHER_VALUES[name])[0]} " in printed.getvalue()
    assert "(from the checkpoint)" in printed.getvalue()
    # Giving the checkpoint's own value is fine too.
    args = example_module.parse_args(["--resume", *command_line(name, OTHER_VALUES[name])])
    example_module.check_resume_options(args, record)
    assert getattr(args, name) == OTHER_VALUES[name]


def test_resume_with_a_different_lr_is_refused_and_without_it_records_the_rate_used(example, tmp_path):
    out_dir = tmp_path / "lr"
    code, _, stderr = run(example, "--data-dir", MNIST_DIR, *TINY, "--epochs", 1, "--lr", 0.01, "--out-dir", out_dir)
    assert code == 0, stderr
    with pytest.raises(SystemExit, match=r"--lr 0\.05 differs from the checkpoint's 0\.01"):
        run(example, "--data-dir", MNIST_DIR, *TINY, "--epochs", 2, "--lr", 0.05, "--out-dir", out_dir, "--resume")
    _, meta = model_arrays(out_dir / "checkpoint.npz")
    assert meta["epoch"] == 1  # nothing was trained or saved

    code, stdout, stderr = run(example, "--data-dir", MNIST_DIR, *TINY, "--epochs", 2, "--out-dir", out_dir, "--resume")
    assert code == 0, stderr
    assert "--lr 0.01 (from the checkpoint)" in stdout
    _, meta = model_arrays(out_dir / "checkpoint.npz")
    assert meta["args"]["lr"] == 0.01  # the rate the run used, not the unused default 0.02
    assert [row["lr"] for row in meta["history"]] == [0.01, 0.01]


# --------------------------------------------------------------------------- the output folder


def test_an_unwritable_out_dir_is_refused_before_training_naming_the_path(example, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    out_dir = blocker / "run"  # cannot be created, even by root

    def no_training(*arguments, **keywords):
        raise AssertionError("training started although the output folder cannot be written")

    monkeypatch.setattr(example, "train_one_epoch", no_training)
    with pytest.raises(SystemExit) as info:
        run(example, "--data-dir", MNIST_DIR, *TINY, "--epochs", 1, "--out-dir", out_dir)
    assert f"--out-dir {str(out_dir)!r} is not a writable folder" in str(info.value)


def test_stale_temporaries_of_our_own_files_are_removed_and_nothing_else(example, tmp_path):
    out_dir = tmp_path / "stale"
    out_dir.mkdir()
    ours = ["metrics.json.k2j3h4.tmp", "metrics.csv.abc.tmp", "curves.png.x_y.tmp", "checkpoint.npz.q1w2e3.tmp",
            "filters_conv1.png.a1.tmp", "feature_maps.png.b2.tmp"]
    others = ["notes.txt.abc.tmp", "metrics.json.keep", "my-checkpoint.npz.abc.tmp", "data.tmp"]
    for name in ours + others:
        (out_dir / name).write_text("left over")
    code, stdout, stderr = run(example, "--data-dir", MNIST_DIR, *TINY, "--epochs", 1, "--out-dir", out_dir)
    assert code == 0, stderr
    assert "removed 6 temporary file(s)" in stdout
    left = {path.name for path in out_dir.iterdir()}
    assert not left & set(ours)
    assert set(others) <= left


def test_resume_of_a_finished_run_rewrites_the_metrics_a_kill_lost(tiny_straight_run, example, tmp_path):
    out_dir = tmp_path / "killed-while-writing-metrics"
    shutil.copytree(tiny_straight_run, out_dir)
    expected = json.loads((out_dir / "metrics.json").read_text())
    for name in ("metrics.json", "metrics.csv", "curves.png"):
        (out_dir / name).unlink(missing_ok=True)
    (out_dir / "metrics.json.a1b2c3.tmp").write_text('[{"epoch": 1')  # the write the kill cut short
    code, stdout, stderr = run(example, "--data-dir", MNIST_DIR, *RESUME, "--epochs", 2, "--out-dir", out_dir, "--resume")
    assert code == 0, stderr
    assert json.loads((out_dir / "metrics.json").read_text()) == expected
    assert (out_dir / "metrics.csv").read_text().splitlines()[0].startswith("epoch,lr,")
    assert not list(out_dir.glob("*.tmp"))


# --------------------------------------------------------------------------- the warm-up fits the run


@settings(max_examples=200, deadline=None)
@given(epochs=st.integers(1, 50), steps_per_epoch=st.integers(1, 2000), warmup=st.integers(0, 5000))
def test_the_warmup_used_is_at_most_a_quarter_of_the_run_and_shortening_is_announced(
        example_module, epochs, steps_per_epoch, warmup):
    args = example_module.parse_args(["--epochs", str(epochs), "--warmup-steps", str(warmup)])
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        used = example_module.plan_warmup(args, steps_per_epoch)
    total = epochs * steps_per_epoch
    assert 0 <= used <= max(warmup, 0) and used <= total / 4
    assert used == warmup or used == int(total / 4)
    announced = printed.getvalue()
    assert bool(announced) == (used != warmup)
    if announced:
        assert f"--warmup-steps {warmup}" in announced and f"over {used} steps" in announced


def test_a_warmup_longer_than_the_run_is_shortened_with_a_notice_and_the_rates_used_are_logged(
        example, tmp_path, seen_rates):
    # 256 images in batches of 32: 8 steps, one epoch; the default 300-step warm-up becomes 2 steps.
    code, stdout, stderr = run(example, "--data-dir", MNIST_DIR, *TINY, "--limit-train", 256, "--epochs", 1,
                               "--lr", 0.02, "--out-dir", tmp_path)
    assert code == 0, stderr
    assert "note: --warmup-steps 300 is more than 25% of the run's 8 steps" in stdout
    assert "warming up over 2 steps instead" in stdout
    assert seen_rates == pytest.approx([0.01] + [0.02] * 7)
    history = json.loads((tmp_path / "metrics.json").read_text())
    assert (history[0]["lr"], history[0]["last_lr"]) == pytest.approx((0.01, 0.02))
    assert re.search(r"^epoch 1/1: .*, lr 0\.01 to 0\.02, ", stdout, re.MULTILINE), stdout
    _, meta = model_arrays(tmp_path / "checkpoint.npz")
    assert meta["args"]["warmup_steps_used"] == 2


# --------------------------------------------------------------------------- empty data


def write_fake_mnist(folder, train_count, test_count):
    from minialex.data import write_idx  # noqa: PLC0415

    folder.mkdir(parents=True, exist_ok=True)
    for prefix, count in (("train", train_count), ("t10k", test_count)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", np.zeros((count, 28, 28), np.uint8))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", np.zeros(count, np.uint8))


@pytest.mark.parametrize("train_count, test_count, split", [(0, 5, "training"), (5, 0, "test")])
def test_an_empty_dataset_is_a_clear_valueerror_before_training(example_module, tmp_path, train_count, test_count, split):
    data_dir = tmp_path / "empty-data"
    write_fake_mnist(data_dir, train_count, test_count)
    with pytest.raises(ValueError, match=f"the {split} set is empty: .*has 0 {split} images"):
        run(example_module, "--data-dir", data_dir, "--no-progress", "--epochs", 1, "--out-dir", tmp_path / "out")


# --------------------------------------------------------------------------- the recipe: validation, optimisers, augmentation


def test_val_split_holds_out_training_images_and_the_plateau_scheduler_decides_on_them(example, tmp_path):
    code, stdout, stderr = run(example, "--data-dir", MNIST_DIR, *TINY, "--epochs", 2, "--val-split", 16,
                               "--scheduler", "plateau", "--out-dir", tmp_path)
    assert code == 0, stderr
    assert "48 training images, 16 validation images, 50 test images" in stdout
    history = json.loads((tmp_path / "metrics.json").read_text())
    for row in history:
        assert {"val_loss", "val_accuracy", "test_loss", "test_accuracy"} <= set(row)
        assert 0 <= row["val_accuracy"] <= 1
    assert "best validation accuracy" in stdout


def test_val_split_is_disjoint_from_training_and_the_same_for_a_seed(example_module):
    args = example_module.parse_args(["--data-dir", str(MNIST_DIR), *TINY, "--val-split", "20"])
    if not (MNIST_DIR / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("the shared MNIST files are missing")
    (train, val, _), classes, channels, ten_crop = example_module.build_data(args)
    assert (classes, channels, ten_crop) == (10, 1, None)
    train_indices, val_indices = set(train.dataset.indices.tolist()), set(val.dataset.indices.tolist())
    assert not train_indices & val_indices and len(train_indices | val_indices) == 64
    (_, val_again, _), *_ = example_module.build_data(args)
    assert val_again.dataset.indices.tolist() == sorted(val_indices)


def test_the_plateau_scheduler_without_a_validation_split_is_refused(example_module, tmp_path):
    with pytest.raises(SystemExit, match="--val-split"):
        run(example_module, "--scheduler", "plateau", "--out-dir", tmp_path)


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_adam_and_adamw_train_and_resume(example, tmp_path, optimizer):
    code, stdout, stderr = run(example, "--data-dir", MNIST_DIR, *TINY, "--epochs", 1, "--optimizer", optimizer,
                               "--warmup-steps", 0, "--out-dir", tmp_path)
    assert code == 0, stderr
    assert f", {optimizer}, device cpu" in stdout
    arrays, meta = model_arrays(tmp_path / "checkpoint.npz")
    assert meta["args"]["optimizer"] == optimizer and meta["args"]["lr"] == 1e-3
    code, stdout, stderr = run(example, "--data-dir", MNIST_DIR, *TINY, "--epochs", 2, "--resume",
                               "--out-dir", tmp_path)
    assert code == 0, stderr
    assert json.loads((tmp_path / "metrics.json").read_text())[-1]["epoch"] == 2


def test_momentum_with_adam_is_refused(example_module):
    with pytest.raises(SystemExit), contextlib.redirect_stderr(io.StringIO()) as err:
        example_module.parse_args(["--optimizer", "adam", "--momentum", "0.5"])
    assert "--momentum is for --optimizer sgd" in err.getvalue()


def test_augment_and_ten_crop_run_and_crop_the_training_images(example, tmp_path):
    code, stdout, stderr = run(example, "--data-dir", MNIST_DIR, *TINY, "--epochs", 1, "--augment", "--ten-crop",
                               "--warmup-steps", 0, "--out-dir", tmp_path)
    assert code == 0, stderr
    args = example.parse_args(["--data-dir", str(MNIST_DIR), *TINY, "--augment", "--ten-crop"])
    train_transform, test_transform, ten_crop = example.build_transforms(args, 1, 0.0, 1.0)
    names = [type(t).__name__ for t in train_transform.transforms]
    assert names[0] == "RandomCrop" and "RandomHorizontalFlip" not in names  # digits are never mirrored
    assert ten_crop == 28 and type(test_transform.transforms[0]).__name__ == "Pad"
    fashion = example.parse_args(["--dataset", "fashion-mnist", "--augment"])
    assert "RandomHorizontalFlip" in [type(t).__name__ for t in example.build_transforms(fashion, 1, 0.0, 1.0)[0].transforms]


def test_ten_crop_evaluation_averages_the_softmax_of_the_ten_crops(example_module):
    import minialex as ma
    import minialex.functional as F
    from minialex import models
    from minialex.data import TenCrop

    ma.manual_seed(0)
    model = models.alexnet_mnist()
    images = np.random.default_rng(0).standard_normal((3, 1, 32, 32)).astype(np.float32)
    labels = np.array([1, 7, 3])
    loss, accuracy = example_module.evaluate(model, [(images, labels)], ten_crop_size=28)
    model.eval()
    with ma.no_grad():
        crops = TenCrop(28)(images)
        mean = np.mean([F.softmax(model(ma.tensor(c)), axis=1).numpy() for c in crops], axis=0)
    assert loss == pytest.approx(-np.log(mean[np.arange(3), labels]).mean(), rel=1e-5)
    assert accuracy == pytest.approx(np.mean(mean.argmax(axis=1) == labels))


def write_image_folder(root, size, rng, per_class=6, classes=("circle", "square", "stripe")):
    """train/ and test/ ImageFolder trees of small grey PNGs whose class shows in the pixels."""
    from PIL import Image

    for split in ("train", "test"):
        for index, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 60, size=(size, size), dtype=np.uint8)
                pixels[:, index::len(classes)] += 150  # a class-specific stripe pattern
                Image.fromarray(pixels, mode="L").save(folder / f"{i}.png")


@pytest.mark.parametrize("size", [28, 20])
def test_own_images_in_an_image_folder_train_with_their_own_classes(example_module, tmp_path, size):
    pytest.importorskip("PIL")
    write_image_folder(tmp_path / "images", size, np.random.default_rng(size))
    code, stdout, stderr = run(example_module, "--dataset", "folder", "--data-dir", tmp_path / "images",
                               "--epochs", 1, "--batch-size", 6, "--warmup-steps", 0, "--no-progress",
                               "--out-dir", tmp_path / "run")
    assert code == 0, stderr
    assert "alexnet-mnist on folder: 18 training images, 18 test images" in stdout
    args = example_module.parse_args(["--dataset", "folder", "--data-dir", str(tmp_path / "images")])
    (train, _, test), classes, channels, _ = example_module.build_data(args)
    images, labels = next(iter(train))
    assert (classes, channels) == (3, 1) and images.shape[1:] == (1, 28, 28)  # resized for the 28x28 net
    assert sorted(set(labels.tolist())) == [0, 1, 2]


def test_an_image_folder_without_its_test_split_is_refused(example_module, tmp_path):
    pytest.importorskip("PIL")
    write_image_folder(tmp_path / "images", 28, np.random.default_rng(0))
    shutil.rmtree(tmp_path / "images" / "test")
    with pytest.raises((SystemExit, FileNotFoundError), match="test"):
        run(example_module, "--dataset", "folder", "--data-dir", tmp_path / "images", "--out-dir", tmp_path / "run")


def test_worker_processes_decode_an_image_folder_without_changing_the_run(example_module, tmp_path):
    pytest.importorskip("PIL")
    write_image_folder(tmp_path / "images", 28, np.random.default_rng(1))
    weights = []
    for workers in (0, 2):
        out_dir = tmp_path / f"run-{workers}"
        code, _, stderr = run(example_module, "--dataset", "folder", "--data-dir", tmp_path / "images", "--epochs", 1,
                              "--batch-size", 6, "--augment", "--warmup-steps", 0, "--no-progress",
                              "--num-workers", workers, "--out-dir", out_dir)
        assert code == 0, stderr
        weights.append(model_arrays(out_dir / "checkpoint.npz")[0])
    for name in weights[0]:
        np.testing.assert_array_equal(weights[0][name], weights[1][name], err_msg=name)


def test_num_workers_is_refused_for_data_already_in_memory(example_module):
    with pytest.raises(SystemExit), contextlib.redirect_stderr(io.StringIO()) as err:
        example_module.parse_args(["--num-workers", "2"])
    assert "--num-workers is for --dataset folder" in err.getvalue()


def test_evaluate_tests_a_checkpoint_with_one_view_or_ten_crops_and_trains_nothing(example, tmp_path):
    code, stdout, stderr = run(example, "--data-dir", MNIST_DIR, *TINY, "--epochs", 1, "--augment", "--out-dir", tmp_path)
    assert code == 0, stderr
    trained = stdout.strip().splitlines()[-1]
    before = model_arrays(tmp_path / "checkpoint.npz")
    code, stdout, stderr = run(example, "--evaluate", "--data-dir", MNIST_DIR, "--out-dir", tmp_path)
    assert code == 0, stderr
    assert stdout.strip().splitlines()[-1] == trained  # the same model on the same test images
    code, stdout, stderr = run(example, "--evaluate", "--ten-crop", "--data-dir", MNIST_DIR, "--out-dir", tmp_path)
    assert code == 0, stderr
    assert "ten crops of each test image" in stdout
    after = model_arrays(tmp_path / "checkpoint.npz")
    assert after[1] == before[1] and all(np.array_equal(after[0][k], before[0][k]) for k in before[0])


def test_distributed_epoch_seeds_differ_per_rank_and_epoch_and_repeat_for_the_same_run(example_module):
    seeds = {(rank, epoch): example_module.epoch_seed(0, rank, epoch) for rank in range(4) for epoch in range(1, 5)}
    assert len(set(seeds.values())) == len(seeds)  # every rank its own dropout masks, every epoch new ones
    assert seeds[(1, 3)] == example_module.epoch_seed(0, 1, 3)  # a resumed run draws the same numbers
    assert example_module.epoch_seed(1, 1, 3) != seeds[(1, 3)]


# --------------------------------------------------------------------------- --plots, --help, curves.png, the progress bar

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path):
    """(height, width) of a PNG, read back by matplotlib after checking its signature."""
    from matplotlib.image import imread  # noqa: PLC0415

    assert path.read_bytes()[:8] == PNG_SIGNATURE, path
    image = imread(path)
    return image.shape[:2]


def test_plots_draws_conv1_filters_and_feature_maps_after_training_and_with_evaluate(example, tmp_path):
    pytest.importorskip("matplotlib")
    code, stdout, stderr = run(example, "--data-dir", MNIST_DIR, *TINY, "--epochs", 1, "--plots", "--out-dir", tmp_path)
    assert code == 0, stderr
    lines = stdout.strip().splitlines()
    assert FINAL_LINE.match(lines[-1])  # still the last line
    filters, maps = tmp_path / example.FILTERS_PLOT, tmp_path / example.FEATURE_MAPS_PLOT
    assert lines[-2] == f"wrote {filters} and {maps}"
    assert (filters.name, maps.name) == ("filters_conv1.png", "feature_maps.png")
    height, width = png_size(filters)
    assert width > height  # 24 kernels: 3 rows of 8
    height, width = png_size(maps)
    assert height > width  # a row a layer
    assert png_size(tmp_path / "curves.png")
    assert not list(tmp_path.glob("*.tmp"))

    # --evaluate --plots draws the checkpoint's model without training.
    filters.unlink()
    maps.unlink()
    code, stdout, stderr = run(example, "--evaluate", "--plots", "--data-dir", MNIST_DIR, "--out-dir", tmp_path)
    assert code == 0, stderr
    assert png_size(filters) and png_size(maps)
    assert FINAL_LINE.match(stdout.strip().splitlines()[-1])


def test_without_plots_no_pictures_but_curves_are_drawn(straight_run):
    assert not (straight_run["out_dir"] / "filters_conv1.png").exists()
    assert not (straight_run["out_dir"] / "feature_maps.png").exists()


def test_the_feature_maps_of_a_ten_crop_run_use_the_centre_crop_the_net_was_trained_on(example):
    args = example.parse_args(["--data-dir", str(MNIST_DIR), *TINY, "--ten-crop"])
    (_, _, test_loader), _, _, ten_crop_size = example.build_data(args)
    padded = test_loader.dataset.get_batch(np.array([0]))[0][0]
    assert padded.shape == (1, 32, 32)  # the test images are padded for the ten crops
    image = example.first_test_image(test_loader.dataset, ten_crop_size)
    assert image.shape == (1, 28, 28)
    np.testing.assert_array_equal(image, padded[:, 2:30, 2:30])


def test_plots_without_matplotlib_is_refused_before_training(example_module, monkeypatch, capsys):
    original_find_spec = importlib.util.find_spec

    def without_matplotlib(name, *args, **kwargs):
        return None if name == "matplotlib" else original_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", without_matplotlib)
    with pytest.raises(SystemExit) as info:
        example_module.parse_args(["--plots"])
    assert info.value.code == 2
    assert "--plots draws with matplotlib, which is not installed" in capsys.readouterr().err


def test_with_distributed_only_rank_0_writes_the_plots_and_the_metrics(example, tmp_path, monkeypatch):
    """One process in a world of one plays rank 0, then a rank other than 0 (its rank as main() sees it)."""
    pytest.importorskip("matplotlib")
    pytest.importorskip("mpi4py")
    files = ["metrics.json", "curves.png", "checkpoint.npz", "filters_conv1.png", "feature_maps.png"]
    start_distributed = example.start_distributed
    for rank in (0, 1):
        if rank == 1:
            monkeypatch.setattr(example, "start_distributed", lambda args: (start_distributed(args)[0] + 1, 1))
        out_dir = tmp_path / f"rank-{rank}"
        try:
            code, _, stderr = run(example, "--distributed", "--data-dir", MNIST_DIR, *TINY, "--epochs", 1, "--plots",
                                  "--out-dir", out_dir)
        finally:
            if example.dist.is_initialized():
                example.dist.destroy_process_group()
        assert code == 0, stderr
        written = [name for name in files if (out_dir / name).exists()]
        assert written == (files if rank == 0 else []), (rank, written)


def option_help_blocks(example_module, monkeypatch, capsys):
    """What --help prints, as {option: its help text on one line}, wrapped wide so that no word breaks."""
    monkeypatch.setenv("COLUMNS", "400")
    with pytest.raises(SystemExit) as info:
        example_module.parse_args(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    blocks = re.split(r"\n  (?=-)", text.split("options:", 1)[1])
    return {block.split()[0].rstrip(","): " ".join(block.split()) for block in blocks if block.strip()}


def test_help_shows_every_default_once_and_never_a_none_that_is_computed(example_module, monkeypatch, capsys):
    blocks = option_help_blocks(example_module, monkeypatch, capsys)
    parser = example_module.build_parser()
    for action in parser._actions:
        option = action.option_strings[0]
        text = blocks[option]
        assert text.count("default") <= 1, text
        assert "(default: None)" not in text and "(default: False)" not in text, text
        if action.default not in (None, False, argparse.SUPPRESS):
            assert f"(default: {action.default})" in text, text
    # The defaults worked out after parsing are given in words, and are the ones used.
    assert f"default: {example_module.DEFAULT_LR['sgd']:g} for sgd, {example_module.DEFAULT_LR['adam']:g} for adam" \
        in blocks["--lr"]
    assert example_module.parse_args([]).lr == example_module.DEFAULT_LR["sgd"]
    assert example_module.parse_args(["--optimizer", "adamw"]).lr == example_module.DEFAULT_LR["adamw"]
    assert "default: step for alexnet-mnist, cosine for alexnet" in blocks["--scheduler"]
    assert example_module.parse_args([]).scheduler == "step"
    assert example_module.parse_args(["--model", "alexnet"]).scheduler == "cosine"
    assert "(default: runs/<dataset>-<model>)" in blocks["--out-dir"]
    assert example_module.parse_args([]).out_dir == os.path.join("runs", "mnist-alexnet-mnist")
    assert "(default: all)" in blocks["--limit-train"]
    assert "(default: 4)" in blocks["--epochs"] and "(default: 64)" in blocks["--batch-size"]


def test_the_curves_have_whole_epoch_ticks_an_accuracy_axis_ending_at_100_and_a_title(example_module):
    pytest.importorskip("matplotlib")
    history = [{"epoch": epoch, "train_loss": 1 / epoch, "test_loss": 1.2 / epoch, "test_accuracy": accuracy,
                "val_loss": 1.1 / epoch, "val_accuracy": accuracy - 0.01}
               for epoch, accuracy in zip(range(1, 8), [0.9, 0.95, 0.97, 0.98, 0.99, 0.995, 1.0])]
    title = example_module.run_title(example_module.parse_args([]))
    assert title == "alexnet-mnist on mnist, sgd, step schedule"
    figure = example_module.curves_figure(history, title)
    loss_axes, accuracy_axes = figure.axes
    for axes in (loss_axes, accuracy_axes):
        ticks = [tick for tick in axes.get_xticks() if axes.get_xlim()[0] <= tick <= axes.get_xlim()[1]]
        assert ticks and all(float(tick).is_integer() for tick in ticks), ticks
    bottom, top = accuracy_axes.get_ylim()
    assert top == 100 and bottom < 89  # the whole curve is shown, and nothing above 100%
    assert title in [text.get_text() for text in figure.texts]
    # A run that is already at 100% still gets an axis (99% to 100%).
    perfect = example_module.curves_figure([{"epoch": 1, "train_loss": 0.1, "test_loss": 0.1, "test_accuracy": 1.0}])
    assert perfect.axes[1].get_ylim() == (99.0, 100.0)
    cosine = example_module.parse_args(["--model", "alexnet", "--optimizer", "adam", "--scheduler", "none"])
    assert example_module.run_title(cosine) == "alexnet on mnist, adam, constant rate"


class FakeStream(io.StringIO):
    def __init__(self, terminal):
        super().__init__()
        self.terminal = terminal

    def isatty(self):
        return self.terminal


@pytest.mark.parametrize("stdout_is_terminal, stderr_is_terminal, no_progress, shown", [
    (True, True, False, True), (False, True, False, False), (True, False, False, False), (True, True, True, False)])
def test_the_progress_bar_is_drawn_only_on_a_terminal_and_never_with_no_progress(
        example_module, stdout_is_terminal, stderr_is_terminal, no_progress, shown):
    args = example_module.parse_args(["--no-progress"] if no_progress else [])
    assert example_module.progress_wanted(args, FakeStream(stdout_is_terminal), FakeStream(stderr_is_terminal)) == shown


def test_a_run_with_its_output_in_a_file_draws_no_progress_bar(example, tmp_path, monkeypatch):
    enabled = []
    original_progress = example.Progress

    def recording_progress(total, description, show):
        enabled.append(show)
        return original_progress(total, description, show)

    monkeypatch.setattr(example, "Progress", recording_progress)
    without_no_progress = [arg for arg in TINY if arg != "--no-progress"]
    code, stdout, stderr = run(example, "--data-dir", MNIST_DIR, *without_no_progress, "--epochs", 1,
                               "--out-dir", tmp_path)
    assert code == 0, stderr
    assert enabled == [False]
    assert "\r" not in stdout + stderr


# --amp runs are tiny (16 images, one step an epoch): NumPy's float16 products are slow on the CPU.
AMP = ["--limit-train", "16", "--limit-test", "10", "--batch-size", "16", "--no-progress", "--seed", "1",
       "--shift", "2", "--warmup-steps", "0", "--amp"]


@pytest.mark.slow
def test_amp_trains_saves_the_scaler_and_resumes_to_exactly_the_uninterrupted_run(example, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    code, stdout, stderr = run(example, "--data-dir", MNIST_DIR, *AMP, "--epochs", 2, "--out-dir", straight)
    assert code == 0, stderr
    assert FINAL_LINE.match(stdout.strip().splitlines()[-1])
    code, _, stderr = run(example, "--data-dir", MNIST_DIR, *AMP, "--epochs", 1, "--out-dir", split)
    assert code == 0, stderr
    # --amp is a stored setting: the resumed run takes it from the checkpoint.
    resume = [a for a in AMP if a != "--amp"]
    code, stdout, stderr = run(example, "--data-dir", MNIST_DIR, *resume, "--epochs", 2, "--out-dir", split, "--resume")
    assert code == 0, stderr
    assert "resumed" in stdout and "no loss scaler" not in stdout

    resumed, resumed_meta = model_arrays(split / "checkpoint.npz")
    expected, expected_meta = model_arrays(straight / "checkpoint.npz")
    assert resumed.keys() == expected.keys()
    for key in expected:  # the float32 master weights and the optimiser's buffers
        assert resumed[key].dtype == np.float32, key
        assert np.array_equal(resumed[key], expected[key]), key
    assert expected_meta["args"]["amp"] is True
    assert resumed_meta["grad_scaler"] == expected_meta["grad_scaler"]
    assert set(expected_meta["grad_scaler"]) == {"scale", "growth_factor", "backoff_factor", "growth_interval",
                                                 "_growth_tracker"}
    history = json.loads((straight / "metrics.json").read_text())
    assert [row["loss_scale"] for row in history] == [
        row["loss_scale"] for row in json.loads((split / "metrics.json").read_text())]
    assert history[-1]["loss_scale"] == expected_meta["grad_scaler"]["scale"]


@pytest.mark.slow
def test_a_checkpoint_from_before_amp_resumes_with_amp_and_a_fresh_scaler(example, tmp_path):
    out_dir = tmp_path / "old"
    plain = [a for a in AMP if a != "--amp"]
    code, _, stderr = run(example, "--data-dir", MNIST_DIR, *plain, "--epochs", 1, "--out-dir", out_dir)
    assert code == 0, stderr
    # Make it a checkpoint written before --amp existed: no "amp" setting, no scaler.
    checkpoint = out_dir / "checkpoint.npz"
    arrays, meta = model_arrays(checkpoint)
    del meta["args"]["amp"]
    assert "grad_scaler" not in meta
    np.savez(checkpoint, meta=np.array(json.dumps(meta)), **arrays)

    code, stdout, stderr = run(example, "--data-dir", MNIST_DIR, *AMP, "--epochs", 2, "--out-dir", out_dir, "--resume")
    assert code == 0, stderr
    assert "no loss scaler" in stdout and "65536" in stdout
    _, meta = model_arrays(checkpoint)
    assert meta["epoch"] == 2 and meta["args"]["amp"] is True and "grad_scaler" in meta


def test_resuming_a_float32_run_with_amp_is_refused_as_another_setting(example_module):
    record = {"args": {**{k: v for k, v in vars(example_module.parse_args([])).items()
                          if k in example_module.RUN_SETTINGS}, "amp": False}}
    args = example_module.parse_args(["--resume", "--amp"])
    with pytest.raises(SystemExit, match="--amp True differs from the checkpoint's False"):
        example_module.check_resume_options(args, record)
