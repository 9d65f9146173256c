"""atomic_write: a reader sees the old complete file or the new complete one, never a partial one."""

import os
import stat

import pytest

import minialex.io
from minialex.io import atomic_write


class Crash(Exception):
    pass


def test_atomic_write_writes_the_file(tmp_path):
    path = tmp_path / "out.bin"
    with atomic_write(path) as file:
        file.write(b"hello ")
        file.write(b"world")
    assert path.read_bytes() == b"hello world"
    assert os.listdir(tmp_path) == ["out.bin"]


def test_atomic_write_in_text_mode_and_a_str_path(tmp_path):
    path = str(tmp_path / "out.txt")
    with atomic_write(path, "w") as file:
        file.write("line\n")
    with open(path) as file:
        assert file.read() == "line\n"


def test_atomic_write_replaces_an_existing_file(tmp_path):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old contents, longer than the new")
    with atomic_write(path) as file:
        file.write(b"new")
    assert path.read_bytes() == b"new"
    assert os.listdir(tmp_path) == ["out.bin"]


def test_atomic_write_creates_missing_parent_folders(tmp_path):
    path = tmp_path / "a" / "b" / "out.bin"
    with atomic_write(path) as file:
        file.write(b"x")
    assert path.read_bytes() == b"x"


def test_the_target_is_untouched_until_the_block_ends(tmp_path):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    with atomic_write(path) as file:
        file.write(b"new data")
        file.flush()
        assert path.read_bytes() == b"old"  # a reader during the write sees the old file
    assert path.read_bytes() == b"new data"


@pytest.mark.parametrize("error", [Crash, KeyboardInterrupt], ids=["exception", "KeyboardInterrupt"])
def test_a_crash_mid_write_leaves_the_old_file_intact_and_no_temporary_file(tmp_path, error):
    path = tmp_path / "checkpoint.npz"
    path.write_bytes(b"the old, complete file")
    with pytest.raises(error):
        with atomic_write(path) as file:
            file.write(b"half of the new fi")
            file.flush()
            raise error()
    assert path.read_bytes() == b"the old, complete file"
    assert os.listdir(tmp_path) == ["checkpoint.npz"]


def test_a_crash_mid_write_of_a_new_file_leaves_nothing(tmp_path):
    with pytest.raises(Crash):
        with atomic_write(tmp_path / "new.bin") as file:
            file.write(b"partial")
            raise Crash()
    assert os.listdir(tmp_path) == []


def test_a_failure_to_sync_leaves_the_old_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")

    def failing_fsync(descriptor):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(minialex.io.os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="No space"):
        with atomic_write(path) as file:
            file.write(b"new")
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out.bin"]


def test_a_failing_rename_leaves_the_old_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")

    def failing_replace(source, target):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(minialex.io.os, "replace", failing_replace)
    with pytest.raises(OSError):
        with atomic_write(path) as file:
            file.write(b"new")
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out.bin"]


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_a_new_file_gets_the_permissions_of_a_plain_open(tmp_path):
    # mkstemp makes 0600 files; a checkpoint or a downloaded dataset in a shared cache must stay
    # readable as a file written with open() would be (0666 minus the umask).
    umask = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "atomic.bin") as file:
            file.write(b"x")
        with open(tmp_path / "plain.bin", "wb") as file:
            file.write(b"x")
    finally:
        os.umask(umask)
    atomic_mode = stat.S_IMODE(os.stat(tmp_path / "atomic.bin").st_mode)
    plain_mode = stat.S_IMODE(os.stat(tmp_path / "plain.bin").st_mode)
    assert oct(atomic_mode) == oct(plain_mode) == oct(0o644)
