"""MkDocs hook: fill the pages' placeholders from the repository, so a page cannot drift from the code.

Registered in ``mkdocs.yml`` under ``hooks:``. Outside fenced code blocks, a
page may hold these placeholders, each alone on its line:

    {{ source("minialex/kernels/conv.py", "im2col") }}
        The source of a function or class (``"Class.method"`` for a method),
        found with the ``ast`` module, as a fenced python block with the file
        and line numbers above it. ``docstring=False`` leaves the docstring out.

    {{ output() }}
        What the python block just above printed. Every ```python block of a
        page runs at build time, in order, in one namespace per page, with the
        repository root as the working directory, so the output shown is the
        output the code gives today.

    {{ excerpt("README.md", "text of the first line", "text of the line to stop before") }}
        Lines of a repository file, verbatim: from the first line containing
        the start text up to (not including) the next line containing the stop text.

    {{ results("gpu-*.md", none="No GPU measurements have been made yet.") }}
        The markdown result files in ``benchmarks/results/`` matching the
        pattern (their headings moved two levels down), or the ``none`` text
        when there are none.

An unknown placeholder, file, function, excerpt marker or a failing example
stops the build with a message naming the page and the problem.

``expand(markdown, root, page)`` does the work without MkDocs (the docs
tests import this file by path and call it).
"""

import ast
import contextlib
import glob
import io
import os
import re
import sys
import textwrap
import traceback

try:  # a PluginError makes ``mkdocs build`` stop with the message and no traceback
    from mkdocs.exceptions import PluginError as _Base
except ImportError:  # the tests can expand pages without MkDocs installed
    _Base = Exception


class DocsError(_Base):
    """A placeholder that cannot be resolved, or a page example that fails."""


PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}")
FENCE = re.compile(r"^(```+|~~~+)\s*([\w+-]*)")


# --------------------------------------------------------------------------- markdown structure


def split_blocks(markdown):
    """The page as a list of ("text", lines) and ("code", language, lines) parts.

    Only top-level fences (at the start of a line) count; the fence lines are
    kept inside the code part so the page can be put back together unchanged.
    """
    parts, text, lines = [], [], markdown.split("\n")
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            text.append(lines[i])
            i += 1
            continue
        if text:
            parts.append(("text", text))
            text = []
        fence, language = match.group(1), match.group(2).lower()
        block = [lines[i]]
        i += 1
        while i < len(lines) and not lines[i].startswith(fence):
            block.append(lines[i])
            i += 1
        if i < len(lines):
            block.append(lines[i])
            i += 1
        parts.append(("code", language, block))
    if text:
        parts.append(("text", text))
    return parts


def python_blocks(markdown):
    """The code of every ```python block of a page, in order."""
    return ["\n".join(part[2][1:-1]) for part in split_blocks(markdown) if part[0] == "code" and part[1] == "python"]


# --------------------------------------------------------------------------- source()


def _read(root, path):
    full = os.path.normpath(os.path.join(root, path))
    if not os.path.isfile(full):
        raise DocsError(f"no file {path!r} under {root} (is the path relative to the repository root?)")
    with open(full, encoding="utf-8") as file:
        return file.read()


