"""examples/train_mnist.py --distributed, launched as users launch it: ``mpiexec -n 2 python ...``.

These tests start mpiexec themselves, so they run in a plain ``python -m
pytest`` and skip where mpi4py or mpiexec is missing (the 'dist' extra).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mpi4py", reason="the 'dist' extra (mpi4py, mpich) is not installed")

REPO = Path(__file__).resolve().parents[2]
MNIST_DIR = REPO / ".." / "shared" / "data" / "mnist"
TRAIN = REPO / "examples" / "train_mnist.py"
QUICK = ["--limit-train", "512", "--limit-test", "200", "--batch-size", "64", "--no-progress", "--seed", "0"]
# A launcher's own variables, which an MPI process started by the test run itself may carry.
LAUNCHER_PREFIXES = ("PMI_", "PMIX_", "OMPI_", "HYDRA_", "MPIR_", "I_MPI_")


def find_mpiexec():
    beside_python = Path(sys.executable).parent / "mpiexec"
    return str(beside_python) if beside_python.exists() else shutil.which("mpiexec")


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(find_mpiexec() is None, reason="no mpiexec (pip install mpich)"),
    pytest.mark.skipif(not (MNIST_DIR / "train-images-idx3-ubyte.gz").is_file(),
                       reason=f"the MNIST files are missing from {MNIST_DIR}"),
]


def command(out_dir, *options):
    return [find_mpiexec(), "-n", "2", sys.executable, str(TRAIN), "--distributed", "--data-dir", str(MNIST_DIR),
            *QUICK, "--out-dir", str(out_dir), *map(str, options)]


def environment():
    env = {k: v for k, v in os.environ.items() if not k.startswith(LAUNCHER_PREFIXES)}
    env["OPENBLAS_NUM_THREADS"] = "1"  # one thread per rank on a 2-core machine
    return env


def launch(out_dir, *options):
    return subprocess.run(command(out_dir, *options), capture_output=True, text=True, env=environment(),
                          cwd=REPO, timeout=300)


def checkpoint_arrays(path):
    with np.load(path, allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files if key != "meta"}, json.loads(str(archive["meta"]))


def checkpoint_epoch(path):
    """The epoch of the checkpoint at ``path``, or 0 while there is none (a rename makes it appear whole)."""
    try:
        return checkpoint_arrays(path)[1]["epoch"]
    except (OSError, ValueError, KeyError):
        return 0


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    """Three epochs on 2 ranks, never interrupted."""
    out_dir = tmp_path_factory.mktemp("straight")
    result = launch(out_dir, "--epochs", 3)
    assert result.returncode == 0, result.stderr
    return out_dir, result


def test_only_rank_0_prints_and_every_epoch_is_reported_once(straight_run):
    out_dir, result = straight_run
    lines = result.stdout.splitlines()
    assert [line.split(":")[0] for line in lines if line.startswith("epoch ")] == ["epoch 1/3", "epoch 2/3",
                                                                                  "epoch 3/3"]
    assert sum("2 ranks of 32 images a step" in line for line in lines) == 1
    assert lines[-1].startswith("test accuracy: ")
    assert len(json.loads((out_dir / "metrics.json").read_text())) == 3


def test_a_run_killed_after_its_first_checkpoint_resumes_to_the_parameters_of_the_straight_run(
        straight_run, tmp_path):
    out_dir = tmp_path / "killed"
    checkpoint = out_dir / "checkpoint.npz"
    process = subprocess.Popen(command(out_dir, "--epochs", 3), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env=environment(), cwd=REPO, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while checkpoint_epoch(checkpoint) < 1 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # mpiexec and both ranks, as a crash or a batch system would
        process.wait()
    killed_at = checkpoint_epoch(checkpoint)
    assert process.returncode != 0, "the run finished before it could be killed"
    assert 1 <= killed_at < 3

    resumed = launch(out_dir, "--epochs", 3, "--resume")

    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed from {checkpoint} after epoch {killed_at}" in resumed.stdout
    ours, meta = checkpoint_arrays(checkpoint)
    straight, straight_meta = checkpoint_arrays(straight_run[0] / "checkpoint.npz")
    assert meta["epoch"] == 3 and meta["args"]["world_size"] == 2
    assert ours.keys() == straight.keys()
    for key in ours:  # the same data order, dropout masks and sums: bit for bit
        np.testing.assert_array_equal(ours[key], straight[key], err_msg=key)
    assert [row["test_accuracy"] for row in meta["history"]] == [
        row["test_accuracy"] for row in straight_meta["history"]]


def test_a_batch_that_does_not_split_over_the_ranks_is_refused_once_by_rank_0(tmp_path):
    result = launch(tmp_path, "--epochs", 1, "--batch-size", 63)
    assert result.returncode == 1
    assert result.stderr.count("--batch-size 63 is the global batch: it must split evenly over the 2 ranks") == 1
    # Every rank refuses at the same point, so the ranks end normally: an MPI abort could kill rank 0
    # before the launcher has passed its message on.
    assert "MPI_Abort" not in result.stderr
    assert not (tmp_path / "checkpoint.npz").exists()


def test_rank_0s_refusal_reaches_the_user_once_and_every_rank_ends_without_an_abort(tmp_path):
    result = launch(tmp_path, "--epochs", 1, "--resume")
    assert result.returncode == 1
    assert result.stderr.count(f"--resume: no checkpoint at {tmp_path / 'checkpoint.npz'}") == 1
    assert "MPI_Abort" not in result.stderr
