"""The README's Python examples run as written, and its commands name real files."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_readme_python_example_runs(index):
    exec(compile(python_blocks()[index], f"README.md python block {index}", "exec"), {})


def test_readme_commands_point_at_existing_files():
    text = README.read_text()
    for marker in ("<!-- train-command -->", "<!-- test-command -->"):
        assert marker in text, f"README.md lost its {marker} block (.ci/run reads the test command from it)"
    assert (README.parent / "examples" / "train_mnist.py").exists()
    assert "examples/train_mnist.py" in text


def test_the_first_example_prints_non_zero_gradients(capsys):
    namespace = {}
    exec(compile(python_blocks()[0], "README.md python block 0", "exec"), namespace)
    printed = capsys.readouterr().out
    for name in ("x", "w"):
        grad = namespace[name].grad.numpy()
        assert (grad != 0).all(), f"{name}.grad has zeros: the example would teach nothing"
        assert str(namespace[name].grad) in printed