def _names(node):
    """The names a statement defines: a def or class name, or the targets of an assignment."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [node.name]
    if isinstance(node, ast.Assign):
        return [t.id for t in node.targets if isinstance(t, ast.Name)]
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return [node.target.id]
    return []


def find_definition(tree, name, path):
    """The ast node defining ``name`` in a module: a function, a class, "Class.method", or a
    module-level assignment (e.g. a CUDA source string)."""
    scope, node = tree.body, None
    for part in name.split("."):
        matches = [n for n in scope if part in _names(n)]
        if not matches:
            defined = sorted(n for statement in scope for n in _names(statement))
            where = path if node is None else f"{path}, in {node.name},"
            raise DocsError(f"{where} defines no {part!r} (looking for {name!r}; defined there: {defined})")
        node = matches[-1]  # a redefinition wins, as at import time
        scope = getattr(node, "body", [])
    return node


def source(root, path, name, docstring=True, language=None):
    """A fenced block holding the definition of ``name`` in ``path``, with its location.

    With ``language`` (e.g. "cpp"), an assignment is shown as the text of its
    string literals in that language: the CUDA source of a RawKernel.
    """
    text = _read(root, path)
    try:
        tree = ast.parse(text, filename=path)
    except SyntaxError as error:
        raise DocsError(f"{path} does not parse: {error}") from None
    node = find_definition(tree, name, path)
    lines = text.split("\n")
    first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
    last = node.end_lineno
    if language is not None:
        strings = [n.value for n in ast.walk(getattr(node, "value", node))
                   if isinstance(n, ast.Constant) and isinstance(n.value, str)]
        if not isinstance(node, (ast.Assign, ast.AnnAssign)) or not strings:
            raise DocsError(f"{path}: {name!r} is not an assignment of a string literal; leave out language=")
        code = "\n".join(s.strip("\n") for s in strings).rstrip()
        return f"`{path}`, lines {first}-{last} (the string `{name}`):\n\n```{language}\n{code}\n```"
    body = lines[first - 1:last]
    if not docstring and node.body and isinstance(node.body[0], ast.Expr) and isinstance(
        getattr(node.body[0], "value", None), ast.Constant
    ) and isinstance(node.body[0].value.value, str):
        doc = node.body[0]
        drop = set(range(doc.lineno, doc.end_lineno + 1))
        body = [line for number, line in enumerate(lines[first - 1:last], first) if number not in drop]
    code = textwrap.dedent("\n".join(body)).rstrip()
    caption = f"`{path}`, lines {first}-{last}" + ("" if docstring else " (docstring left out)") + ":"
    return f"{caption}\n\n```python\n{code}\n```"


# --------------------------------------------------------------------------- excerpt() and results()


def excerpt(root, path, start, stop):
    lines = _read(root, path).split("\n")
    begin = next((i for i, line in enumerate(lines) if start in line), None)
    if begin is None:
        raise DocsError(f"excerpt: no line of {path} contains {start!r}")
    end = next((i for i in range(begin + 1, len(lines)) if stop in lines[i]), None)
    if end is None:
        raise DocsError(f"excerpt: no line of {path} after {start!r} contains {stop!r}")
    kept = [line for line in lines[begin:end] if not re.fullmatch(r"\s*<!--.*-->\s*", line)]  # markers of the source file
    return "\n".join(kept).strip("\n")


def results(root, pattern, none="No results have been recorded yet."):
    files = sorted(glob.glob(os.path.join(root, "benchmarks", "results", pattern)))
    if not files:
        return f"**{none}** (`benchmarks/results/` holds no file matching `{pattern}`.)"
    shown = []
    for path in files:
        with open(path, encoding="utf-8") as file:
            text = file.read().strip()
        text = re.sub(r"^(#{1,4}) ", lambda m: "#" * min(len(m.group(1)) + 2, 6) + " ", text, flags=re.M)
        shown.append(f"Included from `benchmarks/results/{os.path.basename(path)}`:\n\n{text}")
    return "\n\n".join(shown)


# --------------------------------------------------------------------------- running the examples


class PageRunner:
    """Runs a page's python blocks in order in one namespace, keeping what each printed."""

    def __init__(self, root, page):
        self.root, self.page = root, page
        self.namespace = {"__name__": "__docs__"}
        self.count = 0

    def run(self, code):
        self.count += 1
        if self.root not in sys.path:
            sys.path.insert(0, self.root)  # the examples import minialex from the checkout
        os.environ.setdefault("MPLBACKEND", "Agg")
        stdout = io.StringIO()
        previous = os.getcwd()
        os.chdir(self.root)  # examples name files relative to the repository root, as a reader runs them
        try:
            with contextlib.redirect_stdout(stdout):
                exec(compile(code, f"{self.page} python block {self.count}", "exec"), self.namespace)
        except Exception:
            raise DocsError(
                f"{self.page}: python block {self.count} failed:\n{traceback.format_exc(limit=-3)}"
            ) from None
        finally:
            os.chdir(previous)
        return stdout.getvalue()


# --------------------------------------------------------------------------- expansion


def _call(expression, page):
    """Parse ``name(args...)`` with literal arguments."""
    try:
        node = ast.parse(expression.strip(), mode="eval").body
    except SyntaxError:
        raise DocsError(f"{page}: placeholder {{{{{expression}}}}} is not a call like name(\"...\")") from None
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
        raise DocsError(f"{page}: placeholder {{{{{expression}}}}} is not a call like name(\"...\")")
    try:
        args = [ast.literal_eval(a) for a in node.args]
        kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
    except ValueError:
        raise DocsError(f"{page}: placeholder {{{{{expression}}}}} must have literal arguments") from None
    return node.func.id, args, kwargs


def expand(markdown, root, page="page", run_code=True):
    """The page with every placeholder replaced; raises DocsError on any problem.

    With ``run_code`` the page's python blocks run (as at build time); an
    ``output()`` placeholder needs them to.
    """
    runner = PageRunner(root, page)
    last_output = None
    out = []
    for part in split_blocks(markdown):
        if part[0] == "code":
            if part[1] == "python":
                last_output = runner.run("\n".join(part[2][1:-1])) if run_code else ""
            out.extend(part[2])
            continue
        for line in part[1]:
            matches = list(PLACEHOLDER.finditer(line))
            if not matches:
                out.append(line)
                continue
            if len(matches) > 1 or line.strip() != matches[0].group(0):
                raise DocsError(f"{page}: a placeholder must stand alone on its line: {line.strip()!r}")
            name, args, kwargs = _call(matches[0].group(1), page)
            try:
                if name == "source":
                    out.append(source(root, *args, **kwargs))
                elif name == "excerpt":
                    out.append(excerpt(root, *args, **kwargs))
                elif name == "results":
                    out.append(results(root, *args, **kwargs))
                elif name == "output":
                    if args or kwargs:
                        raise DocsError("output() takes no arguments")
                    if last_output is None:
                        raise DocsError("output() must follow a python block (one output() per block)")
                    if not run_code:
                        out.append("```text\n(the output appears when the examples run)\n```")
                    else:
                        out.append("```text\n" + (last_output.rstrip("\n") or "(nothing printed)") + "\n```")
                    last_output = None
                else:
                    raise DocsError(f"unknown placeholder {name!r} (known: source, output, excerpt, results)")
            except DocsError as error:
                message = str(error)
                raise DocsError(message if message.startswith(page) else f"{page}: {message}") from None
            except TypeError as error:
                raise DocsError(f"{page}: placeholder {name}: {error}") from None
    return "\n".join(out)


def on_page_markdown(markdown, page, config, files):
    """MkDocs event: expand the placeholders of one page."""
    root = os.path.dirname(os.path.abspath(config["config_file_path"]))
    return expand(markdown, root, page.file.src_path)
