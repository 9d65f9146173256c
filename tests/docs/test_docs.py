"""The documentation works: its examples run, its placeholders resolve, and the site builds strictly.

1. Every ```python block of every docs/*.md page runs, each page's blocks in
   order in one namespace (from the repository root, matplotlib on Agg), so
   every example a reader copies works.
2. The MkDocs hook (docs/hooks.py, imported by path) expands every page's
   placeholders: every source(...) names a real file and function, every
   excerpt(...) finds its lines, every output() follows a python block.
   Broken placeholders fail with a message naming the problem.
3. Where MkDocs is installed, ``mkdocs build --strict`` succeeds.
4. Maths reads as maths: no product written with ``*`` in the prose (``C*kh*kw``)
   is turned into emphasis (C<em>kh</em>kw) by Markdown, checked in the built
   HTML and in the Markdown source (outside code and maths).
"""

import importlib.util
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
PAGES = sorted(p.name for p in DOCS.glob("*.md"))
LAYER_PAGES = ["conv.md", "pool.md", "lrn.md", "relu.md", "dropout.md", "linear.md", "softmax_xent.md"]
PYTHON_BLOCK = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", flags=re.M | re.S)
# Maths as pymdownx.arithmatex reads it: $$ display $$, $inline$, \[ display \], \( inline \).
MATHS = re.compile(r"\$\$.+?\$\$|\$[^$\s](?:[^$\n]*?[^$\s])?\$|\\\[.+?\\\]|\\\(.+?\\\)", flags=re.S)
MATHS_OR_CODE = re.compile(r"(`+).+?\1|" + MATHS.pattern + r"|<!--.*?-->|\{\{.*?\}\}", flags=re.S)


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
    script = (DOCS / "make_figures.py").read_text(encoding="utf-8")
    # save(figure, "x.png") for matplotlib figures; copy_figure(path, "x.png") for pictures minialex.viz drew.
    drawn = set(re.findall(r'save\(figure, "([\w.-]+\.png)"\)', script))
    drawn |= set(re.findall(r'copy_figure\(.*, "([\w.-]+\.png)"\)$', script, flags=re.M))  # the last argument
    assert present == drawn, "docs/figures/ and the figures docs/make_figures.py draws differ"


# --------------------------------------------------------------------------- 2. the placeholders resolve


@pytest.mark.parametrize("page", PAGES)
def test_page_placeholders_resolve(page, hooks):
    text = (DOCS / page).read_text(encoding="utf-8")
    # The examples already ran above; here only the placeholders are checked.
    expanded = hooks.expand(text, str(REPO), page, run_code=False)
    for part in hooks.split_blocks(expanded):
        if part[0] == "text":
            # "}}" is everyday TeX (\frac{1}{b_{r}}), so inside maths only "{{" would be a placeholder
            outside_maths = MATHS.sub(" ", "\n".join(part[1])).split("\n")
            leftover = [line for line in part[1] if "{{" in line] + [
                line for line in outside_maths if "}}" in line]
            assert not leftover, f"{page}: unexpanded placeholder {leftover}"
    for path, name in re.findall(r'\{\{ source\("([^"]+)", "([^"]+)"', text):
        assert f"`{path}`, lines " in expanded, f"{page}: source({path!r}, {name!r}) did not expand"


def test_source_is_the_function_found_by_ast(hooks):
    block = hooks.source(str(REPO), "minialex/kernels/conv.py", "im2col")
    assert block.startswith("`minialex/kernels/conv.py`, lines ")
    assert "def im2col(x, kh, kw, stride, padding, phases_on_cpu=True):" in block
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


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site built once with ``mkdocs build --strict``: (the finished process, the site folder)."""
    if importlib.util.find_spec("mkdocs") is None:
        pytest.skip("MkDocs is not installed (pip install -e '.[docs]')")
    folder = tmp_path_factory.mktemp("site") / "site"
    env = dict(os.environ, MPLBACKEND="Agg")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(folder)],
        cwd=REPO, capture_output=True, text=True, env=env, timeout=300, check=False,
    )
    return result, folder


def test_mkdocs_build_strict(site):
    result, folder = site
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}\n{result.stderr}"
    assert (folder / "conv" / "index.html").is_file()
    assert "WARNING" not in result.stderr, result.stderr


@pytest.fixture(scope="module")
def built_pages(site):
    result, folder = site
    if result.returncode != 0:
        pytest.fail(f"mkdocs build --strict failed:\n{result.stdout}\n{result.stderr}")
    return {page: (folder / ("" if page == "index.md" else page[:-3]) / "index.html").read_text(encoding="utf-8")
            for page in PAGES}


# --------------------------------------------------------------------------- 4. maths reads as maths


class ProseEmphasis(HTMLParser):
    """The <em> elements of a page's prose (outside code, pre, maths, scripts), each with the
    character just before it and just after it."""

    SKIP = {"code", "pre", "script", "style"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack = []          # (tag, skipped) of the open elements
        self.before = ""         # the prose text seen so far (its last character matters)
        self.open_em = None      # [text before, text inside] of the <em> being read
        self.found = []          # (char before, text, char after); char after filled on the next text

    def skipped(self):
        return any(skip for _, skip in self.stack)

    def handle_starttag(self, tag, attrs):
        classes = (dict(attrs).get("class") or "").split()
        skip = tag in self.SKIP or "arithmatex" in classes or "katex" in classes
        if tag in ("br", "img", "hr", "input", "meta", "link", "wbr"):
            self.before += " "
            return
        self.stack.append((tag, skip))
        if tag == "em" and not self.skipped():
            self.open_em = [self.before[-1:], ""]
        elif tag in ("p", "li", "td", "th", "div", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote"):
            self.before += " "

    def handle_endtag(self, tag):
        while self.stack:
            open_tag, _ = self.stack.pop()
            if open_tag == tag:
                break
        if tag == "em" and self.open_em is not None:
            self.found.append([self.open_em[0], self.open_em[1], None])
            self.open_em = None
        elif tag in ("p", "li", "td", "th", "div", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote"):
            self.before += " "

    def handle_data(self, data):
        if self.skipped():
            data = "x"   # code or maths stands next to the text like a word
        if self.open_em is not None:
            self.open_em[1] += data
        for item in self.found:
            if item[2] is None:
                item[2] = data[:1]
        self.before += data


def swallowed_stars(html):
    """Emphasis glued to letters or digits on either side, as ``C*kh*kw`` becomes C<em>kh</em>kw."""
    parser = ProseEmphasis()
    parser.feed(html)
    glued = re.compile(r"\w")  # "(a *logit*)" is emphasis; "C*kh*kw" and "2*x*y" are products
    return [f"{before}<em>{text}</em>{after or ''}" for before, text, after in parser.found
            if glued.match(before or " ") or glued.match(after or " ")]


@pytest.mark.parametrize("page", PAGES)
def test_no_formula_becomes_emphasis_in_the_rendered_page(built_pages, page):
    fragments = swallowed_stars(built_pages[page])
    assert not fragments, (
        f"{page}: a `*` in the prose was read as emphasis, so a product lost its stars: {fragments}. "
        "Write the formula as maths ($...$) or as code (`...`).")


def test_the_emphasis_check_catches_a_swallowed_product():
    import markdown
    html = markdown.markdown("it multiplies the C*kh*kw numbers of one window, *not* one pixel")
    assert swallowed_stars(html) == ["C<em>kh</em>k"]
    assert swallowed_stars(markdown.markdown("the `C*kh*kw` rows, *linear* in x")) == []




def prose(markdown_text):
    """A page's Markdown without its fenced blocks, inline code, maths, comments and placeholders."""
    hooks = load_hooks()
    text = "\n".join("\n".join(part[1]) for part in hooks.split_blocks(markdown_text) if part[0] == "text")
    return MATHS_OR_CODE.sub(" ", text)


