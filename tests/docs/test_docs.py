"""The documentation works: its examples run, its placeholders resolve, and the site builds strictly.

1. Every ```python block of every docs/*.md page runs, each page's blocks in
   order in one namespace (from the repository root, matplotlib on Agg), so
   every example a reader copies works.
2. The MkDocs hook (docs/hooks.py, imported by path) expands every page's
   placeholders: every source(...) names a real file and function, every
   excerpt(...) finds its lines, every output() follows a python block.
   Broken placeholders fail with a message naming the problem.
3. Where MkDocs is installed, ``mkdocs build --strict`` succeeds.
"""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
PAGES = sorted(p.name for p in DOCS.glob("*.md"))
LAYER_PAGES = ["conv.md", "pool.md", "lrn.md", "relu.md", "dropout.md", "linear.md", "softmax_xent.md"]
PYTHON_BLOCK = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", flags=re.M | re.S)


def load_hooks():
    spec = importlib.util.spec_from_file_location("minialex_docs_hooks", DOCS / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def hooks():
    return load_hooks()


def test_the_docs_have_pages():
    assert "index.md" in PAGES
    for page in LAYER_PAGES + ["autograd.md", "sgd.md", "alexnet.md", "training.md", "gpu.md"]:
        assert page in PAGES, f"docs/{page} is missing"


# --------------------------------------------------------------------------- 1. the examples run


PAGES_WITH_EXAMPLES = [p for p in PAGES if PYTHON_BLOCK.search((DOCS / p).read_text(encoding="utf-8"))]


@pytest.mark.parametrize("page", PAGES_WITH_EXAMPLES)
def test_page_python_examples_run(page, monkeypatch, capsys):
    blocks = PYTHON_BLOCK.findall((DOCS / page).read_text(encoding="utf-8"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.chdir(REPO)  # the examples name files relative to the repository root
    namespace = {"__name__": "__docs__"}
    for index, code in enumerate(blocks, 1):
        exec(compile(code, f"docs/{page} python block {index}", "exec"), namespace)
    capsys.readouterr()  # the examples print; keep the test log quiet


def test_layer_pages_have_code_example_and_figure():
    for page in LAYER_PAGES:
        text = (DOCS / page).read_text(encoding="utf-8")
        assert "{{ source(" in text, f"{page} shows no kernel source"
        assert PYTHON_BLOCK.search(text), f"{page} has no worked example"
        assert "{{ output() }}" in text, f"{page} does not show what its example prints"
        assert "](figures/" in text, f"{page} has no figure"


def test_every_figure_exists_and_is_used():
    used = set()
    for page in PAGES:
        used |= set(re.findall(r"\]\(figures/([\w.-]+\.png)\)", (DOCS / page).read_text(encoding="utf-8")))
    present = {p.name for p in (DOCS / "figures").glob("*.png")}
    assert used <= present, f"pages show figures that docs/make_figures.py has not drawn: {sorted(used - present)}"
    assert present <= used, f"figures no page shows: {sorted(present - used)}"
    drawn = set(re.findall(r'save\(figure, "([\w.-]+\.png)"\)', (DOCS / "make_figures.py").read_text(encoding="utf-8")))
    assert present == drawn, "docs/figures/ and the figures docs/make_figures.py draws differ"


# --------------------------------------------------------------------------- 2. the placeholders resolve


@pytest.mark.parametrize("page", PAGES)
def test_page_placeholders_resolve(page, hooks):
    text = (DOCS / page).read_text(encoding="utf-8")
    # The examples already ran above; here only the placeholders are checked.
    expanded = hooks.expand(text, str(REPO), page, run_code=False)
    for part in hooks.split_blocks(expanded):
        if part[0] == "text":
            leftover = [line for line in part[1] if "{{" in line or "}}" in line]
            assert not leftover, f"{page}: unexpanded placeholder {leftover}"
    for path, name in re.findall(r'\{\{ source\("([^"]+)", "([^"]+)"', text):
        assert f"`{path}`, lines " in expanded, f"{page}: source({path!r}, {name!r}) did not expand"


def test_source_is_the_function_found_by_ast(hooks):
    block = hooks.source(str(REPO), "minialex/kernels/conv.py", "im2col")
    assert block.startswith("`minialex/kernels/conv.py`, lines ")
    assert "def im2col(x, kh, kw, stride, padding):" in block
    assert "def col2im" not in block  # exactly one function
    method = hooks.source(str(REPO), "minialex/autograd.py", "Function.__call__")
    assert method.split("```python\n", 1)[1].startswith("def __call__(self")  # dedented


@pytest.mark.parametrize(
    "placeholder, message",
    [
        ('{{ source("minialex/kernels/no_such_file.py", "im2col") }}', "no file 'minialex/kernels/no_such_file.py'"),
        ('{{ source("minialex/kernels/conv.py", "im2cool") }}', "defines no 'im2cool'"),
        ('{{ source("minialex/autograd.py", "Function.nope") }}', "in Function, defines no 'nope'"),
        ('{{ sorce("minialex/kernels/conv.py", "im2col") }}', "unknown placeholder 'sorce'"),
        ('{{ excerpt("README.md", "no line says this", "x") }}', "no line of README.md contains"),
        ("{{ output() }}", "output() must follow a python block"),
        ('text {{ source("minialex/kernels/conv.py", "im2col") }}', "must stand alone on its line"),
    ],
)
def test_a_broken_placeholder_fails_clearly(hooks, placeholder, message):
    with pytest.raises(hooks.DocsError, match=re.escape(message)):
        hooks.expand(f"# page\n\n{placeholder}\n", str(REPO), "broken.md")


def test_a_failing_example_fails_the_expansion(hooks):
    with pytest.raises(hooks.DocsError, match="broken.md: python block 1 failed"):
        hooks.expand("```python\n1 / 0\n```\n", str(REPO), "broken.md")


def test_output_shows_what_the_block_printed(hooks):
    expanded = hooks.expand("```python\nprint(6 * 7)\n```\n\n{{ output() }}\n", str(REPO), "page.md")
    assert "```text\n42\n```" in expanded


def test_results_say_plainly_when_nothing_was_measured(hooks, tmp_path):
    assert "No GPU measurements have been made yet." in hooks.results(
        str(tmp_path), "gpu-*.md", none="No GPU measurements have been made yet.")
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "benchmarks" / "results" / "gpu-test.md").write_text("# title\n\n| a |\n| - |\n| 1 |\n")
    shown = hooks.results(str(tmp_path), "gpu-*.md")
    assert "Included from `benchmarks/results/gpu-test.md`" in shown and "### title" in shown


# --------------------------------------------------------------------------- 3. the site builds


def test_mkdocs_build_strict(tmp_path):
    if importlib.util.find_spec("mkdocs") is None:
        pytest.skip("MkDocs is not installed (pip install -e '.[docs]')")
    env = dict(os.environ, MPLBACKEND="Agg")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=REPO, capture_output=True, text=True, env=env, timeout=300, check=False,
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}\n{result.stderr}"
    assert (tmp_path / "site" / "conv" / "index.html").is_file()
    assert "WARNING" not in result.stderr, result.stderr
