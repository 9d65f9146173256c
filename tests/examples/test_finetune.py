"""examples/finetune.py: a new head, frozen layers that do not move, and the baseline from scratch."""

import contextlib
import importlib.util
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / ".." / "shared" / "data"
TINY = ["--limit-train", "64", "--limit-test", "50", "--batch-size", "32", "--no-progress", "--seed", "0"]


def load(name):
    sys.path.insert(0, str(REPO / "examples"))
    spec = importlib.util.spec_from_file_location(f"minialex_example_{name}", REPO / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def examples():
    if not (DATA / "mnist" / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"the shared MNIST files are missing from {DATA}")
    return load("train_mnist"), load("finetune")


def run(module, *argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = module.main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def mnist_checkpoint(examples, tmp_path_factory):
    train_mnist, _ = examples
    out_dir = tmp_path_factory.mktemp("pretrain")
    code, _, stderr = run(train_mnist, "--data-dir", DATA / "mnist", *TINY, "--epochs", 1, "--out-dir", out_dir)
    assert code == 0, stderr
    return out_dir / "checkpoint.npz"


def test_fine_tuning_with_frozen_features_moves_only_the_classifier(examples, mnist_checkpoint, tmp_path):
    _, finetune = examples
    code, stdout, stderr = run(finetune, "--checkpoint", mnist_checkpoint, "--dataset", "fashion-mnist",
                               "--data-dir", DATA / "fashion-mnist", *TINY, "--freeze", "features",
                               "--out-dir", tmp_path)
    assert code == 0, stderr
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["frozen"] and all(name.startswith("features.") for name in record["frozen"])
    assert stdout.strip().splitlines()[-1].startswith("test accuracy: ")

    # The frozen weights are the checkpoint's, bit for bit, after training; the head is new.
    args = finetune.parse_args(["--checkpoint", str(mnist_checkpoint), "--data-dir", str(DATA / "fashion-mnist"),
                                *TINY, "--out-dir", str(tmp_path)])
    weights = finetune.load_weights(mnist_checkpoint, from_checkpoint=True)
    model = finetune.build_source_model(args, weights, channels=1)
    finetune.replace_head(model, 10)
    frozen = finetune.freeze(model, ["features"])
    assert frozen == [name for name, _ in model.named_parameters() if name.startswith("features.")]
    assert all(not p.requires_grad for name, p in model.named_parameters() if name in frozen)


def test_frozen_parameters_do_not_change_in_training(examples, mnist_checkpoint):
    import minialex as ma
    import minialex.functional as F
    from minialex import optim

    _, finetune = examples
    args = finetune.parse_args(["--checkpoint", str(mnist_checkpoint), "--data-dir", str(DATA / "fashion-mnist")])
    model = finetune.build_source_model(args, finetune.load_weights(mnist_checkpoint, True), channels=1)
    finetune.replace_head(model, 5)
    finetune.freeze(model, ["features.0", "features.4"])
    before = model.state_dict()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = optim.SGD(trainable, lr=0.1, momentum=0.9)
    x = ma.tensor(np.random.default_rng(0).standard_normal((4, 1, 28, 28)).astype(np.float32))
    for _ in range(2):
        optimizer.zero_grad()
        F.cross_entropy(model(x), np.array([0, 1, 2, 4])).backward()
        optimizer.step()
    after, parameters = model.state_dict(), dict(model.named_parameters())
    for name in ("features.0.weight", "features.0.bias", "features.4.weight", "features.4.bias"):
        np.testing.assert_array_equal(after[name], before[name])
        assert parameters[name].grad is None  # backward never reached them
    assert not np.array_equal(after["features.8.weight"], before["features.8.weight"])
    assert after["classifier.6.weight"].shape == (5, 256)


def test_from_scratch_trains_every_layer(examples, tmp_path):
    _, finetune = examples
    code, stdout, stderr = run(finetune, "--from-scratch", "--dataset", "fashion-mnist",
                               "--data-dir", DATA / "fashion-mnist", *TINY, "--out-dir", tmp_path)
    assert code == 0, stderr
    assert json.loads((tmp_path / "metrics.json").read_text())["frozen"] == []


def test_bad_starting_points_are_refused_with_the_reason(examples, tmp_path):
    _, finetune = examples
    np.savez(tmp_path / "empty.npz")
    for argv, message in [
        (["--weights", tmp_path / "missing.npz"], "not a readable .npz"),
        (["--weights", tmp_path / "empty.npz"], "holds no parameters"),
    ]:
        with pytest.raises(SystemExit, match=message):
            run(finetune, *argv, "--data-dir", DATA / "fashion-mnist", *TINY, "--out-dir", tmp_path)
    args = finetune.parse_args(["--from-scratch"])
    model = finetune.build_source_model(args, None, channels=1)
    with pytest.raises(SystemExit, match="matches no parameter"):
        finetune.freeze(model, ["features.99"])


def test_torchvision_weights_converted_to_npz_load_into_alexnet_torchvision(examples, tmp_path):
    torch = pytest.importorskip("torch")
    _, finetune = examples
    from minialex import models

    # A state dict with torchvision's names and shapes (random values), saved as a .pth and converted
    # with the one-liner of finetune.py's docstring.
    reference = models.alexnet_torchvision(num_classes=1000)
    torch.save({k: torch.from_numpy(v) for k, v in reference.state_dict().items()}, tmp_path / "alexnet.pth")
    state = torch.load(tmp_path / "alexnet.pth", map_location="cpu")
    np.savez(tmp_path / "alexnet_torchvision.npz", **{k: v.numpy() for k, v in state.items()})

    args = finetune.parse_args(["--weights", str(tmp_path / "alexnet_torchvision.npz"), "--model",
                                "alexnet-torchvision", "--dataset", "folder", "--data-dir", str(tmp_path)])
    model = finetune.build_source_model(args, finetune.load_weights(args.weights, False), channels=3)
    for name, value in reference.state_dict().items():
        np.testing.assert_array_equal(model.state_dict()[name], value)
    assert finetune.replace_head(model, 4) == "classifier.6"
    assert model.classifier[6].weight.shape == (4, 4096)