@pytest.mark.parametrize("page", PAGES)
def test_no_bare_product_in_the_markdown_prose(page):
    text = prose((DOCS / page).read_text(encoding="utf-8"))
    products = sorted({m.group(0) for m in re.finditer(r"\w+(?:\*\w+)+", text) if "*" in m.group(0)})
    assert not products, (
        f"docs/{page}: products written with a bare `*` in the prose (Markdown reads `*` as emphasis): "
        f"{products}. Write them as maths ($C k_h k_w$) or as code (`C*kh*kw`).")


KATEX = DOCS / "js" / "katex"


def test_maths_is_typeset_from_files_served_with_the_site(built_pages, site):
    _, folder = site
    for name in ("katex.min.js", "katex.min.css", "fonts/KaTeX_Main-Regular.woff2", "fonts/KaTeX_Math-Italic.woff2"):
        assert (folder / "js" / "katex" / name).is_file(), f"the site does not serve js/katex/{name}"
    assert "0.19.1" in (KATEX / "VERSION").read_text(encoding="utf-8") and (KATEX / "LICENSE").is_file()
    fonts = re.findall(r"url\((fonts/[\w-]+\.woff2)\)", (KATEX / "katex.min.css").read_text(encoding="utf-8"))
    missing = sorted({f for f in fonts if not (KATEX / f).is_file()})
    assert fonts and not missing, f"katex.min.css names woff2 fonts that docs/js/katex/ lacks: {missing}"
    for page in LAYER_PAGES + ["sgd.md", "adam.md", "autograd.md", "distributed.md"]:
        html = built_pages[page]
        assert 'class="arithmatex"' in html, f"{page} has no typeset maths"
        for asset in ("js/katex/katex.min.js", "js/katex-init.js", "js/katex/katex.min.css"):
            assert f'="../{asset}"' in html, f"{page} does not load {asset}"
    for page, html in built_pages.items():
        remote = re.findall(r'<(?:script|link)\b[^>]*(?:src|href)="(?:https?:)?//[^"]*"', html)
        assert not remote, f"{page} loads files from another site: {remote}"


def test_every_formula_parses_with_katex(built_pages, tmp_path):
    """Each formula of every page goes through the served KaTeX with throwOnError, as a reader's browser
    would render it (a formula KaTeX cannot parse shows up red on the page)."""
    import html as html_module
    import json
    import shutil

    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the formulas are checked in a browser only")
    formulas = []
    for page, html in built_pages.items():
        for tag, body in re.findall(r'<(span|div) class="arithmatex">(.*?)</\1>', html, flags=re.S):
            tex = html_module.unescape(body).strip()
            formulas.append({"page": page, "display": tag == "div", "tex": tex[2:-2]})  # drop \( \) or \[ \]
    assert len(formulas) > 100, "the pages hold fewer formulas than they should"
    script = tmp_path / "check.js"
    script.write_text(
        'const katex = require(process.argv[2]);\n'
        'const failed = [];\n'
        'for (const f of JSON.parse(require("fs").readFileSync(0, "utf8"))) {\n'
        '  try { katex.renderToString(f.tex, {displayMode: f.display, throwOnError: true, strict: "error"}); }\n'
        '  catch (e) { failed.push(f.page + ": " + e.message); }\n'
        '}\n'
        'console.log(JSON.stringify(failed));\n', encoding="utf-8")
    result = subprocess.run([node, str(script), str(KATEX / "katex.min.js")], input=json.dumps(formulas),
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    failed = json.loads(result.stdout)
    assert not failed, "formulas KaTeX cannot typeset:\n" + "\n".join(failed)
